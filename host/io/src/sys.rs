//! Thin, checked wrappers over the Linux calls natgw needs: AF_PACKET sockets and their
//! options, interface queries, the classic-BPF steering program, signals, CPU pinning and
//! peer credentials. Every `unsafe` block here says why it is sound.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::rxring::RxRing;
use super::IoError;
use natgw_core::nat::PORT_SPREAD_MULTIPLIER;
use natgw_wire::MacAddr;

/// `open(2)` flag: refuse a path whose last component is a symbolic link.
pub const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;

// <linux/if_packet.h> socket options (SOL_PACKET), as libc has them; the receive ring's
// are set in `rxring`.
pub(crate) use libc::{PACKET_COPY_THRESH, PACKET_RX_RING, PACKET_VERSION, PACKET_VNET_HDR};
use libc::{PACKET_FANOUT, PACKET_FANOUT_DATA, PACKET_IGNORE_OUTGOING, PACKET_QDISC_BYPASS};
/// The fanout mode that steers by a classic-BPF program (libc's is a `c_uint`; the mode
/// goes into the option's `int`).
const PACKET_FANOUT_CBPF: i32 = 6;

/// What natgw knows of an interface.
#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: i32,
    pub mac: MacAddr,
    pub mtu: u32,
    pub up: bool,
}

fn ifreq_for(name: &str) -> Result<libc::ifreq, IoError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(IoError::NoSuchInterface(name.to_string()));
    }
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// Queries index, MAC, MTU and state of `name` in the current network namespace.
pub fn interface_info(name: &str) -> Result<InterfaceInfo, IoError> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IoError::Os("socket(AF_INET)", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let ioctl = |req: libc::c_ulong| -> Result<libc::ifreq, IoError> {
        let mut ifr = ifreq_for(name)?;
        // SAFETY: ifr is a valid ifreq with a NUL-terminated name; these SIOCGIF* requests
        // only write into it.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), req, &mut ifr) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Err(IoError::NoSuchInterface(name.to_string()));
            }
            return Err(IoError::Os("ioctl(SIOCGIF*)", e));
        }
        Ok(ifr)
    };
    let ifr = ioctl(libc::SIOCGIFINDEX)?;
    // SAFETY: SIOCGIFINDEX filled the ifru_ifindex member of the union.
    let index = unsafe { ifr.ifr_ifru.ifru_ifindex };
    let ifr = ioctl(libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *d = *s as u8;
    }
    let ifr = ioctl(libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled ifru_mtu.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu } as u32;
    let ifr = ioctl(libc::SIOCGIFFLAGS)?;
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    Ok(InterfaceInfo { name: name.to_string(), index, mac, mtu, up: libc::c_int::from(flags) & libc::IFF_UP != 0 })
}

