//! DNS over TCP, read at the stream's own message boundaries (RFC 7766: each message is a
//! 2-byte length and that many bytes). A host decides where its segments start, so a
//! segment's first bytes say nothing; only following the byte stream from its SYN finds
//! where each message really begins. natgw follows both directions of each watched TCP
//! flow from the segments it forwards, in sequence order:
//!
//! - a segment at the next expected sequence number is read; one wholly before it (a
//!   retransmission) is ignored, and one that overlaps it is read from the expected
//!   number on (the receiver keeps the bytes it had, and so does natgw);
//! - a segment after it (a gap: one lost or reordered before natgw) ends the reading of
//!   that direction for good: natgw no longer knows where messages start, so nothing more
//!   on it binds (`DnsTcpUnread`). The host's next connection is read afresh;
//! - a stream whose SYN natgw did not see (opened before `[dns]` was on, or on the other
//!   node before a failover) is never read;
//! - as the receiver does (RFC 5961), natgw ends a stream only on a reset at exactly the
//!   next sequence number; a host's SYN with another initial sequence number starts the
//!   stream afresh both ways (the answers unread until the new SYN-ACK), and a second
//!   SYN-ACK with another one stops the reading of the answers.
//!
//! Only segments window tracking let through reach here, and a segment whose checksum is
//! wrong (which the receiver will drop) is not read. The answers are what binding trusts,
//! and they come from the resolver; the queries come from the host, which can make natgw
//! read a query the resolver never gets (a checksum only its own device finishes, a TTL
//! that runs out after natgw): that files a query, which binds nothing unless the
//! resolver's own answer repeats its id and question.
//!
//! What a stream may hold is bounded: `MAX_STREAMS` per worker (when full, the oldest
//! stream the resolver never answered gives way), `MAX_STREAMS_PER_HOST`, a query of at
//! most `MAX_QUERY_BYTES` and an answer of at most `MAX_ANSWER_BYTES` buffered (a longer
//! message is skipped by its length, unread and counted); a stream the resolver has not
//! answered is forgotten after `UNANSWERED_MS`, any other after `IDLE_MS` without data.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// TCP streams to resolvers one worker follows.
pub const MAX_STREAMS: usize = 256;
/// Of those, one inside host's.
pub const MAX_STREAMS_PER_HOST: usize = 8;
/// The longest query read (a query is one question: a few hundred bytes at most).
pub const MAX_QUERY_BYTES: usize = 1024;
/// The longest answer read (answers go over TCP when they are long; the reader looks at
/// the first 64 records of it anyway).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// A stream with no data for this long is forgotten.
pub const IDLE_MS: u64 = 30_000;
/// A stream whose SYN-ACK has not come this long after its SYN is forgotten.
pub const UNANSWERED_MS: u64 = 5_000;

/// Which way a segment goes: the host's queries, or the resolver's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Query = 0,
    Answer = 1,
}

/// One TCP connection of an inside host to a resolver's port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub host: Ipv4Addr,
    pub host_port: u16,
    pub resolver: Ipv4Addr,
}

/// A segment as the stream reader needs it.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

/// Where the reader is in the byte stream of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// The start not seen yet (before the SYN, or this side's SYN-ACK).
    NotStarted,
    /// In sync: the sequence number of the next byte, and the message being read.
    At { next_seq: u32, message: Message },
    /// Out of sync, or finished: nothing more is read.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    /// The length prefix: its first byte when one has arrived.
    Length(Option<u8>),
    /// The message's bytes so far, and how many it has.
    Body { len: usize, bytes: Vec<u8> },
    /// A message too long to buffer: bytes still to skip.
    Skip(usize),
}

#[derive(Debug, Clone)]
struct Stream {
    /// The sequence number after the host's SYN: a SYN with another starts a new stream.
    query_start: u32,
    ways: [Reading; 2],
    /// The last data (or the SYN), for expiry.
    last_ms: u64,
}

impl Stream {
    /// Whether the resolver has answered the SYN.
    fn answered(&self) -> bool {
        self.ways[Way::Answer as usize] != Reading::NotStarted
    }
}

/// What reading one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Data natgw could not read: a stream whose start it did not see, a gap, or a message
    /// over its bound (each counted once, at the moment reading stops or skips).
    pub unread: bool,
}

