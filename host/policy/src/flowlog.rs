//! The export path: flow records (finished, interim and refused flows), handed over by
//! the workers through a bounded queue, go in batches through the flow-log policy
//! (sampling, redaction, dropped fields, extra attributes), are joined with the fields
//! only the gateway knows, and go out to the sinks (`telemetry`): the JSON-lines file,
//! `natgw flows --follow` and the OTLP exporter's queue.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;

use std::net::Ipv4Addr;

use natgw_core::counters::{Counter, Counters};
use natgw_core::nat::policy::{EgressDecision, NewFlow};
use natgw_core::nat::{EndReason as NatEndReason, FlowDirection, FlowEnd};
use natgw_telemetry::follow::Followers;
use natgw_telemetry::otlp;
use natgw_telemetry::record::{end_reason_name, ExportRecord, HostFields, Value};

use crate::bindings::exports::natgw::policy::flow_log::{EndReason, Field, FlowRecord, LogEntry};
use crate::bindings::natgw::policy::types::{IpAddress, Protocol};
use crate::config::{FailMode, Hook};
use crate::worker::{wit_flow, Called, HookSlot};
use crate::{error_text, HookExports, Runtime};

/// Converts monotonic gateway milliseconds to wall-clock nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Unix time in ns at gateway millisecond 0.
    pub epoch_ns: u64,
}

impl WallClock {
    /// The wall clock of a gateway clock reading `gateway_now_ms` now.
    pub fn new(gateway_now_ms: u64) -> Self {
        let now_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let now_ns = u64::try_from(now_unix.as_nanos()).unwrap_or(u64::MAX);
        WallClock { epoch_ns: now_ns.saturating_sub(gateway_now_ms.saturating_mul(1_000_000)) }
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
            // Also without a word of its own in 0.1.0: the gateway gave up an idle flow.
            NatEndReason::EarlyDrop => EndReason::IdleTimeout,
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
    entries.iter().zip(&joined).map(|(e, h)| export_record(e, h.as_ref(), interfaces)).collect()
}

fn ip_text(a: &IpAddress) -> String {
    match a {
        IpAddress::V4(v) => Ipv4Addr::from(*v).to_string(),
        IpAddress::V6((hi, lo)) => std::net::Ipv6Addr::from((u128::from(*hi) << 64) | u128::from(*lo)).to_string(),
    }
}

fn wit_reason_text(r: EndReason) -> &'static str {
    match r {
        EndReason::Closed => "closed",
        EndReason::Reset => "reset",
        EndReason::IdleTimeout => "idle-timeout",
        EndReason::Revalidated => "revalidated",
        EndReason::Shutdown => "shutdown",
    }
}

