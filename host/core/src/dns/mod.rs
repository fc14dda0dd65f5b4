//! DNS name binding: natgw reads the DNS answers it forwards to inside hosts and files
//! which names each host resolved to which addresses (`names::NameTable`), so that an
//! egress policy can decide by name ("CI may reach github.com and *.pypi.org").
//!
//! A UDP query leaves with a transaction id natgw chose (`on_udp_query`), and its answer
//! reaches the host with the host's own id back: the host never learns the id an answer
//! must carry, so it cannot have someone outside forge one for it.
//!
//! What binds: an answer from a configured resolver (`DnsConfig::resolvers`, the only
//! servers whose answers are trusted), on a flow an inside host opened to its port 53
//! (UDP, or TCP read at its message boundaries: `stream`), that answers a query natgw saw
//! leave on that flow (`pending`: same transaction id and question) with rcode 0. It
//! binds every name of the question's CNAME chain to each A and AAAA address the chain
//! ends in, for the smallest TTL along the way (within `NameLimits`). A query from one of
//! the `inside_resolvers` binds for every inside host (`names::EVERY_HOST`): its clients
//! ask it, not natgw's resolvers, so their own lookups never cross natgw. One answer makes
//! at most `MAX_BINDINGS_PER_ANSWER` bindings.
//!
//! DNS over TCP is read only by following each stream from its SYN (`stream`): a host
//! decides where its segments start (its MSS, its window), so a record it asked for (a TXT
//! of a zone it owns) could be made to begin a segment with a length prefix and a whole
//! forged message. Read at the stream's own boundaries, that record stays inside the
//! message that carries it.
//!
//! Owns: parsing what the fast path diverts here, the outstanding queries of one worker,
//! and the outcome counters. Must never: bind from an answer nobody asked for, grow without
//! bound, or panic on any message.

pub mod names;
pub mod pattern;
pub mod pending;
pub mod stream;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use natgw_wire::dns::{self, Message, Name, Question, RecordData};
use natgw_wire::{PROTO_TCP, PROTO_UDP};

pub use names::{BindOutcome, BoundName, NameLimits, NameTable, EVERY_HOST};
pub use pattern::{match_bits, NamePattern, MAX_PATTERNS};
pub use pending::{PendingQueries, QueryKey, Untracked, QUERY_TIMEOUT_MS};
pub use stream::{Segment, StreamKey, TcpStreams, Way};

use crate::counters::Counter;

/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// Names followed from the question through CNAMEs (the question's included).
pub const MAX_CHAIN: usize = 8;

/// Bindings (names × addresses) one answer may make: an answer cannot fill a host's, or
/// the inside resolvers' shared, quota on its own.
pub const MAX_BINDINGS_PER_ANSWER: usize = 32;

/// DNS binding as the gateway config sets it (`[dns]`).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Resolvers whose answers bind names (outside addresses, or inside ones the hosts ask
    /// through natgw). Answers from any other server bind nothing.
    pub resolvers: Vec<Ipv4Addr>,
    /// Inside hosts that resolve for others: names they resolve bind for every host.
    pub inside_resolvers: Vec<Ipv4Addr>,
    pub limits: NameLimits,
    /// Outstanding queries per worker, and per inside host per worker.
    pub max_pending: usize,
    pub max_pending_per_host: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            resolvers: Vec::new(),
            inside_resolvers: Vec::new(),
            limits: NameLimits::default(),
            max_pending: 16_384,
            max_pending_per_host: 256,
        }
    }
}

/// One worker's binder: its outstanding queries and the shared table.
#[derive(Debug)]
pub struct NameBinder {
    table: Arc<NameTable>,
    pending: PendingQueries,
    streams: TcpStreams,
    /// The generator of the ids natgw puts on UDP queries.
    id_state: u64,
    resolvers: Vec<Ipv4Addr>,
    inside_resolvers: Vec<Ipv4Addr>,
    sweep_next: usize,
}

/// What a DNS message on a tracked flow did, for the counters. `None`: nothing to count.
pub type Outcome = Option<Counter>;

impl NameBinder {
    pub fn new(cfg: &DnsConfig, table: Arc<NameTable>) -> NameBinder {
        NameBinder {
            table,
            pending: PendingQueries::new(cfg.max_pending, cfg.max_pending_per_host),
            streams: TcpStreams::default(),
            id_state: random_seed(),
            resolvers: cfg.resolvers.clone(),
            inside_resolvers: cfg.inside_resolvers.clone(),
            sweep_next: 0,
        }
    }

