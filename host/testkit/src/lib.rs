//! natgw-testkit: what natgw's tests share, kept out of the crates they test: the demo
//! gateway's translator config, and packet builders and checkers written with etherparse,
//! an implementation independent of natgw-wire. Builders compute every checksum from
//! scratch, so a test that compares with them checks natgw's incremental updates against
//! a full computation by someone else's code.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod counting_alloc;

use std::net::Ipv4Addr;

use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header, Icmpv4Slice, Icmpv4Type, IpFragOffset, IpHeaders,
    IpNumber, Ipv4Header, Ipv4HeaderSlice, PacketBuilder, TcpHeader, TcpHeaderSlice, UdpHeader, UdpHeaderSlice,
};
use natgw_core::conntrack::Timeouts;
use natgw_core::nat::pool::PoolSpec;
use natgw_core::nat::{Filtering, InsideLink, NatConfig};
use natgw_wire::{Ipv4Net, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

pub const GW_IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

pub fn a(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// The demo gateway: in1 10.10.1.1/24, in2 10.10.2.1/24, outside 198.51.100.10/.11.
pub fn demo_config() -> NatConfig {
    NatConfig {
        inside: vec![
            InsideLink { name: "in1".into(), addresses: vec![Ipv4Net { addr: a("10.10.1.1"), prefix: 24 }], mtu: 1500 },
            InsideLink { name: "in2".into(), addresses: vec![Ipv4Net { addr: a("10.10.2.1"), prefix: 24 }], mtu: 1500 },
        ],
        external_addrs: vec![a("198.51.100.10")],
        source_ports: Default::default(),
        source_flows: Default::default(),
        pools: vec![PoolSpec { name: "default".into(), addrs: vec![a("198.51.100.10")], lo: 1024, hi: 65535 }],
        outside_net: Ipv4Net { addr: a("198.51.100.0"), prefix: 24 },
        outside_gateway: a("198.51.100.1"),
        outside_mtu: 1500,
        filtering: Filtering::AddressAndPortDependent,
        timeouts: Timeouts::default(),
        max_flows: 1000,
        high_water_flows: 1000,
        max_flows_per_source: 0,
        max_inbound_per_mapping: 0,
        fragment_memory: 4 << 20,
        worker: 0,
        workers: 1,
        icmp_error_rate: 1000,
        // Off: the translator tests count one policy call and record per packet.
        refusal_cache_ms: 0,
        node_slice: (0, 1),
    }
}

/// DF in an IPv4 flags-and-offset word.
pub const DF: u16 = 0x4000;
/// MF in an IPv4 flags-and-offset word.
pub const MF: u16 = 0x2000;

/// Ethernet (host to gateway) + IPv4 header (IHL 5) around `l4`, with a correct header
/// checksum. `flags_frag` is the raw flags-and-offset word (`DF`, `MF`, offset / 8).
pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, ident: u16, flags_frag: u16, l4: &[u8]) -> Vec<u8> {
    let len = u16::try_from(l4.len()).expect("an IPv4 payload");
    let mut ip = Ipv4Header::new(len, ttl, IpNumber(proto), src.octets(), dst.octets()).expect("size");
    ip.identification = ident;
    ip.dont_fragment = flags_frag & DF != 0;
    ip.more_fragments = flags_frag & MF != 0;
    ip.fragment_offset = IpFragOffset::try_new(flags_frag & 0x1fff).expect("offset");
    ip.header_checksum = ip.calc_header_checksum();
    let mut f = Vec::with_capacity(34 + l4.len());
    Ethernet2Header { source: HOST_MAC, destination: GW_IN_MAC, ether_type: EtherType::IPV4 }
        .write(&mut f)
        .expect("vec");
    ip.write(&mut f).expect("vec");
    f.extend_from_slice(l4);
    f
}

/// A TCP segment (sequence 1000, window 65535) with `flags` and a valid checksum.
pub fn tcp_segment(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_segment_at(src, sport, dst, dport, flags, (1000, 0), payload)
}

/// A TCP segment at sequence `seq` acknowledging `ack` (window 65535).
pub fn tcp_segment_at(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    (seq, ack): (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let mut t = TcpHeader::new(sport, dport, seq, 65535);
    t.acknowledgment_number = ack;
    t.fin = flags & 0x01 != 0;
    t.syn = flags & 0x02 != 0;
    t.rst = flags & 0x04 != 0;
    t.psh = flags & 0x08 != 0;
    t.ack = flags & 0x10 != 0;
    t.urg = flags & 0x20 != 0;
    t.checksum = t.calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload).expect("size");
    let mut seg = t.to_bytes().to_vec();
    seg.extend_from_slice(payload);
    seg
}

/// A UDP datagram, with a valid checksum or none (0).
pub fn udp_datagram(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
    with_checksum: bool,
) -> Vec<u8> {
    let u = if with_checksum {
        UdpHeader::with_ipv4_checksum(sport, dport, &ipv4_for(src, dst, PROTO_UDP, 8 + payload.len()), payload)
            .expect("size")
    } else {
        UdpHeader::without_ipv4_checksum(sport, dport, payload.len()).expect("size")
    };
    let mut d = u.to_bytes().to_vec();
    d.extend_from_slice(payload);
    d
}

/// A datagram's transport bytes `l4` as IPv4 fragments (TTL 64, ID `ident`) of at most
/// `chunk` bytes of payload each (a multiple of 8), in order.
pub fn fragments(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ident: u16, l4: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    assert!(chunk.is_multiple_of(8) && chunk > 0, "fragment payloads are multiples of 8 bytes");
    let pieces: Vec<&[u8]> = l4.chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let offset = u16::try_from(i * chunk / 8).expect("an offset");
            ipv4_frame(src, dst, proto, 64, ident, offset | if i < last { MF } else { 0 }, piece)
        })
        .collect()
}

