//! natgw-wire: wire formats as views over byte buffers, the headers natgw emits, and
//! Internet checksums.
//!
//! One module per protocol, in the smoltcp shape: a `Packet<T: AsRef<[u8]>>` view with
//! `new_checked` for untrusted input, getters, setters where `T: AsMut<[u8]>`, field
//! offsets in a private `mod field`, and a `Repr` with `parse` and `emit` for what natgw
//! builds itself. The promise: after `new_checked` succeeds, no getter or setter of that
//! view panics. Callers never touch a byte offset.
//!
//! Owns: Ethernet, ARP, IPv4 (and splitting into fragments), TCP, UDP, ICMPv4, the packet
//! an ICMP error quotes, DNS messages (the question and the answers), and the RFC
//! 1071/1624 checksum arithmetic. Must never: allocate on a view, perform I/O, or panic on
//! any input.

#![deny(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod dns;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod quote;
pub mod tcp;
pub mod udp;

pub use arp::{Packet as ArpPacket, Repr as ArpRepr};
pub use ethernet::{Frame as EthernetFrame, Repr as EthernetRepr};
pub use icmpv4::{Packet as Icmpv4Packet, Repr as Icmpv4Repr};
pub use ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr};
pub use quote::{Packet as QuotedPacket, Repr as QuoteRepr};
pub use tcp::{Packet as TcpPacket, Repr as TcpRepr};
pub use udp::{Packet as UdpPacket, Repr as UdpRepr};

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

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub type MacAddr = [u8; 6];
pub const BROADCAST_MAC: MacAddr = [0xff; 6];

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

/// The transport part of an IPv4 packet, validated for the fields natgw touches: what the
/// translator decides by.
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

impl L4Header {
    /// The transport header of an unfragmented packet (`l4` is the IP payload).
    pub fn parse(protocol: u8, l4: &[u8]) -> Result<L4Header, WireError> {
        match protocol {
            PROTO_UDP => {
                let u = UdpPacket::new_checked(l4)?;
                Ok(L4Header::Udp { src_port: u.src_port(), dst_port: u.dst_port(), checksum: u.checksum() })
            }
            _ => Self::parse_first_fragment(protocol, l4),
        }
    }

    /// The transport header of a first fragment: as `parse`, except that UDP's length
    /// field covers the whole datagram, not this fragment.
    pub fn parse_first_fragment(protocol: u8, l4: &[u8]) -> Result<L4Header, WireError> {
        match protocol {
            PROTO_TCP => {
                let t = TcpPacket::new_checked(l4)?;
                Ok(L4Header::Tcp {
                    src_port: t.src_port(),
                    dst_port: t.dst_port(),
                    flags: t.flags(),
                    header_len: t.header_len(),
                })
            }
            PROTO_UDP => {
                let u = UdpPacket::new_checked_header(l4)?;
                Ok(L4Header::Udp { src_port: u.src_port(), dst_port: u.dst_port(), checksum: u.checksum() })
            }
            PROTO_ICMP => {
                let m = Icmpv4Packet::new_checked(l4)?;
                Ok(match m.msg_type() {
                    t @ (icmpv4::ECHO_REQUEST | icmpv4::ECHO_REPLY) => {
                        L4Header::IcmpQuery { icmp_type: t, ident: m.echo_ident() }
                    }
                    t if icmpv4::is_error(t) => L4Header::IcmpError { icmp_type: t, code: m.msg_code() },
                    t => L4Header::IcmpOther { icmp_type: t },
                })
            }
            _ => Ok(L4Header::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real frame: 10.10.1.10:40000 -> 203.0.113.80:80 TCP SYN, built by hand.
    const SYN_FRAME: [u8; 54] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00, // ethernet
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // ip (no checksum)
        10, 10, 1, 10, 203, 0, 113, 80, // addresses
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, // tcp
    ];

    #[test]
    fn parses_a_literal_syn() {
        let eth = EthernetFrame::new_checked(&SYN_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 10, 1, 10));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(203, 0, 113, 80));
        assert_eq!(ip.protocol(), PROTO_TCP);
        assert!(ip.dont_fragment() && !ip.is_fragment());
        assert_eq!(
            L4Header::parse(ip.protocol(), ip.payload()).unwrap(),
            L4Header::Tcp { src_port: 40000, dst_port: 80, flags: tcp::SYN, header_len: 20 }
        );
    }

    #[test]
    fn refuses_short_transport_headers_with_the_reason() {
        let mut t = [0u8; 20];
        t[12] = 0x40; // data offset 4
        assert_eq!(L4Header::parse(PROTO_TCP, &t).err(), Some(WireError::BadTcpHeader));
        assert_eq!(L4Header::parse(PROTO_TCP, &t[..19]).err(), Some(WireError::BadTcpHeader));
        let udp = [0x10, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00]; // length 0
        assert_eq!(L4Header::parse(PROTO_UDP, &udp).err(), Some(WireError::BadUdpLength));
        // A first fragment's UDP length speaks of the whole datagram.
        let first = [0x10, 0x00, 0x00, 0x07, 0x17, 0x70, 0x00, 0x00];
        assert!(L4Header::parse_first_fragment(PROTO_UDP, &first).is_ok());
        assert_eq!(L4Header::parse(PROTO_ICMP, &[8, 0, 0]).err(), Some(WireError::BadIcmp));
        assert_eq!(L4Header::parse(47, &[]), Ok(L4Header::Other));
    }

    #[test]
    fn prefixes() {
        let n = Ipv4Net { addr: Ipv4Addr::new(10, 10, 1, 1), prefix: 24 };
        assert!(n.contains(Ipv4Addr::new(10, 10, 1, 200)) && !n.contains(Ipv4Addr::new(10, 10, 2, 1)));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 10, 1, 255));
        assert!(Ipv4Net { addr: Ipv4Addr::UNSPECIFIED, prefix: 0 }.contains(Ipv4Addr::BROADCAST));
        assert_eq!(n.to_string(), "10.10.1.1/24");
    }
}
