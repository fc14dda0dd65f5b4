//! A simulated network: inside hosts and outside servers joined by in-memory links through
//! one translator, with a fake clock. It checks what only time shows: TCP state changes,
//! per-state idle timeouts, expiry without a table scan on the fast path, and port reuse.

// Test code: literal sizes and results that must be there.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;

use natgw_core::conntrack::{Egress, FlowState, Side, TcpState, Timeouts};
use natgw_core::counters::{Counter, Counters};
use natgw_core::nat::{FrameMeta, NatConfig, Translator, Verdict};
use natgw_testkit::*;
use natgw_wire::tcp;

/// One TCP connection through the gateway and the next sequence number of each end.
struct Conn {
    host: &'static str,
    port: u16,
    ext: u16,
    client: u32,
    server: u32,
}

/// Two links (inside, outside) and the gateway between them; time moves only when told.
struct SimNet {
    gw: Translator,
    now_ms: u64,
    /// Frames delivered to the outside link / the inside link, in order.
    outside_rx: VecDeque<Vec<u8>>,
    inside_rx: VecDeque<Vec<u8>>,
}

impl SimNet {
    fn new(timeouts: Timeouts) -> SimNet {
        SimNet::with_config(|cfg| cfg.timeouts = timeouts)
    }

    /// The demo gateway (100 000 flows) with changes.
    fn with_config(change: impl FnOnce(&mut NatConfig)) -> SimNet {
        let mut cfg = demo_config();
        cfg.max_flows = 100_000;
        cfg.high_water_flows = 100_000;
        change(&mut cfg);
        SimNet {
            gw: Translator::new(cfg, Arc::new(Counters::default()), 0),
            now_ms: 0,
            outside_rx: VecDeque::new(),
            inside_rx: VecDeque::new(),
        }
    }

    fn send(&mut self, side: Side, mut frame: Vec<u8>) -> bool {
        let mut out = [0u8; 2048];
        let link = if side == Side::Inside && frame[28] == 2 { 1 } else { 0 };
        match self.gw.process(&mut frame, FrameMeta::plain(side, link), self.now_ms, &mut out) {
            Verdict::Forward { egress: Egress::Outside, .. } => self.outside_rx.push_back(frame),
            Verdict::Forward { egress: Egress::Inside(_), .. } => self.inside_rx.push_back(frame),
            _ => return false,
        }
        true
    }

    /// Advances the clock in one-second steps, running the gateway's timers as a worker does.
    fn advance_s(&mut self, secs: u64) {
        for _ in 0..secs {
            self.now_ms += 1000;
            self.gw.tick(self.now_ms);
        }
    }

    fn flows(&self) -> usize {
        self.gw.flows().len()
    }

    fn counter(&self, c: Counter) -> u64 {
        self.gw.counters().get(c)
    }

    /// A full TCP handshake from 10.10.1.10:`port` to 203.0.113.80:80 (client ISN 1000,
    /// server ISN 5000).
    fn connect(&mut self, port: u16) -> Conn {
        self.try_connect("10.10.1.10", port).expect("the handshake passes")
    }

    /// A full TCP handshake from `host`:`port` to 203.0.113.80:80, if it passes.
    fn try_connect(&mut self, host: &'static str, port: u16) -> Option<Conn> {
        if !self.send(Side::Inside, tcp_at(host, port, "203.0.113.80", 80, tcp::SYN, (1000, 0), 0)) {
            return None;
        }
        let syn = self.outside_rx.pop_back().unwrap();
        let mut c = Conn { host, port, ext: src_of(&syn).1, client: 1001, server: 5000 };
        (self.server_sends(&mut c, tcp::SYN | tcp::ACK, 0) && self.client_sends(&mut c, tcp::ACK, 0)).then_some(c)
    }

    /// The client sends a segment with `len` bytes at its next sequence number.
    fn client_sends(&mut self, c: &mut Conn, flags: u8, len: usize) -> bool {
        let f = tcp_at(c.host, c.port, "203.0.113.80", 80, flags, (c.client, c.server), len);
        c.client = c.client.wrapping_add(len as u32 + u32::from(flags & (tcp::SYN | tcp::FIN) != 0));
        self.send(Side::Inside, f)
    }

    /// The server sends a segment with `len` bytes at its next sequence number.
    fn server_sends(&mut self, c: &mut Conn, flags: u8, len: usize) -> bool {
        let f = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, flags, (c.server, c.client), len);
        c.server = c.server.wrapping_add(len as u32 + u32::from(flags & (tcp::SYN | tcp::FIN) != 0));
        self.send(Side::Outside, f)
    }

    fn state(&self) -> Option<FlowState> {
        self.gw.flows().iter().next().map(|(_, f)| f.state)
    }
}

#[test]
fn established_tcp_lives_its_full_idle_timeout() {
    let mut net = SimNet::new(Timeouts::default());
    let mut c = net.connect(40000);
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Established)));
    assert_eq!(net.counter(Counter::ConnectionEstablishedCount), 1);
    // RFC 5382 REQ-5: at least 2 h 4 min idle.
    net.advance_s(7439);
    assert_eq!(net.flows(), 1, "still there one second before the timeout");
    // Traffic restarts the idle timer.
    assert!(net.server_sends(&mut c, tcp::ACK, 0));
    net.advance_s(7439);
    assert_eq!(net.flows(), 1);
    net.advance_s(2);
    assert_eq!(net.flows(), 0);
    assert_eq!(net.counter(Counter::IdleTimeoutCount), 1);
    assert_eq!(net.counter(Counter::ActiveConnectionCount), 0);
    // After expiry the server can no longer reach the client.
    assert!(!net.server_sends(&mut c, tcp::ACK, 0));
    assert_eq!(net.counter(Counter::DropUnsolicitedInbound), 1);
}

#[test]
fn unanswered_syn_is_transitory() {
    let mut net = SimNet::new(Timeouts::default());
    assert!(net.send(Side::Inside, tcp("10.10.1.10", 40001, "203.0.113.80", 80, tcp::SYN)));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::SynSent)));
    net.advance_s(239);
    assert_eq!(net.flows(), 1);
    net.advance_s(2);
    assert_eq!(net.flows(), 0, "RFC 5382: transitory timeout (240 s by default)");
}

#[test]
fn closed_connection_goes_through_time_wait() {
    let mut net = SimNet::new(Timeouts::default());
    let mut c = net.connect(40002);
    assert!(net.client_sends(&mut c, tcp::FIN | tcp::ACK, 0));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::FinWait)));
    assert!(net.server_sends(&mut c, tcp::FIN | tcp::ACK, 0));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::TimeWait)));
    // The last ACK still passes.
    assert!(net.client_sends(&mut c, tcp::ACK, 0));
    net.advance_s(241);
    assert_eq!(net.flows(), 0);
    assert_eq!(net.counter(Counter::IdleTimeoutCount), 0, "a closed connection is not an idle timeout");
    // The port is free again and the same host gets it back (port preservation).
    assert_eq!(net.connect(40002).ext, 40002);
}

