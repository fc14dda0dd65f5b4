//! IPv4 (RFC 791): the header view, the header natgw emits, and splitting a packet into
//! fragments for a smaller MTU.

use std::net::Ipv4Addr;

use crate::{checksum, WireError};

/// The header without options (IHL 5): the only one natgw forwards or builds.
pub const MIN_HEADER_LEN: usize = 20;
const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A view of an IPv4 packet. The buffer may be longer than the packet (Ethernet padding).
/// After `new_checked` or `new_checked_header` succeeds, no getter or setter panics.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A packet as received from a link: version 4, a header length within the buffer,
    /// and a total length between the header and the buffer. A total length of zero (a
    /// BIG TCP GSO frame) is refused as `BadTotalLength`: natgw does not accept those.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// A header quoted inside an ICMP error: the quote is usually cut short, so only the
    /// header itself must be present (its total length speaks of the original packet).
    pub fn new_checked_header(buffer: T) -> Result<Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN || b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadIcmpQuote);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(WireError::BadIcmpQuote);
        }
        Ok(Self::new_unchecked(buffer))
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::NotIpv4);
        }
        let ihl = self.header_len();
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(WireError::BadIhl);
        }
        let total = self.total_len();
        if total < ihl || total > b.len() {
            return Err(WireError::BadTotalLength);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(&self.buffer.as_ref()[field::LENGTH]))
    }

    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_frag(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG])
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags_frag() & DF != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.flags_frag() & MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & OFFSET_MASK) * 8
    }

    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The 16-bit word TTL and protocol share, as it enters the header checksum.
    pub fn ttl_protocol_word(&self) -> u16 {
        u16::from_be_bytes([self.ttl(), self.protocol()])
    }

    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        addr(&self.buffer.as_ref()[field::SRC])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        addr(&self.buffer.as_ref()[field::DST])
    }

    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header(), 0)) == 0xffff
    }

    /// The payload as far as the buffer holds it, bounded by the total length.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len()).max(self.header_len());
        &b[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 4 and the header length in bytes (a multiple of 4, at most 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let words = u8::try_from(header_len / 4).unwrap_or(0x0f).min(0x0f);
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | words;
    }

    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_ident(&mut self, id: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&id.to_be_bytes());
    }

    /// Flags and fragment offset (in bytes, a multiple of 8, below 65536: IPv4's).
    pub fn set_flags_and_offset(&mut self, dont_fragment: bool, more_fragments: bool, offset: usize) {
        let units = u16::try_from(offset / 8).unwrap_or(OFFSET_MASK) & OFFSET_MASK;
        let v = if dont_fragment { DF } else { 0 } | if more_fragments { MF } else { 0 } | units;
        self.buffer.as_mut()[field::FLAGS_FRAG].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Computes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::compute(self.header());
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = self.total_len().min(self.buffer.as_ref().len()).max(hl);
        &mut self.buffer.as_mut()[hl..end]
    }
}

/// An IPv4 header (IHL 5) as natgw emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
}

impl Repr {
    /// Reads an unfragmented packet's header. Options (IHL > 5) and fragments are refused:
    /// a `Repr` describes only what natgw itself would emit.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, WireError> {
        if p.header_len() != MIN_HEADER_LEN {
            return Err(WireError::IpOptions);
        }
        if p.is_fragment() {
            return Err(WireError::BadTotalLength);
        }
        Ok(Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.total_len() - MIN_HEADER_LEN,
            ttl: p.ttl(),
            ident: p.ident(),
            dont_fragment: p.dont_fragment(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN + self.payload_len
    }

    /// Writes the header (with its checksum) into a buffer of at least `MIN_HEADER_LEN`
    /// bytes; the payload is the caller's. `BadTotalLength` when header and payload do not
    /// fit IPv4's 16-bit total length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), WireError> {
        let total = u16::try_from(self.buffer_len()).map_err(|_| WireError::BadTotalLength)?;
        p.set_version_and_header_len(MIN_HEADER_LEN);
        p.set_dscp_ecn(0);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_flags_and_offset(self.dont_fragment, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        p.fill_checksum();
        Ok(())
    }
}

/// One piece of an IPv4 packet split for a smaller MTU: its new header and the range of
/// the original packet's payload it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub header: [u8; MIN_HEADER_LEN],
    pub payload: std::ops::Range<usize>,
}

