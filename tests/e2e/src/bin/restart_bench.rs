//! Measures natgw restarted by a real systemd (the shipped unit, `tests/e2e/src/systemd.rs`)
//! with N flows in its table: K rounds alternating `systemctl restart` and `kill -9` of the
//! gateway (Restart=on-failure), under a 1000/s UDP echo stream. Per round: the forwarding
//! pause the stream sees (the longest time without an echo arriving), datagrams lost, and
//! the flows the new process took from the journal. A benchmark, not a test.
//!
//! usage (root): cargo run --release -p natgw-e2e --bin restart_bench -- [FLOWS] [ROUNDS]

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use natgw::admin::AdminClient;
use natgw_e2e::systemd::{natgw_unit, Manager};
use natgw_e2e::wait::secs;
use natgw_e2e::{natgw_bin, wait_until, Topology};

fn stat(admin: &AdminClient, name: &str) -> u64 {
    admin.stats().map(|s| s.get(name)).unwrap_or(0)
}

fn journal_lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("written whole").count()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let t = Topology::network();
    let mut cfg = t.demo_config();
    // Every destination allowed (the demo's allow-list would refuse most of them).
    cfg.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
    let config = cfg.write(&t.path("natgw-systemd.toml"));
    let log = t.path("natgw.log");
    let dir = t.path("systemd");
    std::fs::create_dir_all(&dir).expect("dir");
    let m = Manager::boot(&dir, &[("natgw.service", natgw_unit(&t.gw.name, &natgw_bin(), &config, &log))]);
    m.run(&["start", "natgw.service"]);
    let admin = AdminClient::new(cfg.admin_socket());
    natgw_e2e::load::udp_flows(&t.cli1, flows);
    assert!(wait_until(secs(60), || stat(&admin, "ActiveConnectionCount") >= flows), "the table never filled");
    let table = stat(&admin, "ActiveConnectionCount");

    // The stream: send times by sequence number, arrival times of the echoes.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let echoed = Arc::new(Mutex::new(Vec::<(usize, Instant)>::new()));
    let (stop2, sent2, echoed2) = (stop.clone(), sent.clone(), echoed.clone());
    let stream = t.cli2.spawn(move || {
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
    std::thread::sleep(Duration::from_millis(500));
    let mut results: Vec<(&str, f64, usize, u64)> = Vec::new();
    for k in 0..rounds {
        // systemd refuses a sixth start within 10 s (StartLimitBurst=5): rounds 2.5 s apart.
        std::thread::sleep(Duration::from_millis(2500));
        let kind = if k % 2 == 0 { "systemctl restart" } else { "kill -9" };
        let journals = journal_lines(&log);
        let began = Instant::now();
        if k % 2 == 0 {
            m.run(&["restart", "natgw.service"]);
        } else {
            let pids = m.pids("natgw.service");
            natgw_e2e::process::kill(pids[0], libc::SIGKILL);
        }
        assert!(wait_until(secs(30), || journal_lines(&log) > journals), "round {k}: no new journal");
        std::thread::sleep(Duration::from_millis(500));
        let restored = stat(&admin, "JournalFlowsRestored");
        let end = Instant::now();
        let (sent, echoed) = (sent.lock().expect("lock").clone(), echoed.lock().expect("lock").clone());
        let mut arrivals: Vec<Instant> = echoed.iter().map(|e| e.1).filter(|a| *a > began && *a < end).collect();
        arrivals.insert(0, began);
        arrivals.sort();
        let pause = arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        let got: std::collections::HashSet<usize> = echoed.iter().map(|e| e.0).collect();
        let lost = sent
            .iter()
            .enumerate()
            .filter(|(i, s)| **s > began && **s + Duration::from_millis(300) < end && !got.contains(i))
            .count();
        results.push((kind, pause.as_secs_f64() * 1000.0, lost, restored));
        println!(
            "  round {k}: {kind}: pause {:.0} ms, {lost} lost, {restored} flows restored",
            pause.as_secs_f64() * 1000.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stream.join();
    for kind in ["systemctl restart", "kill -9"] {
        let mut p: Vec<f64> = results.iter().filter(|r| r.0 == kind).map(|r| r.1).collect();
        p.sort_by(f64::total_cmp);
        let lost: usize = results.iter().filter(|r| r.0 == kind).map(|r| r.2).sum();
        let restored: Vec<u64> = results.iter().filter(|r| r.0 == kind).map(|r| r.3).collect();
        println!(
            "natgw under systemd, {table} flows, {} x {kind}: forwarding pause min {:.0} / median {:.0} / max {:.0} ms; UDP echo at 1000/s lost {lost}; flows restored {:?}",
            p.len(),
            p.first().copied().unwrap_or(0.0),
            p.get(p.len() / 2).copied().unwrap_or(0.0),
            p.last().copied().unwrap_or(0.0),
            restored
        );
    }
    for l in std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains("after start")).take(4) {
        println!("    {l}");
    }
}
