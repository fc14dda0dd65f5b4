//! One flow-log record as natgw exports it, to every sink alike (the JSON-lines file,
//! OTLP logs, `natgw flows --follow`): what the flow-log policy returned, joined with what
//! only the gateway knows (action, verdict, policy generation, direction, the true reason).
//!
//! Attribute names follow the OpenTelemetry semantic conventions where one exists
//! (`source.address`, `destination.port`, `network.transport`, ...) and are `natgw.*`
//! otherwise. `FIELDS` is the one list of them, with the AWS VPC Flow Logs field each
//! corresponds to; `docs/flow-log.md` documents the same list (a test keeps them equal).

use natgw_core::nat::policy::EgressDecision;
use natgw_core::nat::{EndReason, FlowDirection, FlowEnd};

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
    (
        "natgw.shadow.verdict",
        "-",
        "what the shadow egress policy answered for it (natgw policy shadow; absent when none ran)",
    ),
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
    pub shadow: Option<EgressDecision>,
}

impl HostFields {
    pub fn of(e: &FlowEnd, created_unix_ns: u64) -> Self {
        HostFields {
            reason: e.reason,
            direction: e.direction,
            verdict: e.verdict,
            generation: e.policy_generation,
            created_unix_ns,
            shadow: e.shadow_verdict,
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

/// The end reason as records say it.
pub fn end_reason_name(r: EndReason) -> &'static str {
    match r {
        EndReason::Closed => "closed",
        EndReason::Reset => "reset",
        EndReason::IdleTimeout => "idle-timeout",
        EndReason::Revalidated => "revalidated",
        EndReason::EarlyDrop => "early-drop",
        EndReason::Shutdown => "shutdown",
        EndReason::Active => "active",
        EndReason::Refused => "refused",
    }
}

impl ExportRecord {
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
