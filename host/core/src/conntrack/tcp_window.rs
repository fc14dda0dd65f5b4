//! TCP window tracking: which segments of a connection natgw lets through and lets move
//! its state. Netfilter's `tcp_in_window` (net/netfilter/nf_conntrack_proto_tcp.c, after
//! Guido van Rooij's "Real Stateful TCP Packet Filtering in IP Filter") is the reference,
//! and RFC 5961 the spirit for resets.
//!
//! Per direction natgw keeps what that direction's sender has shown: the end of the
//! highest sequence it sent, the right edge of the window the other side granted it, the
//! largest window it advertised and the highest acknowledgment it sent. A segment is in
//! window when (netfilter's four bounds, with `sack` the highest acknowledged edge):
//!
//! - I.   `seq <= sender.max_end`: not past what the receiver allowed;
//! - II.  `end >= sender.end - receiver.max_win`: not older than a window of retransmission;
//! - III. `sack <= receiver.end`: it acknowledges nothing the receiver has not sent;
//! - IV.  `sack >= receiver.end - max(sender.max_win, 66000)`: nor something long gone.
//!
//! A reset moves the connection to CLOSE only when its sequence number is exactly the one
//! the receiver expects next (its highest acknowledgment); a reset elsewhere in the window
//! passes, so that the endpoint can answer it with a challenge ACK (RFC 5961 3.2), but the
//! connection stays; one outside the window is dropped. So a blind attacker must guess one
//! number in 2^32, not one in 2^32 / window.
//!
//! Picking up (the rule for a connection natgw holds no window state for, such as a flow
//! restored after a crash or replicated from a peer; a flow handed over by `natgw upgrade`
//! brings its windows exactly and is not picked up):
//!
//! - The first segment seen in a direction whose state is unknown sets it, and passes; a
//!   direction set so is *liberal* for the rest of the connection (netfilter's
//!   `IP_CT_TCP_FLAG_BE_LIBERAL` for a connection picked up in the middle), because its
//!   window scale is unknown and its first segment may have been forged.
//! - A reset or a FIN never sets a direction up. It passes and changes nothing, but for a
//!   reset at exactly the sequence the other side has acknowledged (its next expected
//!   byte), which closes the connection as on any tracked one.
//! - In a liberal direction a segment that fails the sequence bounds (I, II: they depend
//!   on the scale) is judged by its acknowledgment alone (III, IV, against the other
//!   side's known state): when that is in window the direction is re-synchronised from
//!   the segment, so tracking follows the real stream whatever was seen first; when not,
//!   the segment passes and changes nothing (the endpoint judges it). A FIN moves the
//!   connection's state only with an acceptable acknowledgment; a reset only at the exact
//!   sequence; a reset outside the window is dropped as on any connection.
//!
//! So after a takeover a blind attacker can neither close a connection (one number in
//! 2^32 for a reset, an acknowledgment in a window of about 64 KB for a FIN) nor make
//! natgw drop the endpoints' own segments (a liberal direction never refuses one that is
//! not a reset). The exception is the reply direction of a connection still waiting for
//! its SYN-ACK: there only a SYN-ACK sets it, or a reset that acknowledges the SYN (a
//! refused connection), so that a forged segment racing the real answer cannot set the
//! window.
//!
//! Must never: read a clock, allocate, or panic on any segment.

use natgw_wire::tcp::{self, Options, TcpOption};

/// The largest window natgw assumes for an acknowledgment's lower bound, whatever was
/// advertised (netfilter's MAXACKWINCONST).
const MAX_ACK_WINDOW: u32 = 66_000;

const INITIALISED: u8 = 0x01;
/// The sender announced a window scale in its SYN.
const WINDOW_SCALE: u8 = 0x02;
/// The sender allows SACK (so its peer's ACKs may carry SACK blocks).
const SACK_PERMITTED: u8 = 0x04;
/// `max_ack` holds an acknowledgment this sender sent.
const MAX_ACK_SET: u8 = 0x08;
/// Picked up in the middle of the connection: its segments are never refused for their
/// sequence numbers (see the module doc).
const LIBERAL: u8 = 0x10;

