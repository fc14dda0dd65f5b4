//! Measures a gateway pair (`[ha]`, keepalived electing) on the demo network. A benchmark,
//! not a test: it prints the README's HA numbers.
//!
//! - failover: K times, `kill -9` of the active natgw under a 1000/s UDP echo stream; the
//!   time from the kill to the first datagram forwarded by the other node (sent after the
//!   kill and echoed), then the killed node restarted as standby and caught up;
//! - the sync's cost: new TCP connections per second (wrk, `Connection: close`, nginx)
//!   through one gateway without `[ha]` and through the active of a pair;
//! - replication: a standby started beside an active holding N flows, the time until it
//!   holds them all (bulk resync); then N new flows created at the active and the time
//!   until the standby holds those too.
//!
//! usage (root): cargo run --release -p natgw-e2e --bin ha_bench -- [KILLS] [FLOWS]

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use natgw::ha::Role;
use natgw_e2e::ha::{role, start_node};
use natgw_e2e::wait::secs;
use natgw_e2e::{wait_until, GatewayConfig, Netns, Topology};

/// The pair's network (node A's namespace, node B's) and both nodes' configs, with every
/// destination allowed (the demo's allow-list would refuse most of the bench's flows).
fn pair_network() -> (Topology, Netns, Netns, GatewayConfig, GatewayConfig) {
    let mut t = Topology::network();
    let b_ns = natgw_e2e::ha::wire_pair(&mut t);
    let a_ns = t.gw.clone();
    let configs = [false, true].map(|b| {
        let mut c = natgw_e2e::ha::node_config(&t, b);
        c.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
        c
    });
    let [cfg_a, cfg_b] = configs;
    (t, a_ns, b_ns, cfg_a, cfg_b)
}

