//! Hostile traffic from either side, with real tools, while real connections go on
//! (natgw_e2e::hostile has the scenarios; `hostile_compare` runs them against the kernel's
//! NAT too). Each asserts what must survive and the counter that must move.

use natgw_e2e::hostile::{self, plain_config, From};
use natgw_e2e::Topology;

const OUT_OF_WINDOW: &str = r#"PacketsDropCount{reason="tcp-out-of-window"}"#;

/// natgw as a plain NAT (no policies, no telemetry) with a table of `max_flows`.
fn plain(max_flows: u32) -> Topology {
    let mut t = Topology::network();
    let cfg = plain_config(&t, max_flows);
    t.start(&cfg);
    t
}

#[test]
fn blind_resets_fins_and_data_neither_kill_nor_ride_a_connection() {
    let t = plain(4096);
    // From the internet, flat out: random sequence and acknowledgment numbers over the
    // whole 32-bit space, four classes of segment.
    let o = hostile::blind_segments(&t, 100_000, From::Outside, None);
    eprintln!("{}", o.text);
    assert!(o.held, "{}", o.text);
    // Every one of them was judged out of window but the handful that land in an idle
    // connection's window by chance (one guess in about 65 000), which pass unchanged
    // and move nothing.
    let dropped = t.counter(OUT_OF_WINDOW);
    assert!(dropped >= o.measured - 20, "{dropped} of {} out of window", o.measured);
    // From a compromised host on the inside link, at a paced 2000/s.
    let o = hostile::blind_segments(&t, 10_000, From::Inside, Some(2));
    eprintln!("{}", o.text);
    assert!(o.held, "{}", o.text);
    assert!(t.counter(OUT_OF_WINDOW) >= dropped + o.measured - 20, "the inside spray was judged too");
}

