//! A gateway pair (`[ha]`) with keepalived (examples/ha) electing the active node: the
//! active streams its flows to the standby; when the active natgw dies (`kill -9`)
//! keepalived promotes the standby and every connection carries on from the same external
//! address and port; the recovered node rejoins as standby, catches up by bulk resync, and
//! takes the flows back when the other dies. A cut sync link (both active) never maps one
//! external port to two inside endpoints and heals to one owner per flow. A peer with the
//! wrong key or worker count gets nothing.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use natgw::ha::Role;
use natgw_e2e::ha::{keepalived_state, node_config, role, start_b, start_node, wait_replica, wire_pair, Pair};
use natgw_e2e::load::{echo_all, idle_connections, idle_flows, start_iperf3_server, start_tcp_echo, udp_stream};
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, Topology};
use serde_json::Value;

/// The external endpoint each idle connection leaves with, as `node` shows it.
fn translated(node: &natgw::admin::AdminClient, ports: &[u16]) -> Vec<Option<String>> {
    let flows = node.flows().unwrap_or_default();
    idle_flows(&flows, ports, 8081).into_iter().map(|f| f.map(|f| f.translated.clone())).collect()
}

fn counter(node: &natgw::admin::AdminClient, name: &str) -> u64 {
    node.stats().map_or(0, |s| s.counters.iter().filter(|c| c.name == name).map(|c| c.value).sum())
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[test]
fn killing_the_active_natgw_fails_over_through_keepalived_and_back() {
    // Interim flow records every 2 s, so that each node reports the idle connections
    // during its turn: the flow log must carry on across both failovers.
    let Pair { mut t, b_ns, mut b, cfg_a, cfg_b } = Pair::with_keepalived(|c| {
        c.set("flow_log.active_interval_s", 2i64);
    });
    let a = t.admin();
    start_tcp_echo(&mut t, 8081);
    start_iperf3_server(&mut t);

    let mut idle: Vec<TcpStream> = idle_connections(&t.cli1, 8081, 10);
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
    udp.wait_echoed(50);

    // A's natgw dies. keepalived on A sees it go (track_process), gives up mastership at
    // once; keepalived on B becomes master and runs the notify script: natgw ha promote.
    let killed = Instant::now();
    natgw_e2e::process::kill(t.gateway().pid(), libc::SIGKILL);
    eventually(secs(3), "keepalived to promote B", || role(&b.admin) == Some(Role::Active));
    let promoted = killed.elapsed();
    assert_eq!(echo_all(&mut idle[..1], b'x'), Vec::<String>::new());
    let first_echo = killed.elapsed();
    eprintln!(
        "failover: B active {:.1} ms after the kill; first echo through B {:.1} ms after it",
        promoted.as_secs_f64() * 1000.0,
        first_echo.as_secs_f64() * 1000.0
    );
    assert!(b.daemon.log_text().contains("promoted to active with"), "{}", b.daemon.log_text());

    let out = iperf.join().expect("iperf3 thread").expect("iperf3 runs");
    let j: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    assert!(j.get("error").is_none(), "iperf3: {}", j["error"]);
    assert!(out.status.success(), "iperf3 exited {:?}", out.status.code());
    let (sent, lost) = udp.join().expect("udp stream");
    eprintln!("failover: iperf3 completed without a reset; UDP echo lost {lost} of {sent} datagrams (100/s)");
    assert!(lost * 10 < sent, "the UDP stream lost {lost} of {sent}");
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "idle connections after the failover");
    // B picked every connection's windows up from its segments (liberally): none of the
    // endpoints' own segments was refused, the bulk transfer's scaled windows included.
    assert_eq!(counter(&b.admin, r#"PacketsDropCount{reason="tcp-out-of-window"}"#), 0);
    assert_eq!(translated(&b.admin, &ports), before, "same external address and port at B");

    // A's natgw comes back: keepalived keeps it standby (nopreempt); it catches up by
    // bulk resync from B.
    t.stop();
    let a_ns = t.gw.clone();
    t.gateway = Some(start_node(&t, &a_ns, false, &cfg_a));
    let a = t.admin();
    assert!(wait_replica(&a, 10, secs(10)), "A caught up: {:?}", a.status().ok().and_then(|s| s.ha));
    assert_eq!(role(&a), Some(Role::Standby));
    // A is eligible again once keepalived's check of the new natgw passes (it runs every
    // second): BACKUP, out of the FAULT the kill put it in.
    eventually(secs(5), "keepalived on A to be BACKUP again", || {
        keepalived_state(&t, false).as_deref() == Some("BACKUP")
    });
    assert!(counter(&b.admin, "HaResyncs") >= 1);
    let acked = counter(&b.admin, "HaSyncAcked");
    assert!(acked > 0 && counter(&b.admin, "HaSyncSent") >= acked);

    // Failing back the way it failed over: B's natgw dies, A takes the flows back.
    let killed = Instant::now();
    natgw_e2e::process::kill(b.pid(), libc::SIGKILL);
    eventually(secs(3), "keepalived to promote A again", || role(&a) == Some(Role::Active));
    eprintln!("fail back: A active {:.1} ms after B's natgw was killed", killed.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(echo_all(&mut idle, b'c'), Vec::<String>::new(), "idle connections after failing back");
    assert_eq!(translated(&a, &ports), before, "same external endpoints after failing back");
    b.daemon.stop();
    let b = start_node(&t, &b_ns, true, &cfg_b);
    assert!(wait_replica(&b.admin, 10, secs(10)), "B rejoined as standby and caught up");

    // The connections close through A. Over both nodes' flow logs (four processes, two of
    // them killed), each connection has exactly one final record, is reported as new at
    // most once, keeps its identity, and no window is counted twice. (What a killed
    // process had reported but not yet written is lost: a gap, never a double.)
    drop(idle);
    let finals = |t: &Topology| {
        t.flow_log_at("flows-a.jsonl")
            .iter()
            .filter(|r| r.get("natgw.flow.end_reason").and_then(Value::as_str) == Some("closed"))
            .filter(|r| {
                r.get("source.port").and_then(Value::as_u64).is_some_and(|p| ports.iter().any(|q| u64::from(*q) == p))
            })
            .count()
    };
    eventually(secs(10), "A to record every connection's close", || finals(&t) == ports.len());
    let records: Vec<_> = ["flows-a.jsonl", "flows-b.jsonl"].iter().flat_map(|f| t.flow_log_at(f)).collect();
    let field = |r: &serde_json::Map<String, Value>, k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    for p in &ports {
        let mut mine: Vec<_> = records
            .iter()
            .filter(|r| field(r, "source.port") == u64::from(*p) && field(r, "destination.port") == 8081)
            .collect();
        mine.sort_by_key(|r| field(r, "natgw.flow.start"));
        let finals: Vec<_> =
            mine.iter().filter(|r| r.get("natgw.flow.end_reason").and_then(Value::as_str) != Some("active")).collect();
        assert_eq!(finals.len(), 1, "port {p}: one final record: {mine:#?}");
        // One flow: the same creation time in every record, to within what carrying an
        // age across the sync link costs (milliseconds), and the same external port.
        const SLACK_NS: u64 = 100_000_000;
        let created = field(mine[0], "natgw.flow.created");
        for r in &mine {
            assert!(field(r, "natgw.flow.created").abs_diff(created) < SLACK_NS, "port {p}: one flow: {mine:#?}");
            assert_eq!(r.get("natgw.nat.source.port"), mine[0].get("natgw.nat.source.port"), "port {p}");
        }
        let new = mine.iter().filter(|r| field(r, "natgw.flow.start") == field(r, "natgw.flow.created")).count();
        assert!(new <= 1, "port {p}: reported as new {new} times: {mine:#?}");
        for w in mine.windows(2) {
            let (end, next) = (field(w[0], "natgw.flow.end"), field(w[1], "natgw.flow.start"));
            assert!(next + SLACK_NS >= end, "port {p}: windows overlap ({end} > {next}): counted twice: {mine:#?}");
        }
        assert!(mine.len() >= 3, "port {p}: interim records from both nodes: {mine:#?}");
    }
}

#[test]
fn a_cut_sync_link_never_maps_one_external_port_twice_and_heals_to_one_owner() {
    let Pair { t, b_ns, b, .. } = Pair::with_keepalived(|_| {});
    let a = t.admin();
    // The sync link is cut (VRRP and the sync stream both) for 10 s while both nodes run:
    // each keepalived becomes master, both natgw nodes are active.
    let cut = "table inet cut {\n  chain i { type filter hook input priority 0; policy drop; }\n  \
               chain o { type filter hook output priority 0; policy drop; }\n}\n";
    let rules = t.path("cut.nft");
    std::fs::write(&rules, cut).expect("cut.nft");
    let out = t.gw.output("nft", &["-f", &rules.display().to_string()]);
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    let cut_at = Instant::now();
    eventually(secs(5), "both nodes active (split brain)", || {
        role(&a) == Some(Role::Active) && role(&b.admin) == Some(Role::Active)
    });
    // Each inside subnet uses a different node (their announcements raced: pin them), and
    // both hosts open flows from the same 50 source ports: both nodes allocate at once.
    let a_in1 = mac_text(natgw_e2e::net::mac_of(&t.gw, "in1"));
    let b_in2 = mac_text(natgw_e2e::net::mac_of(&b_ns, "in2"));
    t.cli1.ip(&["neigh", "replace", "10.10.1.1", "lladdr", &a_in1, "dev", "br0", "nud", "permanent"]);
    t.cli2.ip(&["neigh", "replace", "10.10.2.1", "lladdr", &b_in2, "dev", "br0", "nud", "permanent"]);
    for ns in [&t.cli1, &t.cli2] {
        ns.enter(|| {
            for p in 0..50u16 {
                let s = std::net::UdpSocket::bind(("0.0.0.0", 41000 + p)).expect("bind");
                s.send_to(b"split", "203.0.113.7:7").expect("send");
            }
        });
    }
    let flows_of = |node: &natgw::admin::AdminClient| node.flows().unwrap_or_default();
    eventually(secs(5), "both nodes to hold the new flows", || {
        let has = |f: &[natgw::admin::FlowEntry], src: &str| {
            f.iter().filter(|e| e.original.starts_with(src) && e.original.contains(":41")).count() >= 50
        };
        has(&flows_of(&a), "10.10.1.10:") && has(&flows_of(&b.admin), "10.10.2.10:")
    });
    let mut owner: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (node, slice, flows) in [("A", 0, flows_of(&a)), ("B", 1, flows_of(&b.admin))] {
        for f in flows {
            let inside = f.original.split(" -> ").next().unwrap_or_default().to_string();
            let source = f.translated.split(" -> ").next().unwrap_or_default();
            let external = format!("{} {source}", f.proto);
            let port: u16 = source.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let split_flow = if node == "A" { "10.10.1.10:410" } else { "10.10.2.10:410" };
            if inside.starts_with(split_flow) {
                // A new flow of the split: from this node's slice (the lower sync address
                // takes 0), with two workers.
                assert_eq!(natgw_core::nat::node_of_port(port, 2, 2), slice, "{node}: {inside} left from {source}");
            }
            if let Some(other) = owner.insert(external.clone(), inside.clone()) {
                assert_eq!(other, inside, "{external} maps to {other} and (at {node}) to {inside}");
            }
        }
    }
    std::thread::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed()));

    // The link heals: keepalived keeps A (higher priority) master and B steps down; within
    // a few seconds every flow has one owner: B holds none, its replica is A's table.
    let healed = Instant::now();
    let out = t.gw.output("nft", &["delete", "table", "inet", "cut"]);
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    eventually(secs(5), "A active and B standby again", || {
        role(&a) == Some(Role::Active) && role(&b.admin) == Some(Role::Standby)
    });
    eventually(secs(5), "B to hold nothing but A's replica", || {
        let a_flows = a.status().map_or(0, |s| s.flows);
        let bs = b.admin.status().ok();
        let b_flows = bs.as_ref().map_or(u64::MAX, |s| s.flows);
        let replica = bs.and_then(|s| s.ha).map_or(0, |h| h.replica_flows);
        b_flows == 0 && a_flows > 0 && replica == a_flows
    });
    eprintln!("split brain: one owner for every flow {:.1} s after the link healed", healed.elapsed().as_secs_f64());
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

/// A TCP connection to the standby's sync address from `from` in `ns` (a forger on the
/// sync link, or a host there that is not the peer).
fn sync_connection(ns: &natgw_e2e::Netns, from: [u8; 4]) -> std::net::TcpStream {
    ns.enter(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&std::net::SocketAddr::from((from, 0)).into())?;
        s.connect(&natgw_e2e::net::sa(natgw_e2e::ha::SYNC_B).into())?;
        Ok::<_, std::io::Error>(std::net::TcpStream::from(s))
    })
    .unwrap_or_else(|e| panic!("connect to the sync link from {from:?}: {e}"))
}

