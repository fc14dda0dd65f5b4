//! The flow index: both keys of every flow to the flow's id and the key's direction, by
//! open addressing with linear probing over 8-byte slots. A slot holds the low 32 bits of
//! the key's hash (its tag, which also says where the key belongs: the tag scaled to the
//! table's length, `tag × len / 2^32`, so the length need not be a power of two) and the
//! entry; the key itself is not stored, so a tag that matches is confirmed against the
//! flow's own key (the flow is about to be read anyway). Where a general hash map kept a
//! 14-byte key, a 4-byte value and its control byte per key, at a load of a half to seven
//! eighths, this keeps 8 bytes at a load of 0.53 to 0.8: it grows by half, not by double.
//!
//! The hash is keyed per table (ahash's random state): a sender choosing keys cannot aim
//! them at one run of slots. Removal shifts the run back (no tombstones), so a lookup
//! never walks more than the run its key belongs to.
//!
//! Must never: allocate outside `insert` (which may grow), or panic on any key.

use super::{FlowId, FlowKey, ORIGINAL, REPLY};

/// A key's entry: the flow's id in the upper 31 bits, its direction in the lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IndexEntry(u32);

impl IndexEntry {
    pub const MAX_ID: FlowId = FlowId::MAX >> 1;

    pub fn new(id: FlowId, dir: usize) -> IndexEntry {
        IndexEntry(id << 1 | u32::from(dir == REPLY))
    }
    pub fn id(self) -> FlowId {
        self.0 >> 1
    }
    pub fn dir(self) -> usize {
        if self.0 & 1 == 1 {
            REPLY
        } else {
            ORIGINAL
        }
    }
}

const EMPTY: u64 = u64::MAX;
const MIN_SLOTS: usize = 64;

pub(super) struct FlowIndex {
    /// `tag << 32 | entry`, or `EMPTY`; at least `MIN_SLOTS` long (or empty).
    slots: Vec<u64>,
    len: usize,
    hasher: ahash::RandomState,
}

impl FlowIndex {
    pub fn new() -> FlowIndex {
        FlowIndex { slots: Vec::new(), len: 0, hasher: ahash::RandomState::new() }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn tag(&self, key: &FlowKey) -> u32 {
        // The low 32 bits: they fit.
        u32::try_from(self.hasher.hash_one(key) & 0xffff_ffff).unwrap_or(0)
    }

    /// Where a tag's run starts in a table of `n` slots: the tag scaled to `n` (below
    /// `n`, since the tag is below 2^32).
    fn home(tag: u32, n: usize) -> usize {
        usize::try_from((u64::from(tag) * n as u64) >> 32).unwrap_or(0)
    }

    /// The slot after `i`, around the ring of `n`.
    fn next(i: usize, n: usize) -> usize {
        if i + 1 >= n {
            0
        } else {
            i + 1
        }
    }

    fn pack(tag: u32, e: IndexEntry) -> u64 {
        u64::from(tag) << 32 | u64::from(e.0)
    }

    fn unpack(s: u64) -> (u32, IndexEntry) {
        // Each half is 32 bits: they fit.
        (u32::try_from(s >> 32).unwrap_or(0), IndexEntry(u32::try_from(s & 0xffff_ffff).unwrap_or(0)))
    }

    /// The slot of `key`'s entry; `key_of` says which key an entry stands for.
    fn find(&self, key: &FlowKey, tag: u32, key_of: impl Fn(IndexEntry) -> Option<FlowKey>) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let n = self.slots.len();
        let mut i = Self::home(tag, n);
        loop {
            let s = *self.slots.get(i)?;
            if s == EMPTY {
                return None;
            }
            let (t, e) = Self::unpack(s);
            if t == tag && key_of(e).as_ref() == Some(key) {
                return Some(i);
            }
            i = Self::next(i, n);
        }
    }

