//! Translator unit tests: literal packets in, translated packets out.

// Test code: literal sizes and results that must be there.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use natgw_core::conntrack::*;
use natgw_core::counters::{Counter, Counters};
use natgw_core::nat::policy::*;
use natgw_core::nat::pool::*;
use natgw_core::nat::*;
use natgw_testkit::*;
use natgw_wire::*;

fn translator(cfg: NatConfig) -> Translator {
    Translator::new(cfg, Arc::new(Counters::default()), 0)
}

fn run(t: &mut Translator, frame: &mut [u8], side: Side, link: u8) -> Verdict {
    let mut out = [0u8; 2048];
    t.process(frame, FrameMeta::plain(side, link), 1000, &mut out)
}

fn run_out(t: &mut Translator, frame: &mut [u8], side: Side, link: u8) -> (Verdict, Vec<u8>) {
    let mut out = [0u8; 2048];
    let v = t.process(frame, FrameMeta::plain(side, link), 1000, &mut out);
    (v, out.to_vec())
}

const OUT: Verdict = Verdict::Forward { egress: Egress::Outside, next_hop: Ipv4Addr::new(198, 51, 100, 1) };

/// The exact bytes of a SYN from 10.10.1.10:40000 to 203.0.113.80:80 and of the same SYN
/// after natgw: only the source address, TTL and the two checksums may change.
#[test]
fn literal_syn_translation() {
    #[rustfmt::skip]
    let mut frame: [u8; 54] = [
        0x02,0,0,0,0,0x01, 0x02,0,0,0,0,0x0a, 0x08,0x00,
        0x45,0x00,0x00,0x28, 0x00,0x01,0x40,0x00, 0x40,0x06,0xf3,0x6a, 10,10,1,10, 203,0,113,80,
        0x9c,0x40,0x00,0x50, 0x00,0x00,0x03,0xe8, 0x00,0x00,0x00,0x00, 0x50,0x02,0xff,0xff, 0xc8,0x05,0x00,0x00,
    ];
    assert!(checksums_valid(&frame), "the literal input must be a valid packet");
    let mut t = translator(demo_config());
    assert_eq!(run(&mut t, &mut frame, Side::Inside, 0), OUT);
    #[rustfmt::skip]
    let expected: [u8; 40] = [
        0x45,0x00,0x00,0x28, 0x00,0x01,0x40,0x00, 0x3f,0x06,0xd5,0x40, 198,51,100,10, 203,0,113,80,
        0x9c,0x40,0x00,0x50, 0x00,0x00,0x03,0xe8, 0x00,0x00,0x00,0x00, 0x50,0x02,0xff,0xff, 0xa8,0xdb,0x00,0x00,
    ];
    assert_eq!(&frame[14..], &expected[..]);
}

#[test]
fn tcp_outbound_and_reply() {
    let mut t = translator(demo_config());
    let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    assert_eq!(run(&mut t, &mut syn, Side::Inside, 0), OUT);
    assert_eq!(src_of(&syn), (a("198.51.100.10"), 40000), "port preserved");
    assert_eq!(ttl_of(&syn), 63);
    assert!(checksums_valid(&syn));

    let mut synack = tcp("203.0.113.80", 80, "198.51.100.10", 40000, tcp::SYN | tcp::ACK);
    assert_eq!(
        run(&mut t, &mut synack, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(0), next_hop: a("10.10.1.10") }
    );
    assert_eq!(dst_of(&synack), (a("10.10.1.10"), 40000));
    assert!(checksums_valid(&synack));
    let mut ack = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::ACK);
    assert_eq!(run(&mut t, &mut ack, Side::Inside, 0), OUT);
    assert_eq!(t.counters().get(Counter::ConnectionEstablishedCount), 1);
    assert_eq!(t.counters().get(Counter::ConnectionAttemptCount), 1);
    let (id, _) = t
        .flows()
        .lookup(&FlowKey {
            side: Side::Inside,
            proto: PROTO_TCP,
            src: a("10.10.1.10"),
            src_port: 40000,
            dst: a("203.0.113.80"),
            dst_port: 80,
        })
        .unwrap();
    assert_eq!(t.flows().get(id).unwrap().state, FlowState::Tcp(TcpState::Established));
}

#[test]
fn tcp_without_syn_creates_nothing() {
    let mut t = translator(demo_config());
    let mut ack = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::ACK);
    assert_eq!(run(&mut t, &mut ack, Side::Inside, 0), Verdict::Drop(Counter::DropTcpNoFlow));
    assert!(t.flows().is_empty());
}

#[test]
fn unsolicited_and_filtered_inbound_is_dropped() {
    let mut t = translator(demo_config());
    let mut syn = tcp("203.0.113.80", 80, "198.51.100.10", 40000, tcp::SYN);
    assert_eq!(run(&mut t, &mut syn, Side::Outside, 0), Verdict::Drop(Counter::DropUnsolicitedInbound));
    // Addressed straight to a private host.
    let mut direct = tcp("203.0.113.80", 80, "10.10.1.10", 40000, tcp::SYN);
    assert_eq!(run(&mut t, &mut direct, Side::Outside, 0), Verdict::Drop(Counter::DropToPrivateAddress));
    // A mapping exists, but address-and-port-dependent filtering refuses another remote port.
    let mut out = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"x");
    assert_eq!(run(&mut t, &mut out, Side::Inside, 0), OUT);
    let mut other = udp("203.0.113.7", 8, "198.51.100.10", 5000, b"y");
    assert_eq!(run(&mut t, &mut other, Side::Outside, 0), Verdict::Drop(Counter::DropUnsolicitedInbound));
    let mut reply = udp("203.0.113.7", 7, "198.51.100.10", 5000, b"y");
    assert!(matches!(run(&mut t, &mut reply, Side::Outside, 0), Verdict::Forward { .. }));
    assert_eq!(t.counters().get(Counter::DropUnsolicitedInbound), 2);
    assert_eq!(t.counters().get(Counter::DropToPrivateAddress), 1);
}

#[test]
fn endpoint_independent_filtering_admits_any_remote() {
    let mut cfg = demo_config();
    cfg.filtering = Filtering::EndpointIndependent;
    let mut t = translator(cfg);
    let mut out = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"x");
    run(&mut t, &mut out, Side::Inside, 0);
    let mut other = udp("203.0.113.99", 9999, "198.51.100.10", 5000, b"y");
    assert_eq!(
        run(&mut t, &mut other, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(0), next_hop: a("10.10.1.10") }
    );
    assert_eq!(dst_of(&other), (a("10.10.1.10"), 5000));
    assert!(checksums_valid(&other));
}

/// Refuses the remotes in its list, whichever way the flow was opened.
struct RefuseRemotes(Arc<std::sync::Mutex<Vec<Ipv4Addr>>>);

impl FlowPolicy for RefuseRemotes {
    fn egress(&mut self, f: &NewFlow) -> EgressDecision {
        if self.0.lock().unwrap().contains(&f.dst) {
            EgressDecision::Deny
        } else {
            EgressDecision::Allow
        }
    }
    fn port_pool(&mut self, _: &NewFlow) -> PoolDecision {
        policy::DEFAULT_POOL
    }
}

#[test]
fn endpoint_independent_filtering_is_no_way_round_the_egress_policy() {
    let mut cfg = demo_config();
    cfg.filtering = Filtering::EndpointIndependent;
    let mut t = translator(cfg);
    let refused = Arc::new(std::sync::Mutex::new(vec![a("203.0.113.66")]));
    t.set_policy(Box::new(RefuseRemotes(refused.clone())));
    t.record_flow_ends(true, true, 0);
    let mut out = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"x");
    assert_eq!(run(&mut t, &mut out, Side::Inside, 0), OUT);
    // A remote the policy refuses cannot open a flow to the mapping: nothing of the inside
    // host's would ever go back to it. UDP and TCP alike, from any of its ports.
    for (i, mut probe) in [
        udp("203.0.113.66", 9999, "198.51.100.10", 5000, b"y"),
        udp("203.0.113.66", 53, "198.51.100.10", 5000, b"y"),
        tcp("203.0.113.66", 443, "198.51.100.10", 5000, tcp::SYN),
    ]
    .into_iter()
    .enumerate()
    {
        let v = run(&mut t, &mut probe, Side::Outside, 0);
        // The TCP one finds no TCP mapping at all; the UDP ones are refused by the policy.
        let want = if i < 2 { Counter::DropPolicyDenied } else { Counter::DropUnsolicitedInbound };
        assert_eq!(v, Verdict::Drop(want), "probe {i}");
    }
    assert_eq!(t.counters().get(Counter::DropPolicyDenied), 2);
    let mut ends = Vec::new();
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 2, "a REJECT record each: {ends:?}");
    assert!(ends.iter().all(|e| e.direction == FlowDirection::Ingress && e.dst.addr == a("203.0.113.66")));
    assert!(ends.iter().all(|e| e.src.addr == a("10.10.1.10") && e.packets == [0, 1]));
    // One it allows gets through...
    let mut ok = udp("203.0.113.9", 9999, "198.51.100.10", 5000, b"y");
    assert_eq!(
        run(&mut t, &mut ok, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(0), next_hop: a("10.10.1.10") }
    );
    // ...until the policy stops allowing it: revalidation covers flows opened from outside.
    refused.lock().unwrap().push(a("203.0.113.9"));
    assert_eq!(t.revalidate(0), 1);
    let mut again = udp("203.0.113.9", 9999, "198.51.100.10", 5000, b"z");
    assert_eq!(run(&mut t, &mut again, Side::Outside, 0), Verdict::Drop(Counter::DropPolicyDenied));
    let mut back = udp("10.10.1.10", 5000, "203.0.113.9", 9999, b"w");
    assert_eq!(run(&mut t, &mut back, Side::Inside, 0), Verdict::Drop(Counter::DropPolicyDenied));
}

