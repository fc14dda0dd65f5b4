//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! Two kinds of stored value are updated here:
//! - a *complete* checksum field `C = ~S` (what every header carries on the wire), updated
//!   with RFC 1624 eqn. 3: `C' = ~(~C + ~m + m')`;
//! - a *partial* sum, left by the kernel in a CHECKSUM_PARTIAL TCP/UDP frame (veth, virtio:
//!   `th->check = ~csum_fold(pseudo-header)`): it is the folded pseudo-header sum `S`, not
//!   complemented, and the device finishes it. It is updated with `S' = S + ~m + m'`, and
//!   only for pseudo-header fields (addresses), never for ports, which the device sums itself.

/// One's-complement sum of `data` (big-endian 16-bit words) added to `initial`, unfolded.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    // End-around carry until the sum fits 32 bits.
    loop {
        match u32::try_from(acc) {
            Ok(s) => return s,
            Err(_) => acc = (acc & 0xffff_ffff) + (acc >> 32),
        }
    }
}

/// Folds a 32-bit sum to 16 bits (not complemented).
pub fn fold(mut s: u32) -> u16 {
    loop {
        match u16::try_from(s) {
            Ok(f) => return f,
            Err(_) => s = (s & 0xffff) + (s >> 16),
        }
    }
}

/// The complete checksum of `data` (the value to store in a zeroed checksum field).
pub fn compute(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Sum of the 32-bit value as two 16-bit words: how an address enters a checksum.
#[inline]
fn words32(v: u32) -> u32 {
    (v >> 16) + (v & 0xffff)
}

/// RFC 1624 eqn. 3 for a complete checksum, with a 16-bit field changing from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// RFC 1624 eqn. 3 for a complete checksum, with a 32-bit field (an address) changing.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!check) + words32(!old) + words32(new);
    !fold(s)
}

/// The partial (pseudo-header) sum update for a 32-bit field.
#[inline]
pub fn update_partial32(partial: u16, old: u32, new: u32) -> u16 {
    fold(u32::from(partial) + words32(!old) + words32(new))
}

/// A change to a checksummed header, summed once (RFC 1624 eqn. 3 over several fields):
/// the one's-complement sum of `~old + new` of every field that changes. A rewrite whose
/// old and new values are known in advance (a flow's) is computed once, and a packet pays
/// one addition per checksum instead of one per field (VPP's `nat_6t_flow_t` deltas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u16);

impl Delta {
    /// A TTL decremented by one, in the 16-bit word it shares with the protocol: constant
    /// (`~old + old - 0x100`) whenever the TTL was at least 1, which natgw checks first.
    pub const TTL_DECREMENT: Delta = Delta(0xfeff);

    /// A 16-bit field changing from `old` to `new`.
    pub fn field16(old: u16, new: u16) -> Delta {
        Delta(fold(u32::from(!old) + u32::from(new)))
    }

    /// A 32-bit field (an address) changing from `old` to `new`.
    pub fn field32(old: u32, new: u32) -> Delta {
        Delta(fold(words32(!old) + words32(new)))
    }

    /// Both changes.
    pub fn plus(self, other: Delta) -> Delta {
        Delta(fold(u32::from(self.0) + u32::from(other.0)))
    }

    /// Applies the change to a complete checksum field.
    #[inline]
    pub fn apply(self, check: u16) -> u16 {
        !fold(u32::from(!check) + u32::from(self.0))
    }

    /// Applies the change to a CHECKSUM_PARTIAL pseudo-header sum (only address changes
    /// belong in such a delta: the device sums the ports itself).
    #[inline]
    pub fn apply_partial(self, partial: u16) -> u16 {
        fold(u32::from(partial) + u32::from(self.0))
    }
}

/// Sum of the IPv4 pseudo-header for a transport checksum.
pub fn pseudo_header_sum(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    words32(src) + words32(dst) + u32::from(proto) + u32::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_possible_truncation)] // random words cut from random u64s
    fn a_delta_summed_once_equals_the_updates_one_by_one() {
        // Random headers and rewrites: the aggregate change and the field-by-field
        // updates give the same checksum, up to the two forms of zero (0x0000 and 0xffff
        // verify alike), and both verify against a checksum computed afresh.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let r = next();
            let (src, dst, nsrc, ndst) = (r as u32, (r >> 32) as u32, next() as u32, next() as u32);
            let (sp, dp, nsp, ndp) = (r as u16, (r >> 16) as u16, (r >> 32) as u16, (r >> 48) as u16);
            let body = next().to_be_bytes();
            let header = |s: u32, d: u32, a: u16, b: u16, c: u16| {
                let mut h = Vec::new();
                h.extend_from_slice(&s.to_be_bytes());
                h.extend_from_slice(&d.to_be_bytes());
                h.extend_from_slice(&a.to_be_bytes());
                h.extend_from_slice(&b.to_be_bytes());
                h.extend_from_slice(&c.to_be_bytes());
                h.extend_from_slice(&body);
                h
            };
            let check = compute(&header(src, dst, sp, dp, 0));
            let one_by_one = update16(update16(update32(update32(check, src, nsrc), dst, ndst), sp, nsp), dp, ndp);
            let d = Delta::field32(src, nsrc)
                .plus(Delta::field32(dst, ndst))
                .plus(Delta::field16(sp, nsp))
                .plus(Delta::field16(dp, ndp));
            let once = d.apply(check);
            assert!(
                once == one_by_one || (once | one_by_one == 0xffff && once & one_by_one == 0),
                "{once:#x} {one_by_one:#x}"
            );
            assert_eq!(fold(sum(&header(nsrc, ndst, nsp, ndp, once), 0)), 0xffff, "the result verifies");
        }
        // The TTL's decrement is a constant change whenever the TTL was at least 1.
        for ttl in 1..=255u16 {
            let (old, new) = ((ttl << 8) | 6, ((ttl - 1) << 8) | 6);
            assert_eq!(Delta::TTL_DECREMENT, Delta::field16(old, new), "ttl {ttl}");
        }
    }

    // RFC 1071 section 3 example bytes.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        // An IPv4 header (from a real capture), checksum zeroed then filled.
        let mut h = [
            0x45u8, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xac, 0x10, 0x0a, 0x63, 0xac,
            0x10, 0x0a, 0x0c,
        ];
        let c = compute(&h);
        assert_eq!(c, 0xb1e6);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        // Rewrite the source address 172.16.10.99 -> 198.51.100.10.
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new = u32::from_be_bytes([198, 51, 100, 10]);
        let inc = update32(c, old, new);
        h[12..16].copy_from_slice(&new.to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, compute(&h));
        // And a 16-bit field (TTL/protocol word).
        h[10..12].copy_from_slice(&inc.to_be_bytes());
        let old16 = u16::from_be_bytes([h[8], h[9]]);
        let inc2 = update16(inc, old16, old16 - 0x0100);
        h[8] -= 1;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc2, compute(&h));
    }

    #[test]
    fn partial_sum_tracks_pseudo_header() {
        let (src, dst) = (u32::from_be_bytes([10, 10, 1, 10]), u32::from_be_bytes([203, 0, 113, 80]));
        let partial = fold(pseudo_header_sum(src, dst, 6, 1480));
        let nsrc = u32::from_be_bytes([198, 51, 100, 10]);
        assert_eq!(update_partial32(partial, src, nsrc), fold(pseudo_header_sum(nsrc, dst, 6, 1480)));
    }
}
