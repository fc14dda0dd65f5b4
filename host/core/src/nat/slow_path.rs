//! The slow path: a packet that matched no flow. Filtering, the policy questions (egress
//! before anything is allocated, then the pool), mapping allocation, flow insert; and
//! revalidation of existing flows against a new egress policy.

use natgw_wire::{icmpv4, tcp, L4Header, PROTO_ICMP, PROTO_TCP};

use super::flow_records::{EndReason, FlowDirection, FlowEnd, RecordCheck};
use super::policy::{DestinationNames, EgressDecision, NewFlow, PoolDecision};
use super::pool::{MappingId, PoolId};
use super::{Filtering, FrameMeta, Parsed, Translator};
use crate::conntrack::tcp_window::TcpWindows;
use crate::conntrack::{
    Egress, Endpoint, Flow, FlowId, FlowKey, FlowMarks, FlowState, MappingRef, Ms40, Reported, Rewrite, Side, TcpState,
    TcpWindowsRef, ORIGINAL, REPLY,
};
use crate::counters::Counter;

impl Translator {
    /// Slow path: a packet that matched no flow.
    pub(super) fn new_flow(
        &mut self,
        frame: &[u8],
        key: &FlowKey,
        p: &Parsed,
        meta: FrameMeta,
        now_ms: u64,
    ) -> Result<(FlowId, usize), Counter> {
        match p.l4 {
            L4Header::Tcp { flags, .. } if flags & (tcp::SYN | tcp::ACK) != tcp::SYN => {
                return Err(match meta.side {
                    Side::Outside => Counter::DropUnsolicitedInbound,
                    Side::Inside => Counter::DropTcpNoFlow,
                })
            }
            L4Header::Tcp { .. } | L4Header::Udp { .. } => {}
            L4Header::IcmpQuery { icmp_type: icmpv4::ECHO_REQUEST, .. } => {}
            L4Header::IcmpQuery { .. } => {
                return Err(match meta.side {
                    Side::Outside => Counter::DropUnsolicitedInbound,
                    Side::Inside => Counter::DropUnsupportedProtocol,
                })
            }
            _ => return Err(Counter::DropUnsupportedProtocol),
        }
        if p.ttl <= 1 {
            // Never create state for a packet that dies here; the caller answers it.
            return Err(Counter::DropTtlExpired);
        }
        self.packet_len = p.total as u64;
        self.packet_ms = now_ms;
        // One inside host may hold only its share of the table (checked before any policy
        // call: a scan costs no Wasm).
        let per_source = self.cfg.max_flows_per_source;
        if meta.side == Side::Inside && per_source != 0 && self.flows.flows_of_source(key.src) as usize >= per_source {
            return Err(Counter::DropSourceFlowLimit);
        }
        let (id, dir) = match meta.side {
            Side::Inside if self.mappings.is_external(key.dst) => self.new_hairpin_flow(key, meta, now_ms),
            Side::Inside => self.new_outbound_flow(key, meta, now_ms),
            Side::Outside => self.new_inbound_flow(key, now_ms),
        }?;
        if let (L4Header::Tcp { .. }, Some(windows)) = (p.l4, self.flows.windows_mut(id)) {
            // The SYN that opens it starts window tracking (netfilter's tcp_new).
            *windows = TcpWindows::from_syn(&p.segment(frame));
        }
        Ok((id, dir))
    }

    pub(super) fn insert_flow(&mut self, flow: Flow) -> Result<FlowId, Counter> {
        let mapping = flow.mapping.get();
        let created = flow.created_ms();
        match self.flows.insert(flow) {
            Ok(id) => {
                if self.active_interval_ms > 0 {
                    self.interim_checks.push_back(RecordCheck::new(created + self.active_interval_ms, id, created));
                    self.compact_checks();
                }
                self.counters.inc(Counter::ConnectionAttemptCount);
                self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
                self.replicate_changed(id);
                Ok(id)
            }
            Err(_) => {
                if let Some(m) = mapping {
                    self.mappings.release(m);
                }
                Err(Counter::DropTableFull)
            }
        }
    }

    /// Whether a new flow can have a place: there is room, or a flow never answered to
    /// give up for it. Cheap; asked before the policy.
    fn may_find_room(&self) -> Result<(), Counter> {
        if self.flows.len() >= self.flows.max_flows() && self.flows.unanswered() == 0 {
            return Err(Counter::DropTableFull);
        }
        Ok(())
    }

    /// Makes room for one new flow: when the table is full, the oldest flow never
    /// answered goes (netfilter's early drop, without its bucket scan: the table keeps
    /// them in order). Any mapping looked up before may have gone with it.
    fn make_room(&mut self, now_ms: u64) -> Result<(), Counter> {
        if self.flows.len() < self.flows.max_flows() {
            return Ok(());
        }
        let Some((id, _)) = self.flows.oldest_unanswered() else { return Err(Counter::DropTableFull) };
        self.early_drop(id, now_ms);
        Ok(())
    }

