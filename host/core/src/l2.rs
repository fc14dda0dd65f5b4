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
/// thread; workers read their own snapshot. At most `NEIGHBOUR_MAX` entries.
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
    /// An unsolicited ARP would change this resolved entry: send natgw's own request for
    /// it (`confirm_request`) and let the answers decide.
    pub confirm: Option<Ipv4Addr>,
}

/// Counted events of the ARP state machine, since the caller last took them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArpEvents {
    /// A changed MAC address confirmed by answers to natgw's own request: switched.
    pub changes_confirmed: u64,
    /// A changed MAC address that the old one answered against (or nobody confirmed, or
    /// too many were being confirmed at once): kept the old one.
    pub changes_refused: u64,
    /// A resolved address not cached because the cache was full.
    pub cache_full: u64,
    /// A resolution not started because too many were outstanding.
    pub resolutions_refused: u64,
}

/// How long an entry is trusted before it is re-resolved (pinned next hops only), and
/// forgotten.
pub const NEIGHBOUR_REFRESH_MS: u64 = 60_000;
pub const NEIGHBOUR_FORGET_MS: u64 = 180_000;
/// Resolution retries for one address are at least this far apart; an unanswered one is
/// forgotten after `PENDING_FORGET_MS` (workers hold frames for 3 s).
pub const RESOLVE_RETRY_MS: u64 = 1_000;
pub const PENDING_FORGET_MS: u64 = 5_000;
/// Bounds: cached neighbours, outstanding resolutions, changes being confirmed.
pub const NEIGHBOUR_MAX: usize = 65_536;
pub const PENDING_MAX: usize = 4096;
pub const CONFIRM_MAX: usize = 256;
/// Answers to a confirmation request count for this long.
pub const CONFIRM_MS: u64 = 500;

/// A change of a resolved entry being confirmed.
#[derive(Debug, Clone, Copy)]
struct Confirm {
    candidate: MacAddr,
    since_ms: u64,
    /// The MAC the entry has now answered (or announced) in the window: keep it.
    old_seen: bool,
    /// The candidate answered in the window.
    new_seen: bool,
}

/// ARP state machine for all links.
///
/// The cache holds only what natgw asked for: next hops it resolves (the upstream router,
/// pinned and refreshed every minute) and hosts a worker has a packet for. ARP natgw
/// merely receives (requests for its own addresses, gratuitous ARP, replies nobody asked
/// for) refreshes an entry with the same MAC and creates none, so a large inside subnet
/// of askers costs nothing. An unsolicited ARP that would change a resolved entry is
/// confirmed first: natgw asks itself, and switches only if the new MAC answers and the
/// old one does not within `CONFIRM_MS` (a router's own failover by gratuitous ARP
/// switches; a spoofer alone, with the real owner still answering, does not).
pub struct Arp {
    links: Vec<L2Link>,
    table: NeighbourTable,
    /// Outstanding resolutions: when the last request went out.
    pending: HashMap<(LinkId, Ipv4Addr), u64>,
    confirming: HashMap<(LinkId, Ipv4Addr), Confirm>,
    /// Next hops kept resolved whether or not a packet needs them.
    pinned: Vec<(LinkId, Ipv4Addr)>,
    events: ArpEvents,
}

impl Arp {
    pub fn new(links: Vec<L2Link>) -> Self {
        Arp {
            links,
            table: NeighbourTable::default(),
            pending: HashMap::new(),
            confirming: HashMap::new(),
            pinned: Vec::new(),
            events: ArpEvents::default(),
        }
    }

    pub fn table(&self) -> &NeighbourTable {
        &self.table
    }
    pub fn links(&self) -> &[L2Link] {
        &self.links
    }

    /// What happened since the last call (for counters).
    pub fn take_events(&mut self) -> ArpEvents {
        std::mem::take(&mut self.events)
    }

    /// Takes over neighbours another natgw process resolved (`natgw upgrade`), as fresh
    /// entries: only for links and on-link addresses this gateway has, at most
    /// `NEIGHBOUR_MAX`. The workers then need no resolution after the handoff.
    pub fn seed(&mut self, entries: impl IntoIterator<Item = (LinkId, Ipv4Addr, MacAddr)>, now_ms: u64) {
        for (link, a, mac) in entries {
            if self.table.entries.len() >= NEIGHBOUR_MAX {
                break;
            }
            if self.links.get(usize::from(link)).is_some_and(|l| l.on_link(a)) {
                self.table.entries.insert((link, a), Neighbour { mac, updated_ms: now_ms });
            }
        }
    }

