//! DNS over TCP read from arbitrary segments (`natgw_core::dns::stream`): each op is a
//! direction, flags, a sequence number near the stream's and some payload.
//! Invariants: no panic; the streams stay within their bounds; and on each direction, the
//! messages read are exactly the length-prefixed messages (the ones within the bound) of
//! the bytes a plain model accepted: each byte once, in sequence order, from the SYN,
//! nothing after a gap or a FIN.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use natgw_core::dns::stream::{max_message, Segment, StreamKey, TcpStreams, Way, MAX_STREAMS};

/// One direction as the model sees it.
#[derive(Default)]
struct Model {
    next: Option<u32>,
    stopped: bool,
    accepted: Vec<u8>,
    /// Messages read before a SYN started the direction over.
    earlier: Vec<Vec<u8>>,
    max: usize,
}

impl Model {
    fn segment(&mut self, seg: &Segment<'_>) {
        if seg.syn {
            let before = self.messages();
            self.earlier = before;
            self.next = Some(seg.seq.wrapping_add(1));
            self.stopped = !seg.payload.is_empty();
            self.accepted.clear();
            return;
        }
        let Some(next) = self.next.filter(|_| !self.stopped) else { return };
        if !seg.payload.is_empty() {
            let ahead = seg.seq.wrapping_sub(next) as i32;
            if ahead > 0 {
                self.stopped = true;
                return;
            }
            let old = ahead.unsigned_abs() as usize;
            if old < seg.payload.len() {
                self.accepted.extend_from_slice(&seg.payload[old..]);
                self.next = Some(next.wrapping_add((seg.payload.len() - old) as u32));
            }
        }
        if seg.fin {
            self.stopped = true;
        }
    }

    /// The whole messages of the accepted bytes within the bound, after the earlier ones.
    fn messages(&self) -> Vec<Vec<u8>> {
        let (mut out, mut at) = (self.earlier.clone(), 0);
        while at + 2 <= self.accepted.len() {
            let len = usize::from(u16::from_be_bytes([self.accepted[at], self.accepted[at + 1]]));
            let Some(body) = self.accepted.get(at + 2..at + 2 + len) else { break };
            if len > 0 && len <= self.max {
                out.push(body.to_vec());
            }
            at += 2 + len;
        }
        out
    }
}

fn fresh_models() -> [Model; 2] {
    [Way::Query, Way::Answer].map(|w| Model { max: max_message(w), ..Model::default() })
}

fuzz_target!(|data: &[u8]| {
    let key = StreamKey { host: Ipv4Addr::new(10, 0, 0, 1), host_port: 4000, resolver: Ipv4Addr::new(203, 0, 113, 53) };
    let mut streams = TcpStreams::default();
    let mut models = fresh_models();
    let mut read: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut rest = data;
    let base = 0xffff_ff00u32; // the sequence space wraps inside most inputs
    while rest.len() >= 4 {
        let (op, delta, len) = (rest[0], i16::from_be_bytes([rest[1], rest[2]]), usize::from(rest[3]));
        rest = &rest[4..];
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[payload.len()..];
        let way = if op & 1 == 0 { Way::Query } else { Way::Answer };
        let seg = Segment {
            seq: base.wrapping_add(delta as u32),
            syn: op & 2 != 0,
            fin: op & 4 != 0,
            rst: op & 8 != 0,
            payload,
        };
        if seg.rst {
            // A reset forgets the stream; the model starts over too.
            streams.read(key, way, seg, 0, |_| {});
            models = fresh_models();
            read = [Vec::new(), Vec::new()];
            continue;
        }
        // The stream exists only from the host's SYN.
        let exists = !streams.is_empty() || (seg.syn && way == Way::Query && payload.is_empty());
        let w = way as usize;
        let r = &mut read[w];
        streams.read(key, way, seg, 0, |m| r.push(m.to_vec()));
        if seg.syn && way == Way::Query && !payload.is_empty() {
            models = fresh_models();
            read = [Vec::new(), Vec::new()];
            continue;
        }
        if exists {
            models[w].segment(&seg);
        }
        if streams.is_empty() {
            // Both directions finished (or never started): the stream is gone, and so
            // is what the model knew.
            for (i, m) in models.iter().enumerate() {
                assert_eq!(read[i], m.messages(), "way {i}");
            }
            models = fresh_models();
            read = [Vec::new(), Vec::new()];
        }
        assert!(streams.len() <= 1 && streams.len() <= MAX_STREAMS);
    }
    for (i, m) in models.iter().enumerate() {
        assert_eq!(read[i], m.messages(), "way {i}");
    }
});
