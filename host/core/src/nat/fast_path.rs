//! The fast path: a packet of a known flow. TTL, MTU, the flow's precomputed rewrite with
//! every checksum updated incrementally (RFC 1624), TCP state, counters. No allocation, no
//! lock, no call into anything pluggable.

use std::net::Ipv4Addr;

use natgw_wire::{checksum, tcp, Icmpv4Packet, Ipv4Packet, L4Header, TcpPacket, UdpPacket, WireError};

use super::flow_records::{report_unreported, RecordCheck};
use super::frag_table::FragTarget;
use super::fragments::frag_key;
use super::own_packets::IcmpErrorKind;
use super::{FrameMeta, Parsed, Translator, Verdict};
use crate::conntrack::tcp_window::WindowVerdict;
use crate::conntrack::{tcp_transition, Egress, FlowId, FlowState, Rewrite, RewriteDeltas, TcpState, ORIGINAL, REPLY};
use crate::counters::Counter;

impl Translator {
    /// Fast path for a packet of a known flow: TTL, MTU, rewrite, state, counters.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_flow(
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
        let (rw, deltas, egress, orig) = (flow.rewrite(dir), flow.deltas[dir], flow.egress[dir], flow.keys[ORIGINAL]);
        if flow.marks.revoked() {
            return Ok(match p.l4 {
                L4Header::Tcp { flags, .. } if flags & tcp::RST == 0 => {
                    self.tcp_reset_reply(frame, p, meta, out, Counter::DropPolicyRevoked)
                }
                _ => Verdict::Drop(Counter::DropPolicyRevoked),
            });
        }
        // Window tracking decides first whether a TCP segment passes at all.
        let keep_state = match p.l4 {
            L4Header::Tcp { .. } => match self.track_window(id, dir, p, frame) {
                WindowVerdict::Accept => false,
                WindowVerdict::AcceptKeepState => true,
                WindowVerdict::OutOfWindow => return Ok(Verdict::Drop(Counter::DropTcpOutOfWindow)),
            },
            _ => false,
        };
        if p.ttl <= 1 {
            self.precopy_changed(id);
            return Ok(self.icmp_error_reply(
                frame,
                p,
                meta,
                IcmpErrorKind::TimeExceeded,
                out,
                Counter::DropTtlExpired,
            ));
        }
        let fragment_to = self.fragment_to(p, meta, egress);
        if let Some(mtu) = fragment_to {
            if p.dont_fragment || meta.gso_size != 0 {
                self.precopy_changed(id);
            }
            if p.dont_fragment {
                let kind = IcmpErrorKind::FragmentationNeeded { mtu };
                return Ok(self.icmp_error_reply(frame, p, meta, kind, out, Counter::DropNeedsFragmentation));
            }
            if meta.gso_size != 0 {
                // Super-frames without DF (UDP GSO) would need segmenting first; rare.
                return Ok(Verdict::Drop(Counter::DropNeedsFragmentation));
            }
        }
        let dns_id = self.watch_dns(frame, p, &meta, dir, &orig, now_ms);
        rewrite_in_place(&mut frame[p.l3()], p, &rw, &deltas, meta.csum_partial)?;
        if let Some(change) = dns_id {
            Self::dns_id_changed(frame, p, &meta, change);
        }
        if fragment_to.is_some() && meta.csum_partial {
            // The device would finish the checksum over the whole datagram; once split,
            // nobody can: finish it here.
            complete_partial_checksum(&mut frame[p.l3()], p)?;
        }
        let timeouts = self.cfg.timeouts;
        let counters = &self.counters;
        let flow_log = self.record_flow_ends;
        let Some(flow) = self.flows.get_mut(id) else { return Ok(Verdict::Drop(Counter::DropNoRoute)) };
        let state_before = flow.state;
        // An ICMP query is answered by its first reply (UDP and TCP below, by state).
        let mut answered = dir == REPLY && flow.packets[REPLY] == 0 && flow.state == FlowState::Icmp;
        if flow.count(dir, u64::from(meta.segments.max(1)), p.total as u64) {
            report_unreported(flow, id, now_ms, flow_log, &mut self.report_checks);
        }
        match (p.l4, flow.state) {
            (L4Header::Tcp { flags, .. }, FlowState::Tcp(_)) if keep_state => flow.tcp_flags[dir] |= flags,
            (L4Header::Tcp { flags, .. }, FlowState::Tcp(s)) => {
                flow.tcp_flags[dir] |= flags;
                let mut fin_seen = flow.marks.fin_seen();
                let t = tcp_transition(s, dir, flags, &mut fin_seen);
                flow.marks.set_fin_seen(fin_seen);
                flow.state = FlowState::Tcp(t.next);
                if t.became_established {
                    counters.inc(Counter::ConnectionEstablishedCount);
                    answered = true;
                }
                if flow_log
                    && t.next != s
                    && matches!(t.next, TcpState::TimeWait | TcpState::Closed)
                    && !flow.marks.close_check_queued()
                {
                    // Its final record goes out once it has been quiet for a second; one
                    // check per flow however often it closes and reopens.
                    flow.marks.set_close_check_queued(true);
                    self.close_checks.push_back(RecordCheck::new(now_ms + 1000, id, flow.created_ms()));
                }
            }
            (_, FlowState::Udp { replied: false }) if dir == REPLY => {
                flow.state = FlowState::Udp { replied: true };
                counters.inc(Counter::ConnectionEstablishedCount);
                answered = true;
            }
            _ => {}
        }
        flow.refresh(now_ms, &timeouts);
        let (created_ms, state_changed) = (flow.created_ms(), flow.state != state_before);
        if state_changed {
            // A shorter timeout (a close, a reset) brings the deadline forward: file it
            // there, so that the entry and its port go at the deadline, not at the old one.
            self.flows.reschedule(id);
        }
        if let (Some(log), true) = (self.replication.as_mut(), state_changed || answered) {
            // The standby learns of every state change (not of every packet).
            log.changed(id, created_ms);
        }
        if answered {
            // No longer among the flows to give up first under pressure.
            self.flows.answered(id);
        }
        if p.first_fragment {
            self.frags.record(frag_key(meta.side, p), FragTarget { flow: id, dir }, now_ms);
        }
        self.count_out(egress, p.total as u64, u64::from(meta.segments.max(1)));
        Ok(forward(egress, self.next_hop(egress, rw.dst.addr), fragment_to))
    }

    /// Window tracking for a TCP segment of a known flow (`conntrack::tcp_window`): may it
    /// pass, and may it move the connection's state.
    fn track_window(&mut self, id: FlowId, dir: usize, p: &Parsed, frame: &[u8]) -> WindowVerdict {
        let Some((flow, windows)) = self.flows.get_mut_with_windows(id) else { return WindowVerdict::OutOfWindow };
        let FlowState::Tcp(state) = flow.state else { return WindowVerdict::Accept };
        // Every TCP flow of the table has its entry.
        let Some(windows) = windows else { return WindowVerdict::Accept };
        let seg = p.segment(frame);
        if dir == ORIGINAL && seg.flags & (tcp::SYN | tcp::ACK) == tcp::SYN {
            return match state {
                // A new connection on the same tuple (RFC 1122's reuse from TIME-WAIT), or
                // the client trying again before an answer: tracking starts over.
                TcpState::Closed | TcpState::TimeWait | TcpState::SynSent => {
                    windows.restart(&seg);
                    WindowVerdict::Accept
                }
                // A SYN on an open connection may mean natgw's entry is stale: through and
                // unchanged (netfilter's "ignored"), so that the endpoints sort it out (a
                // challenge ACK, a reset) and the entry closes by their in-window reset.
                _ => WindowVerdict::AcceptKeepState,
            };
        }
        windows.check(dir, state == TcpState::SynSent, &seg)
    }

    pub(super) fn count_out(&self, egress: Egress, bytes: u64, packets: u64) {
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
}

