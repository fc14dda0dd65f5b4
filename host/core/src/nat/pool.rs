//! External addresses and ports: paired address pooling, endpoint-independent mappings
//! (RFC 4787 REQ-1, RFC 5382 REQ-1) with port preservation, and per-worker port slices.
//!
//! A worker owns the ports `p` with `owner_of_port(p) == worker`: the port of an inbound packet
//! names the worker that owns its mapping (VPP's `port_per_thread`), so steering needs no
//! shared state.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use thiserror::Error;

use super::steering::{node_of_port, owner_of_port};
use crate::conntrack::Endpoint;
use crate::shared_counts::SharedCounts;
use natgw_wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("no free port on {addr} for protocol {proto} in this worker's slice of {lo}-{hi}")]
    Exhausted { addr: Ipv4Addr, proto: u8, lo: u16, hi: u16 },
    #[error("{inside} already holds its budget of {budget} mappings in pool {pool:?}")]
    OverBudget { inside: Ipv4Addr, pool: String, budget: u32 },
    #[error("no pool with index {0}")]
    UnknownPool(PoolId),
    #[error("{addr}:{port} ({proto}) is not this worker's to hold in pool {pool}")]
    NotOurs { addr: Ipv4Addr, port: u16, proto: u8, pool: PoolId },
    #[error("{addr}:{port} ({proto}) already maps another inside endpoint")]
    Conflict { addr: Ipv4Addr, port: u16, proto: u8 },
}

/// Paired pooling (RFC 4787 REQ-2): an inside host always leaves from the same external
/// address. The choice is a fixed hash so that every worker and every restart agrees.
pub fn paired_address_index(inside: Ipv4Addr, n_addrs: usize) -> usize {
    let mut h = u32::from(inside);
    // murmur3 fmix32: spreads consecutive host addresses over the pool.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h as usize) % n_addrs.max(1)
}

/// The external ports (or ICMP identifiers) a pool hands out for `proto`. ICMP identifiers
/// are not ports: any value is fine, so the host's is kept when it can be.
fn port_range(spec: &PoolSpec, proto: u8) -> (u16, u16) {
    if proto == PROTO_ICMP {
        (1, u16::MAX)
    } else {
        (spec.lo, spec.hi)
    }
}

fn proto_index(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        PROTO_ICMP => 2,
        _ => 3,
    }
}

/// One bit per port, per protocol and external address.
struct PortBitmap {
    words: Vec<u64>,
}

impl PortBitmap {
    fn new() -> Self {
        PortBitmap { words: vec![0; 1024] }
    }
    fn is_set(&self, p: u16) -> bool {
        self.words[usize::from(p) / 64] & (1 << (p % 64)) != 0
    }
    fn set(&mut self, p: u16, v: bool) {
        let w = &mut self.words[usize::from(p) / 64];
        if v {
            *w |= 1 << (p % 64)
        } else {
            *w &= !(1 << (p % 64))
        }
    }
}

/// One pool of external addresses and ports, as the config's `[[pool]]` defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub addrs: Vec<Ipv4Addr>,
    pub lo: u16,
    pub hi: u16,
}

/// Index of a pool in the config's list.
pub type PoolId = u16;

/// Live mappings per (pool, inside address), shared by every worker so that a per-source
/// port budget holds for the gateway, not per worker.
pub type SourcePorts = SharedCounts<(PoolId, Ipv4Addr)>;

#[derive(Debug, Clone)]
pub struct Mapping {
    pub proto: u8,
    pub inside: Endpoint,
    pub inside_if: u8,
    pub external: Endpoint,
    pub pool: PoolId,
    /// Flows holding this mapping; it is released when the last one ends.
    pub refs: u32,
}

pub type MappingId = u32;

/// One pool's port bitmaps and search cursors.
struct PoolPorts {
    spec: PoolSpec,
    /// [proto index][address index]
    used: Vec<Vec<PortBitmap>>,
    /// Where the next search for a free port starts, per protocol and address.
    cursor: Vec<Vec<u16>>,
}