/// Splits an IPv4 packet (IHL 5, possibly itself a fragment) into fragments of at most
/// `mtu` bytes (RFC 791): payload pieces are multiples of 8 bytes except the last; the
/// offset continues the packet's own offset and MF is kept on the last piece only if the
/// packet had it. `None` when the packet has DF set, options, or `mtu` leaves no room.
/// Payload ranges index into `l3` (the whole IP packet).
pub fn split(l3: &[u8], mtu: usize) -> Option<Vec<Fragment>> {
    let ip = Packet::new_checked(l3).ok()?;
    if ip.header_len() != MIN_HEADER_LEN || ip.dont_fragment() {
        return None;
    }
    let step = (mtu.checked_sub(MIN_HEADER_LEN)? / 8) * 8;
    if step == 0 {
        return None;
    }
    let total = ip.total_len();
    let base = ip.frag_offset();
    let more_after = ip.more_fragments();
    let mut out = Vec::with_capacity((total - MIN_HEADER_LEN).div_ceil(step));
    let mut at = MIN_HEADER_LEN;
    while at < total {
        let end = (at + step).min(total);
        let mut header = [0u8; MIN_HEADER_LEN];
        header.copy_from_slice(&l3[..MIN_HEADER_LEN]);
        let mut h = Packet::new_unchecked(&mut header[..]);
        // Never more than the packet's own total length, which fits.
        h.set_total_len(u16::try_from(MIN_HEADER_LEN + end - at).ok()?);
        h.set_flags_and_offset(false, end < total || more_after, base + at - MIN_HEADER_LEN);
        h.fill_checksum();
        out.push(Fragment { header, payload: at..end });
        at = end;
    }
    Some(out)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTO_UDP;

    /// 10.10.1.10 -> 203.0.113.80, TCP, DF, TTL 64, ident 0x1234, total 40, valid checksum.
    fn header() -> [u8; 40] {
        let mut b = [0u8; 40];
        Repr {
            src: Ipv4Addr::new(10, 10, 1, 10),
            dst: Ipv4Addr::new(203, 0, 113, 80),
            protocol: 6,
            payload_len: 20,
            ttl: 64,
            ident: 0x1234,
            dont_fragment: true,
        }
        .emit(&mut Packet::new_unchecked(&mut b[..]))
        .unwrap();
        b
    }

    #[test]
    fn emitted_header_reads_back_here_and_in_etherparse() {
        let b = header();
        let ip = Packet::new_checked(&b[..]).unwrap();
        assert!(ip.verify_checksum() && ip.dont_fragment() && !ip.is_fragment());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.total_len(), ip.ttl()),
            (Ipv4Addr::new(10, 10, 1, 10), Ipv4Addr::new(203, 0, 113, 80), 40, 64)
        );
        let e = etherparse::Ipv4HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(e.header_checksum(), ip.checksum());
        assert_eq!(e.to_header().calc_header_checksum(), ip.checksum());
        assert_eq!((e.identification(), e.total_len(), e.protocol().0), (0x1234, 40, 6));
        assert_eq!(Repr::parse(&ip).unwrap().payload_len, 20);
    }

    #[test]
    fn refuses_malformed_headers_with_the_reason() {
        let b = header();
        let with = |at: usize, v: u8| {
            let mut x = b;
            x[at] = v;
            x
        };
        assert_eq!(Packet::new_checked(&with(0, 0x44)[..]).err(), Some(WireError::BadIhl));
        assert_eq!(Packet::new_checked(&with(0, 0x4f)[..]).err(), Some(WireError::BadIhl));
        assert_eq!(Packet::new_checked(&with(3, 0x80)[..]).err(), Some(WireError::BadTotalLength));
        assert_eq!(Packet::new_checked(&with(3, 0x10)[..]).err(), Some(WireError::BadTotalLength));
        assert_eq!(Packet::new_checked(&with(0, 0x65)[..]).err(), Some(WireError::NotIpv4));
        assert_eq!(Packet::new_checked(&b[..19]).err(), Some(WireError::Truncated));
        // A quoted header needs only itself.
        assert!(Packet::new_checked_header(&b[..20]).is_ok());
        assert_eq!(Packet::new_checked_header(&b[..19]).err(), Some(WireError::BadIcmpQuote));
        // Options are not what natgw emits.
        let mut opt = [0u8; 44];
        opt[..20].copy_from_slice(&b[..20]);
        opt[0] = 0x46;
        opt[3] = 44;
        assert_eq!(Repr::parse(&Packet::new_checked(&opt[..]).unwrap()).err(), Some(WireError::IpOptions));
    }

    #[test]
    fn splits_for_a_smaller_mtu_and_reassembles() {
        // A 1400-byte UDP packet (no DF), split for MTU 576.
        let mut pkt = vec![0u8; 1400];
        Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: PROTO_UDP,
            payload_len: 1380,
            ttl: 64,
            ident: 0x1234,
            dont_fragment: false,
        }
        .emit(&mut Packet::new_unchecked(&mut pkt[..]))
        .unwrap();
        for (i, b) in pkt[20..].iter_mut().enumerate() {
            *b = i.to_le_bytes()[0];
        }
        let frags = split(&pkt, 576).unwrap();
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let h = Packet::new_checked_header(&f.header[..]).unwrap();
            assert!(h.verify_checksum());
            assert!(MIN_HEADER_LEN + f.payload.len() <= 576);
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
        let mut m = Packet::new_unchecked(&mut mid[..]);
        m.set_flags_and_offset(false, true, 800);
        m.fill_checksum();
        let frags = split(&mid, 576).unwrap();
        assert!(Packet::new_checked_header(&frags[2].header[..]).unwrap().more_fragments());
        assert_eq!(Packet::new_checked_header(&frags[0].header[..]).unwrap().frag_offset(), 800);
        // DF: not ours to split.
        let mut df = pkt.clone();
        df[6] = 0x40;
        assert!(split(&df, 576).is_none());
        assert!(split(&pkt, 20).is_none());
    }
}