#[test]
fn udp_and_icmp_timeouts_are_configurable() {
    let mut net = SimNet::new(Timeouts { udp: 30, icmp: 5, ..Timeouts::default() });
    assert!(net.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.7", 7, b"q")));
    assert!(net.send(Side::Inside, ping("10.10.1.10", "203.0.113.80", 8, 99)));
    net.advance_s(6);
    assert_eq!(net.flows(), 1, "ICMP gone after 5 s, UDP still there");
    net.advance_s(25);
    assert_eq!(net.flows(), 0);
    assert_eq!(net.counter(Counter::IdleTimeoutCount), 2);
}

#[test]
fn udp_default_is_rfc4787_five_minutes() {
    let mut net = SimNet::new(Timeouts::default());
    assert!(net.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.7", 7, b"q")));
    net.advance_s(299);
    assert!(net.send(Side::Outside, udp("203.0.113.7", 7, "198.51.100.10", 5353, b"a")), "reply within 300 s passes");
    assert_eq!(net.inside_rx.len(), 1);
    net.advance_s(301);
    assert!(!net.send(Side::Outside, udp("203.0.113.7", 7, "198.51.100.10", 5353, b"late")));
}

#[test]
fn ten_thousand_flows_expire_and_free_their_ports() {
    let mut net = SimNet::new(Timeouts { udp: 60, ..Timeouts::default() });
    for i in 0..10_000u16 {
        let host = format!("10.10.1.{}", 10 + (i % 200));
        assert!(net.send(Side::Inside, udp(&host, 20_000 + i, "203.0.113.7", 7, b"x")));
        if i % 1000 == 999 {
            net.advance_s(1);
        }
    }
    assert_eq!(net.flows(), 10_000);
    // Now t = 10 s; batches were sent at t = 0..9 s. At t = 64 s those of t <= 4 s are due.
    net.advance_s(54);
    assert_eq!(net.flows(), 10_000 - 5_000, "the first half is gone, the second is not");
    net.advance_s(6);
    assert_eq!(net.flows(), 0);
    assert_eq!(net.gw.mappings().len(), 0);
}

#[test]
fn clock_jumps_do_not_lose_expiry() {
    let mut net = SimNet::new(Timeouts { udp: 30, ..Timeouts::default() });
    assert!(net.send(Side::Inside, udp("10.10.1.10", 1, "203.0.113.7", 7, b"x")));
    // A worker that was descheduled for a long time ticks once, much later.
    net.now_ms += 10_000_000;
    net.gw.tick(net.now_ms);
    assert_eq!(net.flows(), 0);
    let _ = Ipv4Addr::UNSPECIFIED;
}

#[test]
fn sixty_four_thousand_connections_to_one_destination_on_one_address() {
    let mut net = SimNet::new(Timeouts::default());
    let mut ext_ports = std::collections::HashSet::new();
    // 64 000 inside endpoints (hosts .10-.19, many ports each) to one web server.
    for i in 0..64_000u32 {
        let host = format!("10.10.1.{}", 10 + i / 6_400);
        let port = 1024 + (i % 6_400) as u16 * 9;
        assert!(net.send(Side::Inside, tcp(&host, port, "203.0.113.80", 80, tcp::SYN)), "connection {i} refused");
        let syn = net.outside_rx.pop_back().unwrap();
        assert_eq!(src_of(&syn).0, Ipv4Addr::new(198, 51, 100, 10));
        ext_ports.insert(src_of(&syn).1);
    }
    assert_eq!(ext_ports.len(), 64_000, "every connection has its own external port");
    assert_eq!(net.counter(Counter::ErrorPortAllocation), 0);
    // The 64 513th distinct endpoint finds the single address's ports exhausted.
    let mut refused = 0;
    for p in 0..600u16 {
        if !net.send(Side::Inside, tcp("10.10.1.200", 2000 + p, "203.0.113.80", 80, tcp::SYN)) {
            refused += 1;
        }
    }
    assert_eq!(refused, 600 - (64_512 - 64_000));
    assert_eq!(net.counter(Counter::ErrorPortAllocation), refused);
}

/// A connection older than every timeout but the established one, then `close`d: its
/// entry (and its external port) must go within a second of the closing state's timeout,
/// not when the established deadline it was filed under comes round.
fn old_connection_closed(close: impl FnOnce(&mut SimNet, &mut Conn), gone_after_s: u64) {
    let mut net = SimNet::new(Timeouts::default());
    let mut c = net.connect(40100);
    net.advance_s(1000);
    assert!(net.client_sends(&mut c, tcp::ACK | tcp::PSH, 100), "still established");
    net.advance_s(1000);
    close(&mut net, &mut c);
    net.advance_s(gone_after_s - 1);
    assert_eq!(net.flows(), 1, "not before its timeout");
    net.advance_s(2);
    assert_eq!(net.flows(), 0, "gone within a second of its {gone_after_s} s timeout");
    assert_eq!(net.gw.mappings().len(), 0, "and its external port is free");
    assert_eq!(net.gw.flows().wheel_entries(), 0);
}

#[test]
fn an_old_connection_that_closes_goes_at_the_time_wait_deadline() {
    old_connection_closed(
        |net, c| {
            assert!(net.client_sends(c, tcp::FIN | tcp::ACK, 0));
            assert!(net.server_sends(c, tcp::FIN | tcp::ACK, 0));
            assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::TimeWait)));
        },
        Timeouts::default().tcp_time_wait,
    );
}

#[test]
fn an_old_connection_that_is_reset_goes_at_the_closed_deadline() {
    old_connection_closed(
        |net, c| {
            assert!(net.server_sends(c, tcp::RST, 0));
            assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Closed)));
        },
        Timeouts::default().tcp_closed,
    );
}

/// Refuses every flow to port 80 once `deny` is set.
struct DenyWeb(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl natgw_core::nat::policy::FlowPolicy for DenyWeb {
    fn egress(&mut self, f: &natgw_core::nat::policy::NewFlow) -> natgw_core::nat::policy::EgressDecision {
        use natgw_core::nat::policy::EgressDecision;
        if f.dst_port == 80 && self.0.load(std::sync::atomic::Ordering::Relaxed) {
            EgressDecision::Deny
        } else {
            EgressDecision::Allow
        }
    }
    fn port_pool(&mut self, _: &natgw_core::nat::policy::NewFlow) -> natgw_core::nat::policy::PoolDecision {
        natgw_core::nat::policy::DEFAULT_POOL
    }
}

#[test]
fn an_old_connection_that_is_revoked_goes_at_the_closed_deadline() {
    let deny = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let policy = DenyWeb(deny.clone());
    old_connection_closed(
        move |net, _| {
            net.gw.set_policy(Box::new(policy));
            deny.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(net.gw.revalidate(net.now_ms), 1);
        },
        Timeouts::default().tcp_closed,
    );
}

#[test]
fn reset_and_reopen_churn_keeps_one_wheel_entry_per_flow() {
    let mut net = SimNet::new(Timeouts::default());
    net.gw.record_flow_ends(true, true, 60);
    let c = net.connect(40200);
    // The same tuple refused and tried again, again and again, over a minute and a half:
    // each SYN answered by a reset acknowledging it.
    assert!(net.send(Side::Outside, tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, tcp::RST, (c.server, 0), 0)));
    for round in 0..3000u64 {
        assert!(net.send(Side::Inside, tcp_at("10.10.1.10", 40200, "203.0.113.80", 80, tcp::SYN, (1000, 0), 0)));
        let refused = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, tcp::RST | tcp::ACK, (0, 1001), 0);
        assert!(net.send(Side::Outside, refused), "round {round}");
        if round % 33 == 0 {
            net.advance_s(1);
        }
        assert_eq!(net.gw.flows().wheel_entries(), net.flows(), "round {round}");
        assert!(net.gw.queued_record_checks() <= 2, "round {round}: {} queued checks", net.gw.queued_record_checks());
    }
    assert_eq!(net.flows(), 1);
    let mut ends = Vec::new();
    net.gw.take_flow_ends(&mut ends);
    assert!(ends.len() < 100, "{} records for one churning tuple", ends.len());
}

