//! Packets natgw builds itself: echo replies for its own addresses, TCP resets and ICMP
//! errors (time exceeded, fragmentation needed, administratively prohibited), rate-limited
//! by the ICMP error budget. Resets and ICMP errors are emitted by the wire crate's `Repr`s;
//! an echo reply is the request turned round in place through the views' setters (its
//! payload must come back as it came).

use std::net::Ipv4Addr;

use natgw_wire::{
    checksum, ethernet, icmpv4, ipv4, tcp, EthernetFrame, Icmpv4Packet, Icmpv4Repr, Ipv4Packet, Ipv4Repr, L4Header,
    TcpPacket, TcpRepr, ETHERTYPE_IPV4, PROTO_ICMP, PROTO_TCP,
};

use super::{FrameMeta, Parsed, Translator, Verdict};
use crate::counters::Counter;

/// The most of the offending packet an ICMP error quotes: with the error's own headers,
/// 576 bytes, what every IPv4 host must accept (RFC 1812 4.3.2.3).
const MAX_QUOTE: usize = 548;

/// Which ICMP error natgw sends about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IcmpErrorKind {
    /// Time exceeded in transit: its TTL ran out here.
    TimeExceeded,
    /// Destination unreachable, fragmentation needed and DF set (RFC 1191).
    FragmentationNeeded { mtu: u16 },
    /// Destination unreachable, communication administratively prohibited (RFC 1812).
    AdminProhibited,
}

impl Translator {
    /// Answers an echo request to one of natgw's addresses, in place.
    pub(super) fn answer_echo(&mut self, frame: &mut [u8], p: &Parsed, meta: FrameMeta) -> Verdict {
        let Ok(mut ip) = Ipv4Packet::new_checked(&mut frame[p.l3()]) else {
            return Verdict::Drop(Counter::DropTruncated);
        };
        {
            let Ok(mut m) = Icmpv4Packet::new_checked(ip.payload_mut()) else {
                return Verdict::Drop(Counter::DropBadIcmp);
            };
            let old = m.type_code_word();
            m.set_msg_type(icmpv4::ECHO_REPLY);
            m.set_checksum(checksum::update16(m.checksum(), old, m.type_code_word()));
        }
        ip.set_src_addr(p.dst);
        ip.set_dst_addr(p.src);
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
            _ => {
                self.icmp_error_reply(frame, p, meta, IcmpErrorKind::AdminProhibited, out, Counter::DropPolicyRejected)
            }
        }
    }

    /// Writes an Ethernet (addresses left for the caller) and IPv4 header from natgw into
    /// `out` and returns the rest of the packet for the transport, or `None` when `out`
    /// is too short.
    fn begin_packet<'a>(
        &mut self,
        out: &'a mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload_len: usize,
    ) -> Option<&'a mut [u8]> {
        let ip = Ipv4Repr { src, dst, protocol, payload_len, ttl: 64, ident: self.ip_ident, dont_fragment: false };
        let frame = out.get_mut(..ethernet::HEADER_LEN + ip.buffer_len())?;
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let mut eth = EthernetFrame::new_unchecked(frame);
        eth.set_ethertype(ETHERTYPE_IPV4);
        let mut packet = Ipv4Packet::new_unchecked(eth.into_inner().get_mut(ethernet::HEADER_LEN..)?);
        ip.emit(&mut packet).ok()?;
        packet.into_inner().get_mut(ipv4::MIN_HEADER_LEN..)
    }

    /// Builds a TCP RST answering the segment in `frame` (not yet rewritten), as if from
    /// the address it was sent to (RFC 9293 3.10.7.1, `TcpRepr::reset_for`). Shares the
    /// ICMP error budget; never answers a RST or a fragment.
    pub(super) fn tcp_reset_reply(
        &mut self,
        frame: &[u8],
        p: &Parsed,
        meta: FrameMeta,
        out: &mut [u8],
        reason: Counter,
    ) -> Verdict {
        if !matches!(p.l4, L4Header::Tcp { .. }) || p.is_fragment || self.icmp_tokens == 0 {
            return Verdict::Drop(reason);
        }
        let Some(Ok(segment)) = frame.get(p.l4_at()..p.l3().end).map(TcpPacket::new_checked) else {
            return Verdict::Drop(reason);
        };
        let Some(rst) = TcpRepr::reset_for(&TcpRepr::parse(&segment), segment.payload().len()) else {
            return Verdict::Drop(reason);
        };
        let Some(l4) = self.begin_packet(out, p.dst, p.src, PROTO_TCP, rst.header_len()) else {
            return Verdict::Drop(reason);
        };
        rst.emit(&mut TcpPacket::new_unchecked(l4), p.dst, p.src);
        self.icmp_tokens -= 1;
        self.counters.inc(reason);
        self.counters.inc(Counter::TcpResetsSent);
        let total = ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN;
        let egress = meta.arrived_from();
        self.count_out(egress, total as u64, 1);
        Verdict::Emit { egress, next_hop: self.next_hop(egress, p.src), len: ethernet::HEADER_LEN + total }
    }

    /// Builds an ICMP error about the packet in `frame` (not yet rewritten) back to its
    /// sender, from natgw's address on that side. Returns `Drop(reason)` when none may be
    /// sent (RFC 1812 4.3.2.7: never about an ICMP error, a non-first fragment, or a
    /// broadcast), or when the rate limit is spent; the offending packet is dropped either way.
    pub(super) fn icmp_error_reply(
        &mut self,
        frame: &[u8],
        p: &Parsed,
        meta: FrameMeta,
        kind: IcmpErrorKind,
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
        let quote_len = p.total.min(MAX_QUOTE);
        let Some(quote) = frame.get(ethernet::HEADER_LEN..ethernet::HEADER_LEN + quote_len) else {
            return Verdict::Drop(reason);
        };
        let icmp = match kind {
            IcmpErrorKind::TimeExceeded => Icmpv4Repr::TimeExceeded { code: 0, data: quote },
            IcmpErrorKind::FragmentationNeeded { mtu } => {
                Icmpv4Repr::DstUnreachable { code: icmpv4::CODE_FRAG_NEEDED, next_hop_mtu: mtu, data: quote }
            }
            IcmpErrorKind::AdminProhibited => {
                Icmpv4Repr::DstUnreachable { code: icmpv4::CODE_ADMIN_PROHIBITED, next_hop_mtu: 0, data: quote }
            }
        };
        let from = self.own_address_towards(meta.side, meta.link, p.src, p.dst);
        let Some(l4) = self.begin_packet(out, from, p.src, PROTO_ICMP, icmp.buffer_len()) else {
            return Verdict::Drop(reason);
        };
        icmp.emit(&mut Icmpv4Packet::new_unchecked(l4));
        self.icmp_tokens -= 1;
        // The offending packet is dropped (counted) even though an error went back.
        self.counters.inc(reason);
        self.counters.inc(Counter::IcmpErrorsSent);
        let total = ipv4::MIN_HEADER_LEN + icmp.buffer_len();
        let egress = meta.arrived_from();
        self.count_out(egress, total as u64, 1);
        Verdict::Emit { egress, next_hop: self.next_hop(egress, p.src), len: ethernet::HEADER_LEN + total }
    }
}