/// What one direction's sender has shown (netfilter's `ip_ct_tcp_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWindow {
    /// The sequence number after the highest segment sent (SYN and FIN count one).
    end: u32,
    /// The right edge of the window the other side granted: the most it may send.
    max_end: u32,
    /// The largest window it advertised (scaled), at least 1.
    max_win: u32,
    /// The highest acknowledgment it sent.
    max_ack: u32,
    /// Its window scale (RFC 7323), 0..=14; 0 unless both sides announced one.
    scale: u8,
    flags: u8,
}

/// Bytes of one direction's window state in a flow's handoff record (`nat::handoff`).
pub const WINDOW_STATE_LEN: usize = 18;

impl TcpWindow {
    pub fn is_initialised(&self) -> bool {
        self.flags & INITIALISED != 0
    }

    /// Picked up from a segment in the middle of the connection, not from its SYN.
    pub fn is_liberal(&self) -> bool {
        self.flags & LIBERAL != 0
    }

    /// The state as bytes (network order), for handing a flow to another process or node.
    pub fn to_bytes(&self) -> [u8; WINDOW_STATE_LEN] {
        let mut b = [0u8; WINDOW_STATE_LEN];
        b[0..4].copy_from_slice(&self.end.to_be_bytes());
        b[4..8].copy_from_slice(&self.max_end.to_be_bytes());
        b[8..12].copy_from_slice(&self.max_win.to_be_bytes());
        b[12..16].copy_from_slice(&self.max_ack.to_be_bytes());
        b[16] = self.scale;
        b[17] = self.flags;
        b
    }

    /// The state `to_bytes` wrote. A scale above RFC 7323's 14 or unknown flags make it
    /// `None`: the caller picks the direction up afresh instead.
    pub fn from_bytes(b: &[u8; WINDOW_STATE_LEN]) -> Option<TcpWindow> {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let known = INITIALISED | WINDOW_SCALE | SACK_PERMITTED | MAX_ACK_SET | LIBERAL;
        if b[16] > 14 || b[17] & !known != 0 {
            return None;
        }
        Some(TcpWindow {
            end: word(0),
            max_end: word(4),
            max_win: word(8).max(1),
            max_ack: word(12),
            scale: b[16],
            flags: b[17],
        })
    }
}

/// The fields of a segment window tracking reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The advertised window, unscaled, as on the wire.
    pub window: u16,
    /// Bytes of data after the header (of a GSO super-frame: all of them).
    pub payload_len: u32,
    pub options: &'a [u8],
}

impl Segment<'_> {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The sequence number after the segment (RFC 9293: SYN and FIN occupy one each).
    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.payload_len)
            .wrapping_add(u32::from(self.has(tcp::SYN)))
            .wrapping_add(u32::from(self.has(tcp::FIN)))
    }
}

/// What window tracking says about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowVerdict {
    /// In window: let it through, and let it move the connection's state.
    Accept,
    /// A reset in the window but not at the sequence the receiver expects: let it through
    /// (the endpoint answers with a challenge ACK), but the connection stays as it is.
    AcceptKeepState,
    /// Outside the window: drop it, count it, change nothing.
    OutOfWindow,
}

/// `a` comes after `b` in sequence space (RFC 1982 serial arithmetic).
fn after(a: u32, b: u32) -> bool {
    // The difference as a signed 32-bit distance: the top bit says which way it points.
    a.wrapping_sub(b) & 0x8000_0000 == 0 && a != b
}

fn before(a: u32, b: u32) -> bool {
    after(b, a)
}