#[test]
fn record_queues_stay_bounded_by_the_table_under_short_flow_churn() {
    let mut net = SimNet::new(Timeouts { udp: 2, ..Timeouts::default() });
    net.gw.record_flow_ends(true, true, 60);
    // 30 000 flows that each live two seconds, far inside the 60 s interim interval.
    for i in 0..30_000u32 {
        let host = format!("10.10.1.{}", 10 + i % 200);
        assert!(net.send(Side::Inside, udp(&host, 1024 + (i / 200) as u16, "203.0.113.7", 7, b"x")));
        if i % 3000 == 2999 {
            net.advance_s(1);
        }
        assert!(
            net.gw.queued_record_checks() <= 2 * net.flows() + 1024,
            "flow {i}: {} queued checks for {} flows",
            net.gw.queued_record_checks(),
            net.flows()
        );
    }
}

#[test]
fn blind_resets_from_anywhere_in_sequence_space_do_not_kill_an_idle_connection() {
    let mut net = SimNet::new(Timeouts::default());
    let mut c = net.connect(40300);
    assert!(net.client_sends(&mut c, tcp::ACK | tcp::PSH, 200));
    assert!(net.server_sends(&mut c, tcp::ACK | tcp::PSH, 1400));
    assert!(net.client_sends(&mut c, tcp::ACK, 0));
    let delivered = net.inside_rx.len();
    // An off-path sender that knows the server's address and port and the mapping sprays
    // resets with random sequence (and acknowledgment) numbers, with and without ACK.
    let mut x = 0x2545_f491u32;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut passed = 0;
    for i in 0..100_000 {
        let flags = if i % 2 == 0 { tcp::RST } else { tcp::RST | tcp::ACK };
        let f = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, flags, (rand(), rand()), 0);
        if net.send(Side::Outside, f) {
            passed += 1;
        }
        assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Established)), "reset {i} closed it");
    }
    let dropped = net.counter(Counter::DropTcpOutOfWindow);
    eprintln!("100 000 blind resets: {dropped} dropped out of window, {passed} in window passed unchanged");
    assert_eq!(dropped + passed, 100_000);
    assert!(dropped > 99_000, "only {dropped} dropped");
    assert_eq!(net.inside_rx.len(), delivered + passed as usize);
    // Idle for an hour, then it carries data both ways as before.
    net.advance_s(3600);
    assert!(net.client_sends(&mut c, tcp::ACK | tcp::PSH, 100));
    assert!(net.server_sends(&mut c, tcp::ACK, 0));
    // The server's own reset, at the sequence the client expects next, closes it.
    assert!(net.server_sends(&mut c, tcp::RST, 0));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Closed)));
}

#[test]
fn forged_data_and_fins_outside_the_window_never_reach_the_client() {
    let mut net = SimNet::new(Timeouts::default());
    let mut c = net.connect(40301);
    let before = net.inside_rx.len();
    for (seq, ack, flags) in [
        (c.server.wrapping_add(10_000_000), c.client, tcp::ACK | tcp::PSH),
        (c.server.wrapping_sub(10_000_000), c.client, tcp::ACK | tcp::PSH),
        (c.server, c.client.wrapping_add(1_000_000), tcp::ACK),
        (c.server.wrapping_add(5_000_000), c.client, tcp::FIN | tcp::ACK),
    ] {
        let f = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, flags, (seq, ack), 500);
        assert!(!net.send(Side::Outside, f), "seq {seq} ack {ack} flags {flags:#x} passed");
    }
    assert_eq!(net.inside_rx.len(), before);
    assert_eq!(net.counter(Counter::DropTcpOutOfWindow), 4);
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Established)));
    assert!(net.server_sends(&mut c, tcp::ACK | tcp::PSH, 500), "the real server's data passes");
}

#[test]
fn a_new_syn_on_a_stale_connection_passes_so_the_endpoints_can_recover() {
    // natgw holds an established entry the client has forgotten (it rebooted) and the
    // client connects again from the same port with a new ISN: the SYN passes, unchanged
    // state, and the server's challenge ACK and the client's reset close the old entry.
    let mut net = SimNet::new(Timeouts::default());
    let mut c = net.connect(40302);
    assert!(net.send(Side::Inside, tcp_at("10.10.1.10", 40302, "203.0.113.80", 80, tcp::SYN, (777_777, 0), 0)));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Established)));
    // The server's challenge ACK (its real sequence), the client's reset answering it.
    assert!(net.server_sends(&mut c, tcp::ACK, 0));
    assert!(net.send(Side::Inside, tcp_at("10.10.1.10", 40302, "203.0.113.80", 80, tcp::RST, (c.client, 0), 0)));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::Closed)));
    // The client's SYN, retransmitted, opens the new connection.
    assert!(net.send(Side::Inside, tcp_at("10.10.1.10", 40302, "203.0.113.80", 80, tcp::SYN, (777_777, 0), 0)));
    assert_eq!(net.state(), Some(FlowState::Tcp(TcpState::SynSent)));
}

/// A deterministic scanner's next probe: UDP or a TCP SYN from `host` to a random
/// destination and port (xorshift, so every run sends the same probes).
fn scan_probe(host: &str, rng: &mut u64) -> Vec<u8> {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng;
    let dst = format!("203.0.{}.{}", 113 + (r >> 8) % 2, 1 + (r >> 16) % 250);
    let (sport, dport) = (1024 + ((r >> 24) % 60_000) as u16, 1 + ((r >> 40) % 65_000) as u16);
    if r & 1 == 0 {
        udp(host, sport, &dst, dport, b"probe")
    } else {
        tcp_at(host, sport, &dst, dport, tcp::SYN, (r as u32, 0), 0)
    }
}

#[test]
fn a_scanning_host_does_not_stop_another_subnet_from_connecting() {
    // No per-source limit: early drop alone keeps the table fair. The scanner sends 100
    // probes for every connection the other subnet opens, 40 000 in all into a table of 2000.
    let mut net = SimNet::with_config(|c| {
        c.max_flows = 2000;
        c.high_water_flows = 2000;
    });
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut conns = Vec::new();
    for i in 0..400u16 {
        for _ in 0..100 {
            net.send(Side::Inside, scan_probe("10.10.1.66", &mut rng));
        }
        let mut c = net.try_connect("10.10.2.20", 20_000 + i).unwrap_or_else(|| panic!("connection {i} refused"));
        assert!(net.client_sends(&mut c, tcp::ACK | tcp::PSH, 100), "connection {i}: data");
        conns.push(c);
        if i % 50 == 0 {
            net.advance_s(1);
        }
    }
    assert_eq!(net.counter(Counter::DropTableFull), 0, "every new flow found room");
    assert!(net.counter(Counter::EarlyDropCount) >= 38_000 - 2000, "{}", net.counter(Counter::EarlyDropCount));
    // Every connection is still there: answered flows are never given up.
    for c in &mut conns {
        assert!(net.server_sends(c, tcp::ACK | tcp::PSH, 10), "connection {} lost", c.port);
    }
    assert!(net.flows() <= 2000);
}