#[test]
fn two_hosts_same_source_port_get_distinct_mappings() {
    let mut t = translator(demo_config());
    let mut x = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"x");
    let mut y = udp("10.10.2.10", 5000, "203.0.113.7", 7, b"y");
    run(&mut t, &mut x, Side::Inside, 0);
    assert_eq!(run(&mut t, &mut y, Side::Inside, 1), OUT);
    assert_ne!(src_of(&x), src_of(&y));
    assert!(checksums_valid(&y));
    // Each reply reaches its own host.
    let (ea, pa) = src_of(&y);
    let mut r = udp("203.0.113.7", 7, &ea.to_string(), pa, b"r");
    assert_eq!(
        run(&mut t, &mut r, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(1), next_hop: a("10.10.2.10") }
    );
    assert_eq!(dst_of(&r), (a("10.10.2.10"), 5000));
}

#[test]
fn endpoint_independent_mapping_across_destinations() {
    let mut t = translator(demo_config());
    let mut x = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"x");
    let mut y = udp("10.10.1.10", 5000, "203.0.113.8", 53, b"y");
    run(&mut t, &mut x, Side::Inside, 0);
    run(&mut t, &mut y, Side::Inside, 0);
    assert_eq!(src_of(&x), src_of(&y));
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let (s, d) = (a("10.10.1.10"), a("203.0.113.7"));
    let mut f = ipv4_frame(s, d, PROTO_UDP, 64, 1, 0, &udp_datagram(s, 5000, d, 7, b"abc", false));
    let mut t = translator(demo_config());
    assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
    assert_eq!(&f[40..42], &[0, 0]);
    assert!(checksums_valid(&f));
}

#[test]
fn checksum_partial_frames_get_the_pseudo_header_patched() {
    // A CHECKSUM_PARTIAL TCP frame as a local socket hands it to veth: the checksum field
    // holds the folded pseudo-header sum only.
    let (s, d) = (a("10.10.1.10"), a("203.0.113.80"));
    let mut seg = tcp_segment(s, 40000, d, 80, tcp::SYN, b"hello");
    let partial = checksum::fold(checksum::pseudo_header_sum(u32::from(s), u32::from(d), 6, seg.len() as u16));
    seg[16..18].copy_from_slice(&partial.to_be_bytes());
    let mut f = ipv4_frame(s, d, PROTO_TCP, 64, 1, DF, &seg);
    let mut t = translator(demo_config());
    let meta = FrameMeta { csum_partial: true, ..FrameMeta::plain(Side::Inside, 0) };
    assert_eq!(t.process(&mut f, meta, 0, &mut [0u8; 2048]), OUT);
    let want =
        checksum::fold(checksum::pseudo_header_sum(u32::from(a("198.51.100.10")), u32::from(d), 6, seg.len() as u16));
    assert_eq!(u16::from_be_bytes([f[50], f[51]]), want);
    // And the device's final sum over the segment then verifies.
    let l4 = &mut f[34..];
    let tail_sum = checksum::sum(l4, 0);
    l4[16..18].copy_from_slice(&(!checksum::fold(tail_sum)).to_be_bytes());
    assert!(checksums_valid(&f));
}

#[test]
fn icmp_echo_by_identifier() {
    let mut t = translator(demo_config());
    let mut p1 = ping("10.10.1.10", "203.0.113.80", icmpv4::ECHO_REQUEST, 777);
    let mut p2 = ping("10.10.2.10", "203.0.113.80", icmpv4::ECHO_REQUEST, 777);
    assert_eq!(run(&mut t, &mut p1, Side::Inside, 0), OUT);
    assert_eq!(run(&mut t, &mut p2, Side::Inside, 1), OUT);
    assert!(checksums_valid(&p1) && checksums_valid(&p2));
    let id1 = u16::from_be_bytes([p1[38], p1[39]]);
    let id2 = u16::from_be_bytes([p2[38], p2[39]]);
    assert_eq!(id1, 777);
    assert_ne!(id2, 777, "the second host's identifier is remapped");
    let mut r2 = ping("203.0.113.80", "198.51.100.10", icmpv4::ECHO_REPLY, id2);
    assert_eq!(
        run(&mut t, &mut r2, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(1), next_hop: a("10.10.2.10") }
    );
    assert_eq!(u16::from_be_bytes([r2[38], r2[39]]), 777);
    assert_eq!(dst_of(&r2).0, a("10.10.2.10"));
    assert!(checksums_valid(&r2));
    // An echo reply nobody asked for.
    let mut stray = ping("203.0.113.80", "198.51.100.10", icmpv4::ECHO_REPLY, 4242);
    assert_eq!(run(&mut t, &mut stray, Side::Outside, 0), Verdict::Drop(Counter::DropUnsolicitedInbound));
}

#[test]
fn answers_ping_to_own_addresses() {
    let mut t = translator(demo_config());
    let mut p = ping("10.10.1.10", "10.10.1.1", icmpv4::ECHO_REQUEST, 9);
    assert_eq!(
        run(&mut t, &mut p, Side::Inside, 0),
        Verdict::Forward { egress: Egress::Inside(0), next_hop: a("10.10.1.10") }
    );
    assert_eq!(p[34], icmpv4::ECHO_REPLY);
    assert_eq!((src_of(&p).0, dst_of(&p).0), (a("10.10.1.1"), a("10.10.1.10")));
    assert!(checksums_valid(&p));
    let mut q = ping("203.0.113.80", "198.51.100.10", icmpv4::ECHO_REQUEST, 9);
    assert_eq!(run(&mut t, &mut q, Side::Outside, 0), OUT);
    assert_eq!(src_of(&q).0, a("198.51.100.10"));
    assert!(checksums_valid(&q));
    assert_eq!(t.counters().get(Counter::IcmpEchoRepliesSent), 2);
    // Anything else to the gateway's inside address is not for us.
    let mut s = tcp("10.10.1.10", 1, "10.10.1.1", 22, tcp::SYN);
    assert_eq!(run(&mut t, &mut s, Side::Inside, 0), Verdict::Drop(Counter::DropNotForUs));
}

#[test]
fn ttl_expiry_sends_time_exceeded_from_the_gateway() {
    let mut t = translator(demo_config());
    let (s, d) = (a("10.10.1.10"), a("203.0.113.80"));
    let mut f = ipv4_frame(s, d, PROTO_UDP, 1, 7, 0, &udp_datagram(s, 33434, d, 33434, b"probe", true));
    let orig = f.clone();
    let (v, out) = run_out(&mut t, &mut f, Side::Inside, 0);
    let Verdict::Emit { egress, next_hop, len } = v else { panic!("{v:?}") };
    assert_eq!((egress, next_hop), (Egress::Inside(0), s));
    let e = &out[..len];
    assert_eq!((src_of(e).0, dst_of(e).0), (a("10.10.1.1"), s));
    assert_eq!(e[23], PROTO_ICMP);
    assert_eq!((e[34], e[35]), (icmpv4::TIME_EXCEEDED, 0));
    assert_eq!(&e[42..42 + orig.len() - 14], &orig[14..], "quotes the packet as received");
    assert!(checksums_valid(e));
    assert!(t.flows().is_empty(), "an expiring packet creates no state");
    assert_eq!(t.counters().get(Counter::IcmpErrorsSent), 1);
    assert_eq!(t.counters().get(Counter::DropTtlExpired), 1);
}

