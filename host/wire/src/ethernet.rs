//! Ethernet II frames: a 14-byte header (destination, source, EtherType) and the payload.

use crate::{MacAddr, WireError};

pub const HEADER_LEN: usize = 14;

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// A view of an Ethernet II frame. After `new_checked` succeeds, no getter or setter
/// panics.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without checks: getters panic on a buffer shorter than the header.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Frame<T>, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst(&self) -> MacAddr {
        mac(&self.buffer.as_ref()[field::DST])
    }

    pub fn src(&self) -> MacAddr {
        mac(&self.buffer.as_ref()[field::SRC])
    }

    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m);
    }

    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m);
    }

    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

fn mac(b: &[u8]) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(b);
    m
}

/// An Ethernet II header as natgw emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: MacAddr,
    pub dst: MacAddr,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Repr {
        Repr { src: frame.src(), dst: frame.dst(), ethertype: frame.ethertype() }
    }

    /// Writes the header; the frame's buffer must hold at least `HEADER_LEN` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_a_short_buffer() {
        let mut b = [0u8; 20];
        let repr = Repr { src: [2, 0, 0, 0, 0, 1], dst: [0xff; 6], ethertype: 0x0806 };
        repr.emit(&mut Frame::new_unchecked(&mut b[..]));
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&f), repr);
        assert_eq!(f.payload().len(), 6);
        assert_eq!(Frame::new_checked(&b[..13]).err(), Some(WireError::Truncated));
        let e = etherparse::Ethernet2HeaderSlice::from_slice(&b).unwrap();
        assert_eq!((e.source(), e.destination(), e.ether_type().0), (repr.src, repr.dst, repr.ethertype));
    }
}
