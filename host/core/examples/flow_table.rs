//! What a flow costs one worker: fills a translator with a million UDP flows, each from its
//! own inside endpoint (the worst case: every flow holds an endpoint-independent mapping of
//! its own), and prints the heap bytes per flow (every allocation the translator holds,
//! counted by this program's allocator, and the resident-set growth), new flows/s through
//! the slow path, and the time to translate one packet of an established flow picked at
//! random (lookup + rewrite), both directions. No I/O, one core.
//!
//!   cargo run --release -p natgw-core --example flow_table -- [flows]   (default 1 000 000)

// A benchmark: literal sizes, and it may stop at the first thing that is not as expected.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use natgw_core::conntrack::Side;
use natgw_core::counters::Counters;
use natgw_core::nat::pool::PoolSpec;
use natgw_core::nat::{FrameMeta, Translator, Verdict};
use natgw_testkit::counting_alloc::{live_bytes, rss_bytes, Counting};
use natgw_testkit::{demo_config, ipv4_frame, src_of, udp_datagram};
use natgw_wire::{Ipv4Net, PROTO_UDP};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Flow `i`'s inside endpoint: a host of 10.10.0.0/16 and a port, unique per flow.
fn inside(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0x0a0a_0100 + i % 60_000), 1024 + (i / 60_000) as u16)
}

const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    ipv4_frame(src, dst, PROTO_UDP, 64, 1, 0, &udp_datagram(src, sport, dst, dport, b"0123456789abcdef", true))
}

/// Processes every frame once; the mean ns per frame, and how many were forwarded.
fn run(t: &mut Translator, frames: &mut [Vec<u8>], side: Side, now: u64) -> (f64, usize) {
    let mut out = vec![0u8; 2048];
    let mut forwarded = 0;
    let start = Instant::now();
    for f in frames.iter_mut() {
        if matches!(t.process(f, FrameMeta::plain(side, 0), now, &mut out), Verdict::Forward { .. }) {
            forwarded += 1;
        }
    }
    (start.elapsed().as_nanos() as f64 / frames.len().max(1) as f64, forwarded)
}

