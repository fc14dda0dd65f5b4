//! DNS messages (RFC 1035): a view that reads a message's one question and its answer
//! section, and a builder for the messages tests send.
//!
//! What natgw reads from DNS is what a resolver answered: which names it asked for, and
//! the addresses and aliases it got back. Names are decoded into text (`Name`: lowercase,
//! at most 253 characters, held inline). Compression pointers (RFC 1035 4.1.4) are
//! followed only backwards, strictly before the label sequence that holds them, so no
//! loop is possible, and at most `MAX_JUMPS` times in one name. At most `MAX_RECORDS`
//! answers are read. No input panics the view, and nothing here allocates.
//!
//! A DNS message is a UDP payload, or a TCP message without its 2-byte length prefix.

use core::fmt;
use core::iter::FusedIterator;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

pub const HEADER_LEN: usize = 12;

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
/// What `Builder::answer` writes for `RecordData::Other`.
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const CLASS_IN: u16 = 1;

/// Longest name in text form (no trailing dot): 253 characters. (255 bytes on the wire:
/// a length byte before each label and the root's 0 at the end.)
pub const MAX_NAME_TEXT: usize = 253;
/// Records of one section read at most (later ones are not looked at; `Answers::skipped`
/// says how many).
pub const MAX_RECORDS: usize = 64;

/// Longest label (RFC 1035 2.3.4): its length byte's top two bits are 00.
const MAX_LABEL: usize = 63;
/// Compression pointers followed in one name at most.
const MAX_JUMPS: usize = 16;
/// Longest message: what the 2-byte length prefix of DNS over TCP can say. `Builder`
/// writes no further.
const MAX_MESSAGE_LEN: usize = 65_535;

mod field {
    use core::ops::Range;
    pub const ID: Range<usize> = 0..2;
    pub const FLAGS: Range<usize> = 2..4;
    pub const QDCOUNT: Range<usize> = 4..6;
    pub const ANCOUNT: Range<usize> = 6..8;

    /// Flags: QR (a response), the opcode's 4 bits, AA, TC (truncated), RD (recursion
    /// desired), RA (recursion available), Z, AD, CD, the rcode's 4 bits.
    pub const FLAG_QR: u16 = 0x8000;
    pub const OPCODE_SHIFT: u16 = 11;
    pub const FLAG_TC: u16 = 0x0200;
    pub const FLAG_RD: u16 = 0x0100;
    pub const FLAG_RA: u16 = 0x0080;
    pub const RCODE_MASK: u16 = 0x000f;

    /// A length byte's top two bits: 00 a label, 11 a compression pointer (the other 14
    /// bits its offset); 01 and 10 are label types natgw does not read.
    pub const LABEL_KIND: u8 = 0xc0;
    pub const POINTER: u8 = 0xc0;

    /// A record after its owner name: type, class, TTL, rdlength.
    pub const RR_TYPE: usize = 0;
    pub const RR_CLASS: usize = 2;
    pub const RR_TTL: usize = 4;
    pub const RR_RDLENGTH: usize = 8;
    pub const RR_FIXED_LEN: usize = 10;
}

/// Why a DNS message could not be read (or built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DnsError {
    #[error("DNS message shorter than its header, question or records say")]
    Truncated,
    #[error("DNS label longer than 63 bytes (or of a label type other than a plain label)")]
    LabelTooLong,
    #[error("DNS label byte other than a-z, A-Z, 0-9, '-' and '_'")]
    BadLabelByte,
    #[error("DNS name longer than 253 characters")]
    NameTooLong,
    #[error("empty label in a DNS name's text")]
    EmptyLabel,
    #[error("DNS compression pointer not strictly backwards, or more than 16 in one name")]
    BadPointer,
    #[error("DNS message without exactly one question")]
    NotOneQuestion,
    #[error("DNS record data length wrong for its type")]
    BadRdLength,
}

/// A domain name in text form: lowercase ASCII, labels joined by '.', no trailing dot; the
/// root is "". Labels hold only `[a-z0-9-_]` bytes (upper case input is lowered; any
/// other byte is `BadLabelByte`), 1 to 63 of them; the whole text is at most
/// `MAX_NAME_TEXT` characters. Held inline: a `Name` is 254 bytes and never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    len: u8,
    /// The text, then zeros: so the derived equality and hash are the text's.
    bytes: [u8; MAX_NAME_TEXT],
}

impl Name {
    pub const ROOT: Name = Name { len: 0, bytes: [0; MAX_NAME_TEXT] };

    /// The text. Never panics: only ASCII is stored.
    pub fn as_str(&self) -> &str {
        let text = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        core::str::from_utf8(text).unwrap_or_default()
    }