/// Sends `bytes` (then closes) and waits until the standby has closed its end.
fn send_and_wait_closed(mut s: std::net::TcpStream, bytes: &[u8]) {
    use std::io::{Read, Write};
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    s.set_read_timeout(Some(secs(5))).expect("timeout");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn garbage_on_the_sync_link_is_refused_counted_and_never_held() {
    let mut t = Topology::network();
    let b_ns = wire_pair(&mut t);
    // B alone, a standby listening on the sync link; A's namespace plays the forger, from
    // A's own address and from another one on the link.
    let b = start_b(&t, &b_ns, &node_config(&t, true), 0);
    t.gw.ip(&["addr", "add", "10.99.0.3/24", "dev", "sync0"]);
    let count = |reason: &str| counter(&b.admin, &format!(r#"HaSyncRejected{{reason="{reason}"}}"#));
    let rss_before = rss_kib(b.pid());

    // Not the peer's address: closed unread, counted.
    send_and_wait_closed(sync_connection(&t.gw, [10, 99, 0, 3]), b"hello?");
    eventually(secs(5), "a stranger counted", || count("peer") >= 1);
    // From the peer's address: random bytes (no valid HMAC), a frame that claims 100 MB
    // (refused before it is read: never allocated), a frame cut off by a close, and a
    // hello with the right key from a natgw of a future sync format.
    let mut x = 0x1234_5678_9abc_def0u64;
    let junk: Vec<u8> = std::iter::once([0u8, 0, 0, 40])
        .flatten()
        .chain((0..40).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_be_bytes()[0]
        }))
        .collect();
    send_and_wait_closed(sync_connection(&t.gw, [10, 99, 0, 1]), &junk);
    eventually(secs(5), "forged bytes counted", || count("auth") >= 1);
    send_and_wait_closed(sync_connection(&t.gw, [10, 99, 0, 1]), &(100u32 << 20).to_be_bytes());
    send_and_wait_closed(sync_connection(&t.gw, [10, 99, 0, 1]), &[0, 0, 0, 200, 1, 2, 3]);
    let future = natgw::ha::Hello { version: 9, workers: 2, fingerprint: 0, nonce: [7; 16] };
    let hello = natgw::ha::seal_hello(natgw_e2e::ha::KEY.as_bytes(), natgw::ha::End::Dialer, &future);
    send_and_wait_closed(sync_connection(&t.gw, [10, 99, 0, 1]), &hello);
    eventually(secs(5), "a long, a cut and a future frame counted", || count("format") >= 3);
    let s = b.admin.status().expect("B answers").ha.expect("ha status");
    assert!(!s.connected && s.replica_flows == 0, "nothing was held: {s:?}");
    assert!(s.last_error.contains("sync format 9 on the peer"), "{s:?}");
    let grew = rss_kib(b.pid()).saturating_sub(rss_before);
    assert!(grew < 16 << 10, "B grew by {grew} KiB for garbage");

    // The real peer then pairs at once: A, active, resyncs its flows to B.
    let cfg_a = node_config(&t, false);
    t.start(&cfg_a);
    t.admin().ha(true).expect("promote A");
    t.cli1.run("curl", &["-s", "-m", "5", "-o", "/dev/null", "http://203.0.113.80/ip"]).expect("through A");
    assert!(wait_replica(&b.admin, 1, secs(10)), "B took A's flows after the garbage");
    assert!(counter(&b.admin, "HaResyncs") >= 1, "a bulk resync");
}

#[test]
fn a_frozen_active_natgw_fails_the_check_and_the_standby_takes_over() {
    // A natgw that lives on but works no more (SIGSTOP: a hung process): the watcher's
    // connection stays (the process is there), but its checks (`natgw ha check`) fail.
    let Pair { mut t, b, .. } = Pair::with_keepalived(|_| {});
    let a = t.admin();
    start_tcp_echo(&mut t, 8081);
    let mut idle: Vec<TcpStream> = idle_connections(&t.cli1, 8081, 3);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    assert!(wait_replica(&b.admin, 3, secs(5)));
    let pid = t.gateway().pid();
    natgw_e2e::process::kill(pid, libc::SIGSTOP);
    let frozen = Instant::now();
    eventually(secs(8), "keepalived to promote B over the frozen A", || role(&b.admin) == Some(Role::Active));
    eprintln!("a frozen active: B active {:.1} s after SIGSTOP", frozen.elapsed().as_secs_f64());
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "the connections carry on through B");
    assert_eq!(
        std::fs::read_to_string(t.path("ha-up-a")).unwrap_or_default().trim(),
        "1",
        "the watcher saw it not work"
    );
    // A thaws: keepalived demotes it (B keeps the role: nopreempt), it resyncs from B, and
    // nothing breaks.
    natgw_e2e::process::kill(pid, libc::SIGCONT);
    eventually(secs(8), "the thawed A to be demoted", || role(&a) == Some(Role::Standby));
    eventually(secs(5), "the watcher to see A work again", || {
        std::fs::read_to_string(t.path("ha-up-a")).unwrap_or_default().trim() == "0"
    });
    assert!(wait_replica(&a, 3, secs(10)), "A caught up from B");
    assert_eq!(role(&b.admin), Some(Role::Active));
    assert_eq!(echo_all(&mut idle, b'c'), Vec::<String>::new());
}