#[test]
fn the_per_source_limit_stops_a_scanner_before_the_table_fills() {
    let mut net = SimNet::with_config(|c| {
        c.max_flows = 2000;
        c.high_water_flows = 2000;
        c.max_flows_per_source = 500;
    });
    let mut rng = 7u64;
    for _ in 0..20_000 {
        net.send(Side::Inside, scan_probe("10.10.1.66", &mut rng));
    }
    assert_eq!(net.flows(), 500, "the scanner holds its share and no more");
    assert!(net.counter(Counter::DropSourceFlowLimit) >= 19_000);
    assert_eq!(net.counter(Counter::EarlyDropCount), 0, "the table never filled");
    // Everyone else connects, another host of the same subnet too.
    for (i, host) in ["10.10.1.10", "10.10.2.20"].into_iter().enumerate() {
        assert!(net.try_connect(host, 30_000 + i as u16).is_some(), "{host}");
    }
    // The scanner's flows time out like any (RFC 4787: 5 minutes) and its share comes back.
    net.advance_s(301);
    assert_eq!(net.flows(), 2, "the two connections");
    assert!(net.send(Side::Inside, udp("10.10.1.66", 5000, "203.0.113.7", 7, b"q")));
}

#[test]
fn the_per_source_limit_holds_for_the_gateway_over_every_worker() {
    // Four workers, each with its own table, one config (the shared counts with it): a
    // scanner's probes spread over all of them, and together they hold its limit, not
    // four times it.
    let mut cfg = demo_config();
    (cfg.workers, cfg.max_flows, cfg.high_water_flows, cfg.max_flows_per_source) = (4, 2000, 2000, 300);
    let mut workers: Vec<Translator> = (0..4)
        .map(|w| Translator::new(NatConfig { worker: w, ..cfg.clone() }, Arc::new(Counters::default()), 0))
        .collect();
    let mut rng = 7u64;
    let mut out = [0u8; 2048];
    for _ in 0..20_000 {
        let probe = scan_probe("10.10.1.66", &mut rng);
        // The worker the kernel's steering would pick (the one that does not hand it on).
        for t in &mut workers {
            let mut f = probe.clone();
            if !matches!(t.process(&mut f, FrameMeta::plain(Side::Inside, 0), 0, &mut out), Verdict::HandOff { .. }) {
                break;
            }
        }
    }
    let held: Vec<usize> = workers.iter().map(|t| t.flows().len()).collect();
    assert_eq!(held.iter().sum::<usize>(), 300, "the scanner holds its limit over the gateway: {held:?}");
    assert!(held.iter().filter(|&&n| n > 0).count() > 1, "its flows spread over the workers: {held:?}");
    let refused: u64 = workers.iter().map(|t| t.counters().get(Counter::DropSourceFlowLimit)).sum();
    assert!(refused >= 19_000, "{refused} refused");
    // Another host is not counted with it.
    let f = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"q");
    let ok = workers.iter_mut().any(|t| {
        matches!(t.process(&mut f.clone(), FrameMeta::plain(Side::Inside, 0), 0, &mut out), Verdict::Forward { .. })
    });
    assert!(ok, "another host connects");
}

#[test]
fn above_the_high_water_mark_unanswered_flows_go_after_thirty_seconds_not_before() {
    let mut net = SimNet::with_config(|c| {
        c.max_flows = 2000;
        c.high_water_flows = 1500;
    });
    let mut conn = net.connect(40000);
    let mut rng = 11u64;
    for _ in 0..1800 {
        net.send(Side::Inside, scan_probe("10.10.1.66", &mut rng));
    }
    let opened = net.flows();
    assert!(opened > 1700, "{opened}");
    net.advance_s(29);
    assert_eq!(net.flows(), opened, "younger than timeouts.unanswered_under_pressure: kept");
    net.advance_s(2);
    assert_eq!(net.flows(), 1500, "down to the high-water mark, oldest first");
    assert_eq!(net.counter(Counter::EarlyDropCount), opened as u64 - 1500);
    assert!(net.server_sends(&mut conn, tcp::ACK, 0), "the answered connection stays");
    // Below the mark the floors hold: the remaining unanswered UDP flows and SYNs live
    // their full timeouts (RFC 4787 and RFC 5382: 5 and 4 minutes).
    net.advance_s(200);
    assert_eq!(net.flows(), 1500);
    net.advance_s(100);
    assert_eq!(net.flows(), 1, "the connection");
}

/// The gateway's flows handed to a new translator (as `natgw upgrade` does between two
/// processes): exported at this network's now, imported into a translator whose clock
/// reads `new_now_ms`.
fn hand_over(old: &SimNet, new_now_ms: u64, change: impl FnOnce(&mut NatConfig)) -> (SimNet, Vec<u8>) {
    let mut state = Vec::new();
    old.gw.export_state(old.now_ms, &mut state);
    let mut new = SimNet::with_config(change);
    new.now_ms = new_now_ms;
    new.gw = Translator::new(new.gw.config().clone(), Arc::new(Counters::default()), new_now_ms);
    let report = new.gw.import_state(&state, new_now_ms).expect("the section is accepted");
    assert_eq!(report.refused(), 0, "{report:?}");
    (new, state)
}