/// The TCP streams one worker follows.
#[derive(Debug, Default)]
pub struct TcpStreams {
    streams: HashMap<StreamKey, Stream>,
}

impl TcpStreams {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Reads one segment going `way` on the stream `key`, calling `message` with each DNS
    /// message it completes, in order.
    pub fn read(
        &mut self,
        key: StreamKey,
        way: Way,
        seg: Segment<'_>,
        now_ms: u64,
        mut message: impl FnMut(&[u8]),
    ) -> Read {
        if seg.syn && way == Way::Query {
            return self.open(key, seg, now_ms);
        }
        let Some(stream) = self.streams.get_mut(&key) else {
            // Not followed from its start: its data is unread.
            return Read { unread: !seg.payload.is_empty() };
        };
        let reading = &mut stream.ways[way as usize];
        if seg.rst {
            // Only a reset at the next sequence number ends the connection (RFC 5961);
            // the receiver ignores any other, and so does natgw.
            if matches!(reading, Reading::At { next_seq, .. } if *next_seq == seg.seq) {
                self.streams.remove(&key);
            }
            return Read::default();
        }
        let read = if seg.syn {
            // The resolver's SYN-ACK.
            let start = seg.seq.wrapping_add(1);
            match reading {
                Reading::NotStarted if seg.payload.is_empty() => {
                    *reading = Reading::At { next_seq: start, message: Message::Length(None) };
                    Read::default()
                }
                // Its retransmission.
                Reading::At { next_seq, message: Message::Length(None) } if *next_seq == start => Read::default(),
                // Data on it, or another one: where the answers start is no longer known.
                _ => {
                    *reading = Reading::Stopped;
                    Read { unread: true }
                }
            }
        } else {
            if !seg.payload.is_empty() {
                stream.last_ms = now_ms;
            }
            let read = follow(reading, seg, max_message(way), &mut message);
            if seg.fin {
                if let Reading::At { .. } = reading {
                    *reading = Reading::Stopped;
                }
            }
            read
        };
        if stream.ways.iter().all(|w| *w == Reading::Stopped) {
            self.streams.remove(&key);
        }
        read
    }

    /// The host's SYN: a new stream, unless it repeats the SYN of the one followed.
    fn open(&mut self, key: StreamKey, seg: Segment<'_>, now_ms: u64) -> Read {
        let start = seg.seq.wrapping_add(1);
        if !seg.payload.is_empty() {
            // Data on a SYN (TCP Fast Open): not followed; the stream is not read.
            self.streams.remove(&key);
            return Read { unread: true };
        }
        if self.streams.get(&key).is_some_and(|s| s.query_start == start) {
            return Read::default();
        }
        // A new connection on this tuple (or the first): followed afresh, both ways.
        self.streams.remove(&key);
        let of_host = self.streams.keys().filter(|k| k.host == key.host).count();
        if of_host >= MAX_STREAMS_PER_HOST {
            return Read { unread: true };
        }
        if self.streams.len() >= MAX_STREAMS {
            // The oldest stream its resolver never answered gives way; answered ones never.
            let oldest = self.streams.iter().filter(|(_, s)| !s.answered()).min_by_key(|(_, s)| s.last_ms);
            let Some(oldest) = oldest.map(|(k, _)| *k) else { return Read { unread: true } };
            self.streams.remove(&oldest);
        }
        let ways = [Reading::At { next_seq: start, message: Message::Length(None) }, Reading::NotStarted];
        self.streams.insert(key, Stream { query_start: start, ways, last_ms: now_ms });
        Read::default()
    }

    /// Forgets streams idle for `IDLE_MS`, and those unanswered for `UNANSWERED_MS`.
    pub fn expire(&mut self, now_ms: u64) {
        self.streams.retain(|_, s| {
            let idle = now_ms.saturating_sub(s.last_ms);
            idle < if s.answered() { IDLE_MS } else { UNANSWERED_MS }
        });
    }
}

