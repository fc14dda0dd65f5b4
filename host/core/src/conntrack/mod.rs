//! Connection tracking: flow keys, the per-worker flow table, the TCP state machine,
//! per-state timeouts and the expiry wheel.
//!
//! Owns: which flows exist, their state and counters, and when they expire. Must never:
//! perform I/O or read a clock (the caller passes `now_ms`), or scan the whole table on the
//! fast path — expiry is a lazy timer wheel with one-second slots: the fast path only moves
//! a flow's deadline; the wheel re-files a flow whose deadline moved when its slot comes up.

mod index;
pub mod tcp_window;
pub mod top;

use index::{FlowIndex, IndexEntry};

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use thiserror::Error;

use crate::shared_counts::SharedCounts;

use natgw_wire::{checksum, tcp, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConntrackError {
    #[error("flow table full ({0} flows)")]
    TableFull(usize),
    #[error("a flow with one of these keys is already in the table")]
    KeyTaken,
}

/// Which side of the gateway a packet arrived on; part of every key so that a spoofed
/// outside packet can never match an inside-only entry (e.g. a hairpin flow's reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Inside,
    Outside,
}

/// A flow as seen on the wire at one side. For ICMP queries both ports are the identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub side: Side,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// The values a packet of one direction leaves with: the fast path applies it blindly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub src: Endpoint,
    pub dst: Endpoint,
}

/// A rewrite's checksum changes for one direction, computed once when the flow is filed
/// (VPP's `nat_6t_flow_t` l3/l4 deltas): the fast path adds each in one step instead of
/// updating field by field. The packets of a direction carry exactly its key's values (that
/// is how they found the flow), so old and new values are known in advance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteDeltas {
    /// A CHECKSUM_PARTIAL pseudo-header sum: the addresses alone. The IPv4 header's
    /// (`ip`) is this and the TTL's constant decrement, so it is not kept.
    pub addresses: checksum::Delta,
    /// A complete TCP or UDP checksum: addresses and ports; an ICMP query's: its
    /// identifier (ICMP has no pseudo-header).
    pub l4: checksum::Delta,
}

impl RewriteDeltas {
    /// The changes `rw` makes to a packet arriving as `key`.
    pub fn of(key: &FlowKey, rw: &Rewrite) -> RewriteDeltas {
        use checksum::Delta;
        let addresses = Delta::field32(u32::from(key.src), u32::from(rw.src.addr))
            .plus(Delta::field32(u32::from(key.dst), u32::from(rw.dst.addr)));
        let l4 = if key.proto == PROTO_ICMP {
            // The identifier is the "port" of whichever side is translated.
            let new_id = if rw.src.addr != key.src { rw.src.port } else { rw.dst.port };
            Delta::field16(key.src_port, new_id)
        } else {
            addresses.plus(Delta::field16(key.src_port, rw.src.port)).plus(Delta::field16(key.dst_port, rw.dst.port))
        };
        RewriteDeltas { addresses, l4 }
    }

    /// The IPv4 header checksum's: both addresses and the TTL's decrement. Added to the
    /// addresses' delta per packet (one fold) rather than kept: 2 bytes a direction, and
    /// bit for bit what was kept (taking the constant back out of it could not give back
    /// the addresses' delta exactly: 0x0000 and 0xffff would both read 0xffff).
    #[inline]
    pub fn ip(&self) -> checksum::Delta {
        self.addresses.plus(checksum::Delta::TTL_DECREMENT)
    }
}

/// The rewrites a flow's two keys imply: a packet of one direction leaves as the other
/// direction's key reversed (what the reply will be addressed from and to). ICMP queries
/// carry their identifier in both ports of a key: the reply direction's translated
/// source keeps the translated identifier.
pub fn rewrites_of(keys: &[FlowKey; 2]) -> [Rewrite; 2] {
    let (o, r) = (&keys[ORIGINAL], &keys[REPLY]);
    let reversed = |k: &FlowKey| Rewrite {
        src: Endpoint { addr: k.dst, port: k.dst_port },
        dst: Endpoint { addr: k.src, port: k.src_port },
    };
    let mut reply = reversed(o);
    if o.proto == PROTO_ICMP {
        reply.src.port = r.src_port;
    }
    [reversed(r), reply]
}

/// Where packets of one direction leave: the outside link, or inside interface `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    Outside,
    Inside(u8),
}

/// Direction index into a flow's per-direction arrays.
pub const ORIGINAL: usize = 0;
pub const REPLY: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// SYN seen from the initiator.
    SynSent,
    /// SYN+ACK seen from the responder.
    SynReceived,
    Established,
    /// A FIN from one side.
    FinWait,
    /// FINs from both sides.
    TimeWait,
    /// Reset by either side.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    Tcp(TcpState),
    Udp { replied: bool },
    Icmp,
}

impl FlowState {
    pub fn initial(proto: u8) -> Self {
        match proto {
            PROTO_TCP => FlowState::Tcp(TcpState::SynSent),
            PROTO_UDP => FlowState::Udp { replied: false },
            _ => FlowState::Icmp,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            FlowState::Tcp(TcpState::SynSent) => "SYN_SENT",
            FlowState::Tcp(TcpState::SynReceived) => "SYN_RECV",
            FlowState::Tcp(TcpState::Established) => "ESTABLISHED",
            FlowState::Tcp(TcpState::FinWait) => "FIN_WAIT",
            FlowState::Tcp(TcpState::TimeWait) => "TIME_WAIT",
            FlowState::Tcp(TcpState::Closed) => "CLOSE",
            FlowState::Udp { replied: false } => "UNREPLIED",
            FlowState::Udp { replied: true } => "ASSURED",
            FlowState::Icmp => "-",
        }
    }
}

/// Idle timeouts in seconds. Defaults follow RFC 5382 (TCP established ≥ 2 h 4 min,
/// transitory ≥ 4 min), RFC 4787 REQ-5 (UDP, 5 min recommended) and RFC 5508 (ICMP 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub tcp_established: u64,
    /// SYN_SENT, SYN_RECV, FIN_WAIT: the RFC 5382 "transitory" states.
    pub tcp_transitory: u64,
    pub tcp_time_wait: u64,
    /// After a RST the connection is gone; the entry lingers only to absorb stray segments.
    pub tcp_closed: u64,
    pub udp: u64,
    pub icmp: u64,
    /// While the table is above its high-water mark, a flow never answered goes this
    /// long after it was opened, below the floors above (RFC 4787 REQ-5, RFC 5382 REQ-5
    /// allow it only then; netfilter's unreplied UDP timeout is the same 30 s).
    pub unanswered_under_pressure: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 7440,
            tcp_transitory: 240,
            tcp_time_wait: 240,
            tcp_closed: 10,
            udp: 300,
            icmp: 60,
            unanswered_under_pressure: 30,
        }
    }
}

impl Timeouts {
    pub fn for_state(&self, s: FlowState) -> u64 {
        match s {
            FlowState::Tcp(TcpState::Established) => self.tcp_established,
            FlowState::Tcp(TcpState::SynSent | TcpState::SynReceived | TcpState::FinWait) => self.tcp_transitory,
            FlowState::Tcp(TcpState::TimeWait) => self.tcp_time_wait,
            FlowState::Tcp(TcpState::Closed) => self.tcp_closed,
            FlowState::Udp { .. } => self.udp,
            FlowState::Icmp => self.icmp,
        }
    }
}

/// What a TCP segment did to a flow's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTransition {
    pub next: TcpState,
    pub became_established: bool,
}

