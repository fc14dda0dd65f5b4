//! Small clients a test runs inside a namespace (`Netns::enter`): UDP exchanges, TCP
//! probes, and raw frames on a packet socket for input no socket API would send.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| panic!("{s} is not ip:port"))
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|_| panic!("{s} is not an IPv4 address"))
}

/// Sends one datagram from `local` (port 0: any) to `to` and returns the first answer.
pub fn udp_exchange(local_port: u16, to: &str, payload: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port))?;
    s.set_read_timeout(Some(timeout))?;
    s.send_to(payload, sa(to))?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// What a new TCP connection met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connected, and one byte sent came back.
    Open,
    /// Refused by a RST.
    Refused,
    /// Anything else: the error.
    Other(String),
}

/// Opens a connection to an echo service, sends a byte, expects it back.
pub fn tcp_echo_probe(to: &str, timeout: Duration) -> Probe {
    let mut s = match TcpStream::connect_timeout(&sa(to), timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Refused,
        Err(e) => return Probe::Other(e.to_string()),
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut b = [0u8; 1];
    match s.write_all(b"x").and_then(|_| s.read_exact(&mut b)) {
        Ok(()) if &b == b"x" => Probe::Open,
        Ok(()) => Probe::Other(format!("echoed {b:?}")),
        Err(e) => Probe::Other(e.to_string()),
    }
}

/// A UDP socket whose datagrams leave without DF (IP_PMTUDISC_DONT), so that routers
/// (natgw among them) may fragment them.
pub fn udp_without_df() -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    set_int_option(&s, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DONT)?;
    Ok(s)
}

/// The size of a C structure as the socket calls take it.
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

#[allow(unsafe_code)]
fn set_int_option(s: &impl AsRawFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to an int that lives for
    // the call and its exact size.
    let r =
        unsafe { libc::setsockopt(s.as_raw_fd(), level, name, std::ptr::from_ref(&value).cast(), socklen_of::<i32>()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A packet socket bound to one interface: sends whole Ethernet frames as given.
pub struct RawLink {
    fd: OwnedFd,
}

impl RawLink {
    /// Opens it on `interface` of the calling thread's namespace.
    #[allow(unsafe_code)]
    pub fn open(interface: &str) -> std::io::Result<RawLink> {
        let name = std::ffi::CString::new(interface).map_err(std::io::Error::other)?;
        // SAFETY: if_nametoindex reads the NUL-terminated name we own.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields we need are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::sa_family_t::try_from(libc::AF_PACKET).unwrap_or(0);
        addr.sll_ifindex = index as i32;
        // SAFETY: bind(2) with a sockaddr_ll that lives for the call and its exact size.
        let r =
            unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), socklen_of::<libc::sockaddr_ll>()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawLink { fd })
    }

    #[allow(unsafe_code)]
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: send(2) reads `frame.len()` bytes from a slice we hold for the call.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// The MAC address of `interface` in namespace `ns`, as 6 bytes.
pub fn mac_of(ns: &crate::Netns, interface: &str) -> [u8; 6] {
    let out = ns.ip_output(&["-j", "link", "show", "dev", interface]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j link: {e}: {out}"));
    let text = v[0]["address"].as_str().unwrap_or_else(|| panic!("no address for {interface}: {out}"));
    parse_mac(text)
}

/// The MAC address `ns` has learned for `addr` (its neighbour table), if any.
pub fn neighbour_mac(ns: &crate::Netns, addr: &str) -> Option<[u8; 6]> {
    let out = ns.ip_output(&["-j", "neigh", "show", addr]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.get(0)?.get("lladdr")?.as_str().map(parse_mac)
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (i, b) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(b, 16).unwrap_or(0);
    }
    mac
}
