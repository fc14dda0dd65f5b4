//! A worker's flows as bytes, for handing them to another process (`natgw upgrade`) and,
//! later, to a standby node: every flow with its keys, rewrites, state, counters, what the
//! flow log has reported, its TCP window state and the identity of its mapping. Mappings,
//! port ownership, per-source counts and the unanswered list are rebuilt from the flows
//! (each flow holds one reference on its mapping), so nothing can disagree with them.
//!
//! Format (version 1, network byte order), one section per worker:
//!
//! ```text
//! header (32 bytes): magic "NGWF" | version u16 | record length u16 | worker u16 |
//!                    workers u16 | records u32 | exporter's now_ms u64 | fingerprint u64
//! records:           `RECORD_LEN` bytes each, laid out by `FlowRecord::emit`
//! ```
//!
//! Times travel relative to the exporter's clock (ages and time left), so the importer
//! needs no common clock. The fingerprint (`NatConfig::state_fingerprint`) covers what
//! the records' meaning depends on: the worker count, the links, the external addresses
//! and the pools. An importer with another fingerprint refuses the whole section.
//!
//! Hostile input is normal input: a record that does not parse, or whose flow would send
//! anything out of the outside from an address other than its own mapping's, or whose
//! mapping is not one this worker may hold, or which collides with a flow or mapping
//! already here, is refused and counted; an expiry is capped at its state's timeout.

use std::net::Ipv4Addr;

use thiserror::Error;

use natgw_wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use super::flow_records::RecordCheck;
use super::Translator;
use crate::conntrack::tcp_window::{TcpWindow, TcpWindows, WINDOW_STATE_LEN};
use crate::conntrack::{
    Egress, Endpoint, Flow, FlowId, FlowKey, FlowMarks, FlowState, MappingRef, Ms40, Reported, Rewrite, Side, TcpState,
    TcpWindowsRef, ORIGINAL, REPLY,
};
use crate::counters::Counter;

pub const MAGIC: [u8; 4] = *b"NGWF";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const RECORD_LEN: usize = 210;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandoffError {
    #[error("not natgw flow state (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("flow state format {found} (records of {record_len} bytes) is not one this natgw reads (format {FORMAT_VERSION})")]
    Version { found: u16, record_len: u16 },
    #[error("flow state truncated: {have} bytes for {records} records")]
    Truncated { have: usize, records: u32 },
    #[error("flow state of worker {found} of {found_workers} given to worker {worker} of {workers}")]
    Worker { found: u16, found_workers: u16, worker: usize, workers: usize },
    #[error("importing the flow state failed on its thread")]
    Panicked,
    #[error("flow state of another configuration (fingerprint {found:016x}, this gateway's {expected:016x}): workers, links, external addresses, pools and the natgw version's port steering must match")]
    Fingerprint { found: u64, expected: u64 },
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: u64,
    /// Records that did not parse or describe a flow natgw would never build.
    pub invalid: u64,
    /// Records whose keys or external endpoint another flow or mapping holds already.
    pub conflicting: u64,
    /// Records the table had no room for.
    pub no_room: u64,
}

impl ImportReport {
    /// Counts one record's import.
    pub(super) fn count(&mut self, outcome: Result<(), ImportRefusal>) {
        match outcome {
            Ok(()) => self.imported += 1,
            Err(ImportRefusal::Invalid) => self.invalid += 1,
            Err(ImportRefusal::Conflict) => self.conflicting += 1,
            Err(ImportRefusal::NoRoom) => self.no_room += 1,
        }
    }

    pub fn refused(&self) -> u64 {
        self.invalid + self.conflicting + self.no_room
    }
}

/// The header of one worker's section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeader {
    pub worker: u16,
    pub workers: u16,
    pub records: u32,
    pub now_ms: u64,
    pub fingerprint: u64,
}

