//! Hostile traffic, as scenarios that run the same against natgw and against the kernel's
//! own NAT (`Topology::kernel_nat`): each sends a class of attack with real tools (hping3,
//! scapy, raw sockets) while real clients go on with their connections, and says what
//! survived. The tests (`tests/hostile.rs`) assert natgw's outcome and counters; the
//! comparison (`src/bin/hostile_compare.rs`) prints both columns for the README.
//!
//! Nothing here reads a natgw counter: a scenario sees only what a user would, so that
//! the kernel can be measured by the same code.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::{mac_of, sa, udp_exchange, RawLink};
use crate::{Capture, Netns, Topology};

/// What a scenario saw: whether what must survive did, and the numbers behind it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub held: bool,
    /// The scenario's main number: fetches or exchanges that succeeded, errors that
    /// arrived translated, entries created, milliseconds to follow a failover.
    pub measured: u64,
    /// One line for a table cell: what happened to the users' traffic.
    pub text: String,
}

/// The scapy scripts (tests/e2e/tools), run with Debian's python3 (which has python3-scapy).
fn tool(name: &str) -> String {
    crate::root().join("tests/e2e/tools").join(name).display().to_string()
}

fn scapy(ns: &Netns, script: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = ns.cmd("/usr/bin/python3");
    cmd.arg(tool(script)).args(args);
    let out = cmd.output().unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(out.status.success(), "{script} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A TCP echo server on the internet side, for one connection; says who connected.
fn echo_server(
    inet: &Netns,
    addr: &'static str,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<SocketAddr>) {
    let listener = inet.enter(|| TcpListener::bind(addr)).unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    let h = inet.spawn(move || {
        let Ok((mut c, peer)) = listener.accept() else { return };
        let _ = tx.send(peer);
        let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (h, rx)
}

/// Sends `line` and reads for up to `wait`: exactly `line` back is a live connection
/// that nobody injected into.
fn echoes_exactly(c: &mut TcpStream, line: &[u8], wait: Duration) -> Result<(), String> {
    c.write_all(line).map_err(|e| format!("write: {e}"))?;
    let _ = c.set_read_timeout(Some(wait));
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 256];
    while got.len() < line.len() && Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {got:?}")),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e} after {got:?}")),
        }
    }
    // Anything more that arrives soon after is injected too.
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    if let Ok(n) = c.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    if got == line {
        Ok(())
    } else {
        Err(format!("read {:?}", String::from_utf8_lossy(&got)))
    }
}

/// Which side of the gateway a blind sender is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Off path on the internet, spoofing the server (the external address and port the
    /// server saw are all it needs).
    Outside,
    /// A careless or compromised host on the inside link, spoofing the client.
    Inside,
}

/// Sends `count` blind TCP segments as Ethernet frames on `iface` of `ns` to `gw_mac`,
/// `src` to `dst`: each a random class (RST, RST+ACK, FIN+ACK, or ACK with 8 bytes of
/// data) with random sequence, acknowledgment and window over the whole 32-bit space
/// (seeded: every run sends the same). `per_ms`: frames each millisecond, or as fast as
/// the link takes them (`None`). Returns the frames sent and the rate achieved.
pub fn spray_blind(
    ns: &Netns,
    iface: &'static str,
    gw_mac: [u8; 6],
    (src, dst): (SocketAddr, SocketAddr),
    count: u32,
    per_ms: Option<u32>,
) -> (u32, f64) {
    let src_mac = mac_of(ns, iface);
    ns.enter(move || {
        let link = RawLink::open(iface).expect("raw socket");
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else { panic!("IPv4 only") };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut sent, t0) = (0u32, Instant::now());
        for i in 0..count {
            let r = next();
            let [s0, s1, s2, s3, a0, a1, a2, a3] = r.to_be_bytes();
            let flags = [0x04, 0x14, 0x11, 0x18][(next() % 4) as usize];
            let payload: &[u8] = if flags == 0x18 { b"INJECTED" } else { b"" };
            let seg = natgw_testkit::tcp_segment_at(
                *src.ip(),
                src.port(),
                *dst.ip(),
                dst.port(),
                flags,
                (u32::from_be_bytes([s0, s1, s2, s3]), u32::from_be_bytes([a0, a1, a2, a3])),
                payload,
            );
            let mut frame =
                natgw_testkit::ipv4_frame(*src.ip(), *dst.ip(), 6, 64, u16::from_be_bytes([s2, a2]), 0, &seg);
            frame[..6].copy_from_slice(&gw_mac);
            frame[6..12].copy_from_slice(&src_mac);
            if link.send(&frame).is_ok() {
                sent += 1;
            }
            if let Some(n) = per_ms {
                if i % n.max(1) == n.max(1) - 1 {
                    let due = t0 + Duration::from_micros(u64::from(i / n.max(1) + 1) * 1000);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
            }
        }
        (sent, f64::from(sent) / t0.elapsed().as_secs_f64())
    })
}