/// The TCP state machine, driven by flags of a segment travelling in `dir`.
/// `fin_seen` records which directions have sent a FIN.
pub fn tcp_transition(state: TcpState, dir: usize, flags: u8, fin_seen: &mut [bool; 2]) -> TcpTransition {
    use TcpState::*;
    if flags & tcp::RST != 0 {
        return TcpTransition { next: Closed, became_established: false };
    }
    let syn = flags & tcp::SYN != 0;
    let ack = flags & tcp::ACK != 0;
    let next = match state {
        SynSent if dir == REPLY && syn && ack => SynReceived,
        SynReceived if dir == ORIGINAL && ack && !syn => Established,
        // A new SYN on a closed or time-wait entry reopens it (port reuse by the same host).
        Closed | TimeWait if dir == ORIGINAL && syn && !ack => {
            *fin_seen = [false, false];
            SynSent
        }
        s => s,
    };
    let mut next = next;
    if flags & tcp::FIN != 0 && matches!(next, Established | FinWait | SynReceived) {
        fin_seen[dir] = true;
        next = if fin_seen[ORIGINAL] && fin_seen[REPLY] { TimeWait } else { FinWait };
    }
    TcpTransition { next, became_established: next == Established && state != Established }
}

pub type FlowId = u32;

#[derive(Debug, Clone)]
pub struct Flow {
    /// keys[ORIGINAL] is how the initiator's packets arrive; keys[REPLY] the responder's.
    pub keys: [FlowKey; 2],
    /// The checksum changes of each direction's rewrite (`Flow::rewrite`, which the keys
    /// say); set when the flow is filed (`FlowTable::insert`).
    pub deltas: [RewriteDeltas; 2],
    pub egress: [Egress; 2],
    pub state: FlowState,
    pub tcp_flags: [u8; 2],
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// When it was created and saw its last packet (`created_ms`, `last_seen_ms`).
    pub created: Ms40,
    pub last_seen: Ms40,
    /// When the flow expires, in ms after `last_seen_ms` (`expires_ms`, `set_expires_ms`):
    /// 4 bytes where the deadline itself took 8. Timeouts are at most 7 days, so the
    /// deadline is never further from the last packet than a `u32` of ms (49 days).
    pub expires_after_ms: u32,
    /// The endpoint-independent mapping this flow holds a reference on.
    pub mapping: MappingRef,
    /// The egress policy generation that admitted it (0: no policy was installed; a
    /// generation past `u32::MAX`, four billion swaps, reads as `u32::MAX`).
    pub policy_generation: u32,
    /// What the flow log has already reported (interim records for long flows): when,
    /// and the low bits of the counters then (`unreported_packets`, `reported_packets`).
    pub reported: Reported,
    /// Where its TCP window tracking (both directions) is kept: an entry of the table's
    /// side table, which only TCP flows have (`FlowTable::windows`); `NONE` for UDP and
    /// ICMP, and for a flow outside a table (the table sets it on insert).
    pub windows: TcpWindowsRef,
    /// Which directions sent a FIN, whether it was revoked, whether its close check is
    /// queued, the shadow policy's answer: one byte.
    pub marks: FlowMarks,
}

/// A flow's small facts in one byte where they took five: the 4 bytes that bring a `Flow`
/// (a multiple of 8 bytes) from 160 to 152.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowMarks(u8);

impl FlowMarks {
    const FIN_ORIGINAL: u8 = 0x01;
    const FIN_REPLY: u8 = 0x02;
    const REVOKED: u8 = 0x04;
    const CLOSE_CHECK_QUEUED: u8 = 0x08;
    const REPORT_CHECK_QUEUED: u8 = 0x40;
    /// Two bits: 0 no shadow policy ran, else its answer (`shadow`).
    const SHADOW_SHIFT: u32 = 4;
    const SHADOW: u8 = 0x30;

    /// Which directions have sent a FIN (`tcp_transition`).
    pub fn fin_seen(self) -> [bool; 2] {
        [self.0 & Self::FIN_ORIGINAL != 0, self.0 & Self::FIN_REPLY != 0]
    }

    pub fn set_fin_seen(&mut self, fin_seen: [bool; 2]) {
        self.set(Self::FIN_ORIGINAL, fin_seen[ORIGINAL]);
        self.set(Self::FIN_REPLY, fin_seen[REPLY]);
    }

    /// A new egress policy denied this flow: its packets are dropped (TCP answered with a
    /// RST) until it expires.
    pub fn revoked(self) -> bool {
        self.0 & Self::REVOKED != 0
    }

    pub fn set_revoked(&mut self, revoked: bool) {
        self.set(Self::REVOKED, revoked);
    }

    /// A check for this flow's final record is in the translator's close queue.
    pub fn close_check_queued(self) -> bool {
        self.0 & Self::CLOSE_CHECK_QUEUED != 0
    }

    pub fn set_close_check_queued(&mut self, queued: bool) {
        self.set(Self::CLOSE_CHECK_QUEUED, queued);
    }

    /// A check for a record of its unreported counters (`Flow::count`) is in the
    /// translator's queue of them.
    pub fn report_check_queued(self) -> bool {
        self.0 & Self::REPORT_CHECK_QUEUED != 0
    }

    pub fn set_report_check_queued(&mut self, queued: bool) {
        self.set(Self::REPORT_CHECK_QUEUED, queued);
    }

    /// What the shadow egress policy answered when the flow was admitted, if one ran
    /// (`natgw policy shadow`): for its records only.
    pub fn shadow(self) -> Option<crate::nat::policy::EgressDecision> {
        use crate::nat::policy::EgressDecision::*;
        match (self.0 & Self::SHADOW) >> Self::SHADOW_SHIFT {
            1 => Some(Allow),
            2 => Some(Deny),
            3 => Some(Reject),
            _ => None,
        }
    }

    pub fn set_shadow(&mut self, shadow: Option<crate::nat::policy::EgressDecision>) {
        use crate::nat::policy::EgressDecision::*;
        let code: u8 = match shadow {
            None => 0,
            Some(Allow) => 1,
            Some(Deny) => 2,
            Some(Reject) => 3,
        };
        self.0 = (self.0 & !Self::SHADOW) | code << Self::SHADOW_SHIFT;
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }
}

/// A gateway-clock time in ms in 5 bytes where a `u64` took 8, with alignment 1 so that
/// the compiler packs it among a `Flow`'s other fields. The gateway clock starts near 0 at
/// the first start and is carried across handoffs (`adopt_clock`), so 40 bits (34 years
/// of ms) hold any time it reads; a later one is kept as `MAX`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ms40([u8; 5]);

impl Ms40 {
    /// The latest time kept: 2^40 − 1 ms.
    pub const MAX: u64 = (1 << 40) - 1;

    /// `ms`, saturating at `MAX`.
    pub fn new(ms: u64) -> Ms40 {
        Ms40(low40(ms.min(Self::MAX)))
    }

    pub fn get(self) -> u64 {
        from40(self.0)
    }
}

/// Counters and time of a flow's last flow-log record; the next one counts from here.
///
/// Of the counters only the low bits are kept, 32 of each direction's packets and 40 of
/// its bytes (18 bytes where the full values took 32): a record's counts are the flow's counters minus
/// these, modulo 2^32 and 2^40 (`Flow::unreported_packets`, `unreported_bytes`), exact
/// while fewer than 2^32 packets and 2^40 bytes (1 TiB) pass in one direction between two
/// records. The translator keeps it so: a flow whose unreported part reaches half of
/// either range (`REPORT_PACKETS_AT`, `REPORT_BYTES_AT`) gets an interim record at the
/// next tick, or, with no flow log kept, its snapshot moved up (`Flow::count`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// The low 32 bits of each direction's packets at the record.
    packets_low: [u32; 2],
    /// The low 40 bits of each direction's bytes.
    bytes_low: [[u8; 5]; 2],
    /// The record's time (`at_ms`) in 5 bytes, and whether it was the connection's final
    /// one (`closed`) in a byte of its own: the struct's alignment (4) leaves room for it.
    at: Ms40,
    closed: bool,
}

/// The low 32 bits of `v`.
fn low32(v: u64) -> u32 {
    let [b0, b1, b2, b3, ..] = v.to_le_bytes();
    u32::from_le_bytes([b0, b1, b2, b3])
}

