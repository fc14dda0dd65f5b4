//! Top talkers (`natgw top`): the inside hosts and the destinations with the most bytes
//! in a worker's flow table, from a scan that walks the table a bounded number of slots at
//! a time (the worker does a chunk per loop turn) into tallies of bounded size: never a
//! copy of the table, never a pause of a whole table's length.
//!
//! Owns: the scan and its tallies. Must never: allocate per flow beyond the tallies' cap.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{FlowId, FlowTable, Side, ORIGINAL, REPLY};

/// Keys a tally holds (per worker, per dimension): past this, flows of new keys are
/// summed into `beyond`, so a scan of a million hosts stays a few MiB.
pub const TALLY_KEYS: usize = 65_536;

/// What one key's flows carry: bytes each way and how many flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Talker {
    /// From the inside host (the flow's original direction).
    pub bytes_out: u64,
    /// Back to it.
    pub bytes_in: u64,
    pub flows: u64,
}

impl Talker {
    fn add(&mut self, other: &Talker) {
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.flows = self.flows.saturating_add(other.flows);
    }
    pub fn bytes(&self) -> u64 {
        self.bytes_out.saturating_add(self.bytes_in)
    }
}

#[derive(Debug, Default)]
struct Tally {
    keys: HashMap<Ipv4Addr, Talker>,
    /// Flows of keys that found the tally full.
    beyond: Talker,
}

impl Tally {
    fn add(&mut self, key: Ipv4Addr, t: &Talker) {
        let len = self.keys.len();
        match self.keys.get_mut(&key) {
            Some(v) => v.add(t),
            None if len < TALLY_KEYS => {
                self.keys.insert(key, *t);
            }
            None => self.beyond.add(t),
        }
    }

    /// The `k` keys with the most bytes (ties: the lower address first).
    fn top(&self, k: usize) -> Vec<(Ipv4Addr, Talker)> {
        let order = |a: &(Ipv4Addr, Talker), b: &(Ipv4Addr, Talker)| b.1.bytes().cmp(&a.1.bytes()).then(a.0.cmp(&b.0));
        let mut all: Vec<(Ipv4Addr, Talker)> = self.keys.iter().map(|(a, t)| (*a, *t)).collect();
        // The k first in linear time, then only they sorted: a full tally is 65 536 keys,
        // and this runs in one loop turn of the worker.
        if k < all.len() {
            if k == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_unstable_by(order);
        all
    }
}

/// One worker's top talkers, as its scan found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopTalkers {
    /// Inside hosts that opened flows, most bytes first.
    pub by_host: Vec<(Ipv4Addr, Talker)>,
    /// Their destinations (as addressed, before translation), most bytes first.
    pub by_destination: Vec<(Ipv4Addr, Talker)>,
    /// Flows of hosts and destinations past `TALLY_KEYS` (not ranked).
    pub hosts_beyond: Talker,
    pub destinations_beyond: Talker,
    /// Flows the scan saw (those opened from inside; inbound ones are not talkers here).
    pub flows: u64,
}

/// A scan of one flow table under way.
#[derive(Debug, Default)]
pub struct TopScan {
    next: usize,
    by_host: Tally,
    by_destination: Tally,
    flows: u64,
}

impl TopScan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Walks up to `max_slots` more slots of `table`; true once every slot is done. A
    /// flow that moves or ends between chunks is counted where the scan meets it, or not:
    /// a scan is a picture taken over a few milliseconds, not an instant.
    pub fn advance(&mut self, table: &FlowTable, max_slots: usize) -> bool {
        if self.next == 0 {
            // Sized once: a tally that grows mid-scan rehashes in one chunk (milliseconds).
            let keys = table.len().min(TALLY_KEYS);
            self.by_host.keys.reserve(keys);
            self.by_destination.keys.reserve(keys);
        }
        let end = self.next.saturating_add(max_slots).min(table.id_bound());
        for slot in self.next..end {
            let Some(f) = FlowId::try_from(slot).ok().and_then(|id| table.get(id)) else { continue };
            let k = &f.keys[ORIGINAL];
            if k.side != Side::Inside {
                continue;
            }
            let t = Talker { bytes_out: f.bytes[ORIGINAL], bytes_in: f.bytes[REPLY], flows: 1 };
            self.by_host.add(k.src, &t);
            self.by_destination.add(k.dst, &t);
            self.flows += 1;
        }
        self.next = end;
        self.next >= table.id_bound()
    }

    /// The `k` biggest of each.
    pub fn finish(&self, k: usize) -> TopTalkers {
        TopTalkers {
            by_host: self.by_host.top(k),
            by_destination: self.by_destination.top(k),
            hosts_beyond: self.by_host.beyond,
            destinations_beyond: self.by_destination.beyond,
            flows: self.flows,
        }
    }
}