    /// Keeps `a` on `link` resolved and refreshed (the upstream router).
    pub fn pin(&mut self, link: LinkId, a: Ipv4Addr) {
        if !self.pinned.contains(&(link, a)) {
            self.pinned.push((link, a));
        }
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
        if smac[0] & 1 != 0 || smac == l.mac {
            // A multicast sender address is forged or broken, our own is a reflection:
            // ignore it.
            return outcome;
        }
        if l.on_link(sip) {
            let key = (link, sip);
            let current = self.table.entries.get(&key).map(|n| n.mac);
            if let Some(c) = self.confirming.get_mut(&key) {
                c.new_seen |= smac == c.candidate;
                c.old_seen |= Some(smac) == current;
            } else {
                match current {
                    Some(mac) if mac == smac => {
                        if let Some(n) = self.table.entries.get_mut(&key) {
                            n.updated_ms = now_ms;
                        }
                        self.pending.remove(&key);
                    }
                    Some(_) if self.confirming.len() < CONFIRM_MAX => {
                        let c = Confirm { candidate: smac, since_ms: now_ms, old_seen: false, new_seen: false };
                        self.confirming.insert(key, c);
                        outcome.confirm = Some(sip);
                    }
                    Some(_) => self.events.changes_refused += 1,
                    None if self.pending.remove(&key).is_some() => {
                        if self.table.entries.len() < NEIGHBOUR_MAX {
                            self.table.entries.insert(key, Neighbour { mac: smac, updated_ms: now_ms });
                            outcome.learned = true;
                        } else {
                            self.events.cache_full += 1;
                        }
                    }
                    // Not asked for: an asker, a bystander, an announcement. No entry.
                    None => {}
                }
            }
        }
        if arp.operation() == arp::REQUEST && l.owns(tip) && !l.owns(sip) {
            let reply =
                ArpRepr { operation: arp::REPLY, sender_mac: l.mac, sender_ip: tip, target_mac: smac, target_ip: sip };
            outcome.reply_len = reply.emit_frame(smac, out);
        }
        outcome
    }

    /// natgw's own request for `a`, to confirm a change (`ArpOutcome::confirm`).
    pub fn confirm_request(&self, link: LinkId, a: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
        self.request(link, a, out)
    }

    fn request(&self, link: LinkId, a: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
        let l = self.links.get(usize::from(link))?;
        let src = l.source_for(a)?;
        ArpRepr { operation: arp::REQUEST, sender_mac: l.mac, sender_ip: src, target_mac: [0; 6], target_ip: a }
            .emit_frame(BROADCAST_MAC, out)
    }

    /// Asks for `a` on `link` unless a request went out recently. Returns the length of an
    /// ARP request written into `out`, if one should be sent.
    pub fn resolve(&mut self, link: LinkId, a: Ipv4Addr, now_ms: u64, out: &mut [u8]) -> Option<usize> {
        self.links.get(usize::from(link))?.source_for(a)?;
        match self.pending.get(&(link, a)) {
            Some(&t) if now_ms < t + RESOLVE_RETRY_MS => return None,
            None if self.pending.len() >= PENDING_MAX => {
                self.events.resolutions_refused += 1;
                return None;
            }
            _ => {}
        }
        self.pending.insert((link, a), now_ms);
        self.request(link, a, out)
    }

    /// Forgets every resolution under way, so that the next `resolve` of each address asks
    /// at once: a standby just promoted asks now for what it could not ask while silent.
    pub fn forget_pending(&mut self) {
        self.pending.clear();
    }

    /// Decides the confirmations whose window has passed. True when the table changed.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        let done: Vec<_> =
            self.confirming.iter().filter(|(_, c)| now_ms >= c.since_ms + CONFIRM_MS).map(|(k, c)| (*k, *c)).collect();
        for (key, c) in done {
            self.confirming.remove(&key);
            if c.new_seen && !c.old_seen {
                self.table.entries.insert(key, Neighbour { mac: c.candidate, updated_ms: now_ms });
                self.events.changes_confirmed += 1;
                changed = true;
            } else {
                self.events.changes_refused += 1;
            }
        }
        changed
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