    pub fn table(&self) -> &Arc<NameTable> {
        &self.table
    }

    pub fn pending(&self) -> &PendingQueries {
        &self.pending
    }

    /// Whether messages on a flow an inside host opened to `resolver:port` are looked at.
    pub fn watches(&self, resolver: Ipv4Addr, port: u16) -> bool {
        port == DNS_PORT && self.resolvers.contains(&resolver)
    }

    /// The TCP streams being followed.
    pub fn streams(&self) -> &TcpStreams {
        &self.streams
    }

    /// A TCP segment on the flow `host:host_port -> resolver:53`, going `way`: each DNS
    /// message it completes is read as `on_query` or `on_answer` reads a UDP payload. The
    /// outcomes are counted through `count`.
    pub fn on_tcp_segment(
        &mut self,
        key: StreamKey,
        way: Way,
        seg: Segment<'_>,
        now_ms: u64,
        mut count: impl FnMut(Counter),
    ) {
        let mut streams = std::mem::take(&mut self.streams);
        let read = streams.read(key, way, seg, now_ms, |msg| {
            let outcome = match way {
                Way::Query => self.on_query(PROTO_TCP, key.host, key.host_port, key.resolver, msg, now_ms),
                Way::Answer => self.on_answer(PROTO_TCP, key.host, key.host_port, key.resolver, msg, now_ms),
            };
            if let Some(c) = outcome {
                count(c);
            }
        });
        self.streams = streams;
        if read.unread {
            count(Counter::DnsTcpUnread);
        }
    }

    /// A query leaving on the flow `host:host_port -> resolver:53`, filed under the id it
    /// carries: `msg` is one DNS message (a message of a followed TCP stream; a UDP payload
    /// goes through `on_udp_query`, which gives it natgw's own id).
    pub fn on_query(
        &mut self,
        proto: u8,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        msg: &[u8],
        now_ms: u64,
    ) -> Outcome {
        self.query(proto, host, host_port, resolver, msg, false, now_ms).0
    }

    /// A UDP query leaving: filed under an id natgw chooses, which it writes into
    /// `payload`. The host never sees that id (`on_udp_answer` gives the host its own
    /// back, and ICMP errors quoting the query do too: `host_id_of`), so nobody the host
    /// tells its ids to can forge an answer that matches. Returns the outcome and, when
    /// the id changed, the old and new id (for the caller's checksum).
    pub fn on_udp_query(
        &mut self,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        payload: &mut [u8],
        now_ms: u64,
    ) -> (Outcome, Option<(u16, u16)>) {
        let (outcome, wire) = self.query(PROTO_UDP, host, host_port, resolver, payload, true, now_ms);
        (outcome, wire.and_then(|w| set_id(payload, w)))
    }

    /// Parses and files a query; with `choose_id`, under a fresh id of natgw's (returned).
    #[allow(clippy::too_many_arguments)]
    fn query(
        &mut self,
        proto: u8,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        msg: &[u8],
        choose_id: bool,
        now_ms: u64,
    ) -> (Outcome, Option<u16>) {
        let Ok(m) = Message::new_checked(msg) else { return (Some(Counter::DnsMessagesMalformed), None) };
        if m.is_response() || m.opcode() != 0 {
            return (None, None);
        }
        let Ok(question) = m.question() else { return (Some(Counter::DnsMessagesMalformed), None) };
        let host_id = m.id();
        let mut key = QueryKey { proto, host, host_port, resolver, id: host_id };
        if choose_id {
            // A fresh id, never the host's and never one outstanding on this flow.
            let mut fresh = None;
            for _ in 0..8 {
                let id = self.next_id();
                if id != host_id && !self.pending.contains(&QueryKey { id, ..key }) {
                    fresh = Some(id);
                    break;
                }
            }
            let Some(id) = fresh else { return (Some(Counter::DnsQueriesUntracked), None) };
            key.id = id;
        }
        match self.pending.remember(key, question, host_id, now_ms) {
            Ok(()) => (Some(Counter::DnsQueriesTracked), choose_id.then_some(key.id)),
            Err(_) => (Some(Counter::DnsQueriesUntracked), None),
        }
    }

