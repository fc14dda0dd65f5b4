//! Hostile traffic from either side, with real tools, while real connections go on
//! (natgw_e2e::hostile has the scenarios; `hostile_compare` runs them against the kernel's
//! NAT too). Each asserts what must survive and the counter that must move.

use natgw_e2e::hostile::{self, plain_config};
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
    let o = hostile::blind_segments(&t, 10_000);
    eprintln!("{}", o.text);
    assert!(o.held, "{}", o.text);
    // Every one of them was judged out of window (a random guess in 2^32 lands in an
    // idle connection's window about once in 60 000 tries).
    assert!(t.counter(OUT_OF_WINDOW) >= 9_990, "{} out of window", t.counter(OUT_OF_WINDOW));
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
}
