//! The packet an ICMP error quotes (RFC 792): its IPv4 header, whole, and at least the
//! first 8 bytes of its transport header, often more. natgw translates quotes back to what
//! their sender put on the wire (RFC 5508 section 4.2), so it needs their addresses, ports
//! (or echo identifier) and, when the quote reaches it, the transport checksum.

use std::net::Ipv4Addr;

use crate::icmpv4::{ECHO_REPLY, ECHO_REQUEST};
use crate::{checksum, ipv4, WireError, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Bytes of the transport header every quote carries.
pub const TRANSPORT_BYTES: usize = 8;

mod field {
    use core::ops::Range;
    /// TCP and UDP: both ports; ICMP echo: the identifier.
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ICMP_CHECKSUM: Range<usize> = 2..4;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
    pub const TCP_CHECKSUM: Range<usize> = 16..18;
}

/// A view of a quoted packet. `new_checked` accepts the quotes natgw can translate: an
/// IPv4 header (options allowed) of a first or only fragment carrying TCP, UDP or an ICMP
/// echo, with at least `TRANSPORT_BYTES` after it. After it succeeds no getter or setter
/// panics; a field the quote stops short of reads as `None`.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let ip = ipv4::Packet::new_checked_header(buffer.as_ref())?;
        if ip.frag_offset() != 0 {
            return Err(WireError::BadIcmpQuote);
        }
        let l4 = &buffer.as_ref()[ip.header_len()..];
        if l4.len() < TRANSPORT_BYTES {
            return Err(WireError::BadIcmpQuote);
        }
        match ip.protocol() {
            PROTO_TCP | PROTO_UDP => {}
            PROTO_ICMP if matches!(l4[0], ECHO_REQUEST | ECHO_REPLY) => {}
            _ => return Err(WireError::BadIcmpQuote),
        }
        Ok(Packet { buffer })
    }

    fn ip(&self) -> ipv4::Packet<&[u8]> {
        ipv4::Packet::new_unchecked(self.buffer.as_ref())
    }

    fn transport(&self) -> &[u8] {
        &self.buffer.as_ref()[self.ip().header_len()..]
    }

    pub fn header_len(&self) -> usize {
        self.ip().header_len()
    }

    pub fn protocol(&self) -> u8 {
        self.ip().protocol()
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        self.ip().src_addr()
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        self.ip().dst_addr()
    }

    /// The source port, or for an ICMP echo its identifier.
    pub fn src_port(&self) -> u16 {
        let t = self.transport();
        match self.protocol() {
            PROTO_ICMP => be16(&t[field::ECHO_IDENT]),
            _ => be16(&t[field::SRC_PORT]),
        }
    }

    /// The destination port, or for an ICMP echo its identifier.
    pub fn dst_port(&self) -> u16 {
        let t = self.transport();
        match self.protocol() {
            PROTO_ICMP => be16(&t[field::ECHO_IDENT]),
            _ => be16(&t[field::DST_PORT]),
        }
    }

    fn checksum_field(&self) -> core::ops::Range<usize> {
        match self.protocol() {
            PROTO_TCP => field::TCP_CHECKSUM,
            PROTO_UDP => field::UDP_CHECKSUM,
            _ => field::ICMP_CHECKSUM,
        }
    }

    /// The transport checksum, when the quote reaches it (a TCP checksum is past the 8
    /// bytes RFC 792 promises).
    pub fn transport_checksum(&self) -> Option<u16> {
        self.transport().get(self.checksum_field()).map(be16)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn transport_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }

    /// Rewrites the quoted addresses and recomputes the quoted header's checksum.
    pub fn set_addrs(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let mut ip = ipv4::Packet::new_unchecked(self.buffer.as_mut());
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }

    /// Rewrites the ports (TCP, UDP) or the echo identifier (ICMP, from `src`).
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        let icmp = self.protocol() == PROTO_ICMP;
        let t = self.transport_mut();
        if icmp {
            t[field::ECHO_IDENT].copy_from_slice(&src.to_be_bytes());
        } else {
            t[field::SRC_PORT].copy_from_slice(&src.to_be_bytes());
            t[field::DST_PORT].copy_from_slice(&dst.to_be_bytes());
        }
    }

    /// Sets the transport checksum when the quote reaches it; false when it does not.
    pub fn set_transport_checksum(&mut self, c: u16) -> bool {
        let at = self.checksum_field();
        match self.transport_mut().get_mut(at) {
            Some(f) => {
                f.copy_from_slice(&c.to_be_bytes());
                true
            }
            None => false,
        }
    }
}

/// What a quote says about the packet it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Ports, or for an ICMP echo its identifier in both.
    pub src_port: u16,
    pub dst_port: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            protocol: p.protocol(),
            src: p.src_addr(),
            dst: p.dst_addr(),
            src_port: p.src_port(),
            dst_port: p.dst_port(),
        }
    }
}