    /// Characters in the text.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The root.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A name from its text, with or without one trailing dot: "GitHub.com" and
    /// "github.com." are "github.com"; "" and "." are the root. Names here are concrete:
    /// a wildcard ("*.pypi.org") is `BadLabelByte`.
    pub fn from_text(text: &str) -> Result<Name, DnsError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut name = Name::ROOT;
        if !text.is_empty() {
            for label in text.as_bytes().split(|&b| b == b'.') {
                name.push_label(label)?;
            }
        }
        Ok(name)
    }

    /// Appends a label, lowered, checking every limit before it is kept. On an error the
    /// name is half written: callers drop it.
    fn push_label(&mut self, label: &[u8]) -> Result<(), DnsError> {
        if label.is_empty() {
            return Err(DnsError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(DnsError::LabelTooLong);
        }
        let start = self.len();
        let dot = usize::from(start > 0);
        let end = start + dot + label.len();
        if end > MAX_NAME_TEXT {
            return Err(DnsError::NameTooLong);
        }
        let len = u8::try_from(end).map_err(|_| DnsError::NameTooLong)?;
        if dot == 1 {
            self.bytes[start] = b'.';
        }
        for (slot, &b) in self.bytes[start + dot..end].iter_mut().zip(label) {
            *slot = text_byte(b)?;
        }
        self.len = len;
        Ok(())
    }

    /// Bytes of the name on the wire, uncompressed: a length byte per label (where the
    /// text has its dots, and one more), and the root's 0.
    fn wire_len(&self) -> usize {
        if self.is_empty() {
            1
        } else {
            self.len() + 2
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A label byte as it is kept: lowercase letters, digits, '-' and '_' (SRV and DKIM
/// names use it); upper case lowered; anything else refused.
fn text_byte(b: u8) -> Result<u8, DnsError> {
    match b {
        b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => Ok(b),
        b'A'..=b'Z' => Ok(b.to_ascii_lowercase()),
        _ => Err(DnsError::BadLabelByte),
    }
}

/// Reads the name at `start`: its text, and where the name ends there (after its root 0
/// or after its first pointer). Every byte read is looked up with `get`: a name running
/// off the buffer is `Truncated`, never a panic.
fn read_name(buf: &[u8], start: usize) -> Result<(Name, usize), DnsError> {
    let mut name = Name::ROOT;
    let mut pos = start;
    // Where the label sequence being read starts: a pointer must point before it.
    let mut sequence = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let b = *buf.get(pos).ok_or(DnsError::Truncated)?;
        match b & field::LABEL_KIND {
            0 if b == 0 => return Ok((name, end.unwrap_or(pos + 1))),
            0 => {
                let n = usize::from(b);
                let label = buf.get(pos + 1..pos + 1 + n).ok_or(DnsError::Truncated)?;
                name.push_label(label)?;
                pos += 1 + n;
            }
            field::POINTER => {
                let low = *buf.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([b & !field::LABEL_KIND, low]));
                jumps += 1;
                if target >= sequence || jumps > MAX_JUMPS {
                    return Err(DnsError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                pos = target;
                sequence = target;
            }
            // 01 (extended label types, RFC 6891 section 5) and 10 (reserved): read as a
            // length they are 64 or more.
            _ => return Err(DnsError::LabelTooLong),
        }
    }
}

/// Where the name at `pos` ends, by its lengths alone (labels not checked, pointers not
/// followed); `None` if it runs off the buffer or has a label type natgw does not read.
fn skip_name(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let b = *buf.get(pos)?;
        match b & field::LABEL_KIND {
            0 if b == 0 => return Some(pos + 1),
            0 => pos += 1 + usize::from(b),
            field::POINTER => return (pos + 2 <= buf.len()).then_some(pos + 2),
            _ => return None,
        }
    }
}

fn get16(buf: &[u8], pos: usize) -> Result<u16, DnsError> {
    match buf.get(pos..pos + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(DnsError::Truncated),
    }
}

fn get32(buf: &[u8], pos: usize) -> Result<u32, DnsError> {
    match buf.get(pos..pos + 4) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(DnsError::Truncated),
    }
}

/// A view of a DNS message. After `new_checked` succeeds no getter panics; the question
/// and the answers are read (and checked) when asked for.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
}

impl<'a> Message<'a> {
    /// At least a header.
    pub fn new_checked(buf: &'a [u8]) -> Result<Message<'a>, DnsError> {
        if buf.len() < HEADER_LEN {
            return Err(DnsError::Truncated);
        }
        Ok(Message { buf })
    }

    fn header16(&self, f: core::ops::Range<usize>) -> u16 {
        let b = &self.buf[f];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn flags(&self) -> u16 {
        self.header16(field::FLAGS)
    }

    pub fn id(&self) -> u16 {
        self.header16(field::ID)
    }

    /// QR: a response, not a query.
    pub fn is_response(&self) -> bool {
        self.flags() & field::FLAG_QR != 0
    }

    /// 0: a standard query.
    pub fn opcode(&self) -> u8 {
        (self.flags() >> field::OPCODE_SHIFT).to_be_bytes()[1] & 0x0f
    }

    /// The header's 4 bits (an EDNS extended rcode is not read): 0 no error, 2 SERVFAIL,
    /// 3 NXDOMAIN, 5 REFUSED.
    pub fn rcode(&self) -> u8 {
        (self.flags() & field::RCODE_MASK).to_be_bytes()[1]
    }

    /// TC: the answer did not fit (over UDP); the client should ask again over TCP.
    pub fn truncated(&self) -> bool {
        self.flags() & field::FLAG_TC != 0
    }

    pub fn question_count(&self) -> u16 {
        self.header16(field::QDCOUNT)
    }

    /// As the header says: the message may hold fewer.
    pub fn answer_count(&self) -> u16 {
        self.header16(field::ANCOUNT)
    }

    /// The one question (question_count must be 1, else NotOneQuestion) and where the
    /// answers start.
    pub fn question(&self) -> Result<Question, DnsError> {
        if self.question_count() != 1 {
            return Err(DnsError::NotOneQuestion);
        }
        let (name, pos) = read_name(self.buf, HEADER_LEN)?;
        let qtype = get16(self.buf, pos)?;
        let qclass = get16(self.buf, pos + 2)?;
        Ok(Question { name, qtype, qclass, end: pos + 4 })
    }

    /// The answer section's records, starting at `question.end`.
    pub fn answers(&self, question: &Question) -> Answers<'a> {
        let declared = usize::from(self.answer_count());
        Answers {
            buf: self.buf,
            start: question.end,
            pos: question.end,
            declared,
            left: declared.min(MAX_RECORDS),
            done: false,
        }
    }
}

/// A message's question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset of the byte after the question: where the answer section starts.
    pub end: usize,
}

/// The answer section: an iterator over its records, decoded. Yields at most
/// `min(answer_count, MAX_RECORDS)` items, and stops for good after the first `Err`
/// (yielded once): after a malformed record, where the next one starts is unknown.
#[derive(Debug, Clone)]
pub struct Answers<'a> {
    buf: &'a [u8],
    start: usize,
    pos: usize,
    declared: usize,
    left: usize,
    done: bool,
}

