//! Packets natgw builds itself: echo replies for its own addresses, TCP resets and ICMP
//! errors (time exceeded, fragmentation needed, administratively prohibited), rate-limited
//! by the ICMP error budget.

use super::*;

impl Translator {
    /// Answers an echo request to one of natgw's addresses, in place.
    pub(super) fn answer_echo(&mut self, frame: &mut [u8], p: &Parsed, meta: FrameMeta) -> Verdict {
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
    pub(super) fn reject(&mut self, frame: &[u8], p: &Parsed, meta: FrameMeta, out: &mut [u8]) -> Verdict {
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
    pub(super) fn tcp_reset_reply(
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
    pub(super) fn icmp_error_reply(
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
}
