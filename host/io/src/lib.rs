//! natgw-io, packet I/O: AF_PACKET sockets driven by io_uring (multishot receive into a provided
//! buffer ring, batched sends), the worker loop around the translator, and the L2 thread
//! that speaks ARP.
//!
//! Owns: sockets, rings, buffers and threads. Must never: make translation decisions —
//! it hands each frame to `natgw_core::nat::Translator` and carries out the verdict. Every
//! system call natgw makes through `unsafe` is here (the control plane's few too: `sys`),
//! with nearly all of natgw's `unsafe`, each block with a SAFETY comment; the only other
//! `unsafe` is the compiled-component cache's one call (`natgw-policy`). Elsewhere, calls
//! go through safe wrappers only: the policy runtime reads its thread's CPU clock
//! (`rustix`) for call deadlines, the control plane uses the standard library.

pub mod bufring;
pub mod l2thread;
pub mod rxring;
pub mod sys;
pub mod worker;

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use thiserror::Error;

use natgw_core::conntrack::FlowSummary;
use natgw_core::counters::Counters;
use natgw_core::l2::{LinkId, NeighbourTable};
use natgw_core::nat::handoff::{HandoffError, ImportReport};
use natgw_core::nat::{FlowEnd, FrameMeta};

#[derive(Debug, Error)]
pub enum IoError {
    #[error("interface `{0}` does not exist in this network namespace")]
    NoSuchInterface(String),
    #[error("opening packet sockets needs root (CAP_NET_RAW and CAP_NET_ADMIN); run natgw as root")]
    Permission,
    #[error("{0} failed: {1}")]
    Os(&'static str, std::io::Error),
    #[error("io_uring setup failed: {0} (kernel 5.19+ with provided buffer rings is required)")]
    Uring(std::io::Error),
}

/// A frame moved between workers, with its virtio-net header.
pub struct HandoffFrame {
    pub data: Vec<u8>,
    pub meta: FrameMeta,
}

/// A request from the control thread to a worker, answered at its next loop turn.
pub enum ControlRequest {
    /// Every flow of the worker, as the operator sees it.
    Flows(std::sync::mpsc::Sender<Vec<FlowSummary>>),
    /// The worker's top talkers (`natgw top`), answered when its scan has walked the whole
    /// table, `TOP_SCAN_SLOTS` a loop turn; requests that come during a scan share it.
    Top(std::sync::mpsc::Sender<natgw_core::conntrack::top::TopTalkers>),
    /// Switch to the current policy generation, re-check existing flows against the
    /// egress policy and revoke the denied ones; answers how many were revoked.
    Revalidate(std::sync::mpsc::Sender<usize>),
    /// Stop at this batch boundary and hand the worker's flows over (`natgw upgrade`): it
    /// stops receiving, finishes the frames it has, queues its last flow records, answers
    /// with its flow state and its sockets, then waits for the outcome. `Commit` ends the
    /// worker (its flows live on in the next process); `Resume`, or no word within
    /// `HANDOVER_WAIT`, carries on as before: the export changed nothing.
    HandOver(std::sync::mpsc::Sender<WorkerHandover>, std::sync::mpsc::Receiver<HandoverOutcome>),
    /// Take over the flows a standby holds for this worker (`[ha]` promotion): one section
    /// of flow state.
    Import(Vec<u8>, std::sync::mpsc::Sender<Result<ImportReport, HandoffError>>),
    /// Forget every flow without a record (stepping down to standby); answers how many.
    Discard(std::sync::mpsc::Sender<usize>),
    /// An upgrade's pre-copy: export every flow now and note what changes from here on
    /// (`natgw_core::nat::precopy`).
    PreCopy(std::sync::mpsc::Sender<Vec<u8>>),
    /// The upgrade failed before its cutover: stop noting.
    EndPreCopy,
}

/// A pair of gateways (`[ha]`): what the workers, the L2 thread and the sync thread share.
pub struct HaShared {
    /// This node forwards and answers ARP; a standby drops every frame and stays silent.
    pub active: std::sync::atomic::AtomicBool,
    /// Per worker: batches of replication events (`natgw_core::nat::replication`) for
    /// the sync thread. Bounded; a full queue loses the batch, which calls for a resync.
    pub events: Vec<ArrayQueue<Vec<u8>>>,
    /// Bumped by the sync thread when the standby needs every flow (it joined, or events
    /// were lost): each worker then sends a bulk resync of its table.
    pub resync_generation: AtomicU64,
    /// Set by a worker that lost events.
    pub resync_needed: std::sync::atomic::AtomicBool,
    /// Bumped on promotion: the L2 thread announces every address (gratuitous ARP).
    pub announce_generation: AtomicU64,
    /// The sync thread streams to a standby now; without one, workers drop their events
    /// (the standby gets a bulk resync when it connects).
    pub streaming: std::sync::atomic::AtomicBool,
}

/// Batches of events a worker may have queued for the sync thread.
pub const HA_EVENT_BATCHES: usize = 1024;

impl HaShared {
    pub fn new(workers: usize, active: bool) -> HaShared {
        HaShared {
            active: std::sync::atomic::AtomicBool::new(active),
            events: (0..workers).map(|_| ArrayQueue::new(HA_EVENT_BATCHES)).collect(),
            resync_generation: AtomicU64::new(0),
            resync_needed: std::sync::atomic::AtomicBool::new(false),
            announce_generation: AtomicU64::new(0),
            streaming: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// How long a worker that handed its state over waits for the outcome before it resumes.
pub const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A worker's part of a handoff.
pub struct WorkerHandover {
    /// One section of flow state (`natgw_core::nat::handoff`): after a pre-copy, the
    /// flows changed since.
    pub state: Vec<u8>,
    /// After a pre-copy: the original keys of the flows that ended since (`None`: the
    /// section holds every flow).
    pub ended: Option<Vec<u8>>,
    /// Its packet sockets, one per link in config order (inside links, then outside),
    /// open until the outcome is known.
    pub sockets: Vec<std::os::fd::RawFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverOutcome {
    Commit,
    Resume,
}

/// State shared by all threads of a running gateway.
pub struct Shared {
    pub counters: Vec<Arc<Counters>>,
    pub neighbours: ArcSwap<NeighbourTable>,
    pub neighbour_version: AtomicU64,
    /// Next hops a worker could not resolve, for the L2 thread to ask for.
    pub resolve_requests: ArrayQueue<(LinkId, Ipv4Addr)>,
    pub handoff: Vec<ArrayQueue<HandoffFrame>>,
    pub control: Vec<ArrayQueue<ControlRequest>>,
    /// One eventfd per worker: signalled after a hand-off so the owner wakes at once.
    pub wake: Vec<std::os::fd::OwnedFd>,
    /// Each link's MTU (inside links, then outside), kept current by the L2 thread.
    pub link_mtu: Vec<std::sync::atomic::AtomicU32>,
    /// The MTU each worker applies to each link (`[worker][link]`), for `natgw status`.
    pub applied_mtu: Vec<Vec<std::sync::atomic::AtomicU32>>,
    /// When the gateway clock read `base_ms` (see `now_ms`).
    start: std::time::Instant,
    base_ms: u64,
    /// Finished flows on their way to the flow log (bounded; overflow is counted).
    pub flow_ends: Arc<ArrayQueue<FlowEnd>>,
    /// Whether workers record finished flows at all.
    pub flow_log_enabled: bool,
    /// Per worker: `now_ms` at its last loop turn (it turns at least every 10 ms), which
    /// the L2 thread's watchdog reads.
    pub heartbeat: Vec<AtomicU64>,
    /// With a standby or an active peer (`[ha]`); `None`: a single gateway, always active.
    pub ha: Option<HaShared>,
    /// Workers that have written their whole flow journal (it is complete when all have).
    pub journals_written: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub fn new(workers: usize, link_mtu: &[u32], flow_log_enabled: bool) -> Result<Shared, IoError> {
        let wake = (0..workers)
            .map(|_| sys::eventfd())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IoError::Os("eventfd", e))?;
        Ok(Shared {
            // One per worker, then one each for the sync thread, the flow-log thread, the
            // OTLP exporter and the L2 thread.
            counters: (0..workers + 4).map(|_| Arc::new(Counters::default())).collect(),
            neighbours: ArcSwap::from_pointee(NeighbourTable::default()),
            neighbour_version: AtomicU64::new(0),
            resolve_requests: ArrayQueue::new(1024),
            // Bounded: at most 1024 frames (fragments, hairpin) in flight to any one worker.
            handoff: (0..workers).map(|_| ArrayQueue::new(1024)).collect(),
            control: (0..workers).map(|_| ArrayQueue::new(16)).collect(),
            wake,
            link_mtu: link_mtu.iter().map(|&m| std::sync::atomic::AtomicU32::new(m)).collect(),
            applied_mtu: (0..workers)
                .map(|_| link_mtu.iter().map(|_| std::sync::atomic::AtomicU32::new(0)).collect())
                .collect(),
            start: std::time::Instant::now(),
            base_ms: CLOCK_BASE_MS,
            flow_ends: Arc::new(ArrayQueue::new(1 << 16)),
            flow_log_enabled,
            heartbeat: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ha: None,
            journals_written: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Queues a frame for `worker` and wakes it. False when its queue is full.
    pub fn hand_off(&self, worker: usize, frame: HandoffFrame) -> bool {
        let (Some(q), Some(fd)) = (self.handoff.get(worker), self.wake.get(worker)) else { return false };
        if q.push(frame).is_err() {
            return false;
        }
        sys::eventfd_signal(std::os::fd::AsRawFd::as_raw_fd(fd));
        true
    }

    /// Wakes a worker now (a policy swap, a control request).
    pub fn wake(&self, worker: usize) {
        if let Some(fd) = self.wake.get(worker) {
            sys::eventfd_signal(std::os::fd::AsRawFd::as_raw_fd(fd));
        }
    }

    /// Puts the request `make` builds for each worker on its control queue and wakes it,
    /// then waits for every answer, each up to `timeout` (asked all at once, the workers
    /// work on them together). `None` for a worker whose queue was full or that did not
    /// answer in time.
    pub fn ask_workers<T>(
        &self,
        mut make: impl FnMut(usize, std::sync::mpsc::Sender<T>) -> ControlRequest,
        timeout: std::time::Duration,
    ) -> Vec<Option<T>> {
        let mut waiting = Vec::new();
        for (w, q) in self.control.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            let pushed = q.push(make(w, tx)).is_ok();
            self.wake(w);
            waiting.push(pushed.then_some(rx));
        }
        waiting.into_iter().map(|rx| rx.and_then(|rx| rx.recv_timeout(timeout).ok())).collect()
    }

    /// Whether this node forwards: always, without `[ha]`.
    pub fn is_active(&self) -> bool {
        self.ha.as_ref().is_none_or(HaShared::is_active)
    }

    /// The sync thread's counters (it is their only writer).
    pub fn ha_counters(&self) -> Arc<Counters> {
        self.counters[self.counters.len() - 4].clone()
    }

    /// The flow-log thread's counters (it is their only writer).
    pub fn flow_log_counters(&self) -> Arc<Counters> {
        self.counters[self.counters.len() - 3].clone()
    }

    /// The OTLP exporter thread's counters (it is their only writer).
    pub fn exporter_counters(&self) -> Arc<Counters> {
        self.counters[self.counters.len() - 2].clone()
    }

    /// The L2 thread's counters (it is their only writer).
    pub fn l2_counters(&self) -> Arc<Counters> {
        self.counters[self.counters.len() - 1].clone()
    }

    /// The gateway clock, in milliseconds: the clock every core function is given. It
    /// reads `CLOCK_BASE_MS` when the gateway starts (or its predecessor's reading, when it
    /// takes over from one: `adopt_clock`).
    pub fn now_ms(&self) -> u64 {
        self.base_ms.saturating_add(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Carries on from `now_ms`, another process's reading of its gateway clock now (the
    /// process this one takes over from, or the writer of a flow journal): every time in
    /// the state it hands over keeps its meaning.
    pub fn adopt_clock(&mut self, now_ms: u64) {
        self.start = std::time::Instant::now();
        self.base_ms = now_ms;
    }

    /// Seconds the gateway has run, across the processes that handed it on.
    pub fn uptime_s(&self) -> u64 {
        self.now_ms().saturating_sub(CLOCK_BASE_MS) / 1000
    }

    /// Workers that have not turned their loop for `l2thread::WORKER_STALL_MS` (the
    /// watchdog's test), by index.
    pub fn stalled_workers(&self) -> Vec<usize> {
        let now = self.now_ms();
        self.heartbeat
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                let last = b.load(std::sync::atomic::Ordering::Relaxed);
                last > 0 && now.saturating_sub(last) >= l2thread::WORKER_STALL_MS
            })
            .map(|(w, _)| w)
            .collect()
    }
}

/// What the gateway clock reads when a gateway starts, instead of 0: a flow taken over
/// from another node or process may be older than the process holding it, and its
/// creation must still be a time of this clock (a `u64`). 2^32 ms is 49 days of headroom.
pub const CLOCK_BASE_MS: u64 = 1 << 32;

/// virtio_net_hdr (10 bytes, host byte order) that precedes every frame on our sockets.
pub const VNET_HDR_LEN: usize = 10;
pub const VNET_F_NEEDS_CSUM: u8 = 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> VnetHdr {
        if b.len() < VNET_HDR_LEN {
            return VnetHdr::default();
        }
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
        }
    }

    /// Wire packets a frame of `frame_len` bytes becomes after segmentation.
    pub fn segments(&self, frame_len: usize) -> u32 {
        if self.gso_type == 0 || self.gso_size == 0 {
            return 1;
        }
        let payload = frame_len.saturating_sub(usize::from(self.hdr_len));
        u32::try_from(payload.div_ceil(usize::from(self.gso_size)).max(1)).unwrap_or(u32::MAX)
    }
}
