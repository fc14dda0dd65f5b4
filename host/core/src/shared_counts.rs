//! Counts shared by every worker's translator: how many of something each key holds over
//! the whole gateway (a source's flows, a source's mappings in a pool), so that a limit
//! set for the gateway holds for the gateway whatever worker a flow lands on.
//!
//! Touched only on the slow path (a flow or mapping made or ended), in one of 64 shards,
//! each behind its own lock: two workers meet on a lock only when they count keys of the
//! same shard at the same instant. Entries exist only while their count is above zero, so
//! the map is bounded by what is counted (flows, mappings), which is bounded itself.
//!
//! Must never: be read on the fast path.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;

/// A count per key over every worker.
#[derive(Debug)]
pub struct SharedCounts<K> {
    shards: Vec<Mutex<HashMap<K, u32, ahash::RandomState>>>,
    /// Picks the shard; fixed seeds, so that it is the same for every shard map's keys.
    pick: ahash::RandomState,
}

impl<K: Hash + Eq> Default for SharedCounts<K> {
    fn default() -> Self {
        SharedCounts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(ahash::RandomState::new()))).collect(),
            pick: ahash::RandomState::with_seeds(0x6e61_7467, 0x7773_6861, 0x7265_6463, 0x6f75_6e74),
        }
    }
}

impl<K: Hash + Eq> SharedCounts<K> {
    fn shard(&self, k: &K) -> MutexGuard<'_, HashMap<K, u32, ahash::RandomState>> {
        // The modulo keeps the index below SHARDS: it fits.
        let i = usize::try_from(self.pick.hash_one(k) % SHARDS as u64).unwrap_or(0);
        // A worker that panicked while holding the lock cannot have left a count half
        // written (each step is one integer store): carry on with it.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more for `k` unless it already holds `limit`.
    pub fn try_take(&self, k: K, limit: Option<u32>) -> bool {
        let mut m = self.shard(&k);
        let held = m.get(&k).copied().unwrap_or(0);
        if limit.is_some_and(|l| held >= l) {
            return false;
        }
        m.insert(k, held.saturating_add(1));
        true
    }

    /// Counts one less for `k` (nothing when it holds none).
    pub fn give_back(&self, k: &K) {
        let mut m = self.shard(k);
        if let Some(n) = m.get_mut(k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(k);
            }
        }
    }

    /// What `k` holds over every worker.
    pub fn held(&self, k: &K) -> u32 {
        self.shard(k).get(k).copied().unwrap_or(0)
    }

    /// Keys holding anything (for tests: no entry outlives its count).
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn limits_hold_over_every_thread_and_entries_go_with_their_count() {
        let c: Arc<SharedCounts<u32>> = Arc::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).filter(|i| c.try_take(i % 10, Some(50))).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 10 * 50, "each of 10 keys up to its limit of 50, over 4 threads");
        assert_eq!(c.held(&3), 50);
        for k in 0..10 {
            for _ in 0..60 {
                c.give_back(&k);
            }
        }
        assert_eq!((c.held(&3), c.keys()), (0, 0));
        assert!(c.try_take(3, None) && c.try_take(3, Some(2)) && !c.try_take(3, Some(2)));
    }
}
