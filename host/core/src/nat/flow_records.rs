//! Flow records (`FlowEnd`): produced on the slow path only, when a flow ends, when a
//! closed TCP connection has been quiet for a second, every `active_interval_s` for a long
//! flow, when a flow's unreported counters reach half of what the flow log's copy of them
//! tells apart (`conntrack::Reported`), and when the egress policy refuses one. Records due
//! while the flow lives come from queues of (due time, flow); nothing scans the table.

use std::net::Ipv4Addr;

use natgw_wire::PROTO_ICMP;

use super::policy::{EgressDecision, NewFlow};
use super::pool::PoolId;
use super::Translator;
use crate::conntrack::{Egress, Endpoint, Flow, FlowId, FlowState, Side, TcpState, ORIGINAL, REPLY};
use crate::counters::Counter;

/// At most this many finished flows wait in a translator between worker batches.
pub const MAX_PENDING_FLOW_ENDS: usize = 4096;

/// Why the flow log has a record (its `end-reason`): the flow ended, is still running
/// (an interim record, every `flow_log.active_interval_s`), or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    Closed,
    Reset,
    IdleTimeout,
    Revalidated,
    /// Never answered, and given up to make room (`EarlyDropCount`).
    EarlyDrop,
    Shutdown,
    /// Still running: an interim record.
    Active,
    /// The egress policy denied or rejected it; it never got a mapping.
    Refused,
}

/// Who opened the flow, as VPC Flow Logs' `flow-direction` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowDirection {
    /// From an inside host (the usual NAT flow).
    Egress,
    /// From outside, to a mapping (endpoint-independent filtering only).
    Ingress,
}

/// A flow-log record as the translator produces it: the inside host's view before
/// translation, the external endpoint it left from, and its counters over the record's
/// window (`start_ms`..`end_ms`: since the flow's previous record, or its creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEnd {
    pub proto: u8,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub ingress: u8,
    /// 0.0.0.0:0 for a refused flow.
    pub nat_src: Endpoint,
    pub pool: PoolId,
    /// Inside to outside, then outside to inside.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub tcp_flags: u8,
    pub start_ms: u64,
    pub end_ms: u64,
    /// When the flow was created (equal to `start_ms` in its first record).
    pub created_ms: u64,
    pub reason: EndReason,
    pub direction: FlowDirection,
    /// The egress verdict that admitted (Allow) or refused the flow.
    pub verdict: EgressDecision,
    /// The egress policy generation that gave the verdict (0: no policy installed).
    pub policy_generation: u64,
    /// What the shadow egress policy answered for it, if one ran (`natgw policy shadow`).
    pub shadow_verdict: Option<EgressDecision>,
}

impl FlowEnd {
    pub(super) fn of(flow: &Flow, pool: PoolId, end_ms: u64, reason: EndReason) -> Self {
        // The direction whose packets come from the inside host.
        let d = if flow.keys[ORIGINAL].side == Side::Inside { ORIGINAL } else { REPLY };
        let k = flow.keys[d];
        let (packets, bytes) = (flow.unreported_packets(), flow.unreported_bytes());
        FlowEnd {
            proto: k.proto,
            src: Endpoint { addr: k.src, port: k.src_port },
            dst: Endpoint { addr: k.dst, port: if k.proto == PROTO_ICMP { 0 } else { k.dst_port } },
            ingress: match flow.egress[1 - d] {
                Egress::Inside(i) => i,
                Egress::Outside => 0,
            },
            nat_src: flow.rewrite(d).src,
            pool,
            packets: [packets[d], packets[1 - d]],
            bytes: [bytes[d], bytes[1 - d]],
            tcp_flags: flow.tcp_flags[0] | flow.tcp_flags[1],
            start_ms: flow.unreported_since_ms(),
            end_ms,
            created_ms: flow.created_ms(),
            reason,
            direction: if d == ORIGINAL { FlowDirection::Egress } else { FlowDirection::Ingress },
            verdict: EgressDecision::Allow,
            policy_generation: u64::from(flow.policy_generation),
            shadow_verdict: flow.marks.shadow(),
        }
    }

    /// The record with the shadow policy's answer.
    pub(super) fn with_shadow(self, shadow_verdict: Option<EgressDecision>) -> Self {
        FlowEnd { shadow_verdict, ..self }
    }