/// Reads the window scale and SACK permission from a SYN's options into `w`.
fn read_syn_options(w: &mut TcpWindow, options: &[u8]) {
    w.scale = 0;
    w.flags &= !(WINDOW_SCALE | SACK_PERMITTED);
    for o in Options::new(options) {
        match o {
            TcpOption::WindowScale(s) => {
                w.scale = s;
                w.flags |= WINDOW_SCALE;
            }
            TcpOption::SackPermitted => w.flags |= SACK_PERMITTED,
            _ => {}
        }
    }
}

/// The highest edge a segment acknowledges: its ACK, or past it the right edge of a SACK
/// block when the receiver allows SACK.
fn highest_sack(seg: &Segment<'_>, receiver: &TcpWindow) -> u32 {
    let mut sack = seg.ack;
    if receiver.flags & SACK_PERMITTED != 0 && !Options::is_timestamps_only(seg.options) {
        for o in Options::new(seg.options) {
            if let TcpOption::SackRightEdge(e) = o {
                if after(e, sack) {
                    sack = e;
                }
            }
        }
    }
    sack
}

/// Both directions of a connection's window state, and the check every segment goes
/// through. `dir` is the segment's direction (0 original, 1 reply).
///
/// Stored field by field (each direction's four sequence words, then the two scales and
/// the two flag bytes): 36 bytes a flow where two `TcpWindow`s, padded, took 40.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWindows {
    words: [[u32; 4]; 2],
    scale: [u8; 2],
    flags: [u8; 2],
}

impl TcpWindows {
    /// What direction `dir`'s sender has shown (0 original, 1 reply).
    pub fn get(&self, dir: usize) -> TcpWindow {
        let d = dir.min(1);
        let [end, max_end, max_win, max_ack] = self.words[d];
        TcpWindow { end, max_end, max_win, max_ack, scale: self.scale[d], flags: self.flags[d] }
    }

    /// Sets what direction `dir`'s sender has shown.
    pub fn set(&mut self, dir: usize, w: TcpWindow) {
        let d = dir.min(1);
        self.words[d] = [w.end, w.max_end, w.max_win, w.max_ack];
        self.scale[d] = w.scale;
        self.flags[d] = w.flags;
    }

    /// The state a connection starts with from its first SYN (netfilter's `tcp_new`).
    pub fn from_syn(syn: &Segment<'_>) -> TcpWindows {
        let end = syn.end();
        let mut w = TcpWindow {
            end,
            max_end: end,
            max_win: u32::from(syn.window).max(1),
            flags: INITIALISED,
            ..Default::default()
        };
        read_syn_options(&mut w, syn.options);
        let mut both = TcpWindows::default();
        both.set(0, w);
        both
    }

    /// Forgets both directions: a SYN reopening a closed connection starts a new one.
    pub fn restart(&mut self, syn: &Segment<'_>) {
        *self = TcpWindows::from_syn(syn);
    }

