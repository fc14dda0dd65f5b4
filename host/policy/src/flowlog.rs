//! The export path: flow records (finished, interim and refused flows), handed over by
//! the workers through a bounded queue, go in batches through the flow-log policy
//! (sampling, redaction, dropped fields, extra attributes), are joined with the fields
//! only the gateway knows, and go out to the sinks (`telemetry`): the JSON-lines file,
//! `natgw flows --follow` and the OTLP exporter's queue.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
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

use crate::bindings::exports::natgw::policy::flow_log as v010;
use crate::bindings::natgw::policy::types as types_v010;
use crate::bindings_v020::exports::natgw::policy::flow_log::{
    Action, Direction, EndReason, Field, FlowRecord, LogEntry,
};
use crate::bindings_v020::natgw::policy::types::{IpAddress, Protocol};
use crate::config::{FailMode, Hook};
use crate::worker::{wit_flow, Called, HookSlot};
use crate::{error_text, flow_v020, HookExports, Runtime};

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

/// Record ids: unique in the gateway's run, never 0 (which marks an entry of a 0.1.0
/// policy that could not be tied to its record).
static NEXT_RECORD_ID: AtomicU64 = AtomicU64::new(1);

/// `n` fresh record ids, the first of them returned.
fn record_ids(n: usize) -> u64 {
    NEXT_RECORD_ID.fetch_add(n as u64, Ordering::Relaxed)
}

/// The id of the flow a record belongs to: the same for its interim records and its last
/// (a function of its tuple and creation time), never 0.
pub fn flow_id(e: &FlowEnd, clock: WallClock) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut mix = |v: u64| {
        h ^= v;
        h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    };
    mix(clock.ns(e.created_ms));
    mix(u64::from(e.proto) << 40 | u64::from(e.ingress) << 32 | u64::from(u32::from(e.src.addr)));
    mix(u64::from(e.src.port) << 48 | u64::from(e.dst.port) << 32 | u64::from(u32::from(e.dst.addr)));
    mix(e.direction as u64);
    // splitmix64's finaliser: every input bit reaches every output bit.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)).max(1)
}

/// The record a flow-log policy gets for a flow end (0.2.0's; a 0.1.0 policy gets it
/// through `record_v010`).
pub fn wit_record(e: &FlowEnd, pools: &[String], clock: WallClock, id: u64) -> FlowRecord {
    let refused = e.reason == NatEndReason::Refused;
    FlowRecord {
        id,
        flow_id: flow_id(e, clock),
        flow: flow_v020(wit_flow(&NewFlow {
            proto: e.proto,
            src: e.src.addr,
            src_port: e.src.port,
            dst: e.dst.addr,
            dst_port: e.dst.port,
            ingress: u16::from(e.ingress),
        })),
        nat_src: IpAddress::V4(u32::from(e.nat_src.addr)),
        nat_src_port: e.nat_src.port,
        pool: if refused { String::new() } else { pools.get(usize::from(e.pool)).cloned().unwrap_or_default() },
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
            NatEndReason::EarlyDrop => EndReason::Evicted,
            NatEndReason::Active => EndReason::Active,
            NatEndReason::Refused => EndReason::Refused,
        },
        action: if refused { Action::Reject } else { Action::Accept },
        direction: match e.direction {
            FlowDirection::Egress => Direction::Egress,
            FlowDirection::Ingress => Direction::Ingress,
        },
    }
}

fn addr_v010(a: IpAddress) -> types_v010::IpAddress {
    match a {
        IpAddress::V4(v) => types_v010::IpAddress::V4(v),
        IpAddress::V6(v) => types_v010::IpAddress::V6(v),
    }
}

fn addr_v020(a: types_v010::IpAddress) -> IpAddress {
    match a {
        types_v010::IpAddress::V4(v) => IpAddress::V4(v),
        types_v010::IpAddress::V6(v) => IpAddress::V6(v),
    }
}

