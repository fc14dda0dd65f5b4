//! A PACKET_MMAP receive ring (TPACKET_V2) on a packet socket: the kernel copies each
//! frame into a slot of memory shared with us and flips the slot's status word, where the
//! socket path (`recv` into a provided buffer) costs an skb queued on the socket and an
//! io_uring receive completion per frame. The worker waits for the socket to become
//! readable (one multishot poll), then walks the ring.
//!
//! Slots are small (2 KiB: a frame of the usual 1500-byte MTU): 2048 of them make a ring of
//! 4 MiB that absorbs a burst of small packets. A larger frame (a GSO super-frame of up to
//! 64 KiB, a jumbo frame) is queued whole on the socket instead (`PACKET_COPY_THRESH`), its
//! slot marked `TP_STATUS_COPY`, and arrives by the socket path (multishot `recv`), which
//! the worker keeps armed beside the ring.
//!
//! Frames are taken in ring order. A taken frame is translated in place and sent from the
//! ring (the send copies it), and goes back to the kernel when that send completes, or at
//! once when the frame is dropped, parked or handed on. The kernel fills slots in order and
//! stops (counting a drop) at the first slot still ours, so frames are given back soon.
//!
//! Layout of a frame slot (`packet_mmap.rst`, `tpacket_rcv`): a `tpacket2_hdr` (its
//! status word first), then at `tp_mac - 10` the virtio-net header (the socket has
//! `PACKET_VNET_HDR`), then the Ethernet frame of `tp_snaplen` bytes. A frame cut short
//! without being queued whole (the socket's receive buffer was full) is dropped and
//! counted as truncated.
//!
//! A ring lives with its socket, not with the process: a socket handed to the next
//! process (`natgw upgrade`, or systemd's store across a restart) keeps its ring and the
//! frames queued in it. The next process maps it again (`adopt`) and finds where reading
//! left off from the slots themselves (`first_unread`).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{PACKET_COPY_THRESH, PACKET_RX_RING, PACKET_VERSION, PACKET_VNET_HDR};
use super::VNET_HDR_LEN;

// <linux/if_packet.h>, as libc has it.
use libc::{TPACKET2_HDRLEN, TP_STATUS_COPY, TP_STATUS_KERNEL, TP_STATUS_USER};
/// `PACKET_VERSION`'s value for TPACKET_V2 (libc has it as an enum).
const TPACKET_V2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;

/// A slot: the `tpacket2_hdr` (`tp_mac` is 76 with a virtio-net header) and a frame of
/// up to 1972 bytes: a 1500-byte MTU with room for VLAN tags. Larger frames are queued on
/// the socket whole.
pub const FRAME_SIZE: usize = 2048;
/// A block of slots, as the kernel allocates them (one compound page of order 10, or
/// vmalloc'd memory when that fails).
const BLOCK_SIZE: usize = 4 << 20;
const FRAMES_PER_BLOCK: usize = BLOCK_SIZE / FRAME_SIZE;
const BLOCKS: usize = 1;
/// Slots per ring: 2048, 4 MiB per socket.
pub const FRAMES: usize = FRAMES_PER_BLOCK * BLOCKS;
const RING_BYTES: usize = BLOCK_SIZE * BLOCKS;
const _: () = assert!(FRAMES <= u16::MAX as usize && FRAME_SIZE.is_multiple_of(16) && BLOCK_SIZE.is_multiple_of(4096));

// Offsets in `struct tpacket2_hdr`.
const TP_LEN: usize = 4;
const TP_SNAPLEN: usize = 8;
const TP_MAC: usize = 12;
const TP_SEC: usize = 16;
const TP_NSEC: usize = 20;
/// `tp_padding`: the kernel zeroes it each time it fills the slot; a reader marks a slot
/// it took there (`TAKEN_MARK`), so that a successor can tell a frame nobody read from
/// one its predecessor took and may have sent already.
const TP_PADDING: usize = 28;
const TAKEN_MARK: u32 = u32::from_le_bytes(*b"ngw1");

