//! ARP for IPv4 over Ethernet (RFC 826), the only ARP natgw speaks.

use std::net::Ipv4Addr;

use crate::{ethernet, MacAddr, WireError, ETHERTYPE_ARP, ETHERTYPE_IPV4};

pub const PACKET_LEN: usize = 28;
pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;
/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view of an ARP packet. `new_checked` accepts Ethernet/IPv4 ARP only; after it
/// succeeds no getter or setter panics.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        let b = p.buffer.as_ref();
        if be16(&b[field::HTYPE]) != HTYPE_ETHERNET
            || be16(&b[field::PTYPE]) != ETHERTYPE_IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::UnknownEtherType);
        }
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn operation(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::OPER])
    }

    pub fn sender_mac(&self) -> MacAddr {
        mac(&self.buffer.as_ref()[field::SHA])
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SPA])
    }

    pub fn target_mac(&self) -> MacAddr {
        mac(&self.buffer.as_ref()[field::THA])
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_fixed_fields(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    pub fn set_operation(&mut self, op: u16) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&op.to_be_bytes());
    }

    pub fn set_sender_mac(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m);
    }

    pub fn set_sender_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    pub fn set_target_mac(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m);
    }

    pub fn set_target_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

/// An Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// Writes the ARP packet into a buffer of at least `PACKET_LEN` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_fixed_fields();
        p.set_operation(self.operation);
        p.set_sender_mac(self.sender_mac);
        p.set_sender_ip(self.sender_ip);
        p.set_target_mac(self.target_mac);
        p.set_target_ip(self.target_ip);
    }

    /// Writes a whole frame, Ethernet header to `eth_dst` included, into `out` and
    /// returns its length; `None` when `out` is shorter than that.
    pub fn emit_frame(&self, eth_dst: MacAddr, out: &mut [u8]) -> Option<usize> {
        let len = ethernet::HEADER_LEN + PACKET_LEN;
        let frame = out.get_mut(..len)?;
        let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
        ethernet::Repr { src: self.sender_mac, dst: eth_dst, ethertype: ETHERTYPE_ARP }.emit(&mut eth);
        self.emit(&mut Packet::new_unchecked(eth.payload_mut()));
        Some(len)
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn mac(b: &[u8]) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(b);
    m
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BROADCAST_MAC;

    #[test]
    fn round_trip_through_a_frame() {
        let repr = Repr {
            operation: REQUEST,
            sender_mac: [2, 0, 0, 0, 0, 1],
            sender_ip: Ipv4Addr::new(10, 10, 1, 1),
            target_mac: [0; 6],
            target_ip: Ipv4Addr::new(10, 10, 1, 10),
        };
        let mut out = [0u8; 64];
        let n = repr.emit_frame(BROADCAST_MAC, &mut out).unwrap();
        assert_eq!(n, 42);
        assert!(repr.emit_frame(BROADCAST_MAC, &mut [0u8; 41]).is_none());
        let eth = ethernet::Frame::new_checked(&out[..n]).unwrap();
        assert_eq!((eth.ethertype(), eth.dst(), eth.src()), (ETHERTYPE_ARP, BROADCAST_MAC, repr.sender_mac));
        let p = Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(Repr::parse(&p), repr);
        // The same bytes as etherparse reads them.
        let e = etherparse::ArpPacketSlice::from_slice(eth.payload()).unwrap();
        assert_eq!(e.operation().0, REQUEST);
        assert_eq!(e.sender_protocol_addr(), &[10, 10, 1, 1]);
        assert_eq!(e.target_protocol_addr(), &[10, 10, 1, 10]);
    }

    #[test]
    fn refuses_what_is_not_ethernet_ipv4_arp() {
        let mut b = [0u8; PACKET_LEN];
        Repr {
            operation: REPLY,
            sender_mac: [2; 6],
            sender_ip: Ipv4Addr::LOCALHOST,
            target_mac: [4; 6],
            target_ip: Ipv4Addr::BROADCAST,
        }
        .emit(&mut Packet::new_unchecked(&mut b[..]));
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(Packet::new_checked(&b[..27]).err(), Some(WireError::Truncated));
        for (at, v) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut x = b;
            x[at] = v;
            assert_eq!(Packet::new_checked(&x[..]).err(), Some(WireError::UnknownEtherType), "byte {at} = {v}");
        }
    }
}
