//! The translator: SNAT/PAT outbound, the reverse inbound, ICMP query and ICMP error
//! translation, fragments, TTL and ICMP time-exceeded, hairpinning, and the gateway's own
//! answers to ping.
//!
//! Owns: one worker's flows, mappings and fragment state. Must never: perform I/O, read a
//! clock, allocate on the fast path, or panic on any input. It is a function of
//! `(frame, metadata, now)` that rewrites the frame in place and says what to do with it;
//! the io layer fills in link-layer addresses and moves buffers.
//!
//! One file per job (VPP's in2out/out2in/handoff split): `fast_path` (parse → flow lookup
//! → apply the flow's precomputed rewrite), `slow_path` (a miss: filtering, policy,
//! mapping allocation, flow insert; revalidation), `icmp_errors` (RFC 5508 translation),
//! `fragments` (with `frag_table`), `steering` (which worker owns a flow), `own_packets`
//! (what natgw builds itself: echo replies, resets, ICMP errors), `flow_records`; this
//! file parses a frame and dispatches it.

mod config;
mod dns_watch;
mod fast_path;
mod flow_records;
mod frag_table;
mod fragments;
pub mod handoff;
mod icmp_errors;
pub mod journal;
mod own_packets;
pub mod policy;
pub mod pool;
pub mod precopy;
pub mod refusals;
pub mod replication;
mod slow_path;
mod steering;

pub use config::{Filtering, InsideLink, NatConfig};
pub use flow_records::{EndReason, FlowDirection, FlowEnd, MAX_PENDING_FLOW_ENDS};
pub use steering::{node_of_port, owner_of_port, port_spread, PORT_SPREAD_MULTIPLIER};

use std::net::Ipv4Addr;
use std::sync::Arc;

use natgw_wire::{
    ethernet, icmpv4, ipv4, EthernetFrame, Ipv4Packet, L4Header, TcpPacket, WireError, ETHERTYPE_IPV4, PROTO_ICMP,
};

use crate::conntrack::tcp_window::Segment;
use crate::conntrack::{Egress, FlowKey, FlowState, FlowSummary, FlowTable, Side, TcpState};
use crate::counters::{Counter, Counters};
use crate::dns::NameBinder;
use frag_table::FragTable;
use own_packets::IcmpErrorKind;
use policy::{AllowAll, FlowPolicy};
use pool::Mappings;

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
    /// the fragments `natgw_wire::ipv4::split(packet, mtu)` describes. Checksums are complete.
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

/// What the translator learned about an IPv4 packet before deciding. Every length in it
/// was checked against the frame.
struct Parsed {
    /// The IP header's length (always `ipv4::MIN_HEADER_LEN`: options are refused).
    ihl: usize,
    /// The IP packet's total length; the frame holds at least this after Ethernet.
    total: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    ident: u16,
    dont_fragment: bool,
    l4: L4Header,
    /// For TCP: what window tracking reads (zeros otherwise).
    tcp: TcpFields,
    is_fragment: bool,
    first_fragment: bool,
}

/// The TCP fields window tracking reads, and where the options are in the frame.
#[derive(Debug, Clone, Copy, Default)]
struct TcpFields {
    seq: u32,
    ack: u32,
    window: u16,
    payload_len: u32,
    options: (usize, usize),
}

impl Parsed {
    /// The TCP segment as window tracking sees it.
    fn segment<'a>(&self, frame: &'a [u8]) -> Segment<'a> {
        let flags = match self.l4 {
            L4Header::Tcp { flags, .. } => flags,
            _ => 0,
        };
        let t = &self.tcp;
        Segment {
            seq: t.seq,
            ack: t.ack,
            flags,
            window: t.window,
            payload_len: t.payload_len,
            options: frame.get(t.options.0..t.options.1).unwrap_or(&[]),
        }
    }

    /// Where the IP packet is in the frame.
    fn l3(&self) -> std::ops::Range<usize> {
        ethernet::HEADER_LEN..ethernet::HEADER_LEN + self.total
    }

    /// Where the transport header (or an ICMP message) starts in the frame.
    fn l4_at(&self) -> usize {
        ethernet::HEADER_LEN + self.ihl
    }
}

