//! The translator: SNAT/PAT outbound, the reverse inbound, ICMP query and ICMP error
//! translation, fragments, TTL and ICMP time-exceeded, hairpinning, and the gateway's own
//! answers to ping.
//!
//! Owns: one worker's flows, mappings and fragment state. Must never: perform I/O, read a
//! clock, allocate on the fast path, or panic on any input. It is a function of
//! `(frame, metadata, now)` that rewrites the frame in place and says what to do with it;
//! the io layer fills in link-layer addresses and moves buffers.
//!
//! Fast path: parse → flow lookup → apply the flow's precomputed rewrite. A miss goes to
//! `slow_*`: filtering, mapping allocation, flow insert.

pub mod frag;
pub mod policy;
pub mod pool;

use std::net::Ipv4Addr;
use std::sync::Arc;

use natgw_wire::Ipv4Net;

use crate::conntrack::{
    tcp_transition, Egress, Endpoint, Flow, FlowId, FlowKey, FlowState, FlowTable, Reported, Rewrite, Side, TcpState,
    Timeouts, ORIGINAL, REPLY,
};
use crate::counters::{Counter, Counters};
use frag::{FragKey, FragTable};
use natgw_wire as wire;
use natgw_wire::checksum;
use natgw_wire::{
    ipv4_field, l4_field, parse_l4, EthernetFrame, Ipv4Packet, L4Header, WireError, ETHERNET_HEADER_LEN,
    ETHERTYPE_IPV4, ICMP_CODE_ADMIN_PROHIBITED, ICMP_CODE_FRAG_NEEDED, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};
use policy::{AllowAll, EgressDecision, FlowPolicy, NewFlow, PoolDecision};
use pool::{Mappings, PoolId, PoolSpec};

/// Endpoint filtering for inbound packets (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Only replies from the exact remote address and port a flow was sent to (default).
    AddressAndPortDependent,
    /// Anyone may reach an existing mapping.
    EndpointIndependent,
}

/// One inside interface: its gateway addresses (with their subnets) and MTU.
#[derive(Debug, Clone)]
pub struct InsideLink {
    pub name: String,
    pub addresses: Vec<Ipv4Net>,
    pub mtu: u16,
}

/// Everything the translator needs to know about the gateway, per worker.
#[derive(Debug, Clone)]
pub struct NatConfig {
    pub inside: Vec<InsideLink>,
    pub external_addrs: Vec<Ipv4Addr>,
    /// Pools of external addresses and ports; pool 0 is the default. Every address is one
    /// of `external_addrs`.
    pub pools: Vec<PoolSpec>,
    /// Live mappings per inside source and pool, shared by every worker's translator
    /// (per-source port budgets hold for the whole gateway).
    pub source_ports: Arc<pool::SourcePorts>,
    pub outside_net: Ipv4Net,
    pub outside_gateway: Ipv4Addr,
    pub outside_mtu: u16,
    pub filtering: Filtering,
    pub timeouts: Timeouts,
    /// Flow table limit for this worker.
    pub max_flows: usize,
    pub worker: usize,
    pub workers: usize,
    /// ICMP errors natgw may generate per second (per worker).
    pub icmp_error_rate: u32,
}

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub side: Side,
    /// Index of the inside interface (0 for the outside).
    pub link: u8,
    /// The L4 checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL).
    pub csum_partial: bool,
    /// For a GSO super-frame (larger than the MTU on purpose, segmented by the device):
    /// the payload bytes per segment. 0 for an ordinary frame.
    pub gso_size: u16,
    /// Wire packets this frame stands for (GSO segments), for packet counters.
    pub segments: u32,
    /// The frame came from another worker: do not hand it off again.
    pub handed_off: bool,
}

impl FrameMeta {
    pub fn plain(side: Side, link: u8) -> Self {
        FrameMeta { side, link, csum_partial: false, gso_size: 0, segments: 1, handed_off: false }
    }

    /// The link the frame came in on: where answers from natgw itself go back out.
    fn arrived_from(&self) -> Egress {
        match self.side {
            Side::Outside => Egress::Outside,
            Side::Inside => Egress::Inside(self.link),
        }
    }
}

/// What to do with a frame after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The frame was rewritten in place: send it out `egress` to the link-layer address of
    /// `next_hop`. Ethernet addresses are left for the caller to fill.
    Forward { egress: Egress, next_hop: Ipv4Addr },
    /// A new packet natgw generated is in `out[..len]` (Ethernet header included, its
    /// addresses left for the caller); the input frame is dropped.
    Emit { egress: Egress, next_hop: Ipv4Addr, len: usize },
    /// Like `Forward`, but the packet (DF clear) is larger than the egress MTU: send it as
    /// the fragments `wire::split_ipv4(packet, mtu)` describes. Checksums are complete.
    ForwardFragmented { egress: Egress, next_hop: Ipv4Addr, mtu: u16 },
    /// Another worker owns this flow: give it the unchanged frame.
    HandOff { worker: usize },
    /// A fragment arrived before its first fragment: the translator kept a copy.
    Held,
    /// Dropped, and counted under this counter.
    Drop(Counter),
}

fn drop_for(e: WireError) -> Counter {
    match e {
        WireError::Truncated => Counter::DropTruncated,
        WireError::UnknownEtherType | WireError::NotIpv4 => Counter::DropUnknownEthertype,
        WireError::BadIhl => Counter::DropBadIhl,
        WireError::BadTotalLength => Counter::DropBadTotalLength,
        WireError::IpOptions => Counter::DropIpOptions,
        WireError::BadIpChecksum => Counter::DropBadIpChecksum,
        WireError::BadTcpHeader => Counter::DropBadTcpHeader,
        WireError::BadUdpLength => Counter::DropBadUdpLength,
        WireError::BadIcmp => Counter::DropBadIcmp,
        WireError::BadIcmpQuote => Counter::DropBadIcmpQuote,
    }
}

/// What a policy is told about a flow, from the key of its inside host's packets.
fn new_flow_of(key: &FlowKey, ingress: u8) -> NewFlow {
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

/// Which worker owns a port (or ICMP identifier). Mirrored by the kernel steering program.
pub fn owner_of_port(port: u16, workers: usize) -> usize {
    usize::from(port) % workers.max(1)
}

/// What the translator learned about an IPv4 packet before deciding.
struct Parsed {
    ihl: usize,
    total: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    l4: L4Header,
    is_fragment: bool,
    first_fragment: bool,
}

/// A translator for one worker.
pub struct Translator {
    cfg: NatConfig,
    flows: FlowTable,
    mappings: Mappings,
    frags: FragTable,
    counters: Arc<Counters>,
    icmp_tokens: u32,
    icmp_refill_ms: u64,
    ip_ident: u16,
    policy: Box<dyn FlowPolicy>,
    /// Flow-log records, when `record_flow_ends` is on.
    ended: Vec<FlowEnd>,
    record_flow_ends: bool,
    /// Also record refused flows.
    record_refused: bool,
    /// Interim records for flows older than this (0: none).
    active_interval_ms: u64,
    /// Flows to look at for a record that is due without them expiring, in due order
    /// (due, flow, its creation time to tell it from a later flow in the same slot):
    /// TCP connections that closed, and long flows (every `active_interval_ms`).
    close_checks: std::collections::VecDeque<(u64, FlowId, u64)>,
    interim_checks: std::collections::VecDeque<(u64, FlowId, u64)>,
    /// The IP length of the packet being translated, for a refused flow's record.
    packet_len: u64,
    /// Time of the packet being translated.
    packet_ms: u64,
}

/// Why the flow log has a record (its `end-reason`): the flow ended, is still running
/// (an interim record, every `flow_log.active_interval_s`), or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    Closed,
    Reset,
    IdleTimeout,
    Revalidated,
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
}