/// Path-MTU discovery: a router beyond natgw says "fragmentation needed" about the
/// translated packet; the client gets it about its own packet.
#[test]
fn inbound_icmp_error_is_translated_to_the_inside_host() {
    let mut t = translator(demo_config());
    let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    run(&mut t, &mut syn, Side::Inside, 0);
    let quoted = syn[14..14 + 28].to_vec(); // IP header + 8 bytes, as translated
    let mut rest = [0u8; 4];
    rest[2..].copy_from_slice(&1280u16.to_be_bytes());
    let msg = icmp_message(icmpv4::DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED, rest, &quoted);
    let mut err = ipv4_frame(a("198.51.100.1"), a("198.51.100.10"), PROTO_ICMP, 64, 9, 0, &msg);
    assert_eq!(
        run(&mut t, &mut err, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(0), next_hop: a("10.10.1.10") }
    );
    assert_eq!(src_of(&err).0, a("198.51.100.1"), "the router stays the sender");
    assert_eq!(dst_of(&err).0, a("10.10.1.10"));
    assert!(checksums_valid(&err));
    let inner = &err[42..];
    assert_eq!(&inner[12..16], &[10, 10, 1, 10], "inner source back to the client");
    assert_eq!(&inner[16..20], &[203, 0, 113, 80]);
    assert_eq!(u16::from_be_bytes([inner[20], inner[21]]), 40000);
    assert_eq!(checksum::fold(checksum::sum(&inner[..20], 0)), 0xffff, "inner header checksum");
    assert_eq!(u16::from_be_bytes([err[40], err[41]]), 1280, "next-hop MTU kept");
}

#[test]
fn outbound_icmp_error_is_translated_to_the_remote() {
    let mut t = translator(demo_config());
    let mut out = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"x");
    run(&mut t, &mut out, Side::Inside, 0);
    let mut reply = udp("203.0.113.7", 7, "198.51.100.10", 5000, b"y");
    run(&mut t, &mut reply, Side::Outside, 0);
    // The client's port is closed: it answers the reply with port unreachable.
    let msg = icmp_message(icmpv4::DEST_UNREACHABLE, 3, [0; 4], &reply[14..]);
    let mut err = ipv4_frame(a("10.10.1.10"), a("203.0.113.7"), PROTO_ICMP, 64, 3, 0, &msg);
    assert_eq!(run(&mut t, &mut err, Side::Inside, 0), OUT);
    assert_eq!(src_of(&err).0, a("198.51.100.10"), "the client's address never leaves");
    assert!(checksums_valid(&err));
    let inner = &err[42..];
    assert_eq!(&inner[12..16], &[203, 0, 113, 7]);
    assert_eq!(&inner[16..20], &[198, 51, 100, 10]);
    assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), 5000);
    // The quoted UDP checksum was updated too.
    let l4 = &inner[20..];
    let ph =
        checksum::pseudo_header_sum(u32::from(a("203.0.113.7")), u32::from(a("198.51.100.10")), 17, l4.len() as u16);
    assert_eq!(checksum::fold(checksum::sum(l4, ph)), 0xffff);
}

#[test]
fn icmp_errors_from_other_inside_hosts_leave_from_the_flows_external_address() {
    // An inside router (or any other inside host) on the path to the client reports an
    // error about the server's packet: going out, it must carry the flow's external
    // address, never its own private one (netfilter masquerades related ICMP the same way).
    for (reporter, icmp_type, code, rest) in [
        ("10.10.1.254", icmpv4::TIME_EXCEEDED, 0, [0u8; 4]),
        ("10.10.1.254", icmpv4::DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED, [0, 0, 0x05, 0x00]),
        ("10.10.1.77", icmpv4::DEST_UNREACHABLE, 3, [0; 4]),
        ("10.10.1.1", icmpv4::DEST_UNREACHABLE, 1, [0; 4]),
    ] {
        let mut t = translator(demo_config());
        let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
        assert_eq!(run(&mut t, &mut syn, Side::Inside, 0), OUT);
        let ext = src_of(&syn).1;
        let mut synack = tcp("203.0.113.80", 80, "198.51.100.10", ext, tcp::SYN | tcp::ACK);
        run(&mut t, &mut synack, Side::Outside, 0);
        let msg = icmp_message(icmp_type, code, rest, &synack[14..]);
        let mut err = ipv4_frame(a(reporter), a("203.0.113.80"), PROTO_ICMP, 64, 3, 0, &msg);
        let v = run(&mut t, &mut err, Side::Inside, 0);
        if reporter == "10.10.1.1" {
            // natgw's own inside address is not a reporter: dropped, not forwarded.
            assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
            continue;
        }
        assert_eq!(v, OUT, "{reporter} type {icmp_type}");
        assert_eq!(src_of(&err).0, a("198.51.100.10"), "{reporter} type {icmp_type}: a private source left");
        assert!(checksums_valid(&err));
        let inner = &err[42..];
        assert_eq!((&inner[12..16], &inner[16..20]), (&[203, 0, 113, 80][..], &[198, 51, 100, 10][..]));
        assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), ext, "the quote is what the server sent");
    }
}

#[test]
fn icmp_error_quoting_garbage_is_a_counted_drop() {
    let mut t = translator(demo_config());
    let msg = icmp_message(icmpv4::DEST_UNREACHABLE, 1, [0; 4], &[0x45, 0, 0]);
    let mut err = ipv4_frame(a("203.0.113.1"), a("198.51.100.10"), PROTO_ICMP, 64, 3, 0, &msg);
    assert_eq!(run(&mut t, &mut err, Side::Outside, 0), Verdict::Drop(Counter::DropBadIcmpQuote));
    // A well-formed quote of a flow that does not exist.
    let q = udp("198.51.100.10", 1234, "203.0.113.9", 53, b"zz");
    let msg = icmp_message(icmpv4::DEST_UNREACHABLE, 3, [0; 4], &q[14..]);
    let mut err = ipv4_frame(a("203.0.113.9"), a("198.51.100.10"), PROTO_ICMP, 64, 3, 0, &msg);
    assert_eq!(run(&mut t, &mut err, Side::Outside, 0), Verdict::Drop(Counter::DropUnsolicitedInbound));
}

#[test]
fn oversized_df_packet_gets_fragmentation_needed() {
    let mut cfg = demo_config();
    cfg.outside_mtu = 1280;
    let mut t = translator(cfg);
    let (s, d) = (a("10.10.1.10"), a("203.0.113.80"));
    let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    run(&mut t, &mut syn, Side::Inside, 0);
    let mut big = ipv4_frame(s, d, PROTO_TCP, 64, 2, DF, &tcp_segment(s, 40000, d, 80, tcp::ACK, &[7u8; 1400]));
    let (v, out) = run_out(&mut t, &mut big, Side::Inside, 0);
    let Verdict::Emit { len, .. } = v else { panic!("{v:?}") };
    let e = &out[..len];
    assert_eq!((e[34], e[35]), (icmpv4::DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED));
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1280);
    assert!(checksums_valid(e));
    // Without DF, natgw fragments: the translated datagram, split for the egress MTU.
    let (s2, d2) = (a("10.10.1.10"), a("203.0.113.7"));
    let mut big = ipv4_frame(s2, d2, PROTO_UDP, 64, 5, 0, &udp_datagram(s2, 5000, d2, 7, &[9u8; 1400], true));
    let v = run(&mut t, &mut big, Side::Inside, 0);
    assert_eq!(v, Verdict::ForwardFragmented { egress: Egress::Outside, next_hop: a("198.51.100.1"), mtu: 1280 });
    assert!(checksums_valid(&big), "the whole translated datagram is consistent before splitting");
    let pieces = ipv4::split(&big[14..], 1280).unwrap();
    assert_eq!(pieces.len(), 2);
    assert!(pieces.iter().all(|f| 20 + f.payload.len() <= 1280));
    // A CHECKSUM_PARTIAL datagram gets its checksum finished before it is split.
    let mut seg = udp_datagram(s2, 5001, d2, 7, &[3u8; 1400], true);
    let partial = checksum::fold(checksum::pseudo_header_sum(u32::from(s2), u32::from(d2), 17, seg.len() as u16));
    seg[6..8].copy_from_slice(&partial.to_be_bytes());
    let mut f = ipv4_frame(s2, d2, PROTO_UDP, 64, 6, 0, &seg);
    let meta = FrameMeta { csum_partial: true, ..FrameMeta::plain(Side::Inside, 0) };
    assert!(matches!(t.process(&mut f, meta, 0, &mut [0u8; 2048]), Verdict::ForwardFragmented { .. }));
    assert!(checksums_valid(&f));
    // GSO super-frames are segmented by the device: they pass when each segment fits...
    let mut gso = ipv4_frame(s, d, PROTO_TCP, 64, 3, DF, &tcp_segment(s, 40000, d, 80, tcp::ACK, &[7u8; 4000]));
    let meta = FrameMeta { gso_size: 1200, segments: 4, ..FrameMeta::plain(Side::Inside, 0) };
    assert_eq!(t.process(&mut gso, meta, 0, &mut [0u8; 2048]), OUT);
    // ...and get fragmentation-needed when the segments do not.
    let mut gso = ipv4_frame(s, d, PROTO_TCP, 64, 4, DF, &tcp_segment(s, 40000, d, 80, tcp::ACK, &[7u8; 4000]));
    let meta = FrameMeta { gso_size: 1448, segments: 3, ..FrameMeta::plain(Side::Inside, 0) };
    assert!(matches!(t.process(&mut gso, meta, 0, &mut [0u8; 2048]), Verdict::Emit { .. }));
}