/// At most this many flows given up per tick above the high-water mark (ticks come every
/// 100 ms: 40 000 a second), so that a tick's work stays bounded.
const PRESSURE_DROPS_PER_TICK: usize = 4096;

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
    close_checks: std::collections::VecDeque<flow_records::RecordCheck>,
    interim_checks: std::collections::VecDeque<flow_records::RecordCheck>,
    /// Flows whose counters the flow log must report at the next tick, before the low
    /// bits it keeps of them wrap (`Flow::count`): at most one entry per flow.
    report_checks: Vec<flow_records::RecordCheck>,
    /// The IP length of the packet being translated, for a refused flow's record.
    packet_len: u64,
    /// Time of the packet being translated.
    packet_ms: u64,
    /// Refusals of the egress policy, remembered per tuple for a moment.
    refusals: refusals::RefusalCache,
    /// Flow events for a standby (`[ha]`), when replicating.
    replication: Option<replication::ReplicationLog>,
    /// An upgrade's pre-copy under way: what changed since the flows were exported.
    precopy: Option<precopy::PreCopy>,
    /// DNS name binding (`[dns]`), when configured.
    dns: Option<NameBinder>,
    /// The shadow egress policy's answer to the last egress question, until the flow it
    /// admitted (or the record of its refusal) takes it.
    shadow_answer: Option<policy::EgressDecision>,
}

