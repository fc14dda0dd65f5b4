//! A provided-buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a free buffer for
//! each multishot receive; we give buffers back once the frame in them has been sent or
//! dropped. Buffers are large enough for a 64 KiB GSO super-frame plus its virtio header.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use super::IoError;

/// A GSO super-frame is at most 64 KiB of IP plus Ethernet and virtio-net headers.
pub const BUF_SIZE: usize = 65536 + 128;
/// The same, as the ring entries hold it.
const BUF_SIZE_U32: u32 = 65536 + 128;
const _: () = assert!(BUF_SIZE_U32 as usize == BUF_SIZE);

struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    fn anonymous(len: usize) -> Result<Mmap, IoError> {
        // SAFETY: anonymous private mapping; the result is checked; we own it until Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(IoError::Os("mmap(buffer ring)", io::Error::last_os_error()));
        }
        Ok(Mmap { ptr: ptr as *mut u8, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

pub struct BufRing {
    ring: Mmap,
    bufs: Mmap,
    entries: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    pub group: u16,
}

// SAFETY: the ring is used by one worker thread only; the raw pointers are owned mappings.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Registers a ring of `entries` buffers (power of two) as buffer group `group`.
    pub fn new(uring: &IoUring, entries: u16, group: u16) -> Result<BufRing, IoError> {
        let ring = Mmap::anonymous(usize::from(entries) * std::mem::size_of::<BufRingEntry>())?;
        let bufs = Mmap::anonymous(usize::from(entries) * BUF_SIZE)?;
        // SAFETY: the ring mapping is page-aligned, sized for `entries` entries, and lives
        // as long as this BufRing, which the worker drops after the IoUring (field order).
        #[allow(deprecated)]
        unsafe { uring.submitter().register_buf_ring(ring.ptr as u64, entries, group) }.map_err(IoError::Uring)?;
        let mut r = BufRing { ring, bufs, entries, tail: 0, group };
        for bid in 0..entries {
            r.recycle(bid);
        }
        r.publish();
        Ok(r)
    }

    /// The buffer with id `bid`, whole.
    pub fn buf_mut(&mut self, bid: u16) -> &mut [u8] {
        let bid = usize::from(bid % self.entries);
        // SAFETY: bid < entries, so the slice is inside the mapping; the caller holds the
        // buffer (the kernel completed a receive into it and it is not yet recycled), so
        // nobody else writes it.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.add(bid * BUF_SIZE), BUF_SIZE) }
    }

    pub fn buf_ptr(&self, bid: u16) -> *const u8 {
        let bid = usize::from(bid % self.entries);
        // SAFETY: in bounds of the mapping (bid < entries).
        unsafe { self.bufs.ptr.add(bid * BUF_SIZE) }
    }

    /// Gives buffer `bid` back to the kernel (visible after `publish`).
    pub fn recycle(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.tail & mask);
        // SAFETY: idx < entries: the entry lies inside the ring mapping, and the kernel only
        // reads entries between its head and the published tail, which excludes this one.
        let entry = unsafe { &mut *(self.ring.ptr as *mut BufRingEntry).add(idx) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(BUF_SIZE_U32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's `resv`, inside the mapping; the kernel
        // reads it with acquire semantics, so a release store orders the entries before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.ptr as *const BufRingEntry) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}