impl SectionHeader {
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        // RECORD_LEN is a constant far below u16::MAX.
        out.extend_from_slice(&u16::try_from(RECORD_LEN).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&self.worker.to_be_bytes());
        out.extend_from_slice(&self.workers.to_be_bytes());
        out.extend_from_slice(&self.records.to_be_bytes());
        out.extend_from_slice(&self.now_ms.to_be_bytes());
        out.extend_from_slice(&self.fingerprint.to_be_bytes());
    }

    /// The header and the records after it (exactly `records` of them: more is refused
    /// as well as fewer, so that two sections never run together unnoticed).
    pub fn parse(b: &[u8]) -> Result<(SectionHeader, &[u8]), HandoffError> {
        let Some(h) = b.get(..HEADER_LEN) else { return Err(HandoffError::Truncated { have: b.len(), records: 0 }) };
        let mut r = Reader(h);
        let magic = [r.u8(), r.u8(), r.u8(), r.u8()];
        if magic != MAGIC {
            return Err(HandoffError::BadMagic(magic));
        }
        let (version, record_len) = (r.u16(), r.u16());
        if version != FORMAT_VERSION || usize::from(record_len) != RECORD_LEN {
            return Err(HandoffError::Version { found: version, record_len });
        }
        let header = SectionHeader {
            worker: r.u16(),
            workers: r.u16(),
            records: r.u32(),
            now_ms: r.u64(),
            fingerprint: r.u64(),
        };
        let body = &b[HEADER_LEN..];
        if body.len() as u64 != u64::from(header.records) * RECORD_LEN as u64 {
            return Err(HandoffError::Truncated { have: b.len(), records: header.records });
        }
        Ok((header, body))
    }
}

/// Reads big-endian fields from a slice known to be long enough (zeros past its end).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut v = [0u8; N];
        if let Some(b) = self.0.get(..N) {
            v.copy_from_slice(b);
            self.0 = &self.0[N..];
        }
        v
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.take::<4>())
    }
    fn endpoint(&mut self) -> Endpoint {
        Endpoint { addr: self.addr(), port: self.u16() }
    }
}

struct Writer<'a> {
    buf: &'a mut [u8; RECORD_LEN],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }
    fn endpoint(&mut self, e: Endpoint) {
        self.put(&e.addr.octets());
        self.put(&e.port.to_be_bytes());
    }
}

const F_ORIGINAL_OUTSIDE: u8 = 0x01;
const F_REPLY_OUTSIDE: u8 = 0x02;
const F_REVOKED: u8 = 0x04;
const F_ANSWERED: u8 = 0x08;
const F_REPORTED_CLOSED: u8 = 0x20;
const F_FIN_ORIGINAL: u8 = 0x40;
const F_FIN_REPLY: u8 = 0x80;
/// Flag 0x10 is reserved (set: the record is refused).
const F_KNOWN: u8 =
    F_ORIGINAL_OUTSIDE | F_REPLY_OUTSIDE | F_REVOKED | F_ANSWERED | F_REPORTED_CLOSED | F_FIN_ORIGINAL | F_FIN_REPLY;
const EGRESS_OUTSIDE: u8 = 0xff;
/// `reported_ago` when nothing has been reported.
const NOTHING_REPORTED: u64 = u64::MAX;

fn state_code(s: FlowState) -> u8 {
    match s {
        FlowState::Tcp(TcpState::SynSent) => 0,
        FlowState::Tcp(TcpState::SynReceived) => 1,
        FlowState::Tcp(TcpState::Established) => 2,
        FlowState::Tcp(TcpState::FinWait) => 3,
        FlowState::Tcp(TcpState::TimeWait) => 4,
        FlowState::Tcp(TcpState::Closed) => 5,
        FlowState::Udp { replied: false } => 0x10,
        FlowState::Udp { replied: true } => 0x11,
        FlowState::Icmp => 0x20,
    }
}

fn state_of(proto: u8, code: u8) -> Option<FlowState> {
    use TcpState::*;
    Some(match (proto, code) {
        (PROTO_TCP, 0) => FlowState::Tcp(SynSent),
        (PROTO_TCP, 1) => FlowState::Tcp(SynReceived),
        (PROTO_TCP, 2) => FlowState::Tcp(Established),
        (PROTO_TCP, 3) => FlowState::Tcp(FinWait),
        (PROTO_TCP, 4) => FlowState::Tcp(TimeWait),
        (PROTO_TCP, 5) => FlowState::Tcp(Closed),
        (PROTO_UDP, 0x10) => FlowState::Udp { replied: false },
        (PROTO_UDP, 0x11) => FlowState::Udp { replied: true },
        (PROTO_ICMP, 0x20) => FlowState::Icmp,
        _ => return None,
    })
}

fn egress_code(e: Egress) -> u8 {
    match e {
        Egress::Outside => EGRESS_OUTSIDE,
        Egress::Inside(i) => i,
    }
}

