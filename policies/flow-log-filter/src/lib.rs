//! flow-log-filter: what goes into the flow log. Keeps accepted or rejected traffic or
//! both, samples one flow in N, redacts inside addresses to a prefix, leaves out fields,
//! and adds static attributes.
//!
//! ```toml
//! traffic = "all"             # "accept", "reject" or "all" (default), as AWS flow logs
//! sample_one_in = 1           # keep every flow (default); 10 keeps one flow in ten, with
//!                             # every record of it (interim and last: chosen by flow id)
//! redact_inside_prefix = 24   # keep the first 24 bits of inside addresses (default: 32, no redaction)
//! drop_fields = ["srcport"]   # srcaddr srcport dstaddr dstport pkt-srcaddr pkt-srcport pool counters times tcp-flags
//! skip_empty = true           # leave out flows with no packet back (default: false)
//!
//! [attributes]                # added to every entry
//! site = "demo"
//! ```

use std::collections::BTreeMap;

use natgw_policy_sdk::{
    export_policy, parse_toml, Action, Field, FlowLog, FlowRecord, IpAddr, Ipv4Addr, Ipv6Addr, LogEntry, Policy,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    traffic: Option<String>,
    sample_one_in: Option<u32>,
    redact_inside_prefix: Option<u8>,
    #[serde(default)]
    drop_fields: Vec<String>,
    #[serde(default)]
    skip_empty: bool,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

pub struct Filter {
    /// The action kept; `None`: both.
    traffic: Option<Action>,
    one_in: u32,
    keep_bits: u8,
    omit: Vec<Field>,
    skip_empty: bool,
    attributes: Vec<(String, String)>,
}

impl Policy for Filter {
    fn init(config: &str) -> Result<Self, String> {
        let raw: RawConfig = parse_toml(config)?;
        let one_in = raw.sample_one_in.unwrap_or(1);
        if one_in == 0 {
            return Err("sample_one_in = 0: must be at least 1".into());
        }
        let keep_bits = raw.redact_inside_prefix.unwrap_or(32);
        if keep_bits > 32 {
            return Err(format!("redact_inside_prefix = {keep_bits}: must be 0-32"));
        }
        let traffic = match raw.traffic.as_deref().unwrap_or("all") {
            "all" => None,
            "accept" => Some(Action::Accept),
            "reject" => Some(Action::Reject),
            other => return Err(format!("traffic = {other:?}: must be \"accept\", \"reject\" or \"all\"")),
        };
        let mut omit = Vec::new();
        for f in &raw.drop_fields {
            omit.push(Field::parse(f).ok_or_else(|| {
                format!(
                    "drop_fields: {f:?} is not a field ({})",
                    Field::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                )
            })?);
        }
        Ok(Filter {
            traffic,
            one_in,
            keep_bits,
            omit,
            skip_empty: raw.skip_empty,
            attributes: raw.attributes.into_iter().collect(),
        })
    }
}

impl FlowLog for Filter {
    fn process(&mut self, batch: Vec<FlowRecord>) -> Vec<LogEntry> {
        let mask = if self.keep_bits == 0 { 0 } else { u32::MAX << (32 - u32::from(self.keep_bits)) };
        let mut out = Vec::with_capacity(batch.len());
        for mut r in batch {
            // Sampled by flow, so a kept flow keeps its interim records too.
            let sampled = r.flow_id.is_multiple_of(u64::from(self.one_in));
            let wanted = self.traffic.is_none_or(|a| a == r.action);
            if !sampled || !wanted || (self.skip_empty && r.packets_in == 0) {
                continue;
            }
            r.flow.src = match r.flow.src {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                // The same number of leading bits: coarser for IPv6, never finer.
                IpAddr::V6(a) => {
                    let keep = u32::from(self.keep_bits);
                    IpAddr::V6(Ipv6Addr::from(if keep == 0 { 0 } else { u128::from(a) & (u128::MAX << (128 - keep)) }))
                }
            };
            out.push(LogEntry { record: r, omit: self.omit.clone(), attributes: self.attributes.clone() });
        }
        out
    }
}

export_policy!(Filter: flow_log);

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_policy_sdk::{Direction, EndReason, Flow, Protocol};

    fn rec(i: u8, packets_in: u64) -> FlowRecord {
        FlowRecord {
            id: 100 + u64::from(i),
            flow_id: u64::from(i),
            flow: Flow {
                protocol: Protocol::Udp,
                src: Ipv4Addr::new(10, 10, 1, i).into(),
                src_port: 5000,
                dst: Ipv4Addr::new(203, 0, 113, 7).into(),
                dst_port: 7,
                ingress: 0,
            },
            nat_src: Ipv4Addr::new(198, 51, 100, 10).into(),
            nat_src_port: 5000,
            pool: "pool-a".into(),
            packets_out: 1,
            bytes_out: 40,
            packets_in,
            bytes_in: 40 * packets_in,
            start_unix_ns: 1,
            end_unix_ns: 2,
            tcp_flags: 0,
            end_reason: EndReason::IdleTimeout,
            action: Action::Accept,
            direction: Direction::Egress,
        }
    }

    #[test]
    fn samples_redacts_skips_and_annotates() {
        let mut f = Filter::init(
            "sample_one_in = 2\nredact_inside_prefix = 16\nskip_empty = true\ndrop_fields = [\"pool\"]\n[attributes]\na = \"b\"\n",
        )
        .unwrap();
        let out = f.process((1..=8).map(|i| rec(i, if i == 4 { 0 } else { 1 })).collect());
        // Every second flow (2, 4, 6, 8), minus 4 which had no answer.
        assert_eq!(out.iter().map(|e| e.record.flow_id).collect::<Vec<_>>(), [2, 6, 8]);
        assert!(out.iter().all(|e| e.record.id == 100 + e.record.flow_id), "each entry keeps its record's id");
        assert!(out.iter().all(|e| e.record.flow.src == IpAddr::from(Ipv4Addr::new(10, 10, 0, 0))));
        assert_eq!(out[0].omit, vec![Field::Pool]);
        assert_eq!(out[0].attributes, vec![("a".to_string(), "b".to_string())]);
        assert!(Filter::init("drop_fields = [\"colour\"]").err().unwrap().contains("colour"));
        assert!(Filter::init("sample_one_in = 0").err().unwrap().contains("sample_one_in"));
        assert!(Filter::init("traffic = \"some\"").err().unwrap().contains("traffic"));
    }

    #[test]
    fn keeps_the_traffic_asked_for_and_every_record_of_a_sampled_flow() {
        // Flows 1..=6; each has an interim record and its last; 5 and 6 were refused.
        let batch: Vec<FlowRecord> = (1..=6u8)
            .flat_map(|i| {
                let action = if i >= 5 { Action::Reject } else { Action::Accept };
                let interim = FlowRecord { end_reason: EndReason::Active, action, ..rec(i, 1) };
                let last = FlowRecord { id: 200 + u64::from(i), action, ..rec(i, 1) };
                [interim, last]
            })
            .collect();
        let kept = |config: &str| {
            let mut f = Filter::init(config).unwrap();
            f.process(batch.clone()).iter().map(|e| e.record.id).collect::<Vec<_>>()
        };
        assert_eq!(kept("traffic = \"reject\""), [105, 205, 106, 206]);
        assert_eq!(kept("traffic = \"accept\"\nsample_one_in = 2"), [102, 202, 104, 204]);
        assert_eq!(kept("sample_one_in = 3").len(), 4, "flows 3 and 6, both records each");
        assert_eq!(kept("").len(), 12);
    }
}