#[test]
fn handed_over_flows_keep_their_mapping_state_window_and_deadline() {
    let mut old = SimNet::new(Timeouts { udp: 60, ..Timeouts::default() });
    old.advance_s(5000);
    let mut c = old.connect(40000);
    assert!(old.client_sends(&mut c, tcp::ACK | tcp::PSH, 100));
    assert!(old.server_sends(&mut c, tcp::ACK | tcp::PSH, 200));
    // An answered UDP flow, an unanswered one, a ping.
    assert!(old.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.7", 7, b"q")));
    let udp_ext = src_of(&old.outside_rx.pop_back().unwrap()).1;
    assert!(old.send(Side::Outside, udp("203.0.113.7", 7, "198.51.100.10", udp_ext, b"a")));
    assert!(old.send(Side::Inside, udp("10.10.2.10", 6000, "203.0.113.7", 9, b"never answered")));
    assert!(old.send(Side::Inside, ping("10.10.1.10", "203.0.113.80", 8, 77)));
    old.advance_s(20);
    let before: Vec<_> =
        old.gw.flows().iter().map(|(_, f)| (f.keys, f.rewrite(0), f.rewrite(1), f.state, f.packets)).collect();

    // The new process's clock started later: ages and deadlines carry over as durations.
    let (mut new, state) = hand_over(&old, 1_000, |cfg| cfg.timeouts = Timeouts { udp: 60, ..Timeouts::default() });
    assert_eq!(new.gw.flows().windows_entries(), 1, "window state for the connection only, not UDP or ICMP");
    // The same state again collides with every flow: no window entry taken for any.
    assert_eq!(new.gw.import_state(&state, 1_000).unwrap().imported, 0);
    assert_eq!(new.gw.flows().windows_entries(), 1);
    let mut after: Vec<_> =
        new.gw.flows().iter().map(|(_, f)| (f.keys, f.rewrite(0), f.rewrite(1), f.state, f.packets)).collect();
    let mut before = before;
    before.sort_by_key(|f| format!("{:?}", f.0));
    after.sort_by_key(|f| format!("{:?}", f.0));
    assert_eq!(before, after, "every flow, with its keys, rewrites, state and counters");
    assert_eq!(new.gw.flows().unanswered(), 2, "the UDP flow and the ping nobody answered");
    assert_eq!(new.gw.flows().flows_of_source(a("10.10.1.10")), 3);
    assert_eq!(new.gw.mappings().len(), old.gw.mappings().len());
    assert_eq!(new.counter(Counter::HandoffFlowsImported), 4);

    // The connection goes on, both ways, from the same external port.
    assert!(new.server_sends(&mut c, tcp::ACK | tcp::PSH, 300), "the server's data reaches the client");
    assert!(new.client_sends(&mut c, tcp::ACK, 0));
    assert_eq!(src_of(new.outside_rx.back().unwrap()).1, c.ext);
    // Window tracking came along: a reset far outside the window is still dropped.
    let blind = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, tcp::RST, (c.server.wrapping_add(1 << 30), 0), 0);
    assert!(!new.send(Side::Outside, blind));
    assert_eq!(new.state(), Some(FlowState::Tcp(TcpState::Established)));
    // Endpoint-independent mapping: the same inside endpoint to another server keeps its port.
    assert!(new.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.80", 53, b"q2")));
    assert_eq!(src_of(&new.outside_rx.pop_back().unwrap()).1, udp_ext);
    // Another host asking for a port a handed-over mapping holds gets a different one.
    assert!(new.send(Side::Inside, udp("10.10.2.10", 5353, "203.0.113.7", 7, b"x")));
    assert_ne!(src_of(&new.outside_rx.pop_back().unwrap()), ("198.51.100.10".parse().unwrap(), udp_ext));
    // Deadlines count on: the answered UDP flow (idle 20 s of 60) goes 40 s later, not 60.
    let udp_key = |net: &SimNet| {
        net.gw
            .flows()
            .iter()
            .any(|(_, f)| f.keys[0].src_port == 5353 && f.keys[0].dst_port == 7 && f.keys[0].src == a("10.10.1.10"))
    };
    new.advance_s(39);
    assert!(udp_key(&new), "still there before its deadline");
    new.advance_s(2);
    assert!(!udp_key(&new), "gone at the deadline it had");
}

#[test]
fn handed_over_state_is_refused_whole_for_another_config_and_per_record_when_hostile() {
    let mut old = SimNet::new(Timeouts::default());
    for p in 0..50u16 {
        assert!(old.send(Side::Inside, udp("10.10.1.10", 20_000 + p, "203.0.113.7", 7, b"x")));
    }
    let mut state = Vec::new();
    old.gw.export_state(old.now_ms, &mut state);

    // Another pool layout or worker count: nothing is taken, and the error says why.
    let mut other = SimNet::with_config(|cfg| cfg.pools[0].lo = 30_000);
    let e = other.gw.import_state(&state, 0).unwrap_err().to_string();
    assert!(e.contains("fingerprint") && e.contains("pools"), "{e}");
    let mut two = SimNet::with_config(|cfg| cfg.workers = 2);
    assert!(two.gw.import_state(&state, 0).unwrap_err().to_string().contains("worker 0 of 1"));
    assert_eq!(other.flows() + two.flows(), 0);
    // Cut short or from the future: refused, never a panic.
    let mut fresh = SimNet::new(Timeouts::default());
    assert!(fresh.gw.import_state(&state[..state.len() - 1], 0).is_err());
    let mut future = state.clone();
    future[5] = 2;
    assert!(fresh.gw.import_state(&future, 0).unwrap_err().to_string().contains("format 2"));

    // Imported twice: the second copy collides with every flow and mapping.
    let (mut new, _) = hand_over(&old, 0, |_| {});
    let again = new.gw.import_state(&state, 0).unwrap();
    assert_eq!((again.imported, again.conflicting), (0, 50));

    // A record that would send from a private address out of the outside, or claim an
    // external endpoint natgw does not own, is refused; its neighbours are taken.
    let mut tampered = state.clone();
    let rec = |i: usize| natgw_core::nat::handoff::HEADER_LEN + i * natgw_core::nat::handoff::RECORD_LEN;
    // Record 0: the original direction's new source (offset 32) becomes the inside host.
    tampered[rec(0) + 32..rec(0) + 36].copy_from_slice(&[10, 10, 1, 10]);
    // Record 1: its mapping's external address (offset 168) becomes someone else's.
    tampered[rec(1) + 168..rec(1) + 172].copy_from_slice(&[192, 0, 2, 1]);
    // Record 2: an unknown protocol.
    tampered[rec(2)] = 47;
    let mut fresh = SimNet::new(Timeouts::default());
    let r = fresh.gw.import_state(&tampered, 0).unwrap();
    assert_eq!((r.imported, r.invalid), (47, 3), "{r:?}");
    assert_eq!(fresh.counter(Counter::HandoffFlowsRefused), 3);

    // Any byte of any record changed: never a panic, and whatever is taken sends nothing
    // out of the outside from an address other than an external one.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..2000 {
        let mut s = state.clone();
        for _ in 0..1 + round % 8 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = natgw_core::nat::handoff::HEADER_LEN
                + (rng as usize) % (s.len() - natgw_core::nat::handoff::HEADER_LEN);
            s[at] = (rng >> 32) as u8;
        }
        let mut net = SimNet::new(Timeouts::default());
        let _ = net.gw.import_state(&s, 0);
        for (_, f) in net.gw.flows().iter() {
            for d in 0..2 {
                if f.egress[d] == Egress::Outside {
                    assert!(net.gw.mappings().is_external(f.rewrite(d).src.addr), "round {round}: {f:?}");
                }
            }
        }
        assert!(net.flows() <= 50);
    }
}

/// Takes the active's replication events into the standby's replica, as the sync link does.
fn replicate(active: &mut SimNet, replica: &mut natgw_core::nat::replication::ReplicaTable, standby_now: u64) -> u64 {
    let mut events = Vec::new();
    let taken = active.gw.take_replication(active.now_ms, Some(&mut events), None);
    assert!(!taken.overflowed);
    let r = replica.apply_events(0, &events, standby_now).expect("the active's events parse");
    assert_eq!(r.invalid + r.full, 0, "{r:?}");
    taken.events
}

/// Promotes a standby: a fresh translator imports the replica's sections.
fn promote(replica: &natgw_core::nat::replication::ReplicaTable, now_ms: u64, timeouts: Timeouts) -> SimNet {
    let mut standby = SimNet::with_config(|cfg| {
        cfg.timeouts = timeouts;
        cfg.node_slice = (1, 2);
    });
    standby.now_ms = now_ms;
    standby.gw = Translator::new(standby.gw.config().clone(), Arc::new(Counters::default()), now_ms);
    for section in replica.sections(now_ms) {
        let report = standby.gw.import_state(&section, now_ms).expect("the replica's sections are accepted");
        assert_eq!(report.refused(), 0, "{report:?}");
    }
    standby
}

