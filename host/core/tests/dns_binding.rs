//! DNS name binding through the translator: the names an egress policy sees for a new
//! flow come from the DNS answers the translator forwarded to that host, on any worker.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use natgw_core::conntrack::Side;
use natgw_core::counters::{Counter, Counters};
use natgw_core::dns::{DnsConfig, NameBinder, NameLimits, NameTable};
use natgw_core::nat::policy::*;
use natgw_core::nat::*;
use natgw_testkit::*;
use natgw_wire::dns::{Builder, Name, RecordData, TYPE_A};
use natgw_wire::tcp;

const RESOLVER: &str = "203.0.113.53";

/// The names each egress question came with.
type Asked = Vec<(NewFlow, Vec<String>)>;

/// Records the names each egress question came with.
#[derive(Clone, Default)]
struct SeesNames(Arc<Mutex<Asked>>);

impl FlowPolicy for SeesNames {
    fn egress(&mut self, _: &NewFlow) -> EgressDecision {
        unreachable!("the translator asks with names")
    }
    fn egress_named(&mut self, f: &NewFlow, names: DestinationNames<'_>) -> EgressDecision {
        let mut v = Vec::new();
        names.collect_into(&mut v);
        let v: Vec<String> = v.into_iter().map(|n| n.name.to_string()).collect();
        let allow = f.dst_port == 53 || !v.is_empty();
        self.0.lock().unwrap().push((*f, v));
        if allow {
            EgressDecision::Allow
        } else {
            EgressDecision::Deny
        }
    }
    fn port_pool(&mut self, _: &NewFlow) -> PoolDecision {
        DEFAULT_POOL
    }
}

fn worker(w: usize, table: &Arc<NameTable>, policy: &SeesNames) -> (Translator, Arc<Counters>) {
    let cfg = NatConfig { worker: w, workers: 2, ..demo_config() };
    let counters = Arc::new(Counters::default());
    let mut t = Translator::new(cfg, counters.clone(), 0);
    let dns = DnsConfig { resolvers: vec![a(RESOLVER)], ..DnsConfig::default() };
    t.set_name_binder(NameBinder::new(&dns, table.clone()));
    t.set_policy(Box::new(policy.clone()));
    (t, counters)
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let len = Builder::query(&mut b, id, &Name::from_text(name).unwrap(), TYPE_A).unwrap().finish();
    b.truncate(len);
    b
}

fn answer(id: u16, name: &str, addr: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = Name::from_text(name).unwrap();
    let mut w = Builder::response(&mut b, id, &n, TYPE_A, 0).unwrap();
    w.answer(&n, 300, &RecordData::A(addr)).unwrap();
    let len = w.finish();
    b.truncate(len);
    b
}

/// The DNS transaction id of a UDP frame (Ethernet, a 20-byte IP header, UDP).
fn dns_id(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[42], frame[43]])
}

fn process(t: &mut Translator, frame: &mut [u8], side: Side) -> Verdict {
    let mut out = [0u8; 2048];
    let meta = FrameMeta { handed_off: true, ..FrameMeta::plain(side, 0) };
    t.process(frame, meta, 1000, &mut out)
}

#[test]
fn an_answer_forwarded_on_one_worker_names_the_syn_on_another() {
    let table = Arc::new(NameTable::new(NameLimits::default()));
    let policy = SeesNames::default();
    let (mut w0, c0) = worker(0, &table, &policy);
    let (mut w1, _) = worker(1, &table, &policy);

    // Before any answer: the flow to the address has no name, and is refused.
    let mut syn = tcp("10.10.1.10", 40001, "203.0.113.80", 443, tcp::SYN);
    assert_eq!(process(&mut w1, &mut syn, Side::Inside), Verdict::Drop(Counter::DropPolicyDenied));

    let mut q = udp("10.10.1.10", 5353, RESOLVER, 53, &query(0x1234, "GitHub.com"));
    assert!(matches!(process(&mut w0, &mut q, Side::Inside), Verdict::Forward { .. }));
    let (ext, port) = src_of(&q);
    let id = dns_id(&q);
    let mut ans = udp(RESOLVER, 53, &ext.to_string(), port, &answer(id, "github.com", a("203.0.113.80")));
    assert!(matches!(process(&mut w0, &mut ans, Side::Outside), Verdict::Forward { .. }), "the answer is forwarded");
    assert_eq!((c0.get(Counter::DnsQueriesTracked), c0.get(Counter::DnsAnswersMatched)), (1, 1));

    // The SYN meets the other worker: it sees the name; another host does not.
    let mut syn = tcp("10.10.1.10", 40002, "203.0.113.80", 443, tcp::SYN);
    assert!(matches!(process(&mut w1, &mut syn, Side::Inside), Verdict::Forward { .. }));
    let mut other = tcp("10.10.1.11", 40003, "203.0.113.80", 443, tcp::SYN);
    assert_eq!(process(&mut w1, &mut other, Side::Inside), Verdict::Drop(Counter::DropPolicyDenied));
    let seen = policy.0.lock().unwrap().clone();
    let names_for = |port: u16| seen.iter().find(|(f, _)| f.src_port == port).map(|(_, n)| n.clone()).unwrap();
    assert_eq!(names_for(40002), vec!["github.com".to_string()]);
    assert!(names_for(40003).is_empty());
}

