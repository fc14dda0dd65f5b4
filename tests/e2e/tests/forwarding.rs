//! Traffic through the gateway: TCP, UDP and ICMP from both subnets, the addresses the
//! far side sees, mappings, expiry, unsolicited and malformed input.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use natgw_e2e::net::{mac_of, neighbour_mac, sa, udp_exchange, RawLink};
use natgw_e2e::topology::wait_counter;
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, Capture, Topology};

/// "a.b.c.d:port" as natgw's external side: one of the demo's two external addresses.
fn external(seen: &str) -> Option<(Ipv4Addr, u16)> {
    let (a, p) = seen.trim().rsplit_once(':')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let p: u16 = p.parse().ok()?;
    [Ipv4Addr::new(198, 51, 100, 10), Ipv4Addr::new(198, 51, 100, 11)].contains(&a).then_some((a, p))
}

#[test]
fn curl_sees_the_external_address() {
    let t = Topology::demo();
    let a = t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl from cli1");
    let b = t.cli2.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl from cli2");
    eprintln!("server saw cli1 as {}, cli2 as {}", a.trim(), b.trim());
    assert!(external(&a).is_some(), "cli1 seen as {a:?}");
    assert!(external(&b).is_some(), "cli2 seen as {b:?}");
    assert!(!t.nginx_access_log().lines().any(|l| l.starts_with("10.10.")), "a private address reached the server log");
    let got = t
        .cli1
        .run(
            "curl",
            &[
                "-s",
                "-m",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                "http://203.0.113.80/10M.bin",
            ],
        )
        .expect("10 MB download");
    assert_eq!(got, "200 10485760", "10 MB download");
}

#[test]
fn udp_echo() {
    let t = Topology::demo();
    let r = t.cli1.enter(|| udp_exchange(0, "203.0.113.7:7", b"ping-from-cli1", secs(2))).expect("echo");
    assert_eq!(r, b"ping-from-cli1");
    let seen = t.echo_log();
    assert!(!seen.is_empty(), "the echo server saw nothing");
    for (peer, _) in &seen {
        assert!(external(&peer.to_string()).is_some(), "echo server saw {peer}, not an external address");
    }
}

#[test]
fn ping_through_and_to_the_gateway() {
    let t = Topology::demo();
    let ping = |ns: &natgw_e2e::Netns, to: &str, n: &str| ns.run("ping", &["-c", n, "-i", "0.2", "-W", "2", to]);
    ping(&t.cli1, "203.0.113.80", "3").expect("ping through natgw");
    ping(&t.cli1, "10.10.1.1", "2").expect("ping natgw's inside address");
    ping(&t.cli2, "10.10.2.1", "2").expect("ping natgw's second inside address");
    ping(&t.inet, "198.51.100.10", "2").expect("ping natgw's external address");
    ping(&t.inet, "198.51.100.11", "2").expect("ping natgw's second external address");
}

