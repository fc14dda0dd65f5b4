//! Replication of a worker's flows to a standby node (`[ha]`), the pfsync / conntrackd
//! idea: the active node's translator notes every flow it creates, every state change and
//! every flow-log report, and every flow that ends; the standby keeps the latest record of
//! each flow in a `ReplicaTable` and, when promoted, imports them as the sections of
//! `handoff` (the same records, validated the same way).
//!
//! Events (network byte order), as many as fit a batch:
//!
//! ```text
//! upsert: 0x01 | a `handoff::FlowRecord` (`RECORD_LEN` bytes)
//! delete: 0x02 | the flow's original key (`KEY_LEN` bytes: proto, side, src, src port,
//!                dst, dst port)
//! reset:  0x03   (a bulk resync follows: the worker's flows are the upserts after it)
//! ```
//!
//! Ordering: a delete goes into the log when the flow ends; upserts are written when the
//! log is taken (once per worker loop turn), for the flows still alive, once each however
//! often they changed. A flow that ended before its first upsert is sent as a delete the
//! standby does not know, which it ignores. Window state moves with every segment and is
//! not replicated as it moves: a promoted standby picks each direction up from its first
//! segment (the rule of `conntrack::tcp_window`), and tracks it from there.
//!
//! Expiry on the standby: a flow lives there until the active says it ended or a bulk
//! resync replaces the worker's set. At promotion every flow gets its state's full timeout
//! (the active refreshes deadlines on every packet without telling the standby): an idle
//! flow lives at most one timeout longer than it would have.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use thiserror::Error;

use super::handoff::{FlowRecord, SectionHeader, HEADER_LEN, RECORD_LEN};
use super::journal::JournalRegion;
use super::Translator;
use crate::conntrack::{FlowId, FlowKey, Side, ORIGINAL};

pub const EVENT_UPSERT: u8 = 1;
pub const EVENT_DELETE: u8 = 2;
pub const EVENT_RESET: u8 = 3;

/// The length of an event with this tag, its tag included; `None` for an unknown tag.
pub fn event_len(tag: u8) -> Option<usize> {
    match tag {
        EVENT_UPSERT => Some(1 + RECORD_LEN),
        EVENT_DELETE => Some(1 + KEY_LEN),
        EVENT_RESET => Some(1),
        _ => None,
    }
}
pub const KEY_LEN: usize = 14;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplicationError {
    #[error("replication event {tag:#04x} at byte {at} is not one this natgw knows")]
    UnknownEvent { tag: u8, at: usize },
    #[error("replication events truncated at byte {at}")]
    Truncated { at: usize },
    #[error("replication events for worker {worker}; this gateway has {workers}")]
    Worker { worker: u16, workers: usize },
}

/// What the active side's log holds between two takes.
#[derive(Debug, Default)]
pub(super) struct ReplicationLog {
    /// Flows created or changed since the last take: (flow, its creation time, to tell it
    /// from a later flow in the same slot). Duplicates are folded at the take.
    dirty: Vec<(FlowId, u64)>,
    /// Deletes, already encoded.
    deletes: Vec<u8>,
    /// The slots the deleted flows held (for the journal).
    ended_ids: Vec<FlowId>,
    /// Events were lost because the log was full: the standby needs a bulk resync.
    overflowed: bool,
}

/// Events a log holds at most between two takes (a take comes every loop turn, at least
/// every 10 ms): beyond, the log overflows and the standby is resynchronised instead.
pub const MAX_LOGGED_EVENTS: usize = 1 << 16;

impl ReplicationLog {
    pub(super) fn changed(&mut self, id: FlowId, created_ms: u64) {
        if self.dirty.len() >= MAX_LOGGED_EVENTS {
            self.overflowed = true;
            return;
        }
        self.dirty.push((id, created_ms));
    }

    pub(super) fn ended(&mut self, id: FlowId, key: &FlowKey) {
        if self.ended_ids.len() >= MAX_LOGGED_EVENTS {
            self.overflowed = true;
            return;
        }
        self.deletes.push(EVENT_DELETE);
        emit_key(key, &mut self.deletes);
        self.ended_ids.push(id);
    }
}