#[test]
fn a_spoofed_answer_is_forwarded_but_binds_nothing() {
    let table = Arc::new(NameTable::new(NameLimits::default()));
    let policy = SeesNames::default();
    let (mut w0, c0) = worker(0, &table, &policy);
    let mut q = udp("10.10.1.10", 5353, RESOLVER, 53, &query(7, "github.com"));
    process(&mut w0, &mut q, Side::Inside);
    let (ext, port) = src_of(&q);
    let id = dns_id(&q);
    // Wrong transaction id, then the right id for another name.
    for payload in
        [answer(id.wrapping_add(1), "github.com", a("203.0.113.66")), answer(id, "evil.example", a("203.0.113.66"))]
    {
        let mut ans = udp(RESOLVER, 53, &ext.to_string(), port, &payload);
        assert!(matches!(process(&mut w0, &mut ans, Side::Outside), Verdict::Forward { .. }));
    }
    assert_eq!(c0.get(Counter::DnsAnswersUnmatched), 2);
    assert!(table.is_empty());
    // A resolver natgw was not told to trust: its answers are not even read.
    let mut q = udp("10.10.1.10", 5354, "203.0.113.99", 53, &query(9, "github.com"));
    process(&mut w0, &mut q, Side::Inside);
    assert_eq!(c0.get(Counter::DnsQueriesTracked), 1);
}

/// A TCP segment with real sequence numbers and `payload`, from `src` to `dst`.
fn tcp_data(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, seq_ack: (u32, u32), payload: &[u8]) -> Vec<u8> {
    let (s, d) = (a(src), a(dst));
    ipv4_frame(s, d, natgw_wire::PROTO_TCP, 64, 1, DF, &tcp_segment_at(s, sport, d, dport, flags, seq_ack, payload))
}

/// DNS messages as they go over TCP: each after its 2-byte length.
fn framed(msgs: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for m in msgs {
        v.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
        v.extend_from_slice(m);
    }
    v
}

/// One DNS-over-TCP connection of 10.10.1.10:41000 to the resolver, through worker `t`:
/// the handshake done, `queries` sent (host ISN 100, resolver ISN 7000).
struct TcpDns {
    ext: String,
    port: u16,
    host_next: u32,
}

impl TcpDns {
    const HOST: &'static str = "10.10.1.10";
    const PORT: u16 = 41000;

    fn open(t: &mut Translator, queries: &[u8]) -> TcpDns {
        let mut syn = tcp_data(Self::HOST, Self::PORT, RESOLVER, 53, tcp::SYN, (100, 0), b"");
        assert!(matches!(process(t, &mut syn, Side::Inside), Verdict::Forward { .. }));
        let (ext, port) = src_of(&syn);
        let ext = ext.to_string();
        let mut synack = tcp_data(RESOLVER, 53, &ext, port, tcp::SYN | tcp::ACK, (7000, 101), b"");
        assert!(matches!(process(t, &mut synack, Side::Outside), Verdict::Forward { .. }));
        let mut ack = tcp_data(Self::HOST, Self::PORT, RESOLVER, 53, tcp::ACK, (101, 7001), b"");
        process(t, &mut ack, Side::Inside);
        let mut q = tcp_data(Self::HOST, Self::PORT, RESOLVER, 53, tcp::ACK | tcp::PSH, (101, 7001), queries);
        assert!(matches!(process(t, &mut q, Side::Inside), Verdict::Forward { .. }));
        TcpDns { ext, port, host_next: 101 + u32::try_from(queries.len()).unwrap() }
    }