    /// Checks a segment travelling in `dir` and, when it is in window, updates both
    /// directions from it. `awaiting_syn_ack`: the connection has seen its SYN only.
    pub fn check(&mut self, dir: usize, awaiting_syn_ack: bool, seg: &Segment<'_>) -> WindowVerdict {
        let dir = dir.min(1);
        let (sender_ix, receiver_ix) = (dir, 1 - dir);
        let mut sender = self.get(sender_ix);
        let mut receiver = self.get(receiver_ix);
        let mut seq = seg.seq;
        let mut end = seg.end();
        let mut ack = seg.ack;
        let mut sack = highest_sack(seg, &receiver);
        let win = u32::from(seg.window);
        // A reset exactly where the other side expects the next byte, by its own ACKs.
        let exact_reset = seg.has(tcp::RST) && receiver.flags & MAX_ACK_SET != 0 && seg.seq == receiver.max_ack;

        if !sender.is_initialised() {
            if seg.has(tcp::SYN) {
                // The SYN-ACK (or a simultaneous open's SYN) from the reply direction.
                sender = TcpWindow { end, max_end: end, max_win: win.max(1), flags: INITIALISED, ..Default::default() };
                read_syn_options(&mut sender, seg.options);
                // RFC 7323 2.2: scaling only when both sides announced it.
                if !(sender.flags & WINDOW_SCALE != 0 && receiver.flags & WINDOW_SCALE != 0) {
                    sender.scale = 0;
                    receiver.scale = 0;
                }
            } else if awaiting_syn_ack {
                // Only a reset that acknowledges the SYN answers it (a refused connection).
                let refuses = seg.has(tcp::RST) && seg.has(tcp::ACK) && seg.ack == receiver.end;
                if !refuses {
                    return WindowVerdict::OutOfWindow;
                }
                self.set(
                    sender_ix,
                    TcpWindow { end, max_end: end, max_win: 1, flags: INITIALISED, ..Default::default() },
                );
                return WindowVerdict::Accept;
            } else if seg.has(tcp::RST) || seg.has(tcp::FIN) {
                // Never set up from a reset or a FIN: through, and nothing changes, but for
                // the reset the other side's acknowledgments say is the real one.
                return if exact_reset { WindowVerdict::Accept } else { WindowVerdict::AcceptKeepState };
            } else {
                // Picked up in the middle: take what the segment shows, liberally.
                let swin = (win << sender.scale).max(1);
                sender = TcpWindow {
                    end,
                    max_end: end.wrapping_add(swin),
                    max_win: swin,
                    flags: INITIALISED | LIBERAL,
                    ..sender
                };
                if !receiver.is_initialised() {
                    // Nothing seen the other way yet: let bounds III and IV pass until then.
                    receiver.end = sack;
                    receiver.max_end = sack;
                }
                // The pickup stands whatever the bounds below say of this segment.
                self.set(sender_ix, sender);
                self.set(receiver_ix, receiver);
            }
        }

        let has_ack = seg.has(tcp::ACK);
        if !has_ack {
            // No ACK: as if it acknowledged what the receiver sent.
            ack = receiver.end;
            sack = receiver.end;
        } else if seg.has(tcp::RST) && ack == 0 {
            // Stacks that set ACK on a reset with a zero acknowledgment.
            ack = receiver.end;
            sack = receiver.end;
        }
        if seq == end && !seg.has(tcp::RST) {
            // No data: valid by its acknowledgment alone. A reset is always judged by
            // its sequence number.
            seq = sender.end;
            end = sender.end;
        }

        let max_ack_window = sender.max_win.max(MAX_ACK_WINDOW);
        let seq_ok = !after(seq, sender.max_end) && !before(end, sender.end.wrapping_sub(receiver.max_win));
        let ack_ok = !after(sack, receiver.end) && !before(sack, receiver.end.wrapping_sub(max_ack_window));
        if !(seq_ok && ack_ok) {
            // A liberal direction's sequence bounds rest on a guessed scale and perhaps
            // a forged first segment: an acknowledgment in window (a real one, from a
            // known other side) re-synchronises it from the segment.
            let resync = sender.is_liberal() && ack_ok && has_ack && receiver.is_initialised() && !seg.has(tcp::RST);
            if resync {
                sender.end = end;
                sender.max_end = end.wrapping_add((win << sender.scale).max(1));
            } else if sender.is_liberal() && !seg.has(tcp::RST) {
                // Liberal: through, judged by the endpoint; nothing here changes.
                return WindowVerdict::AcceptKeepState;
            } else if exact_reset {
                // The real reset of a connection whose windows natgw lost track of.
                return WindowVerdict::Accept;
            } else {
                return WindowVerdict::OutOfWindow;
            }
        }
        if seg.has(tcp::RST) && !awaiting_syn_ack && !exact_reset {
            // In the window, but not where the receiver expects the next byte: a blind
            // guess, or stale. Through, but no state change (RFC 5961 3.2). A liberal
            // direction's reset must be exact even when the receiver never acknowledged.
            if receiver.flags & MAX_ACK_SET != 0 || sender.is_liberal() {
                return WindowVerdict::AcceptKeepState;
            }
        }
        if seg.has(tcp::FIN) && sender.is_liberal() && !has_ack {
            // A liberal direction's FIN counts only with an acknowledgment to judge it by.
            return WindowVerdict::AcceptKeepState;
        }

        let win = if seg.has(tcp::SYN) { win } else { win << sender.scale };
        let swin = win.wrapping_add(sack.wrapping_sub(ack));
        sender.max_win = sender.max_win.max(swin);
        if after(end, sender.end) {
            sender.end = end;
        }
        if has_ack && (sender.flags & MAX_ACK_SET == 0 || after(ack, sender.max_ack)) {
            sender.max_ack = ack;
            sender.flags |= MAX_ACK_SET;
        }
        if receiver.is_initialised() && after(end, sender.max_end) {
            receiver.max_win = receiver.max_win.wrapping_add(end.wrapping_sub(sender.max_end));
        }
        if !before(sack.wrapping_add(win), receiver.max_end) {
            receiver.max_end = sack.wrapping_add(win).wrapping_add(u32::from(win == 0));
        }
        self.set(sender_ix, sender);
        self.set(receiver_ix, receiver);
        WindowVerdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_wire::tcp::{ACK, FIN, PSH, RST, SYN};

    const ORIG: usize = 0;
    const REPLY: usize = 1;
    // Linux's SYN options: MSS, SACK permitted, timestamps, window scale 7.
    const SYN_OPTS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

    fn seg(seq: u32, ack: u32, flags: u8, window: u16, payload_len: u32) -> Segment<'static> {
        Segment { seq, ack, flags, window, payload_len, options: &[] }
    }