/// What a 0.1.0 flow-log policy gets: no ids, no action or direction, and only the end
/// reasons 0.1.0 has words for (the exported record carries the true one, joined back).
fn record_v010(r: &FlowRecord) -> v010::FlowRecord {
    let f = &r.flow;
    v010::FlowRecord {
        flow: types_v010::Flow {
            protocol: match f.protocol {
                Protocol::Tcp => types_v010::Protocol::Tcp,
                Protocol::Udp => types_v010::Protocol::Udp,
                Protocol::Icmp => types_v010::Protocol::Icmp,
            },
            src: addr_v010(f.src),
            src_port: f.src_port,
            dst: addr_v010(f.dst),
            dst_port: f.dst_port,
            ingress: f.ingress,
        },
        nat_src: addr_v010(r.nat_src),
        nat_src_port: r.nat_src_port,
        pool: r.pool.clone(),
        packets_out: r.packets_out,
        bytes_out: r.bytes_out,
        packets_in: r.packets_in,
        bytes_in: r.bytes_in,
        start_unix_ns: r.start_unix_ns,
        end_unix_ns: r.end_unix_ns,
        tcp_flags: r.tcp_flags,
        end_reason: match r.end_reason {
            EndReason::Closed => v010::EndReason::Closed,
            EndReason::Reset => v010::EndReason::Reset,
            EndReason::IdleTimeout => v010::EndReason::IdleTimeout,
            EndReason::Revalidated => v010::EndReason::Revalidated,
            EndReason::Shutdown => v010::EndReason::Shutdown,
            // Also without a word of its own in 0.1.0: the gateway gave up an idle flow.
            EndReason::Evicted => v010::EndReason::IdleTimeout,
            EndReason::Active | EndReason::Refused => v010::EndReason::Closed,
        },
    }
}

/// The fields an entry may leave out: 0.1.0's and 0.2.0's are the same ten.
const FIELDS: [(v010::Field, Field); 10] = [
    (v010::Field::SRC_ADDRESS, Field::SRC_ADDRESS),
    (v010::Field::SRC_PORT, Field::SRC_PORT),
    (v010::Field::DST_ADDRESS, Field::DST_ADDRESS),
    (v010::Field::DST_PORT, Field::DST_PORT),
    (v010::Field::NAT_ADDRESS, Field::NAT_ADDRESS),
    (v010::Field::NAT_PORT, Field::NAT_PORT),
    (v010::Field::POOL, Field::POOL),
    (v010::Field::COUNTERS, Field::COUNTERS),
    (v010::Field::TIMES, Field::TIMES),
    (v010::Field::TCP_FLAGS, Field::TCP_FLAGS),
];

/// A 0.1.0 policy's entry in 0.2.0's terms, tied to the record `sent` it came from when
/// `join_v010` found it (its id, flow id, action, direction and true end reason), else
/// with id 0.
fn entry_v020(e: v010::LogEntry, sent: Option<&FlowRecord>) -> LogEntry {
    let r = e.record;
    let f = r.flow;
    let omit = FIELDS.iter().filter(|(old, _)| e.omit.contains(*old)).fold(Field::empty(), |acc, (_, new)| acc | *new);
    LogEntry {
        record: FlowRecord {
            id: sent.map_or(0, |s| s.id),
            flow_id: sent.map_or(0, |s| s.flow_id),
            flow: flow_v020(f),
            nat_src: addr_v020(r.nat_src),
            nat_src_port: r.nat_src_port,
            pool: r.pool,
            packets_out: r.packets_out,
            bytes_out: r.bytes_out,
            packets_in: r.packets_in,
            bytes_in: r.bytes_in,
            start_unix_ns: r.start_unix_ns,
            end_unix_ns: r.end_unix_ns,
            tcp_flags: r.tcp_flags,
            end_reason: match (sent, r.end_reason) {
                (Some(s), _) => s.end_reason,
                (None, v010::EndReason::Closed) => EndReason::Closed,
                (None, v010::EndReason::Reset) => EndReason::Reset,
                (None, v010::EndReason::IdleTimeout) => EndReason::IdleTimeout,
                (None, v010::EndReason::Revalidated) => EndReason::Revalidated,
                (None, v010::EndReason::Shutdown) => EndReason::Shutdown,
            },
            action: sent.map_or(Action::Accept, |s| s.action),
            direction: sent.map_or(Direction::Egress, |s| s.direction),
        },
        omit,
        attributes: e.attributes.into_iter().map(|a| v2_attribute(a.key, a.value)).collect(),
    }
}

fn v2_attribute(key: String, value: String) -> crate::bindings_v020::exports::natgw::policy::flow_log::Attribute {
    crate::bindings_v020::exports::natgw::policy::flow_log::Attribute { key, value }
}

