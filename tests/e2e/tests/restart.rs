//! natgw as a systemd service (a real systemd as PID 1 of its own namespaces, the shipped
//! unit): `systemctl restart` and a `kill -9` of the gateway keep every connection, the
//! flow journal and the packet sockets passing through systemd's file-descriptor store,
//! on both receive paths (with receive rings, the rings stay with their stored sockets).

use std::time::Instant;

use natgw::admin::AdminClient;
use natgw_e2e::load::{echo_all, idle_connections, start_tcp_echo, udp_stream};
use natgw_e2e::systemd::{natgw_unit, Manager};
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, natgw_bin, Topology};

fn log_has(log: &std::path::Path, from: usize, text: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().get(from..).is_some_and(|l| l.contains(text))
}

fn stat(admin: &AdminClient, name: &str) -> u64 {
    admin.stats().map(|s| s.get(name)).unwrap_or(0)
}

/// `natgw status`'s packet path of every link.
fn paths(admin: &AdminClient) -> Vec<String> {
    let s = admin.status().expect("status");
    s.inside.iter().chain(std::iter::once(&s.outside)).map(|l| l.packet_path.clone()).collect()
}

#[test]
fn a_restart_and_a_crash_under_systemd_keep_every_connection() {
    restart_and_crash_keep_every_connection("socket");
}

#[test]
fn a_restart_and_a_crash_under_systemd_keep_every_connection_with_receive_rings() {
    restart_and_crash_keep_every_connection("ring");
}

fn restart_and_crash_keep_every_connection(receive: &str) {
    let rings = receive == "ring";
    let mut t = Topology::network();
    start_tcp_echo(&mut t, 8081);
    let mut cfg = t.demo_config();
    cfg.set("dataplane.receive", receive);
    let config = cfg.write(&t.path("natgw-systemd.toml"));
    let log = t.path("natgw.log");
    let unit = natgw_unit(&t.gw.name, &natgw_bin(), &config, &log);
    let dir = t.path("systemd");
    std::fs::create_dir_all(&dir).expect("dir");
    let m = Manager::boot(&dir, &[("natgw.service", unit)]);
    // Type=notify: `start` returns once natgw said READY=1 (its data plane is up).
    m.run(&["start", "natgw.service"]);
    let admin = AdminClient::new(cfg.admin_socket());
    eventually(secs(5), "the first flow journal to be whole", || log_has(&log, 0, "written whole"));
    let ring_paths =
        |admin: &AdminClient| paths(admin).iter().all(|p| p.starts_with("af_packet (TPACKET_V2 receive ring"));
    assert_eq!(ring_paths(&admin), rings, "{:?}", paths(&admin));

    let mut idle = idle_connections(&t.cli1, 8081, 10);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    let stored: u64 = m.show("natgw.service", "NFileDescriptorStore").parse().expect("a count");
    // The journal and a packet socket per worker and interface (2 workers here, 3 links).
    assert!(stored > 3, "{stored} descriptors in systemd's store");
    // The shipped sandbox holds: three capabilities (CAP_NET_ADMIN 12, CAP_NET_RAW 13,
    // CAP_IPC_LOCK 14) and no way to gain more.
    let pid = m.pids("natgw.service")[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
    assert_eq!(field("CapBnd:"), "0000000000007000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");

    for (round, (how, byte)) in [("systemctl restart", b'b'), ("kill -9", b'c')].into_iter().enumerate() {
        let udp = udp_stream(&t.cli2, 4);
        udp.wait_echoed(50);
        let before = std::fs::read_to_string(t.path("natgw.log")).unwrap_or_default().len();
        let pids = m.pids("natgw.service");
        let began = Instant::now();
        if round == 0 {
            m.run(&["restart", "natgw.service"]);
        } else {
            assert_eq!(pids.len(), 1, "{pids:?}");
            natgw_e2e::process::kill(pids[0], libc::SIGKILL);
            eventually(secs(10), "systemd to restart natgw", || {
                m.show("natgw.service", "NRestarts") == "1" && m.show("natgw.service", "ActiveState") == "active"
            });
        }
        eventually(secs(10), "the new natgw to answer", || admin.stats().is_ok());
        let back = began.elapsed();
        let ring_frames_at_start = stat(&admin, "ReceiveRingFrames");
        assert_ne!(m.pids("natgw.service"), pids, "a new process");
        // The stored sockets come back with their rings, which the new process reads.
        assert_eq!(ring_paths(&admin), rings, "{how}: {:?}", paths(&admin));
        let restored = stat(&admin, "JournalFlowsRestored");
        assert!(restored >= 10, "{how}: {restored} flows restored from the journal\n{}", t.log());
        // Every idle connection still echoes, through the same translation.
        assert_eq!(echo_all(&mut idle, byte), Vec::<String>::new(), "{how}");
        let (sent, lost) = udp.join().expect("udp stream");
        // The rest of the UDP stream came through the new process's rings.
        let from_slots = stat(&admin, "ReceiveRingFrames").saturating_sub(ring_frames_at_start);
        assert_eq!(from_slots > 0, rings, "{how}: {from_slots} frames from ring slots after the restart");
        for l in std::fs::read_to_string(&log).unwrap_or_default()[before..].lines() {
            if l.contains("after start") {
                eprintln!("  {l}");
            }
        }
        eprintln!(
            "{how} ({receive}): natgw back {:.0} ms after the command; {restored} flows restored; UDP {lost}/{sent} lost",
            back.as_secs_f64() * 1000.0
        );
        // The stored sockets queue what arrives while no natgw runs: a restart loses
        // nothing; a killed natgw at most what it had read and not yet sent.
        let most = if round == 0 { 0 } else { 5 };
        assert!(lost <= most, "{how}: {lost} of {sent} datagrams lost");
        eventually(secs(5), "the new process's journal to be whole", || log_has(&log, before, "written whole"));
    }
    m.run(&["stop", "natgw.service"]);
}