    /// A connection through its handshake: client ISN 1000, server ISN 5000, both
    /// scaling by 7, windows 502 (64 256 bytes).
    fn established() -> TcpWindows {
        let syn = Segment { options: &SYN_OPTS, ..seg(1000, 0, SYN, 64240, 0) };
        let mut w = TcpWindows::from_syn(&syn);
        assert_eq!(w.check(ORIG, true, &syn), WindowVerdict::Accept);
        let synack = Segment { options: &SYN_OPTS, ..seg(5000, 1001, SYN | ACK, 65160, 0) };
        assert_eq!(w.check(REPLY, true, &synack), WindowVerdict::Accept);
        assert_eq!(w.check(ORIG, false, &seg(1001, 5001, ACK, 502, 0)), WindowVerdict::Accept);
        w
    }

    #[test]
    fn a_connection_with_data_both_ways_stays_in_window() {
        let mut w = established();
        let mut client = 1001u32;
        let mut server = 5001u32;
        // A bulk upload of 1448-byte segments, acknowledged every other one, then answers.
        for i in 0..2000u32 {
            assert_eq!(
                w.check(ORIG, false, &seg(client, server, ACK | PSH, 502, 1448)),
                WindowVerdict::Accept,
                "segment {i}"
            );
            client = client.wrapping_add(1448);
            if i % 2 == 1 {
                assert_eq!(w.check(REPLY, false, &seg(server, client, ACK, 2000, 0)), WindowVerdict::Accept);
            }
        }
        assert_eq!(w.check(REPLY, false, &seg(server, client, ACK | PSH, 2000, 300)), WindowVerdict::Accept);
        server += 300;
        // A retransmission of old data is still in window; FINs close it.
        assert_eq!(
            w.check(ORIG, false, &seg(client.wrapping_sub(1448), server, ACK, 502, 1448)),
            WindowVerdict::Accept
        );
        assert_eq!(w.check(ORIG, false, &seg(client, server, FIN | ACK, 502, 0)), WindowVerdict::Accept);
        assert_eq!(w.check(REPLY, false, &seg(server, client + 1, FIN | ACK, 2000, 0)), WindowVerdict::Accept);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let syn = seg(u32::MAX - 10, 0, SYN, 65535, 0);
        let mut w = TcpWindows::from_syn(&syn);
        w.check(ORIG, true, &syn);
        assert_eq!(w.check(REPLY, true, &seg(7, u32::MAX - 9, SYN | ACK, 65535, 0)), WindowVerdict::Accept);
        let mut client = u32::MAX - 9;
        for _ in 0..100 {
            assert_eq!(w.check(ORIG, false, &seg(client, 8, ACK, 65535, 1000)), WindowVerdict::Accept);
            client = client.wrapping_add(1000);
            assert_eq!(w.check(REPLY, false, &seg(8, client, ACK, 65535, 0)), WindowVerdict::Accept);
        }
        assert!(client < 1_000_000, "the client's sequence wrapped: {client}");
    }