impl FlowEnd {
    fn of(flow: &Flow, pool: PoolId, end_ms: u64, reason: EndReason) -> Self {
        // The direction whose packets come from the inside host.
        let d = if flow.keys[ORIGINAL].side == Side::Inside { ORIGINAL } else { REPLY };
        let k = flow.keys[d];
        let r = &flow.reported;
        FlowEnd {
            proto: k.proto,
            src: Endpoint { addr: k.src, port: k.src_port },
            dst: Endpoint { addr: k.dst, port: if k.proto == PROTO_ICMP { 0 } else { k.dst_port } },
            ingress: match flow.egress[1 - d] {
                Egress::Inside(i) => i,
                Egress::Outside => 0,
            },
            nat_src: flow.rewrite[d].src,
            pool,
            packets: [flow.packets[d] - r.packets[d], flow.packets[1 - d] - r.packets[1 - d]],
            bytes: [flow.bytes[d] - r.bytes[d], flow.bytes[1 - d] - r.bytes[1 - d]],
            tcp_flags: flow.tcp_flags[0] | flow.tcp_flags[1],
            start_ms: if r.at_ms == 0 { flow.created_ms } else { r.at_ms },
            end_ms,
            created_ms: flow.created_ms,
            reason,
            direction: if d == ORIGINAL { FlowDirection::Egress } else { FlowDirection::Ingress },
            verdict: EgressDecision::Allow,
            policy_generation: flow.policy_generation,
        }
    }

    /// A flow the egress policy refused, from its first packet.
    fn refused(nf: &NewFlow, verdict: EgressDecision, generation: u64, bytes: u64, now_ms: u64) -> Self {
        FlowEnd {
            proto: nf.proto,
            src: Endpoint { addr: nf.src, port: nf.src_port },
            dst: Endpoint { addr: nf.dst, port: nf.dst_port },
            ingress: nf.ingress as u8,
            nat_src: Endpoint { addr: Ipv4Addr::UNSPECIFIED, port: 0 },
            pool: 0,
            packets: [1, 0],
            bytes: [bytes, 0],
            tcp_flags: 0,
            start_ms: now_ms,
            end_ms: now_ms,
            created_ms: now_ms,
            reason: EndReason::Refused,
            direction: FlowDirection::Egress,
            verdict,
            policy_generation: generation,
        }
    }

    /// ACCEPT or REJECT, as VPC Flow Logs' `action`.
    pub fn accepted(&self) -> bool {
        self.reason != EndReason::Refused
    }
}

/// At most this many finished flows wait in a translator between worker batches.
pub const MAX_PENDING_FLOW_ENDS: usize = 4096;