impl Answers<'_> {
    /// Records beyond the first `MAX_RECORDS` that the message holds (up to its
    /// answer_count): never decoded, only walked over by their lengths to count them. The
    /// same at any point of the iteration; a message declaring more answers than it
    /// holds counts only those it holds.
    pub fn skipped(&self) -> usize {
        if self.declared <= MAX_RECORDS {
            return 0;
        }
        let mut pos = self.start;
        let mut present = 0;
        while present < self.declared {
            let Some(end) = skip_record(self.buf, pos) else { break };
            pos = end;
            present += 1;
        }
        present.saturating_sub(MAX_RECORDS)
    }
}

impl Iterator for Answers<'_> {
    type Item = Result<Record, DnsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.left == 0 {
            return None;
        }
        self.left -= 1;
        match read_record(self.buf, self.pos) {
            Ok((record, end)) => {
                self.pos = end;
                Some(Ok(record))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(if self.done { 0 } else { self.left }))
    }
}

impl FusedIterator for Answers<'_> {}

/// A resource record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    /// Seconds; a TTL with its top bit set reads as 0 (RFC 2181 section 8).
    pub ttl: u32,
    pub data: RecordData,
}

/// A record's data, for the types natgw reads. Those are read only in class IN (the
/// format of an A record's data depends on its class); any other type or class is
/// `Other`, its data not looked at.
// A `Name` is held inline (no allocation anywhere here): every variant is as large as a
// CNAME's, 255 bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordData {
    /// An A record: rdlength exactly 4.
    A(Ipv4Addr),
    /// An AAAA record: rdlength exactly 16.
    Aaaa(Ipv6Addr),
    /// A CNAME record: a name (compression allowed) ending exactly at rdlength.
    Cname(Name),
    Other,
}

/// The record at `pos`, and where it ends.
fn read_record(buf: &[u8], pos: usize) -> Result<(Record, usize), DnsError> {
    let (name, fixed) = read_name(buf, pos)?;
    let rtype = get16(buf, fixed + field::RR_TYPE)?;
    let class = get16(buf, fixed + field::RR_CLASS)?;
    let ttl = match get32(buf, fixed + field::RR_TTL)? {
        t if t & 0x8000_0000 != 0 => 0,
        t => t,
    };
    let rdlength = usize::from(get16(buf, fixed + field::RR_RDLENGTH)?);
    let rd_start = fixed + field::RR_FIXED_LEN;
    let rd_end = rd_start + rdlength;
    let rdata = buf.get(rd_start..rd_end).ok_or(DnsError::Truncated)?;
    let data = match (rtype, class) {
        (TYPE_A, CLASS_IN) => {
            let a: [u8; 4] = rdata.try_into().map_err(|_| DnsError::BadRdLength)?;
            RecordData::A(Ipv4Addr::from(a))
        }
        (TYPE_AAAA, CLASS_IN) => {
            let a: [u8; 16] = rdata.try_into().map_err(|_| DnsError::BadRdLength)?;
            RecordData::Aaaa(Ipv6Addr::from(a))
        }
        (TYPE_CNAME, CLASS_IN) => {
            // Pointers point backwards, so the whole name lies before rd_end: one that
            // runs past the record's data is the rdlength's fault.
            let (target, end) = read_name(&buf[..rd_end], rd_start).map_err(|e| match e {
                DnsError::Truncated => DnsError::BadRdLength,
                e => e,
            })?;
            if end != rd_end {
                return Err(DnsError::BadRdLength);
            }
            RecordData::Cname(target)
        }
        _ => RecordData::Other,
    };
    Ok((Record { name, rtype, class, ttl, data }, rd_end))
}

/// Where the record at `pos` ends, by its lengths alone; `None` if it runs off the buffer.
fn skip_record(buf: &[u8], pos: usize) -> Option<usize> {
    let fixed = skip_name(buf, pos)?;
    let rdlength = usize::from(get16(buf, fixed + field::RR_RDLENGTH).ok()?);
    let end = fixed + field::RR_FIXED_LEN + rdlength;
    (end <= buf.len()).then_some(end)
}

/// Writes a DNS message into a caller's buffer, for tests: a header, one question, and
/// answers. Names are written uncompressed, the class is always IN. Every write is checked
/// first: a buffer too small (or a message past 65 535 bytes) is `Truncated`, and a failed
/// `answer` leaves the message as it was.
#[derive(Debug)]
pub struct Builder<'b> {
    buf: &'b mut [u8],
    len: usize,
}