    /// Gives up a flow never answered before its timeout.
    pub(super) fn early_drop(&mut self, id: FlowId, now_ms: u64) {
        if let Some(flow) = self.flows.remove(id) {
            self.counters.inc(Counter::EarlyDropCount);
            self.flow_ended(id, &flow, now_ms, EndReason::EarlyDrop);
        }
    }

    /// Past the high-water mark: flows never answered and older than
    /// `timeouts.unanswered_under_pressure` go, oldest first, at most `budget` per call.
    /// Below the mark every flow keeps its full timeout (the RFC 4787 and 5382 floors).
    pub(super) fn relieve_pressure(&mut self, now_ms: u64, budget: usize) {
        let min_age_ms = self.cfg.timeouts.unanswered_under_pressure.saturating_mul(1000);
        for _ in 0..budget {
            if self.flows.len() <= self.cfg.high_water_flows {
                return;
            }
            let Some((id, flow)) = self.flows.oldest_unanswered() else { return };
            if flow.created_ms().saturating_add(min_age_ms) > now_ms {
                return;
            }
            self.early_drop(id, now_ms);
        }
    }

    pub(super) fn blank_flow(
        &mut self,
        keys: [FlowKey; 2],
        rewrite: [Rewrite; 2],
        egress: [Egress; 2],
        now_ms: u64,
    ) -> Flow {
        // What the keys say is what each packet leaves with (`Flow::rewrite`); the
        // rewrite the caller worked out is the check on that.
        debug_assert_eq!(rewrite, crate::conntrack::rewrites_of(&keys), "keys {keys:?}");
        let mut f = Flow {
            keys,
            deltas: Default::default(),
            egress,
            state: FlowState::initial(keys[ORIGINAL].proto),
            tcp_flags: [0; 2],
            packets: [0; 2],
            bytes: [0; 2],
            created: Ms40::new(now_ms),
            last_seen: Ms40::new(now_ms),
            expires_after_ms: 0,
            mapping: MappingRef::NONE,
            policy_generation: u32::try_from(self.policy.egress_generation()).unwrap_or(u32::MAX),
            reported: Reported::default(),
            windows: TcpWindowsRef::NONE,
            marks: FlowMarks::default(),
        };
        // The shadow's answer to the egress question that admitted this flow.
        f.marks.set_shadow(self.shadow_answer.take());
        f.refresh(now_ms, &self.cfg.timeouts);
        f
    }

    /// The mapping for the packet's inside endpoint (creating it if needed), unless the
    /// table is full or the pool is exhausted (counted as ErrorPortAllocation).
    pub(super) fn acquire_mapping(
        &mut self,
        key: &FlowKey,
        link: u8,
        now_ms: u64,
    ) -> Result<(Endpoint, MappingId, Endpoint), Counter> {
        self.may_find_room()?;
        let (pool, budget) = self.ask_policy(key, link)?;
        self.make_room(now_ms)?;
        let inside = Endpoint { addr: key.src, port: key.src_port };
        let Ok(mid) = self.mappings.acquire_in(pool, budget, key.proto, inside, link) else {
            self.counters.inc(Counter::ErrorPortAllocation);
            return Err(Counter::DropPortAllocation);
        };
        let ext = self.mappings.get(mid).map(|m| m.external).ok_or(Counter::DropPortAllocation)?;
        Ok((inside, mid, ext))
    }

    /// The slow path's policy questions for a new flow from the inside: may it leave, and
    /// from which pool. Runs before any port is allocated.
    pub(super) fn ask_policy(&mut self, key: &FlowKey, link: u8) -> Result<(PoolId, Option<u32>), Counter> {
        let nf = new_flow_of(key, link);
        match self.ask_egress(&nf, FlowDirection::Egress) {
            EgressDecision::Allow => {}
            EgressDecision::Deny => return Err(Counter::DropPolicyDenied),
            EgressDecision::Reject => return Err(Counter::DropPolicyRejected),
        }
        match self.policy.port_pool(&nf) {
            PoolDecision::Pool { pool, budget } if usize::from(pool) < self.mappings.pool_count() => Ok((pool, budget)),
            PoolDecision::Pool { .. } | PoolDecision::Refuse => Err(Counter::DropPolicyError),
        }
    }

