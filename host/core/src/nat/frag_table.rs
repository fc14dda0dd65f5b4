//! IPv4 fragment tracking without reassembly: the first fragment (which carries the ports)
//! is translated like any packet and records its flow under (side, src, dst, protocol,
//! IP ID); later fragments follow that record. Fragments that arrive before the first are
//! held until it comes.
//!
//! Bounded by memory, and fair: every entry and every held fragment is charged to a
//! budget (`fragment_memory`, like Linux's `ipfrag_high_thresh`) and to its source
//! address. A source may hold at most `1/SOURCE_SHARE_DIVISOR` of the budget: one host
//! flooding fragments is refused beyond its share and cannot push out anyone else's. When
//! the budget is reached (a flood from many sources), the oldest entry goes first: the
//! fragments of a real datagram follow each other within microseconds, so its entry is
//! the youngest, and a flood has to turn the whole table over in that time to hurt it.
//!
//! Must never: allocate without charging the budget, or do work per call beyond the
//! entries it evicts (each evicted once).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use super::FrameMeta;
use crate::conntrack::{FlowId, Side};

/// Fragment state lives this long after the last fragment seen (RFC 791 suggests 15 s
/// for reassembly; we hold less because we hold only the stragglers).
const FRAG_TIMEOUT_MS: u64 = 5_000;
/// Early fragments held for one datagram at most.
const MAX_HELD_PER_ENTRY: usize = 16;
/// What an entry costs the budget beyond the fragments it holds: its key and state in the
/// map and its place in the age queue, rounded up.
pub const ENTRY_COST: usize = 128;
/// What a held fragment costs beyond its bytes (its metadata and the vector's header).
const HELD_OVERHEAD: usize = 64;
/// One source may hold at most this fraction of the budget.
pub const SOURCE_SHARE_DIVISOR: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub side: Side,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ident: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragTarget {
    pub flow: FlowId,
    pub dir: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FragState {
    /// Waiting for the first fragment.
    Pending,
    /// The first fragment went to another worker.
    Owner(usize),
    /// The first fragment was translated here for this flow.
    Target(FragTarget),
    /// The first fragment was dropped: so are the rest.
    Dead,
}

pub enum FragLookup {
    Unknown,
    Owner(usize),
    Target(FragTarget),
    Dead,
}

/// Why a fragment could not be held (the caller drops it and counts the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRefused {
    /// The datagram holds `MAX_HELD_PER_ENTRY` early fragments already, or the budget
    /// cannot take it even after evicting every other entry.
    Full,
    /// Its source holds its share of the budget.
    SourceShare,
}

struct Entry {
    state: FragState,
    expires_ms: u64,
    held: Vec<(Vec<u8>, FrameMeta)>,
    /// What this entry charges the budget (ENTRY_COST and its held fragments).
    cost: usize,
    /// When it was created, in creation order: its place in `FragTable::age`.
    stamp: u64,
}

/// What happened in the table since the caller last asked (for counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragEvents {
    /// Entries given up, oldest first, to make room under the budget.
    pub evicted: u64,
    /// Held fragments lost with them or with expired entries.
    pub held_dropped: u64,
    /// States not recorded: their source held its share.
    pub refused_source_share: u64,
}

pub struct FragTable {
    entries: HashMap<FragKey, Entry, ahash::RandomState>,
    /// Keys in creation order with their stamps; items whose entry has gone or was
    /// re-created are skipped, and the queue is compacted past twice the entries.
    age: VecDeque<(FragKey, u64)>,
    next_stamp: u64,
    /// Charged to the budget, in total and per source address.
    memory: usize,
    per_source: HashMap<Ipv4Addr, usize, ahash::RandomState>,
    budget: usize,
    source_share: usize,
    events: FragEvents,
    released: Vec<(Vec<u8>, FrameMeta)>,
    last_expire_ms: u64,
}

impl FragTable {
    /// A table holding at most `budget` bytes of fragment state (at least one entry).
    pub fn new(budget: usize, now_ms: u64) -> Self {
        let budget = budget.max(ENTRY_COST);
        FragTable {
            entries: HashMap::with_hasher(ahash::RandomState::new()),
            age: VecDeque::new(),
            next_stamp: 0,
            memory: 0,
            per_source: HashMap::with_hasher(ahash::RandomState::new()),
            budget,
            source_share: (budget / SOURCE_SHARE_DIVISOR).max(ENTRY_COST),
            events: FragEvents::default(),
            released: Vec::new(),
            last_expire_ms: now_ms,
        }
    }

    pub fn lookup(&self, k: &FragKey) -> FragLookup {
        match self.entries.get(k).map(|e| e.state) {
            None | Some(FragState::Pending) => FragLookup::Unknown,
            Some(FragState::Owner(w)) => FragLookup::Owner(w),
            Some(FragState::Target(t)) => FragLookup::Target(t),
            Some(FragState::Dead) => FragLookup::Dead,
        }
    }

