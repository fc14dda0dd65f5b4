//! CIDR and port-range matching.

use std::net::{IpAddr, Ipv4Addr};

/// An IPv4 prefix such as `10.10.1.0/24` (a bare address is a /32). It never contains an
/// IPv6 address: natgw 0.1 translates IPv4 only, and a rule written for IPv4 must not start
/// matching when the contract's `v6` addresses appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub const ANY: Cidr = Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix: 0 };

    /// Parses "a.b.c.d/n" or "a.b.c.d"; "any" and "0.0.0.0/0" match every IPv4 address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("any") {
            return Ok(Cidr::ANY);
        }
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?} is not an IPv4 address or CIDR"))?;
        let prefix: u8 =
            p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{s:?} has a prefix length that is not 0-32"))?;
        Ok(Cidr { addr, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn contains(&self, a: impl Into<IpAddr>) -> bool {
        match a.into() {
            IpAddr::V4(a) => (u32::from(a) ^ u32::from(self.addr)) & self.mask() == 0,
            IpAddr::V6(_) => false,
        }
    }
}

/// An inclusive port range such as `80`, `1024-65535` or `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { lo: 0, hi: u16::MAX };

    pub fn parse(s: &str) -> Result<PortRange, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("any") || s == "*" {
            return Ok(PortRange::ANY);
        }
        let bad = || format!("{s:?} is not a port or port range like 80 or 1024-65535");
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
        Ok(PortRange { lo, hi })
    }

    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = Cidr::parse("10.10.1.0/24").unwrap();
        assert!(c.contains(ip("10.10.1.200")));
        assert!(!c.contains(ip("10.10.2.1")));
        assert!(Cidr::parse("any").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("203.0.113.80").unwrap().contains(Ipv4Addr::new(203, 0, 113, 80)));
        assert!(!Cidr::parse("203.0.113.80").unwrap().contains(ip("203.0.113.81")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("2001:db8::1")), "IPv4 prefixes hold no IPv6");
        assert!(!Cidr::parse("any").unwrap().contains(ip("::")), "not even ::");
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("prefix"));
        assert!(Cidr::parse("ten").is_err());
    }

    #[test]
    fn ports() {
        assert!(PortRange::parse("80").unwrap().contains(80));
        assert!(!PortRange::parse("80").unwrap().contains(81));
        assert!(PortRange::parse("1000-2000").unwrap().contains(1500));
        assert!(PortRange::parse("2000-1000").is_err());
        assert!(PortRange::parse("any").unwrap().contains(0));
    }
}