/// Reads a segment's payload into one direction's reading.
fn follow(reading: &mut Reading, seg: Segment<'_>, max: usize, message: &mut impl FnMut(&[u8])) -> Read {
    let Reading::At { next_seq, message: m } = reading else {
        return Read { unread: *reading == Reading::NotStarted && !seg.payload.is_empty() };
    };
    if seg.payload.is_empty() {
        return Read::default();
    }
    // Where the segment starts against the next expected byte (sequence space wraps).
    #[allow(clippy::cast_possible_wrap)] // sequence arithmetic: the difference, signed
    let ahead = seg.seq.wrapping_sub(*next_seq) as i32;
    if ahead > 0 {
        *reading = Reading::Stopped;
        return Read { unread: true };
    }
    let already = ahead.unsigned_abs() as usize;
    let Some(fresh) = seg.payload.get(already..).filter(|f| !f.is_empty()) else {
        return Read::default();
    };
    // A segment is at most 64 KiB (a GSO super-frame too): its length fits a u32.
    *next_seq = next_seq.wrapping_add(u32::try_from(fresh.len()).unwrap_or(u32::MAX));
    let mut unread = false;
    let mut rest = fresh;
    while !rest.is_empty() {
        match m {
            Message::Length(None) => {
                *m = Message::Length(Some(rest[0]));
                rest = &rest[1..];
            }
            Message::Length(Some(hi)) => {
                let len = usize::from(u16::from_be_bytes([*hi, rest[0]]));
                rest = &rest[1..];
                *m = if len > max {
                    unread = true;
                    Message::Skip(len)
                } else {
                    Message::Body { len, bytes: Vec::with_capacity(len.min(512)) }
                };
                if len == 0 {
                    *m = Message::Length(None);
                }
            }
            Message::Body { len, bytes } => {
                let take = (*len - bytes.len()).min(rest.len());
                bytes.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if bytes.len() == *len {
                    message(bytes);
                    *m = Message::Length(None);
                }
            }
            Message::Skip(left) => {
                let take = (*left).min(rest.len());
                *left -= take;
                rest = &rest[take..];
                if *left == 0 {
                    *m = Message::Length(None);
                }
            }
        }
    }
    Read { unread }
}

/// The longest message a direction buffers.
pub fn max_message(way: Way) -> usize {
    match way {
        Way::Query => MAX_QUERY_BYTES,
        Way::Answer => MAX_ANSWER_BYTES,
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::unwrap_used)] // literal test sizes
mod tests {
    use super::*;

    const KEY: StreamKey =
        StreamKey { host: Ipv4Addr::new(10, 0, 0, 5), host_port: 40000, resolver: Ipv4Addr::new(203, 0, 113, 53) };