/// Bounds on what a flow-log policy may return, per batch.
const MAX_ATTRIBUTES: usize = 32;
const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// Checks a flow-log policy's answer: no more entries than records, bounded attributes.
fn validate<'a>(
    batch_len: usize,
    attributes: impl Iterator<Item = (usize, impl Iterator<Item = (&'a str, &'a str)>)>,
) -> Result<(), String> {
    let mut entries = 0;
    for (n, mut attrs) in attributes {
        entries += 1;
        if entries > batch_len {
            return Err(format!("process returned more entries than the {batch_len} records it got"));
        }
        if n > MAX_ATTRIBUTES {
            return Err(format!("an entry has {n} attributes (at most {MAX_ATTRIBUTES})"));
        }
        if let Some((k, _)) = attrs.find(|(k, v)| k.is_empty() || k.len() + v.len() > MAX_ATTRIBUTE_BYTES) {
            return Err(format!("attribute {k:?} is empty or longer than {MAX_ATTRIBUTE_BYTES} bytes"));
        }
    }
    Ok(())
}

/// Checks that every entry of a 0.2.0 policy names a record of the batch (ids `first..`,
/// `batch_len` of them), each at most once.
fn validate_ids(first: u64, batch_len: usize, out: &[LogEntry]) -> Result<(), String> {
    let mut seen = vec![false; batch_len];
    for e in out {
        let id = e.record.id;
        let i = id.checked_sub(first).and_then(|i| usize::try_from(i).ok()).filter(|&i| i < batch_len);
        let Some(i) = i else {
            return Err(format!(
                "an entry carries record id {id}, which is not one of the batch's ({first}..={})",
                first + batch_len as u64 - 1
            ));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(format!("two entries carry record id {id}"));
        }
    }
    Ok(())
}

/// Runs the flow-log policy over a batch (records with consecutive ids); applies the fail
/// mode when it fails. Every entry returned carries the id of its record, except those of
/// a 0.1.0 policy that rewrote the fields they are tied back by (id 0).
pub fn process_batch(
    slot: &mut HookSlot,
    rt: &Runtime,
    counters: &Counters,
    records: Vec<FlowRecord>,
) -> Vec<LogEntry> {
    let n = records.len();
    let first = records.first().map_or(0, |r| r.id);
    let r = slot.call(rt, counters, |inst| match &inst.exports {
        HookExports::FlowLogV020(g) => {
            let g = g.clone();
            let out = g.call_process(&mut inst.store, &records).map_err(|e| error_text(&e))?;
            validate(
                n,
                out.iter()
                    .map(|e| (e.attributes.len(), e.attributes.iter().map(|a| (a.key.as_str(), a.value.as_str())))),
            )?;
            validate_ids(first, n, &out)?;
            Ok(out)
        }
        HookExports::FlowLog(g) => {
            let g = g.clone();
            let sent: Vec<v010::FlowRecord> = records.iter().map(record_v010).collect();
            let out = g.call_process(&mut inst.store, &sent).map_err(|e| error_text(&e))?;
            validate(
                n,
                out.iter()
                    .map(|e| (e.attributes.len(), e.attributes.iter().map(|a| (a.key.as_str(), a.value.as_str())))),
            )?;
            let ids: Vec<[u64; 7]> = sent.iter().map(identity_v010).collect();
            let joined = join_v010(&ids, &out);
            Ok(out.into_iter().zip(joined).map(|(e, i)| entry_v020(e, i.map(|i| &records[i]))).collect())
        }
        _ => Err("instance does not export flow-log".into()),
    });
    match r {
        Called::NoPolicy | Called::Failed(FailMode::Open) => records
            .into_iter()
            .map(|record| LogEntry { record, omit: Field::empty(), attributes: Vec::new() })
            .collect(),
        Called::Answer(out) => out,
        Called::Failed(FailMode::Closed) => Vec::new(),
    }
}

