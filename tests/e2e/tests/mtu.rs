//! Sizes: fragments in both directions, natgw fragmenting a datagram without DF, and
//! path-MTU discovery through natgw (a router's ICMP translated, and natgw's own).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use natgw_e2e::net::{sa, udp_exchange, udp_without_df};
use natgw_e2e::topology::random_bytes;
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, netns, Topology};

/// Waits until every worker of natgw applies `mtu` to link `interface` (natgw re-reads
/// link MTUs every second; its workers follow at their next 100 ms tick).
fn wait_for_mtu(t: &Topology, interface: &str, mtu: u32) {
    eventually(secs(5), &format!("natgw's workers to apply MTU {mtu} to {interface}"), || {
        let s = t.admin().status().expect("status");
        s.inside
            .iter()
            .chain(std::iter::once(&s.outside))
            .any(|l| l.interface == interface && !l.workers_mtu.is_empty() && l.workers_mtu.iter().all(|&m| m == mtu))
    });
}

// Datagrams larger than the MTU are fragmented by the client and by the servers: every
// fragment must be translated (the first maps, the rest follow by IP ID), in both
// directions, whichever worker the kernel hands each fragment to.
#[test]
fn fragments_pass_both_ways() {
    let t = Topology::demo();
    t.cli1.run("ping", &["-c", "4", "-i", "0.2", "-s", "3000", "-W", "2", "203.0.113.80"]).expect("3000-byte ping");
    let r = t.cli1.enter(|| udp_exchange(0, "203.0.113.7:7", &[b'f'; 6000], secs(3))).expect("6000-byte UDP echo");
    assert_eq!(r.len(), 6000, "the 6000-byte echo came back as {} bytes", r.len());
    let seen = t.echo_log();
    assert!(
        seen.iter().any(|(p, n)| *n == 6000 && p.ip().to_string().starts_with("198.51.100.1")),
        "the echo server did not get the whole datagram from an external address: {seen:?}"
    );
    assert_eq!(t.counter(r#"PacketsDropCount{reason="fragment-unmatched"}"#), 0, "fragments dropped as unmatched");
}

// A datagram without DF that is larger than natgw's outside link: natgw fragments it
// (RFC 791/1812), and the server gets it whole.
#[test]
fn gateway_fragments_non_df_datagrams() {
    let t = Topology::demo();
    t.gw.ip(&["link", "set", "out0", "mtu", "1280"]);
    t.inet.ip(&["link", "set", "i0", "mtu", "1280"]);
    wait_for_mtu(&t, "out0", 1280);
    if let Some(e) = &t.echo {
        e.clear();
    }
    let r = t.cli1.enter(|| {
        let s = udp_without_df().expect("socket");
        s.set_read_timeout(Some(secs(3))).expect("timeout");
        s.send_to(&[b'd'; 1400], sa("203.0.113.7:7")).expect("send");
        let mut buf = [0u8; 4096];
        s.recv(&mut buf).ok()
    });
    assert_eq!(r, Some(1400), "a 1400-byte datagram without DF through a 1280-byte link");
    let seen = t.echo_log();
    assert!(
        seen.iter().any(|(p, n)| *n == 1400 && p.ip().to_string().starts_with("198.51.100.1")),
        "the server did not get the datagram whole: {seen:?}"
    );
}

// A router beyond natgw with a lower MTU: the client's upload must shrink after the
// router's ICMP fragmentation-needed, which reaches the client only if natgw translates it.
#[test]
fn pmtu_upload_through_a_lower_mtu_router() {
    let mut t = Topology::demo();
    let far = t.add_namespace("far");
    netns::ip(&["link", "add", "f0", "netns", &far.name, "type", "veth", "peer", "name", "i1", "netns", &t.inet.name]);
    // Only the router's side is small: the far host still advertises a 1460-byte MSS, so
    // the client's full-size segments meet the 1280-byte hop and the router's ICMP.
    t.inet.ip(&["addr", "add", "203.0.113.129/25", "dev", "i1"]);
    t.inet.ip(&["link", "set", "i1", "mtu", "1280", "up"]);
    far.ip(&["addr", "add", "203.0.113.130/25", "dev", "f0"]);
    far.ip(&["link", "set", "f0", "up"]);
    far.ip(&["route", "add", "default", "via", "203.0.113.129"]);
    let data = random_bytes(3_000_000);
    let listener = far.enter(|| TcpListener::bind("203.0.113.130:9000")).expect("listen on the far host");
    let server = far.spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(secs(30))).expect("timeout");
        let mut got = Vec::new();
        c.read_to_end(&mut got).map(|_| got)
    });
    let sent = t.cli1.enter(|| {
        let mut s = TcpStream::connect_timeout(&sa("203.0.113.130:9000"), secs(5))?;
        s.set_write_timeout(Some(secs(30)))?;
        s.write_all(&data)?;
        s.shutdown(std::net::Shutdown::Write)
    });
    sent.expect("the upload completes");
    let received = server.join().expect("server thread").expect("server read");
    assert!(received == data, "upload corrupted or short ({} of {} bytes)", received.len(), data.len());
    let route = t.cli1.ip_output(&["route", "get", "203.0.113.130"]);
    eprintln!("client route: {}", route.split_whitespace().collect::<Vec<_>>().join(" "));
    assert!(route.contains("mtu 1280"), "the client never learned the path MTU: {route}");
}

// The inside link is smaller than the client's MSS promises: natgw itself must send
// fragmentation-needed to the server, and the download still completes.
#[test]
fn pmtu_download_via_the_gateways_icmp() {
    let t = Topology::demo();
    t.gw.ip(&["link", "set", "in1", "mtu", "1280"]);
    wait_for_mtu(&t, "in1", 1280);
    let (icmp, frag) = ("IcmpErrorsSent", r#"PacketsDropCount{reason="needs-fragmentation"}"#);
    let (icmp_before, frag_before) = (t.counter(icmp), t.counter(frag));
    let got = t
        .cli1
        .run(
            "curl",
            &[
                "-s",
                "-m",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                "http://203.0.113.80/10M.bin",
            ],
        )
        .expect("download through a 1280-byte inside link");
    assert_eq!(got, "200 10485760");
    assert!(t.counter(icmp) > icmp_before, "natgw sent no fragmentation-needed");
    assert!(t.counter(frag) > frag_before, "the too-big segments were not counted as needs-fragmentation drops");
}