#[test]
fn one_inside_host_scanning_does_not_stop_another_subnet() {
    // The default per-source limit (a quarter of the table) stops the scan first.
    let mut t = plain(4096);
    let o = hostile::scan_while_another_subnet_connects(&t, 40_000);
    eprintln!("per-source limit: {}", o.text);
    if !o.held {
        for c in t.stats().counters.iter().filter(|c| c.value > 0) {
            eprintln!("  {} {}", c.name, c.value);
        }
    }
    assert!(o.held, "{}", o.text);
    assert!(t.counter(r#"PacketsDropCount{reason="source-flow-limit"}"#) > 10_000);
    // Without it, the table fills, and early drop of unanswered flows keeps room.
    let mut cfg = plain_config(&t, 4096);
    cfg.set("nat.max_flows_per_source", 0);
    t.restart(&cfg);
    let o = hostile::scan_while_another_subnet_connects(&t, 40_000);
    eprintln!("early drop alone: {}", o.text);
    assert!(o.held, "{}", o.text);
    assert!(t.counter("EarlyDropCount") > 10_000, "{} early drops", t.counter("EarlyDropCount"));
    assert_eq!(t.counter(r#"PacketsDropCount{reason="table-full"}"#), 0);
}

#[test]
fn a_fragment_flood_from_random_sources_does_not_stop_fragmented_ping_or_udp() {
    let mut t = Topology::network();
    let mut cfg = plain_config(&t, 4096);
    // A small budget (256 KiB a worker), so that the flood overruns it many times.
    cfg.set("nat.fragment_memory_kib", 512);
    t.start(&cfg);
    let o = hostile::fragment_flood_while_fragmented_traffic(&t, 10_000);
    eprintln!("{}", o.text);
    assert!(o.held, "{}", o.text);
    assert!(t.counter("FragmentEvictionCount") > 1000, "the flood never filled the budget");
}

#[test]
fn icmp_errors_from_inside_routers_never_leave_with_a_private_source() {
    let t = plain(4096);
    let o = hostile::icmp_errors_from_inside_routers(&t, 200);
    eprintln!("{}", o.text);
    assert!(o.held, "{}", o.text);
    // Translated, not lost: the remote learns of the error from the flow's address.
    assert!(o.measured >= 190, "{}", o.text);
    assert_eq!(t.counter(r#"PacketsDropCount{reason="source-not-inside"}"#), 0, "none refused as a stranger");
}

#[test]
fn a_spoofed_router_arp_diverts_nothing_and_a_real_failover_is_followed() {
    let t = plain(4096);
    let o = hostile::spoofed_router_arp(&t);
    eprintln!("spoofed: {}", o.text);
    assert!(o.held, "{}", o.text);
    assert!(t.counter("NeighbourChangesRefused") >= 1);
    let o = hostile::router_failover(&t);
    eprintln!("failover: {}", o.text);
    assert!(o.held, "{}", o.text);
    assert!(t.counter("NeighbourChangesConfirmed") >= 1);
}

#[test]
fn hosts_asking_for_the_gateway_cost_no_neighbour_entries() {
    let t = plain(4096);
    let o = hostile::arp_askers(&t, || t.admin().status().map_or(usize::MAX, |s| s.neighbours));
    eprintln!("{}", o.text);
    assert!(o.held, "{}", o.text);
    // Each was answered: they can reach the gateway.
    assert!(t.cli1.run("curl", &["-s", "-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]).is_ok());
    assert_eq!(t.counter("NeighbourCacheFull"), 0, "no entry was even tried");
}

#[test]
fn endpoint_independent_filtering_is_no_way_round_the_egress_policy() {
    // The demo's allow-list (the Wasm component) with endpoint-independent filtering: a
    // remote the list refuses the inside host cannot reach it through the host's mapping,
    // whatever address and port it sends from; one the list allows can.
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("nat.filtering", "endpoint-independent");
    t.start(&cfg);
    let host = t.cli1.enter(|| std::net::UdpSocket::bind("0.0.0.0:40555")).expect("bind");
    host.set_read_timeout(Some(std::time::Duration::from_millis(300))).expect("timeout");
    // The host talks to the echo service (allowed): its mapping exists.
    t.cli1.enter(|| host.send_to(b"hello", "203.0.113.7:7")).expect("send");
    let mut buf = [0u8; 64];
    assert_eq!(host.recv_from(&mut buf).map(|(n, _)| n).ok(), Some(5), "the echo answers");
    let flows = t.admin().flows().expect("flows");
    let mapping = flows
        .iter()
        .find(|f| f.original == "10.10.1.10:40555 -> 203.0.113.7:7")
        .map(|f| f.translated.split(" -> ").next().unwrap_or_default().to_string())
        .expect("the host's flow");
    let denied_before = t.counter(r#"PacketsDropCount{reason="policy-denied"}"#);
    // Refused remotes: the echo server's address from other ports, the web server's from
    // ports outside the allowed range, 20 of each.
    let refused: Vec<String> =
        (0..20).flat_map(|i| [format!("203.0.113.7:{}", 9000 + i), format!("203.0.113.80:{}", 5000 + i)]).collect();
    for from in &refused {
        let s = t.inet.enter(|| std::net::UdpSocket::bind(from.as_str())).expect("bind");
        t.inet.enter(|| s.send_to(b"sneak", mapping.as_str())).expect("send");
    }
    // An allowed one (the list allows UDP to 203.0.113.80:33434-65535).
    let ok = t.inet.enter(|| std::net::UdpSocket::bind("203.0.113.80:40000")).expect("bind");
    t.inet.enter(|| ok.send_to(b"allowed", mapping.as_str())).expect("send");
    let mut got = Vec::new();
    while let Ok((n, from)) = host.recv_from(&mut buf) {
        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from.to_string()));
    }
    assert_eq!(got, [("allowed".to_string(), "203.0.113.80:40000".to_string())], "only the allowed remote got in");
    let denied = t.counter(r#"PacketsDropCount{reason="policy-denied"}"#) - denied_before;
    assert!(denied >= refused.len() as u64, "{denied} refused by the policy, of {}", refused.len());
}
