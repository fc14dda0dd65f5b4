//! One flow-log record as natgw exports it, to every sink alike (the JSON-lines file,
//! OTLP logs, `natgw flows --follow`): what the flow-log policy returned, joined with what
//! only the gateway knows (action, verdict, policy generation, direction, the true reason).
//!
//! Attribute names follow the OpenTelemetry semantic conventions where one exists
//! (`source.address`, `destination.port`, `network.transport`, ...) and are `natgw.*`
//! otherwise. `FIELDS` is the one list of them, with the AWS VPC Flow Logs field each
//! corresponds to; `docs/flow-log.md` documents the same list (a test keeps them equal).

use std::net::Ipv4Addr;

use crate::nat::policy::EgressDecision;
use crate::nat::{EndReason, FlowDirection, FlowEnd};
use crate::policy::bindings::exports::natgw::policy::flow_log::{Field, LogEntry};
use crate::policy::bindings::natgw::policy::types::{IpAddress, Protocol};

/// Every attribute a flow record can carry: (name, AWS VPC Flow Logs field, meaning).
pub const FIELDS: &[(&str, &str, &str)] = &[
    ("natgw.flow.action", "action", "ACCEPT, or REJECT for a flow the egress policy refused"),
    (
        "natgw.flow.end_reason",
        "-",
        "closed, reset, idle-timeout, revalidated, shutdown; active for an interim record; refused",
    ),
    ("natgw.flow.direction", "flow-direction", "egress (opened from inside) or ingress (opened from outside)"),
    ("network.transport", "protocol", "tcp, udp or icmp"),
    ("natgw.flow.protocol", "protocol", "the IANA protocol number: 6, 17 or 1"),
    ("network.type", "type", "ipv4"),
    ("network.interface.name", "interface-id", "the inside interface the flow came in on"),
    ("source.address", "pkt-srcaddr", "the inside host, before translation"),
    ("source.port", "-", "the inside host's port, before translation (ICMP: the echo identifier)"),
    ("destination.address", "pkt-dstaddr", "the remote host"),
    ("destination.port", "dstport", "the remote port (0 for ICMP)"),
    ("natgw.nat.source.address", "srcaddr", "the external address the flow left from, after translation"),
    ("natgw.nat.source.port", "srcport", "the external port (ICMP: identifier) after translation"),
    ("natgw.nat.destination.address", "dstaddr", "the destination after translation (source NAT keeps it)"),
    ("natgw.nat.destination.port", "dstport", "the destination port after translation"),
    ("natgw.nat.pool", "-", "the [[pool]] the mapping came from"),
    ("natgw.flow.packets", "packets", "packets in this record's window, both directions"),
    ("natgw.flow.bytes", "bytes", "IP bytes in this record's window, both directions"),
    ("natgw.flow.packets.out", "-", "packets inside to outside in the window"),
    ("natgw.flow.bytes.out", "-", "bytes inside to outside in the window"),
    ("natgw.flow.packets.in", "-", "packets outside to inside in the window"),
    ("natgw.flow.bytes.in", "-", "bytes outside to inside in the window"),
    ("natgw.flow.start", "start", "the window's start, Unix time in nanoseconds (AWS: seconds)"),
    ("natgw.flow.end", "end", "the window's end, Unix time in nanoseconds (AWS: seconds)"),
    ("natgw.flow.created", "-", "when the flow was created, Unix time in nanoseconds"),
    ("natgw.flow.tcp_flags", "tcp-flags", "OR of the TCP flags seen in both directions over the flow's life"),
    ("natgw.policy.verdict", "-", "the egress verdict that admitted or refused it: allow, deny or reject"),
    ("natgw.policy.generation", "-", "the egress policy generation that gave it (0: no policy installed)"),
];

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v.min(i64::MAX as u64) as i64)
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}

/// What only the gateway knows about a record; the flow-log policy never sees or changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFields {
    pub reason: EndReason,
    pub direction: FlowDirection,
    pub verdict: EgressDecision,
    pub generation: u64,
    pub created_unix_ns: u64,
}