pub(super) fn emit_key(k: &FlowKey, out: &mut Vec<u8>) {
    out.push(k.proto);
    out.push(match k.side {
        Side::Inside => 0,
        Side::Outside => 1,
    });
    out.extend_from_slice(&k.src.octets());
    out.extend_from_slice(&k.src_port.to_be_bytes());
    out.extend_from_slice(&k.dst.octets());
    out.extend_from_slice(&k.dst_port.to_be_bytes());
}

pub(super) fn parse_key(b: &[u8]) -> Option<FlowKey> {
    let b = b.get(..KEY_LEN)?;
    let side = match b[1] {
        0 => Side::Inside,
        1 => Side::Outside,
        _ => return None,
    };
    let addr = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
    let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    Some(FlowKey { side, proto: b[0], src: addr(2), src_port: port(6), dst: addr(8), dst_port: port(12) })
}

/// What taking the log found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakenEvents {
    pub events: u64,
    /// Events were lost since the last take (the log was full): resynchronise.
    pub overflowed: bool,
}

impl Translator {
    /// Starts noting flow events for a standby (`take_replication`).
    pub fn enable_replication(&mut self) {
        self.replication.get_or_insert_with(Default::default);
    }

    pub fn replicating(&self) -> bool {
        self.replication.is_some()
    }

