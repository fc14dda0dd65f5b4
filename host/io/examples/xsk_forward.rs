//! A measurement prototype of the AF_XDP lever, not a part of natgw: one thread translates
//! with natgw's own `Translator` between two interfaces, each read and written through an
//! AF_XDP socket in copy mode (what veth offers: it has no zero-copy XSK), the two sockets
//! sharing one UMEM so a frame received on one link is sent from the same buffer on the
//! other. A 15-instruction XDP program per interface redirects IPv4 frames into its socket
//! and passes everything else (ARP) to the kernel's stack. Ethernet addresses come from the
//! command line: one neighbour per side, as in `scripts/bench.sh`'s topology.
//!
//! What it leaves out, because it only measures the path: handoff, several workers
//! (veth has one receive queue here), GSO (XDP on veth takes segmented frames only),
//! checksum offload (an AF_XDP frame carries no CHECKSUM_PARTIAL mark: a sender's partial
//! TCP/UDP checksums arrive unfinished, so the peers must turn transmit offload off), ARP
//! and the neighbour table (one fixed neighbour per side), fragments (dropped, where natgw
//! forwards them), policies and telemetry. The translator's timer (`tick`: expiry,
//! pressure, the ICMP error budget) runs every 100 ms, as in natgw's worker.
//!
//!   xsk_forward INSIDE_IF INSIDE_ADDR/PREFIX INSIDE_PEER_MAC OUTSIDE_IF OUTSIDE_ADDR \
//!               OUTSIDE_GATEWAY OUTSIDE_PEER_MAC [max_flows]
//!
//! Prints the frames it forwarded and dropped each second to stderr while it runs.

// A prototype: literal sizes, and it stops at the first setup step that fails.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

// The instruction encoding and the ethertype test are written for a little-endian machine.
#[cfg(not(target_endian = "little"))]
compile_error!("xsk_forward is written for little-endian machines");

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use natgw_core::conntrack::{Egress, Side};
use natgw_core::counters::Counters;
use natgw_core::nat::pool::PoolSpec;
use natgw_core::nat::{FrameMeta, InsideLink, NatConfig, Translator, Verdict};
use natgw_io::sys::setsockopt_value;
use natgw_wire::Ipv4Net;

const FRAME_SIZE: usize = 2048;
const FRAMES: usize = 8192;
const RING: u32 = 2048;
const BATCH: u32 = 64;

// From linux/bpf.h (linux/if_xdp.h's are libc's).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 4;

fn os(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `bpf(cmd, attr)` over a zeroed 128-byte `union bpf_attr` that `fill` writes.
fn bpf(cmd: libc::c_long, fill: impl FnOnce(&mut [u8; 128])) -> io::Result<RawFd> {
    let mut attr = [0u8; 128];
    fill(&mut attr);
    // SAFETY: attr is 128 readable and writable bytes for the kernel's union bpf_attr; every
    // pointer written into it points at memory alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(os("bpf"));
    }
    Ok(r as RawFd)
}

fn put32(a: &mut [u8; 128], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8; 128], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// One eBPF instruction: opcode, registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst & 0xf | (src & 0xf) << 4) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// An XDP program for one interface: IPv4 frames into the socket at `xskmap[rx_queue]`
/// (or to the stack if there is none), everything else to the stack.
fn xdp_program(map_fd: RawFd) -> Vec<u64> {
    vec![
        insn(0x61, 2, 1, 0, 0),      // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),      // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),      // r4 = r2
        insn(0x07, 4, 0, 0, 14),     // r4 += 14
        insn(0x2d, 4, 3, 8, 0),      // if r4 > r3 goto pass
        insn(0x69, 5, 2, 12, 0),     // r5 = ethertype (network order)
        insn(0x55, 5, 0, 6, 0x0008), // if r5 != htons(0x0800) goto pass
        insn(0x61, 2, 1, 16, 0),     // r2 = ctx->rx_queue_index
        insn(0x18, 1, 1, 0, map_fd), // r1 = map (ld_imm64, BPF_PSEUDO_MAP_FD)
        insn(0x00, 0, 0, 0, 0),      //   (its upper half)
        insn(0xb7, 3, 0, 0, 2),      // r3 = XDP_PASS (the action without a socket)
        insn(0x85, 0, 0, 0, 51),     // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),      // exit
        insn(0xb7, 0, 0, 0, 2),      // pass: r0 = XDP_PASS
        insn(0x95, 0, 0, 0, 0),      // exit
    ]
}