impl Translator {
    pub fn new(cfg: NatConfig, counters: Arc<Counters>, now_ms: u64) -> Self {
        // The config bounds workers (`dataplane.workers`: at most 64).
        let (worker, workers) = (u16::try_from(cfg.worker).unwrap_or(0), u16::try_from(cfg.workers).unwrap_or(1));
        let mut mappings = Mappings::with_pools(cfg.pools.clone(), worker, workers, cfg.source_ports.clone());
        mappings.set_node_slice(cfg.node_slice.0, cfg.node_slice.1);
        Translator {
            policy: Box::new(AllowAll),
            ended: Vec::new(),
            record_flow_ends: false,
            record_refused: false,
            active_interval_ms: 0,
            close_checks: Default::default(),
            interim_checks: Default::default(),
            report_checks: Vec::new(),
            packet_len: 0,
            packet_ms: now_ms,
            refusals: refusals::RefusalCache::new(cfg.refusal_cache_ms),
            replication: None,
            precopy: None,
            dns: None,
            shadow_answer: None,
            flows: FlowTable::with_source_counts(cfg.max_flows, now_ms, cfg.source_flows.clone()),
            frags: FragTable::new(cfg.fragment_memory, now_ms),
            icmp_tokens: cfg.icmp_error_rate,
            icmp_refill_ms: now_ms,
            ip_ident: worker.wrapping_mul(7919),
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

    /// Every flow as `natgw flows` shows it, with the pool its mapping came from.
    pub fn flow_summaries(&self, now_ms: u64) -> Vec<FlowSummary> {
        self.flows
            .iter()
            .map(|(_, f)| FlowSummary {
                pool: f.mapping.get().and_then(|m| self.mappings.get(m)).map(|m| m.pool),
                ..f.summary(now_ms)
            })
            .collect()
    }

    /// Installs the slow path's policy (egress check and pool choice for new flows).
    pub fn set_policy(&mut self, policy: Box<dyn FlowPolicy>) {
        self.policy = policy;
    }

    /// Turns DNS name binding on: this worker's binder, over the table every worker shares.
    pub fn set_name_binder(&mut self, binder: NameBinder) {
        self.dns = Some(binder);
    }

    pub fn name_binder(&self) -> Option<&NameBinder> {
        self.dns.as_ref()
    }

    /// Between batches of frames: lets a new policy generation take over.
    pub fn policy_batch_boundary(&mut self) {
        self.policy.batch_boundary();
    }

    /// Periodic work: expire flows and fragment state, refill the ICMP error budget.
    pub fn tick(&mut self, now_ms: u64) {
        let counters = Arc::clone(&self.counters);
        let mut expired = Vec::new();
        self.flows.expire(now_ms, |id, flow| expired.push((id, flow)));
        for (id, flow) in expired {
            let reason = match flow.state {
                _ if flow.marks.revoked() => EndReason::Revalidated,
                FlowState::Tcp(TcpState::TimeWait) => EndReason::Closed,
                FlowState::Tcp(TcpState::Closed) => EndReason::Reset,
                _ => EndReason::IdleTimeout,
            };
            if reason == EndReason::IdleTimeout {
                counters.inc(Counter::IdleTimeoutCount);
            }
            self.flow_ended(id, &flow, now_ms, reason);
        }
        self.relieve_pressure(now_ms, PRESSURE_DROPS_PER_TICK);
        self.counters.set(Counter::ActiveConnectionCount, self.flows.len() as u64);
        self.due_records(now_ms);
        self.due_refusal_summaries(now_ms);
        if let Some(d) = self.dns.as_mut() {
            d.tick(now_ms);
        }
        self.frags.expire(now_ms);
        let frag = self.frags.take_events();
        self.counters.add(Counter::DropFragment, frag.held_dropped);
        self.counters.add(Counter::FragmentEvictionCount, frag.evicted);
        self.counters.add(Counter::FragmentTrackingRefused, frag.refused_source_share);
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
        if ip.header_len() != ipv4::MIN_HEADER_LEN {
            // Options would need per-option handling (source route, record route); like
            // many carrier NATs we refuse them rather than forward them unexamined.
            return Err(WireError::IpOptions);
        }
        if meta.gso_size == 0 && ip.total_len() + ethernet::HEADER_LEN < frame.len() && frame.len() > 60 {
            // Longer than the IP packet and not Ethernet minimum-size padding.
            return Err(WireError::BadTotalLength);
        }
        let is_fragment = ip.is_fragment();
        let first_fragment = is_fragment && ip.frag_offset() == 0;
        let l4 = if first_fragment {
            L4Header::parse_first_fragment(ip.protocol(), ip.payload())?
        } else if is_fragment {
            L4Header::Other
        } else {
            L4Header::parse(ip.protocol(), ip.payload())?
        };
        if !ip.verify_checksum() {
            return Err(WireError::BadIpChecksum);
        }
        let tcp = match l4 {
            L4Header::Tcp { .. } => {
                let t = TcpPacket::new_checked(ip.payload())?;
                let at = ethernet::HEADER_LEN + ip.header_len();
                let options = t.options_range();
                TcpFields {
                    seq: t.seq_number(),
                    ack: t.ack_number(),
                    window: t.window_len(),
                    // Within an IPv4 packet: far below u32.
                    payload_len: u32::try_from(t.payload().len()).unwrap_or(u32::MAX),
                    options: (at + options.start, at + options.end),
                }
            }
            _ => TcpFields::default(),
        };
        Ok(Parsed {
            ihl: ip.header_len(),
            total: ip.total_len(),
            proto: ip.protocol(),
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            ttl: ip.ttl(),
            ident: ip.ident(),
            dont_fragment: ip.dont_fragment(),
            l4,
            tcp,
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
            if matches!(p.l4, L4Header::IcmpQuery { icmp_type: icmpv4::ECHO_REQUEST, .. }) && !p.is_fragment {
                return Ok(self.answer_echo(frame, &p, meta));
            }
            if !self.mappings.is_external(p.dst) || (meta.side == Side::Inside && p.proto == PROTO_ICMP) {
                return Ok(Verdict::Drop(Counter::DropNotForUs));
            }
        }

        match meta.side {
            Side::Inside => {
                // From the link's own subnets only, and never from one of natgw's own
                // addresses (RFC 1812 5.3.7: a spoofed source).
                if !self
                    .cfg
                    .inside
                    .get(usize::from(meta.link))
                    .is_some_and(|l| l.addresses.iter().any(|n| n.contains(p.src)))
                    || self.is_own_address(p.src, Side::Inside)
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
            return Ok(self.icmp_error_reply(
                frame,
                &p,
                meta,
                IcmpErrorKind::TimeExceeded,
                out,
                Counter::DropTtlExpired,
            ));
        }
        if let L4Header::IcmpError { .. } = p.l4 {
            return self.icmp_error(frame, &p, meta, now_ms);
        }
        let Some(key) = flow_key(meta.side, &p) else { return Ok(Verdict::Drop(Counter::DropUnsupportedProtocol)) };
        let (id, dir) = match self.flows.lookup(&key) {
            Some(hit) => hit,
            None => match self.new_flow(frame, &key, &p, meta, now_ms) {
                Ok(hit) => hit,
                Err(Counter::DropPolicyRejected) => return Ok(self.reject(frame, &p, meta, out)),
                Err(c) => return Ok(Verdict::Drop(c)),
            },
        };
        self.forward_flow(frame, &p, meta, id, dir, now_ms, out)
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
        let i = self.cfg.inside.iter().position(|l| l.addresses.iter().any(|n| n.contains(a)))?;
        u8::try_from(i).ok()
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
        (wire_len(p, meta) > usize::from(mtu)).then_some(mtu)
    }

    fn egress_mtu(&self, egress: Egress) -> u16 {
        match egress {
            Egress::Outside => self.cfg.outside_mtu,
            Egress::Inside(i) => self.cfg.inside.get(usize::from(i)).map_or(1500, |l| l.mtu),
        }
    }

    /// The address natgw speaks from towards `side` (ICMP errors, echo replies).
    fn own_address_towards(&self, side: Side, link: u8, peer: Ipv4Addr, addressed: Ipv4Addr) -> Ipv4Addr {
        match side {
            Side::Outside if self.mappings.is_external(addressed) => addressed,
            Side::Outside => self.cfg.external_addrs.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
            Side::Inside => self
                .cfg
                .inside
                .get(usize::from(link))
                .and_then(|l| l.addresses.iter().find(|n| n.contains(peer)).or(l.addresses.first()))
                .map_or(Ipv4Addr::UNSPECIFIED, |n| n.addr),
        }
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
pub fn is_routable_destination(a: Ipv4Addr) -> bool {
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