/// Several workers' top talkers as one list each, the `k` biggest: a key's values are
/// summed over the workers whose lists have it (steering spreads one host's flows over
/// the workers, so each worker should send more than `k`: a key that is in every list is
/// exact, one missing from a list is a lower bound).
pub fn merge(parts: &[TopTalkers], k: usize) -> TopTalkers {
    let mut hosts = Tally::default();
    let mut dests = Tally::default();
    let mut out = TopTalkers::default();
    for p in parts {
        for (a, t) in &p.by_host {
            hosts.add(*a, t);
        }
        for (a, t) in &p.by_destination {
            dests.add(*a, t);
        }
        out.hosts_beyond.add(&p.hosts_beyond);
        out.destinations_beyond.add(&p.destinations_beyond);
        out.flows += p.flows;
    }
    out.by_host = hosts.top(k);
    out.by_destination = dests.top(k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::tests::flow_between;
    use crate::conntrack::Timeouts;

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, d)
    }

    #[test]
    fn hosts_and_destinations_ranked_by_bytes_over_chunks() {
        let t = Timeouts::default();
        let mut table = FlowTable::new(1000, 0);
        // Host .1: 3 flows to 1.1.1.1 of 100/10 bytes; host .2: one flow of 1000/1000 to
        // 8.8.8.8; host .3: 10 flows of 1/1 to 1.1.1.1.
        let mut port = 1000;
        let mut add = |src: u8, dst: Ipv4Addr, out: u64, back: u64, n: usize| {
            for _ in 0..n {
                port += 1;
                let mut f = flow_between(ip(src), port, dst, &t);
                f.bytes = [out, back];
                table.insert(f).expect("room");
            }
        };
        add(1, Ipv4Addr::new(1, 1, 1, 1), 100, 10, 3);
        add(2, Ipv4Addr::new(8, 8, 8, 8), 1000, 1000, 1);
        add(3, Ipv4Addr::new(1, 1, 1, 1), 1, 1, 10);
        let mut scan = TopScan::new();
        let mut chunks = 1;
        while !scan.advance(&table, 3) {
            chunks += 1;
        }
        assert_eq!(chunks, 5, "14 slots, 3 a chunk");
        let top = scan.finish(2);
        assert_eq!(top.flows, 14);
        assert_eq!(
            top.by_host,
            [
                (ip(2), Talker { bytes_out: 1000, bytes_in: 1000, flows: 1 }),
                (ip(1), Talker { bytes_out: 300, bytes_in: 30, flows: 3 })
            ]
        );
        assert_eq!(
            top.by_destination,
            [
                (Ipv4Addr::new(8, 8, 8, 8), Talker { bytes_out: 1000, bytes_in: 1000, flows: 1 }),
                (Ipv4Addr::new(1, 1, 1, 1), Talker { bytes_out: 310, bytes_in: 40, flows: 13 })
            ]
        );
        // Two workers' lists: a host in both is summed.
        let merged = merge(&[top.clone(), top], 1);
        assert_eq!(merged.by_host, [(ip(2), Talker { bytes_out: 2000, bytes_in: 2000, flows: 2 })]);
        assert_eq!(merged.flows, 28);
    }

    #[test]
    fn a_tally_stays_bounded_and_counts_what_it_could_not_rank() {
        let mut tally = Tally::default();
        let one = Talker { bytes_out: 1, bytes_in: 0, flows: 1 };
        for i in 0..u32::try_from(TALLY_KEYS + 100).expect("fits") {
            tally.add(Ipv4Addr::from(i), &one);
        }
        assert_eq!(tally.keys.len(), TALLY_KEYS);
        assert_eq!(tally.beyond.flows, 100);
        // A key already held keeps counting when the tally is full.
        tally.add(Ipv4Addr::from(7u32), &Talker { bytes_out: 50, bytes_in: 0, flows: 1 });
        assert_eq!(tally.top(1), [(Ipv4Addr::from(7u32), Talker { bytes_out: 51, bytes_in: 0, flows: 2 })]);
        // The rest tie at one byte: the lower addresses first, in order.
        let top = tally.top(4);
        let addrs: Vec<u32> = top.iter().map(|(a, _)| u32::from(*a)).collect();
        assert_eq!(addrs, [7, 0, 1, 2]);
        assert!(tally.top(0).is_empty());
        assert_eq!(tally.top(TALLY_KEYS * 2).len(), TALLY_KEYS);
    }

    #[test]
    fn an_empty_table_finishes_at_once() {
        let table = FlowTable::new(10, 0);
        let mut scan = TopScan::new();
        assert!(scan.advance(&table, 4096));
        assert_eq!(scan.finish(10), TopTalkers::default());
    }
}
