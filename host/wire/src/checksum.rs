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

/// Sum of the IPv4 pseudo-header for a transport checksum.
pub fn pseudo_header_sum(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    words32(src) + words32(dst) + u32::from(proto) + u32::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;

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