    pub fn get(&self, key: &FlowKey, key_of: impl Fn(IndexEntry) -> Option<FlowKey>) -> Option<IndexEntry> {
        let i = self.find(key, self.tag(key), key_of)?;
        self.slots.get(i).map(|&s| Self::unpack(s).1)
    }

    /// Files `entry` for `key`, replacing the entry `key` had (the newest flow with a key
    /// holds it, as a map's insert would).
    pub fn insert(&mut self, key: &FlowKey, entry: IndexEntry, key_of: impl Fn(IndexEntry) -> Option<FlowKey>) {
        let tag = self.tag(key);
        if let Some(i) = self.find(key, tag, key_of) {
            if let Some(s) = self.slots.get_mut(i) {
                *s = Self::pack(tag, entry);
            }
            return;
        }
        // At most four fifths full.
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        let n = self.slots.len();
        let mut i = Self::home(tag, n);
        while let Some(s) = self.slots.get_mut(i) {
            if *s == EMPTY {
                *s = Self::pack(tag, entry);
                self.len += 1;
                return;
            }
            i = Self::next(i, n);
        }
    }

    /// Removes `entry` from where `key` would be (nothing when another flow holds it).
    pub fn remove(&mut self, key: &FlowKey, entry: IndexEntry) {
        if self.slots.is_empty() {
            return;
        }
        let tag = self.tag(key);
        let n = self.slots.len();
        let mut i = Self::home(tag, n);
        loop {
            let Some(&s) = self.slots.get(i) else { return };
            if s == EMPTY {
                return;
            }
            if s == Self::pack(tag, entry) {
                break;
            }
            i = Self::next(i, n);
        }
        // Backward shift: each later entry of the run moves into the hole when its home
        // is not between the hole and itself.
        // Distance from `from` forward to `to`, around the ring.
        let distance = |from: usize, to: usize| if to >= from { to - from } else { to + n - from };
        let mut hole = i;
        let mut j = Self::next(i, n);
        while let Some(&s) = self.slots.get(j).filter(|&&s| s != EMPTY) {
            let home = Self::home(Self::unpack(s).0, n);
            if distance(home, j) >= distance(hole, j) {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
            j = Self::next(j, n);
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
    }

    /// Room for `more` entries without growing on the way.
    pub fn reserve(&mut self, more: usize) {
        while (self.len + more) * 5 > self.slots.len() * 4 {
            self.grow();
        }
    }

    /// Half as many slots again; every entry moves to where its tag says (no key is
    /// hashed again).
    fn grow(&mut self) {
        let n = (self.slots.len() + self.slots.len() / 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        for s in old.into_iter().filter(|&s| s != EMPTY) {
            let mut i = Self::home(Self::unpack(s).0, n);
            while let Some(slot) = self.slots.get_mut(i) {
                if *slot == EMPTY {
                    *slot = s;
                    break;
                }
                i = Self::next(i, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Side;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            side: if i.is_multiple_of(2) { Side::Inside } else { Side::Outside },
            proto: 17,
            src: Ipv4Addr::from(0x0a00_0000 + i / 7),
            src_port: u16::try_from(i % 60_000).unwrap_or(0),
            dst: Ipv4Addr::new(203, 0, 113, 7),
            dst_port: 53,
        }
    }

    #[test]
    fn agrees_with_a_map_through_inserts_replacements_and_removals() {
        // The oracle: a HashMap of key to entry; "flows" say which key an entry stands for.
        let mut idx = FlowIndex::new();
        let mut oracle: HashMap<FlowKey, IndexEntry> = HashMap::new();
        let mut keys: HashMap<IndexEntry, FlowKey> = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..300_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key(u32::try_from(x % 50_000).unwrap_or(0));
            let e = IndexEntry::new(step, usize::from(x & 1 == 1));
            if x.is_multiple_of(3) {
                if let Some(old) = oracle.remove(&k) {
                    idx.remove(&k, old);
                    keys.remove(&old);
                }
            } else {
                // The old flow still holds the key while the new one is filed (as in the
                // table): the index replaces its entry.
                keys.insert(e, k);
                idx.insert(&k, e, |e| keys.get(&e).copied());
                if let Some(old) = oracle.insert(k, e) {
                    keys.remove(&old);
                }
            }
            if step % 1000 == 0 {
                assert_eq!(idx.len(), oracle.len(), "step {step}");
            }
        }
        for i in 0..50_000 {
            let k = key(i);
            assert_eq!(idx.get(&k, |e| keys.get(&e).copied()), oracle.get(&k).copied(), "key {i}");
        }
        // Emptied whole, nothing is left.
        for (k, e) in oracle.drain() {
            idx.remove(&k, e);
        }
        assert_eq!(idx.len(), 0);
        assert!(idx.slots.iter().all(|&s| s == EMPTY));
    }

    #[test]
    fn runs_that_wrap_past_the_last_slot_are_found_and_shifted_back() {
        // Keys whose run starts in the table's last slot: their entries wrap to slot 0
        // and on; removing the first must shift the others back across the end.
        let mut idx = FlowIndex::new();
        let mut keys: HashMap<IndexEntry, FlowKey> = HashMap::new();
        // Fill to 40 of 64 slots with keys spread as they come, so the table stays at 64.
        let mut filler = 0u32;
        while idx.len() < 40 {
            let (k, e) = (key(1_000_000 + filler), IndexEntry::new(1_000_000 + filler, ORIGINAL));
            keys.insert(e, k);
            idx.insert(&k, e, |e| keys.get(&e).copied());
            filler += 1;
        }
        let n = idx.slots.len();
        assert_eq!(n, MIN_SLOTS);
        let last: Vec<FlowKey> =
            (0..2_000_000).map(key).filter(|k| FlowIndex::home(idx.tag(k), n) == n - 1).take(4).collect();
        assert_eq!(last.len(), 4, "some keys belong in the last slot");
        for (i, k) in last.iter().enumerate() {
            let e = IndexEntry::new(u32::try_from(i).unwrap_or(0), REPLY);
            keys.insert(e, *k);
            idx.insert(k, e, |e| keys.get(&e).copied());
        }
        let find =
            |idx: &FlowIndex, keys: &HashMap<IndexEntry, FlowKey>, k: &FlowKey| idx.get(k, |e| keys.get(&e).copied());
        for (i, k) in last.iter().enumerate() {
            assert_eq!(find(&idx, &keys, k), Some(IndexEntry::new(u32::try_from(i).unwrap_or(0), REPLY)), "key {i}");
        }
        // At most one of four fits in the last slot: the rest sit past the end.
        let wrapped = last
            .iter()
            .filter(|k| idx.find(k, idx.tag(k), |e| keys.get(&e).copied()).is_some_and(|i| i < n - 1))
            .count();
        assert!(wrapped >= 3, "{wrapped} of 4 wrapped");
        // Remove them one by one, first filed first: the rest stay reachable every time.
        for (i, k) in last.iter().enumerate() {
            let e = IndexEntry::new(u32::try_from(i).unwrap_or(0), REPLY);
            idx.remove(k, e);
            keys.remove(&e);
            assert_eq!(find(&idx, &keys, k), None);
            for (j, other) in last.iter().enumerate().skip(i + 1) {
                assert_eq!(
                    find(&idx, &keys, other),
                    Some(IndexEntry::new(u32::try_from(j).unwrap_or(0), REPLY)),
                    "key {j} after removing {i}"
                );
            }
        }
        for (e, k) in &keys {
            assert_eq!(find(&idx, &keys, k), Some(*e), "a filler key");
        }
        assert_eq!(idx.len(), 40);
    }

    #[test]
    fn an_entry_packs_the_id_and_the_direction() {
        let e = IndexEntry::new(IndexEntry::MAX_ID, REPLY);
        assert_eq!((e.id(), e.dir()), (IndexEntry::MAX_ID, REPLY));
        assert_eq!(IndexEntry::new(7, ORIGINAL).dir(), ORIGINAL);
    }
}