/// Runs one batch of flow ends through the flow-log policy and joins the gateway's own
/// fields back by record id: what the sinks get.
pub fn export_batch(
    slot: &mut HookSlot,
    rt: &Runtime,
    counters: &Counters,
    ends: &[FlowEnd],
    clock: WallClock,
    interfaces: &[String],
) -> Vec<ExportRecord> {
    let first = record_ids(ends.len());
    let records: Vec<FlowRecord> =
        ends.iter().zip(first..).map(|(e, id)| wit_record(e, rt.pool_names(), clock, id)).collect();
    // What ties an entry to its record besides the id, and the gateway's own fields.
    let sent: Vec<([u64; 7], Joined)> = records
        .iter()
        .zip(ends)
        .map(|(r, e)| (identity(r), Joined { fields: HostFields::of(e, clock.ns(e.created_ms)), flow_id: r.flow_id }))
        .collect();
    let entries = process_batch(slot, rt, counters, records);
    let joined = join(first, &sent, &entries);
    entries.iter().zip(joined).map(|(e, j)| export_record(e, j, interfaces)).collect()
}

/// For each entry, the gateway's fields of the record it names by id (the batch's ids
/// start at `first`), when the entry kept what ties it to that record: a policy that put
/// one record's id on another's fields gets no gateway field on either.
fn join<'a>(first: u64, sent: &'a [([u64; 7], Joined)], entries: &[LogEntry]) -> Vec<Option<&'a Joined>> {
    entries
        .iter()
        .map(|e| {
            let i = e.record.id.checked_sub(first).and_then(|i| usize::try_from(i).ok());
            let found = i.and_then(|i| sent.get(i)).filter(|(id, _)| e.record.id != 0 && *id == identity(&e.record));
            found.map(|(_, j)| j)
        })
        .collect()
}