#[test]
fn replicated_flows_carry_on_at_the_promoted_standby_and_ended_ones_do_not() {
    use natgw_core::nat::replication::ReplicaTable;
    let timeouts = Timeouts { udp: 60, ..Timeouts::default() };
    let mut active = SimNet::with_config(|cfg| {
        cfg.timeouts = timeouts;
        cfg.node_slice = (0, 2);
    });
    active.gw.enable_replication();
    let fp = active.gw.config().state_fingerprint();
    let mut replica = ReplicaTable::new(1, 100_000, fp);
    active.advance_s(100);

    // A connection through its handshake and some data: its state changes are replicated,
    // its data packets are not (no event per packet).
    let mut c = active.connect(40000);
    assert!(replicate(&mut active, &mut replica, 0) >= 1);
    for _ in 0..50 {
        assert!(active.client_sends(&mut c, tcp::ACK | tcp::PSH, 100));
        assert!(active.server_sends(&mut c, tcp::ACK, 0));
    }
    assert_eq!(replicate(&mut active, &mut replica, 10), 0, "data on an established connection is not an event");
    // An answered UDP flow and a connection that closes and ends.
    assert!(active.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.7", 7, b"q")));
    let udp_ext = src_of(&active.outside_rx.pop_back().unwrap()).1;
    assert!(active.send(Side::Outside, udp("203.0.113.7", 7, "198.51.100.10", udp_ext, b"a")));
    let mut gone = active.connect(40002);
    assert!(active.client_sends(&mut gone, tcp::RST | tcp::ACK, 0));
    replicate(&mut active, &mut replica, 20);
    assert_eq!(replica.len(), 3, "the connection, the UDP flow and the reset one until it ends");
    active.advance_s(timeouts.tcp_closed + 1);
    replicate(&mut active, &mut replica, 30);
    assert_eq!(replica.len(), 2, "the end of the reset connection reached the standby");
    // Every port the active allocated is in its slice; the standby's are in the other.
    let node = |port| natgw_core::nat::node_of_port(port, 1, 2);
    assert!(node(c.ext) == 0 && node(udp_ext) == 0, "{} {udp_ext}", c.ext);

    // The active dies here. The standby promoted 5 s of its clock later carries on.
    let mut promoted = promote(&replica, 5_030, timeouts);
    assert_eq!(promoted.flows(), 2);
    assert!(promoted.server_sends(&mut c, tcp::ACK | tcp::PSH, 300), "the server's data reaches the client");
    assert!(promoted.client_sends(&mut c, tcp::ACK | tcp::PSH, 10));
    assert_eq!(src_of(promoted.outside_rx.back().unwrap()).1, c.ext, "same external port");
    assert_eq!(promoted.state(), Some(FlowState::Tcp(TcpState::Established)));
    // The windows were picked up from those segments: a blind reset is dropped.
    let blind = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, tcp::RST, (c.server.wrapping_add(1 << 30), 0), 0);
    assert!(!promoted.send(Side::Outside, blind));
    // The UDP mapping holds: the same inside endpoint keeps its external port.
    assert!(promoted.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.80", 53, b"q2")));
    assert_eq!(src_of(&promoted.outside_rx.pop_back().unwrap()).1, udp_ext);
    // New flows at the promoted node come from its own slice.
    assert!(promoted.send(Side::Inside, udp("10.10.2.10", 7000, "203.0.113.7", 7, b"new")));
    let new_port = src_of(&promoted.outside_rx.pop_back().unwrap()).1;
    assert_eq!(node(new_port), 1, "port {new_port} is from node 1's slice");
    // Deadlines: the replicated UDP flow gets its full timeout from the promotion.
    promoted.advance_s(timeouts.udp + 1);
    assert_eq!(promoted.flows(), 1, "only the TCP connection is left (established: hours)");
}

#[test]
fn a_taken_over_connection_shrugs_off_forged_first_segments_and_carries_bulk_data_to_its_close() {
    use natgw_core::nat::replication::ReplicaTable;
    let timeouts = Timeouts::default();
    let mut active = SimNet::with_config(|cfg| {
        cfg.timeouts = timeouts;
        cfg.node_slice = (0, 2);
    });
    active.gw.enable_replication();
    let mut replica = ReplicaTable::new(1, 1000, active.gw.config().state_fingerprint());
    let mut c = active.connect(40000);
    for _ in 0..10 {
        assert!(active.client_sends(&mut c, tcp::ACK | tcp::PSH, 100));
        assert!(active.server_sends(&mut c, tcp::ACK, 0));
    }
    replicate(&mut active, &mut replica, 0);
    let mut promoted = promote(&replica, 1_000, timeouts);
    // The first segments the promoted node sees are an off-path sender's: random classes
    // and numbers, at the connection's external port. Nothing of them may stick.
    let mut x = 0x2545_f491u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for _ in 0..500 {
        let flags = [tcp::RST, tcp::RST | tcp::ACK, tcp::FIN | tcp::ACK, tcp::ACK | tcp::PSH][(next() % 4) as usize];
        let forged =
            tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, flags, (next(), next()), (next() % 64) as usize);
        promoted.send(Side::Outside, forged);
    }
    assert_eq!(promoted.state(), Some(FlowState::Tcp(TcpState::Established)), "no forged segment moved it");
    // The real connection: a download with 100 segments (145 KB) in flight before each
    // acknowledgment, more than any window natgw could take unscaled: not one is refused.
    for round in 0..20 {
        for i in 0..100 {
            assert!(promoted.server_sends(&mut c, tcp::ACK, 1448), "round {round}, segment {i} refused");
        }
        assert!(promoted.client_sends(&mut c, tcp::ACK, 0), "round {round}: the client's ACK refused");
    }
    // Once picked up, a blind reset is still refused, and the endpoints' own FINs close it.
    let blind = tcp_at("203.0.113.80", 80, "198.51.100.10", c.ext, tcp::RST, (c.server.wrapping_add(1 << 30), 0), 0);
    assert!(!promoted.send(Side::Outside, blind));
    assert!(promoted.client_sends(&mut c, tcp::FIN | tcp::ACK, 0));
    assert!(promoted.server_sends(&mut c, tcp::FIN | tcp::ACK, 0));
    assert_eq!(promoted.state(), Some(FlowState::Tcp(TcpState::TimeWait)), "the close was tracked");
}

