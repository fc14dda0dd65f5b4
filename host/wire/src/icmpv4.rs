//! ICMP for IPv4 (RFC 792): the message view, and the messages natgw sends itself (echo
//! replies, destination unreachable, time exceeded).

use crate::{checksum, WireError};

pub const HEADER_LEN: usize = 8;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;
/// Destination unreachable: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Destination unreachable: communication administratively prohibited (RFC 1812).
pub const CODE_ADMIN_PROHIBITED: u8 = 13;

/// The types that report an error about a packet they quote (RFC 1812 4.3.2.7).
pub fn is_error(t: u8) -> bool {
    matches!(t, DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM)
}

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Echo: identifier and sequence number.
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ: Range<usize> = 6..8;
    /// Destination unreachable, fragmentation needed: the next hop's MTU (RFC 1191).
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
    /// The rest of the header (bytes 4..8), whatever the type.
    pub const REST: Range<usize> = 4..8;
}

/// A view of an ICMP message (the IP payload). After `new_checked` succeeds, no getter or
/// setter panics.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::BadIcmp);
        }
        Ok(Self::new_unchecked(buffer))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The 16-bit word type and code share, as it enters the checksum.
    pub fn type_code_word(&self) -> u16 {
        u16::from_be_bytes([self.msg_type(), self.msg_code()])
    }

    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn echo_ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    pub fn echo_seq_no(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_SEQ])
    }

    pub fn next_hop_mtu(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// What follows the 8-byte header: echo data, or the quoted packet of an error.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref(), 0)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn set_echo_ident(&mut self, id: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&id.to_be_bytes());
    }

    pub fn set_echo_seq_no(&mut self, n: u16) {
        self.buffer.as_mut()[field::ECHO_SEQ].copy_from_slice(&n.to_be_bytes());
    }

    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        self.buffer.as_mut()[field::NEXT_HOP_MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    fn clear_rest(&mut self) {
        self.buffer.as_mut()[field::REST].fill(0);
    }

    /// Computes the checksum over the whole message (ICMP has no pseudo-header).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::compute(self.buffer.as_ref());
        self.set_checksum(c);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The ICMP messages natgw reads and sends. `data` is echo data, or for an error the
/// start of the packet it is about (its IP header and at least 8 bytes, RFC 792).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// Type 3 with its code; `next_hop_mtu` matters for code 4 (RFC 1191), else 0.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads the message kinds above; anything else is `BadIcmp` (natgw forwards other
    /// types without a `Repr`).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&'a T>) -> Result<Repr<'a>, WireError> {
        let data = &p.buffer.as_ref()[HEADER_LEN..];
        Ok(match (p.msg_type(), p.msg_code()) {
            (ECHO_REQUEST, 0) => Repr::EchoRequest { ident: p.echo_ident(), seq_no: p.echo_seq_no(), data },
            (ECHO_REPLY, 0) => Repr::EchoReply { ident: p.echo_ident(), seq_no: p.echo_seq_no(), data },
            (DEST_UNREACHABLE, code) => Repr::DstUnreachable { code, next_hop_mtu: p.next_hop_mtu(), data },
            (TIME_EXCEEDED, code) => Repr::TimeExceeded { code, data },
            _ => return Err(WireError::BadIcmp),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Repr::EchoRequest { data, .. }
                | Repr::EchoReply { data, .. }
                | Repr::DstUnreachable { data, .. }
                | Repr::TimeExceeded { data, .. } => data.len(),
            }
    }

    /// Writes the message into a buffer of exactly `buffer_len()` bytes, checksum included.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.clear_rest();
        let data = match *self {
            Repr::EchoRequest { ident, seq_no, data } | Repr::EchoReply { ident, seq_no, data } => {
                p.set_msg_type(if matches!(self, Repr::EchoRequest { .. }) { ECHO_REQUEST } else { ECHO_REPLY });
                p.set_msg_code(0);
                p.set_echo_ident(ident);
                p.set_echo_seq_no(seq_no);
                data
            }
            Repr::DstUnreachable { code, next_hop_mtu, data } => {
                p.set_msg_type(DEST_UNREACHABLE);
                p.set_msg_code(code);
                p.set_next_hop_mtu(next_hop_mtu);
                data
            }
            Repr::TimeExceeded { code, data } => {
                p.set_msg_type(TIME_EXCEEDED);
                p.set_msg_code(code);
                data
            }
        };
        p.data_mut()[..data.len()].copy_from_slice(data);
        p.fill_checksum();
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_round_trips_and_etherparse_agrees() {
        let quote =
            [0x45u8, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 10, 1, 10, 203, 0, 113, 7, 0x9c, 0x40, 0, 7, 0, 8, 0, 0];
        for repr in [
            Repr::EchoRequest { ident: 0x1234, seq_no: 7, data: b"ping" },
            Repr::EchoReply { ident: 0x1234, seq_no: 7, data: b"ping" },
            Repr::DstUnreachable { code: CODE_FRAG_NEEDED, next_hop_mtu: 1280, data: &quote },
            Repr::DstUnreachable { code: CODE_ADMIN_PROHIBITED, next_hop_mtu: 0, data: &quote },
            Repr::TimeExceeded { code: 0, data: &quote },
        ] {
            let mut b = vec![0xaau8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            assert!(p.verify_checksum(), "{repr:?}");
            assert_eq!(Repr::parse(&p).unwrap(), repr);
            let e = etherparse::Icmpv4Slice::from_slice(&b).unwrap();
            assert_eq!((e.type_u8(), e.code_u8(), e.checksum()), (p.msg_type(), p.msg_code(), p.checksum()));
            assert_eq!(e.icmp_type().calc_checksum(e.payload()), p.checksum(), "{repr:?}");
        }
        assert_eq!(Packet::new_checked(&[8u8, 0, 0][..]).err(), Some(WireError::BadIcmp));
        assert!(is_error(TIME_EXCEEDED) && is_error(DEST_UNREACHABLE) && !is_error(ECHO_REQUEST));
    }
}