impl Translator {
    pub fn new(cfg: NatConfig, counters: Arc<Counters>, now_ms: u64) -> Self {
        let mappings =
            Mappings::with_pools(cfg.pools.clone(), cfg.worker as u16, cfg.workers as u16, cfg.source_ports.clone());
        Translator {
            policy: Box::new(AllowAll),
            ended: Vec::new(),
            record_flow_ends: false,
            record_refused: false,
            active_interval_ms: 0,
            close_checks: Default::default(),
            interim_checks: Default::default(),
            packet_len: 0,
            packet_ms: now_ms,
            flows: FlowTable::new(cfg.max_flows, now_ms),
            frags: FragTable::new(now_ms),
            icmp_tokens: cfg.icmp_error_rate,
            icmp_refill_ms: now_ms,
            ip_ident: (cfg.worker as u16).wrapping_mul(7919),
            mappings,
            counters,
            cfg,
        }
    }

    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }
    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// Installs the slow path's policy (egress check and pool choice for new flows).
    pub fn set_policy(&mut self, policy: Box<dyn FlowPolicy>) {
        self.policy = policy;
    }

    /// Between batches of frames: lets a new policy generation take over.
    pub fn policy_batch_boundary(&mut self) {
        self.policy.batch_boundary();
    }

    /// Keep a `FlowEnd` for every flow that ends, for `take_flow_ends`; with `refused`,
    /// one for every flow the egress policy refuses too; with `active_interval_s` > 0, an
    /// interim one for every flow that has run that long since its last record.
    pub fn record_flow_ends(&mut self, on: bool, refused: bool, active_interval_s: u64) {
        self.record_flow_ends = on;
        self.record_refused = on && refused;
        self.active_interval_ms = if on { active_interval_s * 1000 } else { 0 };
    }

    fn push_record(&mut self, e: FlowEnd) {
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
    fn due_records(&mut self, now_ms: u64) {
        if !self.record_flow_ends {
            self.close_checks.clear();
            self.interim_checks.clear();
            return;
        }
        while let Some(&(due, id, created)) = self.close_checks.front() {
            if due > now_ms {
                break;
            }
            self.close_checks.pop_front();
            let Some(flow) = self.flows.get_mut(id).filter(|f| f.created_ms == created) else { continue };
            let reason = match flow.state {
                FlowState::Tcp(TcpState::TimeWait) => EndReason::Closed,
                FlowState::Tcp(TcpState::Closed) if !flow.revoked => EndReason::Reset,
                _ => continue,
            };
            if flow.reported.closed {
                continue;
            }
            if now_ms < flow.last_seen_ms + 1000 {
                self.close_checks.push_back((flow.last_seen_ms + 1000, id, created));
                continue;
            }
            let pool = flow.mapping.and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            let record = FlowEnd::of(flow, pool, now_ms, reason);
            flow.reported = Reported { packets: flow.packets, bytes: flow.bytes, at_ms: now_ms, closed: true };
            self.push_record(record);
        }
        let interval = self.active_interval_ms;
        while let Some(&(due, id, created)) = self.interim_checks.front() {
            if due > now_ms {
                break;
            }
            self.interim_checks.pop_front();
            let Some(flow) = self.flows.get_mut(id).filter(|f| f.created_ms == created) else { continue };
            if interval == 0 || flow.reported.closed {
                continue;
            }
            let pool = flow.mapping.and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            let record = FlowEnd::of(flow, pool, now_ms, EndReason::Active);
            flow.reported = Reported { packets: flow.packets, bytes: flow.bytes, at_ms: now_ms, closed: false };
            self.push_record(record);
            self.interim_checks.push_back((now_ms + interval, id, created));
        }
    }

    /// Flow-log records produced since the last call.
    pub fn take_flow_ends(&mut self, into: &mut Vec<FlowEnd>) {
        into.append(&mut self.ended);
    }

    fn flow_ended(&mut self, flow: &Flow, end_ms: u64, reason: EndReason) {
        // A closed connection's final record went out already; a later one only if
        // packets (a retransmitted FIN, say) came after it.
        let reported_all = flow.reported.closed && flow.reported.packets == flow.packets;
        if self.record_flow_ends && !reported_all {
            let pool = flow.mapping.and_then(|m| self.mappings.get(m)).map_or(0, |m| m.pool);
            self.push_record(FlowEnd::of(flow, pool, end_ms, reason));
        }
        if let Some(m) = flow.mapping {
            self.mappings.release(m);
        }
    }

    /// Re-checks every outbound flow against the current egress policy and revokes those
    /// it no longer allows: from then on their packets are dropped and TCP ones answered
    /// with a RST (whose sequence number only a live packet can give), until they expire
    /// after `timeouts.tcp_closed`. Returns how many flows were revoked.
    pub fn revalidate(&mut self, now_ms: u64) -> usize {
        let mut revoke = Vec::new();
        for (id, flow) in self.flows.iter() {
            let k = flow.keys[ORIGINAL];
            if k.side != Side::Inside || flow.revoked {
                continue;
            }
            let ingress = match flow.egress[REPLY] {
                Egress::Inside(i) => i,
                Egress::Outside => 0,
            };
            if self.policy.egress(&new_flow_of(&k, ingress)) != EgressDecision::Allow {
                revoke.push(id);
            }
        }
        let closed = self.cfg.timeouts.tcp_closed;
        for &id in &revoke {
            let Some(flow) = self.flows.get_mut(id) else { continue };
            flow.revoked = true;
            if flow.keys[ORIGINAL].proto == PROTO_TCP {
                flow.state = FlowState::Tcp(TcpState::Closed);
                flow.expires_ms = now_ms + closed * 1000;
                self.flows.reschedule(id);
            } else if let Some(flow) = self.flows.remove(id) {
                self.flow_ended(&flow, now_ms, EndReason::Revalidated);
            }
        }
        self.counters.add(Counter::PolicyRevokedFlows, revoke.len() as u64);
        self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
        revoke.len()
    }

    /// Ends every flow (the gateway is stopping), for the flow log.
    pub fn shutdown(&mut self, now_ms: u64) {
        let ids: Vec<FlowId> = self.flows.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(flow) = self.flows.remove(id) {
                self.flow_ended(&flow, now_ms, EndReason::Shutdown);
            }
        }
    }

    /// Periodic work: expire flows and fragment state, refill the ICMP error budget.
    pub fn tick(&mut self, now_ms: u64) {
        let counters = Arc::clone(&self.counters);
        let mut expired = Vec::new();
        self.flows.expire(now_ms, |_, flow| expired.push(flow));
        for flow in expired {
            let reason = match flow.state {
                _ if flow.revoked => EndReason::Revalidated,
                FlowState::Tcp(TcpState::TimeWait) => EndReason::Closed,
                FlowState::Tcp(TcpState::Closed) => EndReason::Reset,
                _ => EndReason::IdleTimeout,
            };
            if reason == EndReason::IdleTimeout {
                counters.inc(Counter::IdleTimeoutCount);
            }
            self.flow_ended(&flow, now_ms, reason);
        }
        self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
        self.due_records(now_ms);
        let dropped = self.frags.expire(now_ms);
        self.counters.add(Counter::DropFragment, dropped as u64);
        if now_ms >= self.icmp_refill_ms + 1000 {
            self.icmp_tokens = self.cfg.icmp_error_rate;
            self.icmp_refill_ms = now_ms;
        }
    }

    /// Fragments released by the arrival of their first fragment, to be passed to
    /// `process` again by the caller (in order).
    pub fn take_released(&mut self) -> Vec<(Vec<u8>, FrameMeta)> {
        self.frags.take_released()
    }

    pub fn has_released(&self) -> bool {
        self.frags.has_released()
    }

    /// Translates one Ethernet frame in place. `out` receives generated packets and must be
    /// at least 600 bytes. The frame must be trimmed to what the link delivered.
    pub fn process(&mut self, frame: &mut [u8], meta: FrameMeta, now_ms: u64, out: &mut [u8]) -> Verdict {
        match self.process_inner(frame, meta, now_ms, out) {
            Ok(v) => {
                if let Verdict::Drop(c) = v {
                    self.counters.inc(c);
                }
                v
            }
            Err(e) => {
                let c = drop_for(e);
                self.counters.inc(c);
                Verdict::Drop(c)
            }
        }
    }

    fn parse(frame: &[u8], meta: &FrameMeta) -> Result<Parsed, WireError> {
        let eth = EthernetFrame::new_checked(frame)?;
        if eth.ethertype() != ETHERTYPE_IPV4 {
            return Err(WireError::UnknownEtherType);
        }
        let ip = Ipv4Packet::new_checked(eth.payload())?;
        if ip.header_len() != wire::IPV4_MIN_HEADER_LEN {
            // Options would need per-option handling (source route, record route); like
            // many carrier NATs we refuse them rather than forward them unexamined.
            return Err(WireError::IpOptions);
        }
        if meta.gso_size == 0 && ip.total_len() + ETHERNET_HEADER_LEN < frame.len() && frame.len() > 60 {
            // Longer than the IP packet and not Ethernet minimum-size padding.
            return Err(WireError::BadTotalLength);
        }
        let is_fragment = ip.is_fragment();
        let first_fragment = is_fragment && ip.frag_offset() == 0;
        let l4 = if is_fragment && !first_fragment {
            L4Header::Other
        } else {
            parse_l4_checked(ip.protocol(), ip.payload(), first_fragment)?
        };
        if !ip.verify_checksum() {
            return Err(WireError::BadIpChecksum);
        }
        Ok(Parsed {
            ihl: ip.header_len(),
            total: ip.total_len(),
            proto: ip.protocol(),
            src: ip.src(),
            dst: ip.dst(),
            ttl: ip.ttl(),
            l4,
            is_fragment,
            first_fragment,
        })
    }

    fn process_inner(
        &mut self,
        frame: &mut [u8],
        meta: FrameMeta,
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<Verdict, WireError> {
        let p = Self::parse(frame, &meta)?;
        let bytes = p.total as u64;
        let segs = u64::from(meta.segments.max(1));
        match meta.side {
            Side::Inside => {
                self.counters.add(Counter::BytesInFromSource, bytes);
                self.counters.add(Counter::PacketsInFromSource, segs);
            }
            Side::Outside => {
                self.counters.add(Counter::BytesInFromDestination, bytes);
                self.counters.add(Counter::PacketsInFromDestination, segs);
            }
        }

        // The gateway's own addresses: it answers ping on all of them. The external
        // addresses also carry the mapped ports (replies, ICMP errors, fragments), and
        // from the inside they are the hairpin destinations for TCP and UDP.
        if self.is_own_address(p.dst, meta.side) {
            if matches!(p.l4, L4Header::IcmpQuery { icmp_type: ICMP_ECHO_REQUEST, .. }) && !p.is_fragment {
                return Ok(self.answer_echo(frame, &p, meta));
            }
            if !self.mappings.is_external(p.dst) || (meta.side == Side::Inside && p.proto == PROTO_ICMP) {
                return Ok(Verdict::Drop(Counter::DropNotForUs));
            }
        }

        match meta.side {
            Side::Inside => {
                if !self
                    .cfg
                    .inside
                    .get(usize::from(meta.link))
                    .is_some_and(|l| l.addresses.iter().any(|n| n.contains(p.src)))
                {
                    return Ok(Verdict::Drop(Counter::DropSourceNotInside));
                }
                if self.inside_link_for(p.dst).is_some() || !is_routable_destination(p.dst) {
                    // natgw translates to the outside; it does not route between inside
                    // subnets, and broadcast, multicast, loopback or "this network"
                    // destinations (DHCP, mDNS, ...) never leave a link.
                    return Ok(Verdict::Drop(Counter::DropNoRoute));
                }
            }
            Side::Outside => {
                if !self.mappings.is_external(p.dst) {
                    let c = if self.inside_link_for(p.dst).is_some() {
                        Counter::DropToPrivateAddress
                    } else {
                        Counter::DropNotForUs
                    };
                    return Ok(Verdict::Drop(c));
                }
            }
        }

        if p.is_fragment {
            return self.fragment(frame, &p, meta, now_ms, out);
        }
        if !meta.handed_off && self.cfg.workers > 1 {
            if let Some(w) = self.steer(&p, frame, meta.side) {
                if w != self.cfg.worker {
                    self.counters.inc(Counter::HandoffFrames);
                    return Ok(Verdict::HandOff { worker: w });
                }
            }
        }
        if meta.side == Side::Inside && p.ttl <= 1 {
            // Outbound packets are routed before anything else: an expiring one creates
            // no state and gets a time-exceeded from the gateway (traceroute shows the hop).
            return Ok(self.icmp_error_reply(frame, &p, meta, ICMP_TIME_EXCEEDED, 0, 0, out, Counter::DropTtlExpired));
        }
        if let L4Header::IcmpError { .. } = p.l4 {
            return self.icmp_error(frame, &p, meta);
        }
        let Some(key) = flow_key(meta.side, &p) else { return Ok(Verdict::Drop(Counter::DropUnsupportedProtocol)) };
        let (id, dir) = match self.flows.lookup(&key) {
            Some(hit) => hit,
            None => match self.new_flow(&key, &p, meta, now_ms) {
                Ok(hit) => hit,
                Err(Counter::DropPolicyRejected) => return Ok(self.reject(frame, &p, meta, out)),
                Err(c) => return Ok(Verdict::Drop(c)),
            },
        };
        self.forward_flow(frame, &p, meta, id, dir, now_ms, out)
    }

    /// The worker that owns this packet's flow, when it can be told from the packet.
    fn steer(&self, p: &Parsed, frame: &[u8], side: Side) -> Option<usize> {
        let n = self.cfg.workers;
        if side == Side::Inside && self.mappings.is_external(p.dst) {
            // Hairpin: the destination mapping's worker owns the flow.
            return match p.l4 {
                L4Header::Tcp { dst_port, .. } | L4Header::Udp { dst_port, .. } => Some(owner_of_port(dst_port, n)),
                _ => None,
            };
        }
        let port = match (p.l4, side) {
            (L4Header::Tcp { src_port, .. } | L4Header::Udp { src_port, .. }, Side::Inside) => src_port,
            (L4Header::Tcp { dst_port, .. } | L4Header::Udp { dst_port, .. }, Side::Outside) => dst_port,
            (L4Header::IcmpQuery { ident, .. }, _) => ident,
            (L4Header::IcmpError { .. }, _) => {
                let quote = frame.get(ETHERNET_HEADER_LEN + p.ihl + 8..ETHERNET_HEADER_LEN + p.total)?;
                let inner = parse_quote(quote).ok()?;
                // Inside: the quoted packet was sent *to* the host; outside: *from* our mapping.
                match side {
                    Side::Inside => inner.dst_port,
                    Side::Outside => inner.src_port,
                }
            }
            _ => return None,
        };
        Some(owner_of_port(port, n))
    }

    fn is_own_address(&self, a: Ipv4Addr, side: Side) -> bool {
        match side {
            Side::Outside => self.mappings.is_external(a),
            Side::Inside => {
                self.mappings.is_external(a) || self.cfg.inside.iter().any(|l| l.addresses.iter().any(|n| n.addr == a))
            }
        }
    }

    fn inside_link_for(&self, a: Ipv4Addr) -> Option<u8> {
        self.cfg.inside.iter().position(|l| l.addresses.iter().any(|n| n.contains(a))).map(|i| i as u8)
    }

    fn next_hop(&self, egress: Egress, dst: Ipv4Addr) -> Ipv4Addr {
        match egress {
            Egress::Outside if self.cfg.outside_net.contains(dst) => dst,
            Egress::Outside => self.cfg.outside_gateway,
            Egress::Inside(_) => dst,
        }
    }

    /// The MTU of link `link` (inside links first, then the outside one) changed.
    pub fn set_link_mtu(&mut self, link: usize, mtu: u16) {
        match self.cfg.inside.get_mut(link) {
            Some(l) => l.mtu = mtu,
            None => self.cfg.outside_mtu = mtu,
        }
    }

    /// The egress MTU when this packet does not fit it (it must be fragmented or refused).
    fn fragment_to(&self, p: &Parsed, meta: FrameMeta, egress: Egress) -> Option<u16> {
        let mtu = self.egress_mtu(egress);
        (wire_len(p, meta) > mtu).then_some(mtu as u16)
    }

    fn egress_mtu(&self, egress: Egress) -> usize {
        match egress {
            Egress::Outside => usize::from(self.cfg.outside_mtu),
            Egress::Inside(i) => self.cfg.inside.get(usize::from(i)).map_or(1500, |l| usize::from(l.mtu)),
        }
    }

    /// The address natgw speaks from towards `side` (ICMP errors, echo replies).
    fn own_address_towards(&self, side: Side, link: u8, peer: Ipv4Addr, addressed: Ipv4Addr) -> Ipv4Addr {
        match side {
            Side::Outside if self.mappings.is_external(addressed) => addressed,
            Side::Outside => self.cfg.external_addrs[0],
            Side::Inside => self
                .cfg
                .inside
                .get(usize::from(link))
                .and_then(|l| l.addresses.iter().find(|n| n.contains(peer)).or(l.addresses.first()))
                .map_or(Ipv4Addr::UNSPECIFIED, |n| n.addr),
        }
    }

    /// Slow path: a packet that matched no flow.
    fn new_flow(
        &mut self,
        key: &FlowKey,
        p: &Parsed,
        meta: FrameMeta,
        now_ms: u64,
    ) -> Result<(FlowId, usize), Counter> {
        match p.l4 {
            L4Header::Tcp { flags, .. } if flags & (TCP_SYN | TCP_ACK) != TCP_SYN => {
                return Err(match meta.side {
                    Side::Outside => Counter::DropUnsolicitedInbound,
                    Side::Inside => Counter::DropTcpNoFlow,
                })
            }
            L4Header::Tcp { .. } | L4Header::Udp { .. } => {}
            L4Header::IcmpQuery { icmp_type: ICMP_ECHO_REQUEST, .. } => {}
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
        match meta.side {
            Side::Inside if self.mappings.is_external(key.dst) => self.new_hairpin_flow(key, meta, now_ms),
            Side::Inside => self.new_outbound_flow(key, meta, now_ms),
            Side::Outside => self.new_inbound_flow(key, now_ms),
        }
    }

    fn insert_flow(&mut self, flow: Flow) -> Result<FlowId, Counter> {
        let mapping = flow.mapping;
        let created = flow.created_ms;
        match self.flows.insert(flow) {
            Ok(id) => {
                if self.active_interval_ms > 0 {
                    self.interim_checks.push_back((created + self.active_interval_ms, id, created));
                }
                self.counters.inc(Counter::ConnectionAttemptCount);
                self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
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

    fn blank_flow(&self, keys: [FlowKey; 2], rewrite: [Rewrite; 2], egress: [Egress; 2], now_ms: u64) -> Flow {
        let mut f = Flow {
            keys,
            rewrite,
            egress,
            state: FlowState::initial(keys[ORIGINAL].proto),
            fin_seen: [false; 2],
            tcp_flags: [0; 2],
            packets: [0; 2],
            bytes: [0; 2],
            created_ms: now_ms,
            last_seen_ms: now_ms,
            expires_ms: now_ms,
            mapping: None,
            revoked: false,
            policy_generation: self.policy.egress_generation(),
            reported: Reported::default(),
        };
        f.refresh(now_ms, &self.cfg.timeouts);
        f
    }

    /// The mapping for the packet's inside endpoint (creating it if needed), unless the
    /// table is full or the pool is exhausted (counted as ErrorPortAllocation).
    fn acquire_mapping(&mut self, key: &FlowKey, link: u8) -> Result<(Endpoint, pool::MappingId, Endpoint), Counter> {
        if self.flows.len() >= self.flows.max_flows() {
            return Err(Counter::DropTableFull);
        }
        let (pool, budget) = self.ask_policy(key, link)?;
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
    fn ask_policy(&mut self, key: &FlowKey, link: u8) -> Result<(PoolId, Option<u32>), Counter> {
        let nf = new_flow_of(key, link);
        let verdict = self.policy.egress(&nf);
        if verdict != EgressDecision::Allow && self.record_refused {
            let generation = self.policy.egress_generation();
            self.push_record(FlowEnd::refused(&nf, verdict, generation, self.packet_len, self.packet_ms));
        }
        match verdict {
            EgressDecision::Allow => {}
            EgressDecision::Deny => return Err(Counter::DropPolicyDenied),
            EgressDecision::Reject => return Err(Counter::DropPolicyRejected),
        }
        match self.policy.port_pool(&nf) {
            PoolDecision::Pool { pool, budget } if usize::from(pool) < self.mappings.pool_count() => Ok((pool, budget)),
            PoolDecision::Pool { .. } | PoolDecision::Refuse => Err(Counter::DropPolicyError),
        }
    }

    fn new_outbound_flow(&mut self, key: &FlowKey, meta: FrameMeta, now_ms: u64) -> Result<(FlowId, usize), Counter> {
        let (inside, mid, ext) = self.acquire_mapping(key, meta.link)?;
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
        flow.mapping = Some(mid);
        let id = self.insert_flow(flow)?;
        Ok((id, ORIGINAL))
    }

    /// A packet from outside to a mapped port with no matching flow: allowed only under
    /// endpoint-independent filtering (RFC 4787 REQ-8 makes it an option).
    fn new_inbound_flow(&mut self, key: &FlowKey, now_ms: u64) -> Result<(FlowId, usize), Counter> {
        if self.cfg.filtering != Filtering::EndpointIndependent || key.proto == PROTO_ICMP {
            return Err(Counter::DropUnsolicitedInbound);
        }
        let mid = self.mappings.by_external(key.proto, key.dst, key.dst_port).ok_or(Counter::DropUnsolicitedInbound)?;
        let m = self.mappings.get(mid).cloned().ok_or(Counter::DropUnsolicitedInbound)?;
        let remote = Endpoint { addr: key.src, port: key.src_port };
        let reply = FlowKey {
            side: Side::Inside,
            proto: key.proto,
            src: m.inside.addr,
            src_port: m.inside.port,
            dst: remote.addr,
            dst_port: remote.port,
        };
        let mut flow = self.blank_flow(
            [*key, reply],
            [Rewrite { src: remote, dst: m.inside }, Rewrite { src: m.external, dst: remote }],
            [Egress::Inside(m.inside_if), Egress::Outside],
            now_ms,
        );
        self.mappings.add_ref(mid);
        flow.mapping = Some(mid);
        let id = self.insert_flow(flow)?;
        Ok((id, ORIGINAL))
    }

    /// Hairpinning (RFC 4787 REQ-9): an inside host reaching another inside host's mapping.
    /// The source is translated to its own mapping, the destination to the other host, and
    /// the packet turns round towards the inside. Filtering applies as for outside peers.
    fn new_hairpin_flow(&mut self, key: &FlowKey, meta: FrameMeta, now_ms: u64) -> Result<(FlowId, usize), Counter> {
        if self.cfg.filtering != Filtering::EndpointIndependent {
            return Err(Counter::DropUnsolicitedInbound);
        }
        let target =
            self.mappings.by_external(key.proto, key.dst, key.dst_port).ok_or(Counter::DropUnsolicitedInbound)?;
        let target = self.mappings.get(target).cloned().ok_or(Counter::DropUnsolicitedInbound)?;
        let (inside, mid, ext) = self.acquire_mapping(key, meta.link)?;
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
        flow.mapping = Some(mid);
        let id = self.insert_flow(flow)?;
        Ok((id, ORIGINAL))
    }

    /// Fast path for a packet of a known flow: TTL, MTU, rewrite, state, counters.
    #[allow(clippy::too_many_arguments)]
    fn forward_flow(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        meta: FrameMeta,
        id: FlowId,
        dir: usize,
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<Verdict, WireError> {
        let Some(flow) = self.flows.get(id) else { return Ok(Verdict::Drop(Counter::DropNoRoute)) };
        let (rw, egress) = (flow.rewrite[dir], flow.egress[dir]);
        if flow.revoked {
            return Ok(match p.l4 {
                L4Header::Tcp { flags, .. } if flags & TCP_RST == 0 => {
                    self.tcp_reset_reply(frame, p, meta, out, Counter::DropPolicyRevoked)
                }
                _ => Verdict::Drop(Counter::DropPolicyRevoked),
            });
        }
        if p.ttl <= 1 {
            return Ok(self.icmp_error_reply(frame, p, meta, ICMP_TIME_EXCEEDED, 0, 0, out, Counter::DropTtlExpired));
        }
        let fragment_to = self.fragment_to(p, meta, egress);
        if let Some(mtu) = fragment_to {
            if Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..])?.dont_fragment() {
                return Ok(self.icmp_error_reply(
                    frame,
                    p,
                    meta,
                    ICMP_DEST_UNREACHABLE,
                    ICMP_CODE_FRAG_NEEDED,
                    mtu,
                    out,
                    Counter::DropNeedsFragmentation,
                ));
            }
            if meta.gso_size != 0 {
                // Super-frames without DF (UDP GSO) would need segmenting first; rare.
                return Ok(Verdict::Drop(Counter::DropNeedsFragmentation));
            }
        }
        rewrite_in_place(&mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + p.total], p, &rw, meta.csum_partial);
        if fragment_to.is_some() && meta.csum_partial {
            // The device would finish the checksum over the whole datagram; once split,
            // nobody can: finish it here.
            complete_partial_checksum(&mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + p.total], p);
        }
        let timeouts = self.cfg.timeouts;
        let counters = &self.counters;
        let record_closes = self.record_flow_ends;
        let Some(flow) = self.flows.get_mut(id) else { return Ok(Verdict::Drop(Counter::DropNoRoute)) };
        flow.packets[dir] += u64::from(meta.segments.max(1));
        flow.bytes[dir] += p.total as u64;
        match (p.l4, flow.state) {
            (L4Header::Tcp { flags, .. }, FlowState::Tcp(s)) => {
                flow.tcp_flags[dir] |= flags;
                let t = tcp_transition(s, dir, flags, &mut flow.fin_seen);
                flow.state = FlowState::Tcp(t.next);
                if t.became_established {
                    counters.inc(Counter::ConnectionEstablishedCount);
                }
                if record_closes && t.next != s && matches!(t.next, TcpState::TimeWait | TcpState::Closed) {
                    // Its final record goes out once it has been quiet for a second.
                    self.close_checks.push_back((now_ms + 1000, id, flow.created_ms));
                }
            }
            (_, FlowState::Udp { replied: false }) if dir == REPLY => {
                flow.state = FlowState::Udp { replied: true };
                counters.inc(Counter::ConnectionEstablishedCount);
            }
            _ => {}
        }
        // Refresh only on moves forward in time; a held timer never goes backwards.
        flow.refresh(now_ms, &timeouts);
        if p.first_fragment {
            self.frags.record(frag_key(meta.side, p, frame), frag::FragTarget { flow: id, dir }, now_ms);
        }
        self.count_out(egress, p.total as u64, u64::from(meta.segments.max(1)));
        Ok(forward(egress, self.next_hop(egress, rw.dst.addr), fragment_to))
    }

    fn count_out(&self, egress: Egress, bytes: u64, packets: u64) {
        match egress {
            Egress::Outside => {
                self.counters.add(Counter::BytesOutToDestination, bytes);
                self.counters.add(Counter::PacketsOutToDestination, packets);
            }
            Egress::Inside(_) => {
                self.counters.add(Counter::BytesOutToSource, bytes);
                self.counters.add(Counter::PacketsOutToSource, packets);
            }
        }
    }

    /// Fragments: the first one maps like any packet and records the flow under its IP ID;
    /// later ones follow that record. A fragment that comes before its first one waits
    /// (bounded in number and time) and is released when the first one arrives.
    fn fragment(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        meta: FrameMeta,
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<Verdict, WireError> {
        let fkey = frag_key(meta.side, p, frame);
        if p.first_fragment {
            if !meta.handed_off && self.cfg.workers > 1 {
                if let Some(w) = self.steer(p, frame, meta.side) {
                    if w != self.cfg.worker {
                        self.frags.record_owner(fkey, w, now_ms);
                        self.counters.inc(Counter::HandoffFrames);
                        return Ok(Verdict::HandOff { worker: w });
                    }
                }
            }
            let Some(key) = flow_key(meta.side, p) else {
                self.frags.record_dead(fkey, now_ms);
                return Ok(Verdict::Drop(Counter::DropUnsupportedProtocol));
            };
            let hit = match self.flows.lookup(&key) {
                Some(hit) => Ok(hit),
                None => self.new_flow(&key, p, meta, now_ms),
            };
            return match hit {
                Ok((id, dir)) => self.forward_flow(frame, p, meta, id, dir, now_ms, out),
                Err(c) => {
                    self.frags.record_dead(fkey, now_ms);
                    Ok(Verdict::Drop(c))
                }
            };
        }
        match self.frags.lookup(&fkey) {
            frag::FragLookup::Owner(w) if w != self.cfg.worker && !meta.handed_off => {
                self.counters.inc(Counter::HandoffFrames);
                Ok(Verdict::HandOff { worker: w })
            }
            frag::FragLookup::Target(t) => {
                let Some(flow) = self.flows.get(t.flow) else { return Ok(Verdict::Drop(Counter::DropFragment)) };
                let (rw, egress) = (flow.rewrite[t.dir], flow.egress[t.dir]);
                if p.ttl <= 1 {
                    return Ok(Verdict::Drop(Counter::DropTtlExpired));
                }
                let fragment_to = self.fragment_to(p, meta, egress);
                if fragment_to.is_some() && Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..])?.dont_fragment() {
                    return Ok(Verdict::Drop(Counter::DropNeedsFragmentation));
                }
                rewrite_in_place(&mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + p.total], p, &rw, false);
                if let Some(f) = self.flows.get_mut(t.flow) {
                    f.packets[t.dir] += 1;
                    f.bytes[t.dir] += p.total as u64;
                }
                self.count_out(egress, p.total as u64, 1);
                Ok(forward(egress, self.next_hop(egress, rw.dst.addr), fragment_to))
            }
            frag::FragLookup::Dead => Ok(Verdict::Drop(Counter::DropFragment)),
            frag::FragLookup::Owner(_) | frag::FragLookup::Unknown => {
                let len = ETHERNET_HEADER_LEN + p.total;
                if self.frags.hold(fkey, &frame[..len.min(frame.len())], meta, now_ms) {
                    Ok(Verdict::Held)
                } else {
                    Ok(Verdict::Drop(Counter::DropFragment))
                }
            }
        }
    }

    /// Answers an echo request to one of natgw's addresses, in place.
    fn answer_echo(&mut self, frame: &mut [u8], p: &Parsed, meta: FrameMeta) -> Verdict {
        let l3 = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + p.total];
        let icmp_at = p.ihl;
        let old = wire::read_u16(l3, icmp_at);
        let new = u16::from(ICMP_ECHO_REPLY) << 8 | (old & 0x00ff);
        wire::write_u16(l3, icmp_at, new);
        let c = wire::read_u16(l3, icmp_at + l4_field::ICMP_CHECKSUM);
        wire::write_u16(l3, icmp_at + l4_field::ICMP_CHECKSUM, checksum::update16(c, old, new));
        let mut ip = match Ipv4Packet::new_checked(&mut *l3) {
            Ok(ip) => ip,
            Err(_) => return Verdict::Drop(Counter::DropTruncated),
        };
        ip.set_src(p.dst);
        ip.set_dst(p.src);
        ip.set_ttl(64);
        ip.fill_checksum();
        self.counters.inc(Counter::IcmpEchoRepliesSent);
        let egress = meta.arrived_from();
        let next_hop = self.next_hop(egress, p.src);
        self.count_out(egress, p.total as u64, 1);
        Verdict::Forward { egress, next_hop }
    }

    /// Tells the inside host its new flow was refused by the egress policy: a TCP RST for
    /// TCP, ICMP "communication administratively prohibited" otherwise.
    fn reject(&mut self, frame: &[u8], p: &Parsed, meta: FrameMeta, out: &mut [u8]) -> Verdict {
        match p.l4 {
            L4Header::Tcp { .. } => self.tcp_reset_reply(frame, p, meta, out, Counter::DropPolicyRejected),
            _ => self.icmp_error_reply(
                frame,
                p,
                meta,
                ICMP_DEST_UNREACHABLE,
                ICMP_CODE_ADMIN_PROHIBITED,
                0,
                out,
                Counter::DropPolicyRejected,
            ),
        }
    }

    /// Builds a TCP RST answering the segment in `frame` (not yet rewritten), as if from
    /// the address it was sent to (RFC 793 "reset generation"): with the segment's ACK as
    /// sequence number when it has one, else acknowledging it. Shares the ICMP error
    /// budget; never answers a RST.
    fn tcp_reset_reply(
        &mut self,
        frame: &[u8],
        p: &Parsed,
        meta: FrameMeta,
        out: &mut [u8],
        reason: Counter,
    ) -> Verdict {
        let L4Header::Tcp { src_port, dst_port, flags, header_len } = p.l4 else { return Verdict::Drop(reason) };
        if flags & TCP_RST != 0 || p.is_fragment || self.icmp_tokens == 0 {
            return Verdict::Drop(reason);
        }
        let tcp_at = ETHERNET_HEADER_LEN + p.ihl;
        let Some(tcp) = frame.get(tcp_at..ETHERNET_HEADER_LEN + p.total) else { return Verdict::Drop(reason) };
        if tcp.len() < header_len || out.len() < ETHERNET_HEADER_LEN + 40 {
            return Verdict::Drop(reason);
        }
        self.icmp_tokens -= 1;
        let seg_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let seg_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let seg_len =
            (tcp.len() - header_len) as u32 + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        let (seq, ack, rst_flags) = if flags & TCP_ACK != 0 {
            (seg_ack, 0, TCP_RST)
        } else {
            (0, seg_seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
        };
        let total = wire::IPV4_MIN_HEADER_LEN + 20;
        out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let l3 = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + total];
        wire::write_ipv4_header(l3, total as u16, self.ip_ident, 64, PROTO_TCP, p.dst, p.src);
        let t = &mut l3[wire::IPV4_MIN_HEADER_LEN..];
        t.fill(0);
        wire::write_u16(t, 0, dst_port);
        wire::write_u16(t, 2, src_port);
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = rst_flags;
        let pseudo = checksum::pseudo_header_sum(u32::from(p.dst), u32::from(p.src), PROTO_TCP, 20);
        let c = checksum::fold(checksum::sum(t, pseudo));
        wire::write_u16(t, l4_field::TCP_CHECKSUM, !c);
        self.counters.inc(reason);
        self.counters.inc(Counter::TcpResetsSent);
        let egress = meta.arrived_from();
        self.count_out(egress, total as u64, 1);
        Verdict::Emit { egress, next_hop: self.next_hop(egress, p.src), len: ETHERNET_HEADER_LEN + total }
    }

    /// Builds an ICMP error about the packet in `frame` (not yet rewritten) back to its
    /// sender, from natgw's address on that side. Returns `Drop(reason)` when none may be
    /// sent (RFC 1812 4.3.2.7: never about an ICMP error, a non-first fragment, or a
    /// broadcast), or when the rate limit is spent; the offending packet is dropped either way.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error_reply(
        &mut self,
        frame: &[u8],
        p: &Parsed,
        meta: FrameMeta,
        icmp_type: u8,
        code: u8,
        mtu: u16,
        out: &mut [u8],
        reason: Counter,
    ) -> Verdict {
        let about_error = matches!(p.l4, L4Header::IcmpError { .. });
        if about_error
            || (p.is_fragment && !p.first_fragment)
            || p.src.is_unspecified()
            || p.src.is_broadcast()
            || p.src.is_multicast()
            || self.icmp_tokens == 0
        {
            return Verdict::Drop(reason);
        }
        self.icmp_tokens -= 1;
        let quote_len = p.total.min(548).min(frame.len() - ETHERNET_HEADER_LEN);
        let total = wire::IPV4_MIN_HEADER_LEN + 8 + quote_len;
        if out.len() < ETHERNET_HEADER_LEN + total {
            return Verdict::Drop(reason);
        }
        let from = self.own_address_towards(meta.side, meta.link, p.src, p.dst);
        let egress = meta.arrived_from();
        out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let l3 = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + total];
        wire::write_ipv4_header(l3, total as u16, self.ip_ident, 64, PROTO_ICMP, from, p.src);
        let icmp = &mut l3[wire::IPV4_MIN_HEADER_LEN..];
        icmp[0] = icmp_type;
        icmp[1] = code;
        icmp[2..8].fill(0);
        wire::write_u16(icmp, l4_field::ICMP_NEXT_HOP_MTU, mtu);
        icmp[8..8 + quote_len].copy_from_slice(&frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + quote_len]);
        let c = checksum::compute(icmp);
        wire::write_u16(icmp, l4_field::ICMP_CHECKSUM, c);
        // The offending packet is dropped (counted) even though an error went back.
        self.counters.inc(reason);
        self.counters.inc(Counter::IcmpErrorsSent);
        self.count_out(egress, total as u64, 1);
        Verdict::Emit { egress, next_hop: self.next_hop(egress, p.src), len: ETHERNET_HEADER_LEN + total }
    }

    /// ICMP errors in either direction (RFC 5508 section 4): find the flow the quoted packet
    /// belongs to, translate the quoted header back to what its sender sent, and the outer
    /// header towards that sender. Path-MTU discovery depends on this.
    fn icmp_error(&mut self, frame: &mut [u8], p: &Parsed, meta: FrameMeta) -> Result<Verdict, WireError> {
        let l3_end = ETHERNET_HEADER_LEN + p.total;
        let icmp_at = ETHERNET_HEADER_LEN + p.ihl;
        let quote_at = icmp_at + 8;
        let inner = parse_quote(frame.get(quote_at..l3_end).ok_or(WireError::BadIcmpQuote)?)?;
        // The quoted packet travelled the other way: its reversed key is our flow's key
        // for packets travelling like this error.
        let key = FlowKey {
            side: meta.side,
            proto: inner.proto,
            src: inner.dst,
            src_port: inner.dst_port,
            dst: inner.src,
            dst_port: inner.src_port,
        };
        let Some((flow, dir)) = self.flows.lookup(&key) else {
            return Ok(Verdict::Drop(Counter::DropUnsolicitedInbound));
        };
        if p.ttl <= 1 {
            return Ok(Verdict::Drop(Counter::DropTtlExpired));
        }
        let Some(f) = self.flows.get(flow) else { return Ok(Verdict::Drop(Counter::DropNoRoute)) };
        let other = 1 - dir;
        let (orig_key, rw, egress, sender_key) = (f.keys[other], f.rewrite[dir], f.egress[dir], f.keys[dir]);
        // Inner header: back to what the quoted packet's sender put on the wire.
        {
            let q = &mut frame[quote_at..l3_end];
            let ihl = inner.ihl;
            let old_src = wire::read_ipv4(q, ipv4_field::SRC);
            let old_dst = wire::read_ipv4(q, ipv4_field::DST);
            wire::write_ipv4(q, ipv4_field::SRC, orig_key.src);
            wire::write_ipv4(q, ipv4_field::DST, orig_key.dst);
            let mut iph = Ipv4Packet::new_checked_quoted(&mut q[..ihl])?;
            iph.fill_checksum();
            let l4 = &mut q[ihl..];
            let (old_sp, old_dp) = (wire::read_u16(l4, 0), wire::read_u16(l4, 2));
            match inner.proto {
                PROTO_TCP | PROTO_UDP => {
                    wire::write_u16(l4, 0, orig_key.src_port);
                    wire::write_u16(l4, 2, orig_key.dst_port);
                    let at = if inner.proto == PROTO_UDP { l4_field::UDP_CHECKSUM } else { l4_field::TCP_CHECKSUM };
                    if l4.len() >= at + 2 {
                        let c = wire::read_u16(l4, at);
                        if !(inner.proto == PROTO_UDP && c == 0) {
                            let mut c = checksum::update32(c, u32::from(old_src), u32::from(orig_key.src));
                            c = checksum::update32(c, u32::from(old_dst), u32::from(orig_key.dst));
                            c = checksum::update16(c, old_sp, orig_key.src_port);
                            c = checksum::update16(c, old_dp, orig_key.dst_port);
                            wire::write_u16(l4, at, c);
                        }
                    }
                }
                PROTO_ICMP => {
                    let old_id = wire::read_u16(l4, l4_field::ICMP_IDENT);
                    wire::write_u16(l4, l4_field::ICMP_IDENT, orig_key.src_port);
                    let c = wire::read_u16(l4, l4_field::ICMP_CHECKSUM);
                    wire::write_u16(l4, l4_field::ICMP_CHECKSUM, checksum::update16(c, old_id, orig_key.src_port));
                }
                _ => {}
            }
        }
        // Outer header: to the quoted packet's sender; from the flow's translated address
        // when the error comes from the flow's own endpoint, else from the reporting router.
        let l3 = &mut frame[ETHERNET_HEADER_LEN..l3_end];
        let new_src = if p.src == sender_key.src { rw.src.addr } else { p.src };
        {
            let mut ip = Ipv4Packet::new_checked(&mut *l3)?;
            ip.set_src(new_src);
            ip.set_dst(rw.dst.addr);
            ip.set_ttl(p.ttl - 1);
            ip.fill_checksum();
        }
        let icmp = &mut l3[p.ihl..];
        wire::write_u16(icmp, l4_field::ICMP_CHECKSUM, 0);
        let c = checksum::compute(icmp);
        wire::write_u16(icmp, l4_field::ICMP_CHECKSUM, c);
        self.count_out(egress, p.total as u64, 1);
        Ok(Verdict::Forward { egress, next_hop: self.next_hop(egress, rw.dst.addr) })
    }
}

