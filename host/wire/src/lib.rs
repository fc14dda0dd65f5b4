//! natgw-wire: wire formats as views over byte buffers, and Internet checksums.
//!
//! Owns: bounds-checked views of Ethernet, ARP, IPv4, TCP, UDP and ICMP headers, and the
//! RFC 1071/1624 checksum arithmetic. Must never: allocate, perform I/O, or panic on any
//! input. Every view is built with `new_checked`, and the promise is the smoltcp one:
//! after `new_checked` succeeds, no getter or setter of that view panics.

#![deny(unsafe_code)]

pub mod checksum;

use std::net::Ipv4Addr;
use thiserror::Error;

/// Why a frame could not be parsed. Each variant is a drop reason operators see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("frame shorter than its headers")]
    Truncated,
    #[error("unknown EtherType")]
    UnknownEtherType,
    #[error("IPv4 header length (IHL) below 5 or beyond the packet")]
    BadIhl,
    #[error("IPv4 total length disagrees with the frame")]
    BadTotalLength,
    #[error("not IPv4")]
    NotIpv4,
    #[error("IPv4 options are not forwarded")]
    IpOptions,
    #[error("IPv4 header checksum is wrong")]
    BadIpChecksum,
    #[error("TCP data offset below 5 or beyond the packet")]
    BadTcpHeader,
    #[error("UDP length field invalid")]
    BadUdpLength,
    #[error("ICMP message too short")]
    BadIcmp,
    #[error("ICMP error quotes an unusable packet")]
    BadIcmpQuote,
}

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub type MacAddr = [u8; 6];
pub const BROADCAST_MAC: MacAddr = [0xff; 6];

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn set_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        }
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr) & self.mask()
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Ethernet II frame header view.
pub struct EthernetFrame<T> {
    buf: T,
}

mod eth_field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < ETHERNET_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buf })
    }
    pub fn dst(&self) -> MacAddr {
        self.buf.as_ref()[eth_field::DST..eth_field::DST + 6].try_into().unwrap_or([0; 6])
    }
    pub fn src(&self) -> MacAddr {
        self.buf.as_ref()[eth_field::SRC..eth_field::SRC + 6].try_into().unwrap_or([0; 6])
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), eth_field::ETHERTYPE)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[ETHERNET_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buf.as_mut()[eth_field::DST..eth_field::DST + 6].copy_from_slice(&mac);
    }
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buf.as_mut()[eth_field::SRC..eth_field::SRC + 6].copy_from_slice(&mac);
    }
    pub fn set_ethertype(&mut self, t: u16) {
        set_be16(self.buf.as_mut(), eth_field::ETHERTYPE, t);
    }
}

/// ARP for IPv4 over Ethernet (RFC 826); the only ARP natgw speaks.
pub struct ArpPacket<T> {
    buf: T,
}

pub const ARP_LEN: usize = 28;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < ARP_LEN {
            return Err(WireError::Truncated);
        }
        // Ethernet hardware (1), IPv4 protocol, address lengths 6 and 4.
        if be16(b, 0) != 1 || be16(b, 2) != ETHERTYPE_IPV4 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::UnknownEtherType);
        }
        Ok(Self { buf })
    }
    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn sender_mac(&self) -> MacAddr {
        self.buf.as_ref()[8..14].try_into().unwrap_or([0; 6])
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), 14))
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), 24))
    }
}

/// Writes a complete Ethernet + ARP frame into `out` (at least 42 bytes) and returns its length.
pub fn write_arp_frame(
    out: &mut [u8],
    eth_dst: MacAddr,
    op: u16,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> usize {
    let len = ETHERNET_HEADER_LEN + ARP_LEN;
    let f = &mut out[..len];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&sender_mac);
    set_be16(f, 12, ETHERTYPE_ARP);
    let a = &mut f[ETHERNET_HEADER_LEN..];
    set_be16(a, 0, 1);
    set_be16(a, 2, ETHERTYPE_IPV4);
    a[4] = 6;
    a[5] = 4;
    set_be16(a, 6, op);
    a[8..14].copy_from_slice(&sender_mac);
    a[14..18].copy_from_slice(&sender_ip.octets());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&target_ip.octets());
    len
}

/// IPv4 header view. `new_checked` validates version, IHL and total length against the
/// buffer; the buffer may be longer than the packet (Ethernet padding).
pub struct Ipv4Packet<T> {
    buf: T,
}

