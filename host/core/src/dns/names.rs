//! The name table: which destination names each inside host has resolved to which
//! addresses, learned from the DNS answers natgw forwarded to it (`dns::NameBinder`), for
//! the egress policy to read when that host opens a flow to one of those addresses.
//!
//! Shared by every worker: the answer may reach the host through one worker and its next
//! SYN leave through another (steering goes by source port). A binding is filed before
//! the answer that made it is forwarded, so it is there by the time the host can act on it.
//!
//! Touched only on the slow path (a DNS answer, a new flow's policy question), in one of
//! 64 shards picked by the inside host, each behind its own lock. Bounded three ways, each
//! counted when hit: names per host and address, bindings per host, bindings in total.
//! Expired bindings are never shown and are swept a shard at a time (`sweep`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 64;

/// Names one host may have bound to one address (a shared front serving many names).
pub const MAX_NAMES_PER_ADDRESS: usize = 16;

/// Bindings an inside resolver's answers make apply to every inside host: they are filed
/// under this host.
pub const EVERY_HOST: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// How long bindings live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameLimits {
    /// A binding lives at least this long, whatever the record's TTL (hosts cache answers
    /// for longer than their TTL: a binding that expired under them would refuse them).
    pub min_ttl_s: u32,
    /// And at most this long.
    pub max_ttl_s: u32,
    /// Bindings (host, address, name) in the whole table.
    pub max_bindings: usize,
    /// Bindings of one inside host (the resolvers' shared ones count as one host).
    pub max_bindings_per_host: usize,
}

impl Default for NameLimits {
    fn default() -> Self {
        NameLimits { min_ttl_s: 60, max_ttl_s: 86_400, max_bindings: 100_000, max_bindings_per_host: 2_000 }
    }
}

/// A name bound to a flow's destination, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundName {
    pub name: Arc<str>,
    /// Seconds it still holds (at least 1).
    pub ttl_s: u32,
}

/// What filing a binding did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    /// A new binding.
    Bound,
    /// The binding existed; its expiry moved (never earlier).
    Refreshed,
    /// Refused: the host already has `MAX_NAMES_PER_ADDRESS` names for this address.
    AddressFull,
    /// Refused: the host holds `max_bindings_per_host`.
    HostFull,
    /// Refused: the table holds `max_bindings`.
    TableFull,
}

#[derive(Debug)]
struct Binding {
    name: Arc<str>,
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct Shard {
    by_pair: HashMap<(Ipv4Addr, IpAddr), Vec<Binding>, ahash::RandomState>,
    per_host: HashMap<Ipv4Addr, usize, ahash::RandomState>,
}

/// Every worker's view of the names inside hosts resolved.
#[derive(Debug)]
pub struct NameTable {
    shards: Vec<Mutex<Shard>>,
    total: AtomicUsize,
    /// Bindings filed for `EVERY_HOST`: while there are none, a lookup takes one lock.
    shared: AtomicUsize,
    limits: NameLimits,
    /// Picks the shard by inside host; fixed seeds.
    pick: ahash::RandomState,
}

impl NameTable {
    pub fn new(limits: NameLimits) -> NameTable {
        NameTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            total: AtomicUsize::new(0),
            shared: AtomicUsize::new(0),
            limits,
            pick: ahash::RandomState::with_seeds(0x6e61_6d65, 0x7461_626c, 0x6e61_7467, 0x646e_7321),
        }
    }

    pub fn limits(&self) -> NameLimits {
        self.limits
    }

    fn shard_index(&self, host: Ipv4Addr) -> usize {
        // The modulo keeps it below SHARDS: it fits.
        usize::try_from(self.pick.hash_one(host) % SHARDS as u64).unwrap_or(0)
    }