    /// A flow the egress policy refused, from its first packet.
    /// `nf` is the flow as the inside host's packets would carry it; `direction` says who
    /// opened it (the refused first packet counts as out for egress, in for ingress).
    pub(super) fn refused(
        nf: &NewFlow,
        direction: FlowDirection,
        verdict: EgressDecision,
        generation: u64,
        bytes: u64,
        now_ms: u64,
    ) -> Self {
        let (packets, bytes) = match direction {
            FlowDirection::Egress => ([1, 0], [bytes, 0]),
            FlowDirection::Ingress => ([0, 1], [0, bytes]),
        };
        FlowEnd {
            proto: nf.proto,
            src: Endpoint { addr: nf.src, port: nf.src_port },
            dst: Endpoint { addr: nf.dst, port: nf.dst_port },
            ingress: u8::try_from(nf.ingress).unwrap_or(u8::MAX),
            nat_src: Endpoint { addr: Ipv4Addr::UNSPECIFIED, port: 0 },
            pool: 0,
            packets,
            bytes,
            tcp_flags: 0,
            start_ms: now_ms,
            end_ms: now_ms,
            created_ms: now_ms,
            reason: EndReason::Refused,
            direction,
            verdict,
            policy_generation: generation,
            shadow_verdict: None,
        }
    }

    /// ACCEPT or REJECT, as VPC Flow Logs' `action`.
    pub fn accepted(&self) -> bool {
        self.reason != EndReason::Refused
    }
}

/// An entry of the record-check queues (closes, interim records): when, which flow, and
/// a stamp of that flow's creation, the low 32 bits of its creation time in ms (a slot
/// reused by another flow fails it, unless the two were created 2^32 ms, 49.7 days,
/// apart to the millisecond, long after any check of the first is done). 16 bytes an
/// entry where (due, id, created) took 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordCheck {
    pub due_ms: u64,
    pub id: FlowId,
    stamp: u32,
}

impl RecordCheck {
    pub fn new(due_ms: u64, id: FlowId, created_ms: u64) -> RecordCheck {
        RecordCheck { due_ms, id, stamp: stamp_of(created_ms) }
    }

    /// The check is for `flow` (not an earlier one in the same slot).
    pub fn is_of(&self, flow: &Flow) -> bool {
        self.stamp == stamp_of(flow.created_ms())
    }
}

fn stamp_of(created_ms: u64) -> u32 {
    // Masked to 32 bits: it fits.
    u32::try_from(created_ms & 0xffff_ffff).unwrap_or(0)
}

/// `flow`'s counters reached half of what the flow log's copy of them tells apart
/// (`Flow::count` said so): with a flow log (`flow_log`), a check for an interim record at
/// the next tick, one per flow at a time; without, the copy moved up now, since nobody
/// reads those counts. Rare (every 2^31 packets or 512 GiB of a direction): kept off the
/// fast path's inlined code.
#[cold]
#[inline(never)]
pub(super) fn report_unreported(
    flow: &mut Flow,
    id: FlowId,
    now_ms: u64,
    flow_log: bool,
    checks: &mut Vec<RecordCheck>,
) {
    if !flow_log {
        flow.skip_unreported();
    } else if !flow.marks.report_check_queued() {
        flow.marks.set_report_check_queued(true);
        checks.push(RecordCheck::new(now_ms, id, flow.created_ms()));
    }
}

impl Translator {
    /// Keep a `FlowEnd` for every flow that ends, for `take_flow_ends`; with `refused`,
    /// one for every flow the egress policy refuses too; with `active_interval_s` > 0, an
    /// interim one for every flow that has run that long since its last record.
    pub fn record_flow_ends(&mut self, on: bool, refused: bool, active_interval_s: u64) {
        self.record_flow_ends = on;
        self.record_refused = on && refused;
        self.active_interval_ms = if on { active_interval_s * 1000 } else { 0 };
    }

    /// One REJECT record for the packets of one tuple the refusal cache answered in an
    /// interval (`refusals`).
    pub(super) fn push_refusal_summary(&mut self, s: super::refusals::Summary) {
        let mut e = FlowEnd::refused(&s.flow, s.direction, s.verdict, s.generation, s.bytes, s.last_ms);
        e.packets = match s.direction {
            FlowDirection::Egress => [s.packets, 0],
            FlowDirection::Ingress => [0, s.packets],
        };
        e.start_ms = s.first_ms;
        e.created_ms = s.first_ms;
        self.counters.add(Counter::FlowLogRefusalsSummarized, s.packets);
        self.push_record(e);
    }

