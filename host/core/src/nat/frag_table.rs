//! IPv4 fragment tracking without reassembly: the first fragment (which carries the ports)
//! is translated like any packet and records its flow under (side, src, dst, protocol,
//! IP ID); later fragments follow that record. Fragments that arrive before the first are
//! held, bounded in count, bytes and time, and released when it comes.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::FrameMeta;
use crate::conntrack::{FlowId, Side};

/// Fragment state lives this long after the last fragment seen (RFC 791 suggests 15 s
/// for reassembly; we hold less because we hold only the stragglers).
const FRAG_TIMEOUT_MS: u64 = 5_000;
const MAX_ENTRIES: usize = 4096;
const MAX_HELD_PER_ENTRY: usize = 16;
const MAX_HELD_TOTAL: usize = 256;

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

struct Entry {
    state: FragState,
    expires_ms: u64,
    held: Vec<(Vec<u8>, FrameMeta)>,
}

pub struct FragTable {
    entries: HashMap<FragKey, Entry, ahash::RandomState>,
    held_total: usize,
    released: Vec<(Vec<u8>, FrameMeta)>,
    last_expire_ms: u64,
}

impl FragTable {
    pub fn new(now_ms: u64) -> Self {
        FragTable {
            entries: HashMap::with_hasher(ahash::RandomState::new()),
            held_total: 0,
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

    fn set(&mut self, k: FragKey, state: FragState, now_ms: u64) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&k) {
            return;
        }
        let e = self.entries.entry(k).or_insert_with(|| Entry {
            state: FragState::Pending,
            expires_ms: 0,
            held: Vec::new(),
        });
        e.state = state;
        e.expires_ms = now_ms + FRAG_TIMEOUT_MS;
        if !e.held.is_empty() {
            self.held_total -= e.held.len();
            let held = std::mem::take(&mut e.held);
            if state == FragState::Dead {
                return;
            }
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

    /// Keeps a copy of an early fragment. False when a bound is reached (drop it).
    pub fn hold(&mut self, k: FragKey, frame: &[u8], meta: FrameMeta, now_ms: u64) -> bool {
        if self.held_total >= MAX_HELD_TOTAL || (self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&k)) {
            return false;
        }
        let e = self.entries.entry(k).or_insert_with(|| Entry {
            state: FragState::Pending,
            expires_ms: now_ms + FRAG_TIMEOUT_MS,
            held: Vec::new(),
        });
        if e.held.len() >= MAX_HELD_PER_ENTRY {
            return false;
        }
        e.held.push((frame.to_vec(), meta));
        self.held_total += 1;
        true
    }

    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    pub fn take_released(&mut self) -> Vec<(Vec<u8>, FrameMeta)> {
        std::mem::take(&mut self.released)
    }

    /// Forgets expired state; returns how many held fragments were dropped. Runs at most
    /// every 500 ms and visits at most `MAX_ENTRIES` entries.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        if now_ms < self.last_expire_ms + 500 {
            return 0;
        }
        self.last_expire_ms = now_ms;
        let mut dropped = 0;
        self.entries.retain(|_, e| {
            if e.expires_ms <= now_ms {
                dropped += e.held.len();
                false
            } else {
                true
            }
        });
        self.held_total -= dropped;
        dropped
    }
}
