//! An upgrade's pre-copy: the old process exports a worker's flows once while the worker
//! forwards (`begin_precopy`), the new process imports them while it prepares, and at the
//! cutover only what changed since goes across (`precopy_delta` → `apply_delta`), so that
//! the forwarding pause does not grow with the table.
//!
//! Changed since the export: a flow that saw a packet (`last_seen_ms`), was created, or
//! was reported to the flow log after it; one revoked by a revalidation, or whose windows a
//! segment moved before being dropped (the few paths that change a flow without
//! refreshing it note it here); and every flow that ended, by its original key. The delta
//! is one section of `handoff` (the changed flows' exact records) and the ended flows'
//! keys (`replication`'s 14-byte keys). Its bound: `MAX_PRECOPY_NOTES` ended or noted
//! flows; beyond, the pre-copy is given up and the cutover sends the whole table.
//!
//! The importer removes each ended flow and each changed one it holds, then imports the
//! changed records as `import_state` does (the same validation), and requeues the
//! flow-log checks of the whole table.

use super::handoff::{FlowRecord, HandoffError, ImportReport, HEADER_LEN, RECORD_LEN};
use super::replication::{emit_key, parse_key, KEY_LEN};
use super::Translator;
use crate::conntrack::{FlowId, FlowKey, ORIGINAL};
use crate::counters::Counter;

/// Ended and noted flows a pre-copy tracks at most before it gives up.
pub const MAX_PRECOPY_NOTES: usize = 1 << 18;

#[derive(Debug)]
pub(super) struct PreCopy {
    since_ms: u64,
    ended: Vec<FlowKey>,
    changed: Vec<FlowId>,
    overflowed: bool,
}

impl PreCopy {
    pub(super) fn ended(&mut self, key: &FlowKey) {
        if self.ended.len() >= MAX_PRECOPY_NOTES {
            self.overflowed = true;
            return;
        }
        self.ended.push(*key);
    }

    pub(super) fn changed(&mut self, id: FlowId) {
        if self.changed.len() >= MAX_PRECOPY_NOTES {
            self.overflowed = true;
            return;
        }
        self.changed.push(id);
    }
}

/// What a cutover sends for one worker.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// A `handoff` section of the flows changed since the export.
    pub section: Vec<u8>,
    /// The original keys of the flows that ended since, `KEY_LEN` bytes each.
    pub ended: Vec<u8>,
}

impl Translator {
    /// Exports every flow into `out` (one `handoff` section, as `export_state`) and
    /// starts noting what changes from here on.
    pub fn begin_precopy(&mut self, now_ms: u64, out: &mut Vec<u8>) {
        self.export_state(now_ms, out);
        self.precopy = Some(PreCopy { since_ms: now_ms, ended: Vec::new(), changed: Vec::new(), overflowed: false });
    }

    /// Stops noting (the upgrade failed or is done).
    pub fn end_precopy(&mut self) {
        self.precopy = None;
    }

    pub(super) fn precopy_changed(&mut self, id: FlowId) {
        if let Some(p) = self.precopy.as_mut() {
            p.changed(id);
        }
    }

    /// What changed since `begin_precopy`, as of `now_ms`; `None` when there was no
    /// pre-copy or it gave up (send the whole table instead). Ends the pre-copy.
    pub fn precopy_delta(&mut self, now_ms: u64) -> Option<Delta> {
        let p = self.precopy.take()?;
        if p.overflowed {
            return None;
        }
        let since = p.since_ms;
        let mut noted: Vec<FlowId> = p.changed;
        noted.sort_unstable();
        noted.dedup();
        let mut body = Vec::new();
        let mut buf = [0u8; RECORD_LEN];
        let mut records = 0u32;
        for (id, flow) in self.flows.iter() {
            let changed = flow.last_seen_ms() >= since
                || flow.created_ms() >= since
                || flow.reported.at_ms() >= since
                || noted.binary_search(&id).is_ok();
            if !changed {
                continue;
            }
            let Some(record) = self.record_of(id, flow, now_ms) else { continue };
            record.emit(&mut buf);
            body.extend_from_slice(&buf);
            records = records.saturating_add(1);
        }
        let mut section = Vec::with_capacity(HEADER_LEN + body.len());
        self.section_header(records, now_ms).emit(&mut section);
        section.extend_from_slice(&body);
        let mut ended = Vec::with_capacity(p.ended.len() * KEY_LEN);
        for k in &p.ended {
            emit_key(k, &mut ended);
        }
        Some(Delta { section, ended })
    }

    /// Applies a cutover's delta to the flows a pre-copy brought: the ended ones go, the
    /// changed ones are replaced by their records (validated as `import_state` does).
    pub fn apply_delta(&mut self, delta: &Delta, now_ms: u64) -> Result<ImportReport, HandoffError> {
        let (_, body) = self.own_section(&delta.section)?;
        if !delta.ended.len().is_multiple_of(KEY_LEN) {
            return Err(HandoffError::Truncated { have: delta.ended.len(), records: 0 });
        }
        for k in delta.ended.chunks_exact(KEY_LEN).filter_map(parse_key) {
            self.forget_flow(&k);
        }
        let mut report = ImportReport::default();
        for chunk in body.chunks_exact(RECORD_LEN) {
            let Some(r) = FlowRecord::parse(chunk) else {
                report.invalid += 1;
                continue;
            };
            self.forget_flow(&r.keys[ORIGINAL]);
            let outcome = self.import_flow(r, now_ms);
            report.count(outcome);
        }
        // Every flow's flow-log checks anew (the replaced flows' entries point nowhere).
        self.close_checks.clear();
        self.interim_checks.clear();
        let ids: Vec<FlowId> = self.flows.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(f) = self.flows.get_mut(id) {
                f.marks.set_close_check_queued(false);
            }
        }
        self.requeue_record_checks();
        self.counters.add(Counter::HandoffFlowsImported, report.imported);
        self.counters.add(Counter::HandoffFlowsRefused, report.refused());
        self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
        Ok(report)
    }

    /// Removes the flow whose original key is `key`, without a record (the process that
    /// exported it reports it), releasing its mapping.
    fn forget_flow(&mut self, key: &FlowKey) {
        let Some((id, ORIGINAL)) = self.flows.lookup(key) else { return };
        if let Some(flow) = self.flows.remove(id) {
            if let Some(m) = flow.mapping.get() {
                self.mappings.release(m);
            }
        }
    }
}