/// The mapping a flow holds, by identity (the importer finds or makes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingIdentity {
    pub pool: u16,
    pub inside: Endpoint,
    pub inside_if: u8,
    pub external: Endpoint,
}

/// One flow as it travels: `Flow` with times relative to the exporter's `now`, and its
/// mapping by identity instead of by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub keys: [FlowKey; 2],
    pub rewrite: [Rewrite; 2],
    pub egress: [Egress; 2],
    pub state: FlowState,
    pub fin_seen: [bool; 2],
    pub tcp_flags: [u8; 2],
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub created_ago_ms: u64,
    pub last_seen_ago_ms: u64,
    pub expires_in_ms: u64,
    /// `None`: nothing reported yet.
    pub reported_ago_ms: Option<u64>,
    /// The counters at the flow log's last record, in full (`Flow::reported_packets`),
    /// and whether it was the connection's final one.
    pub reported_packets: [u64; 2],
    pub reported_bytes: [u64; 2],
    pub reported_closed: bool,
    pub revoked: bool,
    pub answered: bool,
    pub policy_generation: u64,
    pub mapping: MappingIdentity,
    /// `None` per direction: not tracked yet, or state this natgw does not read (picked up
    /// from the next segment instead).
    pub windows: [Option<TcpWindow>; 2],
}

impl FlowRecord {
    /// `windows`: the flow's TCP window state (its table keeps it: `FlowTable::windows`),
    /// `None` for a flow that is not TCP.
    pub fn of(
        flow: &Flow,
        windows: Option<&TcpWindows>,
        mapping: MappingIdentity,
        answered: bool,
        now_ms: u64,
    ) -> FlowRecord {
        FlowRecord {
            keys: flow.keys,
            rewrite: crate::conntrack::rewrites_of(&flow.keys),
            egress: flow.egress,
            state: flow.state,
            fin_seen: flow.marks.fin_seen(),
            tcp_flags: flow.tcp_flags,
            packets: flow.packets,
            bytes: flow.bytes,
            created_ago_ms: now_ms.saturating_sub(flow.created_ms()),
            last_seen_ago_ms: now_ms.saturating_sub(flow.last_seen_ms()),
            expires_in_ms: flow.expires_ms().saturating_sub(now_ms),
            reported_ago_ms: (flow.reported.at_ms() != 0).then(|| now_ms.saturating_sub(flow.reported.at_ms())),
            reported_packets: flow.reported_packets(),
            reported_bytes: flow.reported_bytes(),
            reported_closed: flow.reported.closed(),
            revoked: flow.marks.revoked(),
            answered,
            policy_generation: u64::from(flow.policy_generation),
            mapping,
            windows: [ORIGINAL, REPLY].map(|d| windows.map(|w| w.get(d)).filter(TcpWindow::is_initialised)),
        }
    }

    pub fn emit(&self, buf: &mut [u8; RECORD_LEN]) {
        let mut flags = 0;
        for (set, f) in [
            (self.keys[ORIGINAL].side == Side::Outside, F_ORIGINAL_OUTSIDE),
            (self.keys[REPLY].side == Side::Outside, F_REPLY_OUTSIDE),
            (self.revoked, F_REVOKED),
            (self.answered, F_ANSWERED),
            (self.reported_closed, F_REPORTED_CLOSED),
            (self.fin_seen[ORIGINAL], F_FIN_ORIGINAL),
            (self.fin_seen[REPLY], F_FIN_REPLY),
        ] {
            if set {
                flags |= f;
            }
        }
        let mut w = Writer { buf, at: 0 };
        w.put(&[
            self.keys[ORIGINAL].proto,
            flags,
            state_code(self.state),
            egress_code(self.egress[ORIGINAL]),
            egress_code(self.egress[REPLY]),
            self.tcp_flags[ORIGINAL],
            self.tcp_flags[REPLY],
            self.mapping.inside_if,
        ]);
        for k in &self.keys {
            w.endpoint(Endpoint { addr: k.src, port: k.src_port });
            w.endpoint(Endpoint { addr: k.dst, port: k.dst_port });
        }
        for r in &self.rewrite {
            w.endpoint(r.src);
            w.endpoint(r.dst);
        }
        let reported_ago = self.reported_ago_ms.unwrap_or(NOTHING_REPORTED);
        for v in [
            self.packets[0],
            self.packets[1],
            self.bytes[0],
            self.bytes[1],
            self.created_ago_ms,
            self.last_seen_ago_ms,
            self.expires_in_ms,
            reported_ago,
            self.reported_packets[0],
            self.reported_packets[1],
            self.reported_bytes[0],
            self.reported_bytes[1],
            self.policy_generation,
        ] {
            w.put(&v.to_be_bytes());
        }
        w.put(&self.mapping.pool.to_be_bytes());
        w.endpoint(self.mapping.inside);
        w.endpoint(self.mapping.external);
        for win in &self.windows {
            w.put(&win.map_or([0; WINDOW_STATE_LEN], |w| w.to_bytes()));
        }
    }