fn ipv4_for(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> Ipv4Header {
    let len = u16::try_from(payload_len).expect("an IPv4 payload");
    Ipv4Header::new(len, 64, IpNumber(proto), src.octets(), dst.octets()).expect("size")
}

/// An ICMP message of any type: bytes 4..8 are `rest`, then `body`; valid checksum.
pub fn icmp_message(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let kind = Icmpv4Type::Unknown { type_u8: icmp_type, code_u8: code, bytes5to8: rest };
    let mut m = Icmpv4Header::with_checksum(kind, body).to_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

/// An echo request or reply with identifier `ident`.
pub fn echo(icmp_type: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&ident.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    icmp_message(icmp_type, 0, rest, b"natgw-ping-payload")
}

/// The IPv4 header of the literal packets below: TTL 64, identification 1.
fn literal_ip(src: &str, dst: &str, dont_fragment: bool) -> IpHeaders {
    let mut ip = Ipv4Header::new(0, 64, IpNumber(0), a(src).octets(), a(dst).octets()).expect("size");
    ip.identification = 1;
    ip.dont_fragment = dont_fragment;
    IpHeaders::Ipv4(ip, Default::default())
}

/// A TCP segment (DF, sequence 1000, window 65535) from the host to the gateway's MAC.
pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    let (s, d) = (a(src), a(dst));
    let seg = tcp_segment(s, sport, d, dport, flags, b"");
    let header = TcpHeaderSlice::from_slice(&seg).expect("a TCP header").to_header();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, GW_IN_MAC)
        .ip(literal_ip(src, dst, true))
        .tcp_header(header)
        .write(&mut f, &[])
        .expect("vec");
    f
}

/// A TCP segment (DF) with real sequence and acknowledgment numbers, `len` bytes of data.
pub fn tcp_at(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, seq_ack: (u32, u32), len: usize) -> Vec<u8> {
    let (s, d) = (a(src), a(dst));
    ipv4_frame(s, d, PROTO_TCP, 64, 1, DF, &tcp_segment_at(s, sport, d, dport, flags, seq_ack, &vec![b'd'; len]))
}

/// A UDP datagram with a checksum.
pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, GW_IN_MAC)
        .ip(literal_ip(src, dst, false))
        .udp(sport, dport)
        .write(&mut f, payload)
        .expect("vec");
    f
}

/// An echo request or reply (sequence 1).
pub fn ping(src: &str, dst: &str, icmp_type: u8, ident: u16) -> Vec<u8> {
    let kind = if icmp_type == 0 {
        Icmpv4Type::EchoReply(IcmpEchoHeader { id: ident, seq: 1 })
    } else {
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id: ident, seq: 1 })
    };
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, GW_IN_MAC)
        .ip(literal_ip(src, dst, false))
        .icmpv4(kind)
        .write(&mut f, b"natgw-ping-payload")
        .expect("vec");
    f
}

/// Every checksum in an IPv4 frame (IHL 5, not a fragment) is what etherparse computes.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let Ok(ip) = Ipv4HeaderSlice::from_slice(&frame[14..]) else { return false };
    if ip.to_header().calc_header_checksum() != ip.header_checksum() {
        return false;
    }
    let l4 = &frame[14 + ip.slice().len()..14 + usize::from(ip.total_len())];
    let (src, dst) = (ip.source(), ip.destination());
    match ip.protocol().0 {
        PROTO_TCP => TcpHeaderSlice::from_slice(l4).is_ok_and(|t| {
            let payload = &l4[t.slice().len()..];
            t.to_header().calc_checksum_ipv4_raw(src, dst, payload).ok() == Some(t.checksum())
        }),
        PROTO_UDP => UdpHeaderSlice::from_slice(l4).is_ok_and(|u| {
            u.checksum() == 0 || u.to_header().calc_checksum_ipv4_raw(src, dst, &l4[8..]).ok() == Some(u.checksum())
        }),
        PROTO_ICMP => {
            Icmpv4Slice::from_slice(l4).is_ok_and(|m| m.icmp_type().calc_checksum(m.payload()) == m.checksum())
        }
        _ => true,
    }
}

/// The IPv4 source and the TCP/UDP source port (ICMP: bytes 4..6, the echo identifier).
pub fn src_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    let ip = Ipv4HeaderSlice::from_slice(&frame[14..]).expect("IPv4");
    (ip.source_addr(), port_at(frame, ip.protocol().0, 0))
}

/// The IPv4 destination and the TCP/UDP destination port (ICMP: the echo identifier).
pub fn dst_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    let ip = Ipv4HeaderSlice::from_slice(&frame[14..]).expect("IPv4");
    (ip.destination_addr(), port_at(frame, ip.protocol().0, 2))
}

fn port_at(frame: &[u8], proto: u8, at: usize) -> u16 {
    let l4 = &frame[34..];
    let at = if proto == PROTO_ICMP { 4 } else { at };
    u16::from_be_bytes([l4[at], l4[at + 1]])
}

pub fn ttl_of(frame: &[u8]) -> u8 {
    Ipv4HeaderSlice::from_slice(&frame[14..]).expect("IPv4").ttl()
}
