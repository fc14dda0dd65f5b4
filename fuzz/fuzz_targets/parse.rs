//! Every parser natgw runs on untrusted bytes: Ethernet, ARP, IPv4, TCP, UDP, ICMP, the
//! packet an ICMP error quotes, and the ARP state machine. None may panic. (The config
//! file is operator input, not traffic: `natgw`'s own tests feed its parser mutated
//! configs.)
//!
//! etherparse is the differential oracle: whenever natgw accepts a header, etherparse
//! accepts the same bytes and reads equal fields; whenever natgw refuses a header that
//! etherparse accepts, the reason is one of those natgw refuses by design:
//! - IPv4: options (IHL > 5, natgw forwards none), or a total length that cannot be: shorter
//!   than the header, or beyond the bytes received (natgw needs the whole packet;
//!   etherparse's header slice reads only the header);
//! - UDP: a length field below 8 or beyond the datagram (etherparse's header slice does
//!   not check it);
//! - ARP: anything but Ethernet/IPv4 ARP.
//!   And the one thing natgw accepts that etherparse refuses: an ICMP timestamp (types 13
//!   and 14, code 0) not exactly 20 bytes long, which natgw reads only as an 8-byte header
//!   of a type it does not translate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw_core::l2::{Arp, L2Link};
use natgw_wire::{
    ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Net, Ipv4Packet, L4Header, QuoteRepr, QuotedPacket, TcpPacket,
    UdpPacket, WireError, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};

/// Valid by RFC 1071, computed by etherparse: the one's-complement sum of the covered
/// bytes, checksum field included, is all ones.
fn sums_to_all_ones(bytes: &[u8]) -> bool {
    etherparse::checksum::Sum16BitWords::new().add_slice(bytes).ones_complement() == 0
}

fn ipv4(data: &[u8]) {
    let ours = Ipv4Packet::new_checked(data).and_then(|ip| {
        if ip.header_len() != 20 {
            Err(WireError::IpOptions)
        } else {
            Ok(ip)
        }
    });
    let theirs = etherparse::Ipv4HeaderSlice::from_slice(data);
    match (ours, theirs) {
        (Ok(ip), Ok(e)) => {
            assert_eq!(ip.version(), e.version());
            assert_eq!(ip.header_len(), usize::from(e.ihl()) * 4);
            assert_eq!(ip.total_len(), usize::from(e.total_len()));
            assert_eq!(ip.ident(), e.identification());
            assert_eq!((ip.dont_fragment(), ip.more_fragments()), (e.dont_fragment(), e.more_fragments()));
            assert_eq!(ip.frag_offset(), usize::from(e.fragments_offset().value()) * 8);
            assert_eq!((ip.ttl(), ip.protocol(), ip.checksum()), (e.ttl(), e.protocol().0, e.header_checksum()));
            assert_eq!((ip.src_addr(), ip.dst_addr()), (e.source_addr(), e.destination_addr()));
            assert_eq!(ip.verify_checksum(), sums_to_all_ones(e.slice()));
            transport(ip.protocol(), ip.payload(), ip.is_fragment());
        }
        (Ok(_), Err(e)) => panic!("natgw accepts an IPv4 header etherparse refuses: {e:?}"),
        (Err(why), Ok(e)) => {
            let by_design = match why {
                WireError::IpOptions => e.ihl() > 5,
                WireError::BadTotalLength => {
                    let total = usize::from(e.total_len());
                    total > data.len() || total < usize::from(e.ihl()) * 4
                }
                _ => false,
            };
            assert!(by_design, "natgw refuses an IPv4 header etherparse accepts ({why:?}): {e:?}");
        }
        (Err(_), Err(_)) => {}
    }
    // A header quoted in an ICMP error needs only itself.
    if let Ok(q) = QuotedPacket::new_checked(data) {
        let r = QuoteRepr::parse(&q);
        let e = etherparse::Ipv4HeaderSlice::from_slice(data).expect("a quoted header natgw accepts");
        assert_eq!((r.src, r.dst, r.protocol), (e.source_addr(), e.destination_addr(), e.protocol().0));
        let _ = q.transport_checksum();
    }
}

fn transport(protocol: u8, l4: &[u8], fragment: bool) {
    let _ = if fragment { L4Header::parse_first_fragment(protocol, l4) } else { L4Header::parse(protocol, l4) };
    match protocol {
        PROTO_TCP => tcp(l4),
        PROTO_UDP => udp(l4),
        PROTO_ICMP => icmp(l4),
        _ => {}
    }
}

fn tcp(data: &[u8]) {
    match (TcpPacket::new_checked(data), etherparse::TcpHeaderSlice::from_slice(data)) {
        (Ok(t), Ok(e)) => {
            assert_eq!((t.src_port(), t.dst_port()), (e.source_port(), e.destination_port()));
            assert_eq!((t.seq_number(), t.ack_number()), (e.sequence_number(), e.acknowledgment_number()));
            assert_eq!(t.header_len(), usize::from(e.data_offset()) * 4);
            let f = t.flags();
            assert_eq!(
                [f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0, f & 0x10 != 0, f & 0x20 != 0, f & 0x40 != 0, f & 0x80 != 0],
                [e.fin(), e.syn(), e.rst(), e.psh(), e.ack(), e.urg(), e.ece(), e.cwr()]
            );
            assert_eq!((t.window_len(), t.checksum(), t.urgent_at()), (e.window_size(), e.checksum(), e.urgent_pointer()));
            assert_eq!(t.options(), e.options());
            options(t.options(), e.options_iterator());
        }
        (Ok(_), Err(e)) => panic!("natgw accepts a TCP header etherparse refuses: {e:?}"),
        (Err(why), Ok(e)) => panic!("natgw refuses a TCP header etherparse accepts ({why:?}): {e:?}"),
        (Err(_), Err(_)) => {}
    }
}

