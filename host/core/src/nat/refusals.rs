//! Refused new flows, remembered for a moment (`policy.refusal_cache_ms`): a flood of
//! packets on one refused tuple (a UDP sender retrying, SYNs from one port) costs one policy
//! call and one record per interval, not one of each per packet.
//!
//! Only refusals are kept: an allowed flow becomes a table entry, and its later packets
//! never reach the policy. An answer holds for the generation that gave it (a swap asks
//! again) and for its full tuple and direction only. The first refusal of a tuple is
//! recorded at once (a REJECT record, as without the cache); the packets refused from the
//! cache after it are summed into one record per tuple and interval (packets, bytes, first
//! and last time), pushed when the answer expires or another tuple takes its slot.
//!
//! Bounded: a direct-mapped table of `SLOTS` per worker, indexed by a keyed hash (a sender
//! choosing tuples cannot aim at a slot better than at random); a collision evicts (its
//! summary is recorded, the eviction counted) and costs a call, never memory.
//!
//! How long an answer holds: what the policy said with it (natgw:policy@0.2.0's
//! `decision.hold-ms`: 0 keeps nothing), or else the operator's `policy.refusal_cache_ms`;
//! at most `MAX_HOLD_MS` either way. An allow is never kept (it becomes a flow), so this
//! table stays the one place a verdict is reused.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use super::flow_records::FlowDirection;
use super::policy::{EgressDecision, NewFlow};

/// Refusals one worker remembers.
pub const SLOTS: usize = 4096;

/// The longest a refusal is reused, whoever asked for longer (ms).
pub const MAX_HOLD_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    flow: NewFlow,
    direction: FlowDirection,
}

/// Packets refused from the cache since the tuple's last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub flow: NewFlow,
    pub direction: FlowDirection,
    pub verdict: EgressDecision,
    pub generation: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Key,
    verdict: EgressDecision,
    generation: u64,
    until_ms: u64,
    /// Packets refused from this entry not yet recorded.
    packets: u64,
    bytes: u64,
    first_ms: u64,
    last_ms: u64,
    /// In `dirty`.
    listed: bool,
}

impl Slot {
    /// Counts a refused packet into the summary the slot (index `i`) holds, listing the
    /// slot in `dirty` the first time.
    fn count(&mut self, i: usize, dirty: &mut Vec<usize>, packet_len: u64, now_ms: u64) {
        if self.packets == 0 {
            self.first_ms = now_ms;
        }
        self.packets += 1;
        self.bytes += packet_len;
        self.last_ms = now_ms;
        if !self.listed {
            self.listed = true;
            dirty.push(i);
        }
    }

    fn take_summary(&mut self) -> Option<Summary> {
        if self.packets == 0 {
            return None;
        }
        let s = Summary {
            flow: self.key.flow,
            direction: self.key.direction,
            verdict: self.verdict,
            generation: self.generation,
            packets: self.packets,
            bytes: self.bytes,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
        };
        self.packets = 0;
        self.bytes = 0;
        Some(s)
    }
}

/// What `remember` found in the slot it took.
#[derive(Debug, PartialEq, Eq)]
pub struct Remembered {
    /// The tuple was not remembered (or only from an older generation or direction): its
    /// refusal is new and recorded as such.
    pub first: bool,
    /// What the slot held that was not recorded yet (an expired interval of this tuple,
    /// or another tuple evicted).
    pub summary: Option<Summary>,
    /// Another tuple's refusal, still holding, was given up for this one (its next packet
    /// costs a call again).
    pub evicted: bool,
}

pub struct RefusalCache {
    /// How long a refusal holds when the policy did not say.
    ttl_ms: u64,
    /// Allocated at the first refusal.
    slots: Vec<Option<Slot>>,
    hasher: RandomState,
    /// Slots with packets not yet recorded, each listed once: at most `SLOTS`.
    dirty: Vec<usize>,
}

impl RefusalCache {
    /// `ttl_ms`: how long a refusal holds unless its policy says (0: not at all).
    pub fn new(ttl_ms: u64) -> Self {
        RefusalCache {
            ttl_ms: ttl_ms.min(MAX_HOLD_MS),
            slots: Vec::new(),
            hasher: RandomState::new(),
            dirty: Vec::new(),
        }
    }