    /// The next id of this worker's generator (xorshift64*, seeded at random).
    fn next_id(&mut self) -> u16 {
        let mut x = self.id_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.id_state = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    }

    /// The id the host chose for the outstanding UDP query that left on its flow with
    /// `wire_id`: what an ICMP error quoting that query must show the host.
    pub fn host_id_of(
        &self,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        wire_id: u16,
        now_ms: u64,
    ) -> Option<u16> {
        self.pending.host_id(&QueryKey { proto: PROTO_UDP, host, host_port, resolver, id: wire_id }, now_ms)
    }

    /// An answer arriving on that flow, before it is forwarded to the host: one DNS
    /// message (of a followed TCP stream; a UDP payload goes through `on_udp_answer`).
    pub fn on_answer(
        &mut self,
        proto: u8,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        msg: &[u8],
        now_ms: u64,
    ) -> Outcome {
        self.answer(proto, host, host_port, resolver, msg, now_ms).0
    }

    /// A UDP answer arriving: when it answers a filed query, the host's own id is written
    /// back into `payload`. Returns the outcome and, when the id changed, the old and new
    /// id (for the caller's checksum). An answer that matches nothing is left as it is.
    pub fn on_udp_answer(
        &mut self,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        payload: &mut [u8],
        now_ms: u64,
    ) -> (Outcome, Option<(u16, u16)>) {
        let (outcome, host_id) = self.answer(PROTO_UDP, host, host_port, resolver, payload, now_ms);
        (outcome, host_id.and_then(|h| set_id(payload, h)))
    }

    /// Parses an answer, takes its query and binds its names. The host's id of the query it
    /// answered, when it answered one.
    fn answer(
        &mut self,
        proto: u8,
        host: Ipv4Addr,
        host_port: u16,
        resolver: Ipv4Addr,
        msg: &[u8],
        now_ms: u64,
    ) -> (Outcome, Option<u16>) {
        let Ok(m) = Message::new_checked(msg) else { return (Some(Counter::DnsMessagesMalformed), None) };
        if !m.is_response() {
            return (None, None);
        }
        let Ok(question) = m.question() else { return (Some(Counter::DnsMessagesMalformed), None) };
        let key = QueryKey { proto, host, host_port, resolver, id: m.id() };
        let Some(host_id) = self.pending.take(&key, &question, now_ms) else {
            return (Some(Counter::DnsAnswersUnmatched), None);
        };
        (self.bind(&m, &question, host, now_ms), Some(host_id))
    }

    /// Binds the names of an answer that answered its query.
    fn bind(&mut self, m: &Message<'_>, question: &Question, host: Ipv4Addr, now_ms: u64) -> Outcome {
        let question = *question;
        if m.rcode() != 0 || m.opcode() != 0 {
            return Some(Counter::DnsAnswersMatched);
        }
        let Some(chain) = Chain::follow(m, &question) else { return Some(Counter::DnsMessagesMalformed) };
        let bind_for = if self.inside_resolvers.contains(&host) { EVERY_HOST } else { host };
        let mut refused = false;
        let mut made = 0;
        for r in m.answers(&question) {
            let Ok(r) = r else { return Some(Counter::DnsMessagesMalformed) };
            let addr = match r.data {
                RecordData::A(a) => IpAddr::V4(a),
                RecordData::Aaaa(a) => IpAddr::V6(a),
                _ => continue,
            };
            if r.class != dns::CLASS_IN || !chain.contains(&r.name) {
                // Not an answer to what was asked: never bound.
                continue;
            }
            let ttl = r.ttl.min(chain.ttl);
            for name in chain.names() {
                if made == MAX_BINDINGS_PER_ANSWER {
                    refused = true;
                    break;
                }
                made += 1;
                match self.table.bind(bind_for, addr, name.as_str(), ttl, now_ms) {
                    BindOutcome::Bound | BindOutcome::Refreshed => {}
                    _ => refused = true,
                }
            }
        }
        Some(if refused { Counter::DnsBindingsRefused } else { Counter::DnsAnswersMatched })
    }

    /// Periodic work: overdue queries, idle streams, and one shard of expired bindings.
    pub fn tick(&mut self, now_ms: u64) {
        self.pending.expire(now_ms);
        self.streams.expire(now_ms);
        self.table.sweep(self.sweep_next, now_ms);
        self.sweep_next = (self.sweep_next + 1) % NameTable::shards();
    }
}