    /// The resolver's bytes `stream[from..to]`, as one segment; `corrupt` breaks its checksum.
    fn answer(&self, t: &mut Translator, stream: &[u8], from: usize, to: usize, corrupt: bool) -> Verdict {
        let seq = 7001 + u32::try_from(from).unwrap();
        let mut f =
            tcp_data(RESOLVER, 53, &self.ext, self.port, tcp::ACK | tcp::PSH, (seq, self.host_next), &stream[from..to]);
        if corrupt {
            let last = f.len() - 1;
            f[last] ^= 0x40;
        }
        process(t, &mut f, Side::Outside)
    }
}

#[test]
fn dns_over_tcp_binds_from_the_stream_however_the_resolver_cuts_it() {
    let addr = a("203.0.113.80");
    let reply = framed(&[&answer(0x4242, "github.com", addr)]);
    // The answer cut anywhere (in its length prefix, its header, its record) binds once
    // its last byte has passed, and not before.
    for cut in [1, 2, 7, reply.len() - 1] {
        let table = Arc::new(NameTable::new(NameLimits::default()));
        let policy = SeesNames::default();
        let (mut w0, c0) = worker(0, &table, &policy);
        let s = TcpDns::open(&mut w0, &framed(&[&query(0x4242, "github.com")]));
        assert_eq!(c0.get(Counter::DnsQueriesTracked), 1, "cut {cut}: the query over TCP is filed");
        assert!(matches!(s.answer(&mut w0, &reply, 0, cut, false), Verdict::Forward { .. }));
        assert!(table.is_empty(), "cut {cut}: nothing bound before the message is whole");
        assert!(matches!(s.answer(&mut w0, &reply, cut, reply.len(), false), Verdict::Forward { .. }));
        assert_eq!(c0.get(Counter::DnsAnswersMatched), 1, "cut {cut}");
        let mut syn = tcp(TcpDns::HOST, 40010, "203.0.113.80", 443, tcp::SYN);
        assert!(matches!(process(&mut w0, &mut syn, Side::Inside), Verdict::Forward { .. }), "cut {cut}: named");
    }
}

#[test]
fn a_forged_answer_inside_a_record_binds_nothing_wherever_a_segment_starts() {
    // The host asks for a name of a zone it owns (1) and, on the same connection, for
    // github.com (2). Its zone's answer carries, inside its own length, the bytes of a
    // whole framed answer to query 2 pointing github.com at the host's own address; the
    // host shapes the stream so that a segment starts exactly there.
    let evil = a("198.18.0.66");
    let mut first = answer(1, "zone.example", a("203.0.113.7"));
    let forged = framed(&[&answer(2, "github.com", evil)]);
    first.extend_from_slice(&forged);
    let stream = framed(&[&first]);
    let at = stream.len() - forged.len();
    let table = Arc::new(NameTable::new(NameLimits::default()));
    let policy = SeesNames::default();
    let (mut w0, c0) = worker(0, &table, &policy);
    let s = TcpDns::open(&mut w0, &framed(&[&query(1, "zone.example"), &query(2, "github.com")]));
    assert_eq!(c0.get(Counter::DnsQueriesTracked), 2);
    s.answer(&mut w0, &stream, 0, at, false);
    s.answer(&mut w0, &stream, at, stream.len(), false);
    let mut bound = Vec::new();
    table.names_for(a(TcpDns::HOST), std::net::IpAddr::V4(evil), 1000, &mut bound);
    assert!(bound.is_empty(), "the forged answer bound {bound:?}");
    assert_eq!(c0.get(Counter::DnsAnswersMatched), 1, "only the real answer, to query 1");
}