/// IPv4 addresses the kernel has on any interface of this namespace, as (interface, address).
pub fn kernel_ipv4_addresses() -> Result<Vec<(String, std::net::Ipv4Addr)>, IoError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(IoError::Os("getifaddrs", io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family we check before the cast.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(fam) == libc::AF_INET {
                // SAFETY: family AF_INET means the storage is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
                out.push((name, std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The size of a C structure as the socket calls take it: each is a few dozen bytes.
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// AF_PACKET as `sockaddr_ll::sll_family` holds it.
#[allow(clippy::cast_possible_truncation, reason = "AF_PACKET is 17")]
const AF_PACKET_FAMILY: libc::sa_family_t = libc::AF_PACKET as libc::sa_family_t;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
    what: &'static str,
) -> Result<(), IoError> {
    setsockopt_value(fd, level, opt, &v).map_err(|e| IoError::Os(what, e))
}

/// A classic BPF instruction (struct sock_filter).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Sets a fanout group's classic-BPF program (`PACKET_FANOUT_DATA`).
fn set_fanout_program(raw: RawFd, prog: &[SockFilter]) -> Result<(), IoError> {
    let len =
        u16::try_from(prog.len()).map_err(|_| IoError::Os("steering program", io::ErrorKind::InvalidInput.into()))?;
    // fprog points at `prog`, alive for the call; the kernel copies the program.
    setsockopt_value(raw, libc::SOL_PACKET, PACKET_FANOUT_DATA, &SockFprog { len, filter: prog.as_ptr() })
        .map_err(|e| IoError::Os("setsockopt(PACKET_FANOUT_DATA)", e))
}

/// `setsockopt` with a value of any plain type (an int, or a struct the kernel reads and
/// copies).
pub fn setsockopt_value<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the size passed, which the kernel only reads
    // during the call.
    let r = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), socklen_of::<T>()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attaches `prog` as the socket's filter (`SO_ATTACH_FILTER`): it runs on every frame
/// before the socket (or its ring) takes it; its result is how many bytes to keep, 0 to
/// drop.
fn attach_filter(raw: RawFd, prog: &[SockFilter]) -> io::Result<()> {
    let len = u16::try_from(prog.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // fprog points at `prog`, alive for the call; the kernel copies the program.
    setsockopt_value(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &SockFprog { len, filter: prog.as_ptr() })
}

fn detach_filter(raw: RawFd) -> io::Result<()> {
    setsockopt_value(raw, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &0 as &libc::c_int)
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Options for an AF_PACKET socket.
pub struct PacketSocketOptions {
    pub protocol: u16,
    pub vnet_hdr: bool,
    /// Join fanout group `id` with this steering program.
    pub fanout: Option<(u16, Vec<SockFilter>)>,
    pub rcvbuf: usize,
    /// Set up a PACKET_MMAP receive ring (`rxring`), before the socket is bound so that
    /// no frame waits outside it. A ring the kernel refuses leaves the socket as it was,
    /// receiving by `recv`, with the reason in `PacketSocket::rx_ring_refused`.
    pub rx_ring: bool,
}

/// An AF_PACKET SOCK_RAW socket bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    pub info: InterfaceInfo,
    /// Its receive ring, until the worker takes it (`take_rx_ring`).
    rx_ring: Option<RxRing>,
    /// Why the ring asked for was not set up.
    pub rx_ring_refused: Option<io::Error>,
}

impl PacketSocket {
    pub fn open(ifname: &str, opts: &PacketSocketOptions) -> Result<PacketSocket, IoError> {
        let info = interface_info(ifname)?;
        let proto_be = opts.protocol.to_be();
        // SAFETY: plain socket(2); result checked and owned below.
        // Protocol 0: the socket takes no frame until `bind` names the interface and the
        // protocol (created with the protocol, it would take matching frames of every
        // interface until then, and they would be read as this link's).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return Err(IoError::Permission);
            }
            return Err(IoError::Os("socket(AF_PACKET)", e));
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        if opts.vnet_hdr {
            // virtio_net_hdr before every frame: GSO and checksum-offload metadata.
            setsockopt_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1, "setsockopt(PACKET_VNET_HDR)")?;
        }
        // Our own transmissions must not come back to us (ETH_P_IP taps see outgoing frames).
        setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, "setsockopt(PACKET_IGNORE_OUTGOING)")?;
        setsockopt_int(raw, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1, "setsockopt(PACKET_QDISC_BYPASS)")?;
        if opts.rcvbuf > 0 {
            // SO_RCVBUFFORCE ignores rmem_max (we run as root); fall back quietly.
            let size = libc::c_int::try_from(opts.rcvbuf).unwrap_or(libc::c_int::MAX);
            if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size, "SO_RCVBUFFORCE").is_err() {
                let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, size, "SO_RCVBUF");
            }
        }
        let ring = || {
            attach_filter(raw, &ring_guard_program())?;
            RxRing::attach(raw).inspect_err(|_| {
                // No ring, no guard: the socket receives as if none had been asked for.
                let _ = detach_filter(raw);
            })
        };
        let (rx_ring, rx_ring_refused) = match opts.rx_ring.then(ring) {
            Some(Ok(ring)) => (Some(ring), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = AF_PACKET_FAMILY;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = info.index;
        // SAFETY: sll is a valid sockaddr_ll and its size is passed.
        let r =
            unsafe { libc::bind(raw, &sll as *const _ as *const libc::sockaddr, socklen_of::<libc::sockaddr_ll>()) };
        if r < 0 {
            return Err(IoError::Os("bind(AF_PACKET)", io::Error::last_os_error()));
        }
        if let Some((group, prog)) = &opts.fanout {
            // Join first, then install the program (the kernel wants the group to exist).
            // packet(7): the group id in the low 16 bits, the mode in the next; the int is
            // read as those bits.
            let arg = i32::from(*group) | (PACKET_FANOUT_CBPF << 16);
            setsockopt_int(raw, libc::SOL_PACKET, PACKET_FANOUT, arg, "setsockopt(PACKET_FANOUT)")?;
            set_fanout_program(raw, prog)?;
        }
        Ok(PacketSocket { fd, info, rx_ring, rx_ring_refused })
    }

    /// Installs `prog` as the steering program of the fanout group this socket is in (the
    /// whole group's: the kernel keeps one per group). A socket handed over from another
    /// process (`adopt`) keeps the program that process installed, which may be an older
    /// build's: a new process installs its own.
    pub fn set_steering(&self, prog: &[SockFilter]) -> Result<(), IoError> {
        set_fanout_program(self.fd.as_raw_fd(), prog)
    }

    /// A packet socket another natgw process opened and handed over (`natgw upgrade`):
    /// its options, binding, fanout membership and receive ring (if it has one) come with
    /// it. Checked to be an AF_PACKET socket bound to `ifname`. It keeps receiving the way
    /// it did: a ring cannot be added or taken away while the process before may still
    /// read the socket (it goes on if the handoff fails).
    pub fn adopt(fd: OwnedFd, ifname: &str) -> Result<PacketSocket, IoError> {
        let info = interface_info(ifname)?;
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut len = socklen_of::<libc::sockaddr_ll>();
        // SAFETY: sll is writable for `len` bytes, which getsockname writes at most.
        let r = unsafe { libc::getsockname(fd.as_raw_fd(), &mut sll as *mut _ as *mut libc::sockaddr, &mut len) };
        if r != 0 {
            return Err(IoError::Os("getsockname(handed-over socket)", io::Error::last_os_error()));
        }
        if sll.sll_family != AF_PACKET_FAMILY || sll.sll_ifindex != info.index {
            return Err(IoError::Os(
                "handed-over socket",
                io::Error::other(format!("not a packet socket on {ifname}")),
            ));
        }
        let rx_ring = RxRing::adopt(fd.as_raw_fd()).map_err(|e| IoError::Os("handed-over socket", e))?;
        Ok(PacketSocket { fd, info, rx_ring, rx_ring_refused: None })
    }

    /// Its receive ring, for the worker that reads it.
    pub fn take_rx_ring(&mut self) -> Option<RxRing> {
        self.rx_ring.take()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Blocking-free send of one frame (used by the L2 thread, not the data plane).
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is a valid slice for the duration of the call.
        let r = unsafe {
            libc::send(self.raw_fd(), frame.as_ptr() as *const libc::c_void, frame.len(), libc::MSG_DONTWAIT)
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Receives one frame without blocking; `Ok(None)` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid and writable for buf.len() bytes.
        let r =
            unsafe { libc::recv(self.raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as usize))
    }
}

impl PacketSocket {
    /// Frames the kernel dropped on this socket because its receive queue was full, since
    /// the last call (PACKET_STATISTICS resets on read).
    pub fn take_drops(&self) -> u32 {
        // SAFETY: tpacket_stats is plain data and its size is passed; getsockopt writes at
        // most that many bytes into it.
        unsafe {
            let mut st: libc::tpacket_stats = mem::zeroed();
            let mut len = socklen_of::<libc::tpacket_stats>();
            let r = libc::getsockopt(
                self.raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut st as *mut _ as *mut libc::c_void,
                &mut len,
            );
            if r != 0 {
                return 0;
            }
            st.tp_drops
        }
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes; returns the readable ones.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: p is a valid array of pollfd of the given length.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents & libc::POLLIN != 0).collect())
}

// Classic BPF opcodes (<linux/filter.h>), for `stmt` and `jump`: natgw's socket programs
// and the end-to-end tests' seccomp filter.
pub const BPF_LD: u16 = 0x00;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_MISC: u16 = 0x07;
pub const BPF_W: u16 = 0x00;
pub const BPF_H: u16 = 0x08;
pub const BPF_B: u16 = 0x10;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_XOR: u16 = 0xa0;
pub const BPF_MUL: u16 = 0x20;
pub const BPF_RSH: u16 = 0x70;
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JSET: u16 = 0x40;
pub const BPF_K: u16 = 0x00;
pub const BPF_X: u16 = 0x08;
pub const BPF_A: u16 = 0x10;
pub const BPF_TAX: u16 = 0x00;
/// Loads relative to the network header, wherever skb->data points when fanout runs.
const SKF_NET_OFF: u32 = (-0x100000i32) as u32;

/// The filter of a socket with a receive ring: frames of protocols natgw does not
/// translate (not TCP, UDP or ICMP) are dropped before the ring sees them. Linux's
/// `tpacket_rcv` claims the ring's next slot before it converts a frame's offload metadata
/// to a virtio-net header; when that fails (a GSO type with no such header: SCTP from a
/// container beside natgw, ESP) it neither fills nor frees the slot, and the ring takes no
/// frame again. TCP super-frames always convert, UDP ones since Linux 6.2 (rings are
/// refused before: `rxring::converts_udp_gso`). natgw would drop these frames anyway
/// (`unsupported-protocol`); with a ring the kernel drops them uncounted.
pub fn ring_guard_program() -> Vec<SockFilter> {
    vec![
        /* 0 */ stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 9),
        /* 1 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 3, 0), // tcp: KEEP (5)
        /* 2 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 2, 0), // udp: KEEP (5)
        /* 3 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 1, 0), // icmp: KEEP (5)
        /* 4 DROP */ stmt(BPF_RET | BPF_K, 0),
        /* 5 KEEP */ stmt(BPF_RET | BPF_K, u32::MAX),
    ]
}