    /// Takes the events since the last call: appends them to `out` (deletes first, then
    /// the current record of each flow created or changed and still alive) and writes
    /// them into `journal` (the ended flows' slots cleared, the changed ones written).
    pub fn take_replication(
        &mut self,
        now_ms: u64,
        mut out: Option<&mut Vec<u8>>,
        mut journal: Option<&mut JournalRegion<'_>>,
    ) -> TakenEvents {
        let Some(log) = self.replication.as_mut() else { return TakenEvents::default() };
        let mut taken = TakenEvents { events: 0, overflowed: std::mem::take(&mut log.overflowed) };
        taken.events += log.ended_ids.len() as u64;
        match out.as_deref_mut() {
            Some(out) => out.append(&mut log.deletes),
            None => log.deletes.clear(),
        }
        if let Some(j) = journal.as_deref_mut() {
            for &id in &log.ended_ids {
                j.clear(id);
            }
        }
        log.ended_ids.clear();
        if log.dirty.is_empty() {
            return taken;
        }
        let mut dirty = std::mem::take(&mut log.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut buf = [0u8; RECORD_LEN];
        for &(id, created) in &dirty {
            let Some(flow) = self.flows.get(id).filter(|f| f.created_ms() == created) else { continue };
            let Some(record) = self.record_of(id, flow, now_ms) else { continue };
            if let Some(j) = journal.as_deref_mut() {
                j.write(id, now_ms, &record);
            }
            if let Some(out) = out.as_deref_mut() {
                record.emit(&mut buf);
                out.push(EVENT_UPSERT);
                out.extend_from_slice(&buf);
            }
            taken.events += 1;
        }
        // Keep the allocation for the next turn.
        dirty.clear();
        if let Some(log) = self.replication.as_mut() {
            log.dirty = dirty;
        }
        taken
    }

    /// A bulk resync at once: a reset, then every flow's record. The log starts over
    /// (what it held is in the records). A worker spreads it over its loop turns instead
    /// (`replication_snapshot_begin`, `replication_snapshot_chunk`).
    pub fn replication_snapshot(&mut self, now_ms: u64, out: &mut Vec<u8>) -> u64 {
        self.replication_snapshot_begin(out);
        let mut n = 0;
        let mut at = Some(0);
        while let Some(from) = at {
            let (next, written) = self.replication_snapshot_chunk(from, usize::MAX, now_ms, out);
            n += written;
            at = next;
        }
        n
    }

    /// Starts a bulk resync: a reset for the standby, and the log starts over. The
    /// records follow chunk by chunk (`replication_snapshot_chunk` from slot 0) while the
    /// log goes on being taken as usual: an event about a flow the snapshot has not
    /// reached yet repeats what it will say (an upsert) or removes what the standby does
    /// not hold (a delete); one about a flow it has passed is news.
    pub fn replication_snapshot_begin(&mut self, out: &mut Vec<u8>) {
        if let Some(log) = self.replication.as_mut() {
            *log = ReplicationLog::default();
        }
        out.push(EVENT_RESET);
    }

    /// The records of the flows in slots `from..from + max`; where to go on from (`None`:
    /// every slot is done) and how many records were written.
    pub fn replication_snapshot_chunk(
        &mut self,
        from: usize,
        max: usize,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> (Option<usize>, u64) {
        let end = from.saturating_add(max).min(self.flows.id_bound());
        out.reserve(end.saturating_sub(from).min(self.flows.len()) * (1 + RECORD_LEN));
        let mut buf = [0u8; RECORD_LEN];
        let mut n = 0;
        for slot in from..end {
            // Slots are FlowIds: below id_bound, each fits.
            let Ok(id) = FlowId::try_from(slot) else { break };
            let Some(flow) = self.flows.get(id) else { continue };
            let Some(record) = self.record_of(id, flow, now_ms) else { continue };
            record.emit(&mut buf);
            out.push(EVENT_UPSERT);
            out.extend_from_slice(&buf);
            n += 1;
        }
        ((end < self.flows.id_bound()).then_some(end), n)
    }

    /// Forgets every flow without a flow-log record (a node that steps down to standby:
    /// the flows carry on at the new active, which reports them).
    pub fn discard_flows(&mut self) -> usize {
        let ids: Vec<FlowId> = self.flows.iter().map(|(id, _)| id).collect();
        let n = ids.len();
        for id in ids {
            if let Some(flow) = self.flows.remove(id) {
                if let Some(m) = flow.mapping.get() {
                    self.mappings.release(m);
                }
            }
        }
        self.close_checks.clear();
        self.interim_checks.clear();
        self.report_checks.clear();
        if let Some(log) = self.replication.as_mut() {
            // No journal in a pair (`[ha]`): nothing else reads these events.
            *log = ReplicationLog::default();
        }
        self.counters.set(crate::counters::Counter::ActiveConnectionCount, 0);
        n
    }

    /// Notes a flow created or changed, for the standby.
    pub(super) fn replicate_changed(&mut self, id: FlowId) {
        if let Some(log) = self.replication.as_mut() {
            if let Some(f) = self.flows.get(id) {
                log.changed(id, f.created_ms());
            }
        }
    }
}

/// What applying events or a snapshot did on the standby.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub upserts: u64,
    pub deletes: u64,
    /// Records that did not parse.
    pub invalid: u64,
    /// New flows the table had no room for.
    pub full: u64,
    /// Bulk resyncs begun.
    pub resets: u64,
}

struct Replica {
    record: FlowRecord,
    /// The standby's clock when the record arrived (its times count from then).
    received_ms: u64,
}

/// The standby's copy of the active's flows, per worker, bounded like the flow table.
pub struct ReplicaTable {
    workers: Vec<HashMap<FlowKey, Replica, ahash::RandomState>>,
    max_per_worker: usize,
    fingerprint: u64,
}

impl ReplicaTable {
    pub fn new(workers: usize, max_per_worker: usize, fingerprint: u64) -> ReplicaTable {
        ReplicaTable {
            workers: (0..workers.max(1)).map(|_| HashMap::with_hasher(ahash::RandomState::new())).collect(),
            max_per_worker,
            fingerprint,
        }
    }

    pub fn len(&self) -> usize {
        self.workers.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        for w in &mut self.workers {
            w.clear();
        }
    }

    fn worker_mut(
        &mut self,
        worker: u16,
    ) -> Result<&mut HashMap<FlowKey, Replica, ahash::RandomState>, ReplicationError> {
        let workers = self.workers.len();
        self.workers.get_mut(usize::from(worker)).ok_or(ReplicationError::Worker { worker, workers })
    }