/// Send as is, or split for `fragment_to`.
fn forward(egress: Egress, next_hop: Ipv4Addr, fragment_to: Option<u16>) -> Verdict {
    match fragment_to {
        Some(mtu) => Verdict::ForwardFragmented { egress, next_hop, mtu },
        None => Verdict::Forward { egress, next_hop },
    }
}

/// The flow key of a TCP, UDP or ICMP query packet as it arrived; `None` for anything
/// else. ICMP queries use the identifier as both ports.
fn flow_key(side: Side, p: &Parsed) -> Option<FlowKey> {
    let (src_port, dst_port) = match p.l4 {
        L4Header::Tcp { src_port, dst_port, .. } | L4Header::Udp { src_port, dst_port, .. } => (src_port, dst_port),
        L4Header::IcmpQuery { ident, .. } => (ident, ident),
        _ => return None,
    };
    Some(FlowKey { side, proto: p.proto, src: p.src, src_port, dst: p.dst, dst_port })
}

/// Destinations a router may forward (RFC 1812 section 5.3.7 "martian" filtering).
fn is_routable_destination(a: Ipv4Addr) -> bool {
    !(a.is_broadcast() || a.is_multicast() || a.is_loopback() || a.octets()[0] == 0 || a.octets()[0] >= 240)
}