    /// Summaries of refusals whose interval has ended: recorded when refused flows are,
    /// else let go.
    pub(super) fn due_refusal_summaries(&mut self, now_ms: u64) {
        let mut due = Vec::new();
        self.refusals.due(now_ms, |s| due.push(s));
        if self.record_refused {
            for s in due {
                self.push_refusal_summary(s);
            }
        }
    }

    pub(super) fn push_record(&mut self, e: FlowEnd) {
        if self.ended.len() < MAX_PENDING_FLOW_ENDS {
            self.ended.push(e);
        } else {
            self.counters.inc(Counter::FlowLogQueueOverflow);
        }
    }

    /// Records that are due without the flow expiring: the final record of a TCP
    /// connection that closed (FIN both ways, or RST) and has been quiet for a second
    /// (its entry lingers in TIME-WAIT for minutes), and interim records for flows that
    /// have run `active_interval_ms` since their last one. Work is per event (a close, an
    /// interval passing), never a scan of the table.
    pub(super) fn due_records(&mut self, now_ms: u64) {
        self.report_counters(now_ms);
        if !self.record_flow_ends {
            self.close_checks.clear();
            self.interim_checks.clear();
            return;
        }
        while let Some(&check) = self.close_checks.front() {
            if check.due_ms > now_ms {
                break;
            }
            self.close_checks.pop_front();
            let id = check.id;
            let Some(flow) = self.flows.get_mut(id).filter(|f| check.is_of(f)) else { continue };
            flow.marks.set_close_check_queued(false);
            let reason = match flow.state {
                FlowState::Tcp(TcpState::TimeWait) => EndReason::Closed,
                FlowState::Tcp(TcpState::Closed) if !flow.marks.revoked() => EndReason::Reset,
                _ => continue,
            };
            if flow.reported.closed() {
                continue;
            }
            if now_ms < flow.last_seen_ms() + 1000 {
                flow.marks.set_close_check_queued(true);
                self.close_checks.push_back(RecordCheck::new(flow.last_seen_ms() + 1000, id, flow.created_ms()));
                continue;
            }
            let pool = flow.mapping.get().and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            let record = FlowEnd::of(flow, pool, now_ms, reason);
            flow.mark_reported(now_ms, true);
            self.push_record(record);
            self.replicate_changed(id);
        }
        let interval = self.active_interval_ms;
        while let Some(&check) = self.interim_checks.front() {
            if check.due_ms > now_ms {
                break;
            }
            self.interim_checks.pop_front();
            let id = check.id;
            let Some(flow) = self.flows.get_mut(id).filter(|f| check.is_of(f)) else { continue };
            if interval == 0 || flow.reported.closed() {
                continue;
            }
            let pool = flow.mapping.get().and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            let record = FlowEnd::of(flow, pool, now_ms, EndReason::Active);
            flow.mark_reported(now_ms, false);
            self.push_record(record);
            self.replicate_changed(id);
            self.interim_checks.push_back(RecordCheck { due_ms: now_ms + interval, ..check });
        }
        self.compact_checks();
    }

    /// Interim records of the flows whose unreported counters reached half of what the
    /// flow log's copy of them tells apart (`report_unreported`), before that copy's low
    /// bits wrap: the time since their last record, as any interim record. With the flow
    /// log turned off since, their copy moves up instead. Whether the connection's final
    /// record went out already stays as it was.
    fn report_counters(&mut self, now_ms: u64) {
        let mut checks = std::mem::take(&mut self.report_checks);
        for check in checks.drain(..) {
            let id = check.id;
            let Some(flow) = self.flows.get_mut(id).filter(|f| check.is_of(f)) else { continue };
            flow.marks.set_report_check_queued(false);
            if !(flow.report_due(ORIGINAL) || flow.report_due(REPLY)) {
                continue;
            }
            if !self.record_flow_ends {
                flow.skip_unreported();
                continue;
            }
            let pool = flow.mapping.get().and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            let record = FlowEnd::of(flow, pool, now_ms, EndReason::Active);
            flow.mark_reported(now_ms, flow.reported.closed());
            self.push_record(record);
            self.replicate_changed(id);
        }
        // The same allocation for the next tick's.
        self.report_checks = checks;
    }