    fn seg(seq: u32, payload: &[u8]) -> Segment<'_> {
        Segment { seq, syn: false, fin: false, rst: false, payload }
    }

    fn syn(seq: u32) -> Segment<'static> {
        Segment { seq, syn: true, fin: false, rst: false, payload: b"" }
    }

    /// Length-prefixed messages, as they go on the wire.
    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
            v.extend_from_slice(m);
        }
        v
    }

    /// A stream opened both ways (host ISN `q`, resolver ISN `a`).
    fn opened(q: u32, a: u32) -> TcpStreams {
        let mut s = TcpStreams::default();
        s.read(KEY, Way::Query, syn(q), 0, |_| panic!("no message"));
        s.read(KEY, Way::Answer, syn(a), 0, |_| panic!("no message"));
        s
    }

    /// Feeds segments one way, returning the messages read and whether any was unread.
    fn feed(s: &mut TcpStreams, way: Way, segs: &[Segment<'_>]) -> (Vec<Vec<u8>>, bool) {
        let mut got = Vec::new();
        let mut unread = false;
        for g in segs {
            unread |= s.read(KEY, way, *g, 1, |m| got.push(m.to_vec())).unread;
        }
        (got, unread)
    }

    #[test]
    fn messages_are_read_at_the_streams_own_boundaries_however_it_is_cut() {
        let msgs: [&[u8]; 3] = [b"first message", b"2", b"the third, a little longer"];
        let wire = framed(&msgs);
        // Every way of cutting the stream into two or three segments reads the same three.
        for cut1 in 0..=wire.len() {
            for cut2 in cut1..=wire.len() {
                let mut s = opened(100, 7000);
                let start = 7001u32;
                let segs = [
                    seg(start, &wire[..cut1]),
                    seg(start + cut1 as u32, &wire[cut1..cut2]),
                    seg(start + cut2 as u32, &wire[cut2..]),
                ];
                let (got, unread) = feed(&mut s, Way::Answer, &segs);
                assert_eq!(got, msgs.map(<[u8]>::to_vec), "cut at {cut1}, {cut2}");
                assert!(!unread);
            }
        }
    }

    #[test]
    fn retransmissions_and_overlaps_are_read_once_from_the_expected_byte() {
        let wire = framed(&[b"hello", b"world"]);
        let mut s = opened(100, 0xffff_fffa); // the sequence space wraps inside the stream
        let start = 0xffff_fffbu32;
        let (got, _) = feed(
            &mut s,
            Way::Answer,
            &[
                seg(start, &wire[..4]),
                seg(start, &wire[..4]),                  // the same again
                seg(start.wrapping_add(2), &wire[2..9]), // overlaps: read from byte 4
                seg(start, &wire[..2]),                  // wholly old
                seg(start.wrapping_add(9), &wire[9..]),
            ],
        );
        assert_eq!(got, vec![b"hello".to_vec(), b"world".to_vec()]);
    }

    #[test]
    fn a_gap_stops_the_reading_of_that_direction_for_good() {
        let wire = framed(&[b"one", b"two"]);
        let mut s = opened(100, 7000);
        let (got, unread) = feed(&mut s, Way::Answer, &[seg(7001 + 5, &wire[5..])]);
        assert!(got.is_empty() && unread, "ahead of the expected byte: a gap");
        let (got, _) = feed(&mut s, Way::Answer, &[seg(7001, &wire[..5]), seg(7001 + 5, &wire[5..])]);
        assert!(got.is_empty(), "nothing more is read, even what fills the gap");
        // The other direction is read on.
        let (got, _) = feed(&mut s, Way::Query, &[seg(101, &framed(&[b"q"]))]);
        assert_eq!(got, vec![b"q".to_vec()]);
    }

    #[test]
    fn a_stream_whose_start_natgw_did_not_see_is_never_read() {
        let mut s = TcpStreams::default();
        let (got, unread) = feed(&mut s, Way::Query, &[seg(101, &framed(&[b"q"]))]);
        assert!(got.is_empty() && unread);
        // Nor the answers of a stream whose SYN-ACK it did not see.
        let mut s = TcpStreams::default();
        s.read(KEY, Way::Query, syn(100), 0, |_| {});
        let (got, unread) = feed(&mut s, Way::Answer, &[seg(7001, &framed(&[b"a"]))]);
        assert!(got.is_empty() && unread);
        // Data on a SYN (Fast Open) is not followed either.
        let mut s = TcpStreams::default();
        let r = s.read(KEY, Way::Query, Segment { payload: b"\x00\x01q", ..syn(100) }, 0, |_| panic!("read"));
        assert!(r.unread && s.is_empty());
    }

    #[test]
    fn a_message_over_its_bound_is_skipped_by_its_length_and_the_next_read() {
        let big = vec![0u8; MAX_QUERY_BYTES + 1];
        let wire = framed(&[&big, b"small"]);
        let mut s = opened(100, 7000);
        let (got, unread) = feed(&mut s, Way::Query, &[seg(101, &wire[..600]), seg(101 + 600, &wire[600..])]);
        assert_eq!(got, vec![b"small".to_vec()]);
        assert!(unread);
        // An answer may be longer.
        let answer = vec![1u8; MAX_QUERY_BYTES + 1];
        let (got, _) = feed(&mut s, Way::Answer, &[seg(7001, &framed(&[&answer]))]);
        assert_eq!(got, vec![answer]);
    }

    #[test]
    fn streams_are_bounded_per_worker_and_per_host_and_forgotten() {
        let mut s = TcpStreams::default();
        let key = |host: u8, port: u16| StreamKey { host: Ipv4Addr::new(10, 0, 0, host), host_port: port, ..KEY };
        let open = |s: &mut TcpStreams, k: StreamKey, now: u64, answered: bool| {
            let r = s.read(k, Way::Query, syn(1), now, |_| {});
            if answered {
                s.read(k, Way::Answer, syn(9), now, |_| {});
            }
            r.unread
        };
        // One host: at most its share, however many ports it opens from.
        for port in 0..MAX_STREAMS_PER_HOST as u16 + 5 {
            open(&mut s, key(1, port), 10, false);
        }
        assert_eq!(s.len(), MAX_STREAMS_PER_HOST, "one host's");
        // Other hosts fill the rest with answered streams.
        let mut host = 2u8;
        while s.len() < MAX_STREAMS {
            for port in 0..4 {
                if s.len() < MAX_STREAMS {
                    assert!(!open(&mut s, key(host, port), 20, true));
                }
            }
            host += 1;
        }
        // Full: a new stream takes the place of an unanswered one (host 1's), never of an
        // answered one; with none unanswered left, it is refused.
        for port in 0..MAX_STREAMS_PER_HOST as u16 {
            assert!(!open(&mut s, key(250, port), 30, true), "room made");
        }
        assert_eq!(s.len(), MAX_STREAMS);
        assert!(s.streams.keys().all(|k| k.host != Ipv4Addr::new(10, 0, 0, 1)), "host 1's unanswered gave way");
        assert!(open(&mut s, key(251, 0), 30, true), "full of answered streams: refused");
        // A repeated SYN does not keep a stream alive; unanswered streams go first.
        open(&mut s, key(252, 0), 40, false);
        s.expire(20 + IDLE_MS - 1);
        assert_eq!(s.len(), MAX_STREAMS, "nothing idle for long enough yet");
        let mut u = TcpStreams::default();
        open(&mut u, key(3, 0), 0, false);
        open(&mut u, key(3, 0), UNANSWERED_MS - 1, false);
        u.expire(UNANSWERED_MS);
        assert!(u.is_empty(), "an unanswered stream is forgotten after UNANSWERED_MS, repeated SYN or not");
        s.expire(30 + IDLE_MS);
        assert!(s.is_empty(), "idle streams forgotten");
    }

    #[test]
    fn a_new_syn_starts_afresh_and_a_second_syn_ack_stops_the_answers() {
        let wire = framed(&[b"answer"]);
        let mut s = opened(100, 7000);
        // The same SYN again (a retransmission): nothing changes.
        s.read(KEY, Way::Query, syn(100), 1, |_| panic!("no message"));
        let (got, _) = feed(&mut s, Way::Answer, &[seg(7001, &wire)]);
        assert_eq!(got.len(), 1);
        // A SYN with another sequence number: a new connection. Its answers are unread
        // until its own SYN-ACK; the old stream's position counts for nothing.
        s.read(KEY, Way::Query, syn(5000), 1, |_| panic!("no message"));
        let (got, unread) = feed(&mut s, Way::Answer, &[seg(7001 + wire.len() as u32, &wire)]);
        assert!(got.is_empty() && unread);
        s.read(KEY, Way::Answer, syn(9000), 1, |_| panic!("no message"));
        s.read(KEY, Way::Answer, syn(9000), 1, |_| panic!("no message")); // retransmitted
        let (got, _) = feed(&mut s, Way::Answer, &[seg(9001, &wire)]);
        assert_eq!(got.len(), 1);
        // A SYN-ACK with yet another: where the answers start is no longer known.
        let r = s.read(KEY, Way::Answer, syn(12_000), 1, |_| panic!("no message"));
        assert!(r.unread);
        let (got, _) = feed(&mut s, Way::Answer, &[seg(12_001, &wire), seg(9001 + wire.len() as u32, &wire)]);
        assert!(got.is_empty());
    }

    #[test]
    fn a_reset_or_both_fins_end_a_stream() {
        let mut s = opened(100, 7000);
        s.read(KEY, Way::Query, Segment { fin: true, ..seg(101, b"") }, 1, |_| {});
        assert_eq!(s.len(), 1, "half closed: the answers still come");
        let (got, _) = feed(&mut s, Way::Answer, &[seg(7001, &framed(&[b"late answer"]))]);
        assert_eq!(got.len(), 1);
        s.read(KEY, Way::Answer, Segment { fin: true, ..seg(7014, b"") }, 1, |_| {});
        assert!(s.is_empty());
        // A reset anywhere but at the next sequence number is ignored (RFC 5961).
        let mut s = opened(100, 7000);
        for seq in [7002, 7000, 6000, 7001 + 30_000] {
            s.read(KEY, Way::Answer, Segment { rst: true, ..seg(seq, b"") }, 1, |_| {});
            assert_eq!(s.len(), 1, "reset at {seq}");
        }
        let (got, _) = feed(&mut s, Way::Answer, &[seg(7001, &framed(&[b"still read"]))]);
        assert_eq!(got.len(), 1);
        s.read(KEY, Way::Answer, Segment { rst: true, ..seg(7001 + 12, b"") }, 1, |_| {});
        assert!(s.is_empty());
    }
}