/// The low 40 bits of `v`.
fn low40(v: u64) -> [u8; 5] {
    let [b0, b1, b2, b3, b4, ..] = v.to_le_bytes();
    [b0, b1, b2, b3, b4]
}

fn from40(b: [u8; 5]) -> u64 {
    let [b0, b1, b2, b3, b4] = b;
    u64::from_le_bytes([b0, b1, b2, b3, b4, 0, 0, 0])
}

const MASK32: u64 = (1 << 32) - 1;
const MASK40: u64 = (1 << 40) - 1;

impl Reported {
    /// Unreported packets in one direction at which the flow log must report the flow
    /// (or the snapshot move up): half of what the low 32 bits tell apart, so that the
    /// packets of the time until it does (a tick, 10 ms at most) cannot wrap them.
    pub const REPORT_PACKETS_AT: u64 = 1 << 31;
    /// The same for bytes: half of 2^40 (512 GiB).
    pub const REPORT_BYTES_AT: u64 = 1 << 39;
    /// The most unreported packets a handed-over flow keeps (`Flow::set_reported`): three
    /// quarters of the range, past `REPORT_PACKETS_AT` so that its record is due, with a
    /// quarter left for the packets before it goes out.
    pub const HANDED_OVER_PACKETS_MAX: u64 = 3 << 30;
    /// The same for bytes (768 GiB).
    pub const HANDED_OVER_BYTES_MAX: u64 = 3 << 38;

    /// A record at `at_ms` (kept up to `Ms40::MAX`) of a flow whose counters were then
    /// `packets` and `bytes` (their low bits are kept); `closed`: it was the final record
    /// of a TCP connection that closed (FIN both ways, or RST), whose entry only lingers
    /// (TIME-WAIT) now.
    pub fn new(packets: [u64; 2], bytes: [u64; 2], at_ms: u64, closed: bool) -> Reported {
        Reported { packets_low: packets.map(low32), bytes_low: bytes.map(low40), at: Ms40::new(at_ms), closed }
    }

    /// When the last record went out; 0: nothing reported yet (the next record's window
    /// starts at the flow's creation).
    pub fn at_ms(&self) -> u64 {
        self.at.get()
    }

    /// The last record was the connection's final one.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

/// The mapping a flow holds a reference on, in 4 bytes where an `Option<u32>` took 8:
/// the mapping's id plus one, 0 for none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingRef(u32);

impl MappingRef {
    pub const NONE: MappingRef = MappingRef(0);

    /// `id` (below `u32::MAX`: a mapping table never holds that many).
    pub fn to(id: u32) -> MappingRef {
        MappingRef(id.saturating_add(1))
    }

    pub fn get(self) -> Option<u32> {
        self.0.checked_sub(1)
    }
}

/// A flow's entry in its table's TCP window side table, in 4 bytes where the state itself
/// took 36 in every flow: the entry's index plus one, 0 for none. Only a `FlowTable` makes
/// one (on insert of a TCP flow) and forgets it (on removal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWindowsRef(u32);

impl TcpWindowsRef {
    pub const NONE: TcpWindowsRef = TcpWindowsRef(0);

    fn to(index: u32) -> TcpWindowsRef {
        TcpWindowsRef(index.saturating_add(1))
    }

    fn index(self) -> Option<usize> {
        self.0.checked_sub(1).map(|i| i as usize)
    }
}

/// The TCP window state of a table's TCP flows, apart from the flows so that UDP and ICMP
/// flows do not carry it: at most one entry per TCP flow in the table (so bounded by the
/// table's own bound), freed when its flow leaves and reused by the next.
#[derive(Default)]
struct WindowSlab {
    entries: Vec<tcp_window::TcpWindows>,
    free: Vec<u32>,
}

impl WindowSlab {
    /// A fresh entry (state not tracked yet); `None` only past `u32::MAX` entries, which a
    /// table of at most 2^31 flows never asks for.
    fn alloc(&mut self) -> Option<TcpWindowsRef> {
        match self.free.pop() {
            Some(i) => {
                if let Some(w) = self.entries.get_mut(i as usize) {
                    *w = tcp_window::TcpWindows::default();
                }
                Some(TcpWindowsRef::to(i))
            }
            None => {
                let i = u32::try_from(self.entries.len()).ok().filter(|&i| i < u32::MAX)?;
                self.entries.push(tcp_window::TcpWindows::default());
                Some(TcpWindowsRef::to(i))
            }
        }
    }

    fn release(&mut self, r: TcpWindowsRef) {
        if let Some(i) = r.index().and_then(|i| u32::try_from(i).ok()) {
            self.free.push(i);
        }
    }

    fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

/// A flow as an operator sees it (`natgw flows`): plain values, no strings, so a worker
/// can copy a million of them out without allocating per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSummary {
    pub state: FlowState,
    /// How the initiator's packets arrive.
    pub original: FlowKey,
    /// How they leave.
    pub translated: Rewrite,
    /// How the responder's packets arrive.
    pub reply: FlowKey,
    pub age_ms: u64,
    pub expires_in_ms: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The pool of the external address it leaves from (`Translator::flow_summaries`);
    /// `None` for a flow without a mapping of its own (the summary of a lone `Flow`).
    pub pool: Option<crate::nat::pool::PoolId>,
}

impl Flow {
    /// The values a packet of direction `dir` leaves with: what the other direction's key
    /// says (`rewrites_of`), kept in no field of its own.
    #[inline]
    pub fn rewrite(&self, dir: usize) -> Rewrite {
        let [original, reply] = rewrites_of(&self.keys);
        if dir == REPLY {
            reply
        } else {
            original
        }
    }

    pub fn summary(&self, now_ms: u64) -> FlowSummary {
        FlowSummary {
            state: self.state,
            original: self.keys[ORIGINAL],
            translated: self.rewrite(ORIGINAL),
            reply: self.keys[REPLY],
            age_ms: now_ms.saturating_sub(self.created_ms()),
            expires_in_ms: self.expires_ms().saturating_sub(now_ms),
            packets: self.packets,
            bytes: self.bytes,
            pool: None,
        }
    }

    pub fn refresh(&mut self, now_ms: u64, timeouts: &Timeouts) {
        self.last_seen = Ms40::new(now_ms);
        self.set_expires_ms(now_ms + timeouts.for_state(self.state) * 1000);
    }

    /// When the flow was created (gateway clock).
    #[inline]
    pub fn created_ms(&self) -> u64 {
        self.created.get()
    }

    /// When it saw its last packet (gateway clock).
    #[inline]
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen.get()
    }

    /// Where the flow log's next record of this flow starts: its last record, or the
    /// flow's creation when nothing has been reported.
    pub fn unreported_since_ms(&self) -> u64 {
        match self.reported.at_ms() {
            0 => self.created_ms(),
            at => at,
        }
    }

    /// Each direction's packets since the flow log's last record of it (all of them when
    /// there was none).
    #[inline]
    pub fn unreported_packets(&self) -> [u64; 2] {
        [ORIGINAL, REPLY].map(|d| self.unreported(d).0)
    }

    /// Each direction's bytes since the flow log's last record of it.
    #[inline]
    pub fn unreported_bytes(&self) -> [u64; 2] {
        [ORIGINAL, REPLY].map(|d| self.unreported(d).1)
    }

    /// Direction `d`'s (packets, bytes) since the last record: the modular difference.
    #[inline]
    fn unreported(&self, d: usize) -> (u64, u64) {
        let r = &self.reported;
        (
            self.packets[d].wrapping_sub(u64::from(r.packets_low[d])) & MASK32,
            self.bytes[d].wrapping_sub(from40(r.bytes_low[d])) & MASK40,
        )
    }

    /// Each direction's packets at the flow log's last record, in full: what handoff and
    /// replication records carry.
    pub fn reported_packets(&self) -> [u64; 2] {
        let unreported = self.unreported_packets();
        [ORIGINAL, REPLY].map(|d| self.packets[d].saturating_sub(unreported[d]))
    }

