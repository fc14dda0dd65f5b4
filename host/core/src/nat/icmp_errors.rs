//! ICMP errors in either direction (RFC 5508 section 4): the flow is found by the quoted
//! packet's reversed key, the quoted header is translated back to what its sender sent,
//! and the outer header towards that sender. Path-MTU discovery depends on this.

use std::net::Ipv4Addr;

use super::*;

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

impl Translator {
    /// ICMP errors in either direction (RFC 5508 section 4): find the flow the quoted packet
    /// belongs to, translate the quoted header back to what its sender sent, and the outer
    /// header towards that sender. Path-MTU discovery depends on this.
    pub(super) fn icmp_error(&mut self, frame: &mut [u8], p: &Parsed, meta: FrameMeta) -> Result<Verdict, WireError> {
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
