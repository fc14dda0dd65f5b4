//! Load a test runs through the gateway while something happens to it (a policy swap, an
//! upgrade, a failover): a TCP echo service and idle connections to it, an iperf3 server,
//! a steady UDP echo stream.

use std::collections::HashSet;
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::sa;
use crate::wait::secs;
use crate::{eventually, wait_until, Netns, Topology};

/// socat echoing TCP on 203.0.113.80:`port` in the internet namespace, once it listens.
pub fn start_tcp_echo(t: &mut Topology, port: u16) {
    let mut cmd = t.inet.cmd("socat");
    cmd.args([format!("TCP-LISTEN:{port},bind=203.0.113.80,fork,reuseaddr"), "EXEC:cat".into()]);
    t.daemon(&format!("socat-{port}"), cmd);
    let inet = t.inet.clone();
    let addr = format!("203.0.113.80:{port}");
    eventually(secs(5), &format!("socat to listen on {addr}"), || {
        inet.enter(|| TcpStream::connect_timeout(&sa(&addr), Duration::from_millis(200)).is_ok())
    });
}

/// `n` idle connections from `ns` to the TCP echo service on `port` (an SSH session, a
/// database pool), each with a 3 s read timeout.
pub fn idle_connections(ns: &Netns, port: u16, n: usize) -> Vec<TcpStream> {
    let addr = format!("203.0.113.80:{port}");
    ns.enter(|| {
        (0..n)
            .map(|i| {
                let s = TcpStream::connect_timeout(&sa(&addr), secs(2))
                    .unwrap_or_else(|e| panic!("idle connection {i} to {addr}: {e}"));
                s.set_read_timeout(Some(secs(3))).expect("timeout");
                s
            })
            .collect()
    })
}

/// Of `flows` (what `natgw flows` lists), the flow of each idle connection from cli1
/// (10.10.1.10) by its source port, to the TCP echo service on `port`; `None` where the
/// gateway has none.
pub fn idle_flows<'a>(
    flows: &'a [natgw::admin::FlowEntry],
    ports: &[u16],
    port: u16,
) -> Vec<Option<&'a natgw::admin::FlowEntry>> {
    ports
        .iter()
        .map(|p| {
            let key = format!("10.10.1.10:{p} -> 203.0.113.80:{port}");
            flows.iter().find(|f| f.original == key)
        })
        .collect()
}

/// One byte out and back on each connection: what failed, by connection.
pub fn echo_all(conns: &mut [TcpStream], byte: u8) -> Vec<String> {
    use std::io::{Read, Write};
    let mut failures = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        if let Err(e) = c.write_all(&[byte]).and_then(|()| c.read_exact(&mut b)) {
            failures.push(format!("connection {i}: {e}"));
        } else if b[0] != byte {
            failures.push(format!("connection {i}: echoed {b:?}"));
        }
    }
    failures
}

/// An iperf3 server on 203.0.113.80:5201, once it listens.
pub fn start_iperf3_server(t: &mut Topology) {
    let mut cmd = t.inet.cmd("iperf3");
    cmd.args(["-s", "-B", "203.0.113.80", "-p", "5201"]);
    t.daemon("iperf3-server", cmd);
    let inet = t.inet.clone();
    eventually(secs(5), "iperf3 to listen", || {
        inet.enter(|| TcpStream::connect_timeout(&sa("203.0.113.80:5201"), Duration::from_millis(200)).is_ok())
    });
}

/// A steady UDP echo stream, 100 datagrams a second for `seconds` from `ns`: `join`
/// returns (sent, lost), waiting up to a second after the last for the stragglers;
/// `echoed` says how many have come back so far (to wait for it to be flowing).
pub struct UdpStream {
    handle: std::thread::JoinHandle<(u64, u64)>,
    echoed: Arc<AtomicU64>,
}

impl UdpStream {
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Waits until `n` datagrams have come back (the stream is flowing through).
    #[track_caller]
    pub fn wait_echoed(&self, n: u64) {
        eventually(secs(5), &format!("{n} datagrams of the UDP stream to echo"), || self.echoed() >= n);
    }

    pub fn join(self) -> std::thread::Result<(u64, u64)> {
        self.handle.join()
    }
}

pub fn udp_stream(ns: &Netns, seconds: u64) -> UdpStream {
    let echoed = Arc::new(AtomicU64::new(0));
    let echoed2 = echoed.clone();
    let handle = ns.spawn(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        s.connect("203.0.113.7:7").expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let rx = s.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let (stop2, got2) = (stop.clone(), got.clone());
        let reader = std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut b) {
                    if let Some(i) = std::str::from_utf8(&b[..n]).ok().and_then(|t| t.parse::<u64>().ok()) {
                        let mut got = got2.lock().expect("lock");
                        got.insert(i);
                        echoed2.store(got.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        let n = seconds * 100;
        let start = Instant::now();
        for i in 0..n {
            let _ = s.send(i.to_string().as_bytes());
            let next = start + Duration::from_millis((i + 1) * 10);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        wait_until(secs(1), || got.lock().expect("lock").len() as u64 == n);
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let received = got.lock().expect("lock").len() as u64;
        (n, n - received)
    });
    UdpStream { handle, echoed }
}

/// `n` UDP flows from one socket of `ns` (one mapping): to ports 1024.. of 203.0.113.7,
/// then of the next server addresses, about 200 000 a second. The servers' answers
/// (port unreachable) go back through natgw.
pub fn udp_flows(ns: &Netns, n: u64) {
    ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        for i in 0..n {
            let port = 1024 + (i % 60_000) as u16;
            let host = format!("203.0.113.{}:{port}", 7 + (i / 60_000) * 73);
            let _ = s.send_to(b"x", host.as_str());
            if i % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}