    /// Each direction's bytes at the flow log's last record, in full.
    pub fn reported_bytes(&self) -> [u64; 2] {
        let unreported = self.unreported_bytes();
        [ORIGINAL, REPLY].map(|d| self.bytes[d].saturating_sub(unreported[d]))
    }

    /// The flow log reported everything counted, at `at_ms`; `closed` as `Reported::new`.
    pub fn mark_reported(&mut self, at_ms: u64, closed: bool) {
        self.reported = Reported::new(self.packets, self.bytes, at_ms, closed);
    }

    /// The flow log's last record as a handed-over flow carries it: the counters then, in
    /// full (at most the flow's own, which the caller checks). A natgw that keeps
    /// `Reported` sends less than `REPORT_PACKETS_AT` unreported plus a tick's packets;
    /// more than `HANDED_OVER_PACKETS_MAX` (or `HANDED_OVER_BYTES_MAX`), which only one
    /// that kept 64 bits can have sent, is clamped to it: the next record then counts that
    /// many where there were more. Either way the flow's next packet has its record made
    /// (`count`), and the range's last quarter keeps the packets until then from wrapping.
    pub fn set_reported(&mut self, packets: [u64; 2], bytes: [u64; 2], at_ms: u64, closed: bool) {
        let packets = [ORIGINAL, REPLY]
            .map(|d| packets[d].max(self.packets[d].saturating_sub(Reported::HANDED_OVER_PACKETS_MAX)));
        let bytes =
            [ORIGINAL, REPLY].map(|d| bytes[d].max(self.bytes[d].saturating_sub(Reported::HANDED_OVER_BYTES_MAX)));
        self.reported = Reported::new(packets, bytes, at_ms, closed);
    }

    /// Counts a packet (or `packets` segments of one) of direction `dir`. True when the
    /// part of this direction's counters the flow log has not reported reached half of
    /// what `Reported` tells apart: the caller must have it reported, or, with no flow
    /// log kept, call `skip_unreported`, before it wraps.
    #[inline]
    pub fn count(&mut self, dir: usize, packets: u64, bytes: u64) -> bool {
        self.packets[dir] += packets;
        self.bytes[dir] += bytes;
        self.report_due(dir)
    }

    /// The unreported part of direction `dir`'s counters reached `REPORT_PACKETS_AT` or
    /// `REPORT_BYTES_AT`.
    #[inline]
    pub fn report_due(&self, dir: usize) -> bool {
        let (packets, bytes) = self.unreported(dir);
        packets >= Reported::REPORT_PACKETS_AT || bytes >= Reported::REPORT_BYTES_AT
    }

    /// Moves the flow log's snapshot up to the counters without a record (time and
    /// `closed` as they were): for a translator that keeps no flow log, where nobody
    /// reads the unreported counts, so that they never wrap.
    pub fn skip_unreported(&mut self) {
        self.reported = Reported::new(self.packets, self.bytes, self.reported.at_ms(), self.reported.closed());
    }

    /// When the flow expires.
    #[inline]
    pub fn expires_ms(&self) -> u64 {
        self.last_seen_ms() + u64::from(self.expires_after_ms)
    }

    /// Moves the deadline, kept within `[last_seen_ms, last_seen_ms + u32::MAX ms]`.
    pub fn set_expires_ms(&mut self, at_ms: u64) {
        self.expires_after_ms = u32::try_from(at_ms.saturating_sub(self.last_seen_ms())).unwrap_or(u32::MAX);
    }
}

/// The key an index entry stands for: its flow's key of that direction.
fn key_of(slots: &[Slot], e: IndexEntry) -> Option<FlowKey> {
    let flow = slots.get(e.id() as usize)?.flow.as_ref()?;
    flow.keys.get(e.dir()).copied()
}

/// Where a flow is filed in the expiry wheel: the second filed (its slot follows from
/// it) and the index in that slot. Seconds of the gateway clock fit 32 bits for 136 years.
#[derive(Debug, Clone, Copy, Default)]
struct WheelPos {
    sec: u32,
    index: u32,
}

impl WheelPos {
    fn slot(self) -> u16 {
        wheel_slot(u64::from(self.sec))
    }
}

struct Slot {
    flow: Option<Flow>,
    /// Valid while `flow` is `Some` and the flow is filed (always, but while `expire`
    /// holds its slot's entries).
    wheel: WheelPos,
    /// Its place in the list of flows never answered, oldest first (None: answered).
    unanswered: Link,
}

/// Neighbours in the unanswered list (`NO_FLOW` at either end; `prev` is `NOT_LISTED`
/// for a flow not in it: 8 bytes where an `Option` took 12).
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: FlowId,
    next: FlowId,
}

impl Link {
    const NONE: Link = Link { prev: NOT_LISTED, next: NO_FLOW };

    fn listed(self) -> Option<Link> {
        (self.prev != NOT_LISTED).then_some(self)
    }
}

/// No flow has this id (ids fit 31 bits): a `Link` of a flow not in the list.
const NOT_LISTED: FlowId = FlowId::MAX - 1;

const NO_FLOW: FlowId = FlowId::MAX;

/// One-second wheel slots; a deadline further out than the wheel simply comes round again.
const WHEEL_SLOTS: usize = 4096;
const WHEEL_SECS: u64 = WHEEL_SLOTS as u64;

/// The wheel slot of a second.
fn wheel_slot(sec: u64) -> u16 {
    // The remainder is below WHEEL_SLOTS (4096): it fits.
    u16::try_from(sec % WHEEL_SECS).unwrap_or(0)
}

/// The flow table of one worker: a slab of flows, an index with both keys of each flow,
/// and an expiry wheel. Bounded: at `max_flows` new flows are refused.
///
/// Every flow is filed in exactly one wheel slot, and knows where (`WheelPos`), so
/// bringing a deadline forward moves its one entry in O(1) and removing a flow removes it:
/// the wheel holds as many entries as there are flows, whatever the traffic does to their
/// deadlines.
///
/// For fairness under pressure the table also keeps, in O(1) per change: the flows never
/// answered in creation order (the ones to give up first when it is full: netfilter's
/// early drop, but exact), the flows each inside source opened, and the flows opened from
/// outside towards each mapping. Each has at most one entry per flow.
pub struct FlowTable {
    slots: Vec<Slot>,
    free: Vec<FlowId>,
    /// Both keys of every flow, to the flow's id and the key's direction (`index`: 8
    /// bytes a key, the key itself read from the flow).
    index: FlowIndex,
    wheel: Vec<Vec<FlowId>>,
    /// The wheel has been processed up to (excluding) this second.
    wheel_sec: u64,
    len: usize,
    max_flows: usize,
    unanswered_head: FlowId,
    unanswered_tail: FlowId,
    unanswered_len: usize,
    /// Flows opened from the inside, per inside source, over every worker's table (the
    /// per-source limit holds for the gateway).
    per_source: Arc<SharedCounts<Ipv4Addr>>,
    /// Flows opened from outside, per mapping they reach (entries only while non-zero).
    inbound_per_mapping: HashMap<u32, u32, ahash::RandomState>,
    /// The TCP flows' window state (`Flow::windows`).
    windows: WindowSlab,
}

impl FlowTable {
    pub fn new(max_flows: usize, now_ms: u64) -> Self {
        Self::with_source_counts(max_flows, now_ms, Arc::default())
    }

