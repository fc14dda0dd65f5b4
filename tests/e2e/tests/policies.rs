//! The Wasm policies on a running gateway: the egress allow-list, subnet pools with a
//! per-source budget, bad and misbehaving policies, revalidation, SIGHUP reload.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use natgw::admin::AdminError;
use natgw::admin::{FailMode, Hook};
use natgw_e2e::net::{sa, tcp_echo_probe, Probe};
use natgw_e2e::wait::secs;
use natgw_e2e::{demo_policy_config, eventually, policy, Topology};

/// A TCP echo service on 203.0.113.80:8081: the demo allow-list's A variant allows it, B
/// rejects it.
fn start_echo_8081(t: &mut Topology) {
    let mut cmd = t.inet.cmd("socat");
    cmd.args(["TCP-LISTEN:8081,bind=203.0.113.80,fork,reuseaddr", "EXEC:cat"]);
    t.daemon("socat-8081", cmd);
    let inet = t.inet.clone();
    eventually(secs(5), "socat to listen on 203.0.113.80:8081", || {
        inet.enter(|| TcpStream::connect_timeout(&sa("203.0.113.80:8081"), Duration::from_millis(200)).is_ok())
    });
}

fn probe_8081(t: &Topology) -> Probe {
    t.cli1.enter(|| tcp_echo_probe("203.0.113.80:8081", secs(2)))
}

/// Swaps the demo allow-list's variant A or B in (the Rust built-in).
fn swap_egress(t: &Topology, variant: char, revalidate: bool) -> Result<natgw::admin::SwapReport, AdminError> {
    let cfg = if variant == 'b' { "egress-allowlist-b.toml" } else { "egress-allowlist.toml" };
    t.admin().policy_swap(
        Hook::Egress,
        policy("egress_allowlist.wasm"),
        Some(demo_policy_config(cfg)),
        None,
        revalidate,
    )
}

fn curl_code(ns: &natgw_e2e::Netns, args: &[&str]) -> Option<i32> {
    let mut all = vec!["-s"];
    all.extend_from_slice(args);
    ns.output("curl", &all).status.code()
}

#[test]
fn egress_allowlist_allows_and_rejects() {
    let t = Topology::demo();
    let code =
        t.cli1.run("curl", &["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://203.0.113.80/ip"]);
    assert_eq!(code.as_deref(), Ok("200"), "port 80 is allowed");
    let rejected = r#"PacketsDropCount{reason="policy-rejected"}"#;
    let before = t.counter(rejected);
    let t0 = Instant::now();
    let code = curl_code(&t.cli1, &["-m", "5", "http://203.0.113.80:8080/"]);
    let took = t0.elapsed();
    assert_eq!(code, Some(7), "port 8080: curl exit {code:?}, expected 7 (connection refused by a RST)");
    eprintln!("port 8080 refused in {} ms", took.as_millis());
    assert!(took < secs(1), "the refusal took {took:?}: a timeout, not a RST");
    let errno = t.cli1.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        s.set_read_timeout(Some(secs(2))).expect("timeout");
        s.connect("203.0.113.7:9").expect("connect");
        s.send(b"x").expect("send");
        let mut b = [0u8; 16];
        s.recv(&mut b).err().and_then(|e| e.raw_os_error())
    });
    assert_eq!(
        errno,
        Some(libc::EHOSTUNREACH),
        "UDP to port 9: expected EHOSTUNREACH from ICMP administratively prohibited"
    );
    assert!(t.counter(rejected) >= before + 2, "rejections not counted");
    assert!(!t.nginx_access_log().contains(":8080"), "a rejected flow reached the server");
}