    /// A record `emit` could have written; `None` for anything else (unknown protocol,
    /// state or flags, counters reported beyond what was counted).
    pub fn parse(b: &[u8]) -> Option<FlowRecord> {
        let b = b.get(..RECORD_LEN)?;
        let mut r = Reader(b);
        let (proto, flags, state, e0, e1, f0, f1, inside_if) =
            (r.u8(), r.u8(), r.u8(), r.u8(), r.u8(), r.u8(), r.u8(), r.u8());
        if flags & !F_KNOWN != 0 {
            return None;
        }
        let state = state_of(proto, state)?;
        let egress = |c: u8| if c == EGRESS_OUTSIDE { Egress::Outside } else { Egress::Inside(c) };
        let side = |outside: bool| if outside { Side::Outside } else { Side::Inside };
        let mut key = |s: Side| {
            let (src, dst) = (r.endpoint(), r.endpoint());
            FlowKey { side: s, proto, src: src.addr, src_port: src.port, dst: dst.addr, dst_port: dst.port }
        };
        let keys = [key(side(flags & F_ORIGINAL_OUTSIDE != 0)), key(side(flags & F_REPLY_OUTSIDE != 0))];
        let mut rewrite = || Rewrite { src: r.endpoint(), dst: r.endpoint() };
        let rewrite = [rewrite(), rewrite()];
        let packets = [r.u64(), r.u64()];
        let bytes = [r.u64(), r.u64()];
        let (created_ago_ms, last_seen_ago_ms, expires_in_ms, reported_ago) = (r.u64(), r.u64(), r.u64(), r.u64());
        let reported_packets = [r.u64(), r.u64()];
        let reported_bytes = [r.u64(), r.u64()];
        let policy_generation = r.u64();
        let mapping = MappingIdentity { pool: r.u16(), inside: r.endpoint(), inside_if, external: r.endpoint() };
        let windows = [TcpWindow::from_bytes(&r.take()), TcpWindow::from_bytes(&r.take())]
            .map(|w| w.filter(TcpWindow::is_initialised));
        if (0..2).any(|d| reported_packets[d] > packets[d] || reported_bytes[d] > bytes[d]) {
            return None;
        }
        Some(FlowRecord {
            keys,
            rewrite,
            egress: [egress(e0), egress(e1)],
            state,
            fin_seen: [flags & F_FIN_ORIGINAL != 0, flags & F_FIN_REPLY != 0],
            tcp_flags: [f0, f1],
            packets,
            bytes,
            created_ago_ms,
            last_seen_ago_ms,
            expires_in_ms,
            reported_ago_ms: (reported_ago != NOTHING_REPORTED).then_some(reported_ago),
            reported_packets,
            reported_bytes,
            reported_closed: flags & F_REPORTED_CLOSED != 0,
            revoked: flags & F_REVOKED != 0,
            answered: flags & F_ANSWERED != 0,
            policy_generation,
            mapping,
            windows,
        })
    }
}

impl Translator {
    /// The record of one flow as of `now_ms` (`None` for a flow without a mapping, which
    /// natgw never builds): what a handoff and the replication stream both send.
    pub(super) fn record_of(&self, id: FlowId, flow: &Flow, now_ms: u64) -> Option<FlowRecord> {
        let m = flow.mapping.get().and_then(|m| self.mappings.get(m))?;
        let identity = MappingIdentity { pool: m.pool, inside: m.inside, inside_if: m.inside_if, external: m.external };
        Some(FlowRecord::of(flow, self.flows.windows(id), identity, !self.flows.is_unanswered(id), now_ms))
    }

