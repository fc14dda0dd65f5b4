//! `dataplane.receive = "ring"`: each packet socket reads a PACKET_MMAP receive ring. What
//! a user relies on is the same as with sockets: bulk TCP passes whole (GSO super-frames,
//! too large for a 2 KiB slot, are queued whole on the socket and come by `recv`), UDP and
//! many flows pass on both workers, and an upgrade hands the sockets over with their rings
//! and the frames queued in them, resetting nothing.

use std::net::TcpStream;

use natgw_e2e::load::{
    echo_all, idle_connections, idle_flows, start_iperf3_server, start_tcp_echo, udp_flows, udp_stream,
};
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, natgw_bin, Topology};
use serde_json::Value;

fn paths(t: &Topology) -> Vec<String> {
    let s = t.admin().status().expect("status");
    s.inside.iter().chain(std::iter::once(&s.outside)).map(|l| l.packet_path.clone()).collect()
}

fn all_rings(t: &Topology) -> bool {
    paths(t).iter().all(|p| p.starts_with("af_packet (TPACKET_V2 receive ring") && !p.contains(" on "))
}

/// iperf3 for `seconds` through natgw; its receiver's rate, Mbit/s.
fn iperf(t: &Topology, seconds: &str) -> f64 {
    let out =
        t.cli1.cmd("iperf3").args(["-c", "203.0.113.80", "-p", "5201", "-t", seconds, "-J"]).output().expect("iperf3");
    let j: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    assert!(j.get("error").is_none(), "iperf3: {}", j["error"]);
    assert!(out.status.success(), "iperf3 exited {:?}", out.status.code());
    j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
}