    pub(super) fn new_outbound_flow(
        &mut self,
        key: &FlowKey,
        meta: FrameMeta,
        now_ms: u64,
    ) -> Result<(FlowId, usize), Counter> {
        let (inside, mid, ext) = self.acquire_mapping(key, meta.link, now_ms)?;
        // ICMP echo has one identifier for both ends: the reply carries the translated one.
        let remote_port = if key.proto == PROTO_ICMP { ext.port } else { key.dst_port };
        let remote = Endpoint { addr: key.dst, port: remote_port };
        let reply = FlowKey {
            side: Side::Outside,
            proto: key.proto,
            src: remote.addr,
            src_port: remote.port,
            dst: ext.addr,
            dst_port: ext.port,
        };
        let mut flow = self.blank_flow(
            [*key, reply],
            [Rewrite { src: ext, dst: remote }, Rewrite { src: remote, dst: inside }],
            [Egress::Outside, Egress::Inside(meta.link)],
            now_ms,
        );
        flow.mapping = MappingRef::to(mid);
        let id = self.insert_flow(flow)?;
        Ok((id, ORIGINAL))
    }

    /// The egress question, recorded as a REJECT flow record when the answer is no. A
    /// refusal is remembered for its tuple for a moment (`refusals`): the packets that
    /// follow get it without a call, and one summary record per interval.
    fn ask_egress(&mut self, nf: &NewFlow, direction: FlowDirection) -> EgressDecision {
        let generation = self.policy.egress_generation();
        let (len, now) = (self.packet_len, self.packet_ms);
        if let Some(verdict) = self.refusals.lookup(nf, direction, generation, len, now) {
            // No policy was asked, the shadow neither: nothing of an earlier answer carries over.
            self.shadow_answer = None;
            self.counters.inc(Counter::PolicyRefusalsCached);
            return verdict;
        }
        let names = DestinationNames::new(self.dns.as_ref().map(|d| &**d.table()), nf.src, nf.dst, now);
        let verdict = self.policy.egress_named(nf, names);
        self.shadow_answer = self.policy.shadow_verdict();
        if verdict == EgressDecision::Allow {
            return verdict;
        }
        // The fail mode answers for a failed policy, not for the tuple: never remembered.
        let first = if self.policy.egress_failed() {
            true
        } else {
            let hold = self.policy.egress_hold_ms();
            let r = self.refusals.remember(nf, direction, verdict, generation, len, now, hold);
            if r.evicted {
                self.counters.inc(Counter::PolicyRefusalsEvicted);
            }
            if let Some(s) = r.summary.filter(|_| self.record_refused) {
                self.push_refusal_summary(s);
            }
            r.first
        };
        if first && self.record_refused {
            let shadow = self.shadow_answer.take();
            self.push_record(FlowEnd::refused(nf, direction, verdict, generation, len, now).with_shadow(shadow));
        }
        verdict
    }

    /// A packet from outside to a mapped port with no matching flow: allowed only under
    /// endpoint-independent filtering (RFC 4787 REQ-8 makes it an option), and only when the
    /// egress policy allows the inside host to talk to that remote: the flow will carry
    /// the inside host's packets to it, and filtering must not be a way round the policy.
    /// A refused one is dropped without an answer (counted as policy-denied).
    pub(super) fn new_inbound_flow(&mut self, key: &FlowKey, now_ms: u64) -> Result<(FlowId, usize), Counter> {
        if self.cfg.filtering != Filtering::EndpointIndependent || key.proto == PROTO_ICMP {
            return Err(Counter::DropUnsolicitedInbound);
        }
        let mid = self.mappings.by_external(key.proto, key.dst, key.dst_port).ok_or(Counter::DropUnsolicitedInbound)?;
        let m = self.mappings.get(mid).cloned().ok_or(Counter::DropUnsolicitedInbound)?;
        let limit = self.cfg.max_inbound_per_mapping;
        if limit != 0 && self.flows.inbound_flows_of_mapping(mid) as usize >= limit {
            return Err(Counter::DropMappingInboundLimit);
        }
        self.may_find_room()?;
        let remote = Endpoint { addr: key.src, port: key.src_port };
        let reply = FlowKey {
            side: Side::Inside,
            proto: key.proto,
            src: m.inside.addr,
            src_port: m.inside.port,
            dst: remote.addr,
            dst_port: remote.port,
        };
        if self.ask_egress(&new_flow_of(&reply, m.inside_if), FlowDirection::Ingress) != EgressDecision::Allow {
            return Err(Counter::DropPolicyDenied);
        }
        self.make_room(now_ms)?;
        // The flow given up for room may have held the mapping's last reference.
        if self.mappings.by_external(key.proto, key.dst, key.dst_port) != Some(mid) {
            return Err(Counter::DropUnsolicitedInbound);
        }
        let mut flow = self.blank_flow(
            [*key, reply],
            [Rewrite { src: remote, dst: m.inside }, Rewrite { src: m.external, dst: remote }],
            [Egress::Inside(m.inside_if), Egress::Outside],
            now_ms,
        );
        self.mappings.add_ref(mid);
        flow.mapping = MappingRef::to(mid);
        let id = self.insert_flow(flow)?;
        Ok((id, ORIGINAL))
    }