#[test]
fn fragments_follow_the_first_even_out_of_order() {
    let mut t = translator(demo_config());
    let (s, d) = (a("10.10.1.10"), a("203.0.113.7"));
    let dgram = udp_datagram(s, 5000, d, 7, &[0x5a; 2000], true);
    // Split at 1480 bytes of IP payload (185 * 8).
    let first = ipv4_frame(s, d, PROTO_UDP, 64, 0x4242, 0x2000, &dgram[..1480]);
    let second = ipv4_frame(s, d, PROTO_UDP, 64, 0x4242, 185, &dgram[1480..]);
    // The second arrives first: held.
    let mut f2 = second.clone();
    assert_eq!(run(&mut t, &mut f2, Side::Inside, 0), Verdict::Held);
    let mut f1 = first.clone();
    assert_eq!(run(&mut t, &mut f1, Side::Inside, 0), OUT);
    assert_eq!(src_of(&f1), (a("198.51.100.10"), 5000));
    let released = t.take_released();
    assert_eq!(released.len(), 1);
    let (mut held, meta) = released.into_iter().next().unwrap();
    assert_eq!(t.process(&mut held, meta, 1000, &mut [0u8; 2048]), OUT);
    assert_eq!(&held[26..30], &[198, 51, 100, 10]);
    assert_eq!(checksum::fold(checksum::sum(&held[14..34], 0)), 0xffff);
    // Reassembled, the datagram's UDP checksum is valid for the translated addresses.
    let mut whole = f1[34..].to_vec();
    whole.extend_from_slice(&held[34..]);
    let ph = checksum::pseudo_header_sum(u32::from(a("198.51.100.10")), u32::from(d), 17, whole.len() as u16);
    assert_eq!(checksum::fold(checksum::sum(&whole, ph)), 0xffff);
    // A fragment of an unknown datagram times out and is counted.
    let mut stray = ipv4_frame(s, d, PROTO_UDP, 64, 0x9999, 185, &[1u8; 64]);
    assert_eq!(run(&mut t, &mut stray, Side::Inside, 0), Verdict::Held);
    t.tick(10_000);
    assert_eq!(t.counters().get(Counter::DropFragment), 1);
}

#[test]
fn hairpin_reaches_another_inside_host() {
    let mut cfg = demo_config();
    cfg.filtering = Filtering::EndpointIndependent;
    let mut t = translator(cfg);
    // B (10.10.2.10) has a mapping from talking to the outside.
    let mut b = udp("10.10.2.10", 6000, "203.0.113.7", 7, b"b");
    run(&mut t, &mut b, Side::Inside, 1);
    let (b_ext, b_port) = src_of(&b);
    // A reaches B through B's external endpoint.
    let mut to_b = udp("10.10.1.10", 7000, &b_ext.to_string(), b_port, b"hi");
    assert_eq!(
        run(&mut t, &mut to_b, Side::Inside, 0),
        Verdict::Forward { egress: Egress::Inside(1), next_hop: a("10.10.2.10") }
    );
    assert_eq!(dst_of(&to_b), (a("10.10.2.10"), 6000));
    let (a_ext, a_port) = src_of(&to_b);
    assert_eq!(a_ext, a("198.51.100.10"), "B sees A's external address, never its private one");
    assert!(checksums_valid(&to_b));
    // B answers A's external endpoint: back to A.
    let mut back = udp("10.10.2.10", 6000, &a_ext.to_string(), a_port, b"yo");
    assert_eq!(
        run(&mut t, &mut back, Side::Inside, 1),
        Verdict::Forward { egress: Egress::Inside(0), next_hop: a("10.10.1.10") }
    );
    assert_eq!(src_of(&back), (b_ext, b_port));
    assert_eq!(dst_of(&back), (a("10.10.1.10"), 7000));
}

#[test]
fn port_exhaustion_fails_only_the_new_flow() {
    let mut cfg = demo_config();
    cfg.pools[0].lo = 2000;
    cfg.pools[0].hi = 2001;
    let mut t = translator(cfg);
    let mut f1 = udp("10.10.1.10", 1, "203.0.113.7", 7, b"a");
    let mut f2 = udp("10.10.1.10", 2, "203.0.113.7", 7, b"a");
    let mut f3 = udp("10.10.1.10", 3, "203.0.113.7", 7, b"a");
    assert_eq!(run(&mut t, &mut f1, Side::Inside, 0), OUT);
    assert_eq!(run(&mut t, &mut f2, Side::Inside, 0), OUT);
    assert_eq!(run(&mut t, &mut f3, Side::Inside, 0), Verdict::Drop(Counter::DropPortAllocation));
    assert_eq!(t.counters().get(Counter::ErrorPortAllocation), 1);
    let mut again = udp("10.10.1.10", 1, "203.0.113.7", 7, b"b");
    assert_eq!(run(&mut t, &mut again, Side::Inside, 0), OUT, "existing flows unaffected");
}

#[test]
fn table_limit_drops_new_flows_only() {
    let mut cfg = demo_config();
    cfg.max_flows = 2;
    let mut t = translator(cfg);
    for p in [1, 2] {
        let mut f = udp("10.10.1.10", p, "203.0.113.7", 7, b"a");
        assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
        // Answered: not one to give up early.
        let mut r = udp("203.0.113.7", 7, "198.51.100.10", src_of(&f).1, b"r");
        assert!(matches!(run(&mut t, &mut r, Side::Outside, 0), Verdict::Forward { .. }));
    }
    let mut f = udp("10.10.1.10", 3, "203.0.113.7", 7, b"a");
    assert_eq!(run(&mut t, &mut f, Side::Inside, 0), Verdict::Drop(Counter::DropTableFull));
    assert_eq!(t.mappings().len(), 2, "the refused flow's mapping was given back");
    let mut f = udp("10.10.1.10", 1, "203.0.113.7", 7, b"b");
    assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
}

#[test]
fn tcp_close_and_rst_shorten_the_timeout() {
    let mut t = translator(demo_config());
    let mut s = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    run(&mut t, &mut s, Side::Inside, 0);
    let mut r = tcp_at("203.0.113.80", 80, "198.51.100.10", 40000, tcp::RST | tcp::ACK, (0, 1001), 0);
    run(&mut t, &mut r, Side::Outside, 0);
    let f = t.flows().iter().next().unwrap().1;
    assert_eq!(f.state, FlowState::Tcp(TcpState::Closed));
    assert_eq!(f.expires_ms(), 1000 + 10_000);
    let mut fin = tcp_at("10.10.1.10", 40000, "203.0.113.80", 80, tcp::FIN | tcp::ACK, (1001, 0), 0);
    run(&mut t, &mut fin, Side::Inside, 0);
}

/// A copy of `frame` with some bytes replaced.
fn patched(frame: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for &(at, v) in edits {
        f[at] = v;
    }
    f
}

#[test]
fn malformed_frames_are_counted_drops() {
    let mut t = translator(demo_config());
    let good = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    let cases: Vec<(Vec<u8>, Counter)> = vec![
        (good[..20].to_vec(), Counter::DropTruncated),
        (patched(&good, &[(12, 0x86), (13, 0xdd)]), Counter::DropUnknownEthertype),
        (patched(&good, &[(14, 0x44)]), Counter::DropBadIhl),
        (patched(&good, &[(14, 0x4f)]), Counter::DropBadIhl),
        (patched(&good, &[(16, 0x05)]), Counter::DropBadTotalLength),
        (patched(&good, &[(17, 0x10)]), Counter::DropBadTotalLength),
        (patched(&good, &[(24, good[24] ^ 0xff)]), Counter::DropBadIpChecksum),
        (
            {
                let mut f = good.clone();
                f.extend_from_slice(&[0u8; 100]);
                f
            },
            Counter::DropBadTotalLength,
        ),
        (
            {
                let mut seg = tcp_segment(a("10.10.1.10"), 1, a("203.0.113.80"), 80, tcp::SYN, b"");
                seg[12] = 0x40; // data offset 4
                ipv4_frame(a("10.10.1.10"), a("203.0.113.80"), PROTO_TCP, 64, 1, 0, &seg)
            },
            Counter::DropBadTcpHeader,
        ),
        (ipv4_frame(a("10.10.1.10"), a("203.0.113.80"), PROTO_TCP, 64, 1, 0, &[0u8; 12]), Counter::DropBadTcpHeader),
        (
            ipv4_frame(a("10.10.1.10"), a("203.0.113.7"), PROTO_UDP, 64, 1, 0, &[0x13, 0x88, 0, 7, 0, 0, 0, 0]),
            Counter::DropBadUdpLength,
        ),
        (ipv4_frame(a("10.10.1.10"), a("203.0.113.7"), PROTO_ICMP, 64, 1, 0, &[8, 0, 0]), Counter::DropBadIcmp),
        (ipv4_frame(a("10.10.1.10"), a("203.0.113.7"), 47, 64, 1, 0, &[0u8; 8]), Counter::DropUnsupportedProtocol),
        (tcp("192.0.2.1", 1, "203.0.113.80", 80, tcp::SYN), Counter::DropSourceNotInside),
        (udp("10.10.1.10", 68, "255.255.255.255", 67, b"dhcp"), Counter::DropNoRoute),
        (udp("10.10.1.10", 5353, "224.0.0.251", 5353, b"mdns"), Counter::DropNoRoute),
        (udp("10.10.1.10", 5353, "127.0.0.1", 53, b"lo"), Counter::DropNoRoute),
        (udp("10.10.1.10", 1, "10.10.2.10", 1, b"east-west"), Counter::DropNoRoute),
    ];
    for (i, (mut f, want)) in cases.into_iter().enumerate() {
        let v = run(&mut t, &mut f, Side::Inside, 0);
        assert_eq!(v, Verdict::Drop(want), "case {i}");
    }
    // IP options: a 24-byte header.
    let mut f = good.clone();
    f[14] = 0x46;
    f.splice(34..34, [1u8, 1, 1, 0]);
    f[17] += 4;
    f[24] = 0;
    f[25] = 0;
    let c = checksum::compute(&f[14..38]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run(&mut t, &mut f, Side::Inside, 0), Verdict::Drop(Counter::DropIpOptions));
    assert!(t.flows().is_empty());
}