    /// Every flow of this worker as one section of flow state (see the module text).
    /// Reads only: the translator goes on unchanged, so a handoff that fails resumes.
    pub fn export_state(&self, now_ms: u64, out: &mut Vec<u8>) {
        let records = u32::try_from(self.flows.len()).unwrap_or(u32::MAX);
        let header = self.section_header(records, now_ms);
        out.reserve(HEADER_LEN + self.flows.len() * RECORD_LEN);
        let start = out.len();
        header.emit(out);
        let mut buf = [0u8; RECORD_LEN];
        let mut written = 0u32;
        for (id, flow) in self.flows.iter() {
            if written == records {
                break;
            }
            let Some(record) = self.record_of(id, flow, now_ms) else { continue };
            record.emit(&mut buf);
            out.extend_from_slice(&buf);
            written += 1;
        }
        // Every flow holds a mapping; should one not, the count says what was written.
        if written != records {
            // The record count follows magic, version, record length, worker and workers.
            let at = start + 12;
            if let Some(n) = out.get_mut(at..at + 4) {
                n.copy_from_slice(&written.to_be_bytes());
            }
        }
    }

    /// Takes over the flows of one section `export_state` wrote (by this worker's
    /// predecessor, or a peer with the same configuration). Flows keep their external
    /// endpoints, state, window tracking, counters and flow-log position; their deadlines
    /// count from `now_ms` as they did from the exporter's now.
    pub fn import_state(&mut self, section: &[u8], now_ms: u64) -> Result<ImportReport, HandoffError> {
        let (header, body) = self.own_section(section)?;
        let mut report = ImportReport::default();
        self.flows.reserve(usize::try_from(header.records).unwrap_or(0));
        let mut records: Vec<FlowRecord> = Vec::with_capacity(body.len() / RECORD_LEN);
        for chunk in body.chunks_exact(RECORD_LEN) {
            match FlowRecord::parse(chunk) {
                Some(r) => records.push(r),
                None => report.invalid += 1,
            }
        }
        // Answered flows first; the unanswered ones oldest first, so that the list of
        // flows to give up under pressure keeps its order. (An order of indexes: moving
        // the records themselves costs more than the import.)
        let mut order: Vec<(bool, std::cmp::Reverse<u64>, usize)> =
            records.iter().enumerate().map(|(i, r)| (!r.answered, std::cmp::Reverse(r.created_ago_ms), i)).collect();
        order.sort_unstable();
        let mut records: Vec<Option<FlowRecord>> = records.into_iter().map(Some).collect();
        for r in order.iter().filter_map(|&(_, _, i)| records.get_mut(i).and_then(Option::take)) {
            let outcome = self.import_flow(r, now_ms);
            report.count(outcome);
        }
        self.requeue_record_checks();
        self.counters.add(Counter::HandoffFlowsImported, report.imported);
        self.counters.add(Counter::HandoffFlowsRefused, report.refused());
        self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
        Ok(report)
    }

    /// The header of a section of this worker's flows.
    pub(super) fn section_header(&self, records: u32, now_ms: u64) -> SectionHeader {
        SectionHeader {
            // The config bounds workers (at most 64).
            worker: u16::try_from(self.cfg.worker).unwrap_or(u16::MAX),
            workers: u16::try_from(self.cfg.workers).unwrap_or(u16::MAX),
            records,
            now_ms,
            fingerprint: self.cfg.state_fingerprint(),
        }
    }