    /// Bytes charged to the budget now.
    #[cfg(test)]
    fn memory(&self) -> usize {
        self.memory
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// What happened since the last call.
    pub fn take_events(&mut self) -> FragEvents {
        std::mem::take(&mut self.events)
    }

    fn charge(&mut self, src: Ipv4Addr, cost: usize) {
        self.memory += cost;
        *self.per_source.entry(src).or_insert(0) += cost;
    }

    fn refund(&mut self, src: Ipv4Addr, cost: usize) {
        self.memory -= cost;
        if let Some(n) = self.per_source.get_mut(&src) {
            *n -= cost;
            if *n == 0 {
                self.per_source.remove(&src);
            }
        }
    }

    fn source_use(&self, src: Ipv4Addr) -> usize {
        self.per_source.get(&src).copied().unwrap_or(0)
    }

    /// Removes an entry, refunding what it cost; its held fragments are lost.
    fn remove(&mut self, k: &FragKey) {
        if let Some(e) = self.entries.remove(k) {
            self.events.held_dropped += e.held.len() as u64;
            self.refund(k.src, e.cost);
        }
    }

    /// Evicts the oldest entry other than `keep`. False when there is none.
    fn evict_oldest(&mut self, keep: &FragKey) -> bool {
        let mut kept = None;
        let mut evicted = false;
        while let Some((k, stamp)) = self.age.pop_front() {
            if self.entries.get(&k).map(|e| e.stamp) != Some(stamp) {
                continue;
            }
            if k == *keep {
                kept = Some((k, stamp));
                continue;
            }
            self.remove(&k);
            self.events.evicted += 1;
            evicted = true;
            break;
        }
        if let Some(item) = kept {
            self.age.push_front(item);
        }
        evicted
    }

    /// Makes `cost` bytes of room for source `src` (whose entry `keep` must stay),
    /// evicting the oldest entries as needed.
    fn make_room(&mut self, src: Ipv4Addr, cost: usize, keep: &FragKey) -> Result<(), HoldRefused> {
        if self.source_use(src) + cost > self.source_share {
            return Err(HoldRefused::SourceShare);
        }
        while self.memory + cost > self.budget {
            if !self.evict_oldest(keep) {
                return Err(HoldRefused::Full);
            }
        }
        Ok(())
    }

    /// The entry for `k`, created (and charged) if needed.
    fn entry(&mut self, k: FragKey, now_ms: u64) -> Result<&mut Entry, HoldRefused> {
        if !self.entries.contains_key(&k) {
            self.make_room(k.src, ENTRY_COST, &k)?;
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.entries.insert(
                k,
                Entry {
                    state: FragState::Pending,
                    expires_ms: now_ms + FRAG_TIMEOUT_MS,
                    held: Vec::new(),
                    cost: ENTRY_COST,
                    stamp,
                },
            );
            self.charge(k.src, ENTRY_COST);
            self.age.push_back((k, stamp));
            if self.age.len() > 2 * self.entries.len() + 1024 {
                let entries = &self.entries;
                self.age.retain(|(k, s)| entries.get(k).is_some_and(|e| e.stamp == *s));
            }
        }
        self.entries.get_mut(&k).ok_or(HoldRefused::Full)
    }

    fn set(&mut self, k: FragKey, state: FragState, now_ms: u64) {
        let e = match self.entry(k, now_ms) {
            Ok(e) => e,
            Err(HoldRefused::SourceShare) => {
                self.events.refused_source_share += 1;
                return;
            }
            Err(HoldRefused::Full) => return,
        };
        e.state = state;
        e.expires_ms = now_ms + FRAG_TIMEOUT_MS;
        if e.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut e.held);
        let freed = e.cost - ENTRY_COST;
        e.cost = ENTRY_COST;
        self.refund(k.src, freed);
        if state == FragState::Dead {
            self.events.held_dropped += held.len() as u64;
        } else {
            self.released.extend(held);
        }
    }

    pub fn record(&mut self, k: FragKey, t: FragTarget, now_ms: u64) {
        self.set(k, FragState::Target(t), now_ms)
    }
    pub fn record_owner(&mut self, k: FragKey, worker: usize, now_ms: u64) {
        self.set(k, FragState::Owner(worker), now_ms)
    }
    pub fn record_dead(&mut self, k: FragKey, now_ms: u64) {
        self.set(k, FragState::Dead, now_ms)
    }

    /// Keeps a copy of an early fragment until its first fragment comes.
    pub fn hold(&mut self, k: FragKey, frame: &[u8], meta: FrameMeta, now_ms: u64) -> Result<(), HoldRefused> {
        let cost = frame.len() + HELD_OVERHEAD;
        let held = self.entry(k, now_ms)?.held.len();
        if held >= MAX_HELD_PER_ENTRY {
            return Err(HoldRefused::Full);
        }
        self.make_room(k.src, cost, &k)?;
        let e = self.entries.get_mut(&k).ok_or(HoldRefused::Full)?;
        e.held.push((frame.to_vec(), meta));
        e.cost += cost;
        self.charge(k.src, cost);
        Ok(())
    }

    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    pub fn take_released(&mut self) -> Vec<(Vec<u8>, FrameMeta)> {
        std::mem::take(&mut self.released)
    }