#[test]
fn workers_hand_off_what_they_do_not_own() {
    let mut cfg = demo_config();
    cfg.workers = 2;
    cfg.worker = 0;
    let mut t = translator(cfg);
    let theirs = (5000..).find(|&p| natgw_core::nat::owner_of_port(p, 2) == 1).unwrap();
    let ours = (5000..).find(|&p| natgw_core::nat::owner_of_port(p, 2) == 0).unwrap();
    let mut odd = udp("10.10.1.10", theirs, "203.0.113.7", 7, b"a");
    assert_eq!(run(&mut t, &mut odd, Side::Inside, 0), Verdict::HandOff { worker: 1 });
    assert_eq!(t.counters().get(Counter::HandoffFrames), 1);
    let mut even = udp("10.10.1.10", ours, "203.0.113.7", 7, b"a");
    assert_eq!(run(&mut t, &mut even, Side::Inside, 0), OUT);
    assert_eq!(natgw_core::nat::owner_of_port(src_of(&even).1, 2), 0);
    // A hand-off is processed by its receiver without asking again.
    let mut odd = udp("10.10.1.10", theirs, "203.0.113.7", 7, b"a");
    let meta = FrameMeta { handed_off: true, ..FrameMeta::plain(Side::Inside, 0) };
    assert_eq!(t.process(&mut odd, meta, 0, &mut [0u8; 2048]), OUT);
}

/// A policy written in plain Rust: denies 203.0.113.0/24 port 23, rejects port 25, and
/// sends 10.10.2.0/24 to pool 1 with a budget of 2 ports.
struct TestPolicy {
    calls: Arc<std::sync::atomic::AtomicUsize>,
    block_port: u16,
}

impl FlowPolicy for TestPolicy {
    fn egress(&mut self, f: &NewFlow) -> EgressDecision {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match f.dst_port {
            p if p == self.block_port => EgressDecision::Deny,
            25 => EgressDecision::Reject,
            _ => EgressDecision::Allow,
        }
    }
    fn egress_generation(&self) -> u64 {
        7
    }
    fn port_pool(&mut self, f: &NewFlow) -> PoolDecision {
        if f.ingress == 1 {
            PoolDecision::Pool { pool: 1, budget: Some(2) }
        } else {
            policy::DEFAULT_POOL
        }
    }
}

fn two_pool_config() -> NatConfig {
    let mut cfg = demo_config();
    cfg.external_addrs.push(a("198.51.100.11"));
    cfg.pools.push(PoolSpec { name: "blue".into(), addrs: vec![a("198.51.100.11")], lo: 30000, hi: 30999 });
    cfg
}

fn policed(block_port: u16) -> (Translator, Arc<std::sync::atomic::AtomicUsize>) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut t = translator(two_pool_config());
    t.set_policy(Box::new(TestPolicy { calls: Arc::clone(&calls), block_port }));
    (t, calls)
}

#[test]
fn egress_policy_runs_once_per_new_flow_and_denies_before_allocating() {
    let (mut t, calls) = policed(23);
    let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    assert_eq!(run(&mut t, &mut syn, Side::Inside, 0), OUT);
    let mut ack = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::ACK);
    assert_eq!(run(&mut t, &mut ack, Side::Inside, 0), OUT);
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1, "the fast path never asks the policy");

    let mut telnet = tcp("10.10.1.10", 40001, "203.0.113.80", 23, tcp::SYN);
    assert_eq!(run(&mut t, &mut telnet, Side::Inside, 0), Verdict::Drop(Counter::DropPolicyDenied));
    assert_eq!(t.mappings().len(), 1, "a denied flow allocates no port");
    assert_eq!(t.flows().len(), 1);
    assert_eq!(t.counters().get(Counter::DropPolicyDenied), 1);
}

#[test]
fn reject_answers_tcp_with_a_reset_and_udp_with_admin_prohibited() {
    let (mut t, _) = policed(23);
    let mut syn = tcp("10.10.1.10", 40002, "203.0.113.80", 25, tcp::SYN);
    let (v, out) = run_out(&mut t, &mut syn, Side::Inside, 0);
    let Verdict::Emit { egress, next_hop, len } = v else { panic!("expected a RST, got {v:?}") };
    assert_eq!((egress, next_hop), (Egress::Inside(0), a("10.10.1.10")));
    let rst = &out[..len];
    assert!(checksums_valid(rst), "the RST must have valid checksums");
    assert_eq!(src_of(rst), (a("203.0.113.80"), 25), "from the address the host tried to reach");
    assert_eq!(dst_of(rst), (a("10.10.1.10"), 40002));
    assert_eq!(rst[14 + 20 + 13], tcp::RST | tcp::ACK);
    let syn_seq = u32::from_be_bytes(syn[14 + 20 + 4..14 + 20 + 8].try_into().unwrap());
    let ack = u32::from_be_bytes(rst[14 + 20 + 8..14 + 20 + 12].try_into().unwrap());
    assert_eq!(ack, syn_seq.wrapping_add(1), "acknowledges the SYN");
    assert_eq!(t.counters().get(Counter::TcpResetsSent), 1);

    let mut dgram = udp("10.10.1.10", 5000, "203.0.113.80", 25, b"x");
    let (v, out) = run_out(&mut t, &mut dgram, Side::Inside, 0);
    let Verdict::Emit { len, .. } = v else { panic!("expected an ICMP error, got {v:?}") };
    let icmp = &out[14 + 20..len];
    assert_eq!((icmp[0], icmp[1]), (3, 13), "destination unreachable, administratively prohibited");
    assert!(checksums_valid(&out[..len]));
    assert_eq!(t.counters().get(Counter::DropPolicyRejected), 2);
    assert_eq!(t.mappings().len(), 0);
}

#[test]
fn pool_policy_picks_the_external_address_and_budget() {
    let (mut t, _) = policed(23);
    let mut red = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"q");
    assert_eq!(run(&mut t, &mut red, Side::Inside, 0), OUT);
    assert_eq!(src_of(&red).0, a("198.51.100.10"));
    for (i, port) in [5000u16, 5001].iter().enumerate() {
        let mut blue = udp("10.10.2.10", *port, "203.0.113.80", 53, b"q");
        assert_eq!(run(&mut t, &mut blue, Side::Inside, 1), OUT, "flow {i}");
        let (addr, p) = src_of(&blue);
        assert_eq!(addr, a("198.51.100.11"));
        assert!((30000..=30999).contains(&p), "pool blue's range: {p}");
    }
    let mut third = udp("10.10.2.10", 5002, "203.0.113.80", 53, b"q");
    assert_eq!(run(&mut t, &mut third, Side::Inside, 1), Verdict::Drop(Counter::DropPortAllocation));
    // The reply reaches the blue host through its pool's address.
    let mut reply = udp("203.0.113.80", 53, "198.51.100.11", 30000, b"r");
    assert_eq!(
        run(&mut t, &mut reply, Side::Outside, 0),
        Verdict::Forward { egress: Egress::Inside(1), next_hop: a("10.10.2.10") }
    );
}

