//! DNS over TCP read from arbitrary segments (`natgw_core::dns::stream`): each op is a
//! direction, flags, a sequence number anywhere in the 32-bit space around the stream's
//! and some payload.
//! Invariants: no panic; the streams stay within their bound; and on each direction, the
//! messages read are exactly the length-prefixed messages (those within the bound) of the
//! bytes a receiver would have taken: from the SYN (a new initial sequence number starts
//! over; the SYN-ACK starts the answers, a second different one stops them), each byte
//! once at its offset in the stream, nothing after a gap or a FIN, the connection gone on
//! a reset at exactly the next byte and on nothing else.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use natgw_core::dns::stream::{max_message, Segment, StreamKey, TcpStreams, Way};

/// One direction of the connection as a receiver keeps it: where its stream starts, and
/// the bytes taken so far, by their offset from there.
#[derive(Default, Clone)]
struct Receiver {
    start: Option<u32>,
    stopped: bool,
    taken: Vec<u8>,
    max: usize,
}

impl Receiver {
    fn new(max: usize) -> Self {
        Receiver { max, ..Receiver::default() }
    }

    /// The offset of `seq` from the stream's start, in the window around the next byte
    /// wanted (sequence numbers compare within half the space).
    fn offset(&self, seq: u32) -> Option<i64> {
        let next = self.next_seq()?;
        Some(self.taken.len() as i64 + i64::from(seq.wrapping_sub(next) as i32))
    }

    /// The sequence number of the next byte the receiver wants.
    fn next_seq(&self) -> Option<u32> {
        self.start.map(|s| s.wrapping_add(self.taken.len() as u32))
    }

    fn data(&mut self, seq: u32, payload: &[u8], fin: bool) {
        if self.stopped {
            return;
        }
        let Some(at) = self.offset(seq) else { return };
        if !payload.is_empty() {
            let have = self.taken.len() as i64;
            if at > have {
                self.stopped = true;
                return;
            }
            let end = at + payload.len() as i64;
            if end > have {
                let from = (have - at) as usize;
                self.taken.extend_from_slice(&payload[from..]);
            }
        }
        if fin {
            self.stopped = true;
        }
    }

    /// The whole messages of the bytes taken, within the bound.
    fn messages(&self) -> Vec<Vec<u8>> {
        let (mut out, mut at) = (Vec::new(), 0);
        while at + 2 <= self.taken.len() {
            let len = usize::from(u16::from_be_bytes([self.taken[at], self.taken[at + 1]]));
            let Some(body) = self.taken.get(at + 2..at + 2 + len) else { break };
            if len > 0 && len <= self.max {
                out.push(body.to_vec());
            }
            at += 2 + len;
        }
        out
    }
}

/// The connection: both directions, while it exists.
struct Connection {
    ways: [Receiver; 2],
}

impl Connection {
    fn new() -> Self {
        Connection { ways: [Receiver::new(max_message(Way::Query)), Receiver::new(max_message(Way::Answer))] }
    }

    fn finished(&self) -> bool {
        self.ways.iter().all(|w| w.stopped)
    }
}

/// Checks what the reader read on a connection that ends (or at the end of the input).
fn check(conn: &Option<Connection>, read: &[Vec<Vec<u8>>; 2]) {
    let want = |i: usize| conn.as_ref().map_or_else(Vec::new, |c| c.ways[i].messages());
    assert_eq!(read[0], want(0), "queries");
    assert_eq!(read[1], want(1), "answers");
}

fuzz_target!(|data: &[u8]| {
    let key = StreamKey { host: Ipv4Addr::new(10, 0, 0, 1), host_port: 4000, resolver: Ipv4Addr::new(203, 0, 113, 53) };
    let mut streams = TcpStreams::default();
    let mut conn: Option<Connection> = None;
    let mut read: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut rest = data;
    let base = 0xffff_ff00u32; // the sequence space wraps inside most inputs
    while rest.len() >= 6 {
        let (op, delta, len) = (rest[0], u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]), usize::from(rest[5]));
        rest = &rest[6..];
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[payload.len()..];
        let way = if op & 1 == 0 { Way::Query } else { Way::Answer };
        // Small deltas most of the time, so that segments meet the stream.
        let delta = if op & 0x80 == 0 { delta % 64 } else { delta };
        let seg = Segment { seq: base.wrapping_add(delta), syn: op & 2 != 0, fin: op & 4 != 0, rst: op & 8 != 0, payload };
        let w = way as usize;

        // What a receiver does with it.
        let mut ended = false;
        let mut fresh = false;
        if seg.syn && way == Way::Query {
            let same = conn.as_ref().is_some_and(|c| c.ways[0].start == Some(seg.seq.wrapping_add(1)));
            if !payload.is_empty() || !same {
                ended = conn.is_some();
                fresh = payload.is_empty();
            }
        } else if let Some(c) = conn.as_mut() {
            let r = &mut c.ways[w];
            if seg.rst {
                ended = !r.stopped && r.next_seq() == Some(seg.seq);
            } else if seg.syn {
                let start = seg.seq.wrapping_add(1);
                match r.start {
                    None if payload.is_empty() => r.start = Some(start),
                    Some(s) if s == start && r.taken.is_empty() && !r.stopped => {}
                    _ => {
                        if r.start.is_none() {
                            r.start = Some(start);
                        }
                        r.stopped = true;
                    }
                }
            } else {
                r.data(seg.seq, payload, seg.fin);
            }
        }
        // What the reader does with it.
        let r = &mut read[w];
        streams.read(key, way, seg, 0, |m| r.push(m.to_vec()));

        let finished = conn.as_ref().is_some_and(Connection::finished);
        if ended || finished {
            check(&conn, &read);
            conn = None;
            read = [Vec::new(), Vec::new()];
        }
        if fresh {
            let mut c = Connection::new();
            c.ways[0].start = Some(seg.seq.wrapping_add(1));
            conn = Some(c);
        }
        assert_eq!(streams.len(), usize::from(conn.is_some()), "the stream exists exactly while the connection does");
    }
    check(&conn, &read);
});
