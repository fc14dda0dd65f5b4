//! The export path: finished flows, handed over by the workers through a bounded queue,
//! go in batches through the flow-log policy (sampling, redaction, dropped fields, extra
//! attributes) and out to the flow-log file as JSON lines, with VPC Flow Logs field names
//! where one exists.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;
use serde_json::{Map, Value};

use super::bindings::exports::natgw::policy::flow_log::{EndReason, Field, FlowRecord, LogEntry};
use super::bindings::natgw::policy::types::{IpAddress, Protocol};
use super::worker::{wit_flow, Called, HookSlot};
use super::{error_text, HookExports, Runtime};
use crate::control::config::{FailMode, Hook};
use crate::counters::{Counter, Counters};
use crate::nat::policy::NewFlow;
use crate::nat::{EndReason as NatEndReason, FlowEnd};

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
        pool: pools.get(usize::from(e.pool)).cloned().unwrap_or_default(),
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
        },
    }
}

fn ip_text(a: &IpAddress) -> String {
    match a {
        IpAddress::V4(v) => Ipv4Addr::from(*v).to_string(),
        IpAddress::V6((hi, lo)) => std::net::Ipv6Addr::from((u128::from(*hi) << 64) | u128::from(*lo)).to_string(),
    }
}

/// One exported flow as a JSON object. Omitted fields are left out.
pub fn entry_json(e: &LogEntry, interfaces: &[String]) -> Value {
    let r = &e.record;
    let f = &r.flow;
    let keep = |x: Field| !e.omit.contains(x);
    let mut m = Map::new();
    m.insert("version".into(), Value::from(1));
    m.insert(
        "interface-id".into(),
        Value::from(interfaces.get(usize::from(f.ingress)).cloned().unwrap_or_else(|| f.ingress.to_string())),
    );
    if keep(Field::SRC_ADDRESS) {
        m.insert("srcaddr".into(), Value::from(ip_text(&f.src)));
    }
    if keep(Field::SRC_PORT) {
        m.insert("srcport".into(), Value::from(f.src_port));
    }
    if keep(Field::DST_ADDRESS) {
        m.insert("dstaddr".into(), Value::from(ip_text(&f.dst)));
    }
    if keep(Field::DST_PORT) {
        m.insert("dstport".into(), Value::from(f.dst_port));
    }
    let proto = match f.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Icmp => 1,
    };
    m.insert("protocol".into(), Value::from(proto));
    if keep(Field::NAT_ADDRESS) {
        m.insert("pkt-srcaddr".into(), Value::from(ip_text(&r.nat_src)));
    }
    if keep(Field::NAT_PORT) {
        m.insert("pkt-srcport".into(), Value::from(r.nat_src_port));
    }
    if keep(Field::POOL) {
        m.insert("pool".into(), Value::from(r.pool.clone()));
    }
    if keep(Field::COUNTERS) {
        m.insert("packets".into(), Value::from(r.packets_out + r.packets_in));
        m.insert("bytes".into(), Value::from(r.bytes_out + r.bytes_in));
        m.insert("packets-out".into(), Value::from(r.packets_out));
        m.insert("bytes-out".into(), Value::from(r.bytes_out));
        m.insert("packets-in".into(), Value::from(r.packets_in));
        m.insert("bytes-in".into(), Value::from(r.bytes_in));
    }
    if keep(Field::TIMES) {
        m.insert("start".into(), Value::from(r.start_unix_ns / 1_000_000_000));
        m.insert("end".into(), Value::from(r.end_unix_ns / 1_000_000_000));
    }
    if keep(Field::TCP_FLAGS) {
        m.insert("tcp-flags".into(), Value::from(r.tcp_flags));
    }
    let reason = match r.end_reason {
        EndReason::Closed => "closed",
        EndReason::Reset => "reset",
        EndReason::IdleTimeout => "idle-timeout",
        EndReason::Revalidated => "revalidated",
        EndReason::Shutdown => "shutdown",
    };
    m.insert("end-reason".into(), Value::from(reason));
    m.insert("action".into(), Value::from("ACCEPT"));
    m.insert("log-status".into(), Value::from("OK"));
    if !e.attributes.is_empty() {
        let attrs: Map<String, Value> =
            e.attributes.iter().map(|a| (a.key.clone(), Value::from(a.value.clone()))).collect();
        m.insert("attributes".into(), Value::Object(attrs));
    }
    Value::Object(m)
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

/// The flow-log thread: drains `queue` every `interval`, at most `batch` records a call.
pub struct FlowLogExporter {
    pub rt: Arc<Runtime>,
    pub queue: Arc<ArrayQueue<FlowEnd>>,
    pub counters: Arc<Counters>,
    pub file: Option<std::path::PathBuf>,
    pub interval: Duration,
    pub batch: usize,
    pub clock: WallClock,
    pub interfaces: Vec<String>,
}

impl FlowLogExporter {
    pub fn run(self, stop: impl Fn() -> bool) {
        let mut slot = HookSlot::new(Hook::FlowLog);
        let mut out = self.file.as_ref().and_then(|p| {
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
                let records: Vec<FlowRecord> =
                    ends.iter().map(|e| wit_record(e, self.rt.pool_names(), self.clock)).collect();
                let entries = process_batch(&mut slot, &self.rt, &self.counters, records);
                self.counters.add(Counter::FlowLogExported, entries.len() as u64);
                if let Some(f) = out.as_mut() {
                    let mut text = String::new();
                    for e in &entries {
                        text.push_str(&entry_json(e, &self.interfaces).to_string());
                        text.push('\n');
                    }
                    if let Err(e) = f.write_all(text.as_bytes()) {
                        eprintln!("natgw: flow log: write failed: {e}");
                    }
                }
            }
            if stopping {
                break;
            }
            std::thread::sleep(self.interval.min(Duration::from_millis(100)));
        }
    }
}