    /// A section's header and records, refused whole when it is another worker's or
    /// another configuration's.
    pub(super) fn own_section<'a>(&self, section: &'a [u8]) -> Result<(SectionHeader, &'a [u8]), HandoffError> {
        let (header, body) = SectionHeader::parse(section)?;
        if usize::from(header.worker) != self.cfg.worker || usize::from(header.workers) != self.cfg.workers {
            return Err(HandoffError::Worker {
                found: header.worker,
                found_workers: header.workers,
                worker: self.cfg.worker,
                workers: self.cfg.workers,
            });
        }
        let expected = self.cfg.state_fingerprint();
        if header.fingerprint != expected {
            return Err(HandoffError::Fingerprint { found: header.fingerprint, expected });
        }
        Ok((header, body))
    }

    /// Whether a record describes a flow this translator would have built: links that
    /// exist, and the one invariant natgw never gives up: whatever it sends out of the
    /// outside leaves from the flow's own mapping, and whatever arrives there for the flow
    /// is addressed to it.
    fn plausible(&self, r: &FlowRecord) -> bool {
        let links = self.cfg.inside.len();
        let ext = r.mapping.external;
        let link_ok = |e: Egress| match e {
            Egress::Outside => true,
            Egress::Inside(i) => usize::from(i) < links,
        };
        usize::from(r.mapping.inside_if) < links
            && r.egress.iter().all(|&e| link_ok(e))
            && (0..2).all(|d| r.egress[d] != Egress::Outside || r.rewrite[d].src == ext)
            && r.keys.iter().all(|k| k.side != Side::Outside || (k.dst == ext.addr && k.dst_port == ext.port))
            && r.keys[ORIGINAL] != r.keys[REPLY]
            // natgw never builds a flow whose rewrites are not what its keys say.
            && r.rewrite == crate::conntrack::rewrites_of(&r.keys)
    }

    pub(super) fn import_flow(&mut self, r: FlowRecord, now_ms: u64) -> Result<(), ImportRefusal> {
        if !self.plausible(&r) {
            return Err(ImportRefusal::Invalid);
        }
        if self.flows.len() >= self.flows.max_flows() {
            return Err(ImportRefusal::NoRoom);
        }
        let m = r.mapping;
        let proto = r.keys[ORIGINAL].proto;
        let mid = match self.mappings.import(m.pool, proto, m.inside, m.inside_if, m.external) {
            Ok(id) => id,
            Err(super::pool::PoolError::Conflict { .. }) => return Err(ImportRefusal::Conflict),
            Err(_) => return Err(ImportRefusal::Invalid),
        };
        let timeout_ms = self.cfg.timeouts.for_state(r.state).saturating_mul(1000);
        let mut windows = TcpWindows::default();
        for (d, w) in r.windows.iter().enumerate() {
            if let Some(w) = w {
                windows.set(d, *w);
            }
        }
        let mut flow = Flow {
            keys: r.keys,
            deltas: Default::default(),
            egress: r.egress,
            state: r.state,
            tcp_flags: r.tcp_flags,
            packets: r.packets,
            bytes: r.bytes,
            created: Ms40::new(now_ms.saturating_sub(r.created_ago_ms)),
            last_seen: Ms40::new(now_ms.saturating_sub(r.last_seen_ago_ms)),
            expires_after_ms: 0,
            mapping: MappingRef::to(mid),
            policy_generation: u32::try_from(r.policy_generation).unwrap_or(u32::MAX),
            reported: Reported::default(),
            windows: TcpWindowsRef::NONE,
            marks: FlowMarks::default(),
        };
        // After the counters, which it is kept relative to (`parse` checked it is at most
        // them; more behind them than it holds is clamped, see `set_reported`).
        flow.set_reported(
            r.reported_packets,
            r.reported_bytes,
            // 0 means "nothing reported": a report older than this clock is at 1.
            r.reported_ago_ms.map_or(0, |ago| now_ms.saturating_sub(ago).max(1)),
            r.reported_closed,
        );
        flow.marks.set_fin_seen(r.fin_seen);
        flow.marks.set_revoked(r.revoked);
        flow.set_expires_ms(now_ms.saturating_add(r.expires_in_ms.min(timeout_ms)));
        match self.flows.insert_new(flow) {
            Ok(id) => {
                if let Some(w) = self.flows.windows_mut(id) {
                    *w = windows;
                }
                if r.answered {
                    self.flows.answered(id);
                }
                Ok(())
            }
            Err(e) => {
                self.mappings.release(mid);
                Err(match e {
                    crate::conntrack::ConntrackError::KeyTaken => ImportRefusal::Conflict,
                    crate::conntrack::ConntrackError::TableFull(_) => ImportRefusal::NoRoom,
                })
            }
        }
    }

    /// After an import: the flow-log checks of every flow, in due order (interim records
    /// for long flows, the final record of a closed TCP connection).
    pub(super) fn requeue_record_checks(&mut self) {
        if !self.record_flow_ends {
            return;
        }
        let interval = self.active_interval_ms;
        let mut close = Vec::new();
        let mut interim = Vec::new();
        let ids: Vec<_> = self.flows.iter().map(|(id, _)| id).collect();
        for id in ids {
            let Some(f) = self.flows.get_mut(id) else { continue };
            if interval > 0 && !f.reported.closed() {
                interim.push(RecordCheck::new(f.unreported_since_ms() + interval, id, f.created_ms()));
            }
            let closed = matches!(f.state, FlowState::Tcp(TcpState::TimeWait | TcpState::Closed));
            if closed && !f.reported.closed() && !f.marks.close_check_queued() {
                f.marks.set_close_check_queued(true);
                close.push(RecordCheck::new(f.last_seen_ms() + 1000, id, f.created_ms()));
            }
        }
        for (queue, new) in [(&mut self.close_checks, close), (&mut self.interim_checks, interim)] {
            let mut all: Vec<_> = queue.drain(..).chain(new).collect();
            all.sort_by_key(|e| e.due_ms);
            queue.extend(all);
        }
    }
}

