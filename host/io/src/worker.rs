//! One data-plane worker: its io_uring, its sockets (one per link, in the links' fanout
//! groups), its buffer ring and its translator. The loop: wait for completions → for each
//! received frame run the translator and queue the send → recycle buffers → once per
//! 100 ms run timers, neighbour retries, hand-offs and control requests.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::{BufRing, BUF_SIZE};
use super::rxring::{RxRing, Taken};
use super::sys::{self, PacketSocket};
use super::{
    ControlRequest, HandoffFrame, HandoverOutcome, IoError, Shared, VnetHdr, WorkerHandover, HANDOVER_WAIT,
    VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use natgw_core::conntrack::top::{TopScan, TopTalkers};
use natgw_core::conntrack::{Egress, FlowSummary, Side};
use natgw_core::counters::Counter;
use natgw_core::l2::{LinkId, NeighbourTable};
use natgw_core::nat::journal::JournalRegion;
use natgw_core::nat::{FrameMeta, Translator, Verdict};
use natgw_wire::{ethernet, ipv4, EthernetFrame, MacAddr};

const OP_RECV: u64 = 1;
const OP_SEND_RX: u64 = 2;
const OP_SEND_TX: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_CANCEL: u64 = 5;
/// A link with a receive ring became readable (a multishot poll).
const OP_POLL_RING: u64 = 6;
/// A frame sent from a receive ring's slot: `link << 16 | slot`.
const OP_SEND_RING: u64 = 7;

/// Frames a worker takes from one link's receive ring per loop turn, so that its other
/// links, completions and timers wait at most that many frames.
const RING_FRAMES_PER_TURN: usize = 256;

/// A worker's part of the flow journal: its region, and how far writing it whole has come
/// (a new journal is written whole from the flows the worker holds, a few thousand slots a
/// loop turn, beside the turn's own changes).
struct WorkerJournal {
    region: sys::MappedRegion,
    fill: JournalFill,
}

struct JournalFill {
    /// The next slot to write afresh; `None`: the journal is whole.
    scan: Option<u32>,
    /// Counted in `Shared::journals_written` once.
    written: bool,
}

/// Journal slots a worker writes afresh per loop turn while it fills a new journal.
const JOURNAL_SCAN_SLOTS: u32 = 4096;

fn ud(op: u64, arg: u64) -> u64 {
    op << 56 | arg
}

/// Frames held while their next hop is resolved.
const MAX_PENDING: usize = 256;
const PENDING_TIMEOUT_MS: u64 = 3_000;
/// Owned transmit buffers for frames that do not sit in a receive buffer.
const TX_SLOTS: usize = 64;

struct Pending {
    link: LinkId,
    next_hop: Ipv4Addr,
    since_ms: u64,
    data: Vec<u8>,
}

/// Which buffer a frame lives in.
#[derive(Clone, Copy)]
enum BufRef {
    Rx(u16),
    Tx(usize),
    /// A slot of a link's receive ring (`WorkerLink::rx_ring`).
    Ring {
        link: u8,
        slot: u16,
    },
}

/// Link `link`'s receive ring, if it has one (a function of the links, not of the worker:
/// a frame in a slot is borrowed beside the translator).
fn ring_of(links: &mut [WorkerLink], link: usize) -> Option<&mut RxRing> {
    links.get_mut(link).and_then(|l| l.rx_ring.as_mut())
}

/// The memory `b` names: a provided receive buffer, a transmit slot or a ring slot (a
/// function of those fields alone, so that the translator can be borrowed beside it).
fn buffer_in<'a>(
    bufs: &'a mut BufRing,
    tx: &'a mut [Box<[u8]>],
    links: &'a mut [WorkerLink],
    b: BufRef,
) -> &'a mut [u8] {
    match b {
        BufRef::Rx(bid) => bufs.buf_mut(bid),
        BufRef::Tx(slot) => &mut tx[slot],
        BufRef::Ring { link, slot } => match ring_of(links, usize::from(link)) {
            Some(ring) => ring.frame_mut(slot),
            None => &mut [],
        },
    }
}

pub struct WorkerLink {
    pub socket: PacketSocket,
    /// The socket's PACKET_MMAP receive ring (`dataplane.receive = "ring"`); `None`:
    /// frames come by multishot `recv` into the worker's buffer ring.
    pub rx_ring: Option<RxRing>,
    pub side: Side,
    /// Index among inside links (0 for the outside link).
    pub index: u8,
}

