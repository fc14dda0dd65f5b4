//! A gateway pair (`[ha]`): the active streams its flows to the standby; when the active
//! natgw dies (`kill -9`) and the standby is promoted, every connection carries on from the
//! same external address and port; the recovered node rejoins as standby, catches up by
//! bulk resync, and takes the flows back. A peer with the wrong key gets nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use natgw_e2e::ha::{node_config, start_b, wait_replica, wire_pair};
use natgw_e2e::load::{start_iperf3_server, start_tcp_echo, udp_stream};
use natgw_e2e::net::sa;
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, Topology};
use serde_json::Value;

/// One byte out and back on each connection.
fn echo_all(conns: &mut [TcpStream], byte: u8) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        if let Err(e) = c.write_all(&[byte]).and_then(|()| c.read_exact(&mut b)) {
            failures.push(format!("connection {i}: {e}"));
        } else if b[0] != byte {
            failures.push(format!("connection {i}: echoed {b:?}"));
        }
    }
    failures
}

/// The external endpoint each idle connection leaves with, as `node` shows it.
fn translated(node: &natgw::admin::AdminClient, ports: &[u16]) -> Vec<Option<String>> {
    let flows = node.flows().unwrap_or_default();
    ports
        .iter()
        .map(|p| {
            let key = format!("10.10.1.10:{p} -> 203.0.113.80:8081");
            flows.iter().find(|f| f.original == key).map(|f| f.translated.clone())
        })
        .collect()
}

fn counter(node: &natgw::admin::AdminClient, name: &str) -> u64 {
    node.stats().map_or(0, |s| s.counters.iter().filter(|c| c.name == name).map(|c| c.value).sum())
}

