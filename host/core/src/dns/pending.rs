//! Outstanding DNS queries of one worker: an answer binds names only when it answers a
//! query natgw saw leave on the same flow, with the same transaction id and question. A
//! spoofed answer (wrong id, wrong question, nobody asked) matches nothing and binds
//! nothing.
//!
//! Bounded per inside host and in total; a query that finds no room is not tracked (its
//! answer will bind nothing) and is counted. Entries live `QUERY_TIMEOUT_MS`.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use natgw_wire::dns::Question;

/// An answer later than this after its query binds nothing.
pub const QUERY_TIMEOUT_MS: u64 = 10_000;

/// A query as it left: its flow (protocol, inside host and port, resolver) and the id it
/// carried on the wire (natgw's own for UDP, the host's for TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub proto: u8,
    pub host: Ipv4Addr,
    pub host_port: u16,
    pub resolver: Ipv4Addr,
    pub id: u16,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    question: Question,
    deadline_ms: u64,
    /// The id the host chose, given back to it on the answer.
    host_id: u16,
}

/// Why a query was not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untracked {
    /// The host has `max_per_host` queries outstanding.
    HostFull,
    /// The worker has `max_total` outstanding.
    TableFull,
}

#[derive(Debug)]
pub struct PendingQueries {
    by_key: HashMap<QueryKey, Pending, ahash::RandomState>,
    /// Keys in the order they were filed, with their deadline, for expiry. Stale entries
    /// (answered, or filed again since) are skipped; compacted when it outgrows the map.
    order: VecDeque<(u64, QueryKey)>,
    per_host: HashMap<Ipv4Addr, u32, ahash::RandomState>,
    max_total: usize,
    max_per_host: u32,
}

impl PendingQueries {
    pub fn new(max_total: usize, max_per_host: u32) -> PendingQueries {
        PendingQueries {
            by_key: HashMap::default(),
            order: VecDeque::new(),
            per_host: HashMap::default(),
            max_total,
            max_per_host,
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether a query with this key is outstanding.
    pub fn contains(&self, key: &QueryKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// The id the host chose for the outstanding query `key` (whose id is the wire's).
    pub fn host_id(&self, key: &QueryKey, now_ms: u64) -> Option<u16> {
        self.by_key.get(key).filter(|p| p.deadline_ms > now_ms).map(|p| p.host_id)
    }

    /// Files a query that is leaving with `key` (its wire id), `host_id` the id its host
    /// chose. A retransmission (same key) replaces its entry.
    pub fn remember(&mut self, key: QueryKey, question: Question, host_id: u16, now_ms: u64) -> Result<(), Untracked> {
        self.expire(now_ms);
        let deadline_ms = now_ms + QUERY_TIMEOUT_MS;
        if let Some(p) = self.by_key.get_mut(&key) {
            *p = Pending { question, deadline_ms, host_id };
        } else {
            if self.by_key.len() >= self.max_total {
                return Err(Untracked::TableFull);
            }
            let n = self.per_host.entry(key.host).or_insert(0);
            if *n >= self.max_per_host {
                return Err(Untracked::HostFull);
            }
            *n += 1;
            self.by_key.insert(key, Pending { question, deadline_ms, host_id });
        }
        self.order.push_back((deadline_ms, key));
        if self.order.len() > 2 * self.max_total.max(16) {
            let by_key = &self.by_key;
            self.order.retain(|(d, k)| by_key.get(k).is_some_and(|p| p.deadline_ms == *d));
        }
        Ok(())
    }

    /// Takes the query an answer answers: same key, same question, not expired. Its
    /// host's own id, when there is one.
    pub fn take(&mut self, key: &QueryKey, question: &Question, now_ms: u64) -> Option<u16> {
        match self.by_key.get(key) {
            Some(p) if p.deadline_ms > now_ms && p.question == *question => {
                let host_id = p.host_id;
                self.forget(key);
                Some(host_id)
            }
            _ => None,
        }
    }

    fn forget(&mut self, key: &QueryKey) {
        if self.by_key.remove(key).is_some() {
            if let Some(n) = self.per_host.get_mut(&key.host) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_host.remove(&key.host);
                }
            }
        }
    }

    /// Drops the queries whose answers are overdue.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(deadline, key)) = self.order.front() {
            if deadline > now_ms {
                break;
            }
            self.order.pop_front();
            if self.by_key.get(&key).is_some_and(|p| p.deadline_ms == deadline) {
                self.forget(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_wire::dns::{Name, TYPE_A};

    fn key(host: u8, id: u16) -> QueryKey {
        QueryKey {
            proto: 17,
            host: Ipv4Addr::new(10, 10, 1, host),
            host_port: 5353,
            resolver: Ipv4Addr::new(203, 0, 113, 53),
            id,
        }
    }

    fn q(name: &str) -> Question {
        Question { name: Name::from_text(name).unwrap(), qtype: TYPE_A, qclass: 1, end: 0 }
    }

    #[test]
    fn an_answer_matches_only_its_query_once_and_before_the_timeout() {
        let mut p = PendingQueries::new(100, 10);
        p.remember(key(10, 7), q("github.com"), 0xabcd, 0).unwrap();
        assert!(p.take(&key(10, 8), &q("github.com"), 1).is_none(), "another id");
        assert!(p.take(&key(11, 7), &q("github.com"), 1).is_none(), "another host");
        assert!(p.take(&key(10, 7), &q("evil.example"), 1).is_none(), "another question");
        assert_eq!(p.take(&key(10, 7), &q("github.com"), 1), Some(0xabcd), "the host's own id back");
        assert!(p.take(&key(10, 7), &q("github.com"), 2).is_none(), "answered already");
        p.remember(key(10, 9), q("github.com"), 0xabcd, 0).unwrap();
        assert!(p.take(&key(10, 9), &q("github.com"), QUERY_TIMEOUT_MS).is_none(), "too late");
        p.expire(QUERY_TIMEOUT_MS);
        assert!(p.is_empty());
    }

    #[test]
    fn bounded_per_host_and_in_total_and_room_comes_back() {
        let mut p = PendingQueries::new(5, 3);
        for id in 0..3 {
            p.remember(key(10, id), q("a.example"), 0xabcd, 0).unwrap();
        }
        assert_eq!(p.remember(key(10, 3), q("a.example"), 0xabcd, 0), Err(Untracked::HostFull));
        p.remember(key(11, 0), q("a.example"), 0xabcd, 0).unwrap();
        p.remember(key(12, 0), q("a.example"), 0xabcd, 0).unwrap();
        assert_eq!(p.remember(key(13, 0), q("a.example"), 0xabcd, 0), Err(Untracked::TableFull));
        // A retransmission takes no more room.
        p.remember(key(10, 0), q("a.example"), 0xabcd, 1).unwrap();
        assert_eq!(p.len(), 5);
        assert!(p.take(&key(10, 1), &q("a.example"), 2).is_some());
        p.remember(key(13, 0), q("a.example"), 0xabcd, 2).unwrap();
        // Everything filed at 0 or 1 expires; the order queue never outgrows its bound.
        for i in 0..10_000u16 {
            let k = key(20, i);
            if p.remember(k, q("b.example"), 0xabcd, 20_000).is_ok() {
                assert!(p.take(&k, &q("b.example"), 20_000).is_some());
            }
        }
        assert!(p.order.len() <= 2 * 16 + 1, "{}", p.order.len());
        assert!(p.is_empty(), "every query was answered or expired");
    }
}
