//! The L2 thread: one ETH_P_ARP socket per link. It answers ARP for natgw's addresses,
//! resolves next hops the workers ask for, announces the addresses at start (gratuitous
//! ARP), ages the cache, and publishes the neighbour table to the workers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sys::{self, PacketSocket, PacketSocketOptions};
use super::{IoError, Shared};
use natgw_core::counters::{Counter, Counters};
use natgw_core::l2::{Arp, L2Link, LinkId};
use natgw_wire::ETHERTYPE_ARP;

pub struct L2Thread {
    sockets: Vec<PacketSocket>,
    arp: Arp,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    /// Next hops to resolve as soon as the thread starts and to keep resolved (the
    /// upstream router).
    prime: Vec<(u8, std::net::Ipv4Addr)>,
    /// Per worker: since when (ms) the watchdog has seen it stalled.
    stalled: Vec<Option<u64>>,
}

/// A worker that has not turned its loop for this long is stalled (it turns at least every
/// 10 ms; only something that should never happen on a worker holds it longer).
pub const WORKER_STALL_MS: u64 = 500;

/// ARP frames read per link per round; the rest waits in the socket (whose overflow the
/// kernel counts: `rx-queue-full`), so that no link or flood starves the others or the
/// workers' resolution requests.
const RECV_BATCH: usize = 256;
/// Resolution requests from the workers taken per round.
const RESOLVE_BATCH: usize = 1024;
/// A table this large is published at most every `PUBLISH_LARGE_MS` (each publication
/// clones it); a smaller one at once.
const PUBLISH_SMALL: usize = 1024;
const PUBLISH_LARGE_MS: u64 = 100;

impl L2Thread {
    /// The watchdog: counts (`WorkerStalls`) and logs a worker that stops turning its loop,
    /// once per stall, and logs when it turns again.
    fn watch_workers(&mut self, now: u64) {
        for (w, beat) in self.shared.heartbeat.iter().enumerate() {
            let last = beat.load(Ordering::Relaxed);
            let Some(seen) = self.stalled.get_mut(w) else { continue };
            // 0: not started yet (a worker stores at least 1).
            let late = last > 0 && now.saturating_sub(last) >= WORKER_STALL_MS;
            match (*seen, late) {
                (None, true) => {
                    *seen = Some(last);
                    self.counters.inc(Counter::WorkerStalls);
                    tracing::warn!("natgw: watchdog: worker {w} has not turned its loop for {} ms", now - last);
                }
                (Some(since), false) => {
                    *seen = None;
                    tracing::warn!("natgw: watchdog: worker {w} turns again after {} ms", last.saturating_sub(since));
                }
                _ => {}
            }
        }
    }

    /// The ARP sockets, one per link, opened before the thread (binding a packet socket
    /// waits for the kernel, about 14 ms each here: a process taking over from another
    /// opens them before the flows stop).
    pub fn open_sockets(links: &[L2Link]) -> Result<Vec<PacketSocket>, IoError> {
        let opts = PacketSocketOptions {
            protocol: ETHERTYPE_ARP,
            vnet_hdr: false,
            fanout: None,
            rcvbuf: 1 << 20,
            rx_ring: false,
        };
        links.iter().map(|l| PacketSocket::open(&l.name, &opts)).collect()
    }

    pub fn new(
        links: Vec<L2Link>,
        sockets: Vec<PacketSocket>,
        shared: Arc<Shared>,
        prime: Vec<(u8, std::net::Ipv4Addr)>,
    ) -> Result<L2Thread, IoError> {
        let mut arp = Arp::new(links);
        for &(link, a) in &prime {
            arp.pin(link, a);
        }
        let counters = shared.l2_counters();
        let stalled = vec![None; shared.heartbeat.len()];
        Ok(L2Thread { sockets, arp, shared, counters, prime, stalled })
    }

    /// Neighbours the process before this one resolved (`natgw upgrade`), published to
    /// the workers before they start.
    pub fn seed(&mut self, entries: Vec<(LinkId, std::net::Ipv4Addr, natgw_wire::MacAddr)>) {
        self.arp.seed(entries, self.shared.now_ms());
        self.publish();
    }

    fn publish(&self) {
        self.shared.neighbours.store(Arc::new(self.arp.table().clone()));
        self.shared.neighbour_version.fetch_add(1, Ordering::AcqRel);
        // Workers may be asleep holding frames for this neighbour: wake them now.
        for fd in &self.shared.wake {
            sys::eventfd_signal(std::os::fd::AsRawFd::as_raw_fd(fd));
        }
    }

    /// Sends an ARP frame natgw built. A standby sends none: every one carries one of the
    /// active's addresses as its sender, and would move the neighbours' caches to this node.
    fn send(&self, link: usize, frame: &[u8]) {
        if self.shared.is_active() {
            if let Some(s) = self.sockets.get(link) {
                let _ = s.send(frame);
            }
        }
    }