#[test]
fn killing_the_active_natgw_drops_no_connection_and_the_flows_come_back() {
    let mut t = Topology::network();
    let b_ns = wire_pair(&mut t);
    let (cfg_a, cfg_b) = (node_config(&t, false), node_config(&t, true));
    t.start(&cfg_a);
    let a = t.admin();
    let mut b = start_b(&t, &b_ns, &cfg_b, 0);
    // Both start as standby, silent: nothing passes until keepalived (here: the test) promotes.
    assert_eq!(a.status().unwrap().ha.unwrap().role, natgw::ha::Role::Standby);
    let promoted = a.ha(true).expect("promote A");
    assert_eq!((promoted.role, promoted.unchanged), (natgw::ha::Role::Active, false));
    start_tcp_echo(&mut t, 8081);
    start_iperf3_server(&mut t);

    let mut idle: Vec<TcpStream> = t.cli1.enter(|| {
        (0..10)
            .map(|_| {
                let s = TcpStream::connect_timeout(&sa("203.0.113.80:8081"), secs(2)).expect("connect through A");
                s.set_read_timeout(Some(secs(3))).expect("timeout");
                s
            })
            .collect()
    });
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    let ports: Vec<u16> = idle.iter().map(|s| s.local_addr().expect("local").port()).collect();
    let before = translated(&a, &ports);
    assert!(before.iter().all(Option::is_some), "every idle connection has a flow at A: {before:?}");
    assert!(wait_replica(&b.admin, 10, secs(5)), "B holds A's flows: {:?}", b.admin.status().ok().and_then(|s| s.ha));

    let cli1 = t.cli1.clone();
    let iperf = std::thread::spawn(move || {
        cli1.cmd("iperf3").args(["-c", "203.0.113.80", "-p", "5201", "-t", "8", "-b", "200M", "-J"]).output()
    });
    // The standby holds them in its replica (its workers hold nothing until promoted).
    assert!(wait_replica(&b.admin, 12, secs(5)), "the transfer's two connections reached B");
    let udp = udp_stream(&t.cli2, 6);
    assert!(wait_replica(&b.admin, 13, secs(5)), "the UDP stream's flow reached B");
    std::thread::sleep(Duration::from_millis(1000));

    // A's natgw dies. keepalived would notice within its advert interval and run the
    // notify script; the test promotes at once and measures from the kill.
    let killed = Instant::now();
    natgw_e2e::process::kill(t.gateway().pid(), libc::SIGKILL);
    let r = b.admin.ha(true).expect("promote B");
    assert_eq!(r.flows_refused, 0, "{r:?}");
    assert!(r.flows >= 13, "10 idle connections, iperf3's two, the UDP stream: {r:?}");
    let mut first = idle.remove(0);
    let answered = first.write_all(b"x").and_then(|()| first.read_exact(&mut [0u8; 1]));
    let failover = killed.elapsed();
    idle.insert(0, first);
    eprintln!(
        "failover: B took over {} flows in {:.1} ms; first echo through B {:.1} ms after the kill ({answered:?})",
        r.flows,
        r.took_us as f64 / 1000.0,
        failover.as_secs_f64() * 1000.0
    );
    assert!(answered.is_ok());

    let out = iperf.join().expect("iperf3 thread").expect("iperf3 runs");
    let j: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    assert!(j.get("error").is_none(), "iperf3: {}", j["error"]);
    assert!(out.status.success(), "iperf3 exited {:?}", out.status.code());
    let (sent, lost) = udp.join().expect("udp stream");
    eprintln!("failover: iperf3 completed without a reset; UDP echo lost {lost} of {sent} datagrams (100/s)");
    assert!(lost * 10 < sent, "the UDP stream lost {lost} of {sent}");
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "idle connections after the failover");
    assert_eq!(translated(&b.admin, &ports), before, "same external address and port at B");

    // A comes back (as standby), catches up by bulk resync, and takes the flows back.
    t.stop();
    t.start(&cfg_a);
    let a = t.admin();
    assert!(wait_replica(&a, 10, secs(10)), "A caught up: {:?}", a.status().ok().and_then(|s| s.ha));
    assert!(counter(&b.admin, "HaResyncs") >= 1);
    let acked = counter(&b.admin, "HaSyncAcked");
    assert!(acked > 0 && counter(&b.admin, "HaSyncSent") >= acked);
    b.admin.ha(false).expect("demote B");
    let back = a.ha(true).expect("promote A again");
    assert!(back.flows >= 10, "{back:?}");
    assert_eq!(echo_all(&mut idle, b'c'), Vec::<String>::new(), "idle connections after failing back");
    assert_eq!(translated(&a, &ports), before, "same external endpoints after failing back");
    drop(idle);
    b.daemon.stop();
}

#[test]
fn a_peer_with_another_key_or_worker_count_gets_nothing() {
    let mut t = Topology::network();
    let b_ns = wire_pair(&mut t);
    let cfg_a = node_config(&t, false);
    t.start(&cfg_a);
    let a = t.admin();
    a.ha(true).expect("promote A");
    let mut wrong_key = node_config(&t, true);
    wrong_key.set("ha.key", "another-key-entirely-0123");
    let mut b = start_b(&t, &b_ns, &wrong_key, 0);
    // A dials, B refuses the hello's HMAC; each attempt is counted, and nothing is held.
    eventually(secs(5), "B to count the bad HMAC", || counter(&b.admin, r#"HaSyncRejected{reason="auth"}"#) >= 1);
    let s = b.admin.status().unwrap().ha.unwrap();
    assert!(!s.connected && s.replica_flows == 0, "{s:?}");
    assert!(s.last_error.contains("HMAC"), "{s:?}");
    b.daemon.stop();

    let mut other_workers = node_config(&t, true);
    other_workers.set("dataplane.workers", 1i64);
    let mut b = start_b(&t, &b_ns, &other_workers, 1);
    eventually(secs(5), "B to refuse A's worker count", || {
        counter(&b.admin, r#"HaSyncRejected{reason="config"}"#) >= 1
    });
    let s = b.admin.status().unwrap().ha.unwrap();
    assert!(s.last_error.contains("dataplane.workers = 2 on the peer, 1 here"), "{s:?}");
    assert!(a.status().unwrap().ha.unwrap().last_error.contains("dataplane.workers"), "A says why too");
    b.daemon.stop();
}
