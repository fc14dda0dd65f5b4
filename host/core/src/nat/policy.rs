//! The questions the slow path asks about a new flow, as the translator sees them.
//!
//! The translator calls a `FlowPolicy` once per new outbound (or hairpin) flow, never per
//! packet: `egress` before a port is allocated, `port_pool` to choose where the mapping
//! comes from. The Wasm runtime (`crate::policy`) implements it; the core neither knows
//! nor cares that a policy is WebAssembly, and tests use plain Rust implementations.
//! Fail modes are applied by the implementation: what comes back here is final.

use std::net::Ipv4Addr;

use super::pool::PoolId;

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

pub trait FlowPolicy: Send {
    /// May this flow leave?
    fn egress(&mut self, flow: &NewFlow) -> EgressDecision;
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