/// Blind segments at an idle connection (cli1 to an echo server), `count` of them from
/// `from` at `per_ms` a millisecond (or flat out): it must stay open, nothing injected.
pub fn blind_segments(t: &Topology, count: u32, from: From, per_ms: Option<u32>) -> Outcome {
    let (server, peer) = echo_server(&t.inet, "203.0.113.80:9000");
    let mut c =
        t.cli1.enter(|| TcpStream::connect_timeout(&sa("203.0.113.80:9000"), Duration::from_secs(5))).expect("connect");
    echoes_exactly(&mut c, b"before\n", Duration::from_secs(3)).expect("the connection works");
    let ext = peer.recv_timeout(Duration::from_secs(5)).expect("the server saw the connection");
    let (sent, rate) = match from {
        From::Outside => {
            spray_blind(&t.inet, "i0", mac_of(&t.gw, "out0"), (sa("203.0.113.80:9000"), ext), count, per_ms)
        }
        From::Inside => {
            let client = c.local_addr().expect("the client's address");
            spray_blind(&t.cli1, "c1", mac_of(&t.gw, "in1"), (client, sa("203.0.113.80:9000")), count, per_ms)
        }
    };
    let after = echoes_exactly(&mut c, b"after\n", Duration::from_secs(3));
    drop(c);
    let _ = server.join();
    let side = if from == From::Outside { "outside" } else { "inside" };
    match after {
        Ok(()) => Outcome {
            held: true,
            measured: u64::from(sent),
            text: format!("kept open, nothing injected ({sent} from the {side} at {rate:.0}/s)"),
        },
        Err(e) => {
            Outcome { held: false, measured: 0, text: format!("lost: {e} ({sent} from the {side} at {rate:.0}/s)") }
        }
    }
}