#[test]
fn revalidation_revokes_denied_flows_and_resets_tcp() {
    let (mut t, _) = policed(9999);
    let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 23, tcp::SYN);
    assert_eq!(run(&mut t, &mut syn, Side::Inside, 0), OUT);
    let mut dns = udp("10.10.1.10", 5353, "203.0.113.80", 23, b"q");
    assert_eq!(run(&mut t, &mut dns, Side::Inside, 0), OUT);
    let mut ok = tcp("10.10.1.10", 40001, "203.0.113.80", 80, tcp::SYN);
    assert_eq!(run(&mut t, &mut ok, Side::Inside, 0), OUT);
    assert_eq!(t.flows().len(), 3);
    t.record_flow_ends(true, false, 0);
    // A new generation now denies port 23.
    t.set_policy(Box::new(TestPolicy { calls: Default::default(), block_port: 23 }));
    assert_eq!(t.revalidate(1000), 2);
    assert_eq!(t.flows().len(), 2, "the UDP flow is gone, the TCP one lingers to answer with a RST");
    let mut ends = Vec::new();
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].reason, EndReason::Revalidated);
    // The next segment of the revoked TCP flow, from either side, gets a RST.
    let mut seg = tcp("203.0.113.80", 23, "198.51.100.10", 40000, tcp::ACK);
    let (v, out) = run_out(&mut t, &mut seg, Side::Outside, 0);
    let Verdict::Emit { egress: Egress::Outside, len, .. } = v else { panic!("expected a RST outwards, got {v:?}") };
    assert_eq!(out[14 + 20 + 13], tcp::RST);
    assert_eq!(t.counters().get(Counter::DropPolicyRevoked), 1, "the segment itself is a counted drop");
    assert_eq!(src_of(&out[..len]), (a("198.51.100.10"), 40000));
    // The allowed flow is untouched.
    let mut more = tcp("10.10.1.10", 40001, "203.0.113.80", 80, tcp::ACK);
    assert_eq!(run(&mut t, &mut more, Side::Inside, 0), OUT);
}

#[test]
fn flow_ends_carry_the_inside_view_and_counters() {
    let mut t = translator(demo_config());
    t.record_flow_ends(true, true, 0);
    let mut q = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"query");
    assert_eq!(run(&mut t, &mut q, Side::Inside, 0), OUT);
    let mut r = udp("203.0.113.80", 53, "198.51.100.10", 5000, b"answer!");
    run(&mut t, &mut r, Side::Outside, 0);
    t.tick(1000 + 301_000);
    let mut ends = Vec::new();
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1);
    let e = &ends[0];
    assert_eq!((e.src.addr, e.src.port, e.dst.addr, e.dst.port), (a("10.10.1.10"), 5000, a("203.0.113.80"), 53));
    assert_eq!(e.nat_src, Endpoint { addr: a("198.51.100.10"), port: 5000 });
    assert_eq!((e.packets, e.bytes), ([1, 1], [20 + 8 + 5, 20 + 8 + 7]));
    assert_eq!(e.reason, EndReason::IdleTimeout);
    assert_eq!((e.start_ms, e.end_ms, e.created_ms), (1000, 302_000, 1000));
    assert_eq!((e.direction, e.verdict, e.policy_generation), (FlowDirection::Egress, EgressDecision::Allow, 0));
    assert!(e.accepted());
    assert_eq!(t.mappings().len(), 0);
}

#[test]
fn refused_flows_get_a_reject_record_with_verdict_and_generation() {
    let (mut t, _) = policed(23);
    t.record_flow_ends(true, true, 0);
    let mut denied = tcp("10.10.1.10", 40000, "203.0.113.80", 23, tcp::SYN);
    assert_eq!(run(&mut t, &mut denied, Side::Inside, 0), Verdict::Drop(Counter::DropPolicyDenied));
    let mut rejected = udp("10.10.1.10", 5000, "203.0.113.80", 25, b"xyz");
    assert!(matches!(run(&mut t, &mut rejected, Side::Inside, 0), Verdict::Emit { .. }));
    let mut allowed = tcp("10.10.1.10", 40001, "203.0.113.80", 80, tcp::SYN);
    assert_eq!(run(&mut t, &mut allowed, Side::Inside, 0), OUT);
    let mut ends = Vec::new();
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 2, "two refused flows; the allowed one has not ended");
    let (d, r) = (&ends[0], &ends[1]);
    assert_eq!((d.reason, d.verdict, d.policy_generation), (EndReason::Refused, EgressDecision::Deny, 7));
    assert_eq!((d.src.port, d.dst.port, d.proto), (40000, 23, 6));
    assert_eq!((d.packets, d.bytes), ([1, 0], [40, 0]), "the SYN: 20 bytes of IP, 20 of TCP");
    assert_eq!(d.nat_src, Endpoint { addr: Ipv4Addr::UNSPECIFIED, port: 0 }, "never translated");
    assert!(!d.accepted());
    assert_eq!((r.verdict, r.bytes[0]), (EgressDecision::Reject, 20 + 8 + 3));
    // Off, no record: the drop is still counted.
    t.record_flow_ends(true, false, 0);
    let mut again = tcp("10.10.1.10", 40002, "203.0.113.80", 23, tcp::SYN);
    run(&mut t, &mut again, Side::Inside, 0);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 2);
    assert_eq!(t.counters().get(Counter::DropPolicyDenied), 2);
}

#[test]
fn long_flows_get_interim_records_that_count_their_own_window() {
    let (mut t, _) = policed(23);
    t.record_flow_ends(true, true, 60);
    let mut q = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"query");
    assert_eq!(run(&mut t, &mut q, Side::Inside, 0), OUT);
    let mut ends = Vec::new();
    t.tick(30_000);
    t.take_flow_ends(&mut ends);
    assert!(ends.is_empty(), "not yet 60 s old");
    // Keep the flow alive with one packet a window (UDP times out after 300 s idle).
    let mut more = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"query!");
    t.process(&mut more, FrameMeta::plain(Side::Inside, 0), 50_000, &mut [0u8; 2048]);
    t.tick(61_000);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1);
    let first = ends[0].clone();
    assert_eq!((first.reason, first.start_ms, first.end_ms), (EndReason::Active, 1000, 61_000));
    assert_eq!((first.packets, first.bytes), ([2, 0], [33 + 34, 0]));
    assert_eq!(first.policy_generation, 7);
    assert_eq!(t.flows().len(), 1, "an interim record leaves the flow alone");
    // The second window counts only its own packets; the final record the rest.
    let mut last = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"q");
    t.process(&mut last, FrameMeta::plain(Side::Inside, 0), 100_000, &mut [0u8; 2048]);
    t.tick(100_500);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1, "the second window is not over yet");
    t.tick(400_000 + 1000);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 2);
    let end = &ends[1];
    assert_eq!((end.reason, end.start_ms, end.created_ms), (EndReason::IdleTimeout, 61_000, 1000));
    assert_eq!((end.packets, end.bytes), ([1, 0], [29, 0]));
}

#[test]
fn a_closed_connection_is_reported_when_quiet_not_when_time_wait_ends() {
    let mut t = translator(demo_config());
    t.record_flow_ends(true, true, 0);
    let mut o = [0u8; 2048];
    let mut step =
        |t: &mut Translator, f: &mut Vec<u8>, side, now| t.process(f, FrameMeta::plain(side, 0), now, &mut o);
    let mut syn = tcp("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN);
    step(&mut t, &mut syn, Side::Inside, 1000);
    let mut syn_ack = tcp_at("203.0.113.80", 80, "198.51.100.10", 40000, tcp::SYN | tcp::ACK, (5000, 1001), 0);
    step(&mut t, &mut syn_ack, Side::Outside, 1000);
    let mut fin = tcp_at("10.10.1.10", 40000, "203.0.113.80", 80, tcp::FIN | tcp::ACK, (1001, 5001), 0);
    step(&mut t, &mut fin, Side::Inside, 2000);
    let mut fin_back = tcp_at("203.0.113.80", 80, "198.51.100.10", 40000, tcp::FIN | tcp::ACK, (5001, 1002), 0);
    step(&mut t, &mut fin_back, Side::Outside, 2000);
    let mut last_ack = tcp_at("10.10.1.10", 40000, "203.0.113.80", 80, tcp::ACK, (1002, 5002), 0);
    step(&mut t, &mut last_ack, Side::Inside, 2100);
    let mut ends = Vec::new();
    t.tick(2500);
    t.take_flow_ends(&mut ends);
    assert!(ends.is_empty(), "not quiet for a second yet");
    t.tick(3600);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1, "reported a second after the close, minutes before TIME-WAIT ends");
    assert_eq!((ends[0].reason, ends[0].packets), (EndReason::Closed, [3, 2]));
    assert_eq!(t.flows().len(), 1, "the entry lingers in TIME-WAIT");
    t.tick(2100 + 241_000);
    t.take_flow_ends(&mut ends);
    assert_eq!(t.flows().len(), 0);
    assert_eq!(ends.len(), 1, "no second record for the same connection");

    // A reset connection: reason reset.
    let mut syn = tcp("10.10.1.10", 40001, "203.0.113.80", 80, tcp::SYN);
    step(&mut t, &mut syn, Side::Inside, 300_000);
    let mut rst = tcp_at("203.0.113.80", 80, "198.51.100.10", 40001, tcp::RST | tcp::ACK, (0, 1001), 0);
    step(&mut t, &mut rst, Side::Outside, 300_000);
    t.tick(301_500);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 2);
    assert_eq!((ends[1].reason, ends[1].packets), (EndReason::Reset, [1, 1]));
}

/// A port-pool hook that failed closed.
struct RefusingPool;

impl FlowPolicy for RefusingPool {
    fn egress(&mut self, _: &NewFlow) -> EgressDecision {
        EgressDecision::Allow
    }
    fn port_pool(&mut self, _: &NewFlow) -> PoolDecision {
        PoolDecision::Refuse
    }
}