pub mod ipv4_field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}
pub const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates a packet as received from a link. A total length of zero (BIG TCP GSO
    /// frames) is refused as `BadTotalLength`: natgw does not accept BIG TCP super-frames.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < IPV4_MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::NotIpv4);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < IPV4_MIN_HEADER_LEN || ihl > b.len() {
            return Err(WireError::BadIhl);
        }
        let total = usize::from(be16(b, ipv4_field::TOTAL_LEN));
        if total < ihl || total > b.len() {
            return Err(WireError::BadTotalLength);
        }
        Ok(Self { buf })
    }
    /// Like `new_checked` for a header quoted inside an ICMP error: the quote is usually cut
    /// short, so only the header itself must be present.
    pub fn new_checked_quoted(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < IPV4_MIN_HEADER_LEN || b[0] >> 4 != 4 {
            return Err(WireError::BadIcmpQuote);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < IPV4_MIN_HEADER_LEN || ihl > b.len() {
            return Err(WireError::BadIcmpQuote);
        }
        Ok(Self { buf })
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[ipv4_field::VER_IHL] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), ipv4_field::TOTAL_LEN))
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), ipv4_field::IDENT)
    }
    pub fn dont_fragment(&self) -> bool {
        be16(self.buf.as_ref(), ipv4_field::FLAGS_FRAG) & IPV4_DF != 0
    }
    pub fn more_fragments(&self) -> bool {
        be16(self.buf.as_ref(), ipv4_field::FLAGS_FRAG) & IPV4_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), ipv4_field::FLAGS_FRAG) & 0x1fff) * 8
    }
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[ipv4_field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[ipv4_field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), ipv4_field::CHECKSUM)
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), ipv4_field::SRC))
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), ipv4_field::DST))
    }
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header(), 0)) == 0xffff
    }
    /// The payload as far as the buffer holds it, bounded by total length when that fits.
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        let end = self.total_len().min(b.len()).max(self.header_len());
        &b[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buf.as_mut()[ipv4_field::TTL] = ttl;
    }
    pub fn set_src(&mut self, a: Ipv4Addr) {
        set_be32(self.buf.as_mut(), ipv4_field::SRC, u32::from(a));
    }
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        set_be32(self.buf.as_mut(), ipv4_field::DST, u32::from(a));
    }
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buf.as_mut(), ipv4_field::CHECKSUM, c);
    }
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::sum(self.header(), 0));
        self.set_checksum(c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = self.total_len().min(self.buf.as_ref().len()).max(hl);
        &mut self.buf.as_mut()[hl..end]
    }
}

/// Writes a minimal (IHL 5) IPv4 header into `out[..20]` with a correct checksum.
pub fn write_ipv4_header(out: &mut [u8], total_len: u16, ident: u16, ttl: u8, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    let h = &mut out[..IPV4_MIN_HEADER_LEN];
    h[0] = 0x45;
    h[1] = 0;
    set_be16(h, 2, total_len);
    set_be16(h, 4, ident);
    set_be16(h, 6, 0);
    h[8] = ttl;
    h[9] = proto;
    set_be16(h, 10, 0);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = !checksum::fold(checksum::sum(h, 0));
    set_be16(h, 10, c);
}

/// One piece of an IPv4 packet split for a smaller MTU: its new header and the range of
/// the original packet's payload it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Fragment {
    pub header: [u8; IPV4_MIN_HEADER_LEN],
    pub payload: std::ops::Range<usize>,
}

/// Splits an IPv4 packet (IHL 5, possibly itself a fragment) into fragments of at most
/// `mtu` bytes (RFC 791): payload pieces are multiples of 8 bytes except the last; the
/// offset continues the packet's own offset and MF is kept on the last piece only if the
/// packet had it. `None` when the packet has DF set, options, or `mtu` leaves no room.
/// Payload ranges index into `l3` (the whole IP packet).
pub fn split_ipv4(l3: &[u8], mtu: usize) -> Option<Vec<Ipv4Fragment>> {
    let ip = Ipv4Packet::new_checked(l3).ok()?;
    if ip.header_len() != IPV4_MIN_HEADER_LEN || ip.dont_fragment() {
        return None;
    }
    let step = (mtu.checked_sub(IPV4_MIN_HEADER_LEN)? / 8) * 8;
    if step == 0 {
        return None;
    }
    let total = ip.total_len();
    let base = ip.frag_offset();
    let more_after = ip.more_fragments();
    let mut out = Vec::with_capacity((total - IPV4_MIN_HEADER_LEN).div_ceil(step));
    let mut at = IPV4_MIN_HEADER_LEN;
    while at < total {
        let end = (at + step).min(total);
        let mut h = [0u8; IPV4_MIN_HEADER_LEN];
        h.copy_from_slice(&l3[..IPV4_MIN_HEADER_LEN]);
        let offset = (base + at - IPV4_MIN_HEADER_LEN) / 8;
        let mf = if end < total || more_after { IPV4_MF } else { 0 };
        set_be16(&mut h, ipv4_field::TOTAL_LEN, (IPV4_MIN_HEADER_LEN + end - at) as u16);
        set_be16(&mut h, ipv4_field::FLAGS_FRAG, mf | offset as u16);
        set_be16(&mut h, ipv4_field::CHECKSUM, 0);
        let c = !checksum::fold(checksum::sum(&h, 0));
        set_be16(&mut h, ipv4_field::CHECKSUM, c);
        out.push(Ipv4Fragment { header: h, payload: at..end });
        at = end;
    }
    Some(out)
}

