//! Restarts and crashes that keep every flow, under systemd: the flow journal
//! (`natgw_core::nat::journal`, a memfd every worker writes each loop turn) and the packet
//! sockets live in systemd's file-descriptor store (`FileDescriptorStoreMax=` in the unit,
//! `FDSTORE=1` over `$NOTIFY_SOCKET`). When natgw stops (`systemctl restart`, an upgrade of
//! the package) or dies (`Restart=on-failure`), systemd keeps them and passes them to the
//! next process (`$LISTEN_FDS`), which takes the journal's flows over and reads on from the
//! same sockets: what arrived in between waits in their queues.
//!
//! Names in the store: `natgw-journal-<epoch>` (the epoch is the monotonic clock at the
//! journal's creation, so the newest is the largest) and `natgw-packet-<worker>-<link>`.
//! A start takes the newest complete journal (else the newest one), writes a journal of its
//! own from the flows it took, and once that is whole removes the older ones. Sockets are
//! adopted only all together (same workers, same interfaces): else they leave the store,
//! or their fanout group would take a share of the frames nobody reads.
//!
//! What a restart does not keep: a flow's TCP window state (picked up again from the next
//! segment, as at a failover), and every flow gets its state's full timeout; flows created
//! in the last loop turn before a crash (milliseconds) are lost. A `systemctl stop`
//! empties the store (systemd 252): the flows are then gone, and not reported as ended.
//!
//! Owns: the names and the choice of what to take. Must never: touch packets.

use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};

use natgw_core::nat::journal::{self, JournalHeader};
use natgw_core::nat::replication::ReplicaTable;
use natgw_io::sys::{self, MappedRegion, SharedMapping};

const JOURNAL_PREFIX: &str = "natgw-journal-";
const PACKET_PREFIX: &str = "natgw-packet-";

/// A journal larger than this is not read (far beyond 64 workers × 2^24 flows is refused
/// by the format anyway).
const MAX_JOURNAL_BYTES: usize = 1 << 40;

pub fn packet_name(worker: usize, link: usize) -> String {
    format!("{PACKET_PREFIX}{worker}-{link}")
}

/// What systemd passed this process.
#[derive(Default)]
pub struct Stored {
    journals: Vec<(String, OwnedFd)>,
    sockets: BTreeMap<String, OwnedFd>,
}

/// The flows a start takes from a journal, with the clock they count in.
pub struct Restored {
    /// The writer's time zero on the monotonic clock.
    pub origin_ms: u64,
    pub replica: ReplicaTable,
    /// Slots skipped: torn by a crash, or beyond this gateway's table.
    pub refused: u64,
    pub name: String,
    /// The writer's neighbour table.
    pub neighbours: Vec<journal::Neighbour>,
}

impl Stored {
    /// The descriptors systemd passed (none outside systemd, or for another process).
    pub fn take() -> Stored {
        let mut s = Stored::default();
        for (name, fd) in sys::listen_fds() {
            if name.starts_with(JOURNAL_PREFIX) {
                s.journals.push((name, fd));
            } else if name.starts_with(PACKET_PREFIX) {
                s.sockets.insert(name, fd);
            } else {
                tracing::warn!("natgw: systemd passed a descriptor named `{name}`, which natgw does not use");
            }
        }
        s
    }

    /// Every name natgw's descriptors have in the store.
    pub fn names(&self) -> Vec<String> {
        self.journals.iter().map(|(n, _)| n.clone()).chain(self.sockets.keys().cloned()).collect()
    }