/// An inside host scans (hping3: `probes` UDP datagrams to random addresses and ports at
/// ~20 000/s, never answered) while a host on the other subnet fetches a page over and
/// over. Every fetch must succeed.
pub fn scan_while_another_subnet_connects(t: &Topology, probes: u32) -> Outcome {
    let mut hping = t.cli1.cmd("hping3");
    hping
        .args(["--udp", "--rand-dest", "-I", "c1", "-i", "u50", "-c", &probes.to_string(), "-p", "++1", "203.0.113.x"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let sent_before = tx_packets(&t.cli1, "c1");
    let mut scan = hping.spawn().expect("hping3 runs");
    // The connections start once the scan is well under way: its first 8000 probes are
    // out (on the scanner's own link, whatever the gateway did with them).
    let scanning = crate::wait_until(Duration::from_secs(10), || tx_packets(&t.cli1, "c1") >= sent_before + 8000);
    assert!(scanning, "hping3 never sent 8000 probes");
    let (mut ok, mut tried) = (0u32, 0u32);
    let t0 = Instant::now();
    while tried < 50 || (scan.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(30)) {
        tried += 1;
        if t.cli2.run("curl", &["-s", "-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]).is_ok() {
            ok += 1;
        }
    }
    let _ = scan.kill();
    let _ = scan.wait();
    Outcome {
        held: ok == tried,
        measured: u64::from(ok),
        text: format!("{ok}/{tried} connections from the other subnet"),
    }
}

/// Sends fragments from random outside sources to `dst` at about `rate` a second until
/// told to stop: first fragments that never complete, and later fragments of datagrams
/// that never start. Returns how many it sent.
fn fragment_flood(
    inet: &Netns,
    gw_mac: [u8; 6],
    dst: Ipv4Addr,
    rate: u32,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    let src_mac = mac_of(inet, "i0");
    inet.spawn(move || {
        let link = RawLink::open("i0").expect("raw socket on i0");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut sent = 0u64;
        let per_ms = u64::from(rate / 1000).max(1);
        let payload = [0x66u8; 1000];
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..per_ms {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let [a, b, c, d, e, f, ..] = x.to_be_bytes();
                // Public-looking sources (never 10/8 or the outside subnet).
                let src = Ipv4Addr::new(100 + a % 100, b, c, d.max(1));
                let ident = u16::from_be_bytes([e, f]);
                let flags_frag = if x & 1 == 0 { natgw_testkit::MF } else { natgw_testkit::MF | 185 };
                let mut frame = natgw_testkit::ipv4_frame(src, dst, 17, 64, ident, flags_frag, &payload);
                frame[..6].copy_from_slice(&gw_mac);
                frame[6..12].copy_from_slice(&src_mac);
                if link.send(&frame).is_ok() {
                    sent += 1;
                }
            }
            progress.store(sent, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    })
}

/// While fragments flood in from random sources, the inside host pings with 3000 bytes
/// (ping -s 3000: fragmented both ways) and exchanges 6000-byte UDP datagrams with the
/// echo service. Every one must come back.
pub fn fragment_flood_while_fragmented_traffic(t: &Topology, rate: u32) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let gw_mac = mac_of(&t.gw, "out0");
    let flood = fragment_flood(&t.inet, gw_mac, Ipv4Addr::new(198, 51, 100, 10), rate, stop.clone(), progress.clone());
    // The real traffic starts once the flood has sent 5000 fragments: far more than a
    // 4 MiB budget of 128-byte entries holds, twice over for natgw's small test budget.
    let flooding = crate::wait_until(Duration::from_secs(10), || progress.load(Ordering::Relaxed) >= 5000);
    assert!(flooding, "the flood never sent 5000 fragments");
    let ping = t.cli1.output("ping", &["-n", "-q", "-c", "10", "-i", "0.2", "-W", "2", "-s", "3000", "203.0.113.80"]);
    let text = String::from_utf8_lossy(&ping.stdout);
    let pings: u32 = text
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" received").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0);
    let big = vec![0x5au8; 6000];
    let udp = (0..10)
        .filter(|_| {
            t.cli1.enter(|| udp_exchange(0, "203.0.113.7:7", &big, Duration::from_secs(2))).is_ok_and(|r| r == big)
        })
        .count();
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap_or(0);
    let udp = u32::try_from(udp).unwrap_or(0);
    Outcome {
        held: pings == 10 && udp == 10,
        measured: u64::from(pings + udp),
        text: format!("{pings}/10 pings of 3000 B, {udp}/10 UDP exchanges of 6000 B ({sent} flood fragments)"),
    }
}

/// Inside routers (any address of the inside subnet but the host's) send ICMP errors about
/// the inside host's flow: none may leave with a private source.
pub fn icmp_errors_from_inside_routers(t: &Topology, count: u16) -> Outcome {
    // The flow the errors are about: cli1:40404 ↔ the echo service.
    t.cli1.enter(|| udp_exchange(40404, "203.0.113.7:7", b"flow", Duration::from_secs(2))).expect("the flow works");
    let capture = Capture::start(&t.inet, "i0", "icmp", &t.path("inside-errors.pcap"));
    let (gw_mac, host_mac) = (mac_of(&t.gw, "in1"), mac_of(&t.cli1, "c1"));
    let (host, server) = (Ipv4Addr::new(10, 10, 1, 10), Ipv4Addr::new(203, 0, 113, 7));
    // The packet they report: the echo's answer on its way to the host.
    let answer = natgw_testkit::udp_datagram(server, 7, host, 40404, b"answer", true);
    let quoted = natgw_testkit::ipv4_frame(server, host, 17, 63, 7, 0, &answer);
    let sent = t.cli1.enter(|| {
        let link = RawLink::open("c1").expect("raw socket on c1");
        let kinds: [(u8, u8); 5] = [(11, 0), (3, 0), (3, 1), (3, 3), (12, 0)];
        let mut sent = 0u16;
        for i in 0..count {
            let router = Ipv4Addr::new(10, 10, 1, 20 + u8::try_from(i % 200).unwrap_or(0));
            let (ty, code) = kinds[usize::from(i) % kinds.len()];
            let msg = natgw_testkit::icmp_message(ty, code, [0; 4], &quoted[14..]);
            let mut frame = natgw_testkit::ipv4_frame(router, server, 1, 64, i, 0, &msg);
            frame[..6].copy_from_slice(&gw_mac);
            frame[6..12].copy_from_slice(&host_mac);
            if link.send(&frame).is_ok() {
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sent
    });
    // Every error that is coming is at the remote within moments; stop once all are.
    capture.wait_for(usize::from(sent), Duration::from_secs(2));
    let lines = capture.stop();
    let private = lines.iter().filter(|l| l.contains(" IP 10.")).count();
    let external = lines.iter().filter(|l| l.contains(" IP 198.51.100.")).count();
    Outcome {
        held: private == 0,
        measured: external as u64,
        text: format!("{private} left with a private source, {external} translated, of {sent}"),
    }
}

/// A spoofer on the outside link claims the upstream router's address for itself
/// (gratuitous ARP every 200 ms) while the real router still answers. Traffic must keep
/// going to the real router.
pub fn spoofed_router_arp(t: &Topology) -> Outcome {
    // Resolved and in use before the spoofing starts.
    t.cli1.run("curl", &["-s", "-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]).expect("curl before");
    let inet = t.inet.clone();
    let seen = Capture::start(&t.gw, "out0", "arp and ether src 02:66:66:66:66:66", &t.path("spoof.pcap"));
    let spoof = std::thread::spawn(move || {
        scapy(&inet, "arp.py", &["i0", "spoof", "198.51.100.1", "02:66:66:66:66:66", "20", "0.2"])
    });
    // The fetches start once the gateway has had both forms of the lie (a request and a
    // reply claiming the router).
    assert!(seen.wait_for(2, Duration::from_secs(5)) >= 2, "the spoofed ARP never reached the gateway");
    drop(seen.stop());
    let ok = (0..10)
        .filter(|_| t.cli1.run("curl", &["-s", "-m", "1", "-o", "/dev/null", "http://203.0.113.80/ip"]).is_ok())
        .count();
    let _ = spoof.join();
    Outcome { held: ok == 10, measured: ok as u64, text: format!("{ok}/10 fetches during the spoofing") }
}

/// The upstream router fails over to a new MAC address and announces it (gratuitous ARP,
/// as keepalived does). Traffic must follow; returns how long it took.
pub fn router_failover(t: &Topology) -> Outcome {
    t.cli1.run("curl", &["-s", "-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]).expect("curl before");
    let new_mac = "02:fa:11:0e:00:01";
    t.inet.ip(&["link", "set", "i0", "address", new_mac]);
    let t0 = Instant::now();
    scapy(&t.inet, "arp.py", &["i0", "announce", "198.51.100.1", new_mac, "5", "0.1"]);
    let mut recovered = None;
    while t0.elapsed() < Duration::from_secs(10) {
        // Short attempts: the time to follow is measured to within about 200 ms.
        if t.cli1.run("curl", &["-s", "-m", "0.2", "-o", "/dev/null", "http://203.0.113.80/ip"]).is_ok() {
            recovered = Some(t0.elapsed());
            break;
        }
    }
    match recovered {
        Some(d) => Outcome {
            held: d < Duration::from_secs(3),
            measured: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            text: format!("traffic followed in {} ms", d.as_millis()),
        },
        None => Outcome { held: false, measured: u64::MAX, text: "traffic did not follow within 10 s".into() },
    }
}

/// 244 on-link hosts (10.10.1.11-254) ask for the gateway's address, each once. Returns
/// the neighbour entries that cost, as `entries()` reports them before and after.
pub fn arp_askers(t: &Topology, entries: impl Fn() -> usize) -> Outcome {
    let before = entries();
    // The answers, to the askers' own MACs (02:a5:00:00:…).
    let answers =
        Capture::start(&t.cli1, "c1", "arp[6:2] = 2 and ether[0:4] = 0x02a50000", &t.path("arp-answers.pcap"));
    scapy(&t.cli1, "arp.py", &["c1", "askers", "10.10.1.1", "11", "254"]);
    // An entry, if one is made, is made as the question is answered: count once every
    // asker has its answer.
    let answered = answers.wait_for(244, Duration::from_secs(5));
    drop(answers.stop());
    let grew = entries().saturating_sub(before);
    Outcome {
        held: grew == 0 && answered >= 244,
        measured: grew as u64,
        text: format!("{grew} neighbour entries for 244 askers ({answered} answered)"),
    }
}

/// The gateway namespace kernel's neighbour entries on the inside link (the kernel NAT's
/// cache, for `arp_askers`).
pub fn kernel_neighbours(gw: &Netns) -> usize {
    let out = gw.ip_output(&["-j", "neigh", "show", "dev", "in1"]);
    serde_json::from_str::<serde_json::Value>(&out).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0)
}

/// Packets `dev` in `ns` has sent (its kernel counter).
fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    let out = ns.ip_output(&["-s", "-j", "link", "show", "dev", dev]);
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v.get(0)?.get("stats64")?.get("tx")?.get("packets")?.as_u64())
        .unwrap_or(0)
}

/// The config the hostile scenarios run natgw with: the demo's addresses without its
/// policies or telemetry, like a plain masquerade, and a table of `max_flows`.
pub fn plain_config(t: &Topology, max_flows: u32) -> crate::GatewayConfig {
    let mut cfg = t.demo_config();
    cfg.remove("policy").remove("otlp").remove("pool");
    cfg.set("flow_log.enabled", false);
    cfg.set("nat.max_flows", i64::from(max_flows));
    cfg
}
