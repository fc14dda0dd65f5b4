//! The fast path's one diversion for DNS name binding: a packet of a flow an inside host
//! opened to a configured resolver's port 53 is shown to the worker's `NameBinder` before
//! it is forwarded (a query on its way out, an answer on its way in), so that a binding is
//! filed before the host can act on the answer. Nothing is held here. A UDP query leaves
//! with a transaction id natgw chose, and its answer reaches the host with the host's own
//! (`NameBinder::on_udp_query`); nothing else is changed. TCP segments are read in their
//! stream's order (`dns::stream`), and only when their checksum holds: a segment the
//! receiver will drop must not be read as what it received.

use natgw_wire::{checksum, tcp, L4Header, PROTO_TCP};

use super::{FrameMeta, Parsed, Translator};
use crate::conntrack::{FlowKey, Side, ORIGINAL};
use crate::counters::Counter;
use crate::dns::{Segment, StreamKey, Way};

impl Translator {
    /// Called for every forwarded packet of a flow whose original key is `orig`, before it is
    /// translated: one comparison unless the flow is DNS to a configured resolver. When it
    /// changed a UDP message's id, the old and new id: the caller's `dns_id_changed` then
    /// fixes the checksum, once the packet is translated.
    pub(super) fn watch_dns(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        meta: &FrameMeta,
        dir: usize,
        orig: &FlowKey,
        now_ms: u64,
    ) -> Option<(u16, u16)> {
        let binder = self.dns.as_mut()?;
        if orig.side != Side::Inside || p.is_fragment || !binder.watches(orig.dst, orig.dst_port) {
            return None;
        }
        let header = match p.l4 {
            L4Header::Udp { .. } => natgw_wire::udp::HEADER_LEN,
            L4Header::Tcp { flags, header_len, .. } => {
                let segment = frame.get(p.l4_at()..p.l3().end).unwrap_or(&[]);
                let payload = segment.get(header_len..).unwrap_or(&[]);
                if payload.is_empty() && flags & (tcp::SYN | tcp::FIN | tcp::RST) == 0 {
                    return None;
                }
                // A partial checksum (the sender's own device finishes it) cannot be checked.
                if !meta.csum_partial && !tcp_checksum_holds(p, segment) {
                    if !payload.is_empty() {
                        self.counters.inc(Counter::DnsTcpUnread);
                    }
                    return None;
                }
                let key = StreamKey { host: orig.src, host_port: orig.src_port, resolver: orig.dst };
                let way = if dir == ORIGINAL { Way::Query } else { Way::Answer };
                let seg = Segment {
                    seq: p.tcp.seq,
                    syn: flags & tcp::SYN != 0,
                    fin: flags & tcp::FIN != 0,
                    rst: flags & tcp::RST != 0,
                    payload,
                };
                let counters = &self.counters;
                binder.on_tcp_segment(key, way, seg, now_ms, |c| counters.inc(c));
                return None;
            }
            _ => return None,
        };
        let (l4, end) = (p.l4_at(), p.l3().end);
        let payload = frame.get_mut(l4 + header..end)?;
        let (host, host_port, resolver) = (orig.src, orig.src_port, orig.dst);
        let (outcome, rewritten) = if dir == ORIGINAL {
            binder.on_udp_query(host, host_port, resolver, payload, now_ms)
        } else {
            binder.on_udp_answer(host, host_port, resolver, payload, now_ms)
        };
        if let Some(c) = outcome {
            self.counters.inc(c);
        }
        rewritten
    }

    /// After `watch_dns` changed a UDP message's id from `old` to `new` and the packet was
    /// translated: its checksum follows, unless there is none (0) or the device finishes it
    /// (a partial checksum holds only the pseudo-header's sum).
    pub(super) fn dns_id_changed(frame: &mut [u8], p: &Parsed, meta: &FrameMeta, (old, new): (u16, u16)) {
        if meta.csum_partial {
            return;
        }
        let l4 = p.l4_at();
        update_udp_checksum(frame.get_mut(l4 + 6..l4 + 8), old, new);
    }
}

/// Updates the UDP checksum `field` (when present) for one 16-bit word of the datagram
/// changed from `old` to `new`: 0 ("none") stays 0, and a sum that comes out 0 is written
/// as 0xffff. For DNS ids natgw changes, here and in the quotes of ICMP errors.
pub(super) fn update_udp_checksum(field: Option<&mut [u8]>, old: u16, new: u16) {
    let Some(field) = field.filter(|f| f.len() == 2) else { return };
    let c = u16::from_be_bytes([field[0], field[1]]);
    if c != 0 {
        let c = checksum::update16(c, old, new);
        field.copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    }
}

/// Whether a TCP segment's checksum (over the pseudo-header and `segment`) holds.
fn tcp_checksum_holds(p: &Parsed, segment: &[u8]) -> bool {
    let Ok(len) = u16::try_from(segment.len()) else { return false };
    let pseudo = checksum::pseudo_header_sum(u32::from(p.src), u32::from(p.dst), PROTO_TCP, len);
    checksum::fold(checksum::sum(segment, pseudo)) == 0xffff
}