/// The endpoint-independent mappings of one worker and the ports they hold, over every
/// pool. Pools never share an (address, port), so an external endpoint names one mapping.
pub struct Mappings {
    pools: Vec<PoolPorts>,
    external_addrs: Vec<Ipv4Addr>,
    worker: u16,
    workers: u16,
    /// `(node, nodes)`: the slice of this worker's ports new mappings come from
    /// (`NatConfig::node_slice`).
    node_slice: (u16, u16),
    slots: Vec<Option<Mapping>>,
    free: Vec<MappingId>,
    /// Endpoint-independent mapping holds per pool: (pool, proto, inside addr, inside port).
    by_inside: HashMap<(PoolId, u8, Ipv4Addr, u16), MappingId, ahash::RandomState>,
    by_external: HashMap<(u8, Ipv4Addr, u16), MappingId, ahash::RandomState>,
    /// Live mappings per (pool, inside address) over all workers, for port budgets.
    per_source: std::sync::Arc<SourcePorts>,
}

impl Mappings {
    /// One pool: every external address with one port range.
    pub fn new(external_addrs: Vec<Ipv4Addr>, lo: u16, hi: u16, worker: u16, workers: u16) -> Self {
        let specs = vec![PoolSpec { name: "default".into(), addrs: external_addrs, lo, hi }];
        Self::with_pools(specs, worker, workers, Default::default())
    }

    /// Several pools; pool 0 is the default one. `per_source` is shared by all workers.
    pub fn with_pools(
        specs: Vec<PoolSpec>,
        worker: u16,
        workers: u16,
        per_source: std::sync::Arc<SourcePorts>,
    ) -> Self {
        let mut external_addrs: Vec<Ipv4Addr> = Vec::new();
        for a in specs.iter().flat_map(|s| s.addrs.iter()) {
            if !external_addrs.contains(a) {
                external_addrs.push(*a);
            }
        }
        let pools = specs
            .into_iter()
            .map(|spec| {
                let n = spec.addrs.len();
                PoolPorts {
                    used: (0..4).map(|_| (0..n).map(|_| PortBitmap::new()).collect()).collect(),
                    cursor: (0..4).map(|_| vec![spec.lo; n]).collect(),
                    spec,
                }
            })
            .collect();
        Mappings {
            pools,
            external_addrs,
            worker,
            workers: workers.max(1),
            node_slice: (0, 1),
            slots: Vec::new(),
            free: Vec::new(),
            by_inside: HashMap::with_hasher(ahash::RandomState::new()),
            by_external: HashMap::with_hasher(ahash::RandomState::new()),
            per_source,
        }
    }

    /// Every external address of every pool.
    /// New mappings take ports only from this node's slice (`NatConfig::node_slice`).
    pub fn set_node_slice(&mut self, node: u16, nodes: u16) {
        let nodes = nodes.max(1);
        self.node_slice = (node % nodes, nodes);
    }

    pub fn external_addrs(&self) -> &[Ipv4Addr] {
        &self.external_addrs
    }

    pub fn is_external(&self, a: Ipv4Addr) -> bool {
        self.external_addrs.contains(&a)
    }

    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    pub fn pool_name(&self, pool: PoolId) -> &str {
        self.pools.get(usize::from(pool)).map_or("", |p| p.spec.name.as_str())
    }

    pub fn get(&self, id: MappingId) -> Option<&Mapping> {
        self.slots.get(id as usize).and_then(|m| m.as_ref())
    }

    pub fn len(&self) -> usize {
        self.by_inside.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_inside.is_empty()
    }

    /// The mapping that owns an external endpoint, if any.
    pub fn by_external(&self, proto: u8, ext: Ipv4Addr, port: u16) -> Option<MappingId> {
        self.by_external.get(&(proto, ext, port)).copied()
    }

    /// Finds or creates the mapping for an inside endpoint in the default pool.
    pub fn acquire(&mut self, proto: u8, inside: Endpoint, inside_if: u8) -> Result<MappingId, PoolError> {
        self.acquire_in(0, None, proto, inside, inside_if)
    }

