//! The export path: flow records (finished, interim and refused flows), handed over by
//! the workers through a bounded queue, go in batches through the flow-log policy
//! (sampling, redaction, dropped fields, extra attributes), are joined with the fields
//! only the gateway knows, and go out to the sinks (`telemetry`): the JSON-lines file,
//! `natgw flows --follow` and the OTLP exporter's queue.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;

use super::bindings::exports::natgw::policy::flow_log::{EndReason, Field, FlowRecord, LogEntry};
use super::bindings::natgw::policy::types::IpAddress;
use super::worker::{wit_flow, Called, HookSlot};
use super::{error_text, HookExports, Runtime};
use crate::control::config::{FailMode, Hook};
use crate::counters::{Counter, Counters};
use crate::nat::policy::NewFlow;
use crate::nat::{EndReason as NatEndReason, FlowEnd};
use crate::telemetry::follow::Followers;
use crate::telemetry::otlp;
use crate::telemetry::record::{identity, join_host_fields, ExportRecord, HostFields};

/// Converts monotonic gateway milliseconds to wall-clock nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Unix time in ns at gateway millisecond 0.
    pub epoch_ns: u64,
}

impl WallClock {
    pub fn new(start: std::time::Instant) -> Self {
        let now_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let since_start = start.elapsed();
        WallClock { epoch_ns: (now_unix.saturating_sub(since_start)).as_nanos() as u64 }
    }
    pub fn ns(&self, gateway_ms: u64) -> u64 {
        self.epoch_ns + gateway_ms * 1_000_000
    }
}

pub fn wit_record(e: &FlowEnd, pools: &[String], clock: WallClock) -> FlowRecord {
    FlowRecord {
        flow: wit_flow(&NewFlow {
            proto: e.proto,
            src: e.src.addr,
            src_port: e.src.port,
            dst: e.dst.addr,
            dst_port: e.dst.port,
            ingress: u16::from(e.ingress),
        }),
        nat_src: IpAddress::V4(u32::from(e.nat_src.addr)),
        nat_src_port: e.nat_src.port,
        pool: if e.reason == NatEndReason::Refused {
            String::new()
        } else {
            pools.get(usize::from(e.pool)).cloned().unwrap_or_default()
        },
        packets_out: e.packets[0],
        bytes_out: e.bytes[0],
        packets_in: e.packets[1],
        bytes_in: e.bytes[1],
        start_unix_ns: clock.ns(e.start_ms),
        end_unix_ns: clock.ns(e.end_ms),
        tcp_flags: e.tcp_flags,
        end_reason: match e.reason {
            NatEndReason::Closed => EndReason::Closed,
            NatEndReason::Reset => EndReason::Reset,
            NatEndReason::IdleTimeout => EndReason::IdleTimeout,
            NatEndReason::Revalidated => EndReason::Revalidated,
            NatEndReason::Shutdown => EndReason::Shutdown,
            // natgw:policy@0.1.0 has no words for these; the exported record carries the
            // true reason (`natgw.flow.end_reason`), joined back after the policy.
            NatEndReason::Active | NatEndReason::Refused => EndReason::Closed,
        },
    }
}

/// Bounds on what a flow-log policy may return, per batch.
const MAX_ATTRIBUTES: usize = 32;
const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// Checks a flow-log policy's answer: no more entries than records, bounded attributes.
fn validate(batch_len: usize, out: &[LogEntry]) -> Result<(), String> {
    if out.len() > batch_len {
        return Err(format!("process returned {} entries for {batch_len} records", out.len()));
    }
    for e in out {
        if e.attributes.len() > MAX_ATTRIBUTES {
            return Err(format!("an entry has {} attributes (at most {MAX_ATTRIBUTES})", e.attributes.len()));
        }
        if let Some(a) =
            e.attributes.iter().find(|a| a.key.is_empty() || a.key.len() + a.value.len() > MAX_ATTRIBUTE_BYTES)
        {
            return Err(format!("attribute {:?} is empty or longer than {MAX_ATTRIBUTE_BYTES} bytes", a.key));
        }
    }
    Ok(())
}

