//! Which worker owns a packet's flow: each worker owns the external ports `p` with
//! `p % workers == worker` (VPP's `port_per_thread`), mirrored by the kernel's steering
//! program; what the program cannot classify is handed off here.

use natgw_wire::L4Header;

use super::icmp_errors::quoted;
use super::{Parsed, Translator};
use crate::conntrack::Side;

impl Translator {
    /// The worker that owns this packet's flow, when it can be told from the packet.
    pub(super) fn steer(&self, p: &Parsed, frame: &[u8], side: Side) -> Option<usize> {
        let n = self.cfg.workers;
        if side == Side::Inside && self.mappings.is_external(p.dst) {
            // Hairpin: the destination mapping's worker owns the flow.
            return match p.l4 {
                L4Header::Tcp { dst_port, .. } | L4Header::Udp { dst_port, .. } => Some(owner_of_port(dst_port, n)),
                _ => None,
            };
        }
        let port = match (p.l4, side) {
            (L4Header::Tcp { src_port, .. } | L4Header::Udp { src_port, .. }, Side::Inside) => src_port,
            (L4Header::Tcp { dst_port, .. } | L4Header::Udp { dst_port, .. }, Side::Outside) => dst_port,
            (L4Header::IcmpQuery { ident, .. }, _) => ident,
            (L4Header::IcmpError { .. }, _) => {
                let inner = quoted(frame, p).ok()?;
                // Inside: the quoted packet was sent *to* the host; outside: *from* our mapping.
                match side {
                    Side::Inside => inner.dst_port,
                    Side::Outside => inner.src_port,
                }
            }
            _ => return None,
        };
        Some(owner_of_port(port, n))
    }
}

/// Which worker owns a port (or ICMP identifier). Mirrored by the kernel steering program.
pub fn owner_of_port(port: u16, workers: usize) -> usize {
    usize::from(port) % workers.max(1)
}