/// Builds the exported record from a policy's entry and, when it could be matched to the
/// flow it came from, the gateway's own fields. Fields the policy omitted are left out; a
/// policy attribute never replaces a gateway one.
pub fn export_record(e: &LogEntry, host: Option<&HostFields>, interfaces: &[String]) -> ExportRecord {
    let r = &e.record;
    let f = &r.flow;
    let keep = |x: Field| !e.omit.contains(x);
    let mut a: Vec<(String, Value)> = Vec::with_capacity(32);
    let mut put = |k: &str, v: Value| a.push((k.to_string(), v));
    if let Some(h) = host {
        put("natgw.flow.action", if h.reason == NatEndReason::Refused { "REJECT" } else { "ACCEPT" }.into());
        put("natgw.flow.end_reason", end_reason_name(h.reason).into());
        put(
            "natgw.flow.direction",
            match h.direction {
                FlowDirection::Egress => "egress",
                FlowDirection::Ingress => "ingress",
            }
            .into(),
        );
    } else {
        put("natgw.flow.end_reason", wit_reason_text(r.end_reason).into());
    }
    let (transport, number) = match f.protocol {
        Protocol::Tcp => ("tcp", 6u16),
        Protocol::Udp => ("udp", 17),
        Protocol::Icmp => ("icmp", 1),
    };
    put("network.transport", transport.into());
    put("natgw.flow.protocol", number.into());
    put("network.type", if matches!(f.src, IpAddress::V4(_)) { "ipv4" } else { "ipv6" }.into());
    put(
        "network.interface.name",
        interfaces.get(usize::from(f.ingress)).cloned().unwrap_or_else(|| f.ingress.to_string()).into(),
    );
    if keep(Field::SRC_ADDRESS) {
        put("source.address", ip_text(&f.src).into());
    }
    if keep(Field::SRC_PORT) {
        put("source.port", f.src_port.into());
    }
    if keep(Field::DST_ADDRESS) {
        put("destination.address", ip_text(&f.dst).into());
    }
    if keep(Field::DST_PORT) {
        put("destination.port", f.dst_port.into());
    }
    // A refused flow was never translated: no natgw.nat.* fields.
    let translated = host.is_none_or(|h| h.reason != NatEndReason::Refused);
    if keep(Field::NAT_ADDRESS) && translated {
        put("natgw.nat.source.address", ip_text(&r.nat_src).into());
    }
    if keep(Field::NAT_PORT) && translated {
        put("natgw.nat.source.port", r.nat_src_port.into());
    }
    if keep(Field::DST_ADDRESS) && translated {
        put("natgw.nat.destination.address", ip_text(&f.dst).into());
    }
    if keep(Field::DST_PORT) && translated {
        put("natgw.nat.destination.port", f.dst_port.into());
    }
    if keep(Field::POOL) && !r.pool.is_empty() {
        put("natgw.nat.pool", r.pool.clone().into());
    }
    if keep(Field::COUNTERS) {
        put("natgw.flow.packets", (r.packets_out + r.packets_in).into());
        put("natgw.flow.bytes", (r.bytes_out + r.bytes_in).into());
        put("natgw.flow.packets.out", r.packets_out.into());
        put("natgw.flow.bytes.out", r.bytes_out.into());
        put("natgw.flow.packets.in", r.packets_in.into());
        put("natgw.flow.bytes.in", r.bytes_in.into());
    }
    if keep(Field::TIMES) {
        put("natgw.flow.start", r.start_unix_ns.into());
        put("natgw.flow.end", r.end_unix_ns.into());
        if let Some(h) = host {
            put("natgw.flow.created", h.created_unix_ns.into());
        }
    }
    if keep(Field::TCP_FLAGS) && f.protocol == Protocol::Tcp {
        put("natgw.flow.tcp_flags", u16::from(r.tcp_flags).into());
    }
    if let Some(h) = host {
        let word = |v: EgressDecision| match v {
            EgressDecision::Allow => "allow",
            EgressDecision::Deny => "deny",
            EgressDecision::Reject => "reject",
        };
        put("natgw.policy.verdict", word(h.verdict).into());
        put("natgw.policy.generation", h.generation.into());
        if let Some(v) = h.shadow {
            put("natgw.shadow.verdict", word(v).into());
        }
    }
    for attr in &e.attributes {
        if !a.iter().any(|(k, _)| *k == attr.key) {
            a.push((attr.key.clone(), Value::Str(attr.value.clone())));
        }
    }
    ExportRecord {
        time_unix_ns: r.end_unix_ns,
        accepted: host.map(|h| h.reason != NatEndReason::Refused),
        attributes: a,
    }
}

/// The fields of a record a flow-log policy is not expected to rewrite (it filters,
/// samples, redacts addresses and omits fields): they tie its entries back to the flows
/// they came from.
pub fn identity(r: &FlowRecord) -> [u64; 7] {
    let proto = match r.flow.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Icmp => 1,
    };
    [
        r.start_unix_ns,
        r.end_unix_ns,
        proto,
        u64::from(r.flow.dst_port),
        u64::from(r.nat_src_port),
        r.bytes_out,
        r.bytes_in,
    ]
}

/// For each entry a policy returned, the gateway's fields of the record it came from, given
/// the `identity` of each record sent. Entries are matched in order (a policy that filters
/// keeps the order); an entry whose identity fields were rewritten gets none.
pub fn join_host_fields(sent: &[[u64; 7]], host: &[HostFields], entries: &[LogEntry]) -> Vec<Option<HostFields>> {
    let mut next = 0;
    entries
        .iter()
        .map(|e| {
            let id = identity(&e.record);
            let found = (next..sent.len()).find(|&i| sent[i] == id);
            found.map(|i| {
                next = i + 1;
                host[i]
            })
        })
        .collect()
}

/// Where exported records go.
pub struct Sinks {
    pub file: Option<std::path::PathBuf>,
    /// Bumped on SIGHUP: the file is closed and opened again by its path before the next
    /// write (logrotate moved it away: `postrotate` sends the SIGHUP).
    pub reopen: Arc<std::sync::atomic::AtomicU64>,
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
        let mut slot = HookSlot::new(Hook::FlowLog, self.rt.flow_log_caller());
        let open = || {
            self.sinks.file.as_ref().and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| tracing::warn!("natgw: flow log {}: {e}; flow records are not written", p.display()))
                    .ok()
            })
        };
        let mut out = open();
        let mut opened_for = self.sinks.reopen.load(std::sync::atomic::Ordering::Acquire);
        let mut last = std::time::Instant::now();
        loop {
            let stopping = stop();
            let reopen = self.sinks.reopen.load(std::sync::atomic::Ordering::Acquire);
            if reopen != opened_for && self.sinks.file.is_some() {
                opened_for = reopen;
                out = open();
                if out.is_some() {
                    tracing::info!("natgw: flow log reopened");
                }
            }
            slot.refresh(&self.rt);
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
                            tracing::warn!("natgw: flow log: write failed: {e}");
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
