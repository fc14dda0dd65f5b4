//! TCP (RFC 9293): the segment view and the header natgw emits (its resets).

use std::net::Ipv4Addr;

use crate::{checksum, WireError, PROTO_TCP};

pub const MIN_HEADER_LEN: usize = 20;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// A view of a TCP segment (the IP payload). After `new_checked` succeeds, no getter or
/// setter panics: the header, options included, is within the buffer.
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
        Ok(p)
    }

    /// A data offset of at least 5 words, and the whole header within the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::BadTcpHeader);
        }
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN || hl > len {
            return Err(WireError::BadTcpHeader);
        }
        Ok(())
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

    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// FIN, SYN, RST, PSH, ACK, URG (and ECE, CWR in the top bits).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WINDOW])
    }

    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[self.options_range()]
    }

    /// Where the options lie in the segment: for a caller that keeps the range and slices
    /// the packet again later (`options` borrows the view).
    pub fn options_range(&self) -> std::ops::Range<usize> {
        MIN_HEADER_LEN..self.header_len()
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The checksum over the pseudo-header and the whole segment is valid.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let Ok(len) = u16::try_from(b.len()) else { return false };
        let ph = checksum::pseudo_header_sum(u32::from(src), u32::from(dst), PROTO_TCP, len);
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

    pub fn set_seq_number(&mut self, n: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&n.to_be_bytes());
    }

    pub fn set_ack_number(&mut self, n: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&n.to_be_bytes());
    }

    /// Sets the data offset (bytes, a multiple of 4, at most 60) and clears the reserved
    /// bits.
    pub fn set_header_len(&mut self, len: usize) {
        let words = u8::try_from(len / 4).unwrap_or(0x0f).min(0x0f);
        self.buffer.as_mut()[field::DATA_OFFSET] = words << 4;
    }

    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    pub fn set_window_len(&mut self, w: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&w.to_be_bytes());
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn set_urgent_at(&mut self, u: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&u.to_be_bytes());
    }

    /// Computes the checksum over the pseudo-header and the whole buffer, which is a
    /// segment of an IPv4 packet and so at most 65535 bytes.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        let ph = checksum::pseudo_header_sum(u32::from(src), u32::from(dst), PROTO_TCP, len);
        let c = !checksum::fold(checksum::sum(b, ph));
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// The TCP options natgw reads (RFC 9293 3.2, RFC 7323, RFC 2018); the rest are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption {
    /// The shift count a SYN announces (RFC 7323 2.2); more than 14 is read as 14.
    WindowScale(u8),
    SackPermitted,
    /// The highest right edge among a SACK option's blocks (RFC 2018).
    SackRightEdge(u32),
    Timestamps,
    Other(u8),
}

pub const OPT_END: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WINDOW_SCALE: u8 = 3;
pub const OPT_SACK_PERMITTED: u8 = 4;
pub const OPT_SACK: u8 = 5;
pub const OPT_TIMESTAMPS: u8 = 8;

/// The options of a header, in order. A malformed option (a length below 2 or past the
/// header) ends the list, as Linux's parser does.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    pub fn new(options: &'a [u8]) -> Options<'a> {
        Options { rest: options }
    }

    /// Only the 12 bytes NOP, NOP, timestamps: what nearly every segment carries, and
    /// nothing natgw needs to look into (netfilter skips it the same way).
    pub fn is_timestamps_only(options: &[u8]) -> bool {
        options.len() == 12 && options[..4] == [OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10]
    }
}

impl Iterator for Options<'_> {
    type Item = TcpOption;

    fn next(&mut self) -> Option<TcpOption> {
        loop {
            let (&kind, after) = self.rest.split_first()?;
            match kind {
                OPT_END => {
                    self.rest = &[];
                    return None;
                }
                OPT_NOP => {
                    self.rest = after;
                    continue;
                }
                _ => {}
            }
            let len = usize::from(*after.first()?);
            if len < 2 || len > self.rest.len() {
                self.rest = &[];
                return None;
            }
            let body = &self.rest[2..len];
            self.rest = &self.rest[len..];
            return Some(match (kind, body.len()) {
                (OPT_WINDOW_SCALE, 1) => TcpOption::WindowScale(body[0].min(14)),
                (OPT_SACK_PERMITTED, 0) => TcpOption::SackPermitted,
                (OPT_SACK, n) if n >= 8 && n % 8 == 0 => {
                    let edge = body.chunks_exact(8).map(|b| be32(&b[4..8])).fold(None, |m: Option<u32>, e| {
                        // Sequence space wraps: "highest" is the one after the others.
                        Some(m.map_or(e, |m| if (e.wrapping_sub(m) as i32) > 0 { e } else { m }))
                    });
                    edge.map_or(TcpOption::Other(kind), TcpOption::SackRightEdge)
                }
                (OPT_TIMESTAMPS, 8) => TcpOption::Timestamps,
                _ => TcpOption::Other(kind),
            });
        }
    }
}