#[test]
fn subnets_leave_from_their_pools() {
    let t = Topology::demo();
    let a = t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("cli1");
    let b = t.cli2.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("cli2");
    eprintln!("10.10.1.0/24 left as {}, 10.10.2.0/24 as {}", a.trim(), b.trim());
    assert!(a.trim().starts_with("198.51.100.10:"), "cli1 (pool-a) seen as {a:?}");
    let port: u16 =
        b.trim().strip_prefix("198.51.100.11:").and_then(|p| p.parse().ok()).expect("cli2 (pool-b) seen from .11");
    assert!((20000..=39999).contains(&port), "cli2 port {port} is outside pool-b's 20000-39999");
    // A per-source budget, across workers: 3 ports more than cli2 holds now (its earlier
    // connections linger in TIME_WAIT), so of 5 new concurrent connections 3 get through.
    let mut held: Vec<String> = t
        .admin()
        .flows()
        .expect("flows")
        .into_iter()
        .filter_map(|f| f.original.split(' ').next().filter(|s| s.starts_with("10.10.2.10:")).map(String::from))
        .collect();
    held.sort();
    held.dedup();
    let budget = t.path("budget.toml");
    std::fs::write(
        &budget,
        format!("[[subnet]]\ncidr = \"10.10.2.0/24\"\npool = \"pool-b\"\nport_budget = {}\n", held.len() + 3),
    )
    .expect("budget.toml");
    t.admin().policy_swap(Hook::PortPool, policy("subnet_port_pools.wasm"), Some(budget), None, false).expect("swap");
    let before = t.counter("ErrorPortAllocation");
    let ok = t.cli2.enter(|| {
        let socks: Vec<TcpStream> =
            (0..5).filter_map(|_| TcpStream::connect_timeout(&sa("203.0.113.80:80"), secs(1)).ok()).collect();
        socks.len()
    });
    assert_eq!(ok, 3, "{ok} of 5 connections got through a budget of 3");
    assert!(t.counter("ErrorPortAllocation") > before, "ErrorPortAllocation did not move");
}

