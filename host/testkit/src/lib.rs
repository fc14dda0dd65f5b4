//! natgw-testkit: what natgw's tests share, kept out of the crates they test. Packet
//! builders and checkers (builders compute every checksum from scratch, so a test that
//! compares with them checks the incremental updates against an independent full
//! computation) and the demo gateway's translator config.

#![deny(unsafe_code)]

use std::net::Ipv4Addr;

use natgw_core::conntrack::Timeouts;
use natgw_core::nat::pool::PoolSpec;
use natgw_core::nat::{Filtering, InsideLink, NatConfig};
use natgw_wire::checksum;
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
        pools: vec![PoolSpec { name: "default".into(), addrs: vec![a("198.51.100.10")], lo: 1024, hi: 65535 }],
        outside_net: Ipv4Net { addr: a("198.51.100.0"), prefix: 24 },
        outside_gateway: a("198.51.100.1"),
        outside_mtu: 1500,
        filtering: Filtering::AddressAndPortDependent,
        timeouts: Timeouts::default(),
        max_flows: 1000,
        worker: 0,
        workers: 1,
        icmp_error_rate: 1000,
    }
}

/// Ethernet + IPv4 header (IHL 5) around `l4`, with a correct header checksum.
pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, ident: u16, flags_frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4.len());
    f.extend_from_slice(&GW_IN_MAC);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4.len()) as u16;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[6..8].copy_from_slice(&flags_frag.to_be_bytes());
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum::compute(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(l4);
    f
}

pub const DF: u16 = 0x4000;

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let ph = checksum::pseudo_header_sum(u32::from(src), u32::from(dst), proto, seg.len() as u16);
    !checksum::fold(checksum::sum(seg, ph))
}

pub fn tcp_segment(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    let c = l4_checksum(src, dst, PROTO_TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

pub fn udp_datagram(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
    with_checksum: bool,
) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&len.to_be_bytes());
    u.extend_from_slice(payload);
    if with_checksum {
        let mut c = l4_checksum(src, dst, PROTO_UDP, &u);
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

pub fn icmp_message(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = checksum::compute(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

pub fn echo(icmp_type: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&ident.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    icmp_message(icmp_type, 0, rest, b"natgw-ping-payload")
}

pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    let (s, d) = (a(src), a(dst));
    ipv4_frame(s, d, PROTO_TCP, 64, 1, DF, &tcp_segment(s, sport, d, dport, flags, b""))
}

pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (a(src), a(dst));
    ipv4_frame(s, d, PROTO_UDP, 64, 1, 0, &udp_datagram(s, sport, d, dport, payload, true))
}

pub fn ping(src: &str, dst: &str, icmp_type: u8, ident: u16) -> Vec<u8> {
    ipv4_frame(a(src), a(dst), PROTO_ICMP, 64, 1, 0, &echo(icmp_type, ident, 1))
}

/// Every checksum in an IPv4 frame (IHL 5, not a fragment) is valid.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let ip = &ip[..total];
    if checksum::fold(checksum::sum(&ip[..20], 0)) != 0xffff {
        return false;
    }
    let (src, dst) =
        (u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]), u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]));
    let l4 = &ip[20..];
    match ip[9] {
        PROTO_TCP => {
            checksum::fold(checksum::sum(l4, checksum::pseudo_header_sum(src, dst, 6, l4.len() as u16))) == 0xffff
        }
        PROTO_UDP if l4[6..8] == [0, 0] => true,
        PROTO_UDP => {
            checksum::fold(checksum::sum(l4, checksum::pseudo_header_sum(src, dst, 17, l4.len() as u16))) == 0xffff
        }
        PROTO_ICMP => checksum::fold(checksum::sum(l4, 0)) == 0xffff,
        _ => true,
    }
}

pub fn src_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]), u16::from_be_bytes([frame[34], frame[35]]))
}
pub fn dst_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]), u16::from_be_bytes([frame[36], frame[37]]))
}
pub fn ttl_of(frame: &[u8]) -> u8 {
    frame[22]
}