/// Writes `id` into a DNS message's id field: the old and new id when it changed.
fn set_id(payload: &mut [u8], id: u16) -> Option<(u16, u16)> {
    let field = payload.get_mut(..2)?;
    let old = u16::from_be_bytes([field[0], field[1]]);
    field.copy_from_slice(&id.to_be_bytes());
    (old != id).then_some((old, id))
}

/// A seed nobody outside can guess: the standard library's random hash keys (from the
/// operating system), never 0 (xorshift's fixed point).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6e61_7467_7764_6e73);
    h.finish() | 1
}

/// The question's name and the names its CNAMEs lead to, and the smallest TTL of those
/// CNAMEs.
struct Chain {
    names: [Name; MAX_CHAIN],
    len: usize,
    ttl: u32,
}

impl Chain {
    /// Follows CNAMEs from the question in any order they appear (one pass per link, at
    /// most `MAX_CHAIN`). `None` when a record does not parse.
    fn follow(m: &Message<'_>, q: &Question) -> Option<Chain> {
        let mut c = Chain { names: [Name::ROOT; MAX_CHAIN], len: 1, ttl: u32::MAX };
        c.names[0] = q.name;
        for _ in 1..MAX_CHAIN {
            let mut grew = false;
            for r in m.answers(q) {
                let r = r.ok()?;
                if let RecordData::Cname(target) = r.data {
                    if r.class == dns::CLASS_IN && c.contains(&r.name) && !c.contains(&target) && c.len < MAX_CHAIN {
                        c.names[c.len] = target;
                        c.len += 1;
                        c.ttl = c.ttl.min(r.ttl);
                        grew = true;
                    }
                }
            }
            if !grew {
                break;
            }
        }
        Some(c)
    }

    fn names(&self) -> &[Name] {
        &self.names[..self.len]
    }