    #[test]
    fn blind_resets_do_not_close_it_and_the_exact_one_does() {
        let mut w = established();
        // Every sequence number an off-path sender could try, in steps: outside the window
        // they are dropped; inside but not exact they pass and change nothing.
        let mut outside = 0;
        let mut inside = 0;
        for guess in (0..u32::MAX).step_by(65_521) {
            match w.check(REPLY, false, &seg(guess, 0, RST, 0, 0)) {
                WindowVerdict::OutOfWindow => outside += 1,
                WindowVerdict::AcceptKeepState => inside += 1,
                WindowVerdict::Accept => assert_eq!(guess, 5001, "a guessed reset was taken"),
            }
        }
        assert!(outside > 60_000 && inside < 10, "outside {outside}, inside {inside}");
        // RST|ACK with a wrong sequence too.
        assert_eq!(w.check(REPLY, false, &seg(9_999_999, 1001, RST | ACK, 0, 0)), WindowVerdict::OutOfWindow);
        // The server's own reset, at the sequence the client expects next.
        assert_eq!(w.check(REPLY, false, &seg(5001, 1001, RST | ACK, 0, 0)), WindowVerdict::Accept);
    }

    #[test]
    fn out_of_window_data_and_acks_are_refused() {
        let mut w = established();
        // Data far beyond what the server granted.
        assert_eq!(w.check(ORIG, false, &seg(1001 + 50_000_000, 5001, ACK, 502, 100)), WindowVerdict::OutOfWindow);
        // An ACK for data the server never sent.
        assert_eq!(w.check(ORIG, false, &seg(1001, 5001 + 100_000, ACK, 502, 0)), WindowVerdict::OutOfWindow);
        // A FIN out of window does not get through either.
        assert_eq!(w.check(REPLY, false, &seg(77_777_777, 1001, FIN | ACK, 502, 0)), WindowVerdict::OutOfWindow);
        // The state is unchanged: in-window traffic carries on.
        assert_eq!(w.check(ORIG, false, &seg(1001, 5001, ACK, 502, 10)), WindowVerdict::Accept);
    }

    #[test]
    fn before_the_syn_ack_only_the_answer_sets_the_reply_window() {
        let syn = seg(1000, 0, SYN, 64240, 0);
        let mut w = TcpWindows::from_syn(&syn);
        // A forged ACK racing the real SYN-ACK is dropped and sets nothing...
        assert_eq!(w.check(REPLY, true, &seg(123, 1001, ACK, 100, 0)), WindowVerdict::OutOfWindow);
        assert!(!w.get(REPLY).is_initialised());
        // ...a reset that does not acknowledge the SYN too...
        assert_eq!(w.check(REPLY, true, &seg(0, 999, RST | ACK, 0, 0)), WindowVerdict::OutOfWindow);
        // ...and the real answer sets it.
        assert_eq!(w.check(REPLY, true, &seg(5000, 1001, SYN | ACK, 65160, 0)), WindowVerdict::Accept);
        // A refused connection: the reset acknowledging the SYN passes.
        let mut refused = TcpWindows::from_syn(&syn);
        assert_eq!(refused.check(REPLY, true, &seg(0, 1001, RST | ACK, 0, 0)), WindowVerdict::Accept);
    }

