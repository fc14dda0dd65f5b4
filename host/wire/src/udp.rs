//! UDP (RFC 768): the datagram view and its header.

use std::net::Ipv4Addr;

use crate::{checksum, WireError, PROTO_UDP};

pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view of a UDP datagram (the IP payload). After `new_checked` or `new_checked_header`
/// succeeds, no getter or setter panics.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A whole datagram: its length field at least the header and at most the buffer. A
    /// zero or short length is malformed (UDP jumbograms do not exist in IPv4).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Self::new_checked_header(buffer)?;
        let len = usize::from(p.length());
        if len < HEADER_LEN || len > p.buffer.as_ref().len() {
            return Err(WireError::BadUdpLength);
        }
        Ok(p)
    }

    /// Only the header: for a first fragment, whose length field covers the whole
    /// datagram, not what this fragment carries.
    pub fn new_checked_header(buffer: T) -> Result<Packet<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::BadUdpLength);
        }
        Ok(Self::new_unchecked(buffer))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header plus payload.
    pub fn length(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// 0: the sender computed no checksum (allowed over IPv4).
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload the buffer holds, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.length()).clamp(HEADER_LEN, b.len());
        &b[HEADER_LEN..end]
    }

    /// A zero checksum (none), or a valid one over the pseudo-header and the datagram.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.length().min(u16::try_from(self.buffer.as_ref().len()).unwrap_or(u16::MAX));
        let b = &self.buffer.as_ref()[..usize::from(len)];
        let ph = checksum::pseudo_header_sum(u32::from(src), u32::from(dst), PROTO_UDP, len);
        checksum::fold(checksum::sum(b, ph)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, p: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&p.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, p: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&p.to_be_bytes());
    }

    pub fn set_length(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Computes the checksum over the pseudo-header and the datagram (a result of 0 is
    /// sent as 0xffff: 0 means "none").
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.length().min(u16::try_from(self.buffer.as_ref().len()).unwrap_or(u16::MAX));
        let ph = checksum::pseudo_header_sum(u32::from(src), u32::from(dst), PROTO_UDP, len);
        let c = match !checksum::fold(checksum::sum(&self.buffer.as_ref()[..usize::from(len)], ph)) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length()).clamp(HEADER_LEN, self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.length()).saturating_sub(HEADER_LEN),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into a buffer holding the payload after it, and the checksum.
    /// `BadUdpLength` when header and payload do not fit the 16-bit length field.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(), WireError> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| WireError::BadUdpLength)?;
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_length(len);
        p.fill_checksum(src, dst);
        Ok(())
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

    #[test]
    fn emitted_datagram_reads_back_here_and_in_etherparse() {
        let repr = Repr { src_port: 5555, dst_port: 7, payload_len: 5 };
        let mut b = [0u8; 13];
        b[8..].copy_from_slice(b"hello");
        repr.emit(&mut Packet::new_unchecked(&mut b[..]), SRC, DST).unwrap();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), repr);
        assert!(p.verify_checksum(SRC, DST) && p.checksum() != 0);
        assert_eq!(p.payload(), b"hello");
        let e = etherparse::UdpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!((e.source_port(), e.destination_port(), e.length()), (5555, 7, 13));
        assert_eq!(e.to_header().calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"hello").unwrap(), p.checksum());
    }

    #[test]
    fn length_field_must_fit_unless_only_the_header_is_wanted() {
        let mut b = [0u8; 8];
        for len in [0u16, 7, 9] {
            b[4..6].copy_from_slice(&len.to_be_bytes());
            assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadUdpLength), "length {len}");
            assert!(Packet::new_checked_header(&b[..]).is_ok());
        }
        assert_eq!(Packet::new_checked_header(&b[..7]).err(), Some(WireError::BadUdpLength));
    }
}