#[test]
fn an_upgrade_in_a_pair_keeps_each_role_and_fails_nothing_over() {
    let Pair { mut t, b, .. } = Pair::with_keepalived(|_| {});
    let a = t.admin();
    start_tcp_echo(&mut t, 8081);
    let mut idle: Vec<TcpStream> = idle_connections(&t.cli1, 8081, 3);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    assert!(wait_replica(&b.admin, 3, secs(5)));
    // The active and then the standby upgrade: each keeps its role, keepalived sees no
    // fault (the watcher finds the successor), and B never takes over.
    let r = t.upgrade(&natgw_e2e::natgw_bin()).expect("upgrade A");
    assert!(r.flows >= 3, "{r:?}");
    assert_eq!(role(&a), Some(Role::Active));
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "through A's successor");
    let b_up = b.admin.upgrade(natgw_e2e::natgw_bin()).expect("upgrade B");
    assert_ne!(b_up.new_pid, b_up.old_pid);
    assert_eq!(role(&b.admin), Some(Role::Standby), "the standby's successor stays standby");
    assert!(wait_replica(&b.admin, 3, secs(10)), "B's successor resynced from A");
    // What must not happen (a failover) gets half a second to happen: keepalived's
    // advert interval is 100 ms and its fault timer 3 of them.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(role(&a), Some(Role::Active), "no failover");
    assert!(!b.daemon.log_text().contains("promoted to active"), "B was never promoted");
    assert_eq!(std::fs::read_to_string(t.path("ha-up-a")).unwrap_or_default().trim(), "0");
    assert_eq!(echo_all(&mut idle, b'c'), Vec::<String>::new());
}