#[test]
fn a_port_pool_hook_failing_closed_drops_the_flow_as_policy_error() {
    let mut t = translator(demo_config());
    t.set_policy(Box::new(RefusingPool));
    let mut q = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"q");
    assert_eq!(run(&mut t, &mut q, Side::Inside, 0), Verdict::Drop(Counter::DropPolicyError));
    assert_eq!(t.mappings().len(), 0);
}

#[test]
fn flow_records_beyond_the_pending_bound_are_counted_not_kept() {
    let (mut t, _) = policed(23);
    t.record_flow_ends(true, true, 0);
    for port in 0..(MAX_PENDING_FLOW_ENDS as u16 + 10) {
        let mut syn = tcp("10.10.1.10", 10_000 + port, "203.0.113.80", 23, tcp::SYN);
        run(&mut t, &mut syn, Side::Inside, 0);
    }
    assert_eq!(t.counters().get(Counter::FlowLogQueueOverflow), 10);
    let mut ends = Vec::new();
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), MAX_PENDING_FLOW_ENDS);
}

#[test]
fn a_full_table_gives_up_the_oldest_unanswered_flow_never_an_answered_one() {
    let mut cfg = demo_config();
    cfg.max_flows = 3;
    let mut t = translator(cfg);
    t.record_flow_ends(true, false, 0);
    for p in [1, 2, 3] {
        let mut f = udp("10.10.1.10", p, "203.0.113.7", 7, b"q");
        assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
    }
    // Flow 2 is answered.
    let ext2 = t.flows().iter().find(|(_, f)| f.keys[0].src_port == 2).map(|(_, f)| f.rewrite(0).src.port).unwrap();
    let mut reply = udp("203.0.113.7", 7, "198.51.100.10", ext2, b"a");
    assert!(matches!(run(&mut t, &mut reply, Side::Outside, 0), Verdict::Forward { .. }));
    let ports = |t: &Translator| {
        let mut p: Vec<u16> = t.flows().iter().map(|(_, f)| f.keys[0].src_port).collect();
        p.sort_unstable();
        p
    };
    // Each new flow takes the place of the oldest unanswered one: 1, then 3, then 4.
    for (new, left) in [(4, [2, 3, 4]), (5, [2, 4, 5]), (6, [2, 5, 6])] {
        let mut f = udp("10.10.1.10", new, "203.0.113.7", 7, b"q");
        assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
        assert_eq!(ports(&t), left);
    }
    assert_eq!(t.counters().get(Counter::EarlyDropCount), 3);
    let mut ends = Vec::new();
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.iter().map(|e| e.reason).collect::<Vec<_>>(), [EndReason::EarlyDrop; 3]);
    assert_eq!(t.mappings().len(), 3, "the dropped flows' mappings went with them");
    // A TCP connection that completes its handshake is answered too; a table of answered
    // flows refuses the new one.
    let mut t = translator(NatConfig { max_flows: 1, ..demo_config() });
    let mut syn = tcp_at("10.10.1.10", 40000, "203.0.113.80", 80, tcp::SYN, (1000, 0), 0);
    run(&mut t, &mut syn, Side::Inside, 0);
    let ext = src_of(&syn).1;
    let mut syn_ack = tcp_at("203.0.113.80", 80, "198.51.100.10", ext, tcp::SYN | tcp::ACK, (5000, 1001), 0);
    run(&mut t, &mut syn_ack, Side::Outside, 0);
    assert_eq!(t.flows().unanswered(), 1, "a SYN-ACK alone does not answer a TCP flow");
    let mut ack = tcp_at("10.10.1.10", 40000, "203.0.113.80", 80, tcp::ACK, (1001, 5001), 0);
    run(&mut t, &mut ack, Side::Inside, 0);
    assert_eq!(t.flows().unanswered(), 0);
    let mut f = udp("10.10.1.11", 1, "203.0.113.7", 7, b"q");
    assert_eq!(run(&mut t, &mut f, Side::Inside, 0), Verdict::Drop(Counter::DropTableFull));
}

#[test]
fn per_source_and_per_mapping_limits_refuse_only_the_one_over_its_share() {
    let mut cfg = demo_config();
    cfg.max_flows_per_source = 2;
    cfg.max_inbound_per_mapping = 2;
    cfg.filtering = Filtering::EndpointIndependent;
    let mut t = translator(cfg);
    for p in [1, 2] {
        let mut f = udp("10.10.1.10", p, "203.0.113.7", 7, b"q");
        assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
    }
    let mut third = udp("10.10.1.10", 3, "203.0.113.7", 7, b"q");
    assert_eq!(run(&mut t, &mut third, Side::Inside, 0), Verdict::Drop(Counter::DropSourceFlowLimit));
    let mut other = udp("10.10.1.11", 3, "203.0.113.7", 7, b"q");
    assert_eq!(run(&mut t, &mut other, Side::Inside, 0), OUT, "another host has its own share");
    assert_eq!(t.flows().flows_of_source(a("10.10.1.10")), 2);
    // Flows from outside towards 10.10.1.10:1's mapping: two peers, not a third.
    let ext = t.flows().iter().find(|(_, f)| f.keys[0].src_port == 1).map(|(_, f)| f.rewrite(0).src.port).unwrap();
    for (peer, want) in [("203.0.113.21", true), ("203.0.113.22", true), ("203.0.113.23", false)] {
        let mut f = udp(peer, 9, "198.51.100.10", ext, b"hi");
        let v = run(&mut t, &mut f, Side::Outside, 0);
        assert_eq!(matches!(v, Verdict::Forward { .. }), want, "{peer}: {v:?}");
    }
    assert_eq!(t.counters().get(Counter::DropMappingInboundLimit), 1);
    // Inbound flows are not the inside host's own: its share is unchanged.
    assert_eq!(t.flows().flows_of_source(a("10.10.1.10")), 2);
}

#[test]
fn room_made_for_an_inbound_flow_may_take_its_mapping_and_then_refuses_it() {
    // One slot: the inside host's unanswered flow holds the mapping an outside peer
    // reaches. Making room gives up that flow, and the mapping with it.
    let mut cfg = demo_config();
    cfg.max_flows = 1;
    cfg.filtering = Filtering::EndpointIndependent;
    let mut t = translator(cfg);
    let mut f = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"q");
    assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
    let ext = src_of(&f).1;
    let mut inbound = udp("203.0.113.99", 9, "198.51.100.10", ext, b"hi");
    assert_eq!(run(&mut t, &mut inbound, Side::Outside, 0), Verdict::Drop(Counter::DropUnsolicitedInbound));
    assert_eq!((t.flows().len(), t.mappings().len()), (0, 0));
    // A hairpin towards a mapping that goes the same way.
    let mut f = udp("10.10.1.10", 5000, "203.0.113.7", 7, b"q");
    run(&mut t, &mut f, Side::Inside, 0);
    let ext = src_of(&f).1;
    let mut hairpin = udp("10.10.1.11", 6000, "198.51.100.10", ext, b"hi");
    assert_eq!(run(&mut t, &mut hairpin, Side::Inside, 0), Verdict::Drop(Counter::DropUnsolicitedInbound));
    assert_eq!((t.flows().len(), t.mappings().len()), (0, 0));
}

#[test]
fn a_flood_of_fragments_from_random_sources_does_not_stop_real_fragmented_traffic() {
    // A small budget (256 entries' worth) so that the flood overruns it many times over.
    let mut cfg = demo_config();
    cfg.fragment_memory = 32 << 10; // 256 entries of 128 bytes
    let mut t = translator(cfg);
    let (host, server, ext) = (a("10.10.1.10"), a("203.0.113.7"), a("198.51.100.10"));
    let mut out = [0u8; 2048];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut exchanged = 0;
    for round in 0..100u16 {
        // The flood: first fragments that never complete, and later fragments of
        // datagrams that never start, from random outside sources towards natgw.
        for _ in 0..1000 {
            let r = next();
            let src = Ipv4Addr::from(0x0b00_0000 | (r as u32 >> 8));
            let first = r & 1 == 0;
            let flags_frag = if first { MF } else { MF | 100 };
            let mut f = ipv4_frame(src, ext, PROTO_UDP, 64, (r >> 40) as u16, flags_frag, &[0x66; 1200]);
            assert!(!matches!(
                t.process(&mut f, FrameMeta::plain(Side::Outside, 0), 1000, &mut out),
                Verdict::Forward { .. }
            ));
        }
        // A 6000-byte UDP exchange, and a 3000-byte ping, both ways in fragments.
        let sport = 5000 + round;
        let up = udp_datagram(host, sport, server, 7, &[0x5a; 6000], true);
        let mut ext_port = 0;
        for mut f in fragments(host, server, PROTO_UDP, round, &up, 1480) {
            assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT, "round {round}: a fragment from inside");
            if ext_port == 0 {
                ext_port = src_of(&f).1;
            }
        }
        let down = udp_datagram(server, 7, ext, ext_port, &[0xa5; 6000], true);
        for mut f in fragments(server, ext, PROTO_UDP, 0x8000 | round, &down, 1480) {
            let v = run(&mut t, &mut f, Side::Outside, 0);
            assert!(matches!(v, Verdict::Forward { egress: Egress::Inside(0), .. }), "round {round}: {v:?}");
        }
        let echo = icmp_message(8, 0, [0x12, 0x34, 0, 1], &[0x70; 3000]);
        let mut echo_id = 0;
        for mut f in fragments(host, server, PROTO_ICMP, 0x4000 | round, &echo, 1480) {
            assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT, "round {round}: the ping");
            if echo_id == 0 {
                echo_id = u16::from_be_bytes([f[38], f[39]]);
            }
        }
        let [hi, lo] = echo_id.to_be_bytes();
        let reply = icmp_message(0, 0, [hi, lo, 0, 1], &[0x70; 3000]);
        for mut f in fragments(server, ext, PROTO_ICMP, 0x2000 | round, &reply, 1480) {
            let v = run(&mut t, &mut f, Side::Outside, 0);
            assert!(
                matches!(v, Verdict::Forward { egress: Egress::Inside(0), .. }),
                "round {round}: the echo reply {v:?}"
            );
        }
        exchanged += 1;
    }
    assert_eq!(exchanged, 100);
    t.tick(1000);
    assert!(t.counters().get(Counter::FragmentEvictionCount) > 50_000, "the flood overran the budget");
}