/// Offsets of the L4 fields natgw reads or rewrites.
pub mod l4_field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const UDP_LENGTH: usize = 4;
    pub const UDP_CHECKSUM: usize = 6;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CHECKSUM: usize = 16;
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CODE: usize = 1;
    pub const ICMP_CHECKSUM: usize = 2;
    pub const ICMP_IDENT: usize = 4;
    pub const ICMP_NEXT_HOP_MTU: usize = 6;
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMP_CODE_FRAG_NEEDED: u8 = 4;
/// Destination unreachable, "communication administratively prohibited" (RFC 1812).
pub const ICMP_CODE_ADMIN_PROHIBITED: u8 = 13;

pub fn icmp_is_error(t: u8) -> bool {
    matches!(
        t,
        ICMP_DEST_UNREACHABLE | ICMP_SOURCE_QUENCH | ICMP_REDIRECT | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

/// The transport part of an IPv4 packet, validated for the fields natgw touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Header {
    /// TCP: ports and flags. `header_len` is the data offset in bytes.
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
        header_len: usize,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        checksum: u16,
    },
    /// ICMP query (echo) carries an identifier that plays the role of a port.
    IcmpQuery {
        icmp_type: u8,
        ident: u16,
    },
    /// ICMP error: the quoted packet starts 8 bytes into the ICMP message.
    IcmpError {
        icmp_type: u8,
        code: u8,
    },
    /// Other ICMP types (timestamp, router advertisement, ...): not translated.
    IcmpOther {
        icmp_type: u8,
    },
    Other,
}

/// Parses the transport header of a first (or only) fragment. `l4` is the IP payload.
pub fn parse_l4(proto: u8, l4: &[u8]) -> Result<L4Header, WireError> {
    match proto {
        PROTO_TCP => {
            if l4.len() < 20 {
                return Err(WireError::BadTcpHeader);
            }
            let header_len = usize::from(l4[12] >> 4) * 4;
            if header_len < 20 || header_len > l4.len() {
                return Err(WireError::BadTcpHeader);
            }
            Ok(L4Header::Tcp {
                src_port: be16(l4, 0),
                dst_port: be16(l4, 2),
                flags: l4[l4_field::TCP_FLAGS],
                header_len,
            })
        }
        PROTO_UDP => {
            if l4.len() < 8 {
                return Err(WireError::BadUdpLength);
            }
            let ulen = usize::from(be16(l4, l4_field::UDP_LENGTH));
            // A zero or short UDP length is malformed (UDP jumbograms do not exist in IPv4).
            if ulen < 8 || ulen > l4.len() {
                return Err(WireError::BadUdpLength);
            }
            Ok(L4Header::Udp { src_port: be16(l4, 0), dst_port: be16(l4, 2), checksum: be16(l4, 6) })
        }
        PROTO_ICMP => {
            if l4.len() < 8 {
                return Err(WireError::BadIcmp);
            }
            let t = l4[0];
            Ok(match t {
                ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                    L4Header::IcmpQuery { icmp_type: t, ident: be16(l4, l4_field::ICMP_IDENT) }
                }
                t if icmp_is_error(t) => L4Header::IcmpError { icmp_type: t, code: l4[1] },
                t => L4Header::IcmpOther { icmp_type: t },
            })
        }
        _ => Ok(L4Header::Other),
    }
}