    /// Adds (or replaces) one flow's record, received at `received_ms`; false when the
    /// worker's table is full or there is no such worker.
    pub fn insert(&mut self, worker: u16, record: FlowRecord, received_ms: u64) -> bool {
        let mut report = ApplyReport::default();
        self.upsert(worker, record, received_ms, &mut report);
        report.upserts == 1
    }

    fn upsert(&mut self, worker: u16, record: FlowRecord, now_ms: u64, report: &mut ApplyReport) {
        let max = self.max_per_worker;
        let Ok(table) = self.worker_mut(worker) else { return };
        let key = record.keys[ORIGINAL];
        if table.len() >= max && !table.contains_key(&key) {
            report.full += 1;
            return;
        }
        table.insert(key, Replica { record, received_ms: now_ms });
        report.upserts += 1;
    }

    /// Applies one batch of events of `worker`. The whole batch is checked before any of
    /// it is applied: a batch that does not parse changes nothing (and calls for a resync).
    pub fn apply_events(&mut self, worker: u16, events: &[u8], now_ms: u64) -> Result<ApplyReport, ReplicationError> {
        self.worker_mut(worker)?;
        let mut at = 0;
        while at < events.len() {
            let tag = events[at];
            let len = event_len(tag).ok_or(ReplicationError::UnknownEvent { tag, at })?;
            if events.len() - at < len {
                return Err(ReplicationError::Truncated { at });
            }
            at += len;
        }
        let mut report = ApplyReport::default();
        let mut at = 0;
        while let Some(&tag) = events.get(at) {
            let body = &events[at + 1..];
            match tag {
                EVENT_UPSERT => match FlowRecord::parse(body) {
                    Some(r) => self.upsert(worker, r, now_ms, &mut report),
                    None => report.invalid += 1,
                },
                EVENT_DELETE => match parse_key(body) {
                    Some(k) => {
                        if self.worker_mut(worker)?.remove(&k).is_some() {
                            report.deletes += 1;
                        }
                    }
                    None => report.invalid += 1,
                },
                _ => {
                    self.worker_mut(worker)?.clear();
                    report.resets += 1;
                }
            }
            at += event_len(tag).unwrap_or(1);
        }
        Ok(report)
    }

    /// One section per worker for `Translator::import_state`, as of `now_ms`: ages grow by
    /// the time since each record arrived; every deadline is left to the importer, which
    /// gives each flow its state's full timeout.
    pub fn sections(&self, now_ms: u64) -> Vec<Vec<u8>> {
        let workers = u16::try_from(self.workers.len()).unwrap_or(u16::MAX);
        self.workers
            .iter()
            .enumerate()
            .map(|(w, table)| {
                let mut out = Vec::with_capacity(HEADER_LEN + table.len() * RECORD_LEN);
                SectionHeader {
                    worker: u16::try_from(w).unwrap_or(u16::MAX),
                    workers,
                    records: u32::try_from(table.len()).unwrap_or(u32::MAX),
                    now_ms,
                    fingerprint: self.fingerprint,
                }
                .emit(&mut out);
                let mut buf = [0u8; RECORD_LEN];
                for r in table.values() {
                    let aged = now_ms.saturating_sub(r.received_ms);
                    let mut rec = r.record.clone();
                    rec.created_ago_ms = rec.created_ago_ms.saturating_add(aged);
                    rec.last_seen_ago_ms = rec.last_seen_ago_ms.saturating_add(aged);
                    rec.reported_ago_ms = rec.reported_ago_ms.map(|a| a.saturating_add(aged));
                    rec.expires_in_ms = u64::MAX;
                    // The windows moved on with every segment since: picked up afresh.
                    rec.windows = [None, None];
                    rec.emit(&mut buf);
                    out.extend_from_slice(&buf);
                }
                out
            })
            .collect()
    }
}