#[test]
fn a_source_past_its_fragment_share_is_counted_and_crowds_out_nobody() {
    let mut cfg = demo_config();
    cfg.fragment_memory = 32 << 10; // a share of 2 KiB: 16 entries a source
    let mut t = translator(cfg);
    let (noisy, quiet, server) = (a("10.10.1.10"), a("10.10.1.11"), a("203.0.113.7"));
    // The noisy host sends 100 datagrams whose later fragments never come: only its
    // share of them is tracked, each refusal counted.
    for ident in 0..100u16 {
        let d = udp_datagram(noisy, 4000, server, 7, &[0x11; 3000], true);
        let mut first = fragments(noisy, server, PROTO_UDP, ident, &d, 1480).remove(0);
        assert_eq!(run(&mut t, &mut first, Side::Inside, 0), OUT, "a first fragment goes out");
    }
    t.tick(0);
    let refused = t.counters().get(Counter::FragmentTrackingRefused);
    assert!((80..=90).contains(&refused), "{refused} first fragments untracked past the share of 16");
    // Another host's fragmented datagram passes whole.
    let d = udp_datagram(quiet, 4001, server, 7, &[0x22; 3000], true);
    for mut f in fragments(quiet, server, PROTO_UDP, 7, &d, 1480) {
        assert_eq!(run(&mut t, &mut f, Side::Inside, 0), OUT);
    }
}

/// Refuses every flow; the test moves its generation and says whether it "failed".
struct Refuser {
    calls: Arc<std::sync::atomic::AtomicUsize>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl FlowPolicy for Refuser {
    fn egress(&mut self, _: &NewFlow) -> EgressDecision {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EgressDecision::Deny
    }
    fn egress_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn egress_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn port_pool(&mut self, _: &NewFlow) -> PoolDecision {
        policy::DEFAULT_POOL
    }
}

#[test]
fn a_flood_on_a_refused_tuple_costs_one_call_and_one_record_per_interval() {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = Arc::new(Counters::default());
    let mut t = Translator::new(NatConfig { refusal_cache_ms: 1000, ..demo_config() }, counters.clone(), 0);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(7));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    t.set_policy(Box::new(Refuser { calls: calls.clone(), generation: generation.clone(), failed: failed.clone() }));
    t.record_flow_ends(true, true, 0);
    let mut out = [0u8; 2048];
    let mut send = |t: &mut Translator, sport: u16, now: u64| {
        let mut f = udp("10.10.1.10", sport, "203.0.113.80", 53, b"flood");
        t.process(&mut f, FrameMeta::plain(Side::Inside, 0), now, &mut out)
    };
    let mut ends = Vec::new();
    // 500 packets on one tuple within the interval: one call, one record at once.
    for now in 0..500 {
        assert_eq!(send(&mut t, 5000, now), Verdict::Drop(Counter::DropPolicyDenied), "every packet refused");
    }
    assert_eq!(calls.load(Relaxed), 1);
    assert_eq!(counters.get(Counter::PolicyRefusalsCached), 499);
    assert_eq!(counters.get(Counter::DropPolicyDenied), 500, "each refused packet still counted as dropped");
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1);
    assert_eq!((ends[0].packets, ends[0].policy_generation), ([1, 0], 7));
    // When the interval ends, the other 499 arrive as one summary record.
    ends.clear();
    t.tick(1000);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.len(), 1, "one summary");
    let s = &ends[0];
    assert_eq!((s.reason, s.verdict, s.src.port, s.dst.port), (EndReason::Refused, EgressDecision::Deny, 5000, 53));
    assert_eq!((s.packets, s.bytes, s.start_ms, s.end_ms), ([499, 0], [499 * 33, 0], 1, 499));
    assert_eq!(counters.get(Counter::FlowLogRefusalsSummarized), 499);

    // Another source port is another question; the first tuple, its answer expired, is
    // asked again and gets no second first-record.
    ends.clear();
    send(&mut t, 5001, 1001);
    send(&mut t, 5000, 1002);
    assert_eq!(calls.load(Relaxed), 3);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.iter().map(|e| e.src.port).collect::<Vec<_>>(), [5001], "{ends:?}");
    // That packet is in the first tuple's next summary.
    ends.clear();
    t.tick(2100);
    t.take_flow_ends(&mut ends);
    let summary: Vec<_> = ends.iter().filter(|e| e.src.port == 5000).map(|e| (e.packets, e.start_ms)).collect();
    assert_eq!(summary, [([1, 0], 1002)]);
    // A new generation (a swap) asks again at once, and records its first refusal.
    ends.clear();
    generation.store(8, Relaxed);
    send(&mut t, 5000, 2101);
    send(&mut t, 5000, 2102);
    assert_eq!(calls.load(Relaxed), 4);
    t.take_flow_ends(&mut ends);
    assert_eq!(ends.iter().map(|e| e.policy_generation).collect::<Vec<_>>(), [8]);
    // The fail mode answers for a failed policy, not for the tuple: never remembered.
    failed.store(true, Relaxed);
    for now in 3000..3010 {
        send(&mut t, 6000, now);
    }
    assert_eq!(calls.load(Relaxed), 14, "a failed policy is asked again for every packet");
    // More refused tuples than the cache holds (4096 a worker): the ones given up while
    // they still held are counted.
    failed.store(false, Relaxed);
    for sport in 0..10_000u16 {
        send(&mut t, 10_000 + sport, 4000);
    }
    let evicted = counters.get(Counter::PolicyRefusalsEvicted);
    assert!((5_000..10_000).contains(&evicted), "{evicted} refusals evicted");
}

/// Refuses every flow, and says how long the refusal holds.
struct HoldingRefuser {
    calls: Arc<std::sync::atomic::AtomicUsize>,
    hold_ms: Option<u32>,
}

impl FlowPolicy for HoldingRefuser {
    fn egress(&mut self, _: &NewFlow) -> EgressDecision {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EgressDecision::Reject
    }
    fn egress_generation(&self) -> u64 {
        1
    }
    fn egress_hold_ms(&self) -> Option<u32> {
        self.hold_ms
    }
    fn port_pool(&mut self, _: &NewFlow) -> PoolDecision {
        policy::DEFAULT_POOL
    }
}

#[test]
fn a_refusal_holds_as_long_as_its_policy_says() {
    use std::sync::atomic::Ordering::Relaxed;
    // The operator's default holds a refusal for 1 s; the policy's answer overrides it.
    for (hold_ms, calls_in_2s) in [(Some(0), 200), (Some(1500), 2), (None, 2), (Some(5000), 1), (Some(u32::MAX), 1)] {
        let counters = Arc::new(Counters::default());
        let mut t = Translator::new(NatConfig { refusal_cache_ms: 1000, ..demo_config() }, counters.clone(), 0);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        t.set_policy(Box::new(HoldingRefuser { calls: calls.clone(), hold_ms }));
        let mut out = [0u8; 2048];
        // A UDP sender retrying one tuple every 10 ms for 2 s.
        for now in (0..2000).step_by(10) {
            let mut f = udp("10.10.1.10", 5000, "203.0.113.80", 53, b"retry");
            let v = t.process(&mut f, FrameMeta::plain(Side::Inside, 0), now, &mut out);
            assert!(!matches!(v, Verdict::Forward { .. }), "{hold_ms:?}: refused at {now}");
            t.tick(now);
        }
        assert_eq!(calls.load(Relaxed), calls_in_2s, "hold {hold_ms:?}: policy calls");
        assert_eq!(counters.get(Counter::PolicyRefusalsCached) as usize, 200 - calls_in_2s, "hold {hold_ms:?}");
    }
}