#[test]
fn receive_rings_carry_bulk_tcp_udp_and_many_flows_and_pass_to_a_successor() {
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("dataplane.receive", "ring");
    cfg.set("dataplane.workers", 2i64);
    // Thousands of flows from one host to any port: no per-source cap, no egress policy.
    cfg.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
    t.start(&cfg);
    assert!(all_rings(&t), "every link reads a ring on both workers: {:?}", paths(&t));
    assert!(!t.log().contains("no receive ring"), "{}", t.log());

    start_tcp_echo(&mut t, 8081);
    start_iperf3_server(&mut t);
    let mut idle: Vec<TcpStream> = idle_connections(&t.cli1, 8081, 10);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    let ports: Vec<u16> = idle.iter().map(|s| s.local_addr().expect("local").port()).collect();
    let translated_of = |t: &Topology| {
        let flows = t.admin().flows().expect("flows");
        idle_flows(&flows, &ports, 8081).into_iter().map(|f| f.map(|f| f.translated.clone())).collect::<Vec<_>>()
    };
    let before = translated_of(&t);
    assert!(before.iter().all(Option::is_some), "every idle connection has a flow: {before:?}");

    // Bulk TCP: the senders' GSO super-frames (up to 64 KiB) come whole by the socket. Were
    // they cut to a slot, every one would be dropped as truncated and the transfer would
    // crawl.
    let mbit = iperf(&t, "2");
    eprintln!("iperf3 through receive rings: {mbit:.0} Mbit/s");
    assert!(mbit > 500.0, "bulk TCP through the rings: {mbit:.0} Mbit/s");
    assert_eq!(t.counter(r#"PacketsDropCount{reason="truncated"}"#), 0);
    assert_eq!(t.counter(r#"PacketsDropCount{reason="tcp-out-of-window"}"#), 0);
    // Both ways were taken: the ACKs and small segments from the slots, the super-frames
    // (too large for a 2 KiB slot) whole from the socket.
    let (slots, queued) = (t.counter("ReceiveRingFrames"), t.counter("ReceiveRingFramesQueued"));
    eprintln!("{slots} frames read from ring slots, {queued} too large for a slot came by the socket");
    assert!(slots > 10_000 && queued > 10_000, "{slots} from slots, {queued} queued");

    // Frames of a protocol natgw does not translate (SCTP here, 50 of them) never reach a
    // ring: the socket filter drops them in the kernel (an SCTP super-frame would stop a
    // ring for good). Through sockets, natgw counts each as unsupported-protocol.
    t.cli1.enter(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(132)))
            .expect("raw SCTP socket");
        let to: std::net::SocketAddr = "203.0.113.80:0".parse().expect("address");
        for _ in 0..50 {
            s.send_to(&[0u8; 32], &to.into()).expect("send");
        }
    });
    let udp = udp_stream(&t.cli2, 1);
    udp.wait_echoed(50);
    let _ = udp.join();
    assert_eq!(t.counter(r#"PacketsDropCount{reason="unsupported-protocol"}"#), 0, "filtered before the ring");

    // 3000 UDP flows, spread over both workers by the fanout's steering, each answered
    // (port unreachable) back through the rings.
    udp_flows(&t.cli1, 3000);
    eventually(secs(10), "3000 UDP flows tracked", || {
        t.admin().flows().expect("flows").iter().filter(|f| f.original.contains(" -> 203.0.113.7:")).count() >= 3000
    });

    // An upgrade under a UDP stream and a transfer: the successor maps the same rings.
    let udp = udp_stream(&t.cli2, 5);
    udp.wait_echoed(50);
    let cli1 = t.cli1.clone();
    let transfer = std::thread::spawn(move || {
        cli1.cmd("iperf3").args(["-c", "203.0.113.80", "-p", "5201", "-t", "5", "-b", "300M", "-J"]).output()
    });
    eventually(secs(5), "the transfer to start", || {
        t.admin()
            .flows()
            .expect("flows")
            .iter()
            .any(|f| f.original.ends_with("203.0.113.80:5201") && f.state == "ESTABLISHED")
    });
    let r = t.upgrade(&natgw_bin()).expect("natgw upgrade");
    eprintln!("upgrade with rings: {} flows, paused {:.1} ms", r.flows, r.pause_us as f64 / 1000.0);
    assert_eq!(r.flows_refused, 0);
    assert!(all_rings(&t), "the successor reads the handed-over rings: {:?}", paths(&t));
    let out = transfer.join().expect("iperf3 thread").expect("iperf3 runs");
    let j: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    assert!(j.get("error").is_none() && out.status.success(), "the transfer across the upgrade: {}", j["error"]);
    let (sent, lost) = udp.join().expect("udp stream");
    eprintln!("UDP echo lost {lost} of {sent} datagrams across the upgrade");
    assert!(lost * 10 < sent, "the UDP stream lost {lost} of {sent}: more than a pause");
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "idle connections after the upgrade");
    assert_eq!(translated_of(&t), before, "same external address and port");

    // The operator turns rings off and upgrades again: the handed-over sockets keep their
    // rings (the process before might still have had to read them), and say so.
    for entry in std::fs::read_dir(t.path("")).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("natgw-") && name.ends_with(".toml") {
            let text = std::fs::read_to_string(entry.path()).expect("config");
            std::fs::write(entry.path(), text.replace("receive = \"ring\"", "receive = \"socket\"")).expect("config");
        }
    }
    t.upgrade(&natgw_bin()).expect("a second upgrade");
    assert!(all_rings(&t), "{:?}", paths(&t));
    assert!(t.log().contains("receive by ring as before"), "{}", t.log());
    // Each successor found where its predecessor stopped reading from the slots alone:
    // no reader had to be moved to frames it missed.
    assert!(!t.log().contains("re-synchronised"), "{}", t.log());
    assert_eq!(echo_all(&mut idle, b'c'), Vec::<String>::new(), "idle connections after the second upgrade");
    let mbit = iperf(&t, "1");
    assert!(mbit > 500.0, "bulk TCP after two upgrades: {mbit:.0} Mbit/s");
    assert_eq!(t.counter(r#"PacketsDropCount{reason="tcp-out-of-window"}"#), 0);
    drop(idle);
}

/// The kernel refuses every receive ring (a seccomp filter makes `setsockopt(SOL_PACKET,
/// PACKET_RX_RING)` fail with EPERM, as a container runtime's filter would): natgw starts
/// anyway, each socket receiving by `recv`, says so in one log line that names the
/// refused option, shows the socket path in `natgw status`, and forwards.
#[test]
fn receive_rings_the_kernel_refuses_fall_back_to_sockets_with_one_log_line() {
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("dataplane.receive", "ring");
    cfg.set("dataplane.workers", 2i64);
    t.start_wrapped(std::path::Path::new(env!("CARGO_BIN_EXE_refuse_packet_rings")), &cfg);

    let log = t.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("no receive ring")).collect();
    assert_eq!(lines.len(), 1, "one log line for every refused ring: {log}");
    // Each link on each worker (two inside links and the outside one, two workers) is named
    // with the option the kernel refused and its reason.
    for link in ["in1", "in2", "out0"] {
        for w in 0..2 {
            assert!(lines[0].contains(&format!("{link} (worker {w}): setsockopt(PACKET_RX_RING)")), "{}", lines[0]);
        }
    }
    assert!(lines[0].contains("Operation not permitted"), "{}", lines[0]);
    assert!(
        paths(&t).iter().all(|p| p.starts_with("af_packet (io_uring multishot recv")),
        "every link receives by socket: {:?}",
        paths(&t)
    );

    // Traffic passes both ways: TCP through a connection, UDP through the echo, and a
    // short bulk transfer (GSO super-frames by the socket path).
    start_tcp_echo(&mut t, 8081);
    start_iperf3_server(&mut t);
    let mut idle: Vec<TcpStream> = idle_connections(&t.cli1, 8081, 4);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    let udp = udp_stream(&t.cli2, 1);
    udp.wait_echoed(50);
    let (sent, lost) = udp.join().expect("udp stream");
    assert!(lost * 10 < sent, "the UDP stream lost {lost} of {sent}");
    let mbit = iperf(&t, "1");
    assert!(mbit > 500.0, "bulk TCP by sockets: {mbit:.0} Mbit/s");
    assert_eq!(t.counter("ReceiveRingFrames"), 0, "no frame came from a ring");
}
