//! Link layer: the ARP responder/resolver logic and the neighbour cache.
//!
//! Owns: which next hops have which MAC addresses, and the answers natgw gives for its own
//! addresses. Must never: perform I/O or read a clock. The io layer's L2 thread feeds it
//! ARP frames and publishes the table to the workers.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use natgw_wire::{arp, ethernet, ArpPacket, ArpRepr, EthernetFrame, Ipv4Net, MacAddr, BROADCAST_MAC, ETHERTYPE_ARP};

/// Links are numbered: inside interfaces 0..n, then the outside one.
pub type LinkId = u8;

/// One link natgw owns addresses on.
#[derive(Debug, Clone)]
pub struct L2Link {
    pub name: String,
    pub mac: MacAddr,
    /// natgw's own addresses on this link, with the subnets they are on.
    pub addresses: Vec<Ipv4Net>,
}

impl L2Link {
    fn owns(&self, a: Ipv4Addr) -> bool {
        self.addresses.iter().any(|n| n.addr == a)
    }
    fn on_link(&self, a: Ipv4Addr) -> bool {
        self.addresses.iter().any(|n| n.contains(a) && a != n.broadcast() && a != n.addr)
    }
    fn source_for(&self, target: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses.iter().find(|n| n.contains(target)).map(|n| n.addr)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: MacAddr,
    pub updated_ms: u64,
}

/// The neighbour cache: (link, address) → MAC. Cloned and published as a whole by the L2
/// thread; workers read their own snapshot.
#[derive(Debug, Clone, Default)]
pub struct NeighbourTable {
    entries: HashMap<(LinkId, Ipv4Addr), Neighbour>,
}

impl NeighbourTable {
    #[inline]
    pub fn get(&self, link: LinkId, a: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(&(link, a)).map(|n| n.mac)
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&(LinkId, Ipv4Addr), &Neighbour)> {
        self.entries.iter()
    }
}

/// What an ARP frame caused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ArpOutcome {
    /// A reply to send (length of the frame written into the output buffer).
    pub reply_len: Option<usize>,
    /// The cache changed.
    pub learned: bool,
}

/// How long an entry is trusted before it is re-resolved, and forgotten.
pub const NEIGHBOUR_REFRESH_MS: u64 = 60_000;
pub const NEIGHBOUR_FORGET_MS: u64 = 180_000;
/// Resolution retries for one address are at least this far apart.
pub const RESOLVE_RETRY_MS: u64 = 1_000;

/// ARP state machine for all links.
pub struct Arp {
    links: Vec<L2Link>,
    table: NeighbourTable,
    /// Outstanding resolutions: when the last request went out.
    pending: HashMap<(LinkId, Ipv4Addr), u64>,
}

impl Arp {
    pub fn new(links: Vec<L2Link>) -> Self {
        Arp { links, table: NeighbourTable::default(), pending: HashMap::new() }
    }

    pub fn table(&self) -> &NeighbourTable {
        &self.table
    }
    pub fn links(&self) -> &[L2Link] {
        &self.links
    }

    /// Handles one received ARP frame from `link`; may write a reply into `out`.
    pub fn receive(&mut self, link: LinkId, frame: &[u8], now_ms: u64, out: &mut [u8]) -> ArpOutcome {
        let mut outcome = ArpOutcome::default();
        let Some(l) = self.links.get(usize::from(link)) else { return outcome };
        let Ok(eth) = EthernetFrame::new_checked(frame) else { return outcome };
        if eth.ethertype() != ETHERTYPE_ARP {
            return outcome;
        }
        let Ok(arp) = ArpPacket::new_checked(eth.payload()) else { return outcome };
        let (sip, smac, tip) = (arp.sender_ip(), arp.sender_mac(), arp.target_ip());
        if smac[0] & 1 != 0 {
            // A multicast sender address is forged or broken: ignore it.
            return outcome;
        }
        // Learn senders on our subnets (RFC 826 merge), including gratuitous ARP, but only
        // those we already track or that talk to us: no cache growth from ARP we overhear.
        if l.on_link(sip)
            && (self.table.entries.contains_key(&(link, sip)) || l.owns(tip) || self.pending.contains_key(&(link, sip)))
        {
            let prev = self.table.entries.insert((link, sip), Neighbour { mac: smac, updated_ms: now_ms });
            self.pending.remove(&(link, sip));
            outcome.learned = prev.map(|p| p.mac) != Some(smac) || prev.is_none();
        }
        if arp.operation() == arp::REQUEST && l.owns(tip) && !l.owns(sip) {
            let reply =
                ArpRepr { operation: arp::REPLY, sender_mac: l.mac, sender_ip: tip, target_mac: smac, target_ip: sip };
            outcome.reply_len = reply.emit_frame(smac, out);
        }
        outcome
    }