/// Reads a big-endian u16 at `at`; for callers that validated the length.
pub fn read_u16(b: &[u8], at: usize) -> u16 {
    be16(b, at)
}
pub fn write_u16(b: &mut [u8], at: usize, v: u16) {
    set_be16(b, at, v)
}
pub fn read_ipv4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(be32(b, at))
}
pub fn write_ipv4(b: &mut [u8], at: usize, a: Ipv4Addr) {
    set_be32(b, at, u32::from(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real frame: 10.10.1.10:40000 -> 203.0.113.80:80 TCP SYN, built by hand, checksums valid.
    pub(crate) const SYN_FRAME: [u8; 54] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00, // ethernet
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // ip (csum filled in test)
        10, 10, 1, 10, 203, 0, 113, 80, // addresses
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, // tcp
    ];

    #[test]
    fn parses_ipv4_and_tcp() {
        let eth = EthernetFrame::new_checked(&SYN_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src(), Ipv4Addr::new(10, 10, 1, 10));
        assert_eq!(ip.dst(), Ipv4Addr::new(203, 0, 113, 80));
        assert_eq!(ip.protocol(), PROTO_TCP);
        assert!(ip.dont_fragment());
        assert!(!ip.is_fragment());
        match parse_l4(ip.protocol(), ip.payload()).unwrap() {
            L4Header::Tcp { src_port, dst_port, flags, header_len } => {
                assert_eq!((src_port, dst_port, flags, header_len), (40000, 80, TCP_SYN, 20));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_ipv4() {
        let mut f = SYN_FRAME;
        f[14] = 0x44; // IHL 4
        assert_eq!(Ipv4Packet::new_checked(&f[14..]).err(), Some(WireError::BadIhl));
        let mut f = SYN_FRAME;
        f[14] = 0x4f; // IHL 15 = 60 bytes > 40
        assert_eq!(Ipv4Packet::new_checked(&f[14..]).err(), Some(WireError::BadIhl));
        let mut f = SYN_FRAME;
        f[17] = 0x80; // total length 0x0080 > frame
        assert_eq!(Ipv4Packet::new_checked(&f[14..]).err(), Some(WireError::BadTotalLength));
        assert_eq!(Ipv4Packet::new_checked(&SYN_FRAME[14..30]).err(), Some(WireError::Truncated));
        let mut f = SYN_FRAME;
        f[14] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&f[14..]).err(), Some(WireError::NotIpv4));
    }

    #[test]
    fn rejects_short_tcp_and_zero_udp() {
        let mut tcp = [0u8; 20];
        tcp[12] = 0x40; // data offset 4
        assert_eq!(parse_l4(PROTO_TCP, &tcp).err(), Some(WireError::BadTcpHeader));
        assert_eq!(parse_l4(PROTO_TCP, &tcp[..19]).err(), Some(WireError::BadTcpHeader));
        let udp = [0x10, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00]; // length 0
        assert_eq!(parse_l4(PROTO_UDP, &udp).err(), Some(WireError::BadUdpLength));
        assert_eq!(parse_l4(PROTO_ICMP, &[8, 0, 0]).err(), Some(WireError::BadIcmp));
    }

    #[test]
    fn splits_for_a_smaller_mtu_and_reassembles() {
        // A 1400-byte UDP packet (no DF), split for MTU 576.
        let mut pkt = vec![0u8; 1400];
        pkt[..20].copy_from_slice(&[0x45, 0, 0x05, 0x78, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let c = checksum::compute(&pkt[..20]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        for (i, b) in pkt[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let frags = split_ipv4(&pkt, 576).unwrap();
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let h = Ipv4Packet::new_checked_quoted(&f.header[..]).unwrap();
            assert!(h.verify_checksum());
            assert!(IPV4_MIN_HEADER_LEN + f.payload.len() <= 576);
            assert_eq!(h.total_len(), 20 + f.payload.len());
            assert_eq!(h.frag_offset(), joined.len());
            assert_eq!(h.more_fragments(), i < 2);
            assert_eq!(h.ident(), 0x1234);
            if i < 2 {
                assert_eq!(f.payload.len() % 8, 0);
            }
            joined.extend_from_slice(&pkt[f.payload.clone()]);
        }
        assert_eq!(joined, pkt[20..]);
        // A middle fragment keeps its offset and MF.
        let mut mid = pkt.clone();
        mid[6..8].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
        mid[10..12].fill(0);
        let c = checksum::compute(&mid[..20]);
        mid[10..12].copy_from_slice(&c.to_be_bytes());
        let frags = split_ipv4(&mid, 576).unwrap();
        let last = Ipv4Packet::new_checked_quoted(&frags[2].header[..]).unwrap();
        assert!(last.more_fragments());
        assert_eq!(Ipv4Packet::new_checked_quoted(&frags[0].header[..]).unwrap().frag_offset(), 800);
        // DF: not ours to split.
        let mut df = pkt.clone();
        df[6] = 0x40;
        assert!(split_ipv4(&df, 576).is_none());
        assert!(split_ipv4(&pkt, 20).is_none());
    }

    #[test]
    fn arp_round_trip() {
        let mut out = [0u8; 64];
        let n = write_arp_frame(
            &mut out,
            BROADCAST_MAC,
            ARP_REQUEST,
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 10, 1, 1),
            [0; 6],
            Ipv4Addr::new(10, 10, 1, 10),
        );
        assert_eq!(n, 42);
        let eth = EthernetFrame::new_checked(&out[..n]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_ARP);
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), ARP_REQUEST);
        assert_eq!(arp.sender_ip(), Ipv4Addr::new(10, 10, 1, 1));
        assert_eq!(arp.target_ip(), Ipv4Addr::new(10, 10, 1, 10));
        assert_eq!(arp.sender_mac(), [2, 0, 0, 0, 0, 1]);
    }
}
