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
    let mut ans = udp(RESOLVER, 53, &ext.to_string(), port, &answer(0x1234, "github.com", a("203.0.113.80")));
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
    // Wrong transaction id, then the right id for another name.
    for payload in [answer(8, "github.com", a("203.0.113.66")), answer(7, "evil.example", a("203.0.113.66"))] {
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
