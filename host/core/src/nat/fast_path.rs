//! The fast path: a packet of a known flow. TTL, MTU, the flow's precomputed rewrite with
//! every checksum updated incrementally (RFC 1624), TCP state, counters. No allocation, no
//! lock, no call into anything pluggable.

use std::net::Ipv4Addr;

use super::*;

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
            self.frags.record(frag_key(meta.side, p, frame), frag_table::FragTarget { flow: id, dir }, now_ms);
        }
        self.count_out(egress, p.total as u64, u64::from(meta.segments.max(1)));
        Ok(forward(egress, self.next_hop(egress, rw.dst.addr), fragment_to))
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
/// identifier, TTL - 1, with every checksum updated incrementally (RFC 1624). With
/// `partial`, the L4 field is a pseudo-header sum and only the addresses enter it.
pub(super) fn rewrite_in_place(l3: &mut [u8], p: &Parsed, rw: &Rewrite, partial: bool) {
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
pub(super) fn complete_partial_checksum(l3: &mut [u8], p: &Parsed) {
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
pub(super) fn rewrite_ports(
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