pub struct Worker {
    // Field order matters: the ring is dropped before the buffer memory it refers to.
    ring: IoUring,
    bufs: BufRing,
    tx: Vec<Box<[u8]>>,
    tx_free: Vec<usize>,
    links: Vec<WorkerLink>,
    translator: Translator,
    shared: Arc<Shared>,
    index: usize,
    neighbours: Arc<NeighbourTable>,
    neighbour_version: u64,
    pending: Vec<Pending>,
    /// Finished flows between the translator and the shared flow-log queue.
    flow_ends: Vec<natgw_core::nat::FlowEnd>,
    scratch: Vec<u8>,
    recv_armed: Vec<bool>,
    /// Per link with a receive ring: its multishot poll is armed.
    poll_armed: Vec<bool>,
    /// A receive ring still held frames when its turn's share was taken: the next turn
    /// does not wait for a completion (no new one may come for those frames).
    ring_backlog: bool,
    wake_armed: bool,
    /// The link MTUs the translator was last told.
    mtus: Vec<u16>,
    busy_poll_us: u64,
    /// The resync the sync thread asked for last that this worker has begun (`HaShared`).
    resync_generation: u64,
    /// A bulk resync under way: the next flow slot to send (`SNAPSHOT_SLOTS` a turn).
    snapshot_at: Option<usize>,
    /// This worker's region of the flow journal (`natgw_core::nat::journal`).
    journal: Option<WorkerJournal>,
    /// A top-talkers scan under way and who waits for it (`ControlRequest::Top`).
    top_scan: Option<(TopScan, Vec<std::sync::mpsc::Sender<TopTalkers>>)>,
}

/// A worker's io_uring and its provided-buffer ring, made before the worker: setting
/// them up waits for the kernel (about 10 ms each here), so a process taking over from
/// another (`natgw upgrade`) makes them before the flows stop.
pub struct Rings {
    // Field order matters: the ring is dropped before the buffer memory it refers to.
    ring: IoUring,
    bufs: BufRing,
}

impl Rings {
    pub fn new(rx_buffers: u16) -> Result<Rings, IoError> {
        // The completion queue must be larger than the submission queue (EINVAL otherwise),
        // and large enough for a burst of multishot completions plus send completions.
        let ring = IoUring::builder()
            .setup_cqsize(u32::from(rx_buffers) * 4)
            .setup_coop_taskrun()
            .build(u32::from(rx_buffers))
            .map_err(IoError::Uring)?;
        let bufs = BufRing::new(&ring, rx_buffers, 0)?;
        Ok(Rings { ring, bufs })
    }
}

/// Flow slots a bulk resync sends per loop turn: 0.2 to 0.6 ms of a turn (about 150 ns a
/// flow, the flow_table example), where a whole table at once paused forwarding for about
/// 15 ms per 100 000 flows each time a standby joined.
const SNAPSHOT_SLOTS: usize = 4096;

/// Flow slots a top-talkers scan walks per loop turn (`natgw top`): about 0.4 ms (100 ns a
/// slot at a million flows, the flow_table example); while a scan runs the loop does not
/// sleep between turns, so a million slots take about 250 turns, 0.1 s, back to back.
const TOP_SCAN_SLOTS: usize = 4096;

/// Talkers a worker sends of each kind; the gateway merges the workers' lists (a host's
/// flows are spread over the workers) and shows fewer.
pub const TOP_PER_WORKER: usize = 64;

impl Worker {
    pub fn new(
        index: usize,
        links: Vec<WorkerLink>,
        translator: Translator,
        shared: Arc<Shared>,
        rings: Rings,
        busy_poll_us: u64,
        journal: Option<sys::MappedRegion>,
    ) -> Worker {
        let n = links.len();
        let Rings { ring, bufs } = rings;
        let resync_generation = shared.ha.as_ref().map_or(0, |h| h.resync_generation.load(Ordering::Acquire));
        Worker {
            ring,
            bufs,
            tx: (0..TX_SLOTS).map(|_| vec![0u8; BUF_SIZE].into_boxed_slice()).collect(),
            tx_free: (0..TX_SLOTS).collect(),
            links,
            translator,
            neighbours: shared.neighbours.load_full(),
            neighbour_version: shared.neighbour_version.load(Ordering::Acquire),
            shared,
            index,
            pending: Vec::new(),
            flow_ends: Vec::new(),
            scratch: vec![0u8; 2048],
            recv_armed: vec![false; n],
            poll_armed: vec![false; n],
            ring_backlog: false,
            wake_armed: false,
            mtus: vec![0; n],
            resync_generation,
            snapshot_at: None,
            top_scan: None,
            busy_poll_us,
            journal: journal
                .map(|region| WorkerJournal { region, fill: JournalFill { scan: Some(0), written: false } }),
        }
    }