    /// Entries in the queues of records due while flows live (closes, interim records,
    /// counters to report).
    pub fn queued_record_checks(&self) -> usize {
        self.close_checks.len() + self.interim_checks.len() + self.report_checks.len()
    }

    /// Keeps the record queues bounded by the table: each live flow has at most one entry
    /// in each, and entries of flows that ended are dropped once they outnumber the live
    /// ones (so a burst of short flows cannot leave millions behind for an interval).
    pub(super) fn compact_checks(&mut self) {
        let bound = 2 * self.flows.len() + 1024;
        let flows = &self.flows;
        let live = |c: &RecordCheck| flows.get(c.id).is_some_and(|f| c.is_of(f));
        if self.close_checks.len() > bound {
            self.close_checks.retain(live);
        }
        if self.interim_checks.len() > bound {
            self.interim_checks.retain(live);
        }
    }

    /// Flow-log records produced since the last call.
    pub fn take_flow_ends(&mut self, into: &mut Vec<FlowEnd>) {
        into.append(&mut self.ended);
    }

    pub(super) fn flow_ended(&mut self, id: FlowId, flow: &Flow, end_ms: u64, reason: EndReason) {
        // A closed connection's final record went out already; a later one only if
        // packets (a retransmitted FIN, say) came after it.
        let reported_all = flow.reported.closed() && flow.unreported_packets() == [0, 0];
        if self.record_flow_ends && !reported_all {
            let pool = flow.mapping.get().and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            self.push_record(FlowEnd::of(flow, pool, end_ms, reason));
        }
        if let Some(m) = flow.mapping.get() {
            self.mappings.release(m);
        }
        if let Some(p) = self.precopy.as_mut() {
            p.ended(&flow.keys[crate::conntrack::ORIGINAL]);
        }
        // A stopping gateway's flows live on at the standby: no deletes for them.
        if let (Some(log), false) = (self.replication.as_mut(), reason == EndReason::Shutdown) {
            log.ended(id, &flow.keys[crate::conntrack::ORIGINAL]);
        }
    }

