//! Runs every hostile-traffic scenario (natgw_e2e::hostile) against natgw and against the
//! kernel's NAT (nftables masquerade over netfilter conntrack) on the same demo network,
//! and prints a Markdown table of what each withstood: the README's hostile-traffic table.
//!
//! usage (root): cargo run --release -p natgw-e2e --bin hostile_compare
//!
//! Both get a flow table of 4096. natgw's is its config; netfilter's nf_conntrack_max
//! cannot be set inside a namespace, so the kernel column sets the machine's for its run
//! and puts the old value back (also when a scenario panics).

use natgw_e2e::hostile::{self, plain_config, From, Outcome};
use natgw_e2e::Topology;

const TABLE: u32 = 4096;

/// The machine's nf_conntrack_max, set for the kernel column and restored on drop.
struct ConntrackMax(String);

impl ConntrackMax {
    const PATH: &'static str = "/proc/sys/net/netfilter/nf_conntrack_max";

    fn set(n: u32) -> ConntrackMax {
        let old = std::fs::read_to_string(Self::PATH).expect("nf_conntrack_max (is nf_conntrack loaded?)");
        std::fs::write(Self::PATH, n.to_string()).expect("set nf_conntrack_max");
        ConntrackMax(old.trim().to_string())
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

struct Row {
    attack: &'static str,
    natgw: Outcome,
    kernel: Outcome,
}

fn natgw() -> Topology {
    let mut t = Topology::network();
    let cfg = plain_config(&t, TABLE);
    t.start(&cfg);
    t
}

fn kernel() -> Topology {
    Topology::kernel_nat()
}

fn both(attack: &'static str, run: impl Fn(&Topology) -> Outcome) -> Row {
    eprintln!("== {attack}");
    let n = run(&natgw());
    eprintln!("   natgw:  {}", n.text);
    let k = {
        let _max = ConntrackMax::set(TABLE);
        let t = kernel();
        run(&t)
    };
    eprintln!("   kernel: {}", k.text);
    Row { attack, natgw: n, kernel: k }
}

fn main() {
    assert!(natgw_e2e::natgw_bin().is_file(), "build natgw first: scripts/setup.sh");
    // The conntrack module must be there before the limit can be set.
    drop(kernel());
    let rows = vec![
        both(
            "100 000 blind RST / FIN / data segments from outside, random seq and ack, flat out, at an idle connection",
            |t| hostile::blind_segments(t, 100_000, From::Outside, None),
        ),
        both("10 000 blind segments from a host on the inside link, spoofing the client, 2000/s", |t| {
            hostile::blind_segments(t, 10_000, From::Inside, Some(2))
        }),
        both("An inside host scans: 40 000 unanswered UDP probes at ~20 000/s, table of 4096", |t| {
            hostile::scan_while_another_subnet_connects(t, 40_000)
        }),
        both("Fragments from random outside sources (~10 000/s) that never complete", |t| {
            hostile::fragment_flood_while_fragmented_traffic(t, 10_000)
        }),
        both("200 ICMP errors from inside routers about an inside host's flow", |t| {
            hostile::icmp_errors_from_inside_routers(t, 200)
        }),
        both("Gratuitous ARP claiming the upstream router, every 200 ms", hostile::spoofed_router_arp),
        both("The upstream router fails over to a new MAC and announces it", hostile::router_failover),
        both("244 inside hosts ask for the gateway's address", |t| {
            let gw = t.gw.clone();
            if t.gateway.is_some() {
                hostile::arp_askers(t, || t.admin().status().map_or(usize::MAX, |s| s.neighbours))
            } else {
                hostile::arp_askers(t, || hostile::kernel_neighbours(&gw))
            }
        }),
    ];
    println!("| attack | natgw | kernel (nft masquerade) |");
    println!("| --- | --- | --- |");
    let mark = |o: &Outcome| if o.held { "✔" } else { "✘" };
    for r in &rows {
        println!("| {} | {} {} | {} {} |", r.attack, mark(&r.natgw), r.natgw.text, mark(&r.kernel), r.kernel.text);
    }
}