    fn shard(&self, i: usize) -> Option<MutexGuard<'_, Shard>> {
        // A worker that panicked holding the lock left whole entries (each step is one
        // insert or remove): carry on with it.
        Some(self.shards.get(i)?.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Bindings in the table (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files `name` for `addr` as `host` resolved it (`EVERY_HOST`: for every host), for
    /// the record's `ttl_s` within the limits.
    pub fn bind(&self, host: Ipv4Addr, addr: IpAddr, name: &str, ttl_s: u32, now_ms: u64) -> BindOutcome {
        let ttl = ttl_s.clamp(self.limits.min_ttl_s, self.limits.max_ttl_s.max(self.limits.min_ttl_s));
        let expires_ms = now_ms.saturating_add(u64::from(ttl) * 1000);
        let Some(mut shard) = self.shard(self.shard_index(host)) else { return BindOutcome::TableFull };
        let shard = &mut *shard;
        if let Some(list) = shard.by_pair.get_mut(&(host, addr)) {
            if let Some(b) = list.iter_mut().find(|b| &*b.name == name) {
                b.expires_ms = b.expires_ms.max(expires_ms);
                return BindOutcome::Refreshed;
            }
            // Room made from this pair's own expired names first.
            let before = list.len();
            list.retain(|b| b.expires_ms > now_ms);
            let freed = before - list.len();
            if freed > 0 {
                self.forgot(host, freed);
                if let Some(n) = shard.per_host.get_mut(&host) {
                    *n = n.saturating_sub(freed);
                }
            }
            if list.len() >= MAX_NAMES_PER_ADDRESS {
                return BindOutcome::AddressFull;
            }
        }
        let held = shard.per_host.get(&host).copied().unwrap_or(0);
        if held >= self.limits.max_bindings_per_host {
            return BindOutcome::HostFull;
        }
        if self.total.load(Ordering::Relaxed) >= self.limits.max_bindings {
            return BindOutcome::TableFull;
        }
        // Most addresses carry one name: room for exactly one, grown when needed.
        shard
            .by_pair
            .entry((host, addr))
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Binding { name: Arc::from(name), expires_ms });
        *shard.per_host.entry(host).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        if host == EVERY_HOST {
            self.shared.fetch_add(1, Ordering::Relaxed);
        }
        BindOutcome::Bound
    }

    /// `n` bindings of `host` are gone.
    fn forgot(&self, host: Ipv4Addr, n: usize) {
        self.total.fetch_sub(n, Ordering::Relaxed);
        if host == EVERY_HOST {
            self.shared.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The names bound to `addr` for `host`, its own and those of the inside resolvers
    /// (`EVERY_HOST`), each once, appended to `out`.
    pub fn names_for(&self, host: Ipv4Addr, addr: IpAddr, now_ms: u64, out: &mut Vec<BoundName>) {
        let first = out.len();
        let every_host = self.shared.load(Ordering::Relaxed) > 0;
        for h in [host, EVERY_HOST] {
            if h == EVERY_HOST && !every_host {
                break;
            }
            let Some(shard) = self.shard(self.shard_index(h)) else { continue };
            let Some(list) = shard.by_pair.get(&(h, addr)) else { continue };
            for b in list.iter().filter(|b| b.expires_ms > now_ms) {
                let ttl_s = u32::try_from((b.expires_ms - now_ms).div_ceil(1000)).unwrap_or(u32::MAX);
                match out[first..].iter_mut().find(|n| n.name == b.name) {
                    Some(n) => n.ttl_s = n.ttl_s.max(ttl_s),
                    None => out.push(BoundName { name: Arc::clone(&b.name), ttl_s }),
                }
            }
            if h == EVERY_HOST {
                break;
            }
        }
    }

    /// Bit i set when a name bound to `addr` for `host` (or every host) now matches
    /// `patterns[i]` (`pattern::match_bits`): no allocation, no copy of a name.
    pub fn matching(&self, host: Ipv4Addr, addr: IpAddr, now_ms: u64, patterns: &[super::NamePattern]) -> u64 {
        let mut bits = 0;
        let every_host = self.shared.load(Ordering::Relaxed) > 0;
        for h in [host, EVERY_HOST] {
            if h == EVERY_HOST && !every_host {
                break;
            }
            let Some(shard) = self.shard(self.shard_index(h)) else { continue };
            if let Some(list) = shard.by_pair.get(&(h, addr)) {
                let live = list.iter().filter(|b| b.expires_ms > now_ms).map(|b| &*b.name);
                bits |= super::match_bits(patterns, live);
            }
            if h == EVERY_HOST {
                break;
            }
        }
        bits
    }

    /// The addresses `name` is bound to for `host` (its own bindings and every host's), for
    /// `natgw explain --dst-name`: a scan of the host's shard, never on a packet's path.
    pub fn addresses_of(&self, host: Ipv4Addr, name: &str, now_ms: u64) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for h in [host, EVERY_HOST] {
            let Some(shard) = self.shard(self.shard_index(h)) else { continue };
            for ((bh, addr), list) in &shard.by_pair {
                if *bh == h && list.iter().any(|b| b.expires_ms > now_ms && &*b.name == name) && !out.contains(addr) {
                    out.push(*addr);
                }
            }
            if h == EVERY_HOST {
                break;
            }
        }
        out.sort();
        out
    }

    /// Removes the expired bindings of shard `i % 64`; returns how many. Callers sweep
    /// one shard per tick, in turn.
    pub fn sweep(&self, i: usize, now_ms: u64) -> usize {
        let Some(mut shard) = self.shard(i % SHARDS) else { return 0 };
        let shard = &mut *shard;
        let mut removed = 0;
        let per_host = &mut shard.per_host;
        shard.by_pair.retain(|(host, _), list| {
            let before = list.len();
            list.retain(|b| b.expires_ms > now_ms);
            let gone = before - list.len();
            if gone > 0 {
                removed += gone;
                if let Some(n) = per_host.get_mut(host) {
                    *n = n.saturating_sub(gone);
                }
                self.forgot(*host, gone);
            }
            !list.is_empty()
        });
        per_host.retain(|_, n| *n > 0);
        removed
    }

    /// Shards `sweep` goes round.
    pub const fn shards() -> usize {
        SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 10);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 11);
    const GH: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 80));

    fn table(max_bindings: usize, per_host: usize) -> NameTable {
        NameTable::new(NameLimits { min_ttl_s: 5, max_ttl_s: 300, max_bindings, max_bindings_per_host: per_host })
    }

    fn names(t: &NameTable, host: Ipv4Addr, addr: IpAddr, now: u64) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        t.names_for(host, addr, now, &mut v);
        v.into_iter().map(|b| (b.name.to_string(), b.ttl_s)).collect()
    }

    #[test]
    fn a_binding_is_seen_by_its_host_only_and_within_its_ttl_clamped_to_the_limits() {
        let t = table(100, 100);
        assert_eq!(t.bind(HOST, GH, "github.com", 30, 1_000), BindOutcome::Bound);
        assert_eq!(names(&t, HOST, GH, 1_000), vec![("github.com".into(), 30)]);
        assert_eq!(names(&t, HOST, GH, 30_999), vec![("github.com".into(), 1)]);
        assert!(names(&t, HOST, GH, 31_000).is_empty(), "expired at its TTL");
        assert!(names(&t, OTHER, GH, 1_000).is_empty(), "another host did not resolve it");
        // Below the minimum and above the maximum.
        t.bind(HOST, GH, "short.example", 0, 0);
        t.bind(HOST, GH, "long.example", 1_000_000, 0);
        let n = names(&t, HOST, GH, 0);
        assert!(n.contains(&("short.example".into(), 5)) && n.contains(&("long.example".into(), 300)), "{n:?}");
    }

    #[test]
    fn a_resolvers_binding_applies_to_every_host_and_merges_with_the_hosts_own() {
        let t = table(100, 100);
        t.bind(EVERY_HOST, GH, "github.com", 60, 0);
        t.bind(HOST, GH, "github.com", 120, 0);
        assert_eq!(names(&t, OTHER, GH, 0), vec![("github.com".into(), 60)]);
        assert_eq!(names(&t, HOST, GH, 0), vec![("github.com".into(), 120)], "one entry, the longer TTL");
    }

    #[test]
    fn rebinding_refreshes_and_never_shortens() {
        let t = table(100, 100);
        assert_eq!(t.bind(HOST, GH, "github.com", 100, 0), BindOutcome::Bound);
        assert_eq!(t.bind(HOST, GH, "github.com", 10, 0), BindOutcome::Refreshed);
        assert_eq!(names(&t, HOST, GH, 0), vec![("github.com".into(), 100)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn every_bound_holds_and_is_reported() {
        // Per address.
        let t = table(1000, 1000);
        for i in 0..MAX_NAMES_PER_ADDRESS {
            assert_eq!(t.bind(HOST, GH, &format!("n{i}.example"), 60, 0), BindOutcome::Bound);
        }
        assert_eq!(t.bind(HOST, GH, "one-more.example", 60, 0), BindOutcome::AddressFull);
        // ...until the pair's own names expire.
        assert_eq!(t.bind(HOST, GH, "one-more.example", 60, 61_000), BindOutcome::Bound);
        // Per host: another host is not refused.
        let t = table(1000, 3);
        for i in 0..3u8 {
            assert_eq!(t.bind(HOST, IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), "a.example", 60, 0), BindOutcome::Bound);
        }
        assert_eq!(t.bind(HOST, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), "a.example", 60, 0), BindOutcome::HostFull);
        assert_eq!(t.bind(OTHER, GH, "a.example", 60, 0), BindOutcome::Bound);
        // In total.
        let t = table(5, 1000);
        for i in 0..5u8 {
            assert_eq!(t.bind(Ipv4Addr::new(10, 0, 0, i), GH, "a.example", 60, 0), BindOutcome::Bound);
        }
        assert_eq!(t.bind(OTHER, GH, "a.example", 60, 0), BindOutcome::TableFull);
        assert_eq!(t.len(), 5);
        // Sweeping every shard after expiry empties it and makes room again.
        let swept: usize = (0..NameTable::shards()).map(|i| t.sweep(i, 61_000)).sum();
        assert_eq!((swept, t.len()), (5, 0));
        assert_eq!(t.bind(OTHER, GH, "a.example", 60, 61_000), BindOutcome::Bound);
    }

    #[test]
    fn matching_reports_the_patterns_a_live_name_matches_own_and_shared() {
        let t = table(100, 100);
        let ps: Vec<super::super::NamePattern> =
            ["github.com", "*.pypi.org"].iter().map(|p| super::super::NamePattern::parse(p).unwrap()).collect();
        t.bind(HOST, GH, "github.com", 10, 0);
        t.bind(EVERY_HOST, GH, "files.pypi.org", 20, 0);
        assert_eq!(t.matching(HOST, GH, 0, &ps), 0b11);
        assert_eq!(t.matching(OTHER, GH, 0, &ps), 0b10, "the shared one only");
        assert_eq!(t.matching(HOST, GH, 10_000, &ps), 0b10, "github.com expired");
        assert_eq!(t.matching(HOST, GH, 20_000, &ps), 0);
    }

    #[test]
    fn addresses_of_a_name_for_a_host() {
        let t = table(100, 100);
        let other = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 81));
        t.bind(HOST, GH, "github.com", 10, 0);
        t.bind(EVERY_HOST, other, "github.com", 10, 0);
        t.bind(OTHER, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), "github.com", 10, 0);
        assert_eq!(t.addresses_of(HOST, "github.com", 0), vec![GH, other]);
        assert_eq!(t.addresses_of(HOST, "github.com", 10_000), Vec::<IpAddr>::new(), "expired");
        assert!(t.addresses_of(HOST, "example.org", 0).is_empty());
    }

    #[test]
    fn ipv6_addresses_bind_beside_ipv4_ones() {
        let t = table(100, 100);
        let v6: IpAddr = "2001:db8::80".parse().unwrap();
        t.bind(HOST, v6, "github.com", 60, 0);
        assert_eq!(names(&t, HOST, v6, 0).len(), 1);
        assert!(names(&t, HOST, GH, 0).is_empty());
    }
}