    /// A table whose flows count towards `per_source`, which other workers' tables share.
    pub fn with_source_counts(max_flows: usize, now_ms: u64, per_source: Arc<SharedCounts<Ipv4Addr>>) -> Self {
        FlowTable {
            slots: Vec::new(),
            free: Vec::new(),
            index: FlowIndex::new(),
            wheel: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            wheel_sec: now_ms / 1000,
            len: 0,
            max_flows,
            unanswered_head: NO_FLOW,
            unanswered_tail: NO_FLOW,
            unanswered_len: 0,
            per_source,
            inbound_per_mapping: HashMap::with_hasher(ahash::RandomState::new()),
            windows: WindowSlab::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn max_flows(&self) -> usize {
        self.max_flows
    }

    /// One past the highest `FlowId` this table has ever given out (slots are reused, so
    /// every flow's id is below it).
    pub fn id_bound(&self) -> usize {
        self.slots.len()
    }

    /// Entries in the expiry wheel: one per flow.
    pub fn wheel_entries(&self) -> usize {
        self.wheel.iter().map(Vec::len).sum()
    }

    /// Flows that have not been answered (see `answered`).
    pub fn unanswered(&self) -> usize {
        self.unanswered_len
    }

    /// The oldest flow never answered: the one to give up first under pressure.
    pub fn oldest_unanswered(&self) -> Option<(FlowId, &Flow)> {
        let id = self.unanswered_head;
        self.get(id).map(|f| (id, f))
    }

    /// Flows the inside host `addr` opened that are in this table or another worker's.
    pub fn flows_of_source(&self, addr: Ipv4Addr) -> u32 {
        self.per_source.held(&addr)
    }

    /// Flows opened from outside towards mapping `mapping` that are in the table.
    pub fn inbound_flows_of_mapping(&self, mapping: u32) -> u32 {
        self.inbound_per_mapping.get(&mapping).copied().unwrap_or(0)
    }

    /// The flow has been answered (a UDP or ICMP reply, a TCP handshake completed): it
    /// leaves the unanswered list. Idempotent.
    pub fn answered(&mut self, id: FlowId) {
        let Some(link) = self.slots.get(id as usize).and_then(|s| s.unanswered.listed()) else { return };
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.unanswered = Link::NONE;
        }
        match self.slots.get_mut(link.prev as usize) {
            Some(prev) => {
                if prev.unanswered.listed().is_some() {
                    prev.unanswered.next = link.next;
                }
            }
            None => self.unanswered_head = link.next,
        }
        match self.slots.get_mut(link.next as usize) {
            Some(next) => {
                if next.unanswered.listed().is_some() {
                    next.unanswered.prev = link.prev;
                }
            }
            None => self.unanswered_tail = link.prev,
        }
        self.unanswered_len -= 1;
    }

    /// Appends a new flow to the unanswered list.
    fn link_unanswered(&mut self, id: FlowId) {
        let tail = self.unanswered_tail;
        match self.slots.get_mut(tail as usize).filter(|s| s.unanswered.listed().is_some()) {
            Some(t) => t.unanswered.next = id,
            None => self.unanswered_head = id,
        }
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.unanswered = Link { prev: tail, next: NO_FLOW };
        }
        self.unanswered_tail = id;
        self.unanswered_len += 1;
    }

    /// Counts a flow in (or, with `add` false, out of) its source's or mapping's share.
    fn count_share(&mut self, flow: &Flow, add: bool) {
        fn step<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32, ahash::RandomState>, k: K, add: bool) {
            if add {
                *map.entry(k).or_insert(0) += 1;
            } else if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
        let original = &flow.keys[ORIGINAL];
        match (original.side, flow.mapping.get()) {
            (Side::Inside, _) if add => {
                self.per_source.try_take(original.src, None);
            }
            (Side::Inside, _) => self.per_source.give_back(&original.src),
            (Side::Outside, Some(m)) => step(&mut self.inbound_per_mapping, m, add),
            (Side::Outside, None) => {}
        }
    }

    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<(FlowId, usize)> {
        let slots = &self.slots;
        self.index.get(key, |e| key_of(slots, e)).map(|e| (e.id(), e.dir()))
    }