/// A TCP header without options, as natgw emits it (resets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: u8,
    pub window_len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
        }
    }

    pub const fn header_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes the header into the start of the segment's buffer (whose length is the
    /// segment's: header plus any payload already in place) and its checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, src: Ipv4Addr, dst: Ipv4Addr) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(MIN_HEADER_LEN);
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(0);
        p.fill_checksum(src, dst);
    }

    /// The reset RFC 9293 section 3.10.7.1 answers `segment` with, as if from its
    /// destination: the segment's acknowledgment as sequence number when it has one, else
    /// sequence 0 acknowledging everything the segment occupies. `None` for a reset
    /// (never answered).
    pub fn reset_for(segment: &Repr, payload_len: usize) -> Option<Repr> {
        if segment.flags & RST != 0 {
            return None;
        }
        let (seq_number, ack_number, flags) = if segment.flags & ACK != 0 {
            (segment.ack_number, 0, RST)
        } else {
            // A segment's payload fits an IPv4 packet: far below u32.
            let data = u32::try_from(payload_len).unwrap_or(u32::MAX);
            let occupies = data + u32::from(segment.flags & SYN != 0) + u32::from(segment.flags & FIN != 0);
            (0, segment.seq_number.wrapping_add(occupies), RST | ACK)
        };
        Some(Repr {
            src_port: segment.dst_port,
            dst_port: segment.src_port,
            seq_number,
            ack_number,
            flags,
            window_len: 0,
        })
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);

    #[test]
    fn emitted_header_reads_back_here_and_in_etherparse() {
        let repr =
            Repr { src_port: 40000, dst_port: 80, seq_number: 7, ack_number: 9, flags: SYN | ACK, window_len: 512 };
        let mut b = [0u8; 24];
        b[20..].copy_from_slice(b"data");
        repr.emit(&mut Packet::new_unchecked(&mut b[..]), SRC, DST);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), repr);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(203, 0, 113, 81)));
        assert_eq!(p.payload(), b"data");
        let e = etherparse::TcpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!(
            (e.source_port(), e.destination_port(), e.sequence_number(), e.acknowledgment_number()),
            (40000, 80, 7, 9)
        );
        assert!(e.syn() && e.ack() && !e.rst());
        assert_eq!(e.to_header().calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"data").unwrap(), p.checksum());
    }

    #[test]
    fn refuses_a_data_offset_outside_the_segment() {
        let mut b = [0u8; 20];
        b[12] = 0x50;
        assert!(Packet::new_checked(&b[..]).is_ok());
        for off in [0x00u8, 0x40, 0x60, 0xf0] {
            b[12] = off;
            assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadTcpHeader), "data offset {off:#x}");
        }
        assert_eq!(Packet::new_checked(&b[..19]).err(), Some(WireError::BadTcpHeader));
    }

    #[test]
    fn resets_answer_by_rfc_9293() {
        let syn = Repr { src_port: 1, dst_port: 2, seq_number: 100, ack_number: 0, flags: SYN, window_len: 1 };
        let r = Repr::reset_for(&syn, 0).unwrap();
        assert_eq!((r.src_port, r.dst_port, r.seq_number, r.ack_number, r.flags), (2, 1, 0, 101, RST | ACK));
        let data = Repr { flags: ACK | PSH, ack_number: 555, ..syn };
        let r = Repr::reset_for(&data, 10).unwrap();
        assert_eq!((r.seq_number, r.ack_number, r.flags), (555, 0, RST));
        let fin = Repr { flags: FIN, ..syn };
        assert_eq!(Repr::reset_for(&fin, 3).unwrap().ack_number, 104);
        assert!(Repr::reset_for(&Repr { flags: RST | ACK, ..syn }, 0).is_none());
    }

    #[test]
    fn options_as_a_syn_and_an_ack_carry_them() {
        // MSS 1460, SACK permitted, timestamps, NOP, window scale 7: Linux's SYN.
        let syn = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let got: Vec<TcpOption> = Options::new(&syn).collect();
        assert_eq!(
            got,
            [TcpOption::Other(OPT_MSS), TcpOption::SackPermitted, TcpOption::Timestamps, TcpOption::WindowScale(7)]
        );
        // Two SACK blocks: the highest right edge, across the wrap of sequence space.
        let sack = [1, 1, 5, 18, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert_eq!(Options::new(&sack).collect::<Vec<_>>(), [TcpOption::SackRightEdge(0x10)]);
        assert!(Options::is_timestamps_only(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]));
        assert!(!Options::is_timestamps_only(&sack[..12]));
        // A scale beyond 14 is read as 14 (RFC 7323 2.3).
        assert_eq!(Options::new(&[3, 3, 15]).next(), Some(TcpOption::WindowScale(14)));
        // Malformed: a length of 1, a length past the end, end-of-list: the list stops.
        for bad in [&[3u8, 1, 7][..], &[3, 9, 7][..], &[0, 3, 3, 7][..], &[5, 10, 0, 0][..]] {
            let got: Vec<TcpOption> = Options::new(bad).collect();
            assert!(got.iter().all(|o| matches!(o, TcpOption::Other(_))), "{bad:?}: {got:?}");
        }
    }
}