#[allow(clippy::cast_possible_truncation, reason = "the request's sizes are constants far below u32::MAX")]
fn request() -> libc::tpacket_req {
    libc::tpacket_req {
        tp_block_size: BLOCK_SIZE as u32,
        tp_block_nr: BLOCKS as u32,
        tp_frame_size: FRAME_SIZE as u32,
        tp_frame_nr: FRAMES as u32,
    }
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    super::sys::setsockopt_value(fd, libc::SOL_PACKET, name, value)
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it (NUL-terminated fields).
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect()
}

/// True for a kernel whose `virtio_net_hdr_from_skb` describes UDP GSO (6.2 and later).
/// Before it, a UDP super-frame (a QUIC sender with `UDP_SEGMENT` beside natgw) failed that
/// conversion, and `tpacket_rcv` then leaves the slot it claimed neither filled nor free:
/// the ring would take no frame again. TCP super-frames converted on every kernel.
pub fn converts_udp_gso(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    matches!((major, minor), (Some(a), Some(b)) if (a, b) >= (6, 2))
}

/// What a frame taken from the ring is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Slot `slot` holds `len` bytes: the virtio-net header, then the frame.
    Frame { slot: u16, len: usize },
    /// Slot `slot` held a frame the slot could not hold whole (given back already).
    Truncated,
    /// The frame was too large for a slot and is queued whole on the socket (its slot
    /// is given back already): it comes by `recv`.
    Queued,
}

/// Where the ring's reader goes next, from the slots alone: the oldest frame not yet read
/// (`unread`: the kernel filled it and nobody took it), or, when none waits, the slot after
/// the one the kernel filled last (by its timestamp), where it fills next. Used when a
/// ring comes from another process, and when a reader's next slot stays empty while
/// frames wait in others.
pub fn first_unread(slots: usize, unread: impl Fn(usize) -> bool, stamp: impl Fn(usize) -> u64) -> usize {
    if slots == 0 {
        return 0;
    }
    let prev = |i: usize| (i + slots - 1) % slots;
    // The kernel claims slots in order, so the unread ones are one run, except that a
    // slot still being filled (on another CPU) may split it for a moment: of the runs'
    // starts (an unread slot after one that is not), the oldest frame begins the run.
    if let Some(i) = (0..slots).filter(|&i| unread(i) && !unread(prev(i))).min_by_key(|&i| (stamp(i), i)) {
        return i;
    }
    let newest = (0..slots).max_by_key(|&i| (stamp(i), i)).unwrap_or(0);
    if stamp(newest) == 0 {
        // Nothing was ever written: the kernel starts at slot 0.
        return 0;
    }
    (newest + 1) % slots
}

/// A receive ring mapped into this process.
pub struct RxRing {
    base: *mut u8,
    /// The next slot to read.
    next: usize,
    /// Per slot: the offset of the taken frame's virtio-net header in its slot, 0 while
    /// the slot is not ours.
    taken: Vec<u16>,
    /// Slots taken and not given back.
    in_flight: usize,
    /// The empty slot the reader waited on at the last check while frames waited in
    /// others (`resync_if_stuck`).
    stuck_at: Option<usize>,
}