    /// Ages the cache: returns the pinned next hops due for (re-)resolution; forgets
    /// stale entries and resolutions. The bool says whether the table changed.
    pub fn age(&mut self, now_ms: u64) -> (Vec<(LinkId, Ipv4Addr)>, bool) {
        let before = self.table.entries.len();
        self.table.entries.retain(|_, n| now_ms < n.updated_ms + NEIGHBOUR_FORGET_MS);
        self.pending.retain(|_, t| now_ms < *t + PENDING_FORGET_MS);
        let table = &self.table;
        let due = self
            .pinned
            .iter()
            .filter(|k| table.entries.get(k).is_none_or(|n| now_ms >= n.updated_ms + NEIGHBOUR_REFRESH_MS))
            .copied()
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

    fn reply_from(mac: MacAddr, ip: Ipv4Addr) -> [u8; 42] {
        let mut f = [0u8; 42];
        ArpRepr { operation: arp::REPLY, sender_mac: mac, sender_ip: ip, target_mac: GW_MAC, target_ip: GW_IP }
            .emit_frame(GW_MAC, &mut f);
        f
    }

    fn request_from(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
        let mut f = [0u8; 42];
        ArpRepr { operation: arp::REQUEST, sender_mac: mac, sender_ip: ip, target_mac: [0; 6], target_ip: target }
            .emit_frame(BROADCAST_MAC, &mut f);
        f
    }

    const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);

    /// A distinct unicast MAC address for host number `i`.
    fn mac_of(i: u32) -> MacAddr {
        let [_, b1, b2, b3] = i.to_be_bytes();
        [0x02, 0x10, b1, b2, b3, 1]
    }

    #[test]
    fn answers_for_own_address_without_caching_the_asker() {
        let mut a = arp();
        let mut out = [0u8; 64];
        let o = a.receive(0, &REQUEST, 5, &mut out);
        let n = o.reply_len.expect("reply");
        assert!(!o.learned);
        let eth = EthernetFrame::new_checked(&out[..n]).unwrap();
        assert_eq!(eth.dst(), HOST_MAC);
        let r = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(r.operation(), arp::REPLY);
        assert_eq!(r.sender_ip(), GW_IP);
        assert_eq!(r.sender_mac(), GW_MAC);
        assert!(a.table().is_empty(), "asking for natgw creates no entry");
    }

