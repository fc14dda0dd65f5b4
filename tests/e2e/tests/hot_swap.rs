//! Hot swap under load: 100 egress swaps during a TCP transfer, a UDP echo stream and
//! ping, with the loss of a run without swaps as the bar; and the same allow-list in five
//! languages swapped in turn during one TCP upload.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natgw::admin::Hook;
use natgw_e2e::load::{start_iperf3_server, start_tcp_echo, udp_stream};
use natgw_e2e::net::{sa, tcp_echo_probe, Probe};
use natgw_e2e::wait::secs;
use natgw_e2e::{demo_policy_config, eventually, policy, Netns, Topology};

/// The demo allow-list, variant A or B, built from `file` (any of the five languages).
fn swap_egress(t: &Topology, file: &str, variant: char) -> natgw::admin::SwapReport {
    let cfg = if variant == 'b' { "egress-allowlist-b.toml" } else { "egress-allowlist.toml" };
    t.admin()
        .policy_swap(Hook::Egress, policy(file), Some(demo_policy_config(cfg)), None, false)
        .unwrap_or_else(|e| panic!("swap to {file} ({variant}): {e}"))
}

/// Ping from `ns` at 20/s for `seconds`: the loss in percent.
fn ping_loss(ns: &Netns, seconds: u64) -> std::thread::JoinHandle<f64> {
    let cmd_ns = ns.clone();
    std::thread::spawn(move || {
        let out = cmd_ns.output("ping", &["-q", "-i", "0.05", "-w", &seconds.to_string(), "203.0.113.80"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split(',')
            .find_map(|p| p.trim().strip_suffix("% packet loss").and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("ping printed no loss: {text}"))
    })
}

#[test]
fn hundred_swaps_under_load() {
    let mut t = Topology::demo();
    start_tcp_echo(&mut t, 8081);
    start_iperf3_server(&mut t);
    let iperf = |seconds: &str, json: bool| {
        let mut args = vec!["-c", "203.0.113.80", "-p", "5201", "-t", seconds, "-b", "300M"];
        if json {
            args.push("-J");
        }
        let cli1 = t.cli1.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || cli1.cmd("iperf3").args(&args).output().expect("iperf3 runs"))
    };
    let transfer_running = |t: &Topology| {
        t.admin()
            .flows()
            .expect("flows")
            .iter()
            .any(|f| f.original.ends_with("203.0.113.80:5201") && f.state == "ESTABLISHED")
    };
    // Baseline: the UDP stream and ping (20/s from cli1) under the same TCP load, no swaps.
    // (Its iperf3 control connection is up before the data one: wait for the transfer.)
    let base_tcp = iperf("12", false);
    eventually(secs(5), "the baseline transfer to start", || transfer_running(&t));
    let (base_udp, base_ping) = (udp_stream(&t.cli2, 10), ping_loss(&t.cli1, 10));
    let (bn, bl) = base_udp.join().expect("udp stream");
    let pl_base = base_ping.join().expect("ping");
    base_tcp.join().expect("iperf3");
    eventually(secs(10), "the baseline transfer to end", || !transfer_running(&t));
    // Now with 100 swaps between two egress policies during a long TCP transfer.
    let tcp = iperf("25", true);
    eventually(secs(5), "the transfer to start", || transfer_running(&t));
    let (udp, ping) = (udp_stream(&t.cli2, 20), ping_loss(&t.cli1, 20));
    let (mut wrong, mut slowest) = (0, 0u64);
    for i in 1..=100 {
        let v = if i % 2 == 1 { 'b' } else { 'a' };
        let r = swap_egress(&t, "egress_allowlist.wasm", v);
        assert!(r.serving_everywhere, "swap {i} did not reach every worker: {r:?}");
        slowest = slowest.max(r.serving_after_us);
        // A connection opened now follows the generation just published.
        let p = t.cli1.enter(|| tcp_echo_probe("203.0.113.80:8081", secs(2)));
        let want = if v == 'b' { Probe::Refused } else { Probe::Open };
        if p != want {
            wrong += 1;
            eprintln!("swap {i} ({v}): a new connection met {p:?}");
        }
    }
    eprintln!("100 swaps done; the slowest reached every worker in {:.1} ms", slowest as f64 / 1e3);
    let out = tcp.join().expect("iperf3");
    let (sn, sl) = udp.join().expect("udp stream");
    let pl_swap = ping.join().expect("ping");
    eprintln!(
        "UDP echo lost {bl}/{bn} without swaps, {sl}/{sn} with swaps; ping loss {pl_base}% without, {pl_swap}% with"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    assert!(r.get("error").is_none(), "iperf3: {}", r["error"]);
    let e = &r["end"]["sum_received"];
    eprintln!(
        "iperf3: {:.1} s, {:.0} Mbit/s received, completed without a reset",
        e["seconds"].as_f64().unwrap_or(0.0),
        e["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
    );
    assert!(out.status.success(), "iperf3 exited {:?}", out.status.code());
    // Window tracking let every segment of these real connections through.
    assert_eq!(t.counter(r#"PacketsDropCount{reason="tcp-out-of-window"}"#), 0, "segments of real connections dropped");
    assert_eq!(wrong, 0, "{wrong} new connections did not follow the generation active when they started");
    // Same loss with and without swaps (one datagram of slack: the runs differ in length).
    assert!(sl <= bl + 1, "UDP lost {sl} with swaps against {bl} without");
    assert!(pl_swap <= pl_base + 0.5, "ping lost {pl_swap}% with swaps, {pl_base}% without");
}

#[test]
fn across_five_languages_during_one_upload() {
    // The same allow-list in five languages, swapped in turn while one TCP upload runs.
    // Each swap alternates the config: B refuses new connections to 8081, A lets them.
    let mut t = Topology::demo();
    start_tcp_echo(&mut t, 8081);
    let listener = t.inet.enter(|| TcpListener::bind("203.0.113.80:5201")).expect("listen");
    let server = t.inet.spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(secs(30))).expect("timeout");
        let (mut n, mut buf) = (0u64, vec![0u8; 1 << 16]);
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
        c.write_all(n.to_string().as_bytes()).map_err(|e| e.to_string())?;
        Ok(n)
    });
    // About 100 Mbit/s until told to stop; then the count the server saw.
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let client = t.cli1.spawn(move || -> Result<(u64, u64), String> {
        let chunk = vec![b'x'; 1 << 17];
        let mut s = TcpStream::connect_timeout(&sa("203.0.113.80:5201"), secs(10)).map_err(|e| e.to_string())?;
        while !stop2.load(Ordering::Relaxed) {
            s.write_all(&chunk).map_err(|e| format!("after {} bytes: {e}", sent2.load(Ordering::Relaxed)))?;
            sent2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
        s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(secs(30))).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        let counted = answer.trim().parse().map_err(|_| format!("the server answered {answer:?}"))?;
        Ok((sent2.load(Ordering::Relaxed), counted))
    });
    eventually(secs(10), "the upload to start", || sent.load(Ordering::Relaxed) > 0);
    for (lang, file, variant) in [
        ("rust", "egress_allowlist.wasm", 'b'),
        ("python", "egress_allowlist_py.wasm", 'a'),
        ("javascript", "egress_allowlist_js.wasm", 'b'),
        ("c", "egress_allowlist_c.wasm", 'a'),
        ("go", "egress_allowlist_go.wasm", 'b'),
        ("rust", "egress_allowlist.wasm", 'a'),
    ] {
        let t0 = Instant::now();
        swap_egress(&t, file, variant);
        let took = t0.elapsed();
        let list = t.admin().policy_list().expect("list");
        assert!(
            list.iter().any(|h| h.hook == Hook::Egress && h.file.ends_with(file)),
            "policy list does not show {file}"
        );
        let p = t.cli1.enter(|| tcp_echo_probe("203.0.113.80:8081", secs(2)));
        eprintln!("{lang} ({variant}): swap answered in {} ms; a new connection to 8081: {p:?}", took.as_millis());
        let want = if variant == 'b' { Probe::Refused } else { Probe::Open };
        assert_eq!(p, want, "{lang} with config {variant}");
        assert!(!client.is_finished(), "the upload ended during the swap to {lang}");
    }
    // From a warm compile cache the six swaps take a second or so: let the upload move
    // its 10 MiB before it ends, so that it spans every swap with data in flight.
    eventually(secs(30), "the upload to move 10 MiB", || sent.load(Ordering::Relaxed) > 10 << 20);
    stop.store(true, Ordering::Relaxed);
    let (sent, told) = client.join().expect("client").expect("the upload across the swaps");
    let received = server.join().expect("server").expect("the server's count");
    eprintln!("upload: sent {sent} received {received}");
    assert_eq!((received, told), (sent, sent), "the upload across the swaps lost bytes");
    assert!(sent > 10 << 20, "the upload moved only {sent} bytes");
    assert_eq!(t.counter(r#"PacketsDropCount{reason="tcp-out-of-window"}"#), 0, "segments of real connections dropped");
}