    fn link_for(&self, egress: Egress) -> usize {
        match egress {
            Egress::Inside(i) => usize::from(i),
            Egress::Outside => self.links.len() - 1,
        }
    }

    fn push_sqe(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry we push references either a socket fd that outlives the
            // ring, or a buffer (rx ring or tx slot) that stays untouched until its
            // completion is reaped.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // Submission queue full: hand what we have to the kernel and retry.
            if self.ring.submit().is_err() {
                std::thread::yield_now();
            }
        }
    }

    /// Arms the link's multishot receive: every frame of a link without a receive ring,
    /// the frames too large for a slot of one with a ring.
    fn arm_recv(&mut self, link: usize) {
        let fd = self.links[link].socket.raw_fd();
        let e = opcode::RecvMulti::new(types::Fd(fd), self.bufs.group).build().user_data(ud(OP_RECV, link as u64));
        self.push_sqe(e);
        self.recv_armed[link] = true;
    }

    /// Arms the multishot poll that wakes the worker for a link's receive ring.
    fn arm_poll(&mut self, link: usize) {
        let fd = self.links[link].socket.raw_fd();
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(ud(OP_POLL_RING, link as u64));
        self.push_sqe(e);
        self.poll_armed[link] = true;
    }

    fn arm_wake(&mut self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.shared.wake[self.index]);
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).multi(true).build().user_data(ud(OP_WAKE, 0));
        self.push_sqe(e);
        self.wake_armed = true;
    }

    pub fn run(mut self) {
        for l in 0..self.links.len() {
            self.arm_recv(l);
            if self.links[l].rx_ring.is_some() {
                self.arm_poll(l);
            }
        }
        self.arm_wake();
        let mut last_tick = 0u64;
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        let mut idle_since = std::time::Instant::now();
        while !sys::stop_requested() {
            let busy = self.top_scan.is_some()
                || self.ring_backlog
                || self.busy_poll_us > 0 && idle_since.elapsed() < Duration::from_micros(self.busy_poll_us);
            let r = if busy {
                self.ring.submit()
            } else {
                let ts = types::Timespec::new().nsec(10_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            };
            if let Err(e) = r {
                if !matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) {
                    tracing::warn!("natgw: worker {}: io_uring_enter: {e}", self.index);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            completions.clear();
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            if !completions.is_empty() {
                idle_since = std::time::Instant::now();
            }
            let now = self.shared.now_ms();
            if let Some(h) = self.shared.heartbeat.get(self.index) {
                h.store(now.max(1), Ordering::Relaxed);
            }
            for &(data, res, flags) in &completions {
                self.complete(data, res, flags, now);
            }
            self.drain_rings(now);
            // Give recycled buffers back before re-arming a receive that ran out of them.
            self.bufs.publish();
            for l in 0..self.links.len() {
                if !self.recv_armed[l] {
                    self.arm_recv(l);
                }
                if !self.poll_armed[l] && self.links[l].rx_ring.is_some() {
                    self.arm_poll(l);
                }
            }
            if !self.wake_armed {
                self.arm_wake();
            }
            self.drain_handoffs(now);
            let v = self.shared.neighbour_version.load(Ordering::Acquire);
            if v != self.neighbour_version {
                self.neighbour_version = v;
                self.neighbours = self.shared.neighbours.load_full();
                self.retry_pending(now);
            }
            if now >= last_tick + 100 {
                last_tick = now;
                self.follow_mtus();
                let drops: u64 = self.links.iter().map(|l| u64::from(l.socket.take_drops())).sum();
                for l in &mut self.links {
                    if l.rx_ring.as_mut().is_some_and(RxRing::resync_if_stuck) {
                        tracing::warn!(
                            "natgw: worker {}: receive ring of {} re-synchronised",
                            self.index,
                            l.socket.info.name
                        );
                    }
                }
                self.translator.counters().add(Counter::DropRxQueueFull, drops);
                self.translator.tick(now);
                self.retry_pending(now);
                self.export_flow_ends();
            }
            self.export_replication(now);
            // A batch boundary: a new policy generation takes over here.
            self.translator.policy_batch_boundary();
            if self.serve_control(now) {
                // Handed over: the flows live on in the next process; no final records.
                return;
            }
            self.advance_top_scan();
            self.bufs.publish();
        }
        if self.journal.is_some() {
            // The flows live on in the journal for the next start (systemd restarts natgw
            // with it): they have not ended, so no final records. The records of flows
            // that ended before are out already. Frames already received are forwarded;
            // the rest wait in the sockets, which stay in systemd's store.
            self.stop_receiving();
            let now = self.shared.now_ms();
            self.drain_handoffs(now);
            let _ = self.ring.submit();
            self.export_replication(now);
            self.export_flow_ends();
            return;
        }
        let now = self.shared.now_ms();
        self.translator.shutdown(now);
        self.export_flow_ends();
    }

    /// Writes this turn's flow events into the journal, and hands them (or a bulk
    /// resync, when the sync thread asks for one) to the sync thread; never blocks: a full
    /// queue loses the batch, is counted and calls for a resync. A journal that lost
    /// events (the log overflowed) is written afresh.
    fn export_replication(&mut self, now: u64) {
        let ha = self.shared.ha.as_ref();
        if ha.is_none() && self.journal.is_none() {
            return;
        }
        let mut batch = Vec::new();
        let generation = ha.map_or(0, |ha| ha.resync_generation.load(Ordering::Acquire));
        let resync = ha.is_some() && generation != self.resync_generation;
        // No standby to send to: it gets a bulk resync when it connects.
        let streaming = ha.is_some_and(|ha| ha.streaming.load(Ordering::Acquire));
        let (region, j) = match self.journal.as_mut() {
            Some(WorkerJournal { region, fill }) => (JournalRegion::new(region.bytes_mut()).ok(), Some(fill)),
            None => (None, None),
        };
        let mut region = region;
        if resync {
            // Everything before is superseded: the standby starts over from a reset, and
            // the flows follow a chunk a turn while the log streams on.
            self.resync_generation = generation;
            self.translator.replication_snapshot_begin(&mut batch);
            self.snapshot_at = Some(0);
        }
        let taken = self.translator.take_replication(now, streaming.then_some(&mut batch), region.as_mut());
        if let (Some(j), Some(region)) = (j, region.as_mut()) {
            if taken.overflowed {
                self.translator.counters().inc(Counter::JournalRescans);
                j.scan = Some(0);
            }
            if let Some(from) = j.scan {
                j.scan = self.translator.journal_scan(region, from, JOURNAL_SCAN_SLOTS, now);
                if j.scan.is_none() && !j.written {
                    j.written = true;
                    self.shared.journals_written.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        let Some(ha) = ha else { return };
        if let Some(from) = self.snapshot_at {
            self.snapshot_at = self.translator.replication_snapshot_chunk(from, SNAPSHOT_SLOTS, now, &mut batch).0;
        }
        if taken.overflowed && streaming {
            self.translator.counters().inc(Counter::HaSyncOverflow);
            ha.resync_needed.store(true, Ordering::Release);
        }
        if batch.is_empty() {
            return;
        }
        if let Some(q) = ha.events.get(self.index) {
            if q.push(batch).is_err() {
                self.translator.counters().inc(Counter::HaSyncOverflow);
                ha.resync_needed.store(true, Ordering::Release);
            }
        }
    }

    /// Hands finished flows to the flow-log thread; never blocks (overflow is counted).
    fn export_flow_ends(&mut self) {
        self.flow_ends.clear();
        self.translator.take_flow_ends(&mut self.flow_ends);
        for e in self.flow_ends.drain(..) {
            if self.shared.flow_ends.push(e).is_err() {
                self.translator.counters().inc(Counter::FlowLogQueueOverflow);
            } else {
                self.translator.counters().inc(Counter::FlowLogRecords);
            }
        }
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32, now: u64) {
        let op = data >> 56;
        let arg = data & ((1 << 56) - 1);
        match op {
            OP_RECV => {
                let link = arg as usize;
                if !cqueue::more(flags) {
                    self.recv_armed[link] = false;
                }
                if res < 0 {
                    // ENOBUFS: every buffer is in flight; the receive is re-armed once
                    // buffers come back. Anything else is unexpected but not fatal.
                    if -res != libc::ENOBUFS && -res != libc::ECANCELED {
                        tracing::warn!(
                            "natgw: worker {}: receive on link {link}: {}",
                            self.index,
                            std::io::Error::from_raw_os_error(-res)
                        );
                    }
                    return;
                }
                let Some(bid) = cqueue::buffer_select(flags) else { return };
                self.on_frame(link, BufRef::Rx(bid), res as usize, now);
            }
            OP_SEND_RX => {
                // The buffer id was encoded from a u16.
                if let Ok(bid) = u16::try_from(arg) {
                    self.bufs.recycle(bid);
                }
                if res < 0 {
                    self.translator.counters().inc(Counter::DropTxFull);
                }
            }
            OP_POLL_RING => {
                // The frames themselves are taken by `drain_rings`, every loop turn.
                if !cqueue::more(flags) {
                    if let Some(armed) = self.poll_armed.get_mut(arg as usize) {
                        *armed = false;
                    }
                }
                if res < 0 && -res != libc::ECANCELED {
                    tracing::warn!(
                        "natgw: worker {}: waiting on the receive ring of link {arg}: {}",
                        self.index,
                        std::io::Error::from_raw_os_error(-res)
                    );
                }
            }
            OP_SEND_RING => {
                let (link, slot) = ((arg >> 16) as usize, (arg & 0xffff) as u16);
                if let Some(ring) = ring_of(&mut self.links, link) {
                    ring.give_back(slot);
                }
                if res < 0 {
                    self.translator.counters().inc(Counter::DropTxFull);
                }
            }
            OP_WAKE => {
                sys::eventfd_drain(std::os::fd::AsRawFd::as_raw_fd(&self.shared.wake[self.index]));
                if !cqueue::more(flags) {
                    self.wake_armed = false;
                }
            }
            OP_SEND_TX => {
                self.tx_free.push(arg as usize);
                if res < 0 {
                    self.translator.counters().inc(Counter::DropTxFull);
                }
            }
            _ => {}
        }
    }

    fn buffer(&mut self, b: BufRef) -> &mut [u8] {
        buffer_in(&mut self.bufs, &mut self.tx, &mut self.links, b)
    }

    fn release(&mut self, b: BufRef) {
        match b {
            BufRef::Rx(bid) => self.bufs.recycle(bid),
            BufRef::Tx(slot) => self.tx_free.push(slot),
            BufRef::Ring { link, slot } => {
                if let Some(ring) = ring_of(&mut self.links, usize::from(link)) {
                    ring.give_back(slot);
                }
            }
        }
    }

    /// Takes the frames waiting in the links' receive rings (at most
    /// `RING_FRAMES_PER_TURN` a link) and translates each where it lies.
    fn drain_rings(&mut self, now: u64) {
        self.ring_backlog = false;
        for link in 0..self.links.len() {
            let Ok(link_u8) = u8::try_from(link) else { break };
            for taken in 0..=RING_FRAMES_PER_TURN {
                let Some(ring) = self.links[link].rx_ring.as_mut() else { break };
                if taken == RING_FRAMES_PER_TURN {
                    self.ring_backlog |= ring.waiting();
                    break;
                }
                match ring.take() {
                    None => break,
                    Some(Taken::Truncated) => self.translator.counters().inc(Counter::DropTruncated),
                    // The whole frame comes by the link's multishot receive.
                    Some(Taken::Queued) => self.translator.counters().inc(Counter::ReceiveRingFramesQueued),
                    Some(Taken::Frame { slot, len }) => {
                        self.translator.counters().inc(Counter::ReceiveRingFrames);
                        self.on_frame(link, BufRef::Ring { link: link_u8, slot }, len, now);
                    }
                }
            }
        }
    }

    /// Runs the translator on the frame in `b` (virtio header first) and carries out the verdict.
    fn on_frame(&mut self, link: usize, b: BufRef, len: usize, now: u64) {
        let (side, index) = (self.links[link].side, self.links[link].index);
        self.translate(
            b,
            len,
            FrameMeta { side, link: index, csum_partial: false, gso_size: 0, segments: 1, handed_off: false },
            now,
        );
    }

    fn translate(&mut self, b: BufRef, len: usize, mut meta: FrameMeta, now: u64) {
        if !self.shared.is_active() {
            // A standby holds the active's flows but answers nothing.
            self.translator.counters().inc(Counter::DropStandby);
            self.release(b);
            return;
        }
        if len <= VNET_HDR_LEN {
            self.translator.counters().inc(Counter::DropTruncated);
            self.release(b);
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let verdict = {
            // Borrowed beside the translator: from the fields that hold it, not `self`.
            let buf = buffer_in(&mut self.bufs, &mut self.tx, &mut self.links, b);
            if buf.len() < len {
                // Not a frame we hold (cannot happen: a ring slot is ours until given back).
                self.translator.counters().inc(Counter::DropTruncated);
                self.scratch = scratch;
                self.release(b);
                return;
            }
            let vnet = VnetHdr::parse(&buf[..VNET_HDR_LEN]);
            meta.csum_partial = vnet.flags & VNET_F_NEEDS_CSUM != 0;
            meta.gso_size = if vnet.gso_type != 0 { vnet.gso_size } else { 0 };
            meta.segments = vnet.segments(len - VNET_HDR_LEN);
            let frame = &mut buf[VNET_HDR_LEN..len];
            self.translator.process(frame, meta, now, &mut scratch)
        };
        match verdict {
            Verdict::Forward { egress, next_hop } => self.send(b, len, egress, next_hop, now),
            Verdict::ForwardFragmented { egress, next_hop, mtu } => {
                self.send_fragments(b, len, egress, next_hop, mtu, now);
                self.release(b);
            }
            Verdict::Emit { egress, next_hop, len: n } => {
                self.release(b);
                if let Some((slot, n)) = self.fill_tx_slot(false, &[&scratch[..n]]) {
                    self.send(slot, n, egress, next_hop, now);
                }
            }
            Verdict::HandOff { worker } => {
                let data = self.buffer(b)[..len].to_vec();
                self.release(b);
                let frame = HandoffFrame { data, meta: FrameMeta { handed_off: true, ..meta } };
                if !self.shared.hand_off(worker, frame) {
                    self.translator.counters().inc(Counter::DropHandoffFull);
                }
            }
            Verdict::Held | Verdict::Drop(_) => self.release(b),
        }
        self.scratch = scratch;
        if self.translator.has_released() {
            for (frame, meta) in self.translator.take_released() {
                self.translate_owned(&frame, meta, now);
            }
        }
    }

    /// Copies `parts` back to back into a free transmit slot, after a zeroed virtio-net
    /// header unless the first part brings its own. `None` (counted) when all are in flight.
    fn fill_tx_slot(&mut self, has_vnet_hdr: bool, parts: &[&[u8]]) -> Option<(BufRef, usize)> {
        let Some(slot) = self.tx_free.pop() else {
            self.translator.counters().inc(Counter::DropTxFull);
            return None;
        };
        let buf = &mut self.tx[slot];
        let mut at = 0;
        if !has_vnet_hdr {
            buf[..VNET_HDR_LEN].fill(0);
            at = VNET_HDR_LEN;
        }
        for part in parts {
            let n = part.len().min(BUF_SIZE - at);
            buf[at..at + n].copy_from_slice(&part[..n]);
            at += n;
        }
        Some((BufRef::Tx(slot), at))
    }

    /// Translates a frame held in memory of ours (released fragments).
    fn translate_owned(&mut self, frame_without_vnet: &[u8], meta: FrameMeta, now: u64) {
        if let Some((slot, n)) = self.fill_tx_slot(false, &[frame_without_vnet]) {
            self.translate(slot, n, meta, now);
        }
    }

    fn drain_handoffs(&mut self, now: u64) {
        for _ in 0..256 {
            let Some(h) = self.shared.handoff[self.index].pop() else { break };
            if let Some((slot, n)) = self.fill_tx_slot(true, &[&h.data]) {
                self.translate(slot, n, h.meta, now);
            }
        }
    }

    /// Sends the (translated) frame in `b` as IPv4 fragments of at most `mtu` bytes, each
    /// from a transmit slot of its own, with no offload metadata.
    fn send_fragments(&mut self, b: BufRef, len: usize, egress: Egress, next_hop: Ipv4Addr, mtu: u16, now: u64) {
        let frame = self.buffer(b)[VNET_HDR_LEN..len].to_vec();
        let l3 = &frame[ethernet::HEADER_LEN..];
        let Some(pieces) = ipv4::split(l3, usize::from(mtu)) else {
            self.translator.counters().inc(Counter::DropNeedsFragmentation);
            return;
        };
        for piece in pieces {
            let parts = [&frame[..ethernet::HEADER_LEN], &piece.header[..], &l3[piece.payload.clone()]];
            let Some((slot, n)) = self.fill_tx_slot(false, &parts) else { return };
            self.send(slot, n, egress, next_hop, now);
        }
    }

    /// Fills in Ethernet addresses and queues the send, or parks the frame while the
    /// next hop is resolved.
    fn send(&mut self, b: BufRef, len: usize, egress: Egress, next_hop: Ipv4Addr, now: u64) {
        let link = self.link_for(egress);
        let Ok(link_id) = LinkId::try_from(link) else {
            self.translator.counters().inc(Counter::DropNoRoute);
            self.release(b);
            return;
        };
        let Some(mac) = self.neighbours.get(link_id, next_hop) else {
            self.park(b, len, link_id, next_hop, now);
            return;
        };
        let src_mac = self.links[link].socket.info.mac;
        self.transmit(b, len, link, src_mac, mac);
    }

    fn transmit(&mut self, b: BufRef, len: usize, link: usize, src: MacAddr, dst: MacAddr) {
        {
            let buf = self.buffer(b);
            if let Ok(mut eth) = EthernetFrame::new_checked(&mut buf[VNET_HDR_LEN..len]) {
                eth.set_dst(dst);
                eth.set_src(src);
            }
        }
        let fd = self.links[link].socket.raw_fd();
        let (ptr, data, cap) = match b {
            BufRef::Rx(bid) => (self.bufs.buf_ptr(bid), ud(OP_SEND_RX, u64::from(bid)), BUF_SIZE),
            BufRef::Tx(slot) => (self.tx[slot].as_ptr(), ud(OP_SEND_TX, slot as u64), BUF_SIZE),
            BufRef::Ring { link: l, slot } => {
                let frame = self.buffer(b);
                (frame.as_ptr(), ud(OP_SEND_RING, u64::from(l) << 16 | u64::from(slot)), frame.len())
            }
        };
        // A frame is at most one buffer, far below u32; never more than the buffer holds.
        let len = u32::try_from(len.min(cap)).unwrap_or(0);
        let e = opcode::Send::new(types::Fd(fd), ptr, len).build().user_data(data);
        self.push_sqe(e);
    }

    fn park(&mut self, b: BufRef, len: usize, link: LinkId, next_hop: Ipv4Addr, now: u64) {
        if self.shared.resolve_requests.push((link, next_hop)).is_err() {
            // The L2 thread's queue is full: asked again at the next retry.
            self.translator.counters().inc(Counter::NeighbourResolutionsRefused);
        }
        if self.pending.len() >= MAX_PENDING {
            self.translator.counters().inc(Counter::DropNeighbourUnresolved);
        } else {
            let data = self.buffer(b)[..len].to_vec();
            self.pending.push(Pending { link, next_hop, since_ms: now, data });
        }
        self.release(b);
    }

    fn retry_pending(&mut self, now: u64) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if let Some(mac) = self.neighbours.get(p.link, p.next_hop) {
                let Some((slot, n)) = self.fill_tx_slot(true, &[&p.data]) else { continue };
                let link = usize::from(p.link);
                let src = self.links[link].socket.info.mac;
                self.transmit(slot, n, link, src, mac);
            } else if now >= p.since_ms + PENDING_TIMEOUT_MS {
                self.translator.counters().inc(Counter::DropNeighbourUnresolved);
            } else {
                if self.shared.resolve_requests.push((p.link, p.next_hop)).is_err() {
                    self.translator.counters().inc(Counter::NeighbourResolutionsRefused);
                }
                self.pending.push(p);
            }
        }
    }

    fn follow_mtus(&mut self) {
        for (link, m) in self.shared.link_mtu.iter().enumerate() {
            let m = u16::try_from(m.load(Ordering::Relaxed)).unwrap_or(u16::MAX);
            if self.mtus.get(link) != Some(&m) {
                self.translator.set_link_mtu(link, m);
                if let Some(x) = self.mtus.get_mut(link) {
                    *x = m;
                }
                if let Some(applied) = self.shared.applied_mtu.get(self.index).and_then(|w| w.get(link)) {
                    applied.store(u32::from(m), Ordering::Relaxed);
                }
            }
        }
    }

    /// Answers control requests; true when the worker handed its flows over and ends.
    fn serve_control(&mut self, now: u64) -> bool {
        while let Some(req) = self.shared.control[self.index].pop() {
            match req {
                ControlRequest::HandOver(reply, outcome) => {
                    if self.hand_over(reply, outcome) {
                        return true;
                    }
                }
                ControlRequest::Flows(reply) => {
                    let _ = reply.send(self.flow_summaries(now));
                }
                ControlRequest::Top(reply) => match &mut self.top_scan {
                    Some((_, waiting)) => waiting.push(reply),
                    None => self.top_scan = Some((TopScan::new(), vec![reply])),
                },
                ControlRequest::Revalidate(reply) => {
                    self.translator.policy_batch_boundary();
                    let _ = reply.send(self.translator.revalidate(now));
                }
                ControlRequest::Import(section, reply) => {
                    let r = self.translator.import_state(&section, now);
                    let _ = reply.send(r);
                }
                ControlRequest::Discard(reply) => {
                    let _ = reply.send(self.translator.discard_flows());
                }
                ControlRequest::PreCopy(reply) => {
                    let mut state = Vec::new();
                    self.translator.begin_precopy(now, &mut state);
                    let _ = reply.send(state);
                }
                ControlRequest::EndPreCopy => self.translator.end_precopy(),
            }
        }
        false
    }

    /// Stops receiving (cancels every multishot receive and translates what they still
    /// deliver), forwards what other workers handed over, queues the last flow records,
    /// and gives its flow state and sockets to the handoff. True when it is committed.
    fn hand_over(
        &mut self,
        reply: std::sync::mpsc::Sender<WorkerHandover>,
        outcome: std::sync::mpsc::Receiver<HandoverOutcome>,
    ) -> bool {
        self.stop_receiving();
        if self.links.iter().any(|l| l.rx_ring.as_ref().is_some_and(|r| r.in_flight() > 0)) {
            // A send from a ring slot did not complete: the successor would give the slot
            // back under it. No handoff (the upgrade fails, naming no answer); forward on.
            tracing::warn!("natgw: worker {}: sends from a receive ring still in flight; not handing over", self.index);
            return false;
        }
        let now = self.shared.now_ms();
        self.drain_handoffs(now);
        let _ = self.ring.submit();
        self.export_flow_ends();
        let (state, ended) = match self.translator.precopy_delta(now) {
            Some(delta) => (delta.section, Some(delta.ended)),
            None => {
                let mut state = Vec::new();
                self.translator.export_state(now, &mut state);
                (state, None)
            }
        };
        let sockets = self.links.iter().map(|l| l.socket.raw_fd()).collect();
        if reply.send(WorkerHandover { state, ended, sockets }).is_err() {
            return false;
        }
        let committed = outcome.recv_timeout(HANDOVER_WAIT) == Ok(HandoverOutcome::Commit);
        if !committed {
            tracing::warn!("natgw: worker {}: handoff not completed; forwarding again", self.index);
        }
        committed
    }

    /// Cancels every multishot receive and translates what they still deliver (up to
    /// 200 ms): what the kernel queued after stays in the sockets for the next process.
    /// A receive ring's frames are left where they are (the next process reads on from
    /// the oldest), once the sends from its slots have completed and given them back.
    fn stop_receiving(&mut self) {
        for l in 0..self.links.len() {
            if self.recv_armed[l] {
                let e = opcode::AsyncCancel::new(ud(OP_RECV, l as u64)).build().user_data(ud(OP_CANCEL, 0));
                self.push_sqe(e);
            }
            if self.poll_armed[l] {
                let e = opcode::AsyncCancel::new(ud(OP_POLL_RING, l as u64)).build().user_data(ud(OP_CANCEL, 0));
                self.push_sqe(e);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(256);
        let busy = |w: &Worker| {
            w.recv_armed.iter().chain(&w.poll_armed).any(|&a| a)
                || w.links.iter().any(|l| l.rx_ring.as_ref().is_some_and(|r| r.in_flight() > 0))
        };
        while busy(self) && std::time::Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(1_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            completions.clear();
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            let now = self.shared.now_ms();
            for &(data, res, flags) in &completions {
                self.complete(data, res, flags, now);
            }
            self.bufs.publish();
        }
    }

    /// One chunk of the top-talkers scan; the answer to everyone waiting when it is done.
    fn advance_top_scan(&mut self) {
        let Some((scan, _)) = &mut self.top_scan else { return };
        if scan.advance(self.translator.flows(), TOP_SCAN_SLOTS) {
            if let Some((scan, waiting)) = self.top_scan.take() {
                let top = scan.finish(TOP_PER_WORKER);
                for w in waiting {
                    let _ = w.send(top.clone());
                }
            }
        }
    }

    fn flow_summaries(&self, now: u64) -> Vec<FlowSummary> {
        self.translator.flow_summaries(now)
    }
}