/// Send as is, or split for `fragment_to`.
pub(super) fn forward(egress: Egress, next_hop: Ipv4Addr, fragment_to: Option<u16>) -> Verdict {
    match fragment_to {
        Some(mtu) => Verdict::ForwardFragmented { egress, next_hop, mtu },
        None => Verdict::Forward { egress, next_hop },
    }
}

/// Applies a rewrite to an IPv4 packet (IHL 5) in place: addresses, ports or ICMP
/// identifier, TTL - 1, each checksum changed by the flow's precomputed delta in one step
/// (RFC 1624). With `partial`, the transport checksum is a pseudo-header sum and only the
/// addresses enter it.
pub(super) fn rewrite_in_place(
    l3: &mut [u8],
    p: &Parsed,
    rw: &Rewrite,
    deltas: &RewriteDeltas,
    partial: bool,
) -> Result<(), WireError> {
    let mut ip = Ipv4Packet::new_checked(l3)?;
    ip.set_checksum(deltas.ip().apply(ip.checksum()));
    ip.set_ttl(p.ttl - 1);
    ip.set_src_addr(rw.src.addr);
    ip.set_dst_addr(rw.dst.addr);
    let l4 = ip.payload_mut();
    let transport = |c: u16| if partial { deltas.addresses.apply_partial(c) } else { deltas.l4.apply(c) };
    match p.l4 {
        L4Header::Tcp { .. } => {
            let mut t = TcpPacket::new_checked(l4)?;
            t.set_checksum(transport(t.checksum()));
            t.set_src_port(rw.src.port);
            t.set_dst_port(rw.dst.port);
        }
        L4Header::Udp { checksum: old, .. } => {
            let mut u = UdpPacket::new_checked_header(l4)?;
            // No UDP checksum (0): only the ports change.
            if old != 0 || partial {
                let c = transport(old);
                // A complete checksum that comes out 0 is sent as 0xffff: 0 means "none".
                u.set_checksum(if c == 0 && !partial { 0xffff } else { c });
            }
            u.set_src_port(rw.src.port);
            u.set_dst_port(rw.dst.port);
        }
        L4Header::IcmpQuery { ident, .. } => {
            // ICMP has no pseudo-header: only the identifier enters its checksum. The
            // identifier is the "port" of whichever side is being translated.
            let new_id = if rw.src.addr != p.src { rw.src.port } else { rw.dst.port };
            if new_id != ident {
                let mut m = Icmpv4Packet::new_checked(l4)?;
                m.set_checksum(deltas.l4.apply(m.checksum()));
                m.set_echo_ident(new_id);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Turns a CHECKSUM_PARTIAL TCP/UDP checksum into the complete one, as the device would
/// have: the field holds the pseudo-header sum, so the sum over the whole segment with it
/// in place is the complete sum.
fn complete_partial_checksum(l3: &mut [u8], p: &Parsed) -> Result<(), WireError> {
    let mut ip = Ipv4Packet::new_checked(l3)?;
    let l4 = ip.payload_mut();
    let c = !checksum::fold(checksum::sum(l4, 0));
    match p.l4 {
        L4Header::Tcp { .. } => TcpPacket::new_checked(l4)?.set_checksum(c),
        L4Header::Udp { .. } => UdpPacket::new_checked_header(l4)?.set_checksum(if c == 0 { 0xffff } else { c }),
        _ => {}
    }
    Ok(())
}