    /// Finds or creates the mapping for an inside endpoint in `pool` and takes a reference
    /// on it. A new mapping is refused when the inside address already holds `budget`
    /// mappings in this pool.
    pub fn acquire_in(
        &mut self,
        pool: PoolId,
        budget: Option<u32>,
        proto: u8,
        inside: Endpoint,
        inside_if: u8,
    ) -> Result<MappingId, PoolError> {
        if let Some(&id) = self.by_inside.get(&(pool, proto, inside.addr, inside.port)) {
            if let Some(m) = self.slots[id as usize].as_mut() {
                m.refs += 1;
                return Ok(id);
            }
        }
        let pi = usize::from(pool);
        let Some(pp) = self.pools.get(pi) else { return Err(PoolError::UnknownPool(pool)) };
        if pp.spec.addrs.is_empty() {
            return Err(PoolError::UnknownPool(pool));
        }
        if !self.per_source.try_take((pool, inside.addr), budget) {
            let budget = budget.unwrap_or(0);
            return Err(PoolError::OverBudget { inside: inside.addr, pool: pp.spec.name.clone(), budget });
        }
        let ai = paired_address_index(inside.addr, pp.spec.addrs.len());
        let addr = pp.spec.addrs[ai];
        let (lo, hi) = (pp.spec.lo, pp.spec.hi);
        let Some(port) = self.allocate_port(pi, proto, ai, inside.port) else {
            self.per_source.give_back(&(pool, inside.addr));
            return Err(PoolError::Exhausted { addr, proto, lo, hi });
        };
        Ok(self.store(Mapping { proto, inside, inside_if, external: Endpoint { addr, port }, pool, refs: 1 }))
    }