    fn index(&self, k: &Key) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write_u8(k.flow.proto);
        h.write_u32(u32::from(k.flow.src));
        h.write_u16(k.flow.src_port);
        h.write_u32(u32::from(k.flow.dst));
        h.write_u16(k.flow.dst_port);
        h.write_u16(k.flow.ingress);
        h.write_u8(k.direction as u8);
        // SLOTS is a power of two.
        usize::try_from(h.finish()).unwrap_or(0) & (SLOTS - 1)
    }

    /// The refusal remembered for this tuple, if it holds (same generation, not expired);
    /// the packet is then counted into the tuple's summary.
    pub fn lookup(
        &mut self,
        flow: &NewFlow,
        direction: FlowDirection,
        generation: u64,
        packet_len: u64,
        now_ms: u64,
    ) -> Option<EgressDecision> {
        if self.slots.is_empty() {
            return None;
        }
        let key = Key { flow: *flow, direction };
        let i = self.index(&key);
        let slot = self.slots.get_mut(i)?.as_mut()?;
        if slot.key != key || slot.generation != generation || now_ms >= slot.until_ms {
            return None;
        }
        slot.count(i, &mut self.dirty, packet_len, now_ms);
        Some(slot.verdict)
    }

    /// Remembers a refusal the policy just gave, for `hold_ms` (what the policy said; `None`:
    /// `ttl_ms`). When the same tuple was refused the same way before (its answer expired),
    /// this packet starts the tuple's next summary instead of a record of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn remember(
        &mut self,
        flow: &NewFlow,
        direction: FlowDirection,
        verdict: EgressDecision,
        generation: u64,
        packet_len: u64,
        now_ms: u64,
        hold_ms: Option<u32>,
    ) -> Remembered {
        let hold_ms = hold_ms.map_or(self.ttl_ms, |h| u64::from(h).min(MAX_HOLD_MS));
        if hold_ms == 0 {
            return Remembered { first: true, summary: None, evicted: false };
        }
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let key = Key { flow: *flow, direction };
        let i = self.index(&key);
        let until_ms = now_ms.saturating_add(hold_ms);
        let fresh = Slot {
            key,
            verdict,
            generation,
            until_ms,
            packets: 0,
            bytes: 0,
            first_ms: now_ms,
            last_ms: now_ms,
            listed: false,
        };
        let Some(cell) = self.slots.get_mut(i) else {
            return Remembered { first: true, summary: None, evicted: false };
        };
        match cell {
            // The same tuple asked again (its answer expired): a new interval, no new record.
            Some(old) if old.key == key && old.generation == generation && old.verdict == verdict => {
                let summary = old.take_summary();
                old.until_ms = until_ms;
                old.count(i, &mut self.dirty, packet_len, now_ms);
                Remembered { first: false, summary, evicted: false }
            }
            Some(old) => {
                let summary = old.take_summary();
                let evicted = old.key != key && now_ms < old.until_ms;
                let listed = old.listed;
                *old = Slot { listed, ..fresh };
                Remembered { first: true, summary, evicted }
            }
            None => {
                *cell = Some(fresh);
                Remembered { first: true, summary: None, evicted: false }
            }
        }
    }

    /// Summaries whose interval has ended by `now_ms` (`u64::MAX`: all of them).
    pub fn due(&mut self, now_ms: u64, mut out: impl FnMut(Summary)) {
        let slots = &mut self.slots;
        self.dirty.retain(|&i| {
            let Some(Some(slot)) = slots.get_mut(i) else { return false };
            if slot.packets == 0 {
                slot.listed = false;
                return false;
            }
            if now_ms >= slot.until_ms {
                if let Some(s) = slot.take_summary() {
                    out(s);
                }
                slot.listed = false;
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn flow(src_port: u16) -> NewFlow {
        NewFlow {
            proto: 17,
            src: Ipv4Addr::new(10, 0, 0, 5),
            src_port,
            dst: Ipv4Addr::new(203, 0, 113, 9),
            dst_port: 53,
            ingress: 0,
        }
    }

    #[test]
    fn a_refusal_holds_for_its_tuple_generation_and_time_only() {
        let mut c = RefusalCache::new(1000);
        let f = flow(4000);
        assert_eq!(c.lookup(&f, FlowDirection::Egress, 7, 60, 0), None, "nothing remembered yet");
        let r = c.remember(&f, FlowDirection::Egress, EgressDecision::Reject, 7, 60, 0, None);
        assert_eq!(r, Remembered { first: true, summary: None, evicted: false });
        for t in 1..=10 {
            assert_eq!(c.lookup(&f, FlowDirection::Egress, 7, 60, t * 10), Some(EgressDecision::Reject));
        }
        // Another port, the other direction, another generation: not the same question.
        assert_eq!(c.lookup(&flow(4001), FlowDirection::Egress, 7, 60, 200), None);
        assert_eq!(c.lookup(&f, FlowDirection::Ingress, 7, 60, 200), None);
        assert_eq!(c.lookup(&f, FlowDirection::Egress, 8, 60, 200), None);
        // Expired: asked again.
        assert_eq!(c.lookup(&f, FlowDirection::Egress, 7, 60, 1000), None);
        let mut due = Vec::new();
        c.due(1000, |s| due.push(s));
        assert_eq!(due.len(), 1, "one summary for the interval");
        assert_eq!((due[0].packets, due[0].bytes, due[0].first_ms, due[0].last_ms), (10, 600, 10, 100));
        // The same answer again: a new interval whose summary counts this packet too, not a
        // new first record.
        let r = c.remember(&f, FlowDirection::Egress, EgressDecision::Reject, 7, 60, 1000, None);
        assert_eq!(r, Remembered { first: false, summary: None, evicted: false });
        assert_eq!(c.lookup(&f, FlowDirection::Egress, 7, 60, 1500), Some(EgressDecision::Reject));
        let mut due = Vec::new();
        c.due(u64::MAX, |s| due.push(s));
        assert_eq!(due.iter().map(|s| (s.packets, s.first_ms, s.last_ms)).collect::<Vec<_>>(), [(2, 1000, 1500)]);
    }

    #[test]
    fn many_tuples_stay_within_the_slots_and_evictions_keep_their_counts() {
        let mut c = RefusalCache::new(60_000);
        let mut refused = 0u64;
        let mut summarized = 0u64;
        let mut firsts = 0u64;
        let mut evicted = 0u64;
        // 50 000 tuples, three packets each: every packet is either a first refusal, a
        // cache hit counted in some summary, or (after a collision) asked again.
        for p in 0..50_000u32 {
            let f = NewFlow { src: Ipv4Addr::from(0x0a00_0000 + p), ..flow(1000) };
            for _ in 0..3 {
                refused += 1;
                if c.lookup(&f, FlowDirection::Egress, 1, 40, u64::from(p)).is_none() {
                    let r = c.remember(&f, FlowDirection::Egress, EgressDecision::Deny, 1, 40, u64::from(p), None);
                    firsts += u64::from(r.first);
                    evicted += u64::from(r.evicted);
                    summarized += r.summary.map_or(0, |s| s.packets);
                }
            }
        }
        c.due(u64::MAX, |s| summarized += s.packets);
        assert!(c.slots.len() == SLOTS && c.dirty.len() <= SLOTS);
        assert_eq!(firsts, 50_000, "each tuple's first refusal is recorded");
        assert_eq!(firsts + summarized, refused, "every refused packet is in a record");
        // 50 000 live refusals in 4096 slots: nearly every new one gives up another.
        assert!((40_000..50_000).contains(&evicted), "{evicted} evictions counted");
    }

    #[test]
    fn off_remembers_nothing() {
        let mut c = RefusalCache::new(0);
        let f = flow(1);
        assert!(c.remember(&f, FlowDirection::Egress, EgressDecision::Deny, 1, 40, 0, None).first);
        assert_eq!(c.lookup(&f, FlowDirection::Egress, 1, 40, 1), None);
        assert!(c.slots.is_empty());
    }

    #[test]
    fn the_policy_says_how_long_a_refusal_holds() {
        // The operator's default is 1 s; each answer may say otherwise, up to the cap.
        for (hold, default_ms, held_ms) in [
            (Some(0), 1000, 0),
            (Some(5000), 1000, 5000),
            (None, 1000, 1000),
            (Some(u32::MAX), 1000, MAX_HOLD_MS),
            (Some(250), 0, 250),
            (None, 0, 0),
        ] {
            let mut c = RefusalCache::new(default_ms);
            let f = flow(7);
            let r = c.remember(&f, FlowDirection::Egress, EgressDecision::Reject, 3, 40, 10_000, hold);
            assert!(r.first, "{hold:?}");
            if held_ms > 0 {
                let last = 10_000 + held_ms - 1;
                assert_eq!(c.lookup(&f, FlowDirection::Egress, 3, 40, last), Some(EgressDecision::Reject), "{hold:?}");
            }
            assert_eq!(c.lookup(&f, FlowDirection::Egress, 3, 40, 10_000 + held_ms), None, "{hold:?} over");
            // Held 0 ms: nothing kept, so the next refusal of the tuple is a first again.
            if held_ms == 0 {
                assert!(c.remember(&f, FlowDirection::Egress, EgressDecision::Reject, 3, 40, 10_001, hold).first);
            }
        }
    }
}