    /// Asks for `a` on `link` unless a request went out recently. Returns the length of an
    /// ARP request written into `out`, if one should be sent.
    pub fn resolve(&mut self, link: LinkId, a: Ipv4Addr, now_ms: u64, out: &mut [u8]) -> Option<usize> {
        let l = self.links.get(usize::from(link))?;
        let src = l.source_for(a)?;
        if let Some(&t) = self.pending.get(&(link, a)) {
            if now_ms < t + RESOLVE_RETRY_MS {
                return None;
            }
        }
        self.pending.insert((link, a), now_ms);
        ArpRepr { operation: arp::REQUEST, sender_mac: l.mac, sender_ip: src, target_mac: [0; 6], target_ip: a }
            .emit_frame(BROADCAST_MAC, out)
    }

    /// Gratuitous ARP announcements for every address natgw owns, as (link, frame) pairs.
    pub fn announcements(&self) -> Vec<(LinkId, Vec<u8>)> {
        let mut v = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            let Ok(link) = LinkId::try_from(i) else { break };
            for n in &l.addresses {
                let mut buf = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
                // Gratuitous ARP: a request for our own address (RFC 5227's announcement).
                let announce = ArpRepr {
                    operation: arp::REQUEST,
                    sender_mac: l.mac,
                    sender_ip: n.addr,
                    target_mac: [0; 6],
                    target_ip: n.addr,
                };
                if announce.emit_frame(BROADCAST_MAC, &mut buf).is_some() {
                    v.push((link, buf));
                }
            }
        }
        v
    }

    /// Ages the cache: returns entries due for re-resolution; forgets stale ones.
    /// The bool says whether the table changed.
    pub fn age(&mut self, now_ms: u64) -> (Vec<(LinkId, Ipv4Addr)>, bool) {
        let before = self.table.entries.len();
        self.table.entries.retain(|_, n| now_ms < n.updated_ms + NEIGHBOUR_FORGET_MS);
        self.pending.retain(|_, t| now_ms < *t + NEIGHBOUR_FORGET_MS);
        let due = self
            .table
            .entries
            .iter()
            .filter(|(_, n)| now_ms >= n.updated_ms + NEIGHBOUR_REFRESH_MS)
            .map(|(k, _)| *k)
            .collect();
        (due, before != self.table.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
    const HOST_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x0a];

    fn arp() -> Arp {
        Arp::new(vec![L2Link {
            name: "in0".into(),
            mac: GW_MAC,
            addresses: vec![Ipv4Net { addr: Ipv4Addr::new(10, 10, 1, 1), prefix: 24 }],
        }])
    }

    // who-has 10.10.1.1 tell 10.10.1.10, as a host sends it.
    const REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0x0a, 10, 10, 1, 10, //
        0, 0, 0, 0, 0, 0, 10, 10, 1, 1,
    ];

    #[test]
    fn answers_for_own_address_and_learns_asker() {
        let mut a = arp();
        let mut out = [0u8; 64];
        let o = a.receive(0, &REQUEST, 5, &mut out);
        let n = o.reply_len.expect("reply");
        assert!(o.learned);
        let eth = EthernetFrame::new_checked(&out[..n]).unwrap();
        assert_eq!(eth.dst(), HOST_MAC);
        let r = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(r.operation(), arp::REPLY);
        assert_eq!(r.sender_ip(), Ipv4Addr::new(10, 10, 1, 1));
        assert_eq!(r.sender_mac(), GW_MAC);
        assert_eq!(a.table().get(0, Ipv4Addr::new(10, 10, 1, 10)), Some(HOST_MAC));
    }

    #[test]
    fn ignores_requests_for_others_and_does_not_learn_bystanders() {
        let mut a = arp();
        let mut req = REQUEST;
        req[41] = 99; // who-has 10.10.1.99
        let o = a.receive(0, &req, 5, &mut [0u8; 64]);
        assert_eq!(o, ArpOutcome::default());
        assert!(a.table().is_empty());
    }

    #[test]
    fn resolve_rate_limited_then_reply_fills_cache() {
        let mut a = arp();
        let mut out = [0u8; 64];
        let target = Ipv4Addr::new(10, 10, 1, 10);
        assert!(a.resolve(0, target, 0, &mut out).is_some());
        assert!(a.resolve(0, target, 500, &mut out).is_none());
        assert!(a.resolve(0, target, 1500, &mut out).is_some());
        // is-at reply from the host
        let mut reply = [0u8; 42];
        ArpRepr {
            operation: arp::REPLY,
            sender_mac: HOST_MAC,
            sender_ip: target,
            target_mac: GW_MAC,
            target_ip: Ipv4Addr::new(10, 10, 1, 1),
        }
        .emit_frame(GW_MAC, &mut reply);
        assert!(a.receive(0, &reply, 1600, &mut out).learned);
        assert_eq!(a.table().get(0, target), Some(HOST_MAC));
        // Not for another subnet.
        assert!(a.resolve(0, Ipv4Addr::new(192, 0, 2, 1), 0, &mut out).is_none());
        // Aging.
        assert_eq!(a.age(1600 + NEIGHBOUR_REFRESH_MS).0, vec![(0, target)]);
        assert!(a.age(1600 + NEIGHBOUR_FORGET_MS).1);
        assert!(a.table().is_empty());
    }
}