pub(super) enum ImportRefusal {
    Invalid,
    Conflict,
    NoRoom,
}

#[cfg(test)]
mod tests {
    use super::super::flow_records::tests::{only_flow, send_out, translator};
    use super::super::EndReason;
    use super::*;

    #[test]
    fn a_handoff_carries_large_counters_and_what_was_reported_of_them_exactly() {
        let mut old = translator(1000);
        old.record_flow_ends(true, false, 0);
        send_out(&mut old, 1000);
        // Past the low bits the flow keeps of its last record, and wrapped since it.
        let f = only_flow(&mut old);
        (f.packets, f.bytes) = ([5_000_000_000_123, 4_294_967_301], [3_298_534_883_333, 1_099_511_627_790]);
        f.set_reported([5_000_000_000_000, 4_294_967_291], [3_298_534_883_228, 1_099_511_627_700], 1500, false);
        let mut section = Vec::new();
        old.export_state(2000, &mut section);
        let r = FlowRecord::parse(&section[HEADER_LEN..]).expect("a record");
        assert_eq!((r.packets, r.bytes), ([5_000_000_000_123, 4_294_967_301], [3_298_534_883_333, 1_099_511_627_790]));
        assert_eq!(r.reported_packets, [5_000_000_000_000, 4_294_967_291]);
        assert_eq!(r.reported_bytes, [3_298_534_883_228, 1_099_511_627_700]);
        assert_eq!((r.reported_ago_ms, r.reported_closed), (Some(500), false));

        let mut new = translator(2000);
        new.record_flow_ends(true, false, 0);
        assert_eq!(new.import_state(&section, 2000).expect("accepted").imported, 1);
        let mut again = Vec::new();
        new.export_state(2000, &mut again);
        assert_eq!(again, section, "exported again, the same bytes");
    }

    #[test]
    fn a_handed_over_flow_more_unreported_than_the_copy_holds_imports_clamped() {
        let mut old = translator(1000);
        send_out(&mut old, 1000);
        let f = only_flow(&mut old);
        (f.packets, f.bytes) = ([10_000_000_000, 0], [5_000_000_000_000, 0]);
        let mut section = Vec::new();
        old.export_state(2000, &mut section);
        // As a natgw that kept 64 bits and no flow log sent it: nothing reported.
        let mut r = FlowRecord::parse(&section[HEADER_LEN..]).expect("a record");
        (r.reported_packets, r.reported_bytes) = ([0, 0], [0, 0]);
        let mut record = [0u8; RECORD_LEN];
        r.emit(&mut record);
        section.truncate(HEADER_LEN);
        section.extend_from_slice(&record);

        let mut new = translator(2000);
        new.record_flow_ends(true, false, 0);
        assert_eq!(new.import_state(&section, 2000).expect("accepted").imported, 1);
        let f = only_flow(&mut new);
        assert_eq!((f.unreported_packets(), f.unreported_bytes()), ([3_221_225_472, 0], [824_633_720_832, 0]));
        // Its next packet has the record made, counting the clamped amount.
        send_out(&mut new, 2001);
        new.tick(2010);
        let mut ends = Vec::new();
        new.take_flow_ends(&mut ends);
        let got: Vec<_> = ends.iter().map(|e| (e.reason, e.packets, e.bytes)).collect();
        assert_eq!(got, vec![(EndReason::Active, [3_221_225_473, 0], [824_633_720_876, 0])]);
        let f = only_flow(&mut new);
        assert_eq!((f.reported_packets(), f.reported_bytes()), ([10_000_000_001, 0], [5_000_000_000_044, 0]));
    }
}