    #[test]
    fn a_restored_connection_is_picked_up_from_its_first_segments() {
        // No window state at all (a flow restored or replicated): both directions are
        // taken from the first segment seen each way, then tracked.
        let mut w = TcpWindows::default();
        assert_eq!(w.check(ORIG, false, &seg(700_000, 900_000, ACK, 500, 1448)), WindowVerdict::Accept);
        assert_eq!(w.check(REPLY, false, &seg(900_000, 701_448, ACK, 500, 0)), WindowVerdict::Accept);
        assert_eq!(w.check(ORIG, false, &seg(701_448, 900_000, ACK, 500, 1448)), WindowVerdict::Accept);
        // Once picked up, blind resets are refused as on any connection.
        assert_eq!(w.check(REPLY, false, &seg(12_345, 0, RST, 0, 0)), WindowVerdict::OutOfWindow);
    }

    /// A little xorshift: the classes of input below are random, not one packet.
    fn rng(seed: u32) -> impl FnMut() -> u32 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    #[test]
    fn a_reset_or_fin_never_sets_a_direction_up() {
        let mut next = rng(7);
        for _ in 0..1000 {
            // A connection taken over (no window state): whatever forged reset or FIN comes
            // first, from either side, passes and changes nothing...
            let mut w = TcpWindows::default();
            let flags = [RST, RST | ACK, FIN | ACK, FIN][next() as usize % 4];
            let d = next() as usize % 2;
            assert_eq!(w.check(d, false, &seg(next(), next(), flags, 500, 0)), WindowVerdict::AcceptKeepState);
            assert_eq!(w, TcpWindows::default(), "{flags:#x} set something up");
        }
        // ...and once the client is known, only a reset at exactly what it acknowledged
        // (the server's next byte) is taken as the server's.
        let mut w = TcpWindows::default();
        assert_eq!(w.check(ORIG, false, &seg(700_000, 900_000, ACK, 500, 100)), WindowVerdict::Accept);
        assert_eq!(w.check(REPLY, false, &seg(900_001, 0, RST, 0, 0)), WindowVerdict::AcceptKeepState);
        assert_eq!(w.check(REPLY, false, &seg(900_000, 0, RST, 0, 0)), WindowVerdict::Accept);
    }

    #[test]
    fn a_forged_first_segment_after_a_takeover_cannot_cut_the_real_connection() {
        let mut next = rng(99);
        for round in 0..200 {
            let mut w = TcpWindows::default();
            // An off-path sender gets in first with random numbers (from outside: the
            // reply direction), sometimes twice.
            for _ in 0..1 + round % 3 {
                let f = w.check(
                    REPLY,
                    false,
                    &seg(next(), next(), ACK | PSH, u16::try_from(next() >> 16).unwrap_or(0), next() % 1400),
                );
                assert_ne!(f, WindowVerdict::OutOfWindow);
            }
            // Then the real connection carries on: a bulk download with windows scaled
            // by 7 (the wire says 502: 64 256 bytes), 20 segments in flight.
            let (mut client, mut server) = (next(), next());
            for i in 0..400u32 {
                let v = w.check(REPLY, false, &seg(server, client, ACK, 502, 1448));
                assert_ne!(v, WindowVerdict::OutOfWindow, "round {round}, server segment {i}");
                server = server.wrapping_add(1448);
                if i % 20 == 19 {
                    let v = w.check(ORIG, false, &seg(client, server, ACK, 502, 0));
                    assert_ne!(v, WindowVerdict::OutOfWindow, "round {round}, client ack {i}");
                }
            }
            // It ends with the endpoints' own FINs, which close it.
            assert_eq!(w.check(ORIG, false, &seg(client, server, FIN | ACK, 502, 0)), WindowVerdict::Accept);
            client = client.wrapping_add(1);
            assert_eq!(w.check(REPLY, false, &seg(server, client, FIN | ACK, 502, 0)), WindowVerdict::Accept);
        }
    }

