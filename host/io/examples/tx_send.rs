//! A measurement of the PACKET_MMAP TX ring lever, not a part of natgw: how fast one
//! thread can hand 64-byte frames to a packet socket for sending, two ways.
//!
//! - `uring`: an io_uring `SEND` per frame, `BATCH` of them submitted at once and waited
//!   for, from one buffer the kernel copies: what natgw's worker does.
//! - `ring`: a TPACKET_V2 TX ring of 2048 slots; the thread copies `BATCH` frames into free
//!   slots, marks them `TP_STATUS_SEND_REQUEST`, and kicks the socket with one
//!   `send(fd, NULL, 0, MSG_DONTWAIT)`, which sends every marked slot (`tpacket_snd`).
//!   A slot is free again once its skb lets go of the ring's page (at a veth that is when
//!   the frame crosses it, `skb_orphan_frags` copying it).
//!
//! Both use a socket opened as natgw opens its links (`PacketSocket::open`: virtio-net
//! header, qdisc bypass), and the same frame: a 10-byte virtio-net header (zero: no
//! offload) and a 64-byte Ethernet/IPv4/UDP frame to `DST_MAC`, 10.99.0.1:9 → 10.99.0.2:9.
//! The receiving stack's work happens in the sender's context (veth hands the frame to the
//! peer's backlog on the same CPU), so frames a second on one pinned CPU measure the whole
//! cost of a sent frame, receiver included, as a gateway's worker pays it.
//!
//!   tx_send IFNAME DST_MAC SECONDS uring|ring [BATCH]
//!
//! Prints one line: method, batch, frames queued a second, and the process's CPU
//! nanoseconds a frame. `scripts/tx-send-bench.sh` builds the namespaces and runs both.

// A measurement tool: literal sizes, and it stops at the first setup step that fails.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};
use natgw_io::sys::{setsockopt_value, PacketSocket, PacketSocketOptions};

const SLOT: usize = 2048;
const SLOTS: usize = 2048;
const BLOCK: usize = 64 << 10;
// A TX slot's frame starts right after `struct tpacket2_hdr`: TPACKET2_HDRLEN less the
// `sockaddr_ll` a receive slot keeps there (`tpacket_parse_header`).
const TX_DATA: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
// Offset of `tp_len` in `struct tpacket2_hdr` (after `tp_status`).
const TP_LEN: usize = 4;

fn os(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(s.split(':')) {
        *m = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// The virtio-net header (all zero) and a 64-byte UDP frame from `src` to `dst`.
fn frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_at = f.len();
    // IPv4: 20 bytes, total length 50 (8 UDP + 22 payload), TTL 64, UDP.
    f.extend_from_slice(&[0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2]);
    let check = natgw_wire::checksum::compute(&f[ip_at..ip_at + 20]);
    f[ip_at + 10..ip_at + 12].copy_from_slice(&check.to_be_bytes());
    // UDP 9 → 9, length 30, no checksum (IPv4 allows it); 22 bytes of payload.
    f.extend_from_slice(&[0, 9, 0, 9, 0, 30, 0, 0]);
    f.resize(10 + 64, 0xab);
    f
}

/// A TX ring mapped from the socket.
struct TxRing {
    base: *mut u8,
}

impl TxRing {
    fn attach(fd: RawFd) -> io::Result<TxRing> {
        setsockopt_value(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )?;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK as u32,
            tp_block_nr: (SLOTS * SLOT / BLOCK) as u32,
            tp_frame_size: SLOT as u32,
            tp_frame_nr: SLOTS as u32,
        };
        setsockopt_value(fd, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
        // SAFETY: maps the ring the kernel just allocated for this socket; checked below.
        let base = unsafe {
            libc::mmap(ptr::null_mut(), SLOTS * SLOT, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(os("mmap(PACKET_TX_RING)"));
        }
        Ok(TxRing { base: base.cast() })
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: slot < SLOTS, so the slot's first word lies inside the mapping, aligned
        // (slots are 2048 bytes apart), and the kernel reads and writes it atomically too.
        unsafe { &*self.base.add(slot * SLOT).cast::<AtomicU32>() }
    }

    /// Copies `f` into free slot `slot` and marks it for sending.
    fn put(&self, slot: usize, f: &[u8]) {
        // SAFETY: slot < SLOTS and TX_DATA + f.len() < SLOT: inside the slot, which is ours
        // while its status is AVAILABLE (the caller checked).
        unsafe {
            let s = self.base.add(slot * SLOT);
            ptr::copy_nonoverlapping(f.as_ptr(), s.add(TX_DATA), f.len());
            ptr::write_unaligned(s.add(TP_LEN).cast::<u32>(), f.len() as u32);
        }
        self.status(slot).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
    }
}

fn cpu_ns() -> u64 {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: tx_send IFNAME DST_MAC SECONDS uring|ring [BATCH]");
        std::process::exit(2);
    }
    let secs: u64 = args[3].parse().unwrap();
    let method = args[4].as_str();
    let batch: usize = args.get(5).map_or(32, |b| b.parse().unwrap());
    let opts = PacketSocketOptions { protocol: 0x0800, vnet_hdr: true, fanout: None, rcvbuf: 0, rx_ring: false };
    let sock = PacketSocket::open(&args[1], &opts).map_err(|e| io::Error::other(e.to_string()))?;
    let fd = sock.raw_fd();
    let f = frame(sock.info.mac, parse_mac(&args[2]));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let cpu0 = cpu_ns();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut refused = 0u64;
    match method {
        "uring" => {
            let mut ring: IoUring = IoUring::builder().setup_coop_taskrun().build(256)?;
            while Instant::now() < deadline {
                for _ in 0..batch {
                    let e = opcode::Send::new(types::Fd(fd), f.as_ptr(), f.len() as u32).build();
                    // SAFETY: the frame outlives the send, which completes before the next
                    // batch (submit_and_wait below); the queue has room for a batch.
                    unsafe { ring.submission().push(&e).unwrap() };
                }
                ring.submit_and_wait(batch)?;
                for c in ring.completion() {
                    if c.result() < 0 {
                        refused += 1;
                    } else {
                        sent += 1;
                    }
                }
            }
        }
        "ring" => {
            let tx = TxRing::attach(fd)?;
            let mut next = 0usize;
            while Instant::now() < deadline {
                let mut put = 0;
                while put < batch {
                    let st = tx.status(next).load(Ordering::Acquire);
                    if st == libc::TP_STATUS_WRONG_FORMAT {
                        refused += 1;
                        tx.status(next).store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                    } else if st != libc::TP_STATUS_AVAILABLE {
                        // Still the kernel's: kick what we have and come back.
                        break;
                    }
                    tx.put(next, &f);
                    next = (next + 1) % SLOTS;
                    put += 1;
                }
                // SAFETY: a send of nothing: the kernel sends the ring's marked slots.
                let r = unsafe { libc::send(fd, ptr::null(), 0, libc::MSG_DONTWAIT) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                        return Err(os("send(TX ring)"));
                    }
                }
                sent += put as u64;
            }
            // Let the last marked slots go out before counting.
            // SAFETY: as above.
            unsafe { libc::send(fd, ptr::null(), 0, 0) };
        }
        _ => {
            eprintln!("method: uring or ring");
            std::process::exit(2);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_ns() - cpu0;
    println!(
        "method={method} batch={batch} frames_per_s={:.0} cpu_ns_per_frame={:.0} refused={refused}",
        sent as f64 / wall,
        cpu as f64 / sent.max(1) as f64
    );
    Ok(())
}
