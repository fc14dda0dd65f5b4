//! ICMP errors in either direction (RFC 5508 section 4): the flow is found by the quoted
//! packet's reversed key, the quoted header is translated back to what its sender sent,
//! and the outer header towards that sender. Path-MTU discovery depends on this.

use natgw_wire::{icmpv4, quote, Icmpv4Packet, Ipv4Packet, QuoteRepr, QuotedPacket, WireError, PROTO_UDP};

use super::{FrameMeta, Parsed, Translator, Verdict};
use crate::conntrack::{Egress, FlowKey, Side};
use crate::counters::Counter;

/// Where the quoted packet starts in the frame.
fn quote_at(p: &Parsed) -> usize {
    p.l4_at() + icmpv4::HEADER_LEN
}

/// What the quote in an ICMP error says about the packet it is about.
pub(super) fn quoted(frame: &[u8], p: &Parsed) -> Result<QuoteRepr, WireError> {
    let q = frame.get(quote_at(p)..p.l3().end).ok_or(WireError::BadIcmpQuote)?;
    Ok(QuoteRepr::parse(&QuotedPacket::new_checked(q)?))
}

impl Translator {
    /// An ICMP error quoting a UDP query natgw gave its own id (`dns_watch`): the host sees
    /// its own id in the quote, never natgw's, which would let someone it tells forge an
    /// answer that matches. `quote` starts at the quoted IP header.
    fn restore_quoted_dns_id(&self, quote: &mut [u8], orig: &FlowKey, now_ms: u64) {
        let Some(binder) = self.dns.as_ref() else { return };
        if !binder.watches(orig.dst, orig.dst_port) {
            return;
        }
        let Some(&first) = quote.first() else { return };
        let udp = usize::from(first & 0x0f) * 4;
        let Some(id) = quote.get(udp + 8..udp + 10).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return };
        let Some(host_id) = binder.host_id_of(orig.src, orig.src_port, orig.dst, id, now_ms) else { return };
        quote[udp + 8..udp + 10].copy_from_slice(&host_id.to_be_bytes());
        // The quoted UDP checksum follows, when it is whole in the quote and not "none".
        super::dns_watch::update_udp_checksum(quote.get_mut(udp + 6..udp + 8), id, host_id);
    }

    pub(super) fn icmp_error(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        meta: FrameMeta,
        now_ms: u64,
    ) -> Result<Verdict, WireError> {
        let inner = quoted(frame, p)?;
        // The quoted packet travelled the other way: its reversed key is our flow's key
        // for packets travelling like this error.
        let key = FlowKey {
            side: meta.side,
            proto: inner.protocol,
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
        let (orig_key, rw, egress, sender_key) = (f.keys[1 - dir], f.rewrite(dir), f.egress[dir], f.keys[dir]);
        // Inner header: back to what the quoted packet's sender put on the wire.
        let to = QuoteRepr {
            protocol: inner.protocol,
            src: orig_key.src,
            dst: orig_key.dst,
            src_port: orig_key.src_port,
            dst_port: orig_key.dst_port,
        };
        let l3_end = p.l3().end;
        quote::translate(&mut QuotedPacket::new_checked(&mut frame[quote_at(p)..l3_end])?, &to);
        if orig_key.side == Side::Inside && inner.protocol == PROTO_UDP {
            self.restore_quoted_dns_id(&mut frame[quote_at(p)..l3_end], &orig_key, now_ms);
        }
        // Outer header: to the quoted packet's sender. From the flow's translated address
        // when the error comes from the flow's own endpoint, or when it leaves on the
        // outside (an inside router or host reporting: its private address never leaves,
        // as netfilter masquerades related ICMP); else from the reporting router.
        let new_src = if p.src == sender_key.src || egress == Egress::Outside { rw.src.addr } else { p.src };
        let mut ip = Ipv4Packet::new_checked(&mut frame[p.l3()])?;
        ip.set_src_addr(new_src);
        ip.set_dst_addr(rw.dst.addr);
        ip.set_ttl(p.ttl - 1);
        ip.fill_checksum();
        Icmpv4Packet::new_checked(ip.payload_mut())?.fill_checksum();
        self.count_out(egress, p.total as u64, 1);
        Ok(Verdict::Forward { egress, next_hop: self.next_hop(egress, rw.dst.addr) })
    }
}