impl HostFields {
    pub fn of(e: &FlowEnd, created_unix_ns: u64) -> Self {
        HostFields {
            reason: e.reason,
            direction: e.direction,
            verdict: e.verdict,
            generation: e.policy_generation,
            created_unix_ns,
        }
    }
}

/// A record ready for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRecord {
    /// The end of its window, Unix ns (the OTLP log record's timestamp).
    pub time_unix_ns: u64,
    pub accepted: Option<bool>,
    pub attributes: Vec<(String, Value)>,
}

fn ip_text(a: &IpAddress) -> String {
    match a {
        IpAddress::V4(v) => Ipv4Addr::from(*v).to_string(),
        IpAddress::V6((hi, lo)) => std::net::Ipv6Addr::from((u128::from(*hi) << 64) | u128::from(*lo)).to_string(),
    }
}

fn reason_text(r: EndReason) -> &'static str {
    match r {
        EndReason::Closed => "closed",
        EndReason::Reset => "reset",
        EndReason::IdleTimeout => "idle-timeout",
        EndReason::Revalidated => "revalidated",
        EndReason::Shutdown => "shutdown",
        EndReason::Active => "active",
        EndReason::Refused => "refused",
    }
}

use crate::policy::bindings::exports::natgw::policy::flow_log::EndReason as WitEndReason;

fn wit_reason_text(r: WitEndReason) -> &'static str {
    match r {
        WitEndReason::Closed => "closed",
        WitEndReason::Reset => "reset",
        WitEndReason::IdleTimeout => "idle-timeout",
        WitEndReason::Revalidated => "revalidated",
        WitEndReason::Shutdown => "shutdown",
    }
}

impl ExportRecord {
    /// Builds the record from a policy's entry and, when it could be matched to the flow
    /// it came from, the gateway's own fields. Fields the policy omitted are left out;
    /// a policy attribute never replaces a gateway one.
    pub fn new(e: &LogEntry, host: Option<&HostFields>, interfaces: &[String]) -> Self {
        let r = &e.record;
        let f = &r.flow;
        let keep = |x: Field| !e.omit.contains(x);
        let mut a: Vec<(String, Value)> = Vec::with_capacity(32);
        let mut put = |k: &str, v: Value| a.push((k.to_string(), v));
        if let Some(h) = host {
            put("natgw.flow.action", if h.reason == EndReason::Refused { "REJECT" } else { "ACCEPT" }.into());
            put("natgw.flow.end_reason", reason_text(h.reason).into());
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
        let translated = host.is_none_or(|h| h.reason != EndReason::Refused);
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
            put(
                "natgw.policy.verdict",
                match h.verdict {
                    EgressDecision::Allow => "allow",
                    EgressDecision::Deny => "deny",
                    EgressDecision::Reject => "reject",
                }
                .into(),
            );
            put("natgw.policy.generation", h.generation.into());
        }
        for attr in &e.attributes {
            if !a.iter().any(|(k, _)| *k == attr.key) {
                a.push((attr.key.clone(), Value::Str(attr.value.clone())));
            }
        }
        ExportRecord {
            time_unix_ns: r.end_unix_ns,
            accepted: host.map(|h| h.reason != EndReason::Refused),
            attributes: a,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// One JSON object, attribute names as keys.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.attributes {
            let v = match v {
                Value::Str(s) => serde_json::Value::from(s.clone()),
                Value::Int(i) => serde_json::Value::from(*i),
            };
            m.insert(k.clone(), v);
        }
        serde_json::Value::Object(m)
    }
}

/// The fields of a record a flow-log policy is not expected to rewrite (it filters,
/// samples, redacts addresses and omits fields): they tie its entries back to the flows
/// they came from.
pub fn identity(r: &crate::policy::bindings::exports::natgw::policy::flow_log::FlowRecord) -> [u64; 7] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_documented_in_docs_flow_log_md() {
        let doc = include_str!("../../../docs/flow-log.md");
        for (name, aws, _) in FIELDS {
            let row = doc.lines().find(|l| l.starts_with(&format!("| `{name}` |")));
            let row = row.unwrap_or_else(|| panic!("docs/flow-log.md has no row for `{name}`"));
            assert!(row.contains(aws), "the row for {name} must name AWS field {aws}: {row}");
        }
    }
}