    /// Files a new mapping (its port already marked used) in a free slot and both indexes.
    fn store(&mut self, m: Mapping) -> MappingId {
        let (inside_key, external_key) =
            ((m.pool, m.proto, m.inside.addr, m.inside.port), (m.proto, m.external.addr, m.external.port));
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(m);
                id
            }
            None => {
                // One mapping per external (protocol, address, port): far fewer than 2^32.
                let id = MappingId::try_from(self.slots.len()).unwrap_or(MappingId::MAX);
                self.slots.push(Some(m));
                id
            }
        };
        self.by_inside.insert(inside_key, id);
        self.by_external.insert(external_key, id);
        id
    }

    /// Takes a reference on the mapping of `inside` in `pool` to exactly `external`,
    /// creating it when needed: how a flow taken over from another process or node brings
    /// its mapping along. Refused when the endpoint is not one this worker may hold (another
    /// pool's address, outside the range, another worker's slice) or already maps another
    /// inside endpoint: no external endpoint ever names two inside ones. Budgets are not
    /// checked (the mapping exists already); it counts towards them.
    pub fn import(
        &mut self,
        pool: PoolId,
        proto: u8,
        inside: Endpoint,
        inside_if: u8,
        external: Endpoint,
    ) -> Result<MappingId, PoolError> {
        let conflict = PoolError::Conflict { addr: external.addr, port: external.port, proto };
        if let Some(&id) = self.by_inside.get(&(pool, proto, inside.addr, inside.port)) {
            let m = self.slots.get_mut(id as usize).and_then(|m| m.as_mut()).ok_or(conflict.clone())?;
            if m.external != external {
                return Err(conflict);
            }
            m.refs += 1;
            return Ok(id);
        }
        if self.by_external.contains_key(&(proto, external.addr, external.port)) {
            return Err(conflict);
        }
        let not_ours = PoolError::NotOurs { addr: external.addr, port: external.port, proto, pool };
        let (worker, workers) = (self.worker, self.workers);
        let pp = self.pools.get_mut(usize::from(pool)).ok_or(PoolError::UnknownPool(pool))?;
        let ai = pp.spec.addrs.iter().position(|a| *a == external.addr).ok_or(not_ours.clone())?;
        let (lo, hi) = port_range(&pp.spec, proto);
        let bitmap = &mut pp.used[proto_index(proto)][ai];
        if external.port < lo
            || external.port > hi
            || owner_of_port(external.port, usize::from(workers)) != usize::from(worker)
            || bitmap.is_set(external.port)
        {
            return Err(not_ours);
        }
        bitmap.set(external.port, true);
        self.per_source.try_take((pool, inside.addr), None);
        Ok(self.store(Mapping { proto, inside, inside_if, external, pool, refs: 1 }))
    }

    /// Takes another reference on an existing mapping (a flow initiated from outside).
    pub fn add_ref(&mut self, id: MappingId) {
        if let Some(m) = self.slots.get_mut(id as usize).and_then(|m| m.as_mut()) {
            m.refs += 1;
        }
    }

    pub fn release(&mut self, id: MappingId) {
        let Some(slot) = self.slots.get_mut(id as usize) else { return };
        let Some(m) = slot.as_mut() else { return };
        m.refs = m.refs.saturating_sub(1);
        if m.refs > 0 {
            return;
        }
        let m = slot.take().expect("checked above");
        self.by_inside.remove(&(m.pool, m.proto, m.inside.addr, m.inside.port));
        self.by_external.remove(&(m.proto, m.external.addr, m.external.port));
        self.per_source.give_back(&(m.pool, m.inside.addr));
        if let Some(pp) = self.pools.get_mut(usize::from(m.pool)) {
            if let Some(ai) = pp.spec.addrs.iter().position(|a| *a == m.external.addr) {
                pp.used[proto_index(m.proto)][ai].set(m.external.port, false);
            }
        }
        self.free.push(id);
    }

    /// Port preservation first (RFC 4787 REQ-4 "port preservation" is a MAY we honour when
    /// the port is free and ours), then the next free port of this worker's slice.
    fn allocate_port(&mut self, pool: usize, proto: u8, ai: usize, preferred: u16) -> Option<u16> {
        let (worker, workers) = (self.worker, self.workers);
        let (node, nodes) = self.node_slice;
        let owns = |p: u16| {
            usize::from(worker) == owner_of_port(p, usize::from(workers)) && node_of_port(p, workers, nodes) == node
        };
        let pp = &mut self.pools[pool];
        let pi = proto_index(proto);
        let (lo, hi) = port_range(&pp.spec, proto);
        if preferred >= lo && preferred <= hi && owns(preferred) && !pp.used[pi][ai].is_set(preferred) {
            pp.used[pi][ai].set(preferred, true);
            return Some(preferred);
        }
        let span = u32::from(hi - lo) + 1;
        let start = pp.cursor[pi][ai].clamp(lo, hi);
        let bitmap = &mut pp.used[pi][ai];
        // Walk the range once from the cursor; skip quickly over full 64-port words.
        let mut i: u32 = 0;
        while i < span {
            // Within lo..=hi, so it fits a port.
            let Ok(p) = u16::try_from((u32::from(start) - u32::from(lo) + i) % span + u32::from(lo)) else { break };
            if p.is_multiple_of(64)
                && bitmap.words[usize::from(p) / 64] == u64::MAX
                && i + 64 <= span
                && u32::from(p) + 63 <= u32::from(hi)
            {
                i += 64;
                continue;
            }
            if owns(p) && !bitmap.is_set(p) {
                bitmap.set(p, true);
                pp.cursor[pi][ai] = if p == hi { lo } else { p + 1 };
                return Some(p);
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: [u8; 4], port: u16) -> Endpoint {
        Endpoint { addr: Ipv4Addr::from(a), port }
    }

    #[test]
    fn endpoint_independent_and_preserving() {
        let mut m = Mappings::new(vec![Ipv4Addr::new(198, 51, 100, 10)], 1024, 65535, 0, 1);
        let a = m.acquire(PROTO_UDP, ep([10, 10, 1, 10], 5000), 0).unwrap();
        let b = m.acquire(PROTO_UDP, ep([10, 10, 1, 10], 5000), 0).unwrap();
        assert_eq!(a, b, "same inside endpoint, same mapping whatever the destination");
        assert_eq!(m.get(a).unwrap().external.port, 5000);
        // Another host with the same source port gets a distinct external port.
        let c = m.acquire(PROTO_UDP, ep([10, 10, 2, 10], 5000), 0).unwrap();
        assert_ne!(m.get(c).unwrap().external.port, 5000);
        // Released only after the last reference.
        m.release(a);
        assert!(m.by_external(PROTO_UDP, Ipv4Addr::new(198, 51, 100, 10), 5000).is_some());
        m.release(b);
        assert!(m.by_external(PROTO_UDP, Ipv4Addr::new(198, 51, 100, 10), 5000).is_none());
    }

    #[test]
    fn paired_pooling_is_stable() {
        let addrs = vec![Ipv4Addr::new(198, 51, 100, 10), Ipv4Addr::new(198, 51, 100, 11)];
        let mut m = Mappings::new(addrs.clone(), 1024, 65535, 0, 1);
        let host = [10, 10, 1, 10];
        let first = m.acquire(PROTO_TCP, ep(host, 1), 0).unwrap();
        let want = m.get(first).unwrap().external.addr;
        for p in 2..200 {
            let id = m.acquire(PROTO_TCP, ep(host, p), 0).unwrap();
            assert_eq!(m.get(id).unwrap().external.addr, want);
        }
        // Different hosts spread over both addresses.
        let used: std::collections::HashSet<_> =
            (1..=20u8).map(|h| addrs[paired_address_index(Ipv4Addr::new(10, 10, 1, h), 2)]).collect();
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn exhaustion_then_reuse() {
        let mut m = Mappings::new(vec![Ipv4Addr::new(198, 51, 100, 10)], 2000, 2009, 0, 1);
        let ids: Vec<_> = (0..10).map(|i| m.acquire(PROTO_TCP, ep([10, 0, 0, 1], 40000 + i), 0).unwrap()).collect();
        let err = m.acquire(PROTO_TCP, ep([10, 0, 0, 1], 50000), 0).unwrap_err();
        assert!(matches!(err, PoolError::Exhausted { .. }));
        // UDP has its own port space.
        assert!(m.acquire(PROTO_UDP, ep([10, 0, 0, 1], 50000), 0).is_ok());
        m.release(ids[3]);
        assert!(m.acquire(PROTO_TCP, ep([10, 0, 0, 1], 50000), 0).is_ok());
    }

    #[test]
    fn worker_slices_are_disjoint() {
        let addr = vec![Ipv4Addr::new(198, 51, 100, 10)];
        let mut w0 = Mappings::new(addr.clone(), 1024, 65535, 0, 2);
        let mut w1 = Mappings::new(addr, 1024, 65535, 1, 2);
        for p in 0..1000u16 {
            let a = w0.acquire(PROTO_UDP, ep([10, 0, 0, 1], 30000 + p), 0).unwrap();
            let b = w1.acquire(PROTO_UDP, ep([10, 0, 0, 2], 30000 + p), 0).unwrap();
            assert_eq!(owner_of_port(w0.get(a).unwrap().external.port, 2), 0);
            assert_eq!(owner_of_port(w1.get(b).unwrap().external.port, 2), 1);
        }
    }

    #[test]
    fn node_slices_never_share_a_port_and_imports_cross_them() {
        // Two HA nodes, two workers each, the same inside hosts and ports (both active
        // during a cut sync link): no external port is handed out twice.
        let addr = vec![Ipv4Addr::new(198, 51, 100, 10)];
        let mut taken = std::collections::HashMap::new();
        for node in 0..2u16 {
            for worker in 0..2u16 {
                let mut m = Mappings::new(addr.clone(), 1024, 65535, worker, 2);
                m.set_node_slice(node, 2);
                // Preferred ports of every residue, and then exhaustion of the slice.
                let mut got = 0;
                for p in 1024..=65535u16 {
                    let Ok(id) = m.acquire(PROTO_UDP, ep([10, 0, 0, 1], p), 0) else { break };
                    let port = m.get(id).unwrap().external.port;
                    assert_eq!(owner_of_port(port, 2), usize::from(worker));
                    assert_eq!(node_of_port(port, 2, 2), node);
                    assert!(taken.insert(port, (node, worker)).is_none(), "port {port} handed out twice");
                    got += 1;
                }
                let slice = (1024..=65535u16)
                    .filter(|&p| owner_of_port(p, 2) == usize::from(worker) && node_of_port(p, 2, 2) == node)
                    .count();
                assert_eq!(got, slice, "node {node} worker {worker} gets its whole slice");
                assert!(slice.abs_diff((65536 - 1024) / 4) < 200, "a quarter of the range: {slice}");
            }
        }
        // A flow imported from the peer keeps the peer's port.
        let mut m = Mappings::new(addr.clone(), 1024, 65535, 0, 2);
        m.set_node_slice(0, 2);
        let peer_port = (1024..).find(|&p: &u16| owner_of_port(p, 2) == 0 && node_of_port(p, 2, 2) == 1).unwrap();
        let ext = Endpoint { addr: addr[0], port: peer_port };
        assert!(m.import(0, PROTO_UDP, ep([10, 0, 0, 9], 5000), 0, ext).is_ok());
    }

    #[test]
    fn sixty_four_thousand_per_address() {
        let mut m = Mappings::new(vec![Ipv4Addr::new(198, 51, 100, 10)], 1024, 65535, 0, 1);
        for i in 0..64_000u32 {
            let host = Ipv4Addr::from(0x0a00_0000 + (i / 60_000));
            m.acquire(PROTO_TCP, Endpoint { addr: host, port: 1024 + (i % 60_000) as u16 }, 0).unwrap();
        }
        assert_eq!(m.len(), 64_000);
    }

    #[test]
    fn pools_are_separate_and_budgets_hold() {
        let a = Ipv4Addr::new(198, 51, 100, 10);
        let b = Ipv4Addr::new(198, 51, 100, 20);
        let specs = vec![
            PoolSpec { name: "default".into(), addrs: vec![a], lo: 1024, hi: 65535 },
            PoolSpec { name: "blue".into(), addrs: vec![b], lo: 20000, hi: 20999 },
        ];
        let shared = std::sync::Arc::new(SourcePorts::default());
        let mut m = Mappings::with_pools(specs.clone(), 0, 2, shared.clone());
        // Another worker's mappings count against the same budget.
        let mut other = Mappings::with_pools(specs, 1, 2, shared.clone());
        let host = ep([10, 10, 2, 10], 5000);
        let x = m.acquire_in(1, Some(2), PROTO_UDP, host, 0).unwrap();
        let ext = m.get(x).unwrap().external;
        assert_eq!(ext.addr, b);
        assert!((20000..=20999).contains(&ext.port), "the pool's own range: {}", ext.port);
        // Endpoint-independent mapping holds per pool: the same endpoint in the default pool
        // is a different mapping from a different address.
        let y = m.acquire_in(0, None, PROTO_UDP, host, 0).unwrap();
        assert_ne!(x, y);
        assert_eq!(m.get(y).unwrap().external.addr, a);
        // Reusing the mapping costs no budget; a second port does; a third is refused.
        assert_eq!(m.acquire_in(1, Some(2), PROTO_UDP, host, 0).unwrap(), x);
        m.acquire_in(1, Some(2), PROTO_UDP, ep([10, 10, 2, 10], 5001), 0).unwrap();
        let err = m.acquire_in(1, Some(2), PROTO_UDP, ep([10, 10, 2, 10], 5002), 0).unwrap_err();
        assert!(matches!(err, PoolError::OverBudget { budget: 2, .. }), "{err}");
        let err = other.acquire_in(1, Some(2), PROTO_UDP, ep([10, 10, 2, 10], 7000), 0).unwrap_err();
        assert!(matches!(err, PoolError::OverBudget { .. }), "the budget is per gateway, not per worker");
        assert_eq!(shared.held(&(1, Ipv4Addr::new(10, 10, 2, 10))), 2);
        // Another source has its own budget.
        m.acquire_in(1, Some(2), PROTO_UDP, ep([10, 10, 2, 11], 5002), 0).unwrap();
        // Releasing gives the budget back.
        m.release(x);
        m.release(x);
        m.acquire_in(1, Some(2), PROTO_UDP, ep([10, 10, 2, 10], 5002), 0).unwrap();
        assert!(m.is_external(a) && m.is_external(b));
        assert_eq!(m.by_external(PROTO_UDP, a, m.get(y).unwrap().external.port), Some(y));
    }
}