    /// Forgets expired state (its held fragments count in `FragEvents::held_dropped`).
    /// Runs at most every 500 ms; the entries it visits are bounded by the budget.
    pub fn expire(&mut self, now_ms: u64) {
        if now_ms < self.last_expire_ms + 500 {
            return;
        }
        self.last_expire_ms = now_ms;
        let gone: Vec<FragKey> = self.entries.iter().filter(|(_, e)| e.expires_ms <= now_ms).map(|(k, _)| *k).collect();
        for k in &gone {
            self.remove(k);
        }
        if self.entries.is_empty() {
            self.age.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: u32, ident: u16) -> FragKey {
        FragKey {
            side: Side::Outside,
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::new(198, 51, 100, 10),
            proto: 17,
            ident,
        }
    }

    const T: FragTarget = FragTarget { flow: 1, dir: 0 };

    #[test]
    fn the_budget_holds_and_the_oldest_entry_goes_first() {
        // Room for 64 entries; 16 sources share it (4 each at most).
        let mut t = FragTable::new(64 * ENTRY_COST, 0);
        for i in 0..1000u32 {
            t.record_dead(key(0x0a00_0000 + i, 1), 0);
            assert!(t.memory() <= 64 * ENTRY_COST);
        }
        assert_eq!(t.len(), 64);
        assert_eq!(t.take_events().evicted, 1000 - 64);
        // The youngest are there, the oldest gone.
        assert!(matches!(t.lookup(&key(0x0a00_0000 + 999, 1)), FragLookup::Dead));
        assert!(matches!(t.lookup(&key(0x0a00_0000, 1)), FragLookup::Unknown));
        // A real datagram's first fragment records, and its state survives the flood
        // for as long as 63 other entries take to come.
        t.record(key(0x0101_0101, 7), T, 0);
        for i in 0..63u32 {
            t.record_dead(key(0x0b00_0000 + i, 1), 0);
        }
        assert!(matches!(t.lookup(&key(0x0101_0101, 7)), FragLookup::Target(_)));
    }

    #[test]
    fn one_source_is_held_to_its_share() {
        let mut t = FragTable::new(64 * ENTRY_COST, 0);
        let flood = 0x0a00_0001;
        for ident in 0..1000u16 {
            t.record_dead(key(flood, ident), 0);
        }
        assert_eq!(t.len(), 4, "a sixteenth of 64 entries");
        let e = t.take_events();
        assert_eq!((e.evicted, e.refused_source_share), (0, 996), "it pushed out nobody");
        // Others still have the rest.
        for i in 0..60u32 {
            t.record(key(0x0c00_0000 + i, 1), T, 0);
        }
        assert_eq!(t.len(), 64);
        assert_eq!(t.take_events().evicted, 0);
    }

    #[test]
    fn held_fragments_are_charged_released_and_refunded() {
        let mut t = FragTable::new(1 << 20, 0);
        let meta = FrameMeta::plain(Side::Outside, 0);
        let k = key(0x0101_0101, 9);
        for _ in 0..MAX_HELD_PER_ENTRY {
            t.hold(k, &[0u8; 1000], meta, 0).unwrap();
        }
        assert_eq!(t.hold(k, &[0u8; 1000], meta, 0), Err(HoldRefused::Full));
        assert_eq!(t.memory(), ENTRY_COST + MAX_HELD_PER_ENTRY * (1000 + HELD_OVERHEAD));
        t.record(k, T, 1);
        assert_eq!(t.take_released().len(), MAX_HELD_PER_ENTRY);
        assert_eq!(t.memory(), ENTRY_COST, "released fragments are refunded");
        // A held fragment larger than the source's share is refused; the budget never
        // goes over, and expiry refunds everything.
        let big = vec![0u8; (1 << 20) / SOURCE_SHARE_DIVISOR];
        assert_eq!(t.hold(key(0x0202_0202, 1), &big, meta, 0), Err(HoldRefused::SourceShare));
        t.hold(key(0x0303_0303, 1), &[0u8; 500], meta, 0).unwrap();
        t.expire(10_000);
        assert_eq!((t.len(), t.memory()), (0, 0));
        assert_eq!(t.take_events().held_dropped, 1);
        assert!(t.per_source.is_empty());
    }

    #[test]
    fn the_age_queue_stays_bounded_by_the_entries() {
        let mut t = FragTable::new(64 * ENTRY_COST, 0);
        for round in 0..200u64 {
            for i in 0..32u32 {
                t.record_dead(key(0x0a00_0000 + i, 1), round * 6000);
            }
            // One entry lives on (refreshed), so the table is never empty.
            t.record(key(0x0909_0909, 1), T, round * 6000 + 5400);
            t.expire(round * 6000 + 5500);
            assert_eq!(t.len(), 1);
        }
        assert!(t.age.len() <= 2 * t.len() + 1024, "{}", t.age.len());
    }
}