// A message always has its header: `is_empty` would never be true.
#[allow(clippy::len_without_is_empty)]
impl<'b> Builder<'b> {
    /// Header with this id, flags (RD set), qdcount 1, and the question (class IN).
    pub fn query(buf: &'b mut [u8], id: u16, name: &Name, qtype: u16) -> Result<Builder<'b>, DnsError> {
        Self::new(buf, id, field::FLAG_RD, name, qtype)
    }

    /// As `query`, with QR, RD and RA set and this rcode (its low 4 bits).
    pub fn response(buf: &'b mut [u8], id: u16, name: &Name, qtype: u16, rcode: u8) -> Result<Builder<'b>, DnsError> {
        let flags = field::FLAG_QR | field::FLAG_RD | field::FLAG_RA | (u16::from(rcode) & field::RCODE_MASK);
        Self::new(buf, id, flags, name, qtype)
    }

    fn new(buf: &'b mut [u8], id: u16, flags: u16, name: &Name, qtype: u16) -> Result<Builder<'b>, DnsError> {
        let mut b = Builder { buf, len: 0 };
        let mut header = [0u8; HEADER_LEN];
        header[field::ID].copy_from_slice(&id.to_be_bytes());
        header[field::FLAGS].copy_from_slice(&flags.to_be_bytes());
        header[field::QDCOUNT].copy_from_slice(&1u16.to_be_bytes());
        let mut at = b.put(0, &header)?;
        at = b.put_name(at, name)?;
        at = b.put(at, &qtype.to_be_bytes())?;
        b.len = b.put(at, &CLASS_IN.to_be_bytes())?;
        Ok(b)
    }

    /// Appends an answer record (increments ancount), class IN. The TTL is written as
    /// given (one with its top bit set reads back as 0). `RecordData::Other` is written as
    /// a TXT record holding one empty string (rdlength 1), which reads back as `Other`.
    pub fn answer(&mut self, name: &Name, ttl: u32, data: &RecordData) -> Result<(), DnsError> {
        let rtype = match data {
            RecordData::A(_) => TYPE_A,
            RecordData::Aaaa(_) => TYPE_AAAA,
            RecordData::Cname(_) => TYPE_CNAME,
            RecordData::Other => TYPE_TXT,
        };
        let mut at = self.put_name(self.len, name)?;
        at = self.put(at, &rtype.to_be_bytes())?;
        at = self.put(at, &CLASS_IN.to_be_bytes())?;
        at = self.put(at, &ttl.to_be_bytes())?;
        let rdlength_at = at;
        let rd_start = self.put(at, &[0, 0])?;
        let end = match data {
            RecordData::A(a) => self.put(rd_start, &a.octets())?,
            RecordData::Aaaa(a) => self.put(rd_start, &a.octets())?,
            RecordData::Cname(target) => self.put_name(rd_start, target)?,
            RecordData::Other => self.put(rd_start, &[0])?,
        };
        let rdlength = u16::try_from(end - rd_start).map_err(|_| DnsError::Truncated)?;
        self.put(rdlength_at, &rdlength.to_be_bytes())?;
        let ancount = u16::from_be_bytes([self.buf[field::ANCOUNT.start], self.buf[field::ANCOUNT.start + 1]]);
        let ancount = ancount.checked_add(1).ok_or(DnsError::Truncated)?;
        self.put(field::ANCOUNT.start, &ancount.to_be_bytes())?;
        self.len = end;
        Ok(())
    }

    /// Bytes written so far: the message.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The message's length; it is `buf[..len]`.
    pub fn finish(self) -> usize {
        self.len
    }

    /// Writes `bytes` at `at`, and returns where they end.
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<usize, DnsError> {
        let end = at + bytes.len();
        if end > MAX_MESSAGE_LEN {
            return Err(DnsError::Truncated);
        }
        self.buf.get_mut(at..end).ok_or(DnsError::Truncated)?.copy_from_slice(bytes);
        Ok(end)
    }

    /// Writes a name uncompressed at `at`, and returns where it ends.
    fn put_name(&mut self, at: usize, name: &Name) -> Result<usize, DnsError> {
        let end = at + name.wire_len();
        if end > MAX_MESSAGE_LEN || end > self.buf.len() {
            return Err(DnsError::Truncated);
        }
        let mut at = at;
        if !name.is_empty() {
            for label in name.as_str().split('.') {
                let n = u8::try_from(label.len()).map_err(|_| DnsError::LabelTooLong)?;
                at = self.put(at, &[n])?;
                at = self.put(at, label.as_bytes())?;
            }
        }
        self.put(at, &[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A query for github.com A as dig sends it (RD and AD set, an EDNS OPT record with a
    // cookie in the additional section), and a resolver's answer: the owner name is a
    // pointer to the question's name (0xc00c), then an OPT record.
    const GITHUB_QUERY: [u8; 51] = [
        0x1a, 0x2b, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // header
        0x06, b'g', b'i', b't', b'h', b'u', b'b', 0x03, b'c', b'o', b'm', 0x00, 0x00, 0x01, 0x00,
        0x01, // question
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // OPT, rdlength 12
        0x00, 0x0a, 0x00, 0x08, 0x5e, 0x1f, 0x3a, 0x9c, 0x01, 0x77, 0xe4, 0x2d, // cookie
    ];
    const GITHUB_RESPONSE: [u8; 55] = [
        0x1a, 0x2b, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, // header
        0x06, b'g', b'i', b't', b'h', b'u', b'b', 0x03, b'c', b'o', b'm', 0x00, 0x00, 0x01, 0x00,
        0x01, // question
        0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04, 140, 82, 113, 4, // A, TTL 60
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // OPT
    ];

    // www.example.com CNAME example.net (TTL 300), example.net A 192.0.2.7 (TTL 3600):
    // the CNAME's owner points at the question (0xc00c), the A's owner at the CNAME's
    // data (offset 45, 0xc02d).
    const CNAME_CHAIN: [u8; 74] = [
        0xbe, 0xef, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // header
        0x03, b'w', b'w', b'w', 0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'c', b'o', b'm',
        0x00, // 12
        0x00, 0x01, 0x00, 0x01, // 29
        0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x0d, // 33
        0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'n', b'e', b't', 0x00, // 45
        0xc0, 0x2d, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x04, 192, 0, 2, 7, // 58
    ];

    // example.com AAAA 2001:db8::1, TTL 60.
    const AAAA: [u8; 57] = [
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // header
        0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'c', b'o', b'm', 0x00, 0x00, 0x1c, 0x00,
        0x01, // 12
        0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x10, // 29
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ];

    /// A response header: id 0x1234, one question, `ancount` answers.
    const fn header(ancount: u16) -> [u8; HEADER_LEN] {
        let a = ancount.to_be_bytes();
        [0x12, 0x34, 0x81, 0x80, 0x00, 0x01, a[0], a[1], 0, 0, 0, 0]
    }

    /// The parts one after another, in a fixed buffer (nothing in this file allocates).
    fn cat(parts: &[&[u8]]) -> ([u8; 2048], usize) {
        let mut b = [0u8; 2048];
        let mut n = 0;
        for p in parts {
            b[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        (b, n)
    }

    fn name(text: &str) -> Name {
        Name::from_text(text).unwrap()
    }

    /// The question of a message with this name (wire bytes, root 0 included), type A.
    fn question_of(name_wire: &[u8]) -> Result<Question, DnsError> {
        let (b, n) = cat(&[&header(0), name_wire, &[0, 1, 0, 1]]);
        Message::new_checked(&b[..n])?.question()
    }

    /// The first answer of a message asking for "a" A, whose answer section is `rest`.
    fn first_answer(ancount: u16, rest: &[u8]) -> Option<Result<Record, DnsError>> {
        let (b, n) = cat(&[&header(ancount), &[1, b'a', 0, 0, 1, 0, 1], rest]);
        let m = Message::new_checked(&b[..n]).unwrap();
        let q = m.question().unwrap();
        m.answers(&q).next()
    }

    /// `Display` into a fixed buffer.
    struct Text {
        buf: [u8; 600],
        len: usize,
    }

    impl fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len + s.len();
            self.buf.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    fn shows(args: fmt::Arguments<'_>, expected: &str) {
        let mut t = Text { buf: [0; 600], len: 0 };
        fmt::write(&mut t, args).unwrap();
        assert_eq!(core::str::from_utf8(&t.buf[..t.len]).unwrap(), expected);
    }

    #[test]
    fn reads_a_query_as_dig_sends_it() {
        let m = Message::new_checked(&GITHUB_QUERY[..]).unwrap();
        assert_eq!((m.id(), m.is_response(), m.opcode(), m.rcode(), m.truncated()), (0x1a2b, false, 0, 0, false));
        assert_eq!((m.question_count(), m.answer_count()), (1, 0));
        let q = m.question().unwrap();
        assert_eq!(q, Question { name: name("github.com"), qtype: TYPE_A, qclass: CLASS_IN, end: 28 });
        assert_eq!(m.answers(&q).next(), None);
    }

    #[test]
    fn reads_an_answer_through_a_compression_pointer() {
        let m = Message::new_checked(&GITHUB_RESPONSE[..]).unwrap();
        assert_eq!((m.id(), m.is_response(), m.opcode(), m.rcode(), m.truncated()), (0x1a2b, true, 0, 0, false));
        let q = m.question().unwrap();
        assert_eq!((q.name.as_str(), q.end), ("github.com", 28));
        let mut answers = m.answers(&q);
        assert_eq!(answers.size_hint(), (0, Some(1)));
        let a = answers.next().unwrap().unwrap();
        assert_eq!(
            a,
            Record {
                name: name("github.com"),
                rtype: TYPE_A,
                class: CLASS_IN,
                ttl: 60,
                data: RecordData::A(Ipv4Addr::new(140, 82, 113, 4)),
            }
        );
        assert_eq!((answers.next(), answers.skipped()), (None, 0));
    }

    #[test]
    fn reads_a_cname_chain() {
        let m = Message::new_checked(&CNAME_CHAIN[..]).unwrap();
        let q = m.question().unwrap();
        assert_eq!((q.name.as_str(), q.end), ("www.example.com", 33));
        let mut answers = m.answers(&q);
        let cname = answers.next().unwrap().unwrap();
        assert_eq!((cname.name, cname.rtype, cname.ttl), (name("www.example.com"), TYPE_CNAME, 300));
        assert_eq!(cname.data, RecordData::Cname(name("example.net")));
        let a = answers.next().unwrap().unwrap();
        assert_eq!((a.name, a.rtype, a.ttl), (name("example.net"), TYPE_A, 3600));
        assert_eq!(a.data, RecordData::A(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(answers.next(), None);
    }

    #[test]
    fn cname_data_may_be_compressed_but_must_end_at_its_rdlength() {
        // www.example.com CNAME cdn.example.com: "cdn", then a pointer to "example.com"
        // in the question (offset 16).
        let question = &CNAME_CHAIN[12..33];
        let rr = |rdlength: u8| [0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, rdlength];
        let rdata = [3, b'c', b'd', b'n', 0xc0, 0x10];
        let read = |rdlength: u8, rdata: &[u8]| {
            let (b, n) = cat(&[&header(1), question, &rr(rdlength), rdata]);
            let m = Message::new_checked(&b[..n]).unwrap();
            m.answers(&m.question().unwrap()).next().unwrap().map(|r| r.data)
        };
        assert_eq!(read(6, &rdata), Ok(RecordData::Cname(name("cdn.example.com"))));
        // The name ends before the rdlength (a stray byte after it), or runs past it.
        assert_eq!(read(7, &[3, b'c', b'd', b'n', 0xc0, 0x10, 0]), Err(DnsError::BadRdLength));
        assert_eq!(read(5, &rdata), Err(DnsError::BadRdLength));
        assert_eq!(read(3, &[3, b'c', b'd', b'n', 0]), Err(DnsError::BadRdLength));
    }

    #[test]
    fn reads_aaaa() {
        let m = Message::new_checked(&AAAA[..]).unwrap();
        let q = m.question().unwrap();
        assert_eq!((q.name.as_str(), q.qtype), ("example.com", TYPE_AAAA));
        let r = m.answers(&q).next().unwrap().unwrap();
        assert_eq!((r.name, r.rtype, r.ttl), (name("example.com"), TYPE_AAAA, 60));
        assert_eq!(r.data, RecordData::Aaaa(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
    }

    #[test]
    fn header_fields() {
        // NXDOMAIN, truncated, opcode 2 (STATUS).
        let mut b = GITHUB_RESPONSE;
        b[2..4].copy_from_slice(&0x9383u16.to_be_bytes());
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!((m.is_response(), m.opcode(), m.rcode(), m.truncated()), (true, 2, 3, true));
    }

    #[test]
    fn upper_case_is_lowered() {
        let q = question_of(&[6, b'G', b'i', b't', b'H', b'u', b'B', 3, b'C', b'O', b'M', 0]).unwrap();
        assert_eq!(q.name.as_str(), "github.com");
        assert_eq!(q.name, name("GitHub.COM"));
    }

    #[test]
    fn ttl_with_the_top_bit_set_is_zero() {
        let rr = [0xc0, 0x0c, 0, 1, 0, 1, 0x80, 0, 0, 1, 0, 4, 10, 0, 0, 1];
        assert_eq!(first_answer(1, &rr).unwrap().unwrap().ttl, 0);
        let rr = [0xc0, 0x0c, 0, 1, 0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 4, 10, 0, 0, 1];
        assert_eq!(first_answer(1, &rr).unwrap().unwrap().ttl, 0x7fff_ffff);
    }

    #[test]
    fn other_types_and_classes_are_not_decoded() {
        // An MX record, and an A record in class CH (whose data is not an address).
        let mx = [0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 0, 60, 0, 4, 0, 10, 0xc0, 0x0c];
        let r = first_answer(1, &mx).unwrap().unwrap();
        assert_eq!((r.rtype, r.class, r.data), (15, CLASS_IN, RecordData::Other));
        let ch = [0xc0, 0x0c, 0, 1, 0, 3, 0, 0, 0, 60, 0, 5, 1, b'x', 0, 0, 1];
        assert_eq!(first_answer(1, &ch).unwrap().unwrap().data, RecordData::Other);
    }

    #[test]
    fn refuses_pointer_loops_and_forward_pointers() {
        // The question's name points at itself; at a byte after itself.
        assert_eq!(question_of(&[0xc0, 0x0c]).err(), Some(DnsError::BadPointer));
        assert_eq!(question_of(&[0xc0, 0x0d, 0]).err(), Some(DnsError::BadPointer));
        // A label, then a pointer back to that label: inside the sequence being read.
        assert_eq!(question_of(&[1, b'a', 0xc0, 0x0c]).err(), Some(DnsError::BadPointer));
        // An answer's name points at itself.
        let rr = [0xc0, 0x13, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1];
        assert_eq!(first_answer(1, &rr), Some(Err(DnsError::BadPointer)));
        // Two pointers to each other: the answer's name (offset 19) points at the id
        // (offset 0), which reads as a pointer back to the answer's name.
        let (mut b, n) = cat(&[&header(1), &[1, b'a', 0, 0, 1, 0, 1], &[0xc0, 0x00], &rr[2..]]);
        b[0..2].copy_from_slice(&[0xc0, 0x13]);
        let m = Message::new_checked(&b[..n]).unwrap();
        let mut answers = m.answers(&m.question().unwrap());
        assert_eq!(answers.next(), Some(Err(DnsError::BadPointer)));
        assert_eq!(answers.next(), None);
    }

    /// A response to "a" A whose second answer's name reaches the question's name
    /// through `jumps` pointers: `jumps - 2` of them in the first answer's data (a NULL
    /// record), each pointing at the one before, the first at the question's name.
    fn pointer_chain(jumps: usize) -> ([u8; 2048], usize) {
        let links = jumps - 2;
        let rdlength = u8::try_from(2 * (links + 1)).unwrap();
        let (mut b, mut n) =
            cat(&[&header(2), &[1, b'a', 0, 0, 1, 0, 1], &[0xc0, 0x0c, 0, 10, 0, 1, 0, 0, 0, 60, 0, rdlength]]);
        let rdata = n;
        b[n..n + 2].copy_from_slice(&[0xc0, 0x0c]);
        n += 2;
        for _ in 0..links {
            b[n..n + 2].copy_from_slice(&[0xc0, u8::try_from(n - 2).unwrap()]);
            n += 2;
        }
        assert_eq!(n - rdata, usize::from(rdlength));
        let rr = [0xc0, u8::try_from(n - 2).unwrap(), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1];
        b[n..n + rr.len()].copy_from_slice(&rr);
        (b, n + rr.len())
    }

    #[test]
    fn follows_at_most_16_pointers_in_a_name() {
        let (b, n) = pointer_chain(MAX_JUMPS);
        let m = Message::new_checked(&b[..n]).unwrap();
        let mut answers = m.answers(&m.question().unwrap());
        assert_eq!(answers.next().unwrap().unwrap().data, RecordData::Other);
        assert_eq!(answers.next().unwrap().unwrap().name, name("a"));
        let (b, n) = pointer_chain(MAX_JUMPS + 1);
        let m = Message::new_checked(&b[..n]).unwrap();
        let mut answers = m.answers(&m.question().unwrap());
        assert!(answers.next().unwrap().is_ok());
        assert_eq!(answers.next(), Some(Err(DnsError::BadPointer)));
    }

    #[test]
    fn refuses_long_labels_and_reserved_label_types() {
        let mut wire = [b'a'; 66];
        wire[0] = 64;
        wire[65] = 0;
        assert_eq!(question_of(&wire).err(), Some(DnsError::LabelTooLong));
        wire[0] = 63;
        wire[64] = 0;
        assert_eq!(question_of(&wire[..65]).unwrap().name.len(), 63);
        // 0x40 (extended label type) and 0x80 (reserved) prefixes.
        assert_eq!(question_of(&[0x41, 0x00, 0]).err(), Some(DnsError::LabelTooLong));
        assert_eq!(question_of(&[0x80, 0x00, 0]).err(), Some(DnsError::LabelTooLong));
    }

    /// A name on the wire of `labels` labels of these lengths, all 'a' but the first
    /// byte of each, 'b'.
    fn long_name(lengths: &[usize]) -> ([u8; 512], usize) {
        let mut b = [b'a'; 512];
        let mut n = 0;
        for &len in lengths {
            b[n] = u8::try_from(len).unwrap();
            b[n + 1] = b'b';
            n += 1 + len;
        }
        b[n] = 0;
        (b, n + 1)
    }

    #[test]
    fn names_are_at_most_253_characters() {
        // 63 + 63 + 63 + 61 and three dots: 253.
        let (wire, n) = long_name(&[63, 63, 63, 61]);
        let q = question_of(&wire[..n]).unwrap();
        assert_eq!(q.name.len(), MAX_NAME_TEXT);
        assert_eq!(Name::from_text(q.name.as_str()), Ok(q.name));
        for lengths in [&[63, 63, 63, 62][..], &[63, 63, 63, 63], &[63, 63, 63, 63, 63, 63]] {
            let (wire, n) = long_name(lengths);
            assert_eq!(question_of(&wire[..n]).err(), Some(DnsError::NameTooLong), "{lengths:?}");
        }
        // The same through a pointer: a label of 63 before a name of 189 characters is
        // 253; before one of 190, 254.
        let answer = |first: &[usize]| {
            let (first, n1) = long_name(first);
            let rr = [0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1];
            let (b, n) = cat(&[&header(1), &first[..n1], &[0, 1, 0, 1], &[63], &[b'c'; 63], &[0xc0, 0x0c], &rr]);
            let m = Message::new_checked(&b[..n]).unwrap();
            m.answers(&m.question().unwrap()).next().unwrap().map(|r| r.name.len())
        };
        assert_eq!(answer(&[63, 63, 61]), Ok(253));
        assert_eq!(answer(&[63, 63, 62]), Err(DnsError::NameTooLong));
    }

    #[test]
    fn refuses_bytes_other_than_letters_digits_hyphen_underscore() {
        for bad in [b'.', 0x00, 0xff, b'*', b' ', b'/', 0xc3] {
            let q = question_of(&[3, b'a', bad, b'b', 3, b'c', b'o', b'm', 0]);
            assert_eq!(q.err(), Some(DnsError::BadLabelByte), "{bad:#x}");
        }
        let q = question_of(&[6, b'_', b'd', b'k', b'-', b'9', b'z', 0]).unwrap();
        assert_eq!(q.name.as_str(), "_dk-9z");
    }

    #[test]
    fn refuses_truncated_messages_at_every_length() {
        assert_eq!(Message::new_checked(&GITHUB_RESPONSE[..11]).err(), Some(DnsError::Truncated));
        let read = |n: usize| -> Result<usize, DnsError> {
            let m = Message::new_checked(&GITHUB_RESPONSE[..n])?;
            let q = m.question()?;
            m.answers(&q).try_fold(0, |count, r| r.map(|_| count + 1))
        };
        // The question's name cut, its type, the record's fixed part, its data.
        for n in [20, 26, 35, 42] {
            assert_eq!(read(n), Err(DnsError::Truncated), "{n} bytes");
        }
        // Every cut before the end of the answer; the OPT record after it is not read.
        for n in 0..44 {
            assert_eq!(read(n), Err(DnsError::Truncated), "{n} bytes");
        }
        for n in 44..=GITHUB_RESPONSE.len() {
            assert_eq!(read(n), Ok(1));
        }
        for msg in [&CNAME_CHAIN[..], &AAAA, &GITHUB_QUERY] {
            for n in 0..msg.len() {
                if let Ok(m) = Message::new_checked(&msg[..n]) {
                    if let Ok(q) = m.question() {
                        assert!(m.answers(&q).count() <= usize::from(m.answer_count()));
                    }
                }
            }
        }
    }

    #[test]
    fn address_records_must_have_their_length() {
        let a5 = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 5, 10, 0, 0, 1, 0];
        assert_eq!(first_answer(1, &a5), Some(Err(DnsError::BadRdLength)));
        let a3 = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 10, 0, 0];
        assert_eq!(first_answer(1, &a3), Some(Err(DnsError::BadRdLength)));
        let aaaa4 = [0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1];
        assert_eq!(first_answer(1, &aaaa4), Some(Err(DnsError::BadRdLength)));
        // The rdlength beyond the message.
        let a_cut = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0];
        assert_eq!(first_answer(1, &a_cut), Some(Err(DnsError::Truncated)));
    }

    #[test]
    fn refuses_anything_but_one_question() {
        for qdcount in [0u16, 2, 0xffff] {
            let mut b = GITHUB_RESPONSE;
            b[4..6].copy_from_slice(&qdcount.to_be_bytes());
            assert_eq!(Message::new_checked(&b[..]).unwrap().question().err(), Some(DnsError::NotOneQuestion));
        }
    }

    #[test]
    fn reads_at_most_64_answers_and_counts_those_beyond() {
        let mut buf = [0u8; 2048];
        let mut b = Builder::response(&mut buf, 7, &name("many.example"), TYPE_A, 0).unwrap();
        for i in 0..70u8 {
            b.answer(&name("many.example"), 60, &RecordData::A(Ipv4Addr::new(10, 0, 0, i))).unwrap();
        }
        let n = b.finish();
        buf[field::ANCOUNT].copy_from_slice(&1000u16.to_be_bytes());
        let m = Message::new_checked(&buf[..n]).unwrap();
        let mut answers = m.answers(&m.question().unwrap());
        assert_eq!(answers.skipped(), 6);
        let mut read = 0;
        for (i, r) in answers.by_ref().enumerate() {
            assert_eq!(r.unwrap().data, RecordData::A(Ipv4Addr::new(10, 0, 0, u8::try_from(i).unwrap())));
            read += 1;
        }
        assert_eq!((read, answers.skipped()), (MAX_RECORDS, 6));
        // Exactly 70 declared: the same.
        buf[field::ANCOUNT].copy_from_slice(&70u16.to_be_bytes());
        let m = Message::new_checked(&buf[..n]).unwrap();
        let answers = m.answers(&m.question().unwrap());
        assert_eq!((answers.skipped(), answers.count()), (6, MAX_RECORDS));
    }

    #[test]
    fn stops_after_the_answers_present_when_more_are_declared() {
        let mut b = GITHUB_RESPONSE;
        b[field::ANCOUNT].copy_from_slice(&0xffffu16.to_be_bytes());
        let m = Message::new_checked(&b[..44]).unwrap();
        let q = m.question().unwrap();
        let mut answers = m.answers(&q);
        assert!(answers.next().unwrap().is_ok());
        assert_eq!(answers.next(), Some(Err(DnsError::Truncated)));
        assert_eq!((answers.next(), answers.next(), answers.size_hint()), (None, None, (0, Some(0))));
        assert_eq!(answers.skipped(), 0);
        // With the OPT record after it, read as a second answer (with the root as owner).
        let m = Message::new_checked(&b[..]).unwrap();
        let answers = m.answers(&q);
        assert_eq!(answers.clone().filter(Result::is_ok).count(), 2);
        assert_eq!(answers.count(), 3);
    }

    #[test]
    fn names_from_text() {
        assert_eq!(name("GitHub.com").as_str(), "github.com");
        assert_eq!(name("github.com."), name("github.com"));
        assert_eq!((name(""), name(".")), (Name::ROOT, Name::ROOT));
        assert!(Name::ROOT.is_empty() && Name::ROOT.as_str().is_empty());
        assert_eq!(name("_dmarc.xn--bcher-kva.example").len(), 28);
        assert_eq!(Name::from_text("*.pypi.org"), Err(DnsError::BadLabelByte));
        for bad in ["exa mple.com", "bücher.example", "a/b", "a\0b", "a:b"] {
            assert_eq!(Name::from_text(bad), Err(DnsError::BadLabelByte), "{bad:?}");
        }
        for empty in ["..", ".a", "a..b", "a.b..", "..a"] {
            assert_eq!(Name::from_text(empty), Err(DnsError::EmptyLabel), "{empty:?}");
        }
        let long = [b'x'; 300];
        let text = |n: usize| core::str::from_utf8(&long[..n]).unwrap();
        assert_eq!(Name::from_text(text(63)).unwrap().len(), 63);
        assert_eq!(Name::from_text(text(64)), Err(DnsError::LabelTooLong));
        // 63-character labels: 253 characters fit, 254 and 255 do not.
        let mut dotted = [b'y'; 300];
        for i in [63, 127, 191, 255] {
            dotted[i] = b'.';
        }
        let dotted = |n: usize| core::str::from_utf8(&dotted[..n]).unwrap();
        assert_eq!(Name::from_text(dotted(253)).unwrap().len(), 253);
        assert_eq!(Name::from_text(dotted(254)), Err(DnsError::NameTooLong));
        assert_eq!(Name::from_text(dotted(255)), Err(DnsError::NameTooLong));
    }

    #[test]
    fn names_show_as_their_text() {
        let n = name("WWW.Example.com");
        shows(format_args!("{n}"), "www.example.com");
        shows(format_args!("{n:?}"), "\"www.example.com\"");
        shows(format_args!("{}|{:?}", Name::ROOT, Name::ROOT), "|\"\"");
        shows(
            format_args!("{}", DnsError::BadPointer),
            "DNS compression pointer not strictly backwards, or more than 16 in one name",
        );
    }

    #[test]
    fn builds_the_query_dig_would_without_edns() {
        let mut buf = [0u8; 512];
        let n = Builder::query(&mut buf, 0x1a2b, &name("GitHub.com"), TYPE_A).unwrap().finish();
        let mut expected = GITHUB_QUERY;
        expected[3] = 0x00; // RD only
        expected[11] = 0x00; // no additional record
        assert_eq!(&buf[..n], &expected[..28]);
    }

    #[test]
    fn built_messages_read_back() {
        let mut buf = [0u8; 512];
        let www = name("www.example.com");
        let net = name("example.net");
        let mut b = Builder::response(&mut buf, 0xbeef, &www, TYPE_A, 0).unwrap();
        assert_eq!(b.len(), 33);
        let data = [
            (www, 300, RecordData::Cname(net)),
            (net, 3600, RecordData::A(Ipv4Addr::new(192, 0, 2, 7))),
            (net, 60, RecordData::Aaaa(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))),
            (Name::ROOT, 0, RecordData::Cname(Name::ROOT)),
            (net, 5, RecordData::Other),
        ];
        for (owner, ttl, d) in &data {
            b.answer(owner, *ttl, d).unwrap();
        }
        let n = b.finish();
        let m = Message::new_checked(&buf[..n]).unwrap();
        assert_eq!((m.id(), m.is_response(), m.rcode(), m.answer_count()), (0xbeef, true, 0, 5));
        assert_eq!(buf[2..4], [0x81, 0x80]);
        let q = m.question().unwrap();
        assert_eq!((q.name, q.qtype, q.qclass, q.end), (www, TYPE_A, CLASS_IN, 33));
        let mut answers = m.answers(&q);
        for (owner, ttl, d) in &data {
            let r = answers.next().unwrap().unwrap();
            let rtype = match d {
                RecordData::A(_) => TYPE_A,
                RecordData::Aaaa(_) => TYPE_AAAA,
                RecordData::Cname(_) => TYPE_CNAME,
                RecordData::Other => TYPE_TXT,
            };
            assert_eq!(r, Record { name: *owner, rtype, class: CLASS_IN, ttl: *ttl, data: *d });
        }
        assert_eq!(answers.next(), None);
        // A query, and an NXDOMAIN (rcode kept to its 4 bits).
        let n = Builder::query(&mut buf, 1, &www, TYPE_AAAA).unwrap().finish();
        let m = Message::new_checked(&buf[..n]).unwrap();
        assert_eq!((m.is_response(), m.answer_count(), m.question().unwrap().qtype), (false, 0, TYPE_AAAA));
        let n = Builder::response(&mut buf, 1, &www, TYPE_A, 0xf3).unwrap().finish();
        assert_eq!(Message::new_checked(&buf[..n]).unwrap().rcode(), 3);
    }

    #[test]
    fn builder_refuses_a_buffer_too_small_and_keeps_what_it_had() {
        let www = name("www.example.com");
        for len in 0..33 {
            let mut buf = [0u8; 33];
            assert_eq!(Builder::query(&mut buf[..len], 1, &www, TYPE_A).err(), Some(DnsError::Truncated), "{len}");
        }
        // Room for the question and one A record for "a" (3 + 10 + 4 bytes), not one for
        // www.example.com (17 + 10 + 4).
        let mut buf = [0u8; 33 + 17 + 10];
        let mut b = Builder::response(&mut buf, 1, &www, TYPE_A, 0).unwrap();
        assert_eq!(b.answer(&www, 60, &RecordData::A(Ipv4Addr::LOCALHOST)), Err(DnsError::Truncated));
        b.answer(&name("a"), 60, &RecordData::A(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(b.answer(&name("a"), 60, &RecordData::A(Ipv4Addr::LOCALHOST)), Err(DnsError::Truncated));
        let n = b.finish();
        assert_eq!(n, 33 + 17);
        let m = Message::new_checked(&buf[..n]).unwrap();
        assert_eq!(m.answer_count(), 1);
        assert_eq!(m.answers(&m.question().unwrap()).filter(Result::is_ok).count(), 1);
    }
}