    /// Hairpinning (RFC 4787 REQ-9): an inside host reaching another inside host's mapping.
    /// The source is translated to its own mapping, the destination to the other host, and
    /// the packet turns round towards the inside. Filtering applies as for outside peers.
    pub(super) fn new_hairpin_flow(
        &mut self,
        key: &FlowKey,
        meta: FrameMeta,
        now_ms: u64,
    ) -> Result<(FlowId, usize), Counter> {
        if self.cfg.filtering != Filtering::EndpointIndependent {
            return Err(Counter::DropUnsolicitedInbound);
        }
        if self.mappings.by_external(key.proto, key.dst, key.dst_port).is_none() {
            return Err(Counter::DropUnsolicitedInbound);
        }
        let (inside, mid, ext) = self.acquire_mapping(key, meta.link, now_ms)?;
        // Looked up after room was made: the flow given up may have held the target.
        let target = self.mappings.by_external(key.proto, key.dst, key.dst_port).and_then(|t| self.mappings.get(t));
        let Some(target) = target.cloned() else {
            self.mappings.release(mid);
            return Err(Counter::DropUnsolicitedInbound);
        };
        let reply = FlowKey {
            side: Side::Inside,
            proto: key.proto,
            src: target.inside.addr,
            src_port: target.inside.port,
            dst: ext.addr,
            dst_port: ext.port,
        };
        let mut flow = self.blank_flow(
            [*key, reply],
            [Rewrite { src: ext, dst: target.inside }, Rewrite { src: target.external, dst: inside }],
            [Egress::Inside(target.inside_if), Egress::Inside(meta.link)],
            now_ms,
        );
        flow.mapping = MappingRef::to(mid);
        let id = self.insert_flow(flow)?;
        Ok((id, ORIGINAL))
    }

    /// Re-checks every flow against the current egress policy, as the inside host's
    /// packets carry it (those opened from outside under endpoint-independent filtering
    /// too), and revokes those it no longer allows: from then on their packets are dropped
    /// and TCP ones answered with a RST (whose sequence number only a live packet can
    /// give), until they expire after `timeouts.tcp_closed`. Returns how many flows were
    /// revoked.
    pub fn revalidate(&mut self, now_ms: u64) -> usize {
        let mut revoke = Vec::new();
        for (id, flow) in self.flows.iter() {
            if flow.marks.revoked() {
                continue;
            }
            // Asked as the inside host's packets carry the flow: for one opened from inside
            // (or a hairpin) its original direction, for one opened from outside its reply.
            let (inside_dir, towards_host) =
                if flow.keys[ORIGINAL].side == Side::Inside { (ORIGINAL, REPLY) } else { (REPLY, ORIGINAL) };
            let ingress = match flow.egress[towards_host] {
                Egress::Inside(i) => i,
                Egress::Outside => 0,
            };
            let nf = new_flow_of(&flow.keys[inside_dir], ingress);
            let names = DestinationNames::new(self.dns.as_ref().map(|d| &**d.table()), nf.src, nf.dst, now_ms);
            if self.policy.egress_recheck(&nf, names) != EgressDecision::Allow {
                revoke.push(id);
            }
        }
        let closed = self.cfg.timeouts.tcp_closed;
        for &id in &revoke {
            let Some(flow) = self.flows.get_mut(id) else { continue };
            flow.marks.set_revoked(true);
            if let Some(log) = self.replication.as_mut() {
                log.changed(id, flow.created_ms());
            }
            if let Some(p) = self.precopy.as_mut() {
                p.changed(id);
            }
            if flow.keys[ORIGINAL].proto == PROTO_TCP {
                flow.state = FlowState::Tcp(TcpState::Closed);
                flow.set_expires_ms(now_ms + closed * 1000);
                self.flows.reschedule(id);
            } else if let Some(flow) = self.flows.remove(id) {
                self.flow_ended(id, &flow, now_ms, EndReason::Revalidated);
            }
        }
        self.counters.add(Counter::PolicyRevokedFlows, revoke.len() as u64);
        self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
        revoke.len()
    }
}

/// What a policy is told about a flow, from the key of its inside host's packets.
pub(super) fn new_flow_of(key: &FlowKey, ingress: u8) -> NewFlow {
    NewFlow {
        proto: key.proto,
        src: key.src,
        src_port: key.src_port,
        dst: key.dst,
        // ICMP echo: the identifier is in src_port; there is no destination port.
        dst_port: if key.proto == PROTO_ICMP { 0 } else { key.dst_port },
        ingress: u16::from(ingress),
    }
}