fn wrk_cps(t: &Topology) -> f64 {
    let out = t.cli1.output("wrk", &["-t1", "-c32", "-d5s", "-H", "Connection: close", "http://203.0.113.80/ip"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("Requests/sec:") || text.contains("Socket errors") {
        eprintln!("wrk: {text}{}", String::from_utf8_lossy(&out.stderr));
        if let Ok(s) = t.admin().stats() {
            for c in s.counters.iter().filter(|c| c.value > 0) {
                eprintln!("A: {} = {}", c.name, c.value);
            }
        }
        eprintln!("cli1 neigh: {}", t.cli1.ip_output(&["neigh", "show"]));
        eprintln!("A log: {}", t.log().lines().rev().take(8).collect::<Vec<_>>().join("\n"));
    }
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// N UDP flows from one socket of `ns` to N destination ports.
fn make_flows(ns: &Netns, n: u64, first_port: u16, host: u8) {
    ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        for i in 0..n {
            let port = first_port + (i % 30_000) as u16;
            let addr = format!("203.0.113.{}:{port}", u64::from(host) + (i / 30_000) * 11);
            let _ = s.send_to(b"x", addr.as_str());
            if i % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

fn replica(node: &natgw::admin::AdminClient) -> u64 {
    node.status().ok().and_then(|s| s.ha).map_or(0, |h| h.replica_flows)
}

/// A 1000/s UDP echo stream from cli2: send times by sequence number, and echo times.
struct Probe {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    echoed: Arc<Mutex<Vec<(usize, Instant)>>>,
}

impl Probe {
    fn start(ns: &Netns) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let echoed = Arc::new(Mutex::new(Vec::new()));
        let (stop2, sent2, echoed2) = (stop.clone(), sent.clone(), echoed.clone());
        ns.spawn(move || {
            let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
            s.connect("203.0.113.7:7").expect("connect");
            s.set_read_timeout(Some(Duration::from_micros(100))).expect("timeout");
            let start = Instant::now();
            let mut b = [0u8; 32];
            let mut i = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                if start.elapsed() >= Duration::from_millis(i as u64) {
                    let _ = s.send(i.to_string().as_bytes());
                    sent2.lock().expect("lock").push(Instant::now());
                    i += 1;
                }
                if let Ok(n) = s.recv(&mut b) {
                    if let Some(seq) = std::str::from_utf8(&b[..n]).ok().and_then(|t| t.parse::<usize>().ok()) {
                        echoed2.lock().expect("lock").push((seq, Instant::now()));
                    }
                }
            }
        });
        Probe { stop, sent, echoed }
    }

    /// The first echo of a datagram sent after `t`, if any yet.
    fn first_echo_after(&self, t: Instant) -> Option<Instant> {
        let sent = self.sent.lock().expect("lock");
        let echoed = self.echoed.lock().expect("lock");
        echoed.iter().filter(|(seq, _)| sent.get(*seq).is_some_and(|s| *s > t)).map(|e| e.1).min()
    }

    fn lost_between(&self, from: Instant, to: Instant) -> usize {
        let sent = self.sent.lock().expect("lock");
        let echoed = self.echoed.lock().expect("lock");
        let got: std::collections::HashSet<usize> = echoed.iter().map(|e| e.0).collect();
        sent.iter().enumerate().filter(|(i, s)| **s > from && **s < to && !got.contains(i)).count()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kills: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let flows: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);

    // The sync's cost on new connections, on the pair's network (bridged segments): node A
    // alone without [ha], then A active with B standing by (promoted through the admin
    // socket). Each run on a fresh network: the server's TIME-WAIT entries from a run
    // before would meet the next run's reused external ports.
    let (mut single, mut paired) = (Vec::new(), Vec::new());
    let mut sent = 0;
    for round in 0..6 {
        let ha = round % 2 == 1;
        let (mut t, a_ns, b_ns, mut cfg_a, cfg_b) = pair_network();
        if !ha {
            cfg_a.remove("ha");
        }
        t.gateway = Some(start_node(&t, &a_ns, false, &cfg_a));
        let mut b = ha.then(|| start_node(&t, &b_ns, true, &cfg_b));
        if let Some(b) = &b {
            t.admin().ha(true).expect("promote A");
            assert!(wait_until(secs(10), || b.admin.status().ok().and_then(|s| s.ha).is_some_and(|h| h.connected)));
        }
        let cps = wrk_cps(&t);
        if ha {
            paired.push(cps);
            sent += t.counter("HaSyncSent");
        } else {
            single.push(cps);
        }
        if let Some(b) = b.as_mut() {
            b.daemon.stop();
        }
    }
    println!(
        "cps: node A alone without [ha] {:.0}/s, A active with B standing by {:.0}/s ({:.2}x); {sent} events replicated (bridged network, wrk -t1 -c32 -d5s, Connection: close, alternating runs on fresh networks, medians of 3: {single:.0?} / {paired:.0?})",
        median(&mut single.clone()),
        median(&mut paired.clone()),
        median(&mut paired.clone()) / median(&mut single.clone()).max(1.0)
    );

    // Replication and failover, keepalived electing.
    let (mut t, a_ns, b_ns, cfg_a, cfg_b) = pair_network();
    let b = start_node(&t, &b_ns, true, &cfg_b);
    // keepalived from here on: A starts standby as keepalived does, and is promoted by it.
    t.gateway = Some(start_node(&t, &a_ns, false, &cfg_a));
    natgw_e2e::ha::start_keepalived(&mut t, &a_ns, false, &cfg_a.admin_socket());
    natgw_e2e::ha::start_keepalived(&mut t, &b_ns, true, &cfg_b.admin_socket());
    let a = t.admin();
    assert!(
        wait_until(secs(10), || role(&a) == Some(Role::Active) && role(&b.admin) == Some(Role::Standby)),
        "keepalived makes A active"
    );

    // Replication: a standby joining an active with N flows, then N new flows.
    let mut b = Some(b);
    if let Some(mut g) = b.take() {
        g.daemon.stop();
    }
    make_flows(&t.cli1, flows, 1024, 7);
    let filled = wait_until(secs(60), || t.counter("ActiveConnectionCount") >= flows);
    let table = t.counter("ActiveConnectionCount");
    assert!(filled, "the active holds {table} flows, not {flows}");
    let joined = Instant::now();
    let g = start_node(&t, &b_ns, true, &cfg_b);
    let caught_up = wait_until(secs(120), || replica(&g.admin) >= table);
    let resync = joined.elapsed();
    assert!(caught_up, "the standby holds {} of {table}", replica(&g.admin));
    println!(
        "replication: bulk resync of {table} flows to a standby started {:.2} s before: {:.0} flows/s (from its start, process start included)",
        resync.as_secs_f64(),
        table as f64 / resync.as_secs_f64()
    );
    let before = replica(&g.admin);
    let made = Instant::now();
    make_flows(&t.cli2, flows, 1024, 100);
    let all = wait_until(secs(120), || replica(&g.admin) >= before + flows);
    let took = made.elapsed();
    println!(
        "replication: {flows} new flows (sent at about 200 000/s) held by the standby {:.2} s after the first: {:.0} flows/s{}",
        took.as_secs_f64(),
        flows as f64 / took.as_secs_f64(),
        if all { "" } else { " (not all arrived)" }
    );
    b = Some(g);

    // Failover, K times, alternating nodes: from the kill to the first forwarded datagram.
    // Restart with a small table: expiry of the bench's flows is not what is measured.
    let probe = Probe::start(&t.cli2);
    std::thread::sleep(Duration::from_millis(500));
    let mut times = Vec::new();
    let mut lost = Vec::new();
    let a_ns = t.gw.clone();
    for k in 0..kills {
        let a = t.admin();
        let a_active = role(&a) == Some(Role::Active);
        let b_node = b.as_mut().expect("node B");
        let (victim_pid, survivor) =
            if a_active { (t.gateway().pid(), b_node.admin.clone()) } else { (b_node.pid(), a.clone()) };
        let killed = Instant::now();
        natgw_e2e::process::kill(victim_pid, libc::SIGKILL);
        let back = wait_until(secs(5), || probe.first_echo_after(killed).is_some());
        let first = probe.first_echo_after(killed);
        assert!(back, "kill {k}: nothing forwarded within 5 s");
        let ms = first.map_or(f64::NAN, |f| (f - killed).as_secs_f64() * 1000.0);
        assert_eq!(role(&survivor), Some(Role::Active), "kill {k}");
        times.push(ms);
        lost.push(probe.lost_between(killed, killed + Duration::from_secs(2)));
        // The killed node comes back as standby and catches up before the next kill.
        if a_active {
            t.stop();
            t.gateway = Some(start_node(&t, &a_ns, false, &cfg_a));
        } else {
            if let Some(mut g) = b.take() {
                g.daemon.stop();
            }
            b = Some(start_node(&t, &b_ns, true, &cfg_b));
        }
        let back_node = if a_active { t.admin() } else { b.as_ref().expect("node B").admin.clone() };
        let synced = wait_until(secs(60), || {
            let active_flows = survivor.status().map_or(u64::MAX, |s| s.flows);
            role(&back_node) == Some(Role::Standby) && replica(&back_node) >= active_flows.saturating_sub(10).max(1)
        });
        assert!(synced, "kill {k}: the restarted node did not catch up");
        std::thread::sleep(Duration::from_millis(500));
        eprintln!("kill {k}: first datagram forwarded {ms:.1} ms after the kill, {} lost", lost[k]);
    }
    drop(probe);
    if times.is_empty() {
        return;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    // The nearest rank: index (len - 1) * percent / 100.
    let pct = |p: usize| sorted[(sorted.len() - 1) * p / 100];
    println!(
        "failover over {kills} kills (kill -9 of the active natgw, natgw ha watch and keepalived, 1000/s UDP echo): min {:.1} / median {:.1} / p90 {:.1} / max {:.1} ms; datagrams lost per failover: median {}, max {}",
        pct(0),
        pct(50),
        pct(90),
        pct(100),
        {
            let mut l = lost.clone();
            l.sort_unstable();
            l[l.len() / 2]
        },
        lost.iter().max().copied().unwrap_or(0)
    );
}