    /// Ends every flow (the gateway is stopping), for the flow log.
    pub fn shutdown(&mut self, now_ms: u64) {
        let ids: Vec<FlowId> = self.flows.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(flow) = self.flows.remove(id) {
                self.flow_ended(id, &flow, now_ms, EndReason::Shutdown);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use natgw_testkit::{ipv4_frame, udp_datagram};
    use natgw_wire::{Ipv4Net, PROTO_UDP};

    use super::super::pool::PoolSpec;
    use super::super::{Filtering, FrameMeta, InsideLink, NatConfig, Translator, Verdict};
    use super::*;
    use crate::conntrack::Timeouts;
    use crate::counters::Counters;

    pub const INSIDE_HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 2);
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

    /// A translator for one inside subnet (10.10.1.0/24) leaving from 198.51.100.10.
    pub fn translator(now_ms: u64) -> Translator {
        let cfg = NatConfig {
            inside: vec![InsideLink {
                name: "in1".into(),
                addresses: vec![Ipv4Net { addr: Ipv4Addr::new(10, 10, 1, 1), prefix: 24 }],
                mtu: 1500,
            }],
            external_addrs: vec![EXTERNAL],
            source_ports: Default::default(),
            source_flows: Default::default(),
            pools: vec![PoolSpec { name: "default".into(), addrs: vec![EXTERNAL], lo: 1024, hi: 65535 }],
            outside_net: Ipv4Net { addr: Ipv4Addr::new(198, 51, 100, 0), prefix: 24 },
            outside_gateway: Ipv4Addr::new(198, 51, 100, 1),
            outside_mtu: 1500,
            filtering: Filtering::AddressAndPortDependent,
            timeouts: Timeouts::default(),
            max_flows: 1000,
            high_water_flows: 1000,
            max_flows_per_source: 0,
            max_inbound_per_mapping: 0,
            fragment_memory: 4 << 20,
            worker: 0,
            workers: 1,
            icmp_error_rate: 1000,
            refusal_cache_ms: 0,
            node_slice: (0, 1),
        };
        Translator::new(cfg, Arc::new(Counters::default()), now_ms)
    }

    /// Sends one 44-byte UDP datagram (16 bytes of payload) from 10.10.1.2:5000 to
    /// 203.0.113.7:53 at `now_ms`; it must be forwarded.
    pub fn send_out(t: &mut Translator, now_ms: u64) {
        let l4 = udp_datagram(INSIDE_HOST, 5000, SERVER, 53, b"0123456789abcdef", true);
        let mut frame = ipv4_frame(INSIDE_HOST, SERVER, PROTO_UDP, 64, 1, 0, &l4);
        let mut out = vec![0u8; 2048];
        let v = t.process(&mut frame, FrameMeta::plain(Side::Inside, 0), now_ms, &mut out);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }

    /// The translator's one flow.
    pub fn only_flow(t: &mut Translator) -> &mut Flow {
        let id = t.flows.iter().map(|(id, _)| id).next().expect("a flow");
        t.flows.get_mut(id).expect("its flow")
    }

    /// A record's reason, packets and bytes (out, in), start and end.
    type Counted = (EndReason, [u64; 2], [u64; 2], u64, u64);

    fn records(t: &mut Translator) -> Vec<Counted> {
        let mut ends = Vec::new();
        t.take_flow_ends(&mut ends);
        ends.iter().map(|e| (e.reason, e.packets, e.bytes, e.start_ms, e.end_ms)).collect()
    }

    #[test]
    fn a_flow_whose_bytes_pass_2_to_the_40_between_records_is_counted_exactly() {
        let mut t = translator(1000);
        t.record_flow_ends(true, false, 0);
        send_out(&mut t, 1000);
        // As if 1 TiB - 820 bytes in 3 packets had passed before a record at 1.5 s, and
        // then 2^39 - 94 bytes without one (that is, below where a record is due).
        let f = only_flow(&mut t);
        (f.packets, f.bytes) = ([3, 0], [1_099_511_627_000, 0]);
        f.mark_reported(1500, false);
        (f.packets, f.bytes) = ([10, 0], [1_099_511_627_000 + 549_755_813_794, 0]);
        send_out(&mut t, 2000);
        send_out(&mut t, 2001);
        assert_eq!(t.queued_record_checks(), 0, "2^39 - 6 bytes unreported: not yet");
        send_out(&mut t, 2002);
        assert_eq!(t.queued_record_checks(), 1, "2^39 + 38 bytes unreported: due");
        send_out(&mut t, 2003);
        assert_eq!(t.queued_record_checks(), 1, "one check, however many packets before the tick");
        t.tick(2010);
        // The packets and bytes since 1.5 s, though the total passed 2^40 in them.
        assert_eq!(records(&mut t), vec![(EndReason::Active, [11, 0], [549_755_813_970, 0], 1500, 2010)]);
        assert_eq!(t.queued_record_checks(), 0);

        // Another 2^39 - 88 bytes, then a packet: the flow ends before a record is due.
        let f = only_flow(&mut t);
        assert_eq!(f.reported_bytes(), [1_649_267_440_970, 0]);
        f.bytes[ORIGINAL] += 549_755_813_800;
        send_out(&mut t, 3000);
        t.tick(3000 + 301_000);
        // 2^40 + 38 bytes between the record at 1.5 s and this one, each counted once.
        assert_eq!(records(&mut t), vec![(EndReason::IdleTimeout, [1, 0], [549_755_813_844, 0], 2010, 304_000)]);
        assert_eq!(549_755_813_970 + 549_755_813_844, 1_099_511_627_776u64 + 38);
    }

    #[test]
    fn without_a_flow_log_the_copy_of_the_counters_moves_up() {
        let mut t = translator(1000);
        send_out(&mut t, 1000);
        let f = only_flow(&mut t);
        f.packets[ORIGINAL] = 2_147_483_647 + 5_000_000_000;
        f.set_reported([5_000_000_000, 0], [0, 0], 0, false);
        send_out(&mut t, 2000);
        let f = only_flow(&mut t);
        assert_eq!((f.unreported_packets(), f.reported_packets()), ([0, 0], [7_147_483_648, 0]));
        assert_eq!((f.unreported_bytes(), f.reported.at_ms()), ([0, 0], 0), "no record: still nothing reported");
        assert_eq!(t.queued_record_checks(), 0);
        t.tick(2010);
        assert_eq!(records(&mut t), vec![]);
    }
}
