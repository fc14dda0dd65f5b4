//! Runs a program under a seccomp filter that makes the kernel refuse every PACKET_MMAP
//! receive ring: `setsockopt(fd, SOL_PACKET, PACKET_RX_RING, …)` fails with EPERM, as it
//! would in a container whose runtime filters it, and every other call passes. The
//! end-to-end tests run natgw under it to see a refused ring fall back to the socket path
//! (`rx_ring.rs`). The filter is inherited across `exec` and by every thread.
//!
//! usage: refuse_packet_rings PROGRAM [ARGS...]

use std::ffi::CString;

use natgw_io::sys::{jump, stmt, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};

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

fn main() {
    let args: Vec<CString> =
        std::env::args().skip(1).map(|a| CString::new(a).expect("arguments hold no NUL byte")).collect();
    if args.is_empty() {
        eprintln!("usage: refuse_packet_rings PROGRAM [ARGS...]");
        std::process::exit(2);
    }
    let setsockopt = u32::try_from(libc::SYS_setsockopt).expect("a syscall number fits u32");
    let errno = u32::try_from(libc::EPERM).expect("EPERM fits u32");
    let sol_packet = u32::try_from(libc::SOL_PACKET).expect("SOL_PACKET fits u32");
    let rx_ring = u32::try_from(libc::PACKET_RX_RING).expect("PACKET_RX_RING fits u32");
    let load = BPF_LD | BPF_W | BPF_ABS;
    // Jumps over `skip` instructions, to the last (allow), unless the word loaded is `k`.
    let unless_eq = |k: u32, skip: u8| jump(BPF_JMP | BPF_JEQ | BPF_K, k, 0, skip);
    // Any other architecture's calls, and every call but this one, are allowed.
    let prog = [
        stmt(load, ARCH),
        unless_eq(ARCH_HERE, 7),
        stmt(load, NR),
        unless_eq(setsockopt, 5),
        stmt(load, ARG1),
        unless_eq(sol_packet, 3),
        stmt(load, ARG2),
        unless_eq(rx_ring, 1),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | errno),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).expect("ten instructions"),
        // `SockFilter` is `struct sock_filter`, field for field (`repr(C)`).
        filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
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
