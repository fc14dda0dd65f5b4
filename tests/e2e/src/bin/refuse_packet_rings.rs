//! Runs a program under a seccomp filter that makes the kernel refuse every PACKET_MMAP
//! receive ring: `setsockopt(fd, SOL_PACKET, PACKET_RX_RING, …)` fails with EPERM, as it
//! would in a container whose runtime filters it, and every other call passes. The
//! end-to-end tests run natgw under it to see a refused ring fall back to the socket path
//! (`rx_ring.rs`). The filter is inherited across `exec` and by every thread.
//!
//! usage: refuse_packet_rings PROGRAM [ARGS...]

use std::ffi::CString;

// <linux/seccomp.h>, <linux/filter.h>, <linux/audit.h>, <linux/if_packet.h>
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SOL_PACKET: u32 = 263;
const PACKET_RX_RING: u32 = 5;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
// Offsets in `struct seccomp_data`: nr, arch, instruction_pointer, args[6] (the low half
// of each argument first on a little-endian machine).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG1: u32 = 16 + 8;
const ARG2: u32 = 16 + 2 * 8;

/// `AUDIT_ARCH_X86_64` or `AUDIT_ARCH_AARCH64`: the calls the filter looks at.
#[cfg(target_arch = "x86_64")]
const ARCH_HERE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const ARCH_HERE: u32 = 0xc000_00b7;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

/// Jumps over `skip` instructions unless the accumulator is `k`.
fn unless_eq(k: u32, skip: u8) -> libc::sock_filter {
    libc::sock_filter { code: BPF_JEQ_K, jt: 0, jf: skip, k }
}

fn main() {
    let args: Vec<CString> =
        std::env::args().skip(1).map(|a| CString::new(a).expect("arguments hold no NUL byte")).collect();
    if args.is_empty() {
        eprintln!("usage: refuse_packet_rings PROGRAM [ARGS...]");
        std::process::exit(2);
    }
    let setsockopt = u32::try_from(libc::SYS_setsockopt).expect("a syscall number fits u32");
    let errno = u32::try_from(libc::EPERM).expect("EPERM fits u32");
    // Any other architecture's calls, and every call but this one, are allowed.
    let prog = [
        stmt(BPF_LD_W_ABS, ARCH),
        unless_eq(ARCH_HERE, 7),
        stmt(BPF_LD_W_ABS, NR),
        unless_eq(setsockopt, 5),
        stmt(BPF_LD_W_ABS, ARG1),
        unless_eq(SOL_PACKET, 3),
        stmt(BPF_LD_W_ABS, ARG2),
        unless_eq(PACKET_RX_RING, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | errno),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).expect("ten instructions"),
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0, "prctl(PR_SET_NO_NEW_PRIVS): {}", std::io::Error::last_os_error());
    // SAFETY: fprog points at `prog`, which lives until after the call; the kernel copies
    // the program.
    let r = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) };
    assert_eq!(r, 0, "prctl(PR_SET_SECCOMP): {}", std::io::Error::last_os_error());
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of pointers to NUL-terminated strings that
    // outlive the call (execvp returns only on failure).
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    eprintln!("refuse_packet_rings: exec {:?}: {}", args[0], std::io::Error::last_os_error());
    std::process::exit(127);
}