#[test]
fn replica_refuses_hostile_batches_whole_and_stays_bounded() {
    use natgw_core::nat::replication::{ReplicaTable, EVENT_UPSERT};
    let mut active = SimNet::new(Timeouts::default());
    active.gw.enable_replication();
    for p in 0..100u16 {
        assert!(active.send(Side::Inside, udp("10.10.1.10", 20_000 + p, "203.0.113.7", 7, b"x")));
    }
    let mut events = Vec::new();
    assert_eq!(active.gw.take_replication(0, Some(&mut events), None).events, 100);
    let fp = active.gw.config().state_fingerprint();

    // Bounded: a replica of 60 flows per worker keeps 60 and counts the rest.
    let mut small = ReplicaTable::new(1, 60, fp);
    let r = small.apply_events(0, &events, 0).unwrap();
    assert_eq!((r.upserts, r.full, small.len()), (60, 40, 60));
    // Truncated, an unknown event, a worker this gateway does not have: refused whole.
    let mut replica = ReplicaTable::new(1, 1000, fp);
    assert!(replica.apply_events(0, &events[..events.len() - 1], 0).is_err());
    let mut unknown = events.clone();
    unknown[1 + natgw_core::nat::handoff::RECORD_LEN] = 9;
    assert!(replica.apply_events(0, &unknown, 0).is_err());
    assert!(replica.apply_events(3, &events, 0).is_err());
    assert_eq!(replica.len(), 0, "nothing of a refused batch is applied");
    // A bulk resync replaces the worker's set: flows the replica held that the active no
    // longer has are gone.
    let ghost = udp("10.10.2.99", 999, "203.0.113.7", 7, b"g");
    let mut other = SimNet::new(Timeouts::default());
    other.gw.enable_replication();
    assert!(other.send(Side::Inside, ghost));
    let mut ghost_events = Vec::new();
    other.gw.take_replication(0, Some(&mut ghost_events), None);
    replica.apply_events(0, &ghost_events, 0).unwrap();
    let mut snapshot = Vec::new();
    assert_eq!(active.gw.replication_snapshot(0, &mut snapshot), 100);
    let r = replica.apply_events(0, &snapshot, 0).unwrap();
    assert_eq!((r.resets, r.upserts, replica.len()), (1, 100, 100));

    // Any byte changed: never a panic; whatever is kept imports without sending anything
    // out of the outside from an address other than an external one.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..500 {
        let mut e = events.clone();
        for _ in 0..1 + round % 6 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = (rng as usize) % e.len();
            e[at] = (rng >> 32) as u8;
        }
        let mut r = ReplicaTable::new(1, 1000, fp);
        let _ = r.apply_events(0, &e, 0);
        let mut net = SimNet::new(Timeouts::default());
        for s in r.sections(0) {
            let _ = net.gw.import_state(&s, 0);
        }
        for (_, f) in net.gw.flows().iter() {
            for d in 0..2 {
                if f.egress[d] == Egress::Outside {
                    assert!(net.gw.mappings().is_external(f.rewrite(d).src.addr), "round {round}: {f:?}");
                }
            }
        }
    }
    assert_eq!(events[0], EVENT_UPSERT);
}

#[test]
fn a_replication_log_past_its_bound_says_so_and_stays_bounded() {
    use natgw_core::nat::replication::MAX_LOGGED_EVENTS;
    let mut active = SimNet::new(Timeouts::default());
    active.gw.enable_replication();
    // More new flows between two takes than the log holds (a worker that did not turn its
    // loop): the take says events were lost (the sync thread then resyncs the standby).
    let n = MAX_LOGGED_EVENTS + 4000;
    for i in 0..n {
        let (port, host) = (1024 + (i % 50_000) as u16, 7 + (i / 50_000) as u8);
        assert!(active.send(Side::Inside, udp("10.10.1.10", port, &format!("203.0.113.{host}"), 9, b"x")));
    }
    let mut events = Vec::new();
    let taken = active.gw.take_replication(0, Some(&mut events), None);
    assert!(taken.overflowed);
    assert_eq!(taken.events, MAX_LOGGED_EVENTS as u64, "the log kept its bound");
    // The next take starts clean; a snapshot carries every flow.
    assert!(!active.gw.take_replication(0, Some(&mut Vec::new()), None).overflowed);
    assert_eq!(active.gw.replication_snapshot(0, &mut Vec::new()), n as u64);
}

#[test]
fn a_resync_sent_in_chunks_while_flows_come_and_go_leaves_the_standby_exact() {
    use natgw_core::nat::replication::ReplicaTable;
    // UDP flows go after 7 s: the first ones end while the resync is under way.
    let timeouts = Timeouts { udp: 7, tcp_closed: 3, ..Timeouts::default() };
    let mut active = SimNet::with_config(|cfg| cfg.timeouts = timeouts);
    active.gw.enable_replication();
    let mut replica = ReplicaTable::new(1, 100_000, active.gw.config().state_fingerprint());
    let udp_from = |port: u16| udp("10.10.1.10", port, "203.0.113.7", 7, b"x");
    for p in 0..3000u16 {
        assert!(active.send(Side::Inside, udp_from(10_000 + p)));
    }
    let mut conns: Vec<Conn> = (0..20).map(|i| active.connect(40_000 + i)).collect();
    // The standby joins: a reset, then the table 500 slots a turn, while every turn new
    // flows come, connections close, and older flows time out.
    let mut batch = Vec::new();
    active.gw.replication_snapshot_begin(&mut batch);
    let mut at = Some(0);
    let mut turn = 0u16;
    while let Some(from) = at {
        for p in 0..50u16 {
            assert!(active.send(Side::Inside, udp_from(20_000 + turn * 50 + p)));
        }
        if let Some(mut c) = conns.pop() {
            assert!(active.client_sends(&mut c, tcp::RST | tcp::ACK, 0));
        }
        active.advance_s(2);
        active.gw.take_replication(active.now_ms, Some(&mut batch), None);
        at = active.gw.replication_snapshot_chunk(from, 500, active.now_ms, &mut batch).0;
        replica.apply_events(0, &std::mem::take(&mut batch), 0).expect("the events parse");
        turn += 1;
    }
    assert!(turn > 4, "the resync took several turns ({turn})");
    assert!(active.gw.flows().len() < 3000 + 20 + usize::from(turn) * 50, "flows ended meanwhile");
    active.gw.take_replication(active.now_ms, Some(&mut batch), None);
    replica.apply_events(0, &batch, 0).expect("the last events parse");
    // The standby holds exactly the active's flows: none missing, none that ended.
    let mut held: Vec<String> = Vec::new();
    for section in replica.sections(active.now_ms) {
        let mut net = SimNet::with_config(|cfg| cfg.timeouts = timeouts);
        net.gw.import_state(&section, active.now_ms).expect("imports");
        held.extend(net.gw.flows().iter().map(|(_, f)| format!("{:?}", f.keys)));
    }
    let mut live: Vec<String> = active.gw.flows().iter().map(|(_, f)| format!("{:?}", f.keys)).collect();
    held.sort();
    live.sort();
    assert_eq!(held.len(), live.len(), "the standby holds {} flows, the active {}", held.len(), live.len());
    assert_eq!(held, live);
}

/// One worker's journal file, formatted for `gw`.
fn journal_for(gw: &Translator) -> Vec<u8> {
    use natgw_core::nat::journal::{self, JournalHeader};
    let capacity = gw.journal_capacity();
    let mut file = vec![0u8; journal::file_len(1, capacity)];
    JournalHeader {
        workers: 1,
        capacity,
        fingerprint: gw.config().state_fingerprint(),
        origin_ms: 0,
        epoch: 1,
        complete: true,
    }
    .format(&mut file)
    .unwrap();
    file
}

fn write_journal(gw: &mut Translator, now_ms: u64, file: &mut [u8]) {
    use natgw_core::nat::journal::{self, JournalRegion};
    let capacity = gw.journal_capacity();
    let mut region = JournalRegion::new(&mut file[journal::region_range(capacity, 0)]).unwrap();
    gw.take_replication(now_ms, None, Some(&mut region));
}

