//! A worker that stops reading while frames keep arriving (SIGSTOP: a stall, a box swapping):
//! the kernel drops what no longer fits the socket's 8 MiB queue or the ring's 2048 slots,
//! and natgw counts every such frame as `rx-queue-full` once it runs again (the kernel's
//! count, read every 100 ms), on both receive paths: every datagram sent is either
//! forwarded or counted, none lost unseen. Established connections carry on.

use std::net::UdpSocket;
use std::time::Duration;

use natgw_e2e::load::{echo_all, idle_connections, start_tcp_echo};
use natgw_e2e::net::udp_exchange;
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, Topology};

const QUEUE_FULL: &str = r#"PacketsDropCount{reason="rx-queue-full"}"#;
const IN_FROM_SOURCE: &str = "PacketsInFromSource";

/// Datagrams sent while natgw is stopped: far more than either path holds.
const SENT: u64 = 40_000;

/// One flow (all to one worker's socket); paced so that the sender's own backlog (1 000
/// frames a CPU) never overflows before the frames reach natgw's socket.
fn flood(t: &Topology) {
    t.cli1.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        for i in 0..SENT {
            let _ = s.send_to(b"0123456789abcdef", "203.0.113.7:9");
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    });
}

fn stalled_natgw_counts_what_its_full_queue_dropped(receive: &str) -> u64 {
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("dataplane.receive", receive);
    cfg.set("dataplane.workers", 2i64);
    cfg.set("nat.max_flows_per_source", 0i64).remove("policy.egress");
    t.start(&cfg);
    start_tcp_echo(&mut t, 8081);
    let mut idle = idle_connections(&t.cli1, 8081, 3);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    assert_eq!(t.counter(QUEUE_FULL), 0, "nothing dropped before the stall");
    let received_before = t.counter(IN_FROM_SOURCE);

    let pid = t.gateway().pid();
    natgw_e2e::process::kill(pid, libc::SIGSTOP);
    flood(&t);
    natgw_e2e::process::kill(pid, libc::SIGCONT);

    // natgw reads the kernel's drop count every 100 ms, and forwards what its queue held:
    // each datagram is one or the other (the idle connections send nothing meanwhile).
    let accounted = || {
        let (dropped, forwarded) = (t.counter(QUEUE_FULL), t.counter(IN_FROM_SOURCE) - received_before);
        (dropped, forwarded, dropped + forwarded)
    };
    eventually(secs(5), "every datagram forwarded or counted as rx-queue-full", || accounted().2 == SENT);
    let (dropped, forwarded, _) = accounted();
    eprintln!("{receive}: of {SENT} datagrams sent while natgw was stopped, {forwarded} forwarded and {dropped} dropped and counted as rx-queue-full");
    assert!(dropped > 0, "the queue held all {SENT}");
    // Established connections carry on, and the UDP echo answers through natgw again.
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "established connections after the stall");
    let answered = t.cli1.enter(|| {
        (0..5).any(|_| {
            udp_exchange(0, "203.0.113.7:7", b"after", Duration::from_millis(500)).is_ok_and(|r| r == b"after")
        })
    });
    assert!(answered, "the UDP echo answers through natgw after the stall");
    dropped
}

#[test]
fn a_stalled_socket_path_counts_the_frames_its_full_queue_dropped() {
    // The socket's queue (8 MiB, each small frame a few hundred bytes as the kernel counts
    // them) holds about 20 000 of them: the rest are dropped and counted.
    let dropped = stalled_natgw_counts_what_its_full_queue_dropped("socket");
    assert!(dropped >= SENT / 4, "{dropped} of {SENT} counted");
}

#[test]
fn a_stalled_receive_ring_counts_the_frames_its_full_ring_dropped() {
    // A ring holds 2048 frames: every datagram past them is dropped and counted.
    let dropped = stalled_natgw_counts_what_its_full_queue_dropped("ring");
    assert_eq!(dropped, SENT - 2048, "a ring holds 2048 frames");
}
