//! What the translator knows about the gateway: its inside links, external addresses,
//! pools, filtering, timeouts and limits, one copy per worker.

use std::net::Ipv4Addr;

use std::sync::Arc;

use natgw_wire::Ipv4Net;

use super::pool::{PoolSpec, SourcePorts};
use crate::conntrack::Timeouts;
use crate::shared_counts::SharedCounts;

/// Endpoint filtering for inbound packets (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Only replies from the exact remote address and port a flow was sent to (default).
    AddressAndPortDependent,
    /// Anyone may reach an existing mapping.
    EndpointIndependent,
}

/// One inside interface: its gateway addresses (with their subnets) and MTU.
#[derive(Debug, Clone)]
pub struct InsideLink {
    pub name: String,
    pub addresses: Vec<Ipv4Net>,
    pub mtu: u16,
}

/// Everything the translator needs to know about the gateway, per worker.
#[derive(Debug, Clone)]
pub struct NatConfig {
    pub inside: Vec<InsideLink>,
    pub external_addrs: Vec<Ipv4Addr>,
    /// Pools of external addresses and ports; pool 0 is the default. Every address is one
    /// of `external_addrs`.
    pub pools: Vec<PoolSpec>,
    /// Live mappings per inside source and pool, shared by every worker's translator
    /// (per-source port budgets hold for the whole gateway).
    pub source_ports: Arc<SourcePorts>,
    /// Flows each inside source holds, over every worker's table, for
    /// `max_flows_per_source`; shared like `source_ports`.
    pub source_flows: Arc<SharedCounts<Ipv4Addr>>,
    pub outside_net: Ipv4Net,
    pub outside_gateway: Ipv4Addr,
    pub outside_mtu: u16,
    pub filtering: Filtering,
    pub timeouts: Timeouts,
    /// Flow table limit for this worker.
    pub max_flows: usize,
    /// Above this many flows (this worker's high-water mark) flows never answered go
    /// after `timeouts.unanswered_under_pressure`, oldest first.
    pub high_water_flows: usize,
    /// Flows one inside source may hold over the whole gateway, every worker's table
    /// together (0: no limit). Checked before a flow is made and counted when it is, so
    /// workers making a source's flows at the same instant may pass it by one each.
    pub max_flows_per_source: usize,
    /// Under endpoint-independent filtering: flows the outside may open towards one
    /// mapping (0: no limit).
    pub max_inbound_per_mapping: usize,
    pub worker: usize,
    pub workers: usize,
    /// Bytes of fragment state this worker may hold (entries and early fragments).
    pub fragment_memory: usize,
    /// ICMP errors natgw may generate per second (per worker).
    pub icmp_error_rate: u32,
    /// How long a refusal of the egress policy holds for its full tuple (0: never
    /// remembered; `refusals`).
    pub refusal_cache_ms: u64,
    /// `(node, nodes)`: with a standby (`[ha]`), this node allocates new external ports
    /// only from its slice, `nat::node_of_port(port, workers, nodes) == node`, so that two
    /// nodes both active (a cut sync link) never map one external port to two inside
    /// endpoints. Flows imported from the peer keep their ports. Not in the fingerprint:
    /// the two nodes of a pair differ here (the mix they share is).
    pub node_slice: (u16, u16),
}

impl NatConfig {
    /// What handed-over flow state depends on (`handoff`): the worker count, the inside
    /// links (names and addresses), the external addresses, the pools, and, where ports are
    /// split over workers or HA nodes, how they are (`steering::port_spread`; earlier builds
    /// used `port % workers`, so their flows would land on the wrong workers). FNV-1a over
    /// a fixed encoding, so every natgw binary with the same steering computes the same
    /// value for the same config.
    pub fn state_fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h ^= u64::from(x);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&(self.workers as u64).to_be_bytes());
        // Only where ports are split (over workers, or HA nodes): a single worker without
        // a standby keeps its flows across builds that steer differently.
        if self.workers > 1 || self.node_slice.1 > 1 {
            eat(b"port-spread");
            eat(&super::PORT_SPREAD_MULTIPLIER.to_be_bytes());
        }
        for l in &self.inside {
            eat(l.name.as_bytes());
            eat(&[0]);
            for n in &l.addresses {
                eat(&n.addr.octets());
                eat(&[n.prefix]);
            }
            eat(&[0xff]);
        }
        for a in &self.external_addrs {
            eat(&a.octets());
        }
        for p in &self.pools {
            eat(p.name.as_bytes());
            eat(&[0]);
            for a in &p.addrs {
                eat(&a.octets());
            }
            eat(&p.lo.to_be_bytes());
            eat(&p.hi.to_be_bytes());
        }
        h
    }
}