/// Loads the program for `ifindex`, attaches it in native mode and files `xsk` at key 0.
/// The returned descriptors keep it attached; closing them detaches it.
fn attach_xdp(ifindex: u32, xsk: RawFd) -> io::Result<[OwnedFd; 3]> {
    let map = bpf(BPF_MAP_CREATE, |a| {
        put32(a, 0, BPF_MAP_TYPE_XSKMAP);
        put32(a, 4, 4);
        put32(a, 8, 4);
        put32(a, 12, 1);
    })?;
    let key = 0u32;
    let value = xsk as u32;
    bpf(BPF_MAP_UPDATE_ELEM, |a| {
        put32(a, 0, map as u32);
        put64(a, 8, ptr::addr_of!(key) as u64);
        put64(a, 16, ptr::addr_of!(value) as u64);
    })?;
    let insns = xdp_program(map);
    let license = b"GPL\0";
    let mut log = vec![0u8; 65536];
    let prog = bpf(BPF_PROG_LOAD, |a| {
        put32(a, 0, BPF_PROG_TYPE_XDP);
        put32(a, 4, insns.len() as u32);
        put64(a, 8, insns.as_ptr() as u64);
        put64(a, 16, license.as_ptr() as u64);
        put32(a, 24, 1);
        put32(a, 28, log.len() as u32);
        put64(a, 32, log.as_mut_ptr() as u64);
        put32(a, 68, BPF_XDP);
    })
    .map_err(|e| {
        let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
        io::Error::new(e.kind(), format!("{e}; verifier: {text}"))
    })?;
    let link = bpf(BPF_LINK_CREATE, |a| {
        put32(a, 0, prog as u32);
        put32(a, 4, ifindex);
        put32(a, 8, BPF_XDP);
        put32(a, 12, XDP_FLAGS_DRV_MODE);
    })?;
    // SAFETY: the three are fresh descriptors the kernel just gave us, owned from here.
    Ok(unsafe { [OwnedFd::from_raw_fd(map), OwnedFd::from_raw_fd(prog), OwnedFd::from_raw_fd(link)] })
}

/// One mapped ring: producer and consumer words, and `RING` entries of `T`.
struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    entries: *mut T,
    /// Our copy of the index we advance (consumer of a kernel-produced ring, producer of
    /// one we fill).
    local: u32,
}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: libc::off_t) -> io::Result<Ring<T>> {
        let len = off.desc as usize + RING as usize * std::mem::size_of::<T>();
        // SAFETY: mapping a ring the kernel set up on this socket, at the offset it names;
        // the mapping is never unmapped while the process runs.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os("mmap(xsk ring)"));
        }
        let at = |o: u64| base.cast::<u8>().wrapping_add(o as usize);
        let mut ring = Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            entries: at(off.desc).cast(),
            local: 0,
        };
        ring.local = ring.producer().load(Ordering::Relaxed).max(ring.consumer().load(Ordering::Relaxed));
        Ok(ring)
    }
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping, at a u32 the kernel aligned.
        unsafe { &*self.producer }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
    fn at(&self, i: u32) -> *mut T {
        self.entries.wrapping_add((i & (RING - 1)) as usize)
    }
    /// A kernel-produced ring: how many entries wait.
    fn ready(&self) -> u32 {
        self.producer().load(Ordering::Acquire).wrapping_sub(self.local)
    }
    fn read(&mut self) -> T {
        // SAFETY: the entry is within the ring and the kernel published it (`ready`).
        let v = unsafe { self.at(self.local).read_volatile() };
        self.local = self.local.wrapping_add(1);
        v
    }
    fn release(&self) {
        self.consumer().store(self.local, Ordering::Release);
    }
    /// A ring we produce: free entries.
    fn room(&self) -> u32 {
        RING - self.local.wrapping_sub(self.consumer().load(Ordering::Acquire))
    }
    fn write(&mut self, v: T) {
        // SAFETY: the entry is within the ring and free (`room`).
        unsafe { self.at(self.local).write_volatile(v) };
        self.local = self.local.wrapping_add(1);
    }
    fn publish(&self) {
        self.producer().store(self.local, Ordering::Release);
    }
}

/// An AF_XDP socket with its four rings.
struct Xsk {
    fd: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    tx_pending: bool,
}

/// An AF_XDP socket option (natgw's one `setsockopt`), its failure named.
fn xdp_option<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    setsockopt_value(fd, libc::SOL_XDP, name, value)
        .map_err(|e| io::Error::new(e.kind(), format!("setsockopt(SOL_XDP): {e}")))
}