/// A classic BPF instruction that does not jump.
pub fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter { code, jt: 0, jf: 0, k }
}

/// A conditional jump: over `jt` instructions when the test holds, `jf` when not.
pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The steering program for a fanout group (the kernel takes its result modulo the number
/// of workers). It mirrors `nat::owner_of_port`: inside frames go by TCP/UDP source port or
/// ICMP identifier, outside frames by destination port or identifier, each mixed the same
/// way (`nat::port_spread`: multiplied by `PORT_SPREAD_MULTIPLIER`, the top 16 bits kept);
/// fragments by source address XOR IP ID so that all fragments of a datagram meet on one
/// worker. Frames it cannot classify go to worker 0; the translator hands off anything that
/// landed wrong.
pub fn steering_program(inside: bool) -> Vec<SockFilter> {
    let port_off = if inside { 20 } else { 22 };
    vec![
        /* 0 */ stmt(BPF_LD | BPF_H | BPF_ABS, SKF_NET_OFF + 6),
        /* 1 */ jump(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 12, 0), // MF or offset: FRAG (14)
        /* 2 */ stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF),
        /* 3 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 0x45, 0, 15), // options: RET0 (19)
        /* 4 */ stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 9),
        /* 5 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0), // tcp: PORT (8)
        /* 6 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 1, 0), // udp: PORT (8)
        /* 7 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 2, 11), // icmp: ICMP (10), else RET0 (19)
        /* 8 PORT */ stmt(BPF_LD | BPF_H | BPF_ABS, SKF_NET_OFF + port_off),
        /* 9 */ stmt(BPF_JMP | BPF_JA, 1), // MIX (11)
        /* 10 ICMP */ stmt(BPF_LD | BPF_H | BPF_ABS, SKF_NET_OFF + 24),
        /* 11 MIX */ stmt(BPF_ALU | BPF_MUL | BPF_K, PORT_SPREAD_MULTIPLIER),
        /* 12 */ stmt(BPF_ALU | BPF_RSH | BPF_K, 16),
        /* 13 */ stmt(BPF_RET | BPF_A, 0),
        /* 14 FRAG */ stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + 12),
        /* 15 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 16 */ stmt(BPF_LD | BPF_H | BPF_ABS, SKF_NET_OFF + 4),
        /* 17 */ stmt(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 18 */ stmt(BPF_RET | BPF_A, 0),
        /* 19 RET0 */ stmt(BPF_RET | BPF_K, 0),
    ]
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload_signal(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM request a clean stop; SIGHUP a policy reload from the config file;
/// SIGPIPE is ignored (admin clients may hang up).
pub fn install_signal_handlers() {
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
        let reload = on_reload_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        libc::signal(libc::SIGHUP, reload);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// True once per SIGHUP.
pub fn take_reload_request() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The uid of the process at the other end of a Unix stream socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain data and its size is passed; getsockopt writes at most that.
    unsafe {
        let mut cred: libc::ucred = mem::zeroed();
        let mut len = socklen_of::<libc::ucred>();
        if libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut _ as *mut libc::c_void, &mut len)
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
}

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// chmod via path (the admin socket is made root-only).
pub fn chmod(path: &str, mode: u32) -> io::Result<()> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::chmod(c.as_ptr(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking eventfd: how one worker wakes another that may be asleep in its ring.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2); the result is checked and owned.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (wakes its poller). Errors (counter saturated) are harmless.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64, as eventfd requires.
    let _ = unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

/// Resets an eventfd after a wake-up.
pub fn eventfd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64; non-blocking, so it returns at once.
    let _ = unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
}

/// A connected pair of Unix sequenced-packet sockets (message boundaries kept, file
/// descriptors passed with SCM_RIGHTS): how an old natgw process talks to its successor.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array it is given.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Lets `fd` pass to a program this process executes (clears FD_CLOEXEC).
pub fn inherit_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns, with plain integer arguments.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of a descriptor number a parent process passed (`--takeover-fd`),
/// after checking that it is an open descriptor, and marks it close-on-exec again.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is safe to ask about.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: as above; sets FD_CLOEXEC on a descriptor that is open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open and nothing else in this process owns it: the parent
    // passed it for this purpose alone, and it is adopted once, at start.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 250;

/// Sends one message with `fds` attached (at most `MAX_FDS_PER_MESSAGE`).
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    send_to_with_fds(sock, None, data, fds)
}