    /// Asks for the neighbours every gateway needs (the upstream router) unless known.
    fn resolve_prime(&mut self, out: &mut [u8; 64]) {
        for (link, a) in self.prime.clone() {
            if self.arp.table().get(link, a).is_some() {
                continue;
            }
            if let Some(n) = self.arp.resolve(link, a, self.shared.now_ms(), out) {
                self.send(usize::from(link), &out[..n]);
            }
        }
    }

    fn announce(&self) {
        if !self.shared.is_active() {
            // A standby's addresses are the active's: it stays silent until promoted.
            return;
        }
        for (link, frame) in self.arp.announcements() {
            self.send(usize::from(link), &frame);
        }
    }

    /// Notices MTU changes (`ip link set dev X mtu N`) so that fragmentation-needed and
    /// fragmenting follow the link as it is now.
    fn refresh_mtus(&self) {
        for (i, link) in self.arp.links().iter().enumerate() {
            if let (Ok(info), Some(slot)) = (sys::interface_info(&link.name), self.shared.link_mtu.get(i)) {
                slot.store(info.mtu, Ordering::Relaxed);
            }
        }
    }

    fn count_events(&mut self) {
        let e = self.arp.take_events();
        self.counters.add(Counter::NeighbourChangesConfirmed, e.changes_confirmed);
        self.counters.add(Counter::NeighbourChangesRefused, e.changes_refused);
        self.counters.add(Counter::NeighbourCacheFull, e.cache_full);
        self.counters.add(Counter::NeighbourResolutionsRefused, e.resolutions_refused);
    }

    pub fn run(mut self) {
        let fds: Vec<_> = self.sockets.iter().map(|s| s.raw_fd()).collect();
        let mut buf = vec![0u8; 2048];
        let mut out = [0u8; 64];
        self.announce();
        let mut announced_twice = false;
        if self.shared.is_active() {
            self.resolve_prime(&mut out);
        }
        let mut last_age = 0;
        let (mut unpublished, mut last_publish) = (false, 0u64);
        let announce_generation =
            |s: &Shared| s.ha.as_ref().map_or(0, |h| h.announce_generation.load(Ordering::Acquire));
        let mut announced = announce_generation(&self.shared);
        while !sys::stop_requested() {
            let generation = announce_generation(&self.shared);
            if generation != announced {
                // Promoted: every address moves here now (and again a second later).
                announced = generation;
                self.announce();
                // What a standby never asked for: the upstream router, now (no retry
                // window left from the silence: a standby never marks a resolution).
                self.arp.forget_pending();
                self.resolve_prime(&mut out);
                announced_twice = false;
                last_age = self.shared.now_ms();
            }
            let ready = sys::poll_readable(&fds, 10).unwrap_or_else(|_| vec![false; fds.len()]);
            let now = self.shared.now_ms();
            for (link, r) in ready.iter().enumerate() {
                // Links are numbered by LinkId (the config allows 65 of them).
                let Ok(link_id) = LinkId::try_from(link) else { continue };
                if !r {
                    continue;
                }
                for _ in 0..RECV_BATCH {
                    let Ok(Some(n)) = self.sockets[link].recv(&mut buf) else { break };
                    let o = self.arp.receive(link_id, &buf[..n], now, &mut out);
                    let active = self.shared.is_active();
                    if let (Some(len), true) = (o.reply_len, active) {
                        self.send(link, &out[..len]);
                    }
                    if let (Some(a), true) = (o.confirm, active) {
                        if let Some(len) = self.arp.confirm_request(link_id, a, &mut out) {
                            self.send(link, &out[..len]);
                        }
                    }
                    unpublished |= o.learned;
                }
            }
            // A standby asks nothing (its requests would carry the active's addresses): it
            // must not mark a resolution under way either, or its promotion would wait out
            // the retry window before it could ask.
            let active = self.shared.is_active();
            for _ in 0..RESOLVE_BATCH {
                let Some((link, a)) = self.shared.resolve_requests.pop() else { break };
                if active && usize::from(link) < self.sockets.len() && self.arp.table().get(link, a).is_none() {
                    if let Some(n) = self.arp.resolve(link, a, now, &mut out) {
                        self.send(usize::from(link), &out[..n]);
                    }
                }
            }
            unpublished |= self.arp.poll(now);
            if now >= last_age + 1000 {
                last_age = now;
                if !announced_twice {
                    // A second announcement a second later, as Linux does (arp_announce).
                    self.announce();
                    announced_twice = true;
                }
                self.refresh_mtus();
                let (due, forgot) = self.arp.age(now);
                unpublished |= forgot;
                for (link, a) in due.into_iter().filter(|_| active) {
                    if let Some(n) = self.arp.resolve(link, a, now, &mut out) {
                        self.send(usize::from(link), &out[..n]);
                    }
                }
                let drops: u64 = self.sockets.iter().map(|s| u64::from(s.take_drops())).sum();
                self.counters.add(Counter::DropRxQueueFull, drops);
            }
            self.count_events();
            self.watch_workers(now);
            let small = self.arp.table().len() < PUBLISH_SMALL;
            if unpublished && (small || now >= last_publish + PUBLISH_LARGE_MS) {
                self.publish();
                (unpublished, last_publish) = (false, now);
            }
        }
    }
}
