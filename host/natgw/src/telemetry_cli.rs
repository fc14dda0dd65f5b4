//! `natgw otlp bench`: how many flow records per second the OTLP exporter delivers to a
//! collector, through the same exporter thread the gateway runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::ControlError;
use natgw_core::counters::{Counter, Counters};
use natgw_telemetry::config::{OtlpConfig, OtlpProtocol};
use natgw_telemetry::otlp::OtlpExporter;
use natgw_telemetry::record::{ExportRecord, Value, FIELDS};

/// A record with every field a real one has, numbers varying by `i`.
fn synthetic(i: u64) -> ExportRecord {
    let attributes = FIELDS
        .iter()
        .map(|(name, _, _)| {
            let v = match *name {
                n if n.ends_with(".address") => {
                    Value::Str(format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255))
                }
                n if n.ends_with(".port") || n.contains("packets") || n.contains("bytes") => {
                    Value::Int((i % 60000) as i64)
                }
                n if n.starts_with("natgw.flow.start") || n.ends_with(".end") || n.ends_with(".created") => {
                    Value::Int(1_800_000_000_000_000_000 + i as i64)
                }
                "natgw.flow.protocol" | "natgw.policy.generation" | "natgw.flow.tcp_flags" => Value::Int(6),
                _ => Value::Str("egress".into()),
            };
            (name.to_string(), v)
        })
        .collect();
    ExportRecord { time_unix_ns: 1_800_000_000_000_000_000 + i, accepted: Some(true), attributes }
}

pub fn otlp_bench(
    endpoint: &str,
    protocol: &str,
    records: usize,
    batch: usize,
    gzip: bool,
) -> Result<String, ControlError> {
    let protocol = match protocol {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        p => {
            return Err(ControlError::OtlpBench { reason: format!("--protocol {p:?}: must be grpc or http/protobuf") })
        }
    };
    let cfg = OtlpConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        protocol,
        headers: Vec::new(),
        gzip,
        ca_file: None,
        timeout_ms: 10_000,
        logs: true,
        metrics_interval_ms: 0,
        buffer_records: records.max(1),
        batch,
        retry_initial_ms: 100,
        retry_max_ms: 1000,
        instance_id: Some("natgw-otlp-bench".into()),
        resource: Vec::new(),
    };
    let queue = Arc::new(ArrayQueue::new(records.max(1)));
    for i in 0..records {
        let _ = queue.push(synthetic(i as u64));
    }
    let counters = Arc::new(Counters::default());
    let exporter = OtlpExporter { cfg, queue, counters: counters.clone(), all: vec![counters.clone()] };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let start = Instant::now();
    let t = std::thread::spawn(move || exporter.run(s2));
    while counters.get(Counter::OtlpRecordsSent) < records as u64 && start.elapsed() < Duration::from_secs(300) {
        if t.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    match t.join() {
        Ok(Err(e)) => return Err(ControlError::OtlpBench { reason: e.to_string() }),
        Err(_) => return Err(ControlError::OtlpBench { reason: "the exporter thread panicked".into() }),
        Ok(Ok(())) => {}
    }
    let sent = counters.get(Counter::OtlpRecordsSent);
    Ok(format!(
        "otlp bench: {sent} of {records} records to {endpoint} ({}{}), batch {batch}: {secs:.2} s, {:.0} records/s, {} failed attempts\n",
        match protocol {
            OtlpProtocol::Grpc => "gRPC",
            OtlpProtocol::HttpProtobuf => "HTTP/protobuf",
        },
        if gzip { ", gzip" } else { "" },
        sent as f64 / secs,
        counters.get(Counter::OtlpExportRetries)
    ))
}