impl Xsk {
    /// A socket on `ifindex` queue 0: with `umem` it registers it, else it shares `share`'s.
    fn open(ifindex: u32, umem: Option<(*mut u8, usize)>, share: Option<RawFd>) -> io::Result<Xsk> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os("socket(AF_XDP)"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Some((addr, len)) = umem {
            let reg = libc::xdp_umem_reg {
                addr: addr as u64,
                len: len as u64,
                chunk_size: FRAME_SIZE as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            xdp_option(raw, libc::XDP_UMEM_REG, &reg)?;
        }
        xdp_option(raw, libc::XDP_UMEM_FILL_RING, &RING)?;
        xdp_option(raw, libc::XDP_UMEM_COMPLETION_RING, &RING)?;
        xdp_option(raw, libc::XDP_RX_RING, &RING)?;
        xdp_option(raw, libc::XDP_TX_RING, &RING)?;
        let none = libc::xdp_ring_offset { producer: 0, consumer: 0, desc: 0, flags: 0 };
        let mut off = libc::xdp_mmap_offsets { rx: none, tx: none, fr: none, cr: none };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off is writable for optlen bytes.
        if unsafe {
            libc::getsockopt(raw, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, ptr::from_mut(&mut off).cast(), &mut optlen)
        } < 0
        {
            return Err(os("getsockopt(XDP_MMAP_OFFSETS)"));
        }
        let xsk = Xsk {
            rx: Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING)?,
            tx: Ring::map(raw, &off.tx, libc::XDP_PGOFF_TX_RING)?,
            fill: Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t)?,
            comp: Ring::map(raw, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t)?,
            fd,
            tx_pending: false,
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            // A socket sharing another's UMEM takes its mode from it and may name no other.
            sxdp_flags: if share.is_some() { libc::XDP_SHARED_UMEM } else { libc::XDP_COPY },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: share.unwrap_or(0) as u32,
        };
        let sa_len = std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t;
        // SAFETY: sa is a complete sockaddr_xdp of the length passed.
        if unsafe { libc::bind(raw, ptr::from_ref(&sa).cast(), sa_len) } < 0 {
            return Err(os("bind(AF_XDP)"));
        }
        Ok(xsk)
    }
}