#[test]
fn traceroute_shows_the_gateway_hop() {
    let t = Topology::demo();
    let out = t.cli1.output("tracepath", &["-n", "-m", "5", "203.0.113.80"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{}", text.lines().take(5).collect::<Vec<_>>().join("\n"));
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("1:") && l.split_whitespace().nth(1) == Some("10.10.1.1")),
        "tracepath hop 1 is not natgw (10.10.1.1):\n{text}"
    );
    assert!(text.contains("reached"), "tracepath did not reach the destination:\n{text}");
    let out = t.cli1.output("traceroute", &["-n", "-q", "1", "-w", "2", "-m", "4", "203.0.113.80"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines().any(|l| l.split_whitespace().take(2).eq(["1", "10.10.1.1"])),
        "traceroute hop 1 is not natgw:\n{text}"
    );
}

#[test]
fn same_source_port_gets_distinct_mappings() {
    let t = Topology::demo();
    let a = t.cli1.enter(|| udp_exchange(5555, "203.0.113.7:7", b"one", secs(2))).expect("cli1");
    let b = t.cli2.enter(|| udp_exchange(5555, "203.0.113.7:7", b"two", secs(2))).expect("cli2");
    assert_eq!((a.as_slice(), b.as_slice()), (&b"one"[..], &b"two"[..]));
    let mut seen: Vec<SocketAddr> = t.echo_log().into_iter().map(|(p, _)| p).collect();
    seen.sort();
    seen.dedup();
    eprintln!("echo server saw {seen:?}");
    assert_eq!(seen.len(), 2, "two inside hosts with source port 5555 need two external endpoints");
}

#[test]
fn thousand_parallel_flows() {
    const N: usize = 1000;
    let t = Topology::demo();
    let replies = t.cli1.enter(|| {
        // All N connections are opened, then all N asked, then all N read: every one is
        // open at the same time.
        let mut conns: Vec<TcpStream> = (0..N)
            .map(|i| {
                TcpStream::connect_timeout(&sa("203.0.113.80:80"), secs(10))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"))
            })
            .collect();
        for c in &mut conns {
            c.write_all(b"GET /ip HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        }
        conns
            .iter_mut()
            .map(|c| {
                c.set_read_timeout(Some(secs(30))).expect("timeout");
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&got).into_owned();
                text.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_string()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
    });
    let answered = replies.iter().filter(|r| external(r).is_some()).count();
    eprintln!("{answered}/{N} connections answered from an external address while all {N} were open");
    assert_eq!(answered, N);
    let flows = t.admin().flows().expect("flows");
    let to_web = flows.iter().filter(|f| f.original.ends_with("203.0.113.80:80")).count();
    eprintln!("natgw tracks {to_web} flows to the web server");
    assert!(to_web >= N, "expected >= {N} tracked flows, natgw has {to_web}");
}

#[test]
fn unsolicited_inbound_never_reaches_clients() {
    let t = Topology::demo();
    // An existing flow, so that mappings exist to be probed.
    t.cli1.enter(|| udp_exchange(7007, "203.0.113.7:7", b"x", secs(2))).expect("flow from cli1");
    let filter = "not arp and (src net 198.51.100.0/24 or src net 203.0.113.0/24)";
    let c1 = Capture::start(&t.cli1, "c1", filter, &t.path("c1.pcap"));
    let c2 = Capture::start(&t.cli2, "c2", filter, &t.path("c2.pcap"));
    let before_u = t.counter(r#"PacketsDropCount{reason="unsolicited-inbound"}"#);
    let before_p = t.counter(r#"PacketsDropCount{reason="to-private-address"}"#);
    t.inet.ip(&["route", "add", "10.10.0.0/16", "via", "198.51.100.10"]);
    t.inet.enter(|| {
        let u = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
        for port in [7007u16, 5555, 22, 40000] {
            for ext in ["198.51.100.10", "198.51.100.11"] {
                u.send_to(b"unsolicited", (ext, port)).expect("send");
            }
        }
        u.send_to(b"direct", ("10.10.1.10", 7007)).expect("send"); // straight at a private address
                                                                   // Address-and-port-dependent filtering: not from port 7.
        let u2 = std::net::UdpSocket::bind("203.0.113.7:8").expect("udp :8");
        u2.send_to(b"wrong-port", ("198.51.100.11", 7007)).expect("send");
        for ext in ["198.51.100.10", "198.51.100.11"] {
            let _ =
                TcpStream::connect_timeout(&SocketAddr::new(ext.parse().expect("ip"), 22), Duration::from_millis(500));
        }
    });
    t.inet.ip(&["route", "del", "10.10.0.0/16", "via", "198.51.100.10"]);
    // 8 datagrams and 2 SYNs (with their retransmissions) to the external addresses.
    wait_counter(&t, r#"PacketsDropCount{reason="unsolicited-inbound"}"#, before_u + 10, secs(5));
    wait_counter(&t, r#"PacketsDropCount{reason="to-private-address"}"#, before_p + 1, secs(5));
    let (n1, n2) = (c1.stop(), c2.stop());
    assert!(n1.is_empty() && n2.is_empty(), "clients received packets from outside: {n1:?} {n2:?}");
}

#[test]
fn udp_mapping_expires() {
    let mut t = Topology::network();
    // Endpoint-independent filtering, so that after expiry "unsolicited" can only mean
    // "no mapping any more" (under the default filtering another port is refused anyway).
    let mut cfg = t.demo_config();
    cfg.set("timeouts.udp", 3).set("nat.filtering", "endpoint-independent");
    t.start(&cfg);
    t.cli1.enter(|| udp_exchange(6001, "203.0.113.7:7", b"hi", secs(2))).expect("send");
    let has_flow =
        |t: &Topology| t.admin().flows().expect("flows").iter().any(|f| f.original.starts_with("10.10.1.10:6001 "));
    assert!(has_flow(&t), "no flow after sending");
    // Gone within about a second of its 3 s deadline.
    eventually(secs(5), "the flow to expire after its 3 s timeout", || !has_flow(&t));
    assert!(t.counter("IdleTimeoutCount") >= 1, "IdleTimeoutCount did not move");
    // The expired mapping no longer admits the server.
    let before = t.counter(r#"PacketsDropCount{reason="unsolicited-inbound"}"#);
    t.inet.enter(|| {
        let s = std::net::UdpSocket::bind("203.0.113.7:17007").expect("udp");
        s.send_to(b"late", "198.51.100.11:6001").expect("send");
        s.send_to(b"late", "198.51.100.10:6001").expect("send");
    });
    wait_counter(&t, r#"PacketsDropCount{reason="unsolicited-inbound"}"#, before + 1, secs(3));
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let mut t = Topology::demo();
    let before = t.stats().drops();
    // natgw's inside MAC, as the client learned it (ping it first).
    t.cli1.run("ping", &["-c", "1", "-W", "2", "10.10.1.1"]).expect("ping natgw");
    let dst = neighbour_mac(&t.cli1, "10.10.1.1").expect("the client knows natgw's MAC");
    let src = mac_of(&t.cli1, "c1");
    let mut eth = dst.to_vec();
    eth.extend_from_slice(&src);
    eth.extend_from_slice(&[0x08, 0x00]);
    let good: Vec<u8> = [
        &[0x45, 0, 0, 0x28, 0, 1, 0x40, 0, 0x40, 6, 0, 0, 10, 10, 1, 10, 203, 0, 113, 80][..],
        &[0x9c, 0x40, 0, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0][..],
    ]
    .concat();
    let with = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let mut udp_len0 = good[..20].to_vec();
    udp_len0[9] = 17;
    udp_len0.extend_from_slice(&[0x13, 0x88, 0, 7, 0, 0, 0, 0]);
    let frames: Vec<Vec<u8>> = vec![
        good[..10].to_vec(), // truncated
        with(0, &[0x44]),    // IHL 4
        with(0, &[0x4f]),    // IHL 15
        with(2, &[5, 0xdc]), // total length 1500 > frame
        udp_len0,            // UDP length 0
        with(32, &[0x40]),   // TCP data offset 4
        vec![0u8; 64],       // zeros
    ];
    t.cli1.enter(|| {
        let link = RawLink::open("c1").expect("packet socket on c1");
        for _ in 0..50 {
            for f in &frames {
                link.send(&[&eth[..], f].concat()).expect("send");
            }
        }
        // An IPv6 EtherType.
        let mut v6 = eth.clone();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6.extend_from_slice(&[0u8; 60]);
        link.send(&v6).expect("send");
    });
    let mut after = before;
    eventually(secs(5), "at least 300 of the 351 malformed frames counted as drops", || {
        after = t.stats().drops();
        after >= before + 300
    });
    eprintln!("drop counters went from {before} to {after}");
    assert!(t.gateway().running(), "natgw died");
    t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("traffic after malformed input");
}