/// `send_with_fds` to an address (a datagram socket that is not connected).
fn send_to_with_fds(
    sock: RawFd,
    to: Option<&(libc::sockaddr_un, libc::socklen_t)>,
    data: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let fd_bytes = mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE computes a size from an integer.
    let space = unsafe { libc::CMSG_SPACE(u32::try_from(fd_bytes).unwrap_or(0)) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some((addr, len)) = to {
        msg.msg_name = addr as *const libc::sockaddr_un as *mut libc::c_void;
        msg.msg_namelen = *len;
    }
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: the control buffer is CMSG_SPACE(fd_bytes) long, so the first header and
        // its data (fd_bytes) fit; CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(u32::try_from(fd_bytes).unwrap_or(0)) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(c), fd_bytes);
        }
    }
    // SAFETY: msg points at live buffers (iov over `data`, the control buffer, the
    // address `to` borrows) for the call.
    let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message (up to `buf.len()` bytes) and the descriptors attached to it,
/// waiting at most `timeout_ms`. `Ok(None)` on timeout; a message of length 0 with no
/// descriptors means the peer closed its end.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], timeout_ms: i32) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    if !poll_readable(&[sock], timeout_ms)?.first().copied().unwrap_or(false) {
        return Ok(None);
    }
    let fd_bytes = MAX_FDS_PER_MESSAGE * mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE computes a size from an integer.
    let space = unsafe { libc::CMSG_SPACE(u32::try_from(fd_bytes).unwrap_or(0)) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: msghdr is plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space;
    // SAFETY: msg points at live, writable buffers of the sizes it names.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsg headers;
    // CMSG_FIRSTHDR/NXTHDR walk only within them, and an SCM_RIGHTS header's data holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors, each now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / mem::size_of::<RawFd>();
                for i in 0..count {
                    let mut fd: RawFd = -1;
                    std::ptr::copy_nonoverlapping(
                        data.add(i * mem::size_of::<RawFd>()),
                        &mut fd as *mut RawFd as *mut u8,
                        mem::size_of::<RawFd>(),
                    );
                    if fd >= 0 {
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off (MSG_CTRUNC)"));
    }
    Ok(Some((n as usize, fds)))
}

/// An anonymous memory file holding `data` (memfd_create), sealed against change: the
/// flow table on its way to the next process.
pub fn sealed_memfd(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Write;
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated name; the result is checked and owned below.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    f.write_all(data)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our descriptor with integer arguments.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(f))
}