/// The `len` bytes at `addr` of the UMEM, cut at the end of their chunk.
fn frame_in<'a>(umem: *mut u8, addr: u64, len: usize) -> &'a mut [u8] {
    let addr = (addr as usize).min(FRAMES * FRAME_SIZE - 1);
    // SAFETY: addr (clamped) lies within the UMEM of FRAMES chunks of FRAME_SIZE, and the
    // slice ends at its chunk's end; each frame has one owner at a time (a fill ring, the
    // kernel, a tx ring, or the loop's `free` list), and the loop touches one at a time.
    unsafe { std::slice::from_raw_parts_mut(umem.add(addr), len.min(FRAME_SIZE - addr % FRAME_SIZE)) }
}

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (d, p) in m.iter_mut().zip(s.split(':')) {
        *d = u8::from_str_radix(p, 16).expect("a MAC address as aa:bb:cc:dd:ee:ff");
    }
    m
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        eprintln!("usage: xsk_forward INSIDE_IF INSIDE_ADDR/PREFIX INSIDE_PEER_MAC OUTSIDE_IF OUTSIDE_ADDR OUTSIDE_GATEWAY OUTSIDE_PEER_MAC [max_flows]");
        std::process::exit(2);
    }
    let (addr, prefix) = args[1].split_once('/').expect("INSIDE_ADDR/PREFIX");
    let inside_net = Ipv4Net { addr: addr.parse().expect("INSIDE_ADDR"), prefix: prefix.parse().expect("PREFIX") };
    let outside_addr: Ipv4Addr = args[4].parse().expect("OUTSIDE_ADDR");
    let gateway: Ipv4Addr = args[5].parse().expect("OUTSIDE_GATEWAY");
    let max_flows: usize = args.get(7).and_then(|a| a.parse().ok()).unwrap_or(1_200_000);
    let links = [natgw_io::sys::interface_info(&args[0]).unwrap(), natgw_io::sys::interface_info(&args[3]).unwrap()];
    let peer = [mac(&args[2]), mac(&args[6])];

    // The demo's settings (natgw's defaults) with this topology's links and addresses.
    let cfg = NatConfig {
        inside: vec![InsideLink { name: args[0].clone(), addresses: vec![inside_net], mtu: 1500 }],
        external_addrs: vec![outside_addr],
        pools: vec![PoolSpec { name: "default".into(), addrs: vec![outside_addr], lo: 1024, hi: 65535 }],
        outside_net: Ipv4Net { addr: gateway, prefix: 24 },
        outside_gateway: gateway,
        max_flows,
        high_water_flows: max_flows / 10 * 9,
        refusal_cache_ms: 1000,
        ..natgw_testkit::demo_config()
    };
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64 + 1000;
    let mut translator = Translator::new(cfg, Arc::new(Counters::default()), now_ms());

    let umem_len = FRAMES * FRAME_SIZE;
    // SAFETY: a fresh anonymous mapping, never unmapped while the process runs.
    let umem = unsafe {
        libc::mmap(
            ptr::null_mut(),
            umem_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if umem == libc::MAP_FAILED {
        return Err(os("mmap(umem)"));
    }
    let umem = umem.cast::<u8>();
    let first = Xsk::open(links[0].index as u32, Some((umem, umem_len)), None)?;
    let second = Xsk::open(links[1].index as u32, None, Some(first.fd.as_raw_fd()))?;
    let mut xsks = [first, second];
    let _attached = [
        attach_xdp(links[0].index as u32, xsks[0].fd.as_raw_fd())?,
        attach_xdp(links[1].index as u32, xsks[1].fd.as_raw_fd())?,
    ];
    // Every frame is in exactly one place: a fill ring, the kernel, a tx ring, or `free`.
    let mut free: Vec<u64> = (0..FRAMES as u64).map(|i| i * FRAME_SIZE as u64).collect();
    let refill = |x: &mut Xsk, free: &mut Vec<u64>| {
        let n = x.fill.room().min(free.len() as u32);
        for _ in 0..n {
            x.fill.write(free.pop().unwrap());
        }
        x.fill.publish();
    };
    for x in &mut xsks {
        refill(x, &mut free);
    }
    eprintln!("xsk_forward: {} <-> {} in copy mode, one thread", args[0], args[3]);

    let frame_at = |addr: u64, len: usize| frame_in(umem, addr, len);
    let mut out = vec![0u8; FRAME_SIZE];
    let (mut forwarded, mut dropped, mut tx_full) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    let mut next_tick = 0;
    loop {
        let mut fds = [
            libc::pollfd { fd: xsks[0].fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: xsks[1].fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        if xsks.iter().all(|x| x.rx.ready() == 0 && !x.tx_pending) {
            // SAFETY: fds is a live array of two pollfd.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        }
        let now = now_ms();
        if now >= next_tick {
            translator.tick(now);
            next_tick = now + 100;
        }
        for side_ix in 0..2 {
            let n = xsks[side_ix].rx.ready().min(BATCH);
            let side = if side_ix == 0 { Side::Inside } else { Side::Outside };
            for _ in 0..n {
                let d = xsks[side_ix].rx.read();
                let frame = frame_at(d.addr, d.len as usize);
                let (egress, len, addr) = match translator.process(frame, FrameMeta::plain(side, 0), now, &mut out) {
                    Verdict::Forward { egress, .. } => (egress, d.len, d.addr),
                    Verdict::Emit { egress, len, .. } => {
                        free.push(d.addr & !(FRAME_SIZE as u64 - 1));
                        let Some(a) = free.pop() else { continue };
                        frame_at(a, len).copy_from_slice(&out[..len]);
                        (egress, len as u32, a)
                    }
                    _ => {
                        dropped += 1;
                        free.push(d.addr & !(FRAME_SIZE as u64 - 1));
                        continue;
                    }
                };
                let to = match egress {
                    Egress::Outside => 1,
                    Egress::Inside(_) => 0,
                };
                let f = frame_at(addr, 12);
                f[0..6].copy_from_slice(&peer[to]);
                f[6..12].copy_from_slice(&links[to].mac);
                let x = &mut xsks[to];
                if x.tx.room() == 0 {
                    tx_full += 1;
                    free.push(addr & !(FRAME_SIZE as u64 - 1));
                    continue;
                }
                x.tx.write(libc::xdp_desc { addr, len, options: 0 });
                x.tx_pending = true;
                forwarded += 1;
            }
            xsks[side_ix].rx.release();
        }
        for x in &mut xsks {
            if x.tx_pending {
                x.tx.publish();
                // A copy-mode kick sends at most 32 frames (the kernel's TX_BATCH_SIZE):
                // kick until the kernel has taken every published descriptor. What it
                // could not take (no memory, a full completion ring) is kicked again next
                // turn, and the loop does not sleep meanwhile.
                for _ in 0..RING / 32 + 1 {
                    // SAFETY: a zero-length sendto(2) on our socket: the transmit kick.
                    unsafe { libc::sendto(x.fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
                    if x.tx.room() == RING {
                        break;
                    }
                }
                x.tx_pending = x.tx.room() != RING;
            }
            let done = x.comp.ready();
            for _ in 0..done {
                let a = x.comp.read();
                free.push(a & !(FRAME_SIZE as u64 - 1));
            }
            x.comp.release();
        }
        for x in &mut xsks {
            refill(x, &mut free);
        }
        if last_report.elapsed().as_secs() >= 1 {
            eprintln!("forwarded {forwarded} dropped {dropped} tx_full {tx_full} flows {}", translator.flows().len());
            last_report = Instant::now();
        }
    }
}