/// The largest IP packet this frame puts on the wire: itself, or for a GSO super-frame
/// one segment (headers + gso_size), as the kernel checks it (skb_gso_validate_network_len).
fn wire_len(p: &Parsed, meta: FrameMeta) -> usize {
    if meta.gso_size == 0 {
        return p.total;
    }
    let l4_header = match p.l4 {
        L4Header::Tcp { header_len, .. } => header_len,
        L4Header::Udp { .. } => 8,
        _ => 0,
    };
    (p.ihl + l4_header + usize::from(meta.gso_size)).min(p.total)
}

/// Parses the L4 header, relaxing the UDP length check for a first fragment (its UDP
/// length covers the whole datagram).
fn parse_l4_checked(proto: u8, l4: &[u8], first_fragment: bool) -> Result<L4Header, WireError> {
    if first_fragment && proto == PROTO_UDP {
        if l4.len() < 8 {
            return Err(WireError::BadUdpLength);
        }
        return Ok(L4Header::Udp {
            src_port: wire::read_u16(l4, 0),
            dst_port: wire::read_u16(l4, 2),
            checksum: wire::read_u16(l4, 6),
        });
    }
    parse_l4(proto, l4)
}

/// The header an ICMP error quotes (RFC 792: the IP header and at least 8 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Quote {
    pub ihl: usize,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