/// The gateway's own fields of a record, for the entry that came from it.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    pub fields: HostFields,
    /// The record's flow id (an entry's own says nothing).
    pub flow_id: u64,
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
        EndReason::Evicted => "early-drop",
        EndReason::Active => "active",
        EndReason::Refused => "refused",
    }
}
/// Builds the exported record from a policy's entry and, when it could be matched to the
/// flow it came from, the gateway's own fields. Fields the policy omitted are left out; a
/// policy attribute never replaces a gateway one.
pub fn export_record(e: &LogEntry, joined: Option<&Joined>, interfaces: &[String]) -> ExportRecord {
    let host = joined.map(|j| &j.fields);
    let r = &e.record;
    let f = &r.flow;
    let keep = |x: Field| !e.omit.contains(x);
    let mut a: Vec<(String, Value)> = Vec::with_capacity(32);
    let mut put = |k: &str, v: Value| a.push((k.to_string(), v));
    if let Some(h) = host {
        // Hex text, as trace ids are: a u64 does not fit OTLP's or JSON's integers whole.
        let flow_id = joined.map_or(0, |j| j.flow_id);
        put("natgw.flow.id", format!("{flow_id:016x}").into());
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
fn identity_v010(r: &v010::FlowRecord) -> [u64; 7] {
    let proto = match r.flow.protocol {
        types_v010::Protocol::Tcp => 6,
        types_v010::Protocol::Udp => 17,
        types_v010::Protocol::Icmp => 1,
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

/// `identity_v010`, of a 0.2.0 record.
fn identity(r: &FlowRecord) -> [u64; 7] {
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

/// For each entry a 0.1.0 policy returned, the index of the record it came from, given the
/// `identity` of each record sent. Entries are matched in order (a policy that filters
/// keeps the order); an entry whose identity fields were rewritten is tied to none.
fn join_v010(sent: &[[u64; 7]], entries: &[v010::LogEntry]) -> Vec<Option<usize>> {
    let mut next = 0;
    entries
        .iter()
        .map(|e| {
            let id = identity_v010(&e.record);
            let found = (next..sent.len()).find(|&i| sent[i] == id);
            if let Some(i) = found {
                next = i + 1;
            }
            found
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
            slot.refresh_with(&self.rt, Some(&self.counters));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP flow that ended idle.
    fn flow_end() -> FlowEnd {
        FlowEnd {
            proto: 17,
            src: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(10, 0, 0, 1), port: 5000 },
            dst: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(203, 0, 113, 1), port: 53 },
            ingress: 0,
            nat_src: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(198, 51, 100, 1), port: 5000 },
            pool: 0,
            packets: [1, 1],
            bytes: [60, 90],
            tcp_flags: 0,
            start_ms: 1,
            end_ms: 2,
            created_ms: 1,
            reason: NatEndReason::IdleTimeout,
            direction: FlowDirection::Egress,
            verdict: EgressDecision::Allow,
            policy_generation: 1,
            shadow_verdict: None,
        }
    }

    fn entry(id: u64) -> LogEntry {
        LogEntry {
            record: wit_record(&flow_end(), &[], WallClock { epoch_ns: 0 }, id),
            omit: Field::empty(),
            attributes: vec![],
        }
    }

    #[test]
    fn every_entry_must_name_its_own_record_once() {
        // A batch of ids 10..=13.
        assert_eq!(validate_ids(10, 4, &[entry(13), entry(10)]), Ok(()), "fewer, any order");
        assert_eq!(validate_ids(10, 4, &[]), Ok(()));
        for bad in [vec![entry(9)], vec![entry(14)], vec![entry(0)], vec![entry(u64::MAX)], vec![entry(11), entry(11)]]
        {
            let e = validate_ids(10, 4, &bad).unwrap_err();
            assert!(e.contains("record id"), "{e}");
        }
    }

    #[test]
    fn gateway_fields_join_only_the_entry_that_kept_its_record() {
        let (a, b) = (entry(10).record, {
            let mut r = entry(11).record;
            r.bytes_in = 9999;
            r.flow_id = 77;
            r
        });
        let joined = |r: &FlowRecord, verdict| Joined {
            fields: HostFields {
                reason: NatEndReason::IdleTimeout,
                direction: FlowDirection::Egress,
                verdict,
                generation: 1,
                created_unix_ns: 0,
                shadow: None,
            },
            flow_id: r.flow_id,
        };
        let sent =
            [(identity(&a), joined(&a, EgressDecision::Allow)), (identity(&b), joined(&b, EgressDecision::Reject))];
        let entry_of = |r: FlowRecord| LogEntry { record: r, omit: Field::SRC_ADDRESS, attributes: vec![] };
        // Redacted and with a flow id of its own: still its record's fields and flow id.
        let mut redacted = a.clone();
        redacted.flow.src = IpAddress::V4(0);
        redacted.flow_id = 12345;
        // Ids swapped between two records: neither gets the other's fields.
        let (mut a_as_b, mut b_as_a) = (a.clone(), b.clone());
        a_as_b.id = b.id;
        b_as_a.id = a.id;
        let entries = [entry_of(redacted), entry_of(a_as_b), entry_of(b_as_a), entry_of(b.clone())];
        let got = join(10, &sent, &entries);
        assert_eq!(got[0].map(|j| (j.flow_id, j.fields.verdict)), Some((a.flow_id, EgressDecision::Allow)));
        assert!(got[1].is_none() && got[2].is_none(), "swapped ids join nothing");
        assert_eq!(got[3].map(|j| j.fields.verdict), Some(EgressDecision::Reject));
        let out = export_record(&entries[0], got[0], &[]);
        assert_eq!(out.get("natgw.flow.id"), Some(&natgw_telemetry::record::Value::Str(format!("{:016x}", a.flow_id))));
    }

    #[test]
    fn a_flow_keeps_its_id_across_its_records_and_flows_differ() {
        let clock = WallClock { epoch_ns: 5 };
        let a = entry(1).record;
        let interim = {
            let mut e = entry(2).record;
            e.end_reason = EndReason::Active;
            e
        };
        assert_eq!(a.flow_id, interim.flow_id);
        assert_ne!(a.id, interim.id);
        let base = flow_end();
        // Each part of the tuple, and the creation time, makes another flow.
        let mut ids = std::collections::HashSet::new();
        for e in [
            base.clone(),
            FlowEnd { created_ms: 2, ..base.clone() },
            FlowEnd { proto: 6, ..base.clone() },
            FlowEnd { src: natgw_core::conntrack::Endpoint { port: 5001, ..base.src }, ..base.clone() },
            FlowEnd { dst: natgw_core::conntrack::Endpoint { port: 54, ..base.dst }, ..base.clone() },
            FlowEnd {
                dst: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(203, 0, 113, 2), ..base.dst },
                ..base.clone()
            },
            FlowEnd { ingress: 1, ..base.clone() },
            FlowEnd { direction: FlowDirection::Ingress, ..base.clone() },
        ] {
            assert!(ids.insert(flow_id(&e, clock)));
        }
        // But not its counters, times or end: those change between its records.
        assert!(!ids.insert(flow_id(
            &FlowEnd { packets: [9, 9], end_ms: 99, reason: NatEndReason::Closed, ..base.clone() },
            clock
        )));
    }
}