#[test]
fn a_segment_with_a_bad_checksum_is_not_read_and_its_retransmission_is() {
    let table = Arc::new(NameTable::new(NameLimits::default()));
    let policy = SeesNames::default();
    let (mut w0, c0) = worker(0, &table, &policy);
    let s = TcpDns::open(&mut w0, &framed(&[&query(9, "github.com")]));
    // A forged answer (another address) with a checksum the host will refuse, at the
    // expected sequence number: natgw forwards it (the host drops it) and reads nothing.
    let forged = framed(&[&answer(9, "github.com", a("198.18.0.66"))]);
    s.answer(&mut w0, &forged, 0, forged.len(), true);
    assert!(table.is_empty());
    assert_eq!(c0.get(Counter::DnsTcpUnread), 1);
    // The resolver's real answer at the same sequence number is read.
    let real = framed(&[&answer(9, "github.com", a("203.0.113.80"))]);
    s.answer(&mut w0, &real, 0, real.len(), false);
    let mut bound = Vec::new();
    table.names_for(a(TcpDns::HOST), std::net::IpAddr::V4(a("203.0.113.80")), 1000, &mut bound);
    assert_eq!(bound.len(), 1);
}

/// The id the host chose never crosses natgw: a query leaves with natgw's own, its answer
/// comes back with the host's, and an answer carrying the host's id (what a helper the
/// host told it to would forge) binds nothing. An ICMP error quoting the query shows the
/// host its own id too.
#[test]
fn a_udp_query_leaves_with_natgws_id_and_its_answer_returns_with_the_hosts() {
    let table = Arc::new(NameTable::new(NameLimits::default()));
    let policy = SeesNames::default();
    let (mut w0, c0) = worker(0, &table, &policy);
    let mut wire_ids = std::collections::HashSet::new();
    for (i, host_id) in (0..200u16).map(|i| (i, i.wrapping_mul(331))) {
        let sport = 6000 + i;
        let mut q = udp("10.10.1.10", sport, RESOLVER, 53, &query(host_id, "github.com"));
        assert!(matches!(process(&mut w0, &mut q, Side::Inside), Verdict::Forward { .. }));
        assert!(checksums_valid(&q), "the query's checksum follows its new id");
        let wire = dns_id(&q);
        assert_ne!(wire, host_id, "query {i} left with the host's id");
        wire_ids.insert(wire);
        let (ext, port) = src_of(&q);
        // What a helper told the host's id would send first: matches nothing.
        let mut forged = udp(RESOLVER, 53, &ext.to_string(), port, &answer(host_id, "github.com", a("198.18.0.66")));
        assert!(matches!(process(&mut w0, &mut forged, Side::Outside), Verdict::Forward { .. }));
        let mut real = udp(RESOLVER, 53, &ext.to_string(), port, &answer(wire, "github.com", a("203.0.113.80")));
        assert!(matches!(process(&mut w0, &mut real, Side::Outside), Verdict::Forward { .. }));
        assert_eq!(dns_id(&real), host_id, "the answer reaches the host with its own id");
        assert!(checksums_valid(&real));
    }
    assert!(wire_ids.len() > 190, "natgw's ids are not a function of the host's: {} distinct", wire_ids.len());
    assert_eq!((c0.get(Counter::DnsAnswersUnmatched), c0.get(Counter::DnsAnswersMatched)), (200, 200));
    let mut bound = Vec::new();
    table.names_for(a("10.10.1.10"), std::net::IpAddr::V4(a("198.18.0.66")), 1000, &mut bound);
    assert!(bound.is_empty(), "the answers with the host's id bound {bound:?}");

    // A router past natgw reports the query (time exceeded): the quote the host gets shows
    // the host's id, and every checksum holds.
    let mut q = udp("10.10.1.10", 7000, RESOLVER, 53, &query(0x5151, "github.com"));
    process(&mut w0, &mut q, Side::Inside);
    let (ext, _) = src_of(&q);
    let quoted = q[14..].to_vec();
    let icmp = icmp_message(11, 0, [0; 4], &quoted);
    let mut err = ipv4_frame(a("198.51.100.1"), ext, natgw_wire::PROTO_ICMP, 64, 9, 0, &icmp);
    assert!(matches!(process(&mut w0, &mut err, Side::Outside), Verdict::Forward { .. }));
    // Ethernet, the outer IP header, 8 bytes of ICMP, the quoted IP header, UDP.
    let quoted_id = u16::from_be_bytes([err[14 + 20 + 8 + 20 + 8], err[14 + 20 + 8 + 20 + 9]]);
    assert_eq!(quoted_id, 0x5151, "the quote shows the host its own id");
    assert!(checksums_valid(&err));
}