#[test]
fn bad_policies_are_refused_and_the_old_one_serves() {
    let t = Topology::demo();
    let generation = |t: &Topology| {
        t.admin().policy_list().expect("list").into_iter().find(|h| h.hook == Hook::Egress).map(|h| h.generation)
    };
    let gen = generation(&t);
    let refused = |file: std::path::PathBuf, config: Option<std::path::PathBuf>| match t.admin().policy_swap(
        Hook::Egress,
        file.clone(),
        config,
        None,
        false,
    ) {
        Err(AdminError::PolicyRefused { hook: Hook::Egress, reason }) => reason,
        other => panic!("{} was not refused: {other:?}", file.display()),
    };
    let junk = t.path("junk.wasm");
    std::fs::write(&junk, "not wasm\n").expect("junk");
    let why = refused(junk.clone(), None);
    eprintln!("{why}");
    assert!(why.contains("junk.wasm") && why.contains("magic number"), "no reason for junk: {why}");
    let why = refused(policy("flow_log_filter.wasm"), None);
    eprintln!("{why}");
    assert!(
        why.contains("flow_log_filter.wasm") && why.contains("natgw:policy/egress@0.1.0"),
        "no reason for the wrong world: {why}"
    );
    let badinit = t.path("badinit.toml");
    std::fs::write(&badinit, "default = \"sometimes\"\n").expect("badinit");
    let why = refused(policy("egress_allowlist.wasm"), Some(badinit));
    eprintln!("{why}");
    assert!(why.contains(r#"init rejected its config: default = "sometimes""#), "no reason for init: {why}");
    assert_eq!(generation(&t), gen, "the serving generation changed");
    t.cli1.run("curl", &["-s", "-m", "5", "-o", "/dev/null", "http://203.0.113.80/ip"]).expect("traffic stopped");
    // The CLI says the same, and exits non-zero.
    let socket = t.admin().path().to_string();
    let junk_arg = junk.display().to_string();
    let cli = |args: &[&str]| std::process::Command::new(natgw_e2e::natgw_bin()).args(args).output().expect("natgw");
    let out = cli(&["policy", "swap", "--hook", "egress", &junk_arg, "--socket", &socket]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && text.contains("junk.wasm") && text.contains("magic number"), "CLI: {text}");
    // The admin socket refuses non-root callers, for swaps too.
    let copy = t.path("natgw-nobody");
    std::fs::copy(natgw_e2e::natgw_bin(), &copy).expect("copy");
    let wasm = policy("egress_allowlist.wasm").display().to_string();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["policy", "swap", "--hook", "egress", &wasm, "--socket", &socket])
        .output()
        .expect("setpriv");
    assert!(!out.status.success(), "non-root swapped: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn misbehaving_policy_is_contained() {
    let t = Topology::demo();
    let misbehaving = policy("misbehaving_egress.wasm");
    t.admin().policy_swap(Hook::Egress, misbehaving.clone(), None, Some(FailMode::Closed), false).expect("swap");
    let before = t.counter("PolicyErrors");
    for port in ["666", "667", "668"] {
        // trap, infinite loop, memory bomb
        let url = format!("http://203.0.113.80:{port}/");
        assert_ne!(
            curl_code(&t.cli1, &["-m", "1", &url]),
            Some(0),
            "port {port} got through a failing policy (fail closed)"
        );
        // A trapped instance is replaced 100 ms later; meanwhile the fail mode applies.
        eventually(secs(5), &format!("traffic after port {port}"), || {
            curl_code(&t.cli1, &["-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]) == Some(0)
        });
    }
    let errs = t.counter("PolicyErrors") - before;
    let list = t.admin().policy_list().expect("list");
    let eg = list.iter().find(|h| h.hook == Hook::Egress).expect("egress");
    eprintln!("PolicyErrors +{errs}; calls {}, errors {}, timeouts {}", eg.calls, eg.errors, eg.timeouts);
    assert!(errs >= 3, "PolicyErrors moved by {errs}");
    let log = t.log();
    assert!(log.contains("trap: unreachable") && log.contains("deadline"), "the log does not say why");
    // Fail open lets flows through when the policy fails.
    t.admin().policy_swap(Hook::Egress, misbehaving, None, Some(FailMode::Open), false).expect("swap");
    assert_eq!(
        curl_code(&t.cli1, &["-m", "2", "http://203.0.113.80:666/"]),
        Some(7),
        "fail open did not let port 666 reach the server"
    );
}

#[test]
fn revalidate_closes_denied_flows() {
    let mut t = Topology::demo();
    start_echo_8081(&mut t);
    swap_egress(&t, 'a', false).expect("swap to A");
    // A long-lived connection to 8081, allowed by A; then B is swapped in with --revalidate.
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let conn = t.cli1.spawn(move || {
        let mut s = TcpStream::connect_timeout(&sa("203.0.113.80:8081"), secs(3)).expect("connect");
        s.set_read_timeout(Some(secs(3))).expect("timeout");
        let mut b = [0u8; 1];
        for i in 0..100 {
            let r = s.write_all(b"x").and_then(|_| s.read_exact(&mut b));
            if let Err(e) = r {
                return Err(e.kind());
            }
            if i == 0 {
                let _ = up_tx.send(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    up_rx.recv_timeout(secs(5)).expect("the connection to 8081 is up");
    let report = swap_egress(&t, 'b', true).expect("swap to B with --revalidate");
    eprintln!("{}", natgw::report::swap_text(&report));
    assert!(report.revoked.unwrap_or(0) >= 1, "no flow revoked");
    let outcome = conn.join().expect("client thread");
    assert_eq!(outcome, Err(std::io::ErrorKind::ConnectionReset), "the denied connection was not reset");
    assert!(t.counter("PolicyRevokedFlows") >= 1, "PolicyRevokedFlows did not move");
    // An allowed connection (port 80) is untouched by a revalidation.
    t.cli1
        .run("curl", &["-s", "-m", "5", "-o", "/dev/null", "http://203.0.113.80/ip"])
        .expect("port 80 after revalidation");
}

#[test]
fn sighup_reloads_policies() {
    let mut t = Topology::demo();
    start_echo_8081(&mut t);
    swap_egress(&t, 'a', false).expect("swap to A");
    assert_eq!(probe_8081(&t), Probe::Open, "8081 is open under A");
    let path = t.gateway.as_ref().expect("natgw runs").config.clone();
    let mut cfg = t.demo_config();
    let sighup = |t: &mut Topology| t.gateway().daemon.signal(libc::SIGHUP);
    let swapped = |t: &Topology| t.log().matches("SIGHUP: egress policy").count();
    cfg.set("policy.egress.config", demo_policy_config("egress-allowlist-b.toml").display().to_string()).write(&path);
    sighup(&mut t);
    eventually(secs(10), "the SIGHUP reload to swap the egress policy", || swapped(&t) >= 1);
    assert_eq!(probe_8081(&t), Probe::Refused, "8081 not refused after SIGHUP named variant B");
    // A config that names a broken policy config: the reload is refused, B keeps serving.
    let badinit = t.path("badinit.toml");
    std::fs::write(&badinit, "default = \"sometimes\"\n").expect("badinit");
    cfg.set("policy.egress.config", badinit.display().to_string()).write(&path);
    sighup(&mut t);
    eventually(secs(10), "the refused reload to be logged", || t.log().contains("SIGHUP: egress not swapped"));
    assert!(
        t.log().lines().any(|l| l.contains("SIGHUP: egress not swapped") && l.contains("sometimes")),
        "the refused reload was not explained"
    );
    assert_eq!(probe_8081(&t), Probe::Refused, "B stopped serving after a refused reload");
    t.demo_config().write(&path);
    sighup(&mut t);
    eventually(secs(10), "the second SIGHUP swap", || swapped(&t) >= 2);
    assert_eq!(probe_8081(&t), Probe::Open, "A not back after the reload");
}

#[test]
fn a_policy_that_waits_does_not_stall_its_worker() {
    // One worker: every flow shares it with the calls that wait.
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("dataplane.workers", 1);
    t.start(&cfg);
    // Python's time.sleep(20) on port 669; Rust's wasi:io/poll on a 20 s clock on port 670.
    for (file, port) in [("sleepy_python.wasm", 669u16), ("blocking_egress.wasm", 670)] {
        t.admin().policy_swap(Hook::Egress, policy(file), None, Some(FailMode::Closed), false).expect("swap");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // cli2 opens a new flow towards the waiting port every 5 ms (each a policy call).
        let load = {
            let (cli2, stop) = (t.cli2.clone(), stop.clone());
            std::thread::spawn(move || {
                cli2.enter(|| {
                    let mut sent = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                        let _ = s.send_to(b"wait for me", ("203.0.113.80", port));
                        sent += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    sent
                })
            })
        };
        // Meanwhile cli1's requests are served, each at once.
        let mut slowest = Duration::ZERO;
        for i in 0..20 {
            let t0 = Instant::now();
            let code = curl_code(&t.cli1, &["-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]);
            slowest = slowest.max(t0.elapsed());
            assert_eq!(code, Some(0), "{file}: request {i} failed beside waiting calls");
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = load.join().expect("load");
        let list = t.admin().policy_list().expect("list");
        let eg = list.iter().find(|h| h.hook == Hook::Egress).expect("egress");
        eprintln!(
            "{file}: {sent} waiting flows opened; policy calls {}, timeouts {}; slowest request {slowest:?}",
            eg.calls, eg.timeouts
        );
        assert!(eg.timeouts >= 100, "{file}: only {} calls waited (of {sent} flows)", eg.timeouts);
        assert!(slowest < Duration::from_secs(1), "{file}: a request took {slowest:?}");
    }
    assert!(t.log().contains("blocked in a host call"), "the log does not say why the calls failed");
}

#[test]
fn preempted_policy_calls_are_not_timeouts() {
    // Two spinning competitors on the CPU the bench runs on: its calls are preempted, often
    // mid-call, past their 1 ms deadline in wall time. None may be cut for it.
    let spinner = || {
        std::process::Command::new("taskset")
            .args(["-c", "0", "sh", "-c", "while :; do :; done"])
            .spawn()
            .expect("taskset")
    };
    let mut spinners = [spinner(), spinner()];
    let out = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(natgw_e2e::natgw_bin())
        .args(["policy", "bench", "--hook", "egress", "--calls", "200000", "--call-timeout-us", "1000"])
        .arg(policy("egress_allowlist.wasm"))
        .arg("--config")
        .arg(demo_policy_config("egress-allowlist.toml"))
        .output()
        .expect("natgw policy bench");
    for s in &mut spinners {
        let _ = s.kill();
        let _ = s.wait();
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bench failed");
    assert!(text.contains(", 0 errors,"), "false timeouts under CPU load: {text}");
    // The test proves something only if some call did pass its deadline in wall time.
    let max_us: f64 = text
        .split("max ")
        .nth(1)
        .and_then(|r| r.split(" us").next())
        .and_then(|v| v.trim().parse().ok())
        .expect("the bench reports its slowest call");
    assert!(max_us > 1000.0, "no call was preempted past its deadline (slowest {max_us} us): the load did not compete");
}

#[test]
fn the_watchdog_counts_and_logs_a_worker_that_stops_turning() {
    // A one-second budget (the most the config allows) and the loop fixture: the call holds
    // the only worker for a second of CPU, well past the watchdog's 500 ms.
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("dataplane.workers", 1);
    cfg.set("policy.call_timeout_us", 1_000_000);
    t.start(&cfg);
    t.admin()
        .policy_swap(Hook::Egress, policy("misbehaving_egress.wasm"), None, Some(FailMode::Closed), false)
        .expect("swap");
    assert_eq!(t.counter("WorkerStalls"), 0, "a stall before the loop ran");
    // One datagram, one call (a TCP client's SYN retries would make more).
    t.cli1.enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind").send_to(b"loop", ("203.0.113.80", 667)).expect("send"));
    eventually(secs(5), "the watchdog to count the stall", || t.counter("WorkerStalls") >= 1);
    eventually(secs(5), "the watchdog to log the stall and the recovery", || {
        let log = t.log();
        log.contains("watchdog: worker 0 has not turned its loop") && log.contains("watchdog: worker 0 turns again")
    });
    // Once the call is cut, the worker serves again (the trapped instance is replaced).
    eventually(secs(5), "traffic after the stall", || {
        curl_code(&t.cli1, &["-m", "2", "-o", "/dev/null", "http://203.0.113.80/ip"]) == Some(0)
    });
    assert_eq!(t.counter("WorkerStalls"), 1, "one stall counted once");
}

#[test]
fn a_flood_to_a_refused_destination_costs_one_call_and_a_few_records() {
    // The demo allow-list rejects UDP to 203.0.113.80:9999. 3000 datagrams from one
    // socket over about 1.5 s: one tuple, refused from the cache after the first call.
    let t = Topology::demo();
    let egress_calls = || {
        let list = t.admin().policy_list().expect("list");
        list.iter().find(|h| h.hook == Hook::Egress).map(|h| h.calls).expect("egress")
    };
    let (calls0, records0) = (egress_calls(), t.counter("FlowLogRecords"));
    t.cli1.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for i in 0..3000u32 {
            let _ = s.send_to(b"flood", ("203.0.113.80", 9999));
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    eventually(secs(10), "every refused datagram to be in a record", || {
        t.counter("PacketsDropCount{reason=\"policy-rejected\"}") >= 3000
            && t.counter("PolicyRefusalsCached") + (egress_calls() - calls0) >= 3000
            && t.counter("FlowLogRefusalsSummarized") + (t.counter("FlowLogRecords") - records0) >= 3000
    });
    let calls = egress_calls() - calls0;
    let records = t.counter("FlowLogRecords") - records0;
    eprintln!(
        "3000 refused datagrams: {calls} policy calls, {} answered from the cache, {records} records ({} packets summarized)",
        t.counter("PolicyRefusalsCached"),
        t.counter("FlowLogRefusalsSummarized")
    );
    // One call per second of flood (the answer holds 1 s), a first record and one summary
    // per interval.
    assert!(calls <= 4, "{calls} policy calls for one refused tuple");
    assert!(records <= 8, "{records} records for one refused tuple");

    // The policy says how long each refusal holds (0.2.0's hold-ms): 0 asks for every
    // datagram, 60 s once for the whole flood, whatever policy.refusal_cache_ms says.
    let held = t.path("held.toml");
    std::fs::write(
        &held,
        "default = \"allow\"\n\
         [[rule]]\naction = \"reject\"\nprotocol = \"udp\"\nports = \"9999\"\nhold_ms = 0\n\
         [[rule]]\naction = \"reject\"\nprotocol = \"udp\"\nports = \"9998\"\nhold_ms = 60000\n",
    )
    .expect("config");
    t.admin().policy_swap(Hook::Egress, policy("egress_allowlist.wasm"), Some(held), None, false).expect("swap");
    for (port, want_calls) in [(9999u16, 300u64), (9998, 1)] {
        let (calls0, cached0) = (egress_calls(), t.counter("PolicyRefusalsCached"));
        let dropped0 = t.counter("PacketsDropCount{reason=\"policy-rejected\"}");
        // 300 datagrams over about 2.5 s: past the gateway's 1 s default twice.
        t.cli1.enter(|| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            for i in 0..300u32 {
                let _ = s.send_to(b"held", ("203.0.113.80", port));
                if i % 30 == 29 {
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        });
        eventually(secs(10), "every datagram refused", || {
            t.counter("PacketsDropCount{reason=\"policy-rejected\"}") - dropped0 >= 300
        });
        let (calls, cached) = (egress_calls() - calls0, t.counter("PolicyRefusalsCached") - cached0);
        eprintln!("port {port}: {calls} policy calls, {cached} refused from the cache");
        assert_eq!((calls, cached), (want_calls, 300 - want_calls), "port {port}");
    }
}

/// A candidate policy beside the live one: every new flow asks both, only the live one
/// decides; each disagreement is counted and the flow's record carries the shadow's answer;
/// promoting it swaps it in with the same zero-drop swap.
#[test]
fn a_shadow_policy_is_asked_beside_the_live_one_and_promoted() {
    let mut t = Topology::demo();
    start_echo_8081(&mut t);
    // Live: the demo's allow-list A (8081 allowed). Shadow: B (8081 rejected).
    let r = t
        .admin()
        .policy_shadow(
            Hook::Egress,
            policy("egress_allowlist.wasm"),
            Some(demo_policy_config("egress-allowlist-b.toml")),
        )
        .expect("shadow");
    assert!(r.shadow && r.serving_everywhere, "{r:?}");
    let listed = t.admin().policy_list().expect("list");
    assert!(listed.iter().any(|h| h.shadow && h.generation == r.generation), "{listed:?}");
    let (calls, disagreements) = (t.counter("PolicyShadowCalls"), t.counter("PolicyShadowDisagreements"));
    // Five connections to 8081 from fixed ports (live allows, the shadow would reject) and
    // three to port 80 (both allow).
    for port in 47001..=47005u16 {
        let p = t.cli1.enter(|| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            s.bind(&sa(&format!("10.10.1.10:{port}")).into()).expect("bind");
            s.connect_timeout(&sa("203.0.113.80:8081").into(), secs(2)).map(|_| ())
        });
        assert!(p.is_ok(), "the live policy allows 8081: {p:?}");
    }
    for port in 47011..=47013u16 {
        let code = curl_code(
            &t.cli1,
            &["-m", "3", "--local-port", &port.to_string(), "-o", "/dev/null", "http://203.0.113.80/ip"],
        );
        assert_eq!(code, Some(0));
    }
    assert_eq!(t.counter("PolicyShadowDisagreements") - disagreements, 5, "exactly the five 8081 flows disagree");
    assert_eq!(t.counter("PolicyShadowCalls") - calls, 8, "one shadow call per new flow");
    assert_eq!(t.counter("PolicyShadowErrors"), 0);
    // The records carry what the shadow said.
    eventually(secs(15), "the 8081 flows' records with the shadow's verdict", || {
        let recs = t.flow_log();
        let of = |lo: u64, hi: u64| {
            recs.iter()
                .filter(|r| r.get("source.port").and_then(|v| v.as_u64()).is_some_and(|p| (lo..=hi).contains(&p)))
                .map(|r| {
                    (
                        r.get("natgw.policy.verdict").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                        r.get("natgw.shadow.verdict").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (of(47001, 47005), of(47011, 47013));
        a.len() == 5
            && a.iter().all(|(l, s)| l == "allow" && s == "reject")
            && b.len() == 3
            && b.iter().all(|(l, s)| l == "allow" && s == "allow")
    });
    // Promoted: B is live now; the shadow is gone.
    let r = t.admin().policy_promote(Hook::Egress, None).expect("promote");
    assert!(!r.shadow && r.serving_everywhere, "{r:?}");
    assert_eq!(probe_8081(&t), Probe::Refused, "B rejects 8081");
    let listed = t.admin().policy_list().expect("list");
    assert!(!listed.iter().any(|h| h.shadow), "{listed:?}");
    let calls = t.counter("PolicyShadowCalls");
    assert_eq!(probe_8081(&t), Probe::Refused);
    assert_eq!(t.counter("PolicyShadowCalls"), calls, "no shadow after the promotion");
    // Nothing to promote now; a shadow for another hook is refused.
    assert!(t.admin().policy_promote(Hook::Egress, None).is_err());
    let e = t.admin().policy_shadow(Hook::PortPool, policy("subnet_port_pools.wasm"), None).unwrap_err();
    assert!(e.to_string().contains("egress hook"), "{e}");
}

/// State across a swap (natgw:policy@0.2.0): a policy that lets three new flows per
/// destination through, swapped for a new generation after two, lets one more through;
/// a generation whose import-state traps starts afresh (its spare, from init), counted.
#[test]
fn policy_state_is_carried_across_a_swap_and_lost_only_to_a_trap() {
    let mut t = Topology::network();
    let quota = t.path("quota.toml");
    std::fs::write(&quota, "quota = 3\n").expect("quota.toml");
    let trapping = t.path("quota-trap.toml");
    std::fs::write(&trapping, "quota = 3\ntrap_on_import = true\n").expect("quota-trap.toml");
    let mut cfg = t.demo_config();
    // One worker: one instance holds the counts.
    cfg.set("dataplane.workers", 1i64);
    cfg.set("policy.egress.component", policy("stateful_egress.wasm").display().to_string());
    cfg.set("policy.egress.config", quota.display().to_string());
    t.start(&cfg);
    start_echo_8081(&mut t);
    assert_eq!(probe_8081(&t), Probe::Open);
    assert_eq!(probe_8081(&t), Probe::Open);
    let (carried, lost) = (t.counter("PolicyStateCarried"), t.counter("PolicyStateLost"));
    let swap = |cfg: &std::path::Path| {
        t.admin()
            .policy_swap(Hook::Egress, policy("stateful_egress.wasm"), Some(cfg.to_path_buf()), None, false)
            .expect("swap")
    };
    let r = swap(&quota);
    assert!(r.serving_everywhere, "{r:?}");
    assert_eq!(t.counter("PolicyStateCarried"), carried + 1);
    assert_eq!(probe_8081(&t), Probe::Open, "the third of three");
    assert_eq!(probe_8081(&t), Probe::Refused, "the count of the old generation went across");

    let r = swap(&trapping);
    assert!(r.serving_everywhere, "{r:?}");
    assert_eq!(t.counter("PolicyStateLost"), lost + 1, "the trap in import-state lost the state");
    assert!(t.log().contains("the state of the previous generation was lost"), "logged");
    // The spare (made off the worker) starts from init: three more.
    eventually(secs(10), "the fresh instance to serve", || probe_8081(&t) == Probe::Open);
    assert_eq!(probe_8081(&t), Probe::Open);
    assert_eq!(probe_8081(&t), Probe::Open);
    assert_eq!(probe_8081(&t), Probe::Refused);
}