    #[inline]
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slots.get(id as usize).and_then(|s| s.flow.as_ref())
    }
    #[inline]
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.slots.get_mut(id as usize).and_then(|s| s.flow.as_mut())
    }

    /// The TCP window state of flow `id`; `None` for a flow that is not TCP (or not there).
    #[inline]
    pub fn windows(&self, id: FlowId) -> Option<&tcp_window::TcpWindows> {
        let i = self.get(id)?.windows.index()?;
        self.windows.entries.get(i)
    }

    #[inline]
    pub fn windows_mut(&mut self, id: FlowId) -> Option<&mut tcp_window::TcpWindows> {
        self.get_mut_with_windows(id).and_then(|(_, w)| w)
    }

    /// Flow `id` and, for a TCP flow, its window state, both to change (one indexed load
    /// more than `get_mut`, for TCP only).
    #[inline]
    pub fn get_mut_with_windows(&mut self, id: FlowId) -> Option<(&mut Flow, Option<&mut tcp_window::TcpWindows>)> {
        let flow = self.slots.get_mut(id as usize)?.flow.as_mut()?;
        let windows = flow.windows.index().and_then(|i| self.windows.entries.get_mut(i));
        Some((flow, windows))
    }

    /// Entries of the TCP window side table in use: one per TCP flow in the table.
    pub fn windows_entries(&self) -> usize {
        self.windows.live()
    }

    /// Room for `n` more flows without growing the index on the way (a handoff's import),
    /// up to the table's limit.
    pub fn reserve(&mut self, n: usize) {
        let n = n.min(self.max_flows.saturating_sub(self.len));
        self.index.reserve(2 * n);
        self.slots.reserve(n.saturating_sub(self.free.len()));
    }

    /// Whether the flow is still in the list of flows never answered.
    pub fn is_unanswered(&self, id: FlowId) -> bool {
        self.slots.get(id as usize).is_some_and(|s| s.flow.is_some() && s.unanswered.listed().is_some())
    }

    /// Inserts a flow whose keys may already be taken (one taken from another process or
    /// node): refused then, rather than shadowing the flow that holds them.
    pub fn insert_new(&mut self, flow: Flow) -> Result<FlowId, ConntrackError> {
        if flow.keys.iter().any(|k| self.lookup(k).is_some()) || flow.keys[ORIGINAL] == flow.keys[REPLY] {
            return Err(ConntrackError::KeyTaken);
        }
        self.insert(flow)
    }

    pub fn insert(&mut self, mut flow: Flow) -> Result<FlowId, ConntrackError> {
        if self.len >= self.max_flows {
            return Err(ConntrackError::TableFull(self.max_flows));
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                // An index entry keeps the id in 31 bits.
                let id = FlowId::try_from(self.slots.len())
                    .ok()
                    .filter(|&id| id <= IndexEntry::MAX_ID)
                    .ok_or(ConntrackError::TableFull(self.max_flows))?;
                self.slots.push(Slot { flow: None, wheel: WheelPos::default(), unanswered: Link::NONE });
                id
            }
        };
        if self.slots.get(id as usize).is_none() {
            return Err(ConntrackError::TableFull(self.max_flows));
        }
        // Only a TCP flow takes a window entry (never more entries than flows, so never
        // refused in practice); a handle the flow came with, from a copy of some table's
        // flow, means nothing here.
        flow.windows = TcpWindowsRef::NONE;
        if flow.keys[ORIGINAL].proto == PROTO_TCP {
            let Some(windows) = self.windows.alloc() else {
                self.free.push(id);
                return Err(ConntrackError::TableFull(self.max_flows));
            };
            flow.windows = windows;
        }
        let rewrites = rewrites_of(&flow.keys);
        flow.deltas = [ORIGINAL, REPLY].map(|d| RewriteDeltas::of(&flow.keys[d], &rewrites[d]));
        self.count_share(&flow, true);
        let sec = flow.expires_ms() / 1000;
        let keys = flow.keys;
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.flow = Some(flow);
        }
        // Filed after the flow: the index reads keys from the flows it points to.
        let slots = &self.slots;
        for d in [ORIGINAL, REPLY] {
            self.index.insert(&keys[d], IndexEntry::new(id, d), |e| key_of(slots, e));
        }
        self.len += 1;
        self.file(id, sec);
        self.link_unanswered(id);
        Ok(id)
    }

    /// Files a flow in the slot of second `sec` (or, when that has passed, the next slot
    /// to be processed) and records where.
    fn file(&mut self, id: FlowId, sec: u64) {
        let sec = u32::try_from(sec.max(self.wheel_sec)).unwrap_or(u32::MAX);
        let slot = wheel_slot(u64::from(sec));
        let entries = &mut self.wheel[usize::from(slot)];
        let index = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        entries.push(id);
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.wheel = WheelPos { sec, index };
        }
    }

    /// Takes a flow's entry out of its wheel slot (the slot's last entry takes its place).
    fn unfile(&mut self, id: FlowId) {
        let Some(pos) = self.slots.get(id as usize).map(|s| s.wheel) else { return };
        let entries = &mut self.wheel[usize::from(pos.slot())];
        let at = pos.index as usize;
        if entries.get(at) != Some(&id) {
            return;
        }
        entries.swap_remove(at);
        if let Some(&moved) = entries.get(at) {
            if let Some(s) = self.slots.get_mut(moved as usize) {
                s.wheel.index = pos.index;
            }
        }
    }

    /// A flow's deadline moved: when it moved to an earlier second than the one it is
    /// filed for, file it there, so that it goes at its deadline (a later deadline needs
    /// nothing: the wheel files it again when the old second comes round).
    pub fn reschedule(&mut self, id: FlowId) {
        let Some(slot) = self.slots.get(id as usize) else { return };
        let Some(flow) = slot.flow.as_ref() else { return };
        let sec = (flow.expires_ms() / 1000).max(self.wheel_sec);
        if sec < u64::from(slot.wheel.sec) {
            self.unfile(id);
            self.file(id, sec);
        }
    }

    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        self.slots.get(id as usize)?.flow.as_ref()?;
        self.unfile(id);
        self.take(id)
    }

    /// Removes a flow whose wheel entry is already out of the wheel.
    fn take(&mut self, id: FlowId) -> Option<Flow> {
        self.answered(id);
        let slot = self.slots.get_mut(id as usize)?;
        let mut flow = slot.flow.take()?;
        self.count_share(&flow, false);
        // Every way out of the table comes through here: its window entry goes with it.
        self.windows.release(flow.windows);
        flow.windows = TcpWindowsRef::NONE;
        for d in [ORIGINAL, REPLY] {
            self.index.remove(&flow.keys[d], IndexEntry::new(id, d));
        }
        self.free.push(id);
        self.len -= 1;
        Some(flow)
    }

    /// Expires every flow whose deadline is at or before `now_ms`; calls `on_expired` for
    /// each. Work is proportional to the wheel slots passed and the flows filed in them.
    pub fn expire(&mut self, now_ms: u64, mut on_expired: impl FnMut(FlowId, Flow)) {
        let now_sec = now_ms / 1000;
        // Catch up at most one full turn: every filed entry is seen at least once.
        if now_sec > self.wheel_sec + WHEEL_SECS {
            self.wheel_sec = now_sec - WHEEL_SECS;
        }
        while self.wheel_sec <= now_sec {
            let idx = usize::from(wheel_slot(self.wheel_sec));
            let entries = std::mem::take(&mut self.wheel[idx]);
            self.wheel_sec += 1;
            for id in entries {
                let Some(flow) = self.slots.get(id as usize).and_then(|s| s.flow.as_ref()) else { continue };
                if flow.expires_ms() <= now_ms {
                    if let Some(f) = self.take(id) {
                        on_expired(id, f);
                    }
                } else {
                    // Never into the slot being processed now: that second is past.
                    let sec = flow.expires_ms() / 1000;
                    self.file(id, sec);
                }
            }
            // Keep the emptied slot's allocation from growing without bound.
            if self.wheel[idx].capacity() > 1024 && self.wheel[idx].is_empty() {
                self.wheel[idx].shrink_to(64);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> {
        // Ids were made from these indexes: each fits a FlowId.
        self.slots.iter().enumerate().filter_map(|(i, s)| Some((FlowId::try_from(i).ok()?, s.flow.as_ref()?)))
    }
}

impl Drop for FlowTable {
    /// Its flows stop counting towards their sources on every worker.
    fn drop(&mut self) {
        if Arc::strong_count(&self.per_source) > 1 {
            for slot in &self.slots {
                if let Some(f) = slot.flow.as_ref().filter(|f| f.keys[ORIGINAL].side == Side::Inside) {
                    self.per_source.give_back(&f.keys[ORIGINAL].src);
                }
            }
        }
    }
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(side: Side, sp: u16) -> FlowKey {
        FlowKey {
            side,
            proto: PROTO_UDP,
            src: Ipv4Addr::new(10, 0, 0, 1),
            src_port: sp,
            dst: Ipv4Addr::new(1, 1, 1, 1),
            dst_port: 53,
        }
    }

    fn flow(sp: u16, now: u64, t: &Timeouts) -> Flow {
        flow_keyed([key(Side::Inside, sp), key(Side::Outside, sp)], now, t)
    }

    /// A UDP flow from `src:sp` to `dst:53`, leaving as it came (no translation).
    pub(crate) fn flow_between(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, t: &Timeouts) -> Flow {
        let original = FlowKey { side: Side::Inside, proto: PROTO_UDP, src, src_port: sp, dst, dst_port: 53 };
        let reply = FlowKey { side: Side::Outside, proto: PROTO_UDP, src: dst, src_port: 53, dst: src, dst_port: sp };
        flow_keyed([original, reply], 0, t)
    }

    fn flow_keyed(keys: [FlowKey; 2], now: u64, t: &Timeouts) -> Flow {
        let mut f = Flow {
            keys,
            deltas: Default::default(),
            egress: [Egress::Outside, Egress::Inside(0)],
            state: FlowState::initial(PROTO_UDP),
            tcp_flags: [0; 2],
            packets: [0; 2],
            bytes: [0; 2],
            created: Ms40::new(now),
            last_seen: Ms40::new(now),
            expires_after_ms: 0,
            mapping: MappingRef::NONE,
            policy_generation: 0,
            reported: Reported::default(),
            windows: TcpWindowsRef::NONE,
            marks: FlowMarks::default(),
        };
        f.refresh(now, t);
        f
    }

    /// A TCP flow from 10.0.0.1:`sp` to 1.1.1.1:80, leaving as it came.
    fn tcp_flow(sp: u16, now: u64, t: &Timeouts) -> Flow {
        let [mut o, mut r] = [key(Side::Inside, sp), key(Side::Outside, sp)];
        for k in [&mut o, &mut r] {
            k.proto = PROTO_TCP;
            k.dst_port = 80;
        }
        let mut f = flow_keyed([o, r], now, t);
        f.state = FlowState::initial(PROTO_TCP);
        f.refresh(now, t);
        f
    }

    /// An ICMP echo flow with identifier `id`.
    fn icmp_flow(id: u16, now: u64, t: &Timeouts) -> Flow {
        let [mut o, mut r] = [key(Side::Inside, id), key(Side::Outside, id)];
        for k in [&mut o, &mut r] {
            k.proto = PROTO_ICMP;
            k.dst_port = id;
        }
        let mut f = flow_keyed([o, r], now, t);
        f.state = FlowState::initial(PROTO_ICMP);
        f.refresh(now, t);
        f
    }

    /// Some state to tell entries apart: direction 0 initialised from a SYN at `seq`.
    fn windows_at(seq: u32) -> tcp_window::TcpWindows {
        let seg = tcp_window::Segment { seq, ack: 0, flags: tcp::SYN, window: 1000, payload_len: 0, options: &[] };
        tcp_window::TcpWindows::from_syn(&seg)
    }

    #[test]
    fn window_entries_only_for_tcp_flows() {
        let t = Timeouts::default();
        let mut table = FlowTable::new(100, 0);
        let tcp: Vec<FlowId> = (1..=5).map(|p| table.insert(tcp_flow(p, 0, &t)).unwrap()).collect();
        let udp: Vec<FlowId> = (1..=5).map(|p| table.insert(flow(p, 0, &t)).unwrap()).collect();
        let icmp: Vec<FlowId> = (1..=5).map(|p| table.insert(icmp_flow(p, 0, &t)).unwrap()).collect();
        assert_eq!((table.len(), table.windows_entries()), (15, 5), "one entry per TCP flow, none for the others");
        for &id in udp.iter().chain(&icmp) {
            assert_eq!(table.get(id).unwrap().windows, TcpWindowsRef::NONE);
            assert!(table.windows(id).is_none() && table.windows_mut(id).is_none());
            assert!(table.get_mut_with_windows(id).unwrap().1.is_none());
        }
        // Each TCP flow has an entry of its own, fresh (nothing tracked) until set.
        for (port, &id) in (1u16..).zip(&tcp) {
            assert_eq!(table.windows(id), Some(&tcp_window::TcpWindows::default()));
            *table.windows_mut(id).unwrap() = windows_at(u32::from(port) * 1000);
        }
        for (port, &id) in (1u16..).zip(&tcp) {
            let (f, w) = table.get_mut_with_windows(id).unwrap();
            assert_eq!((f.keys[ORIGINAL].src_port, w.copied()), (port, Some(windows_at(u32::from(port) * 1000))));
        }
        assert!(table.windows(FlowId::MAX).is_none());
        // A flow that comes with a handle (a copy of another table's flow) gets its own.
        let mut copy = tcp_flow(99, 0, &t);
        copy.windows = table.get(tcp[0]).unwrap().windows;
        let id = table.insert(copy).unwrap();
        assert_ne!(table.get(id).unwrap().windows, table.get(tcp[0]).unwrap().windows);
        assert_eq!(table.windows(tcp[0]), Some(&windows_at(1000)), "the other flow's state is untouched");
        assert_eq!(table.windows_entries(), 6);
    }

    #[test]
    fn window_entries_freed_and_reused_on_every_removal() {
        let t = Timeouts { tcp_transitory: 10, ..Timeouts::default() };
        let mut table = FlowTable::new(64, 0);
        for round in 0..4u64 {
            let now = round * 100_000;
            let ids: Vec<FlowId> = (0..64).map(|p| table.insert(tcp_flow(p, now, &t)).unwrap()).collect();
            assert_eq!(table.windows_entries(), 64);
            for &id in &ids {
                *table.windows_mut(id).unwrap() = windows_at(id);
            }
            // Full: no entry for a flow that was refused.
            assert_eq!(table.insert(tcp_flow(999, now, &t)), Err(ConntrackError::TableFull(64)));
            assert_eq!(table.windows_entries(), 64);
            // Removal (early drop, a revoked or replaced flow, a delete from the peer): the
            // entry goes with it, and the flow handed back holds no handle.
            for &id in &ids[..16] {
                assert_eq!(table.remove(id).unwrap().windows, TcpWindowsRef::NONE);
            }
            assert_eq!(table.windows_entries(), 48);
            // Early drop takes the oldest flow never answered.
            for _ in 0..16 {
                let (id, _) = table.oldest_unanswered().unwrap();
                table.remove(id).unwrap();
            }
            assert_eq!(table.windows_entries(), 32);
            // The rest of the flows (set at their deadlines) survive the others' and keep
            // their own state.
            for &id in &ids[32..] {
                assert_eq!(table.windows(id), Some(&windows_at(id)));
            }
            // Expiry.
            let mut gone = 0;
            table.expire(now + 10_000, |_, f| {
                assert_eq!(f.windows, TcpWindowsRef::NONE);
                gone += 1;
            });
            assert_eq!((gone, table.len(), table.windows_entries()), (32, 0, 0));
            // Never more entries than the table holds flows, however often it refills.
            assert_eq!(table.windows.entries.len(), 64, "round {round}: freed entries are reused");
        }
        // Refused as a duplicate (a handoff import that conflicts): no entry taken.
        let id = table.insert_new(tcp_flow(1, 500_000, &t)).unwrap();
        assert_eq!(table.insert_new(tcp_flow(1, 500_000, &t)), Err(ConntrackError::KeyTaken));
        assert_eq!(table.windows_entries(), 1);
        // A reused entry starts fresh, not with its last flow's state.
        assert_eq!(table.windows(id), Some(&tcp_window::TcpWindows::default()));
        // Mixed traffic: UDP and ICMP flows reuse slots of TCP flows without entries.
        table.remove(id);
        for p in 0..32 {
            table.insert(flow(p, 500_000, &t)).unwrap();
            table.insert(icmp_flow(p, 500_000, &t)).unwrap();
        }
        assert_eq!((table.len(), table.windows_entries()), (64, 0));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_flow_keeps_its_size() {
        // What a million flows cost (examples/flow_table.rs): no TCP window state in it,
        // the small facts in one byte, times in 5 bytes, of the flow log's copy of the
        // counters only the low bits.
        assert_eq!(std::mem::size_of::<Flow>(), 128);
    }

    #[test]
    fn compact_fields_read_back_what_was_written() {
        let t = Timeouts { udp: 7 * 86_400, ..Timeouts::default() };
        let mut f = flow(1, 5_000_000_123, &t);
        assert_eq!((f.last_seen_ms(), f.expires_ms()), (5_000_000_123, 5_000_000_123 + 7 * 86_400_000));
        f.set_expires_ms(5_000_000_200);
        assert_eq!(
            (f.last_seen_ms(), f.expires_ms()),
            (5_000_000_123, 5_000_000_200),
            "moving the deadline keeps the last packet"
        );
        f.set_expires_ms(0);
        assert_eq!(f.expires_ms(), f.last_seen_ms(), "a deadline before the last packet is the last packet");
        f.set_expires_ms(u64::MAX);
        assert_eq!(f.expires_ms(), f.last_seen_ms() + u64::from(u32::MAX), "at most 49 days after the last packet");
        for id in [0, 1, 7, u32::MAX - 1] {
            assert_eq!(MappingRef::to(id).get(), Some(id));
        }
        assert_eq!(MappingRef::NONE.get(), None);
        use crate::nat::policy::EgressDecision::*;
        for shadow in [None, Some(Allow), Some(Deny), Some(Reject)] {
            for bits in 0..16u8 {
                let (fin, revoked, queued) = ([bits & 1 != 0, bits & 2 != 0], bits & 4 != 0, bits & 8 != 0);
                let mut m = FlowMarks::default();
                // Set over another answer: the shadow's two bits are replaced, not or-ed.
                m.set_shadow(Some(Reject));
                m.set_fin_seen(fin);
                m.set_revoked(revoked);
                m.set_close_check_queued(queued);
                m.set_shadow(shadow);
                assert_eq!(
                    (m.fin_seen(), m.revoked(), m.close_check_queued(), m.shadow()),
                    (fin, revoked, queued, shadow)
                );
                m.set_fin_seen([false; 2]);
                m.set_revoked(false);
                m.set_close_check_queued(false);
                m.set_shadow(None);
                assert_eq!(m, FlowMarks::default(), "every mark clears");
            }
        }
        for (at, closed) in [(0, false), (1, true), (1 << 39, false), (Ms40::MAX, true)] {
            let r = Reported::new([1, 2], [3, 4], at, closed);
            assert_eq!((r.at_ms(), r.closed()), (at, closed));
        }
        let r = Reported::new([1, 2], [3, 4], u64::MAX >> 1, true);
        assert_eq!((r.at_ms(), r.closed()), (Ms40::MAX, true), "a later time is kept as the latest");
        for ms in [0, 1, 0xff, 0x100, 0x01_0203_0405, Ms40::MAX] {
            assert_eq!(Ms40::new(ms).get(), ms);
        }
        assert_eq!((Ms40::new(1 << 40).get(), Ms40::new(u64::MAX).get()), (Ms40::MAX, Ms40::MAX), "saturates");
    }

    #[test]
    fn the_flow_logs_copy_of_the_counters_counts_across_its_wrap() {
        let t = Timeouts::default();
        let mut f = flow(1, 1000, &t);
        // Totals whose low bits wrapped since the last record (2^32 + 5 packets after
        // 2^32 - 5; 2^40 + 14 bytes after 2^40 - 76), and totals far past both ranges.
        f.packets = [4_294_967_301, 5_000_000_000_123];
        f.bytes = [1_099_511_627_790, 3_298_534_883_333];
        f.set_reported([4_294_967_291, 5_000_000_000_000], [1_099_511_627_700, 3_298_534_883_228], 2000, true);
        assert_eq!((f.unreported_packets(), f.unreported_bytes()), ([10, 123], [90, 105]));
        assert_eq!(f.reported_packets(), [4_294_967_291, 5_000_000_000_000], "the full values, as handed over");
        assert_eq!(f.reported_bytes(), [1_099_511_627_700, 3_298_534_883_228]);
        assert_eq!((f.reported.at_ms(), f.reported.closed()), (2000, true));
        f.mark_reported(3000, false);
        assert_eq!((f.unreported_packets(), f.unreported_bytes()), ([0, 0], [0, 0]));
        assert_eq!(f.reported_bytes(), [1_099_511_627_790, 3_298_534_883_333]);

        // Half of each range is where the flow log must report it.
        let mut f = flow(1, 1000, &t);
        f.packets[ORIGINAL] = 2_147_483_646;
        assert!(!f.count(ORIGINAL, 1, 60), "2^31 - 1 packets unreported");
        assert!(f.count(ORIGINAL, 1, 60), "2^31");
        assert!(!f.report_due(REPLY));
        f.skip_unreported();
        assert_eq!((f.unreported_packets(), f.reported_packets()), ([0, 0], [2_147_483_648, 0]));
        assert_eq!(f.reported.at_ms(), 0, "moved up without a record: still nothing reported");
        f.bytes[REPLY] = 549_755_813_000;
        assert!(!f.count(REPLY, 1, 887), "2^39 - 1 bytes unreported");
        assert!(f.count(REPLY, 1, 1), "2^39");
        assert_eq!(f.unreported_bytes(), [0, 549_755_813_888]);

        // More behind than a natgw keeping the copy sends (one that kept 64 bits handed
        // it over): clamped to three quarters of the range, due at the next packet.
        let mut f = flow(1, 1000, &t);
        f.packets = [10_000_000_000, 3];
        f.bytes = [5_000_000_000_000, 300];
        f.set_reported([0, 3], [0, 0], 5, false);
        assert_eq!((f.unreported_packets(), f.unreported_bytes()), ([3_221_225_472, 0], [824_633_720_832, 300]));
        assert_eq!(f.reported_packets(), [6_778_774_528, 3]);
        assert_eq!(f.reported_bytes(), [4_175_366_279_168, 0]);
        assert!(f.report_due(ORIGINAL) && !f.report_due(REPLY));
        // Up to there a handed-over snapshot is kept exactly.
        f.set_reported([6_778_774_529, 3], [4_175_366_279_169, 0], 5, false);
        assert_eq!((f.unreported_packets(), f.unreported_bytes()), ([3_221_225_471, 0], [824_633_720_831, 300]));
    }

    #[test]
    fn tcp_handshake_and_close() {
        let mut fin = [false; 2];
        let t = tcp_transition(TcpState::SynSent, REPLY, tcp::SYN | tcp::ACK, &mut fin);
        assert_eq!(t.next, TcpState::SynReceived);
        let t = tcp_transition(t.next, ORIGINAL, tcp::ACK, &mut fin);
        assert_eq!(t, TcpTransition { next: TcpState::Established, became_established: true });
        let t = tcp_transition(t.next, ORIGINAL, tcp::ACK, &mut fin);
        assert!(!t.became_established);
        let t = tcp_transition(t.next, ORIGINAL, tcp::FIN | tcp::ACK, &mut fin);
        assert_eq!(t.next, TcpState::FinWait);
        let t = tcp_transition(t.next, REPLY, tcp::FIN | tcp::ACK, &mut fin);
        assert_eq!(t.next, TcpState::TimeWait);
        let t = tcp_transition(TcpState::Established, REPLY, tcp::RST, &mut fin);
        assert_eq!(t.next, TcpState::Closed);
    }

    #[test]
    fn table_limit_refuses_new_flows_only() {
        let t = Timeouts::default();
        let mut table = FlowTable::new(2, 0);
        let a = table.insert(flow(1, 0, &t)).unwrap();
        table.insert(flow(2, 0, &t)).unwrap();
        assert_eq!(table.insert(flow(3, 0, &t)), Err(ConntrackError::TableFull(2)));
        assert_eq!(table.lookup(&key(Side::Inside, 1)), Some((a, ORIGINAL)));
        assert_eq!(table.lookup(&key(Side::Outside, 1)), Some((a, REPLY)));
    }

    #[test]
    fn unanswered_flows_in_creation_order_and_shares_counted_once() {
        let t = Timeouts::default();
        let mut table = FlowTable::new(10, 0);
        let ids: Vec<FlowId> = (1..=4).map(|p| table.insert(flow(p, 0, &t)).unwrap()).collect();
        assert_eq!((table.unanswered(), table.flows_of_source(Ipv4Addr::new(10, 0, 0, 1))), (4, 4));
        table.answered(ids[1]);
        table.answered(ids[1]);
        assert_eq!(table.unanswered(), 3, "answering twice counts once");
        assert_eq!(table.oldest_unanswered().map(|x| x.0), Some(ids[0]));
        table.remove(ids[0]);
        assert_eq!(table.oldest_unanswered().map(|x| x.0), Some(ids[2]), "skips the answered one");
        table.remove(ids[3]);
        table.remove(ids[2]);
        assert_eq!((table.unanswered(), table.oldest_unanswered().map(|x| x.0)), (0, None));
        // A slot reused by a new flow starts unanswered at the tail.
        let again = table.insert(flow(9, 0, &t)).unwrap();
        assert_eq!(table.oldest_unanswered().map(|x| x.0), Some(again));
        assert_eq!(table.flows_of_source(Ipv4Addr::new(10, 0, 0, 1)), 2);
        table.remove(again);
        table.remove(ids[1]);
        assert_eq!(table.flows_of_source(Ipv4Addr::new(10, 0, 0, 1)), 0);
        assert_eq!(table.per_source.keys(), 0, "no entry left for a source without flows");
    }

    #[test]
    fn expiry_follows_refreshed_deadline() {
        let t = Timeouts { udp: 30, ..Timeouts::default() };
        let mut table = FlowTable::new(10, 0);
        let id = table.insert(flow(1, 0, &t)).unwrap();
        let mut gone = Vec::new();
        table.expire(20_000, |id, _| gone.push(id));
        assert!(gone.is_empty());
        table.get_mut(id).unwrap().refresh(20_000, &t); // now expires at 50 s
        table.expire(31_000, |id, _| gone.push(id));
        assert!(gone.is_empty(), "refreshed flow must survive its first deadline");
        table.expire(50_000, |id, _| gone.push(id));
        assert_eq!(gone, vec![id]);
        assert!(table.is_empty());
        assert_eq!(table.lookup(&key(Side::Inside, 1)), None);
    }

    #[test]
    fn expiry_longer_than_wheel() {
        let t = Timeouts { udp: 10_000, ..Timeouts::default() };
        let mut table = FlowTable::new(10, 0);
        table.insert(flow(1, 0, &t)).unwrap();
        let mut n = 0;
        for s in (0..10_000u64).step_by(7) {
            table.expire(s * 1000, |_, _| n += 1);
        }
        assert_eq!(n, 0);
        table.expire(10_001_000, |_, _| n += 1);
        assert_eq!(n, 1);
    }
}