pub fn parse_quote(q: &[u8]) -> Result<Quote, WireError> {
    let ip = Ipv4Packet::new_checked_quoted(q)?;
    let ihl = ip.header_len();
    if ip.frag_offset() != 0 {
        return Err(WireError::BadIcmpQuote);
    }
    let l4 = &q[ihl..];
    if l4.len() < 8 {
        return Err(WireError::BadIcmpQuote);
    }
    let (src_port, dst_port) = match ip.protocol() {
        PROTO_TCP | PROTO_UDP => (wire::read_u16(l4, 0), wire::read_u16(l4, 2)),
        PROTO_ICMP if matches!(l4[0], ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => {
            let id = wire::read_u16(l4, l4_field::ICMP_IDENT);
            (id, id)
        }
        _ => return Err(WireError::BadIcmpQuote),
    };
    Ok(Quote { ihl, proto: ip.protocol(), src: ip.src(), dst: ip.dst(), src_port, dst_port })
}

fn frag_key(side: Side, p: &Parsed, frame: &[u8]) -> FragKey {
    let ident = wire::read_u16(&frame[ETHERNET_HEADER_LEN..], ipv4_field::IDENT);
    FragKey { side, src: p.src, dst: p.dst, proto: p.proto, ident }
}

/// Applies a rewrite to an IPv4 packet (IHL 5) in place: addresses, ports or ICMP
/// identifier, TTL - 1, with every checksum updated incrementally (RFC 1624). With
/// `partial`, the L4 field is a pseudo-header sum and only the addresses enter it.
fn rewrite_in_place(l3: &mut [u8], p: &Parsed, rw: &Rewrite, partial: bool) {
    let ihl = p.ihl;
    let mut ipc = wire::read_u16(l3, ipv4_field::CHECKSUM);
    let (old_src, old_dst) = (u32::from(p.src), u32::from(p.dst));
    let (new_src, new_dst) = (u32::from(rw.src.addr), u32::from(rw.dst.addr));
    ipc = checksum::update32(ipc, old_src, new_src);
    ipc = checksum::update32(ipc, old_dst, new_dst);
    // TTL shares a 16-bit word with the protocol.
    let old_word = wire::read_u16(l3, ipv4_field::TTL);
    let new_word = old_word - 0x0100;
    ipc = checksum::update16(ipc, old_word, new_word);
    wire::write_u16(l3, ipv4_field::TTL, new_word);
    wire::write_u16(l3, ipv4_field::CHECKSUM, ipc);
    wire::write_ipv4(l3, ipv4_field::SRC, rw.src.addr);
    wire::write_ipv4(l3, ipv4_field::DST, rw.dst.addr);

    let l4 = &mut l3[ihl..];
    match p.l4 {
        L4Header::Tcp { src_port, dst_port, .. } => {
            rewrite_ports(l4, l4_field::TCP_CHECKSUM, src_port, dst_port, rw, old_src, old_dst, partial)
        }
        L4Header::Udp { src_port, dst_port, checksum: c } => {
            if c == 0 && !partial {
                // No UDP checksum: only the ports change.
                wire::write_u16(l4, 0, rw.src.port);
                wire::write_u16(l4, 2, rw.dst.port);
            } else {
                rewrite_ports(l4, l4_field::UDP_CHECKSUM, src_port, dst_port, rw, old_src, old_dst, partial);
                if !partial && wire::read_u16(l4, l4_field::UDP_CHECKSUM) == 0 {
                    wire::write_u16(l4, l4_field::UDP_CHECKSUM, 0xffff);
                }
            }
        }
        L4Header::IcmpQuery { ident, .. } => {
            // ICMP has no pseudo-header: only the identifier enters its checksum. The
            // identifier is the "port" of whichever side is being translated.
            let new_id = if rw.src.addr != p.src { rw.src.port } else { rw.dst.port };
            if new_id != ident {
                let c = wire::read_u16(l4, l4_field::ICMP_CHECKSUM);
                wire::write_u16(l4, l4_field::ICMP_IDENT, new_id);
                wire::write_u16(l4, l4_field::ICMP_CHECKSUM, checksum::update16(c, ident, new_id));
            }
        }
        _ => {}
    }
}

/// Turns a CHECKSUM_PARTIAL TCP/UDP checksum (pseudo-header sum in the field) into the
/// complete one, as the device would have.
fn complete_partial_checksum(l3: &mut [u8], p: &Parsed) {
    let at = match p.l4 {
        L4Header::Tcp { .. } => l4_field::TCP_CHECKSUM,
        L4Header::Udp { .. } => l4_field::UDP_CHECKSUM,
        _ => return,
    };
    let l4 = &mut l3[p.ihl..];
    if l4.len() < at + 2 {
        return;
    }
    let mut c = !checksum::fold(checksum::sum(l4, 0));
    if c == 0 && at == l4_field::UDP_CHECKSUM {
        c = 0xffff;
    }
    wire::write_u16(l4, at, c);
}

#[allow(clippy::too_many_arguments)]
fn rewrite_ports(
    l4: &mut [u8],
    csum_at: usize,
    src_port: u16,
    dst_port: u16,
    rw: &Rewrite,
    old_src: u32,
    old_dst: u32,
    partial: bool,
) {
    let mut c = wire::read_u16(l4, csum_at);
    let (new_src, new_dst) = (u32::from(rw.src.addr), u32::from(rw.dst.addr));
    if partial {
        c = checksum::update_partial32(c, old_src, new_src);
        c = checksum::update_partial32(c, old_dst, new_dst);
    } else {
        c = checksum::update32(c, old_src, new_src);
        c = checksum::update32(c, old_dst, new_dst);
        c = checksum::update16(c, src_port, rw.src.port);
        c = checksum::update16(c, dst_port, rw.dst.port);
    }
    wire::write_u16(l4, csum_at, c);
    wire::write_u16(l4, 0, rw.src.port);
    wire::write_u16(l4, 2, rw.dst.port);
}