fn main() {
    let flows: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let mut cfg = demo_config();
    cfg.inside[0].addresses = vec![Ipv4Net { addr: Ipv4Addr::new(10, 10, 0, 1), prefix: 16 }];
    cfg.inside.truncate(1);
    // Enough external addresses for a port per inside endpoint (paired pooling keeps a
    // host on one address: about 1 900 hosts × 17 ports each).
    let externals: Vec<Ipv4Addr> = (0..32u32).map(|k| Ipv4Addr::from(0xc633_640a + k)).collect();
    cfg.external_addrs = externals.clone();
    cfg.pools = vec![PoolSpec { name: "default".into(), addrs: externals, lo: 1024, hi: 65535 }];
    cfg.max_flows = flows as usize + flows as usize / 8 + 1024;
    cfg.high_water_flows = cfg.max_flows;
    cfg.max_flows_per_source = 0;
    let now = 1_000;

    // A sample of the flows, to look up later, with room made before the baseline.
    let step = 16;
    let mut sample: Vec<(Ipv4Addr, u16, Ipv4Addr, u16)> = Vec::with_capacity((flows / step) as usize + 1);
    let (live0, rss0) = (live_bytes(), rss_bytes());
    let mut t = Translator::new(cfg, Arc::new(Counters::default()), 0);

    let mut fill_ns = 0u128;
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(4096);
    let mut out = vec![0u8; 2048];
    let mut i = 0u32;
    while i < flows {
        chunk.clear();
        let n = 4096.min(flows - i);
        chunk.extend((i..i + n).map(|k| {
            let (a, p) = inside(k);
            frame(a, p, SERVER, 53)
        }));
        let start = Instant::now();
        for f in chunk.iter_mut() {
            let v = t.process(f, FrameMeta::plain(Side::Inside, 0), now, &mut out);
            assert!(matches!(v, Verdict::Forward { .. }), "flow {i}: {v:?}");
        }
        fill_ns += start.elapsed().as_nanos();
        for (k, f) in (i..i + n).zip(&chunk) {
            if k % step == 0 {
                let (a, p) = inside(k);
                let (ea, ep) = src_of(f);
                sample.push((a, p, ea, ep));
            }
        }
        i += n;
    }
    drop(chunk);
    drop(out);
    let held = live_bytes() - live0;
    let rss = rss_bytes().saturating_sub(rss0);
    assert_eq!(t.flows().len(), flows as usize);

    // Random order over the whole table: every lookup a likely cache miss.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in (1..sample.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sample.swap(k, (x % (k as u64 + 1)) as usize);
    }
    let take = sample.len().min(65_536);
    let pristine_in: Vec<Vec<u8>> = sample[..take].iter().map(|&(a, p, _, _)| frame(a, p, SERVER, 53)).collect();
    let pristine_out: Vec<Vec<u8>> = sample[..take].iter().map(|&(_, _, ea, ep)| frame(SERVER, 53, ea, ep)).collect();
    let mut results = Vec::new();
    for round in 0..3 {
        for (side, pristine) in [(Side::Inside, &pristine_in), (Side::Outside, &pristine_out)] {
            let mut frames = pristine.clone();
            let (ns, fwd) = run(&mut t, &mut frames, side, now + round);
            assert_eq!(fwd, take, "every packet of an established flow is forwarded ({side:?})");
            results.push((round, side, ns));
        }
    }
    println!(
        "flow table, {flows} UDP flows on one worker, each with its own endpoint-independent mapping: \
         heap {:.0} bytes/flow (counted), resident set +{:.0} bytes/flow (a Flow is {} bytes); \
         fill {:.0} new flows/s ({:.0} ns each)",
        held as f64 / f64::from(flows),
        rss as f64 / f64::from(flows),
        std::mem::size_of::<natgw_core::conntrack::Flow>(),
        f64::from(flows) / (fill_ns as f64 / 1e9),
        fill_ns as f64 / f64::from(flows),
    );
    // The first round turns each flow from unreplied to answered; the later ones are the
    // fast path alone.
    let best =
        |side: Side| results.iter().filter(|r| r.0 > 0 && r.1 == side).map(|r| r.2).fold(f64::INFINITY, f64::min);
    println!(
        "translate one packet of an established flow, {take} flows picked at random: inside→outside {:.0} ns, outside→inside {:.0} ns",
        best(Side::Inside),
        best(Side::Outside)
    );
    // A standby joining: the bulk resync's records of every flow. A worker sends them a
    // chunk of slots a loop turn; at once they would hold the worker this long.
    t.enable_replication();
    let mut out = Vec::new();
    let start = Instant::now();
    let sent = t.replication_snapshot(now + 3, &mut out);
    let whole = start.elapsed();
    let mut chunk = Vec::new();
    t.replication_snapshot_begin(&mut chunk);
    let start = Instant::now();
    let (_, in_chunk) = t.replication_snapshot_chunk(0, 4096, now + 3, &mut chunk);
    let one = start.elapsed();
    println!(
        "bulk resync records: {sent} flows in {:.1} ms at once ({:.0} ns a flow, {} bytes); one loop turn's chunk of 4096 slots ({in_chunk} flows): {:.2} ms",
        whole.as_secs_f64() * 1e3,
        whole.as_nanos() as f64 / sent.max(1) as f64,
        out.len(),
        one.as_secs_f64() * 1e3
    );
    // `natgw top`: a top-talkers scan of the whole table, in the worker's chunks of 4096
    // slots a loop turn (here every flow has its own inside host and port: the worst case
    // for the tallies, which stop growing at 65 536 keys).
    let mut scan = natgw_core::conntrack::top::TopScan::new();
    let start = Instant::now();
    let mut turns = 0u32;
    let mut slowest = std::time::Duration::ZERO;
    loop {
        let turn = Instant::now();
        let done = scan.advance(t.flows(), 4096);
        slowest = slowest.max(turn.elapsed());
        turns += 1;
        if done {
            break;
        }
    }
    let top = scan.finish(64);
    println!(
        "top-talkers scan: {} flows in {turns} chunks, {:.1} ms in all, the slowest chunk {:.2} ms ({} hosts past the tally counted, not ranked)",
        top.flows,
        start.elapsed().as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3,
        top.hosts_beyond.flows
    );
}