#[test]
fn an_ha_section_naming_a_missing_interface_or_an_address_not_owned_stops_the_start() {
    let mut t = Topology::network();
    let b_ns = wire_pair(&mut t);
    // An address B has, but on another interface than the sync link.
    b_ns.ip(&["addr", "add", "10.99.1.5/32", "dev", "lo"]);
    for (key, value, expect) in [
        ("ha.interface", "nosuch0", "ha.interface = \"nosuch0\""),
        ("ha.address", "10.99.0.9:7801", "ha.address = 10.99.0.9:7801"),
        ("ha.address", "10.99.1.5:7801", "ha.address = 10.99.1.5:7801: not an address of ha.interface = \"sync0\""),
    ] {
        let mut cfg = node_config(&t, true);
        cfg.set(key, value);
        let path = cfg.write(&t.path("bad-ha.toml"));
        let out = b_ns.cmd(natgw_e2e::natgw_bin()).arg("run").arg("--config").arg(&path).output().expect("natgw runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} = {value}: natgw started");
        assert!(err.contains(expect), "{key} = {value}: {err}");
        assert!(!std::path::Path::new(&cfg.admin_socket()).exists(), "nothing left behind");
    }
}

#[test]
fn a_frozen_standby_is_counted_not_waited_for_and_catches_up_when_it_thaws() {
    let mut t = Topology::network();
    let b_ns = wire_pair(&mut t);
    let mut cfg_a = node_config(&t, false);
    // Every destination allowed: the flows below go to thousands of ports.
    cfg_a.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
    let mut cfg_b = node_config(&t, true);
    cfg_b.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
    t.start(&cfg_a);
    let a = t.admin();
    a.ha(true).expect("promote A");
    let b = start_b(&t, &b_ns, &cfg_b, 0);
    assert!(wait_replica(&b.admin, 0, secs(10)), "B connected");
    let link_up = |n: &natgw::admin::AdminClient| n.status().ok().and_then(|s| s.ha).is_some_and(|h| h.connected);

    // B stops reading (SIGSTOP: a standby swapping, a stuck box) while A creates 40 000
    // flows, megabytes of events.
    natgw_e2e::process::kill(b.pid(), libc::SIGSTOP);
    let made = Instant::now();
    t.cli1.enter(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
        for i in 0..40_000u32 {
            let _ = s.send_to(b"x", format!("203.0.113.7:{}", 1024 + i % 40_000).as_str());
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    // A forwards on, never waiting for its standby: its table fills and an echo answers.
    eventually(secs(20), "A to hold the flows", || counter(&a, "ActiveConnectionCount") >= 40_000);
    let (sent, lost) = udp_stream(&t.cli2, 1).join().expect("udp");
    assert_eq!(lost, 0, "A answered every echo while its standby was frozen ({sent} sent)");
    eprintln!("A held 40 000 flows {:.1} s after the first, B frozen", made.elapsed().as_secs_f64());
    // The standby's lag is counted (events sent and not acknowledged, or lost to a full
    // queue), and the link is given up once nothing came back for its timeout (3 s).
    let mut lag = 0;
    eventually(secs(10), "A to give the link up", || {
        lag = lag.max(counter(&a, "HaSyncLagEvents"));
        !link_up(&a)
    });
    let overflow = counter(&a, "HaSyncOverflow");
    assert!(lag > 0 || overflow > 0, "A counted its frozen standby's lag");
    eprintln!("A: standby lag up to {lag} events, HaSyncOverflow {overflow}");
    let resyncs = counter(&a, "HaResyncs");
    natgw_e2e::process::kill(b.pid(), libc::SIGCONT);
    // Thawed, B catches up by bulk resync: every flow A holds.
    let table = counter(&a, "ActiveConnectionCount");
    assert!(
        wait_replica(&b.admin, table, secs(30)),
        "B holds {:?} of {table}",
        b.admin.status().ok().and_then(|s| s.ha)
    );
    assert!(counter(&a, "HaResyncs") > resyncs, "the thawed standby got a bulk resync");
}