    /// The newest usable journal's flows, for a gateway of `workers` workers, `capacity`
    /// flows each and this config fingerprint; what is refused is said, naming the setting.
    pub fn restore(&mut self, workers: usize, capacity: usize, fingerprint: u64) -> Option<Restored> {
        let mut candidates = Vec::new();
        for (name, fd) in self.journals.drain(..) {
            let map = match SharedMapping::open(fd, MAX_JOURNAL_BYTES) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("natgw: flow journal {name}: {e}; not taken");
                    continue;
                }
            };
            match JournalHeader::parse(map.bytes()) {
                Ok(h) => candidates.push((h.complete, h.epoch, name, map)),
                Err(e) => tracing::warn!("natgw: {name}: {e}; not taken"),
            }
        }
        candidates.sort_by_key(|c| (c.0, c.1));
        let (_, _, name, map) = candidates.pop()?;
        let (header, contents) = match journal::read(map.bytes()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("natgw: {name}: {e}; its flows are not taken");
                return None;
            }
        };
        let neighbours = journal::read_neighbours(map.bytes());
        let count: usize = contents.flows.iter().map(Vec::len).sum();
        if usize::from(header.workers) != workers {
            tracing::warn!(
                "natgw: dataplane.workers: the stored flow journal is of {} worker(s), this config has {workers}: its {count} flow(s) are dropped (flows are owned by worker; set workers = {} to keep them)",
                header.workers,
                header.workers
            );
            return None;
        }
        if header.fingerprint != fingerprint {
            tracing::warn!(
                "natgw: inside addresses, outside addresses or [[pool]] differ from those of the stored flow journal, or the natgw build that wrote it steered ports to workers differently: its {count} flow(s) are dropped (their mappings would not be valid)"
            );
            return None;
        }
        let mut replica = ReplicaTable::new(workers, capacity, fingerprint);
        let mut refused = contents.torn;
        for (w, flows) in contents.flows.into_iter().enumerate() {
            let w = u16::try_from(w).unwrap_or(u16::MAX);
            for (stamp, record) in flows {
                if !replica.insert(w, record, stamp) {
                    refused += 1;
                }
            }
        }
        Some(Restored { origin_ms: header.origin_ms, replica, refused, name, neighbours })
    }

    /// The stored socket of `worker` on `link`, when every one of `workers` × `links` is
    /// there: all of them or none.
    pub fn take_sockets(&mut self, workers: usize, links: usize) -> Option<Vec<Vec<OwnedFd>>> {
        let all = (0..workers).all(|w| (0..links).all(|l| self.sockets.contains_key(&packet_name(w, l))));
        if !all || self.sockets.len() != workers * links {
            return None;
        }
        let mut out = Vec::new();
        for w in 0..workers {
            out.push((0..links).filter_map(|l| self.sockets.remove(&packet_name(w, l))).collect());
        }
        Some(out)
    }
}

/// Stores `fd` under `name` (systemd keeps one copy per name and descriptor).
pub fn store(name: &str, fd: RawFd) {
    match sys::notify(&format!("FDSTORE=1\nFDNAME={name}"), &[fd]) {
        Ok(_) => {}
        Err(e) => tracing::warn!("natgw: storing {name} with systemd: {e}"),
    }
}

/// Removes every descriptor named `name` from the store.
pub fn unstore(name: &str) {
    if let Err(e) = sys::notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]) {
        tracing::warn!("natgw: removing {name} from systemd's store: {e}");
    }
}

/// This process's own journal: the header (the control thread marks it complete) and the
/// names it replaces.
pub struct OwnJournal {
    header: MappedRegion,
    pub name: String,
    replaces: Vec<String>,
    complete: bool,
}

impl OwnJournal {
    /// A new journal for `workers` workers of `capacity` flows, stamped with the clock
    /// whose zero is `origin_ms`; one region per worker to hand to it.
    pub fn create(
        workers: usize,
        capacity: u32,
        fingerprint: u64,
        origin_ms: u64,
        replaces: Vec<String>,
    ) -> Result<(OwnJournal, Vec<MappedRegion>), String> {
        let w = u16::try_from(workers).map_err(|_| format!("{workers} workers"))?;
        let epoch = sys::monotonic_ms().max(1) * 1000 + u64::from(std::process::id() % 1000);
        let name = format!("{JOURNAL_PREFIX}{epoch}");
        let mut map = SharedMapping::create(&name, journal::file_len(w, capacity)).map_err(|e| e.to_string())?;
        JournalHeader { workers: w, capacity, fingerprint, origin_ms, epoch, complete: false }
            .format(map.bytes_mut())
            .map_err(|e| e.to_string())?;
        let ranges: Vec<_> =
            std::iter::once(0..journal::PAGE).chain((0..w).map(|i| journal::region_range(capacity, i))).collect();
        let mut regions = map.split(&ranges).map_err(|e| e.to_string())?.into_iter();
        let header = regions.next().ok_or("no header region")?;
        Ok((OwnJournal { header, name, replaces, complete: false }, regions.collect()))
    }

    pub fn fd(&self) -> RawFd {
        self.header.fd()
    }

    /// Keeps the neighbour table in the journal (a restart then needs no ARP to forward).
    pub fn write_neighbours(&mut self, neighbours: &[journal::Neighbour]) {
        journal::write_neighbours(self.header.bytes_mut(), neighbours);
    }

    /// Once every worker has written its region whole: marks the journal complete and
    /// drops the ones it replaces from the store. True when it did so now.
    pub fn complete_when(&mut self, written: usize, workers: usize) -> bool {
        if self.complete || written < workers {
            return false;
        }
        JournalHeader::mark_complete(self.header.bytes_mut());
        self.complete = true;
        for n in self.replaces.drain(..) {
            unstore(&n);
        }
        true
    }
}