/// TCP options: iteration ends within the bytes, and where etherparse reads every option
/// without complaint, natgw reads the same window scale, SACK permission, SACK edge and
/// timestamps (what window tracking uses).
fn options(bytes: &[u8], theirs: etherparse::TcpOptionsIterator<'_>) {
    use etherparse::TcpOptionElement as E;
    use natgw_wire::tcp::{Options, TcpOption, OPT_MSS};
    let ours: Vec<TcpOption> = Options::new(bytes).collect();
    assert!(ours.len() <= bytes.len() / 2, "more options than bytes allow");
    let mut expected = Vec::new();
    for o in theirs {
        let Ok(o) = o else { return };
        expected.push(match o {
            E::Noop => continue,
            E::MaximumSegmentSize(_) => TcpOption::Other(OPT_MSS),
            E::WindowScale(s) => TcpOption::WindowScale(s.min(14)),
            E::SelectiveAcknowledgementPermitted => TcpOption::SackPermitted,
            E::SelectiveAcknowledgement(first, rest) => {
                let edge = rest.iter().flatten().fold(first.1, |m, e| if (e.1.wrapping_sub(m) as i32) > 0 { e.1 } else { m });
                TcpOption::SackRightEdge(edge)
            }
            E::Timestamp(..) => TcpOption::Timestamps,
        });
    }
    assert_eq!(ours, expected, "options {bytes:02x?}");
}

fn udp(data: &[u8]) {
    match (UdpPacket::new_checked(data), etherparse::UdpHeaderSlice::from_slice(data)) {
        (Ok(u), Ok(e)) => {
            assert_eq!((u.src_port(), u.dst_port()), (e.source_port(), e.destination_port()));
            assert_eq!((u.length(), u.checksum()), (e.length(), e.checksum()));
        }
        (Ok(_), Err(e)) => panic!("natgw accepts a UDP header etherparse refuses: {e:?}"),
        (Err(why), Ok(e)) => {
            let by_design =
                why == WireError::BadUdpLength && (e.length() < 8 || usize::from(e.length()) > data.len());
            assert!(by_design, "natgw refuses a UDP header etherparse accepts ({why:?}): {e:?}");
        }
        (Err(_), Err(_)) => {}
    }
}

fn icmp(data: &[u8]) {
    match (Icmpv4Packet::new_checked(data), etherparse::Icmpv4Slice::from_slice(data)) {
        (Ok(m), Ok(e)) => {
            assert_eq!((m.msg_type(), m.msg_code(), m.checksum()), (e.type_u8(), e.code_u8(), e.checksum()));
            assert_eq!(m.verify_checksum(), sums_to_all_ones(e.slice()));
        }
        (Ok(m), Err(e)) => {
            let timestamp = matches!(m.msg_type(), 13 | 14) && m.msg_code() == 0 && data.len() != 20;
            assert!(timestamp, "natgw accepts an ICMP message etherparse refuses: {e:?}");
        }
        (Err(why), Ok(e)) => panic!("natgw refuses an ICMP message etherparse accepts ({why:?}): {e:?}"),
        (Err(_), Err(_)) => {}
    }
}

fn arp(data: &[u8]) {
    match (ArpPacket::new_checked(data), etherparse::ArpPacketSlice::from_slice(data)) {
        (Ok(a), Ok(e)) => {
            assert_eq!(a.operation(), e.operation().0);
            assert_eq!(&a.sender_mac()[..], e.sender_hw_addr());
            assert_eq!(&a.sender_ip().octets()[..], e.sender_protocol_addr());
            assert_eq!(&a.target_mac()[..], e.target_hw_addr());
            assert_eq!(&a.target_ip().octets()[..], e.target_protocol_addr());
        }
        (Ok(_), Err(e)) => panic!("natgw accepts an ARP packet etherparse refuses: {e:?}"),
        (Err(why), Ok(e)) => {
            let ethernet_ipv4 = e.hw_addr_type().0 == 1 && e.proto_addr_type().0 == 0x0800 && e.hw_addr_size() == 6 && e.proto_addr_size() == 4;
            let by_design = !ethernet_ipv4 && matches!(why, WireError::UnknownEtherType | WireError::Truncated);
            assert!(by_design, "natgw refuses an ARP packet etherparse accepts ({why:?}): {e:?}");
        }
        (Err(_), Err(_)) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let e = etherparse::Ethernet2HeaderSlice::from_slice(data).expect("an Ethernet header natgw accepts");
        assert_eq!((eth.dst(), eth.src(), eth.ethertype()), (e.destination(), e.source(), e.ether_type().0));
        ipv4(eth.payload());
        arp(eth.payload());
    }
    ipv4(data);
    for proto in [PROTO_TCP, PROTO_UDP, PROTO_ICMP] {
        transport(proto, data, false);
    }
    arp(data);
    let mut arp = Arp::new(vec![L2Link {
        name: "in1".into(),
        mac: [2, 0, 0, 0, 0, 1],
        addresses: vec![Ipv4Net { addr: [10, 10, 1, 1].into(), prefix: 24 }],
    }]);
    let _ = arp.receive(0, data, 0, &mut [0u8; 64]);
});
