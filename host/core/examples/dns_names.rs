//! What DNS name binding costs: the time to read one query and bind its answer (through
//! `NameBinder`, as a worker does before forwarding the answer), the heap bytes per name
//! bound at 100 000 names (every allocation the table holds, counted by this program's
//! allocator, and the resident-set growth), and the time of one lookup of a flow's names
//! (what a 0.2.0 egress policy's call adds before the call); and the same query and answer
//! over TCP, each on a stream followed from its SYN to its reset (`dns::stream`). No I/O,
//! one core.
//!
//!   cargo run --release -p natgw-core --example dns_names -- [names]   (default 100 000)

// A benchmark: literal sizes, and it may stop at the first thing that is not as expected.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use natgw_core::dns::{DnsConfig, NameBinder, NameLimits, NameTable, Segment, StreamKey, Way};
use natgw_testkit::counting_alloc::{live_bytes, rss_bytes, Counting};
use natgw_wire::dns::{Builder, Name, RecordData, TYPE_A};
use natgw_wire::PROTO_UDP;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RESOLVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);

/// Name `i`: a typical length ("host-12345.service-7.example.com", 30-odd characters).
fn name(i: u32) -> Name {
    Name::from_text(&format!("host-{i}.service-{}.example.com", i % 97)).unwrap()
}

/// Host `i` of 10.10.0.0/16 and the address its name `i` resolves to.
fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a0a_0000 + i % 50_000)
}
fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc000_0000 + i)
}

fn main() {
    let names: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let limits =
        NameLimits { max_bindings: names as usize, max_bindings_per_host: names as usize, ..NameLimits::default() };
    let cfg = DnsConfig {
        resolvers: vec![RESOLVER],
        limits,
        max_pending: 1 << 20,
        max_pending_per_host: 1 << 16,
        ..DnsConfig::default()
    };
    // The messages first: building them is not what is measured.
    let mut queries = Vec::with_capacity(names as usize);
    let mut answers = Vec::with_capacity(names as usize);
    for i in 0..names {
        let n = name(i);
        let mut q = [0u8; 512];
        let ql = Builder::query(&mut q, i as u16, &n, TYPE_A).unwrap().finish();
        queries.push(q[..ql].to_vec());
        let mut a = [0u8; 512];
        let mut w = Builder::response(&mut a, i as u16, &n, TYPE_A, 0).unwrap();
        w.answer(&n, 300, &RecordData::A(addr(i))).unwrap();
        let al = w.finish();
        answers.push(a[..al].to_vec());
    }
    let (live0, rss0) = (live_bytes(), rss_bytes());
    let table = Arc::new(NameTable::new(limits));
    let mut binder = NameBinder::new(&cfg, Arc::clone(&table));
    let start = Instant::now();
    for i in 0..names {
        let port = 1024 + (i / 50_000) as u16;
        binder.on_query(PROTO_UDP, host(i), port, RESOLVER, &queries[i as usize], 0);
        binder.on_answer(PROTO_UDP, host(i), port, RESOLVER, &answers[i as usize], 0);
    }
    let per_answer = start.elapsed().as_nanos() as f64 / f64::from(names);
    assert_eq!(table.len(), names as usize, "every answer bound its name");
    // Outstanding queries are all answered: what is held now is the table.
    let held = live_bytes() - live0;
    let rss = rss_bytes().saturating_sub(rss0);
    println!(
        "{names} names bound: {per_answer:.0} ns per query and answer read and bound; \
         heap {:.1} MB ({:.0} B per name), RSS +{:.1} MB ({:.0} B per name)",
        held as f64 / 1e6,
        held as f64 / f64::from(names),
        rss as f64 / 1e6,
        rss as f64 / f64::from(names)
    );
    // Lookups as the slow path makes them for a new flow: a bound pair, and one without names.
    let mut out = Vec::new();
    let lookups = 1_000_000u32;
    let start = Instant::now();
    for k in 0..lookups {
        let i = k.wrapping_mul(2_654_435_761) % names;
        out.clear();
        table.names_for(host(i), IpAddr::V4(addr(i)), 1, &mut out);
        assert_eq!(out.len(), 1);
    }
    let hit = start.elapsed().as_nanos() as f64 / f64::from(lookups);
    let start = Instant::now();
    for k in 0..lookups {
        let i = k.wrapping_mul(2_654_435_761) % names;
        out.clear();
        table.names_for(host(i), IpAddr::V4(addr(i + 1)), 1, &mut out);
    }
    let miss = start.elapsed().as_nanos() as f64 / f64::from(lookups);
    println!("names of a flow's destination: {hit:.0} ns with one name bound, {miss:.0} ns with none");

    // Over TCP: each lookup its own connection (SYN, SYN-ACK, the query, the answer, the
    // resolver's reset), as glibc's `use-vc` makes them; into a table of its own.
    let framed = |m: &[u8]| {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    };
    let tcp_names = names.min(20_000);
    let (q, a): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        (0..tcp_names as usize).map(|i| (framed(&queries[i]), framed(&answers[i]))).unzip();
    let table = Arc::new(NameTable::new(limits));
    let mut binder = NameBinder::new(&cfg, Arc::clone(&table));
    fn seg(seq: u32, syn: bool, rst: bool, payload: &[u8]) -> Segment<'_> {
        Segment { seq, syn, fin: false, rst, payload }
    }
    let mut counted = 0u64;
    let start = Instant::now();
    for i in 0..tcp_names {
        let key = StreamKey { host: host(i), host_port: 1024 + (i / 50_000) as u16, resolver: RESOLVER };
        let (q, a) = (&q[i as usize], &a[i as usize]);
        binder.on_tcp_segment(key, Way::Query, seg(100, true, false, b""), 0, |_| counted += 1);
        binder.on_tcp_segment(key, Way::Answer, seg(7000, true, false, b""), 0, |_| counted += 1);
        binder.on_tcp_segment(key, Way::Query, seg(101, false, false, q), 0, |_| counted += 1);
        binder.on_tcp_segment(key, Way::Answer, seg(7001, false, false, a), 0, |_| counted += 1);
        binder.on_tcp_segment(key, Way::Answer, seg(7001 + a.len() as u32, false, true, b""), 0, |_| counted += 1);
    }
    let per_lookup = start.elapsed().as_nanos() as f64 / f64::from(tcp_names);
    assert_eq!(table.len(), tcp_names as usize, "every TCP answer bound its name");
    assert_eq!(counted, 2 * u64::from(tcp_names), "a query filed and an answer matched per stream");
    assert!(binder.streams().is_empty(), "every stream ended by its reset");
    println!(
        "over TCP: {per_lookup:.0} ns per lookup read and bound from its stream (five segments, {tcp_names} streams)"
    );
}