    #[test]
    fn a_large_subnet_of_askers_and_announcers_leaves_the_cache_empty() {
        // A /8 inside subnet: 100 000 hosts ask for natgw, announce themselves, or send
        // replies nobody asked for. Every request is answered; nothing is cached.
        let mut a = Arp::new(vec![L2Link {
            name: "in0".into(),
            mac: GW_MAC,
            addresses: vec![Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 1), prefix: 8 }],
        }]);
        let mut out = [0u8; 64];
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut answered = 0;
        for i in 0..100_000u32 {
            let ip = Ipv4Addr::from(0x0a01_0000 + i);
            let mac = mac_of(i);
            let frame = match i % 3 {
                0 => request_from(mac, ip, gw),
                1 => request_from(mac, ip, ip),
                _ => reply_from(mac, ip),
            };
            let o = a.receive(0, &frame, u64::from(i), &mut out);
            answered += usize::from(o.reply_len.is_some());
            assert!(!o.learned && o.confirm.is_none());
        }
        assert_eq!(answered, 33_334);
        assert!(a.table().is_empty());
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
        // Forgetting what is under way (a standby's promotion) asks again at once.
        a.forget_pending();
        assert!(a.resolve(0, target, 600, &mut out).is_some());
        assert!(a.resolve(0, target, 1500, &mut out).is_none());
        assert!(a.resolve(0, target, 1600, &mut out).is_some());
        assert!(a.receive(0, &reply_from(HOST_MAC, target), 1600, &mut out).learned);
        assert_eq!(a.table().get(0, target), Some(HOST_MAC));
        // Not for another subnet.
        assert!(a.resolve(0, Ipv4Addr::new(192, 0, 2, 1), 0, &mut out).is_none());
        // Aging: only pinned next hops are refreshed; every entry is forgotten when stale.
        assert!(a.age(1600 + NEIGHBOUR_REFRESH_MS).0.is_empty(), "a host is not re-resolved");
        a.pin(0, target);
        assert_eq!(a.age(1600 + NEIGHBOUR_REFRESH_MS).0, vec![(0, target)]);
        assert!(a.age(1600 + NEIGHBOUR_FORGET_MS).1);
        assert!(a.table().is_empty());
        assert_eq!(a.age(1600 + NEIGHBOUR_FORGET_MS).0, vec![(0, target)], "a pinned one is resolved again");
    }

    /// A resolved router at 10.10.1.254 and an ARP claiming its address from `claim`.
    fn claimed(claim: MacAddr) -> (Arp, Ipv4Addr) {
        let mut a = arp();
        let router = Ipv4Addr::new(10, 10, 1, 254);
        let mut out = [0u8; 64];
        a.resolve(0, router, 0, &mut out);
        assert!(a.receive(0, &reply_from(ROUTER_MAC, router), 1, &mut out).learned);
        // A gratuitous ARP from the claimant.
        let o = a.receive(0, &request_from(claim, router, router), 100, &mut out);
        assert_eq!(o.confirm, Some(router), "a change is confirmed first");
        assert!(a.confirm_request(0, router, &mut out).is_some());
        assert_eq!(a.table().get(0, router), Some(ROUTER_MAC), "not switched yet");
        (a, router)
    }

    const ROUTER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0xfe];
    const OTHER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x66];

    #[test]
    fn a_spoofed_gratuitous_arp_does_not_move_a_router_that_still_answers() {
        let (mut a, router) = claimed(OTHER_MAC);
        let mut out = [0u8; 64];
        // Both answer natgw's request: the spoofer too, and more than once.
        a.receive(0, &reply_from(OTHER_MAC, router), 110, &mut out);
        a.receive(0, &reply_from(ROUTER_MAC, router), 111, &mut out);
        a.receive(0, &reply_from(OTHER_MAC, router), 112, &mut out);
        assert!(!a.poll(100 + CONFIRM_MS));
        assert_eq!(a.table().get(0, router), Some(ROUTER_MAC));
        assert_eq!(a.take_events().changes_refused, 1);
    }

    #[test]
    fn a_routers_own_failover_by_gratuitous_arp_switches_once_confirmed() {
        let (mut a, router) = claimed(OTHER_MAC);
        let mut out = [0u8; 64];
        // The old router is gone; the new one answers.
        a.receive(0, &reply_from(OTHER_MAC, router), 110, &mut out);
        assert!(!a.poll(100 + CONFIRM_MS - 1), "decided when the window ends");
        assert!(a.poll(100 + CONFIRM_MS));
        assert_eq!(a.table().get(0, router), Some(OTHER_MAC));
        assert_eq!(a.take_events().changes_confirmed, 1);
    }

    #[test]
    fn a_change_nobody_confirms_is_refused() {
        let (mut a, router) = claimed(OTHER_MAC);
        assert!(!a.poll(100 + CONFIRM_MS));
        assert_eq!(a.table().get(0, router), Some(ROUTER_MAC));
        assert_eq!(a.take_events().changes_refused, 1);
    }

    #[test]
    fn resolutions_and_the_cache_are_bounded() {
        let mut a = Arp::new(vec![L2Link {
            name: "in0".into(),
            mac: GW_MAC,
            addresses: vec![Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 1), prefix: 8 }],
        }]);
        let mut out = [0u8; 64];
        let ip = |i: u32| Ipv4Addr::from(0x0a01_0000 + i);
        for i in 0..u32::try_from(PENDING_MAX).unwrap() + 10 {
            a.resolve(0, ip(i), 0, &mut out);
        }
        assert_eq!(a.take_events().resolutions_refused, 10);
        // Resolve and answer in rounds until past the cache's bound.
        let mut next = 0u32;
        while (next as usize) < NEIGHBOUR_MAX + 100 {
            for _ in 0..PENDING_MAX {
                a.resolve(0, ip(next), 0, &mut out);
                let mac = mac_of(next);
                a.receive(0, &reply_from(mac, ip(next)), 0, &mut out);
                next += 1;
            }
        }
        assert_eq!(a.table().len(), NEIGHBOUR_MAX);
        assert!(a.take_events().cache_full >= 100);
    }
}
