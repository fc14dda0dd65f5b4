//! The L2 thread: one ETH_P_ARP socket per link. It answers ARP for natgw's addresses,
//! resolves next hops the workers ask for, announces the addresses at start (gratuitous
//! ARP), ages the cache, and publishes the neighbour table to the workers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sys::{self, PacketSocket, PacketSocketOptions};
use super::{IoError, Shared};
use natgw_core::l2::{Arp, L2Link, LinkId};
use natgw_wire::ETHERTYPE_ARP;

pub struct L2Thread {
    sockets: Vec<PacketSocket>,
    arp: Arp,
    shared: Arc<Shared>,
    /// Next hops to resolve as soon as the thread starts (the upstream router).
    prime: Vec<(u8, std::net::Ipv4Addr)>,
}

impl L2Thread {
    pub fn new(
        links: Vec<L2Link>,
        shared: Arc<Shared>,
        prime: Vec<(u8, std::net::Ipv4Addr)>,
    ) -> Result<L2Thread, IoError> {
        let opts = PacketSocketOptions { protocol: ETHERTYPE_ARP, vnet_hdr: false, fanout: None, rcvbuf: 1 << 20 };
        let sockets = links.iter().map(|l| PacketSocket::open(&l.name, &opts)).collect::<Result<Vec<_>, _>>()?;
        Ok(L2Thread { sockets, arp: Arp::new(links), shared, prime })
    }

    fn publish(&self) {
        self.shared.neighbours.store(Arc::new(self.arp.table().clone()));
        self.shared.neighbour_version.fetch_add(1, Ordering::AcqRel);
        // Workers may be asleep holding frames for this neighbour: wake them now.
        for fd in &self.shared.wake {
            sys::eventfd_signal(std::os::fd::AsRawFd::as_raw_fd(fd));
        }
    }

    fn announce(&self) {
        for (link, frame) in self.arp.announcements() {
            let _ = self.sockets[usize::from(link)].send(&frame);
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

    pub fn run(mut self) {
        let fds: Vec<_> = self.sockets.iter().map(|s| s.raw_fd()).collect();
        let mut buf = vec![0u8; 2048];
        let mut out = [0u8; 64];
        self.announce();
        let mut announced_twice = false;
        for (link, a) in std::mem::take(&mut self.prime) {
            if let Some(n) = self.arp.resolve(link, a, self.shared.now_ms(), &mut out) {
                let _ = self.sockets[usize::from(link)].send(&out[..n]);
            }
        }
        let mut last_age = 0;
        while !sys::stop_requested() {
            let ready = sys::poll_readable(&fds, 10).unwrap_or_else(|_| vec![false; fds.len()]);
            let now = self.shared.now_ms();
            let mut changed = false;
            for (link, r) in ready.iter().enumerate() {
                // Links are numbered by LinkId (the config allows 65 of them).
                let Ok(link_id) = LinkId::try_from(link) else { continue };
                if !r {
                    continue;
                }
                while let Ok(Some(n)) = self.sockets[link].recv(&mut buf) {
                    let o = self.arp.receive(link_id, &buf[..n], now, &mut out);
                    if let Some(len) = o.reply_len {
                        let _ = self.sockets[link].send(&out[..len]);
                    }
                    changed |= o.learned;
                }
            }
            while let Some((link, a)) = self.shared.resolve_requests.pop() {
                if usize::from(link) < self.sockets.len() && self.arp.table().get(link, a).is_none() {
                    if let Some(n) = self.arp.resolve(link, a, now, &mut out) {
                        let _ = self.sockets[usize::from(link)].send(&out[..n]);
                    }
                }
            }
            if now >= last_age + 1000 {
                last_age = now;
                if !announced_twice {
                    // A second announcement a second later, as Linux does (arp_announce).
                    self.announce();
                    announced_twice = true;
                }
                self.refresh_mtus();
                let (due, forgot) = self.arp.age(now);
                changed |= forgot;
                for (link, a) in due {
                    if let Some(n) = self.arp.resolve(link, a, now, &mut out) {
                        let _ = self.sockets[usize::from(link)].send(&out[..n]);
                    }
                }
            }
            if changed {
                self.publish();
            }
        }
    }
}