// SAFETY: the mapping is used by the one worker thread that owns this value.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Sets up a TPACKET_V2 receive ring on `fd` (a packet socket with `PACKET_VNET_HDR`
    /// set, bound, with no ring yet) and maps it.
    pub fn attach(fd: RawFd) -> io::Result<RxRing> {
        let release = kernel_release();
        if !converts_udp_gso(&release) {
            return Err(io::Error::other(format!(
                "Linux {release} cannot describe a UDP GSO frame to a ring (6.2 can), and one such frame would stop the ring"
            )));
        }
        // The log line of a refused ring names the option the kernel refused.
        fn named(what: &'static str) -> impl Fn(io::Error) -> io::Error {
            move |e| io::Error::new(e.kind(), format!("setsockopt({what}): {e}"))
        }
        setsockopt(fd, PACKET_VERSION, &TPACKET_V2).map_err(named("PACKET_VERSION"))?;
        // Frames larger than a slot: queued whole on the socket (any non-zero value).
        setsockopt(fd, PACKET_COPY_THRESH, &1i32).map_err(named("PACKET_COPY_THRESH"))?;
        setsockopt(fd, PACKET_RX_RING, &request()).map_err(named("PACKET_RX_RING"))?;
        RxRing::map(fd).inspect_err(|_| {
            // A ring we cannot read would take every frame: take it down again (a request
            // of no blocks frees it; frames then queue on the socket for `recv`).
            let none = libc::tpacket_req { tp_block_size: 0, tp_block_nr: 0, tp_frame_size: 0, tp_frame_nr: 0 };
            let _ = setsockopt(fd, PACKET_RX_RING, &none);
        })
    }

    /// The ring of a socket another process set up (`None`: it has none). A ring of
    /// another size than this build's is refused: its slots could not be found.
    pub fn adopt(fd: RawFd) -> io::Result<Option<RxRing>> {
        // The kernel refuses to change the virtio-net header option while a ring exists
        // (EBUSY); the socket has it set already, so setting it again changes nothing.
        match setsockopt(fd, PACKET_VNET_HDR, &1i32) {
            Ok(()) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let mut ring = RxRing::map(fd).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("its receive ring is not this build's ({FRAMES} slots of {FRAME_SIZE} bytes): {e}"),
            )
        })?;
        ring.settle_after_adoption();
        Ok(Some(ring))
    }

    /// A ring just mapped from another process's socket: frames that process took and did
    /// not give back (a send still in flight when it stopped, or it crashed) may have gone
    /// out already: given back unread, never translated twice. Reading starts at the
    /// oldest frame nobody took.
    fn settle_after_adoption(&mut self) {
        for slot in 0..FRAMES {
            let status = self.status(slot);
            if status.load(Ordering::Acquire) & TP_STATUS_USER != 0 && self.header(slot, TP_PADDING) == TAKEN_MARK {
                status.store(TP_STATUS_KERNEL, Ordering::Release);
            }
        }
        self.next = self.first_unread();
    }

    fn map(fd: RawFd) -> io::Result<RxRing> {
        // SAFETY: maps the socket's ring (the kernel checks the length against it); the
        // result is checked, and unmapped once in Drop.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), RING_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RxRing { base: base.cast(), next: 0, taken: vec![0; FRAMES], in_flight: 0, stuck_at: None })
    }

    fn slot_offset(slot: usize) -> usize {
        (slot / FRAMES_PER_BLOCK) * BLOCK_SIZE + (slot % FRAMES_PER_BLOCK) * FRAME_SIZE
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: the slot's first 4 bytes are its status word, 16-byte aligned, inside the
        // live mapping; the kernel and we both access it atomically only.
        unsafe { &*self.base.add(RxRing::slot_offset(slot)).cast::<AtomicU32>() }
    }

    /// A u32 of a slot's header (at a 4-byte aligned offset); read of a slot that is ours
    /// (status USER), but for the timestamps `first_unread` compares, a heuristic.
    fn header(&self, slot: usize, at: usize) -> u32 {
        // SAFETY: inside the slot's header, within the mapping, 4-byte aligned (slots and
        // the header's u32 fields are). Read atomically: a timestamp may be read while the
        // kernel fills the slot (at worst a stale number, which `first_unread` tolerates).
        let word = unsafe { &*self.base.add(RxRing::slot_offset(slot) + at).cast::<AtomicU32>() };
        word.load(Ordering::Relaxed)
    }

    /// `tp_mac`, a u16 of a slot that is ours.
    fn mac_offset(&self, slot: usize) -> usize {
        // SAFETY: inside the slot's header, 2-byte aligned; the slot is ours (status USER,
        // loaded with Acquire first), so the kernel does not write it.
        let half =
            unsafe { &*self.base.add(RxRing::slot_offset(slot) + TP_MAC).cast::<std::sync::atomic::AtomicU16>() };
        usize::from(half.load(Ordering::Relaxed))
    }

    /// Marks a slot we took (`TP_PADDING`).
    fn mark_taken(&self, slot: usize) {
        // SAFETY: the slot is ours (status USER, just taken): the kernel does not touch
        // it; the padding is 4-byte aligned, inside the slot's header.
        let word = unsafe { &*self.base.add(RxRing::slot_offset(slot) + TP_PADDING).cast::<AtomicU32>() };
        word.store(TAKEN_MARK, Ordering::Relaxed);
    }

    fn unread(&self, slot: usize) -> bool {
        self.taken[slot] == 0 && self.status(slot).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    fn stamp(&self, slot: usize) -> u64 {
        (u64::from(self.header(slot, TP_SEC)) << 32) | u64::from(self.header(slot, TP_NSEC))
    }

    fn first_unread(&self) -> usize {
        first_unread(FRAMES, |i| self.unread(i), |i| self.stamp(i))
    }

    /// True when a frame waits to be taken.
    pub fn waiting(&self) -> bool {
        self.unread(self.next)
    }

    /// The next frame, if one waits.
    pub fn take(&mut self) -> Option<Taken> {
        let slot = self.next;
        if !self.unread(slot) {
            return None;
        }
        self.next = (slot + 1) % FRAMES;
        if self.status(slot).load(Ordering::Acquire) & TP_STATUS_COPY != 0 {
            self.status(slot).store(TP_STATUS_KERNEL, Ordering::Release);
            return Some(Taken::Queued);
        }
        let (len, snaplen) = (self.header(slot, TP_LEN) as usize, self.header(slot, TP_SNAPLEN) as usize);
        let mac = self.mac_offset(slot);
        let fits = mac >= TPACKET2_HDRLEN + VNET_HDR_LEN && mac + snaplen <= FRAME_SIZE && snaplen == len;
        // `tp_mac` is a u16 in the header: the start fits one too.
        let start = if fits { u16::try_from(mac - VNET_HDR_LEN).unwrap_or(0) } else { 0 };
        if start == 0 {
            self.status(slot).store(TP_STATUS_KERNEL, Ordering::Release);
            return Some(Taken::Truncated);
        }
        self.mark_taken(slot);
        self.taken[slot] = start;
        self.in_flight += 1;
        // `slot` < FRAMES, which fits a u16 (asserted above).
        Some(Taken::Frame { slot: u16::try_from(slot).unwrap_or(u16::MAX), len: snaplen + VNET_HDR_LEN })
    }

    /// A taken frame's bytes from its virtio-net header to the end of its slot (empty for
    /// a slot that is not ours).
    pub fn frame_mut(&mut self, slot: u16) -> &mut [u8] {
        let slot = usize::from(slot);
        match self.taken.get(slot) {
            Some(&start) if start != 0 => {
                let start = usize::from(start);
                // SAFETY: the slot is ours (taken, not given back): the kernel does not
                // touch it until we store KERNEL in its status; `start..FRAME_SIZE` lies in
                // the slot, inside the mapping; `&mut self` makes this the only reference.
                unsafe {
                    std::slice::from_raw_parts_mut(self.base.add(RxRing::slot_offset(slot) + start), FRAME_SIZE - start)
                }
            }
            _ => &mut [],
        }
    }

    /// Gives a taken slot back to the kernel.
    pub fn give_back(&mut self, slot: u16) {
        let slot = usize::from(slot);
        if self.taken.get(slot).is_some_and(|&s| s != 0) {
            self.taken[slot] = 0;
            self.in_flight -= 1;
            self.status(slot).store(TP_STATUS_KERNEL, Ordering::Release);
        }
    }

    /// Slots taken and not given back (sends in flight).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Checked every 100 ms: a reader whose next slot stays empty over two checks while
    /// frames wait in others would never read them (a ring taken over with a guess of
    /// where reading left off); it moves to the oldest of them. Once is not enough: a slot
    /// the kernel is still filling leaves that picture for a moment. True when it moved.
    pub fn resync_if_stuck(&mut self) -> bool {
        if self.unread(self.next) || !(0..FRAMES).any(|i| self.unread(i)) {
            self.stuck_at = None;
            return false;
        }
        if self.stuck_at != Some(self.next) {
            self.stuck_at = Some(self.next);
            return false;
        }
        self.stuck_at = None;
        self.next = self.first_unread();
        true
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, once. The ring itself stays
        // with the socket (another process may map it next).
        unsafe { libc::munmap(self.base.cast(), RING_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring over anonymous memory, with `fill` playing the kernel's part.
    fn fake_ring() -> RxRing {
        // SAFETY: a fresh anonymous mapping of the ring's size, checked; RxRing unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RING_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        RxRing { base: base.cast(), next: 0, taken: vec![0; FRAMES], in_flight: 0, stuck_at: None }
    }

    /// What `tpacket_rcv` does to a slot: header (padding zeroed), virtio-net header and
    /// frame at `tp_mac` 76, then the status word.
    fn fill(ring: &RxRing, slot: usize, frame: &[u8], len: usize, status: u32, stamp: u32) {
        let at = RxRing::slot_offset(slot);
        let snaplen = frame.len();
        // SAFETY: test memory of our own, inside the mapping.
        unsafe {
            let h = ring.base.add(at);
            h.add(TP_LEN).cast::<u32>().write(u32::try_from(len).unwrap());
            h.add(TP_SNAPLEN).cast::<u32>().write(u32::try_from(snaplen).unwrap());
            h.add(TP_MAC).cast::<u16>().write(76);
            h.add(TP_SEC).cast::<u32>().write(stamp);
            h.add(TP_PADDING).cast::<u32>().write(0);
            std::ptr::copy_nonoverlapping([1u8; VNET_HDR_LEN].as_ptr(), h.add(76 - VNET_HDR_LEN), VNET_HDR_LEN);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), h.add(76), snaplen);
        }
        ring.status(slot).store(status, Ordering::Release);
    }

    #[test]
    fn a_frame_is_ours_from_take_until_given_back_once() {
        let mut ring = fake_ring();
        assert_eq!(ring.take(), None, "an empty ring");
        let frame: Vec<u8> = (0..60u8).collect();
        fill(&ring, 0, &frame, 60, TP_STATUS_USER, 1);
        assert!(ring.waiting());
        assert_eq!(ring.take(), Some(Taken::Frame { slot: 0, len: 70 }));
        assert_eq!(ring.in_flight(), 1);
        let bytes = ring.frame_mut(0);
        assert_eq!(&bytes[..VNET_HDR_LEN], &[1u8; VNET_HDR_LEN], "the virtio-net header first");
        assert_eq!(&bytes[VNET_HDR_LEN..70], &frame[..], "then the frame");
        assert_eq!(bytes.len(), FRAME_SIZE - 66, "to the end of the slot");
        assert_eq!(ring.take(), None, "a taken slot is not taken again");
        ring.give_back(0);
        assert_eq!(ring.status(0).load(Ordering::Acquire), TP_STATUS_KERNEL);
        assert_eq!((ring.in_flight(), ring.frame_mut(0).len()), (0, 0));
        ring.give_back(0);
        assert_eq!(ring.in_flight(), 0, "giving back twice counts once");
    }

    #[test]
    fn large_and_cut_frames_go_back_at_once() {
        let mut ring = fake_ring();
        // Too large for a slot: queued whole on the socket, the slot marked COPY.
        fill(&ring, 0, &[0u8; 100], 9000, TP_STATUS_USER | TP_STATUS_COPY, 1);
        // Cut short and not queued (the socket's buffer was full).
        fill(&ring, 1, &[0u8; 100], 9000, TP_STATUS_USER, 2);
        fill(&ring, 2, &[0u8; 64], 64, TP_STATUS_USER, 3);
        assert_eq!(ring.take(), Some(Taken::Queued));
        assert_eq!(ring.take(), Some(Taken::Truncated));
        assert_eq!(ring.take(), Some(Taken::Frame { slot: 2, len: 74 }));
        assert_eq!(ring.in_flight(), 1, "only the frame in slot 2 is held");
        for slot in 0..2 {
            assert_eq!(ring.status(slot).load(Ordering::Acquire), TP_STATUS_KERNEL, "slot {slot}");
        }
    }

    #[test]
    fn a_successor_gives_back_what_its_predecessor_took_and_reads_on_from_the_oldest() {
        let mut before = fake_ring();
        for slot in 10..16u32 {
            fill(&before, slot as usize, &[0u8; 64], 64, TP_STATUS_USER, 100 + slot);
        }
        before.next = 10;
        // The process before took two frames (sends in flight when it stopped).
        assert!(matches!(before.take(), Some(Taken::Frame { slot: 10, .. })));
        assert!(matches!(before.take(), Some(Taken::Frame { slot: 11, .. })));
        // The successor maps the same memory: here, the same slots under a fresh reader.
        let mut after = RxRing { base: before.base, next: 0, taken: vec![0; FRAMES], in_flight: 0, stuck_at: None };
        after.settle_after_adoption();
        for slot in [10, 11] {
            assert_eq!(after.status(slot).load(Ordering::Acquire), TP_STATUS_KERNEL, "slot {slot} given back");
        }
        assert_eq!(after.next, 12, "reading goes on at the oldest frame nobody took");
        assert!(matches!(after.take(), Some(Taken::Frame { slot: 12, .. })));
        // One mapping, two readers in this test: only one may unmap it.
        std::mem::forget(before);
    }

    #[test]
    fn a_stuck_reader_moves_only_after_two_checks() {
        let mut ring = fake_ring();
        fill(&ring, 5, &[0u8; 64], 64, TP_STATUS_USER, 9);
        ring.next = 2;
        assert!(!ring.resync_if_stuck(), "once may be a slot still being filled");
        assert!(ring.resync_if_stuck(), "twice: it moves");
        assert_eq!(ring.take(), Some(Taken::Frame { slot: 5, len: 74 }));
        assert!(!ring.resync_if_stuck() && !ring.resync_if_stuck(), "nothing waits elsewhere");
    }

    fn start(unread: &[u8], stamps: &[u64]) -> usize {
        first_unread(unread.len(), |i| unread[i] == 1, |i| stamps[i])
    }

    #[test]
    fn rings_only_on_kernels_that_describe_udp_gso() {
        for yes in ["6.2.0", "6.18.44-fc-v1300", "7.0", "6.10.1-arch1", "10.1"] {
            assert!(super::converts_udp_gso(yes), "{yes}");
        }
        for no in ["6.1.0-27-amd64", "5.15.0", "4.19.2", "6", "", "linux"] {
            assert!(!super::converts_udp_gso(no), "{no}");
        }
    }

    #[test]
    fn the_reader_starts_at_the_oldest_waiting_frame() {
        let z = [0u64; 6];
        // One run in the middle, one that wraps past the last slot, one at the start.
        assert_eq!(start(&[0, 0, 1, 1, 1, 0], &z), 2);
        assert_eq!(start(&[1, 1, 0, 0, 1, 1], &z), 4);
        assert_eq!(start(&[1, 0, 0, 0, 0, 0], &z), 0);
        assert_eq!(start(&[0, 0, 0, 0, 0, 1], &z), 5);
    }

    #[test]
    fn with_nothing_waiting_the_reader_goes_where_the_kernel_writes_next() {
        // The kernel wrote slot 3 last (the newest stamp), so it writes slot 4 next.
        assert_eq!(start(&[0; 6], &[50, 51, 52, 53, 10, 11]), 4);
        // It wrote the last slot last: it wraps to the first.
        assert_eq!(start(&[0; 6], &[1, 2, 3, 4, 5, 6]), 0);
        // A ring not written yet starts at slot 0, like the kernel.
        assert_eq!(start(&[0; 6], &[0; 6]), 0);
        // Only the first slots written so far.
        assert_eq!(start(&[0; 6], &[7, 8, 0, 0, 0, 0]), 2);
    }

    #[test]
    fn a_slot_still_being_filled_does_not_hide_the_oldest_frames() {
        // Slot 2 is claimed and being filled on another CPU while 3 and 4 are done: two
        // runs; the oldest frame (slot 0's) begins the one to read first.
        assert_eq!(start(&[1, 1, 0, 1, 1, 0], &[20, 21, 9, 23, 24, 3]), 0);
        // The same across the end of the ring: the older run starts at slot 4.
        assert_eq!(start(&[1, 0, 1, 0, 1, 1], &[32, 5, 34, 6, 30, 31]), 4);
    }

    #[test]
    fn a_full_ring_is_read_from_after_the_newest_frame() {
        // Every slot waits: the oldest is the one after the newest.
        assert_eq!(start(&[1; 5], &[20, 21, 22, 18, 19]), 3);
        assert_eq!(start(&[1; 5], &[20, 21, 22, 23, 24]), 0);
    }
}