/// Runs the flow-log policy over a batch; applies the fail mode when it fails.
pub fn process_batch(
    slot: &mut HookSlot,
    rt: &Runtime,
    counters: &Counters,
    records: Vec<FlowRecord>,
) -> Vec<LogEntry> {
    let n = records.len();
    let passthrough = |records: Vec<FlowRecord>| {
        records
            .into_iter()
            .map(|record| LogEntry { record, omit: Field::empty(), attributes: Vec::new() })
            .collect::<Vec<_>>()
    };
    let r = slot.call(rt, counters, |inst| match &inst.exports {
        HookExports::FlowLog(g) => {
            let g = g.clone();
            let out = g.call_process(&mut inst.store, &records).map_err(|e| error_text(&e))?;
            validate(n, &out)?;
            Ok(out)
        }
        _ => Err("instance does not export flow-log".into()),
    });
    match r {
        Called::NoPolicy | Called::Failed(FailMode::Open) => passthrough(records),
        Called::Answer(out) => out,
        Called::Failed(FailMode::Closed) => Vec::new(),
    }
}

/// Runs one batch of flow ends through the flow-log policy and joins the gateway's own
/// fields back: what the sinks get.
pub fn export_batch(
    slot: &mut HookSlot,
    rt: &Runtime,
    counters: &Counters,
    ends: &[FlowEnd],
    clock: WallClock,
    interfaces: &[String],
) -> Vec<ExportRecord> {
    let records: Vec<FlowRecord> = ends.iter().map(|e| wit_record(e, rt.pool_names(), clock)).collect();
    let host: Vec<HostFields> = ends.iter().map(|e| HostFields::of(e, clock.ns(e.created_ms))).collect();
    let sent: Vec<[u64; 7]> = records.iter().map(identity).collect();
    let entries = process_batch(slot, rt, counters, records);
    let joined = join_host_fields(&sent, &host, &entries);
    entries.iter().zip(&joined).map(|(e, h)| ExportRecord::new(e, h.as_ref(), interfaces)).collect()
}

/// Where exported records go.
pub struct Sinks {
    pub file: Option<std::path::PathBuf>,
    pub followers: Arc<Followers>,
    /// The OTLP exporter's queue, when OTLP logs are on.
    pub otlp: Option<Arc<ArrayQueue<ExportRecord>>>,
}

/// The flow-log thread: drains `queue` every `interval`, at most `batch` records a call.
pub struct FlowLogExporter {
    pub rt: Arc<Runtime>,
    pub queue: Arc<ArrayQueue<FlowEnd>>,
    pub counters: Arc<Counters>,
    pub sinks: Sinks,
    pub interval: Duration,
    pub batch: usize,
    pub clock: WallClock,
    pub interfaces: Vec<String>,
}

impl FlowLogExporter {
    pub fn run(self, stop: impl Fn() -> bool) {
        let mut slot = HookSlot::new(Hook::FlowLog);
        let mut out = self.sinks.file.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| eprintln!("natgw: flow log {}: {e}; flow records are not written", p.display()))
                .ok()
        });
        let mut last = std::time::Instant::now();
        loop {
            let stopping = stop();
            slot.refresh(&self.rt, self.rt.flow_log_caller(), &self.counters);
            let due = stopping || self.queue.len() >= self.batch || last.elapsed() >= self.interval;
            if due {
                last = std::time::Instant::now();
            }
            while due && !self.queue.is_empty() {
                let mut ends = Vec::with_capacity(self.batch);
                while ends.len() < self.batch {
                    match self.queue.pop() {
                        Some(e) => ends.push(e),
                        None => break,
                    }
                }
                let records = export_batch(&mut slot, &self.rt, &self.counters, &ends, self.clock, &self.interfaces);
                if out.is_some() || !self.sinks.followers.is_empty() {
                    let mut text = String::new();
                    for r in &records {
                        text.push_str(&r.to_json().to_string());
                        text.push('\n');
                    }
                    if let Some(f) = out.as_mut() {
                        if let Err(e) = f.write_all(text.as_bytes()) {
                            eprintln!("natgw: flow log: write failed: {e}");
                        }
                    }
                    self.sinks.followers.send(text.as_bytes());
                }
                if let Some(q) = &self.sinks.otlp {
                    otlp::enqueue(q, &records, &self.counters);
                }
                // Counted once every sink has them.
                self.counters.add(Counter::FlowLogExported, records.len() as u64);
            }
            if stopping {
                break;
            }
            std::thread::sleep(self.interval.min(Duration::from_millis(100)));
        }
    }
}
