//! Which worker owns a packet's flow: each worker owns the external ports `p` with
//! `spread(p) % workers == worker` (VPP's `port_per_thread`, with the port mixed first),
//! mirrored by the kernel's steering program; what the program cannot classify is handed
//! off here.
//!
//! The mix matters: Linux's `connect()` picks even source ports, and an inside flow goes to
//! the worker owning its source port (so that the port can be preserved), so with a plain
//! `p % workers` every connection of one host lands on one worker of two.

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

/// The multiplier of the port mix (Knuth's multiplicative hash, the golden ratio in 32
/// bits). The kernel steering program multiplies by the same constant.
pub const PORT_SPREAD_MULTIPLIER: u32 = 0x9E37_79B1;

/// A port mixed so that any run of ports (consecutive, or only the even ones) spreads
/// evenly over workers and HA nodes: the top 16 bits of `port * PORT_SPREAD_MULTIPLIER`
/// in 32-bit arithmetic.
pub fn port_spread(port: u16) -> u32 {
    u32::from(port).wrapping_mul(PORT_SPREAD_MULTIPLIER) >> 16
}

/// Which worker owns a port (or ICMP identifier). Mirrored by the kernel steering program.
pub fn owner_of_port(port: u16, workers: usize) -> usize {
    port_spread(port) as usize % workers.max(1)
}

/// Which HA node's slice of its worker's ports a port is in (`NatConfig::node_slice`).
pub fn node_of_port(port: u16, workers: u16, nodes: u16) -> u16 {
    // Below `nodes`, so it fits.
    u16::try_from((port_spread(port) / u32::from(workers.max(1))) % u32::from(nodes.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every worker count up to 8 gets its share (within 1 %) of the whole port range, of
    /// the even ports Linux's connect() picks, and of a short run of them; HA node slices
    /// split each worker's share in two.
    #[test]
    fn ports_spread_evenly_over_workers_and_nodes() {
        for workers in 1..=8usize {
            let mut all = vec![0u32; workers];
            let mut even = vec![0u32; workers];
            for p in 1024..=u16::MAX {
                all[owner_of_port(p, workers)] += 1;
                if p % 2 == 0 {
                    even[owner_of_port(p, workers)] += 1;
                }
            }
            for (counts, total) in [(&all, 64512f64), (&even, 32256f64)] {
                let share = total / workers as f64;
                for &c in counts.iter() {
                    assert!((f64::from(c) - share).abs() < share * 0.01, "{workers} workers: {counts:?}");
                }
            }
            // 4 * workers consecutive connect() ports: no worker gets none.
            let mut run = vec![0u32; workers];
            for p in (40_000u16..).step_by(2).take(4 * workers) {
                run[owner_of_port(p, workers)] += 1;
            }
            assert!(run.iter().all(|&c| c > 0), "{workers} workers, 40000 + 2k: {run:?}");
        }
        let mut slices = [[0u32; 2]; 2];
        for p in 1024..=u16::MAX {
            slices[owner_of_port(p, 2)][usize::from(node_of_port(p, 2, 2))] += 1;
        }
        let flat: Vec<u32> = slices.iter().flatten().copied().collect();
        assert!(flat.iter().all(|&c| (f64::from(c) - 16128.0).abs() < 161.0), "{flat:?}");
    }
}