    fn contains(&self, n: &Name) -> bool {
        self.names().contains(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_wire::dns::{Builder, TYPE_A, TYPE_AAAA};

    const HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 10);
    const RESOLVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
    const INSIDE_RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 53);
    const GH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);

    fn n(s: &str) -> Name {
        Name::from_text(s).unwrap()
    }

    fn binder() -> NameBinder {
        let cfg = DnsConfig {
            resolvers: vec![RESOLVER],
            inside_resolvers: vec![INSIDE_RESOLVER],
            limits: NameLimits { min_ttl_s: 1, ..NameLimits::default() },
            ..DnsConfig::default()
        };
        NameBinder::new(&cfg, Arc::new(NameTable::new(cfg.limits)))
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        let len = Builder::query(&mut b, id, &n(name), TYPE_A).unwrap().finish();
        b.truncate(len);
        b
    }

    fn answer(id: u16, name: &str, records: &[(&str, u32, RecordData)]) -> Vec<u8> {
        let mut b = vec![0u8; 1500];
        let mut w = Builder::response(&mut b, id, &n(name), TYPE_A, 0).unwrap();
        for (owner, ttl, data) in records {
            w.answer(&n(owner), *ttl, data).unwrap();
        }
        let len = w.finish();
        b.truncate(len);
        b
    }

    fn names_of(b: &NameBinder, host: Ipv4Addr, addr: Ipv4Addr) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        b.table().names_for(host, IpAddr::V4(addr), 0, &mut v);
        let mut v: Vec<_> = v.into_iter().map(|x| (x.name.to_string(), x.ttl_s)).collect();
        v.sort();
        v
    }

    fn exchange(b: &mut NameBinder, host: Ipv4Addr, q: &[u8], a: &[u8]) -> (Outcome, Outcome) {
        (b.on_query(PROTO_UDP, host, 40000, RESOLVER, q, 0), b.on_answer(PROTO_UDP, host, 40000, RESOLVER, a, 0))
    }

    #[test]
    fn an_answer_to_a_query_binds_the_name_for_that_host() {
        let mut b = binder();
        let out = exchange(
            &mut b,
            HOST,
            &query(1, "github.com"),
            &answer(1, "github.com", &[("github.com", 60, RecordData::A(GH))]),
        );
        assert_eq!(out, (Some(Counter::DnsQueriesTracked), Some(Counter::DnsAnswersMatched)));
        assert_eq!(names_of(&b, HOST, GH), vec![("github.com".into(), 60)]);
        assert!(names_of(&b, Ipv4Addr::new(10, 10, 1, 11), GH).is_empty());
    }

    #[test]
    fn spoofed_answers_bind_nothing() {
        let good = answer(1, "github.com", &[("github.com", 60, RecordData::A(GH))]);
        let evil = Ipv4Addr::new(198, 51, 100, 66);
        type Case<'a> = (&'a str, Box<dyn Fn(&mut NameBinder) -> Outcome + 'a>);
        let cases: Vec<Case<'_>> = vec![
            ("nobody asked", Box::new(|b: &mut NameBinder| b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &good, 0))),
            (
                "another transaction id",
                Box::new(|b: &mut NameBinder| {
                    b.on_query(PROTO_UDP, HOST, 40000, RESOLVER, &query(2, "github.com"), 0);
                    b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &good, 0)
                }),
            ),
            (
                "another question",
                Box::new(|b: &mut NameBinder| {
                    b.on_query(PROTO_UDP, HOST, 40000, RESOLVER, &query(1, "example.org"), 0);
                    b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &good, 0)
                }),
            ),
            (
                "another port of the host",
                Box::new(|b: &mut NameBinder| {
                    b.on_query(PROTO_UDP, HOST, 40001, RESOLVER, &query(1, "github.com"), 0);
                    b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &good, 0)
                }),
            ),
            (
                "another server",
                Box::new(|b: &mut NameBinder| {
                    b.on_query(PROTO_UDP, HOST, 40000, RESOLVER, &query(1, "github.com"), 0);
                    b.on_answer(PROTO_UDP, HOST, 40000, evil, &good, 0)
                }),
            ),
            (
                "too late",
                Box::new(|b: &mut NameBinder| {
                    b.on_query(PROTO_UDP, HOST, 40000, RESOLVER, &query(1, "github.com"), 0);
                    b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &good, QUERY_TIMEOUT_MS)
                }),
            ),
        ];
        for (what, case) in cases {
            let mut b = binder();
            assert_eq!(case(&mut b), Some(Counter::DnsAnswersUnmatched), "{what}");
            assert!(b.table().is_empty(), "{what}: bound nothing");
        }
        // An answer record for a name outside the question's chain is never bound.
        let mut b = binder();
        let a = answer(
            3,
            "github.com",
            &[("evil.example", 60, RecordData::A(evil)), ("github.com", 60, RecordData::A(GH))],
        );
        exchange(&mut b, HOST, &query(3, "github.com"), &a);
        assert!(names_of(&b, HOST, evil).is_empty());
        assert_eq!(names_of(&b, HOST, GH).len(), 1);
        // A second answer to one query binds nothing more.
        let again = answer(3, "github.com", &[("github.com", 60, RecordData::A(evil))]);
        assert_eq!(b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &again, 0), Some(Counter::DnsAnswersUnmatched));
    }

    #[test]
    fn a_cname_chain_binds_every_name_on_it_for_its_smallest_ttl_in_any_record_order() {
        let mut b = binder();
        let cdn = Ipv4Addr::new(192, 0, 2, 7);
        let a = answer(
            4,
            "www.example.com",
            &[
                ("edge.cdn.example", 300, RecordData::A(cdn)),
                ("example.net", 120, RecordData::Cname(n("edge.cdn.example"))),
                ("www.example.com", 30, RecordData::Cname(n("example.net"))),
            ],
        );
        exchange(&mut b, HOST, &query(4, "www.example.com"), &a);
        assert_eq!(
            names_of(&b, HOST, cdn),
            vec![("edge.cdn.example".into(), 30), ("example.net".into(), 30), ("www.example.com".into(), 30)]
        );
    }

    #[test]
    fn an_inside_resolvers_answers_bind_for_every_host() {
        let mut b = binder();
        let a = answer(5, "pypi.org", &[("pypi.org", 60, RecordData::A(GH))]);
        exchange(&mut b, INSIDE_RESOLVER, &query(5, "pypi.org"), &a);
        assert_eq!(names_of(&b, Ipv4Addr::new(10, 10, 2, 20), GH), vec![("pypi.org".into(), 60)]);
    }

    #[test]
    fn aaaa_binds_and_failures_and_errors_bind_nothing() {
        let mut b = binder();
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut buf = vec![0u8; 512];
        let mut w = Builder::response(&mut buf, 6, &n("github.com"), TYPE_AAAA, 0).unwrap();
        w.answer(&n("github.com"), 60, &RecordData::Aaaa(v6)).unwrap();
        let len = w.finish();
        let mut qb = vec![0u8; 512];
        let ql = Builder::query(&mut qb, 6, &n("github.com"), TYPE_AAAA).unwrap().finish();
        exchange(&mut b, HOST, &qb[..ql], &buf[..len]);
        let mut v = Vec::new();
        b.table().names_for(HOST, IpAddr::V6(v6), 0, &mut v);
        assert_eq!(v.len(), 1);
        // NXDOMAIN carrying a record anyway: nothing bound.
        let mut buf = vec![0u8; 512];
        let mut w = Builder::response(&mut buf, 7, &n("nx.example"), TYPE_A, 3).unwrap();
        w.answer(&n("nx.example"), 60, &RecordData::A(GH)).unwrap();
        let len = w.finish();
        exchange(&mut b, HOST, &query(7, "nx.example"), &buf[..len]);
        assert!(!names_of(&b, HOST, GH).iter().any(|(n, _)| n == "nx.example"));
    }

    #[test]
    fn dns_over_tcp_binds_only_from_a_stream_followed_from_its_syn() {
        let framed = |m: Vec<u8>| {
            let mut v = u16::try_from(m.len()).expect("a short message").to_be_bytes().to_vec();
            v.extend(m);
            v
        };
        let q = framed(query(8, "github.com"));
        let a = framed(answer(8, "github.com", &[("github.com", 60, RecordData::A(GH))]));
        let key = StreamKey { host: HOST, host_port: 40000, resolver: RESOLVER };
        fn seg(seq: u32, syn: bool, payload: &[u8]) -> Segment<'_> {
            Segment { seq, syn, fin: false, rst: false, payload }
        }
        let mut counted = Vec::new();
        // Segments of a stream whose start natgw did not see: unread, nothing bound.
        let mut b = binder();
        b.on_tcp_segment(key, Way::Query, seg(101, false, &q), 0, |c| counted.push(c));
        b.on_tcp_segment(key, Way::Answer, seg(7001, false, &a), 0, |c| counted.push(c));
        assert!(b.table().is_empty());
        assert_eq!(counted, [Counter::DnsTcpUnread, Counter::DnsTcpUnread]);
        // The same followed from the SYN and SYN-ACK: the query filed, the answer bound.
        counted.clear();
        b.on_tcp_segment(key, Way::Query, seg(100, true, b""), 0, |c| counted.push(c));
        b.on_tcp_segment(key, Way::Answer, seg(7000, true, b""), 0, |c| counted.push(c));
        b.on_tcp_segment(key, Way::Query, seg(101, false, &q), 0, |c| counted.push(c));
        b.on_tcp_segment(key, Way::Answer, seg(7001, false, &a), 0, |c| counted.push(c));
        assert_eq!(counted, [Counter::DnsQueriesTracked, Counter::DnsAnswersMatched]);
        assert_eq!(names_of(&b, HOST, GH), [("github.com".to_string(), 60)]);
    }

    #[test]
    fn one_answer_makes_at_most_its_share_of_bindings() {
        let mut b = binder();
        let records: Vec<(&str, u32, RecordData)> =
            (0..50u8).map(|i| ("many.example", 60, RecordData::A(Ipv4Addr::new(192, 0, 2, i)))).collect();
        let a = answer(10, "many.example", &records);
        let (_, out) = exchange(&mut b, HOST, &query(10, "many.example"), &a);
        assert_eq!(out, Some(Counter::DnsBindingsRefused));
        assert_eq!(b.table().len(), MAX_BINDINGS_PER_ANSWER);
    }

    #[test]
    fn malformed_messages_are_counted_and_bind_nothing() {
        let mut b = binder();
        b.on_query(PROTO_UDP, HOST, 40000, RESOLVER, &query(9, "github.com"), 0);
        let good = answer(9, "github.com", &[("github.com", 60, RecordData::A(GH))]);
        // Every truncation of a good answer.
        for cut in 0..good.len() {
            let out = b.on_answer(PROTO_UDP, HOST, 40000, RESOLVER, &good[..cut], 0);
            assert!(
                matches!(out, Some(Counter::DnsMessagesMalformed) | Some(Counter::DnsAnswersUnmatched)),
                "cut at {cut}: {out:?}"
            );
        }
        assert!(b.table().is_empty());
    }
}