    #[test]
    fn a_picked_up_connection_refuses_blind_resets_and_fins() {
        let mut w = TcpWindows::default();
        let (client, server) = (3_000_000u32, 7_000_000u32);
        assert_eq!(w.check(ORIG, false, &seg(client, server, ACK, 502, 100)), WindowVerdict::Accept);
        assert_eq!(w.check(REPLY, false, &seg(server, client + 100, ACK, 502, 0)), WindowVerdict::Accept);
        let mut next = rng(5);
        let mut moved = 0;
        for _ in 0..100_000 {
            let flags = [RST, RST | ACK, FIN | ACK, FIN, ACK | PSH][next() as usize % 5];
            let s = seg(next(), next(), flags, 502, next() % 100);
            if w.check(REPLY, false, &s) == WindowVerdict::Accept && flags & (RST | FIN) != 0 {
                moved += 1;
            }
        }
        // A FIN needs an acknowledgment within about 66 000 of the client's: one guess in
        // 65 000; a reset the exact sequence.
        assert!(moved <= 3, "{moved} blind resets or FINs were taken");
        // The real connection goes on.
        assert_eq!(w.check(ORIG, false, &seg(client + 100, server, ACK, 502, 10)), WindowVerdict::Accept);
    }

    #[test]
    fn sack_blocks_extend_the_acknowledged_edge_only_when_permitted() {
        let mut w = established();
        // The client sends 3 segments; the server SACKs the third (the second was lost).
        for i in 0..3u32 {
            w.check(ORIG, false, &seg(1001 + i * 1000, 5001, ACK, 502, 1000));
        }
        let sack = [1, 1, 5, 10, 0, 0, 0x0b, 0xb9, 0, 0, 0x0f, 0xa1]; // 3001-4001
        let ack = Segment { options: &sack, ..seg(5001, 2001, ACK, 2000, 0) };
        assert_eq!(w.check(REPLY, false, &ack), WindowVerdict::Accept);
        // A SACK edge beyond anything sent is out of window.
        let bogus = [1, 1, 5, 10, 0, 0, 0x0b, 0xb9, 0x7f, 0, 0, 0]; // up to data never sent
        let ack = Segment { options: &bogus, ..seg(5001, 2001, ACK, 2000, 0) };
        assert_eq!(w.check(REPLY, false, &ack), WindowVerdict::OutOfWindow);
        // Where the client did not permit SACK, blocks are not read at all.
        let syn = seg(1000, 0, SYN, 64240, 0);
        let mut plain = TcpWindows::from_syn(&syn);
        plain.check(ORIG, true, &syn);
        plain.check(REPLY, true, &seg(5000, 1001, SYN | ACK, 65160, 0));
        plain.check(ORIG, false, &seg(1001, 5001, ACK | PSH, 64240, 1000));
        let ack = Segment { options: &bogus, ..seg(5001, 2001, ACK, 2000, 0) };
        assert_eq!(plain.check(REPLY, false, &ack), WindowVerdict::Accept);
    }

    #[test]
    fn garbage_segments_never_panic() {
        let mut state = 0x1234_5678u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut w = established();
        for _ in 0..100_000 {
            let opts: Vec<u8> = (0..(next() % 40)).map(|_| next().to_le_bytes()[0]).collect();
            let [flags, w0, w1, _] = next().to_le_bytes();
            let s = Segment {
                seq: next(),
                ack: next(),
                flags,
                window: u16::from_le_bytes([w0, w1]),
                payload_len: next() % 70_000,
                options: &opts,
            };
            let _ = w.check(usize::from(next() % 2 == 1), next() % 7 == 0, &s);
        }
    }
}