/// Translates a quote in place to `to` (addresses and ports): the quoted IP header's
/// checksum is recomputed, and the transport checksum, when the quote carries one, is
/// updated incrementally (RFC 1624) for what changed (a UDP checksum of 0 stays 0).
pub fn translate<T: AsRef<[u8]> + AsMut<[u8]>>(p: &mut Packet<T>, to: &Repr) {
    let from = Repr::parse(p);
    p.set_addrs(to.src, to.dst);
    p.set_ports(to.src_port, to.dst_port);
    let Some(c) = p.transport_checksum() else { return };
    let c = match from.protocol {
        PROTO_UDP if c == 0 => return,
        // ICMP has no pseudo-header: only the identifier is in its checksum.
        PROTO_ICMP => checksum::update16(c, from.src_port, to.src_port),
        _ => {
            let c = checksum::update32(c, u32::from(from.src), u32::from(to.src));
            let c = checksum::update32(c, u32::from(from.dst), u32::from(to.dst));
            let c = checksum::update16(c, from.src_port, to.src_port);
            checksum::update16(c, from.dst_port, to.dst_port)
        }
    };
    p.set_transport_checksum(c);
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tcp, udp};

    fn quoted_udp(with_checksum: bool) -> Vec<u8> {
        let (src, dst) = (Ipv4Addr::new(198, 51, 100, 10), Ipv4Addr::new(203, 0, 113, 7));
        let mut b = vec![0u8; 20 + 8 + 4];
        ipv4::Repr { src, dst, protocol: PROTO_UDP, payload_len: 12, ttl: 1, ident: 9, dont_fragment: false }
            .emit(&mut ipv4::Packet::new_unchecked(&mut b[..]))
            .unwrap();
        b[28..].copy_from_slice(b"data");
        let mut u = udp::Packet::new_unchecked(&mut b[20..]);
        udp::Repr { src_port: 40000, dst_port: 7, payload_len: 4 }.emit(&mut u, src, dst).unwrap();
        if !with_checksum {
            u.set_checksum(0);
        }
        b
    }

    #[test]
    fn a_translated_quote_has_valid_checksums_for_its_new_endpoints() {
        let mut b = quoted_udp(true);
        let to = Repr {
            protocol: PROTO_UDP,
            src: Ipv4Addr::new(10, 10, 1, 10),
            dst: Ipv4Addr::new(203, 0, 113, 7),
            src_port: 5555,
            dst_port: 7,
        };
        let mut q = Packet::new_checked(&mut b[..]).unwrap();
        translate(&mut q, &to);
        assert_eq!(Repr::parse(&q), to);
        assert!(ipv4::Packet::new_checked(&b[..]).unwrap().verify_checksum());
        assert!(udp::Packet::new_checked(&b[20..]).unwrap().verify_checksum(to.src, to.dst));
        // No UDP checksum: it stays none.
        let mut b = quoted_udp(false);
        translate(&mut Packet::new_checked(&mut b[..]).unwrap(), &to);
        assert_eq!(udp::Packet::new_checked(&b[20..]).unwrap().checksum(), 0);
    }

    #[test]
    fn a_tcp_quote_cut_at_eight_bytes_has_no_checksum_to_update() {
        let mut b = [0u8; 40];
        ipv4::Repr {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::BROADCAST,
            protocol: PROTO_TCP,
            payload_len: 20,
            ttl: 1,
            ident: 1,
            dont_fragment: true,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut b[..]))
        .unwrap();
        tcp::Repr { src_port: 1, dst_port: 2, seq_number: 3, ack_number: 0, flags: tcp::SYN, window_len: 0 }.emit(
            &mut tcp::Packet::new_unchecked(&mut b[20..]),
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::BROADCAST,
        );
        let mut q = Packet::new_checked(&mut b[..28]).unwrap();
        assert_eq!(q.transport_checksum(), None);
        assert!(!q.set_transport_checksum(1));
        assert_eq!((q.src_port(), q.dst_port()), (1, 2));
        assert!(Packet::new_checked(&b[..27]).is_err(), "fewer than 8 transport bytes");
        assert!(Packet::new_checked(&b[..]).unwrap().transport_checksum().is_some());
    }

    #[test]
    fn refuses_what_cannot_be_translated() {
        let mut b = quoted_udp(true);
        b[9] = 47; // GRE
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadIcmpQuote));
        let mut b = quoted_udp(true);
        b[6..8].copy_from_slice(&0x0001u16.to_be_bytes()); // a later fragment: no ports
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadIcmpQuote));
        let mut b = quoted_udp(true);
        b[9] = PROTO_ICMP;
        b[20] = 3; // an error about an error
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadIcmpQuote));
    }
}
