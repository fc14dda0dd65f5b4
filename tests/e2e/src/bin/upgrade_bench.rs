//! Measures `natgw upgrade` on the demo network: the forwarding pause (the old workers
//! stopping to the new ones forwarding) over a table of N flows, for K upgrades in a row,
//! and the loss of a 1000/s UDP echo stream across them. A benchmark, not a test: it
//! prints numbers (the README's upgrade line) and asserts only that every flow came along.
//!
//! usage (root): cargo run --release -p natgw-e2e --bin upgrade_bench -- [FLOWS] [UPGRADES]

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natgw_e2e::wait::secs;
use natgw_e2e::{natgw_bin, wait_until, Topology};

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let upgrades: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    // Every destination allowed (the demo's allow-list would refuse most of them).
    cfg.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
    t.start(&cfg);
    // N flows from one socket to N destination ports (one mapping, N flows; the servers'
    // port-unreachable answers go back through natgw).
    natgw_e2e::load::udp_flows(&t.cli1, flows);
    let filled = wait_until(secs(60), || t.counter("ActiveConnectionCount") >= flows);
    let table = t.counter("ActiveConnectionCount");
    assert!(filled, "the table holds {table} flows, not {flows}");

    // A 1000/s UDP echo stream across all the upgrades: datagrams lost.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (stop2, sent2, got2) = (stop.clone(), sent.clone(), got.clone());
    let stream = t.cli2.spawn(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        s.connect("203.0.113.7:7").expect("connect");
        s.set_read_timeout(Some(Duration::from_micros(200))).expect("timeout");
        let start = Instant::now();
        let mut b = [0u8; 16];
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            if start.elapsed() >= Duration::from_millis(i) {
                let _ = s.send(b"ping");
                sent2.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            if s.recv(&mut b).is_ok() {
                got2.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Stragglers.
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        while s.recv(&mut b).is_ok() {
            got2.fetch_add(1, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut pauses = Vec::new();
    for k in 0..upgrades {
        let r = t.upgrade(&natgw_bin()).expect("natgw upgrade");
        assert!(r.flows >= table, "upgrade {k}: {} of {table} flows handed over", r.flows);
        pauses.push(r.pause_us);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stream.join();
    for l in t.log().lines().filter(|l| l.contains("took over")).take(3) {
        println!("    {l}");
    }
    pauses.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let (sent, got) = (sent.load(Ordering::Relaxed), got.load(Ordering::Relaxed));
    println!(
        "natgw upgrade, {table} flows, {upgrades} upgrades: forwarding pause min {:.1} ms, median {:.1} ms, max {:.1} ms; UDP echo at 1000/s lost {} of {sent}",
        ms(pauses.first().copied().unwrap_or(0)),
        ms(pauses.get(pauses.len() / 2).copied().unwrap_or(0)),
        ms(pauses.last().copied().unwrap_or(0)),
        sent.saturating_sub(got)
    );
}