#[test]
fn a_gateway_that_dies_restarts_from_its_journal_with_every_flow_but_the_ended() {
    use natgw_core::nat::journal::{self, JournalRegion};
    use natgw_core::nat::replication::ReplicaTable;
    let timeouts = Timeouts { udp: 60, ..Timeouts::default() };
    let mut gw = SimNet::with_config(|cfg| cfg.timeouts = timeouts);
    gw.gw.enable_replication();
    let mut file = journal_for(&gw.gw);
    gw.advance_s(100);
    let mut c = gw.connect(40000);
    for _ in 0..20 {
        assert!(gw.client_sends(&mut c, tcp::ACK | tcp::PSH, 100));
        assert!(gw.server_sends(&mut c, tcp::ACK, 0));
    }
    assert!(gw.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.7", 7, b"q")));
    let udp_ext = src_of(&gw.outside_rx.pop_back().unwrap()).1;
    let mut gone = gw.connect(40002);
    assert!(gw.client_sends(&mut gone, tcp::RST | tcp::ACK, 0));
    write_journal(&mut gw.gw, gw.now_ms, &mut file);
    gw.advance_s(timeouts.tcp_closed + 1);
    write_journal(&mut gw.gw, gw.now_ms, &mut file);
    // A flow the last turn before the crash created but never wrote: lost (the journal
    // is as of the last loop turn).
    assert!(gw.send(Side::Inside, udp("10.10.1.11", 6000, "203.0.113.7", 7, b"late")));

    // The process dies; its successor reads the journal 3 s later on the same clock.
    let (header, kept) = journal::read(&file).unwrap();
    assert_eq!((header.workers, kept.torn, kept.flows[0].len()), (1, 0, 2), "the connection and the UDP flow");
    let mut replica = ReplicaTable::new(1, 100_000, header.fingerprint);
    for (stamp, record) in kept.flows[0].iter().cloned() {
        assert!(replica.insert(0, record, stamp));
    }
    let now = gw.now_ms + 3_000;
    let mut next = SimNet::with_config(|cfg| cfg.timeouts = timeouts);
    next.now_ms = now;
    next.gw = Translator::new(next.gw.config().clone(), Arc::new(Counters::default()), now);
    for section in replica.sections(now) {
        assert_eq!(next.gw.import_state(&section, now).unwrap().refused(), 0);
    }
    assert_eq!(next.flows(), 2);
    assert!(next.server_sends(&mut c, tcp::ACK | tcp::PSH, 300), "the server's data reaches the client");
    assert!(next.client_sends(&mut c, tcp::ACK | tcp::PSH, 10));
    assert_eq!(src_of(next.outside_rx.back().unwrap()).1, c.ext, "same external port");
    assert!(next.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.80", 53, b"q2")));
    assert_eq!(src_of(&next.outside_rx.pop_back().unwrap()).1, udp_ext, "the UDP mapping holds");

    // The successor writes a journal of its own from scratch: exactly its flows.
    next.gw.enable_replication();
    let mut own = journal_for(&next.gw);
    let capacity = next.gw.journal_capacity();
    let mut from = Some(0);
    while let Some(f) = from {
        let mut region = JournalRegion::new(&mut own[journal::region_range(capacity, 0)]).unwrap();
        from = next.gw.journal_scan(&mut region, f, 7, now);
    }
    assert_eq!(next.flows(), 3, "the two taken over and the new query");
    assert_eq!(journal::read(&own).unwrap().1.flows[0].len(), 3);
}

/// Every record of `gw` as of `now_ms`, sorted: two tables hold the same flows exactly
/// when these are equal.
fn records(gw: &Translator, now_ms: u64) -> Vec<Vec<u8>> {
    let mut state = Vec::new();
    gw.export_state(now_ms, &mut state);
    let mut r: Vec<Vec<u8>> = state[natgw_core::nat::handoff::HEADER_LEN..]
        .chunks(natgw_core::nat::handoff::RECORD_LEN)
        .map(<[u8]>::to_vec)
        .collect();
    r.sort();
    r
}

#[test]
fn a_precopy_and_its_delta_bring_exactly_the_flows_a_whole_export_would() {
    let timeouts = Timeouts { udp: 60, ..Timeouts::default() };
    let mut old = SimNet::with_config(|cfg| cfg.timeouts = timeouts);
    old.advance_s(100);
    let mut idle = old.connect(40000);
    let mut busy = old.connect(40001);
    let mut reset = old.connect(40002);
    let mut closing = old.connect(40003);
    assert!(old.send(Side::Inside, udp("10.10.1.10", 5353, "203.0.113.7", 7, b"q")));
    // (A flow seen in the export's own millisecond counts as changed: the clock here
    // stands still between packets.)
    old.advance_s(1);
    // The pre-copy: exported while forwarding, imported by the successor at once.
    let mut snapshot = Vec::new();
    old.gw.begin_precopy(old.now_ms, &mut snapshot);
    let mut new = SimNet::with_config(|cfg| cfg.timeouts = timeouts);
    new.gw = Translator::new(new.gw.config().clone(), Arc::new(Counters::default()), old.now_ms);
    assert_eq!(new.gw.import_state(&snapshot, old.now_ms).unwrap().imported, 5);
    // Meanwhile at the old process: data on one connection, a reset of another, one that
    // closes and expires, a new flow; the idle connection and the UDP flow see nothing.
    old.advance_s(2);
    for _ in 0..10 {
        assert!(old.client_sends(&mut busy, tcp::ACK | tcp::PSH, 100));
        assert!(old.server_sends(&mut busy, tcp::ACK, 0));
    }
    assert!(old.client_sends(&mut reset, tcp::RST | tcp::ACK, 0));
    assert!(old.client_sends(&mut closing, tcp::RST | tcp::ACK, 0));
    old.advance_s(timeouts.tcp_closed + 1);
    assert!(old.client_sends(&mut reset, tcp::SYN, 0), "a new connection on the reset one's tuple");
    assert!(old.send(Side::Inside, udp("10.10.2.10", 7000, "203.0.113.7", 7, b"new")));
    // The cutover: only what changed goes across.
    let now = old.now_ms;
    let delta = old.gw.precopy_delta(now).expect("a delta");
    let changed = (delta.section.len() - natgw_core::nat::handoff::HEADER_LEN) / natgw_core::nat::handoff::RECORD_LEN;
    let keys: Vec<_> = delta.section[natgw_core::nat::handoff::HEADER_LEN..]
        .chunks(natgw_core::nat::handoff::RECORD_LEN)
        .filter_map(natgw_core::nat::handoff::FlowRecord::parse)
        .map(|r| (r.keys[0], r.last_seen_ago_ms, r.created_ago_ms, r.reported_ago_ms))
        .collect();
    assert_eq!(changed, 3, "the busy connection, the reopened one and the new UDP flow: {keys:#?}");
    assert_eq!(delta.ended.len() / natgw_core::nat::replication::KEY_LEN, 2, "the reset and the closed one ended");
    let report = new.gw.apply_delta(&delta, now).unwrap();
    assert_eq!(report.refused(), 0, "{report:?}");
    assert_eq!(records(&new.gw, now), records(&old.gw, now), "the same flows, field for field");
    // And the successor forwards them: the idle connection from its pre-copied record.
    new.now_ms = now;
    assert!(new.server_sends(&mut idle, tcp::ACK | tcp::PSH, 10));
    assert!(new.client_sends(&mut busy, tcp::ACK | tcp::PSH, 10));
    assert!(old.gw.precopy_delta(now).is_none(), "the pre-copy ended with its delta");
}
