//! The questions the slow path asks about a new flow, as the translator sees them.
//!
//! The translator calls a `FlowPolicy` once per new outbound (or hairpin) flow, never per
//! packet: `egress` before a port is allocated, `port_pool` to choose where the mapping
//! comes from. The Wasm runtime (`crate::policy`) implements it; the core neither knows
//! nor cares that a policy is WebAssembly, and tests use plain Rust implementations.
//! Fail modes are applied by the implementation: what comes back here is final.

use std::net::{IpAddr, Ipv4Addr};

use super::pool::PoolId;
use crate::dns::{BoundName, NameTable};

/// A new flow as the inside host sent it (before translation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    /// 0 for ICMP echo.
    pub dst_port: u16,
    /// Index of the inside interface it arrived on.
    pub ingress: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressDecision {
    Allow,
    /// Drop silently (counted as PolicyDenied).
    Deny,
    /// Drop and tell the inside host: TCP RST, or ICMP administratively prohibited.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolDecision {
    /// Take the mapping from this pool; at most `budget` live mappings per inside address.
    Pool { pool: PoolId, budget: Option<u32> },
    /// The hook failed closed: drop the flow (counted as PolicyErrors).
    Refuse,
}

/// The default pool, no budget.
pub const DEFAULT_POOL: PoolDecision = PoolDecision::Pool { pool: 0, budget: None };

/// The names natgw bound to a new flow's destination for its inside host (`crate::dns`),
/// looked up only when a policy asks for them.
#[derive(Debug, Clone, Copy)]
pub struct DestinationNames<'a> {
    table: Option<&'a NameTable>,
    host: Ipv4Addr,
    addr: Ipv4Addr,
    now_ms: u64,
}

impl<'a> DestinationNames<'a> {
    pub fn new(table: Option<&'a NameTable>, host: Ipv4Addr, addr: Ipv4Addr, now_ms: u64) -> Self {
        DestinationNames { table, host, addr, now_ms }
    }

    /// No names (DNS binding off, or a caller without a table).
    pub fn none() -> DestinationNames<'static> {
        DestinationNames { table: None, host: Ipv4Addr::UNSPECIFIED, addr: Ipv4Addr::UNSPECIFIED, now_ms: 0 }
    }

    /// Whether names are bound at all here (`[dns]` on).
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// The time the names are looked up at, in the name table's clock.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Appends every name bound now, each once, with the seconds it still holds.
    pub fn collect_into(&self, out: &mut Vec<BoundName>) {
        if let Some(t) = self.table {
            t.names_for(self.host, IpAddr::V4(self.addr), self.now_ms, out);
        }
    }
}

pub trait FlowPolicy: Send {
    /// May this flow leave?
    fn egress(&mut self, flow: &NewFlow) -> EgressDecision;
    /// May this flow leave, for a policy that reads the names bound to its destination.
    /// Those that do not read them answer `egress`.
    fn egress_named(&mut self, flow: &NewFlow, names: DestinationNames<'_>) -> EgressDecision {
        let _ = names;
        self.egress(flow)
    }
    /// Which pool its mapping comes from.
    fn port_pool(&mut self, flow: &NewFlow) -> PoolDecision;
    /// Called by the worker between batches of frames: the moment a new policy
    /// generation may take over.
    fn batch_boundary(&mut self) {}
    /// The egress policy generation `egress` answers from (0: none installed); the flow
    /// log reports it with each flow.
    fn egress_generation(&self) -> u64 {
        0
    }
    /// `egress_named` for a flow that exists already (`--revalidate`): the live policy only,
    /// never a shadow (whose counts are of new flows).
    fn egress_recheck(&mut self, flow: &NewFlow, names: DestinationNames<'_>) -> EgressDecision {
        self.egress_named(flow, names)
    }
    /// What the shadow egress policy answered for the last `egress` question, if one ran
    /// (`natgw policy shadow`): carried in the flow's records, never acted on.
    fn shadow_verdict(&self) -> Option<EgressDecision> {
        None
    }
    /// How long the last `egress` answer may be reused for its tuple, in ms, if the policy
    /// said (`decision.hold-ms` of natgw:policy@0.2.0); `None`: `refusal_cache_ms`.
    fn egress_hold_ms(&self) -> Option<u32> {
        None
    }
    /// Whether the last `egress` answer was the hook's fail mode (the policy failed), not
    /// the policy's own: such an answer is not remembered for the tuple.
    fn egress_failed(&self) -> bool {
        false
    }
}

/// No policy installed: every flow may leave, from the default pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl FlowPolicy for AllowAll {
    fn egress(&mut self, _: &NewFlow) -> EgressDecision {
        EgressDecision::Allow
    }
    fn port_pool(&mut self, _: &NewFlow) -> PoolDecision {
        DEFAULT_POOL
    }
}