/// The whole content of a memory file another process wrote (read from offset 0, whatever
/// the shared file offset says), refusing more than `max` bytes.
pub fn read_memfd(fd: OwnedFd, max: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::from(fd);
    let len = f.metadata()?.len();
    if len > max {
        return Err(io::Error::other(format!("{len} bytes of flow state, more than the {max} this gateway holds")));
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Sends `text` (and `fds`) to the service manager's notification socket
/// (`$NOTIFY_SOCKET`, sd_notify(3)): `READY=1`, `STATUS=…`, `FDSTORE=1` with descriptors
/// for its file-descriptor store. `Ok(false)` when natgw runs without one.
pub fn notify(text: &str, fds: &[RawFd]) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let path = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    // SAFETY: sockaddr_un is plain data; zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or(1);
    if path.is_empty() || path.len() >= addr.sun_path.len() {
        return Err(io::Error::other("NOTIFY_SOCKET is empty or too long"));
    }
    for (d, &b) in addr.sun_path.iter_mut().zip(&path) {
        *d = b as libc::c_char;
    }
    // `@name`: an abstract socket (a leading NUL, no terminator).
    if path[0] == b'@' {
        addr.sun_path[0] = 0;
    }
    let terminator = usize::from(path[0] != b'@');
    let len = mem::size_of::<libc::sa_family_t>() + path.len() + terminator;
    // SAFETY: a plain socket call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let to = (addr, libc::socklen_t::try_from(len).unwrap_or(0));
    send_to_with_fds(sock.as_raw_fd(), Some(&to), text.as_bytes(), fds)?;
    Ok(true)
}

/// The descriptors the service manager passed this process (`$LISTEN_FDS` from fd 3 on,
/// named by `$LISTEN_FDNAMES`, for `$LISTEN_PID`: sd_listen_fds(3)); close-on-exec from
/// here on. Empty when there are none or they are another process's.
pub fn listen_fds() -> Vec<(String, OwnedFd)> {
    let var = |k: &str| std::env::var(k).ok();
    let for_us = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let Some(n) = var("LISTEN_FDS").and_then(|n| n.parse::<i32>().ok()).filter(|_| for_us) else { return Vec::new() };
    let names = var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let mut out = Vec::new();
    for fd in 3..3 + n.clamp(0, 4096) {
        let name = names.next().unwrap_or("unknown").to_string();
        // SAFETY: fcntl with integer arguments; F_GETFD only asks whether fd is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            continue;
        }
        // SAFETY: as above, on an open descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the manager handed this descriptor to this process (LISTEN_PID): nothing
        // else in it owns fd, and it is open (checked above).
        out.push((name, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    out
}

/// A memory file mapped shared (`memfd_create`, `mmap(MAP_SHARED)`): its pages outlive
/// the process as long as someone holds the descriptor (systemd's file-descriptor store).
pub struct SharedMapping {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value; who may write where is decided
// by `split`, which hands out disjoint regions.
unsafe impl Send for SharedMapping {}
// SAFETY: through `&SharedMapping` nothing can be written (`bytes` is only reachable
// before `split`, which takes the mapping by value).
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// A new memory file of `len` bytes, zeroed (the kernel gives pages only as they are
    /// written), mapped read-write.
    pub fn create(name: &str, len: usize) -> io::Result<SharedMapping> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: c is a valid NUL-terminated name; the result is checked and owned below.
        let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone()?).set_len(len as u64)?;
        SharedMapping::map(fd, len)
    }

    /// Maps a memory file another process left (its whole length, at most `max` bytes).
    pub fn open(fd: OwnedFd, max: usize) -> io::Result<SharedMapping> {
        let len = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= max)
            .ok_or_else(|| io::Error::other(format!("a memory file of {len} bytes (at most {max} are read)")))?;
        SharedMapping::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMapping> {
        // SAFETY: a fresh shared mapping of `len` bytes of our own file; the result is
        // checked, and unmapped once in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMapping { ptr: ptr.cast(), len, fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The whole file, to read (before it is split among writers).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is our live mapping; no `&mut` to it exists (regions are
        // only made by `split`, which consumes self).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The whole file, to format it.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Hands the mapping out as disjoint writable regions (one per writer thread).
    /// Refused when two ranges overlap or one goes past the end.
    pub fn split(self, ranges: &[std::ops::Range<usize>]) -> io::Result<Vec<MappedRegion>> {
        let mut sorted: Vec<_> = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        let overlaps = sorted.windows(2).any(|w| w[0].end > w[1].start);
        if overlaps || sorted.iter().any(|r| r.start > r.end || r.end > self.len) {
            return Err(io::Error::other("memory regions overlap or run past the file"));
        }
        let map = std::sync::Arc::new(self);
        Ok(ranges.iter().map(|r| MappedRegion { map: map.clone(), start: r.start, len: r.end - r.start }).collect())
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, once; no region outlives it
        // (each holds an Arc of this value).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One writer's part of a `SharedMapping`.
pub struct MappedRegion {
    map: std::sync::Arc<SharedMapping>,
    start: usize,
    len: usize,
}

impl MappedRegion {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: start..start+len lies inside the live mapping (checked by `split`, and
        // the Arc keeps it mapped); regions never overlap and this one is borrowed mutably
        // here, so no other reference to these bytes exists.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.add(self.start), self.len) }
    }

    /// The memory file's descriptor (to store it).
    pub fn fd(&self) -> RawFd {
        self.map.fd()
    }
}

/// The system's monotonic clock (`CLOCK_MONOTONIC`, what `Instant` reads), in ms: the same
/// for every process on this boot.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which ts is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1000 + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_core::nat::owner_of_port;

    /// Runs a classic BPF program the way the kernel runs a fanout program: loads relative
    /// to the network header, the result taken modulo the group's size (0 workers: as it is,
    /// the way the kernel runs a socket filter). Only the opcodes the programs use; anything
    /// else fails the test.
    fn run(prog: &[SockFilter], ip: &[u8], workers: u32) -> u32 {
        let modulo = |v: u32| if workers == 0 { v } else { v % workers };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |k: u32, n: usize| -> u32 {
            let off = k.wrapping_sub(SKF_NET_OFF) as usize;
            ip[off..off + n].iter().fold(0u32, |v, b| v << 8 | u32::from(*b))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                c if c == BPF_LD | BPF_H | BPF_ABS => a = load(i.k, 2),
                c if c == BPF_LD | BPF_B | BPF_ABS => a = load(i.k, 1),
                c if c == BPF_LD | BPF_W | BPF_ABS => a = load(i.k, 4),
                c if c == BPF_JMP | BPF_JSET | BPF_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
                c if c == BPF_ALU | BPF_MUL | BPF_K => a = a.wrapping_mul(i.k),
                c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= i.k,
                c if c == BPF_ALU | BPF_XOR | BPF_X => a ^= x,
                c if c == BPF_MISC | BPF_TAX => x = a,
                c if c == BPF_RET | BPF_A => return modulo(a),
                c if c == BPF_RET | BPF_K => return modulo(i.k),
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    #[test]
    fn a_ring_socket_takes_tcp_udp_and_icmp_whole_and_nothing_else() {
        let prog = ring_guard_program();
        for proto in 0..=255u8 {
            let kept = run(&prog, &packet(proto, 0, 1000, 2000, 7), 0);
            let want = if matches!(proto, 1 | 6 | 17) { u32::MAX } else { 0 };
            assert_eq!(kept, want, "IP protocol {proto}");
        }
        // Fragments too: the protocol is in every fragment's header.
        assert_eq!(run(&prog, &packet(17, 0x2000 | 185, 0, 0, 0), 0), u32::MAX);
        assert_eq!(run(&prog, &packet(132, 185, 0, 0, 0), 0), 0, "an SCTP fragment");
    }

    /// An IPv4 header (no options) and the first 8 bytes of its payload.
    fn packet(proto: u8, frag: u16, sport: u16, dport: u16, icmp_ident: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0x12, 0x34];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 7, 198, 51, 100, 9]);
        if proto == 1 {
            p.extend_from_slice(&[8, 0, 0, 0]);
            p.extend_from_slice(&icmp_ident.to_be_bytes());
            p.extend_from_slice(&[0, 1]);
        } else {
            p.extend_from_slice(&sport.to_be_bytes());
            p.extend_from_slice(&dport.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p
    }

    /// The kernel puts every TCP/UDP frame and ICMP query on the worker the translator
    /// says owns it (inside: source port; outside: destination port; both: ICMP
    /// identifier), for every port and worker count; fragments go by source XOR IP ID and
    /// unclassified frames to worker 0.
    #[test]
    fn steering_program_agrees_with_owner_of_port() {
        for workers in 2..=4u32 {
            let n = workers as usize;
            for inside in [true, false] {
                let prog = steering_program(inside);
                for port in (0..=u16::MAX).step_by(7).chain([0, 1, 2, 40_000, 40_002, u16::MAX]) {
                    let other = port.rotate_left(5) ^ 0x5a5a;
                    let (sport, dport) = if inside { (port, other) } else { (other, port) };
                    for proto in [6u8, 17] {
                        let got = run(&prog, &packet(proto, 0, sport, dport, 0), workers);
                        assert_eq!(
                            got as usize,
                            owner_of_port(port, n),
                            "{workers} workers, inside={inside}, proto {proto}, port {port}"
                        );
                    }
                    let got = run(&prog, &packet(1, 0, 0, 0, port), workers);
                    assert_eq!(got as usize, owner_of_port(port, n), "icmp ident {port}");
                }
                let frag = packet(17, 0x2000, 1, 2, 0);
                let expect = (u32::from_be_bytes([10, 0, 0, 7]) ^ 0x1234) % workers;
                assert_eq!(run(&prog, &frag, workers), expect);
                assert_eq!(run(&prog, &packet(47, 0, 1, 2, 0), workers), 0, "GRE goes to worker 0");
                let mut options = packet(6, 0, 1, 2, 0);
                options[0] = 0x46;
                assert_eq!(run(&prog, &options, workers), 0, "IP options go to worker 0");
            }
        }
    }
}
