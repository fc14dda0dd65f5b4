//! Fragments without reassembly: the first fragment maps like any packet and records its
//! flow under its IP ID (`frag_table::FragTable`); later ones follow that record, and ones that
//! come before the first wait, bounded, until it arrives.

use natgw_wire::WireError;

use super::fast_path::{forward, rewrite_in_place};
use super::flow_records::report_unreported;
use super::frag_table::{FragKey, FragLookup, HoldRefused};
use super::{flow_key, FrameMeta, Parsed, Translator, Verdict};
use crate::conntrack::Side;
use crate::counters::Counter;

impl Translator {
    /// Fragments: the first one maps like any packet and records the flow under its IP ID;
    /// later ones follow that record. A fragment that comes before its first one waits
    /// (bounded in number and time) and is released when the first one arrives.
    pub(super) fn fragment(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        meta: FrameMeta,
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<Verdict, WireError> {
        let fkey = frag_key(meta.side, p);
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
                None => self.new_flow(frame, &key, p, meta, now_ms),
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
            FragLookup::Owner(w) if w != self.cfg.worker && !meta.handed_off => {
                self.counters.inc(Counter::HandoffFrames);
                Ok(Verdict::HandOff { worker: w })
            }
            FragLookup::Target(t) => {
                let Some(flow) = self.flows.get(t.flow) else { return Ok(Verdict::Drop(Counter::DropFragment)) };
                let (rw, deltas, egress) = (flow.rewrite(t.dir), flow.deltas[t.dir], flow.egress[t.dir]);
                if p.ttl <= 1 {
                    return Ok(Verdict::Drop(Counter::DropTtlExpired));
                }
                let fragment_to = self.fragment_to(p, meta, egress);
                if fragment_to.is_some() && p.dont_fragment {
                    return Ok(Verdict::Drop(Counter::DropNeedsFragmentation));
                }
                rewrite_in_place(&mut frame[p.l3()], p, &rw, &deltas, false)?;
                if let Some(f) = self.flows.get_mut(t.flow) {
                    if f.count(t.dir, 1, p.total as u64) {
                        report_unreported(f, t.flow, now_ms, self.record_flow_ends, &mut self.report_checks);
                    }
                }
                self.count_out(egress, p.total as u64, 1);
                Ok(forward(egress, self.next_hop(egress, rw.dst.addr), fragment_to))
            }
            FragLookup::Dead => Ok(Verdict::Drop(Counter::DropFragment)),
            FragLookup::Owner(_) | FragLookup::Unknown => {
                match self.frags.hold(fkey, &frame[..p.l3().end], meta, now_ms) {
                    Ok(()) => Ok(Verdict::Held),
                    Err(HoldRefused::Full) => Ok(Verdict::Drop(Counter::DropFragment)),
                    Err(HoldRefused::SourceShare) => Ok(Verdict::Drop(Counter::DropFragmentSourceShare)),
                }
            }
        }
    }
}

/// The fragments of one datagram: RFC 791's (source, destination, protocol, ID), with
/// the side they arrived on.
pub(super) fn frag_key(side: Side, p: &Parsed) -> FragKey {
    FragKey { side, src: p.src, dst: p.dst, proto: p.proto, ident: p.ident }
}
