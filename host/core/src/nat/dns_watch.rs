//! The fast path's one diversion for DNS name binding: a packet of a flow an inside host
//! opened to a configured resolver's port 53 is shown to the worker's `NameBinder` before
//! it is forwarded (a query on its way out, an answer on its way in), so that a binding is
//! filed before the host can act on the answer. Packets are never changed or held here.

use natgw_wire::L4Header;

use super::{Parsed, Translator};
use crate::conntrack::{FlowKey, Side, ORIGINAL};

impl Translator {
    /// Called for every forwarded packet of a flow whose original key is `orig`: one
    /// comparison unless the flow is DNS to a configured resolver.
    pub(super) fn watch_dns(&mut self, frame: &[u8], p: &Parsed, dir: usize, orig: &FlowKey, now_ms: u64) {
        let Some(binder) = self.dns.as_mut() else { return };
        if orig.side != Side::Inside || p.is_fragment || !binder.watches(orig.dst, orig.dst_port) {
            return;
        }
        // UDP only: in a TCP stream the host decides where its segments start, so a record
        // it asked for could be made to begin a segment and pass for an answer of its own
        // (`dns` module text).
        let header = match p.l4 {
            L4Header::Udp { .. } => natgw_wire::udp::HEADER_LEN,
            _ => return,
        };
        let payload = frame.get(p.l4_at() + header..p.l3().end).unwrap_or(&[]);
        let (host, host_port, resolver) = (orig.src, orig.src_port, orig.dst);
        let outcome = if dir == ORIGINAL {
            binder.on_query(orig.proto, host, host_port, resolver, payload, now_ms)
        } else {
            binder.on_answer(orig.proto, host, host_port, resolver, payload, now_ms)
        };
        if let Some(c) = outcome {
            self.counters.inc(c);
        }
    }
}
