//! Operating natgw: the CLI and the admin socket, startup errors, stopping cleanly, and
//! the harness's own promise that a topology leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use natgw::admin::{FlowEntry, HookStatus, Stats, Status, PROTOCOL_VERSION};
use natgw_e2e::topology::assert_nothing_runs_in;
use natgw_e2e::{natgw_bin, netns, process, Topology};

/// The natgw binary run as user nobody, from a copy in the topology's directory.
fn as_nobody(t: &Topology, args: &[&str]) -> std::process::Output {
    let copy = t.path("natgw-nobody");
    if !copy.exists() {
        std::fs::copy(natgw_bin(), &copy).expect("copy of natgw");
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(args)
        .output()
        .expect("setpriv runs")
}

fn natgw(args: &[&str]) -> std::process::Output {
    Command::new(natgw_bin()).args(args).output().expect("natgw runs")
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn status_and_stats() {
    let t = Topology::demo();
    t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl");
    let s = t.admin().status().expect("status");
    assert!(s.workers >= 1);
    assert_eq!(s.outside.interface, "out0");
    assert_eq!(s.outside.addresses, ["198.51.100.10", "198.51.100.11"]);
    let st = t.stats();
    for m in [
        "ActiveConnectionCount",
        "ConnectionAttemptCount",
        "ConnectionEstablishedCount",
        "ErrorPortAllocation",
        "IdleTimeoutCount",
        "BytesInFromSource",
        "BytesOutToDestination",
        "BytesInFromDestination",
        "BytesOutToSource",
        "PacketsInFromSource",
        "PacketsOutToDestination",
        "PacketsInFromDestination",
        "PacketsOutToSource",
    ] {
        assert!(st.counters.iter().any(|c| c.name == m), "stats lacks {m}");
    }
    assert!(st.get("BytesOutToDestination") > 0 && st.get("ConnectionEstablishedCount") > 0, "counters did not move");
    // The admin socket is root-only.
    let socket = t.admin().path().to_string();
    let r = as_nobody(&t, &["status", "--socket", &socket]);
    assert!(!r.status.success(), "non-root got status: {}", text(&r));
}

#[test]
fn the_cli_prints_the_admin_apis_replies() {
    let t = Topology::demo();
    t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl");
    let socket = t.admin().path().to_string();
    let out = natgw(&["status", "--socket", &socket]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.lines().any(|l| l.starts_with("workers: ")), "status has no workers line: {s}");
    assert!(s.lines().any(|l| l.starts_with("outside: out0 198.51.100.10,198.51.100.11 via 198.51.100.1")), "{s}");
    let stats = text(&natgw(&["stats", "--socket", &socket]));
    assert!(stats.lines().any(|l| l.starts_with("ConnectionEstablishedCount ")), "{stats}");
    assert!(stats.lines().any(|l| l.starts_with("otlp: queued ")), "{stats}");
    let flows = text(&natgw(&["flows", "--socket", &socket]));
    assert!(flows.contains("orig 10.10.1.10:") && flows.contains("natgw: "), "{flows}");
    let list = text(&natgw(&["policy", "list", "--socket", &socket]));
    assert!(list.lines().any(|l| l.starts_with("egress ")) && list.contains("egress_allowlist.wasm"), "{list}");
    // --json prints the admin API's own types.
    let json = |args: &[&str]| {
        let o = natgw(args);
        assert!(o.status.success(), "natgw {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let s: Status = serde_json::from_str(&json(&["status", "--json", "--socket", &socket])).expect("status --json");
    assert_eq!(s.outside.interface, "out0");
    let st: Stats = serde_json::from_str(&json(&["stats", "--json", "--socket", &socket])).expect("stats --json");
    assert!(st.get("ConnectionAttemptCount") >= 1);
    let f: Vec<FlowEntry> =
        serde_json::from_str(&json(&["flows", "--json", "--socket", &socket])).expect("flows --json");
    assert!(f.iter().any(|f| f.original.starts_with("10.10.1.10:")), "{f:?}");
    let h: Vec<HookStatus> =
        serde_json::from_str(&json(&["policy", "list", "--json", "--socket", &socket])).expect("policy list --json");
    assert_eq!(h.len(), 3, "the demo loads three hooks: {h:?}");
}

#[test]
fn the_admin_socket_speaks_versioned_json() {
    let t = Topology::demo();
    let socket = t.admin().path().to_string();
    let exchange = |lines: &[String]| {
        let mut s = UnixStream::connect(&socket).expect("connect");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut replies = Vec::new();
        for l in lines {
            s.write_all(format!("{l}\n").as_bytes()).expect("write");
            let mut reply = String::new();
            if r.read_line(&mut reply).unwrap_or(0) == 0 {
                break;
            }
            replies.push(serde_json::from_str::<serde_json::Value>(&reply).expect("a JSON reply"));
        }
        replies
    };
    let hello = |v: u32| format!(r#"{{"request":"hello","protocol":{v},"client":"e2e"}}"#);
    // A client from the future is told which versions this gateway speaks.
    let r = exchange(&[hello(PROTOCOL_VERSION + 1)]);
    assert_eq!(r[0]["error"]["error"], "unsupported-protocol", "{r:?}");
    assert_eq!(r[0]["error"]["client"], PROTOCOL_VERSION + 1);
    assert_eq!(r[0]["error"]["newest"], PROTOCOL_VERSION);
    // No request before the hello.
    let r = exchange(&[r#"{"request":"status"}"#.to_string()]);
    assert_eq!(r[0]["error"]["error"], "bad-request", "{r:?}");
    // Hello, then a request, then its reply.
    let r = exchange(&[hello(PROTOCOL_VERSION), r#"{"request":"status"}"#.to_string()]);
    assert_eq!(r[0]["ok"]["reply"], "hello", "{r:?}");
    assert_eq!(r[0]["ok"]["protocol"], PROTOCOL_VERSION);
    assert_eq!(r[1]["ok"]["reply"], "status", "{r:?}");
    assert_eq!(r[1]["ok"]["outside"]["interface"], "out0");
    // Garbage is refused, naming why.
    let r = exchange(&[hello(PROTOCOL_VERSION), r#"{"request":"reboot"}"#.to_string()]);
    assert_eq!(r[1]["error"]["error"], "bad-request", "{r:?}");
    assert!(t.admin().status().is_ok(), "the gateway still answers");
}

#[test]
fn bad_config_and_startup_errors() {
    let t = Topology::demo();
    let write = |name: &str, cfg: &natgw_e2e::GatewayConfig| cfg.write(&t.path(name));
    let s = |p: &Path| p.display().to_string();
    // A bad value: the message names the key and the value.
    let mut bad = t.demo_config();
    bad.set("outside.gateway", "198.51.100.300");
    let out = natgw(&["check-config", &s(&write("bad.toml", &bad))]);
    assert!(!out.status.success(), "bad config accepted");
    let msg = text(&out);
    assert!(msg.contains("outside.gateway") && msg.contains("198.51.100.300"), "message lacks key/value: {msg}");
    let demo = natgw_e2e::root().join("examples/demo/natgw.toml");
    assert!(natgw(&["check-config", &s(&demo)]).status.success(), "the demo config is refused");
    // A missing interface: a clear error, a non-zero exit, nothing left behind.
    let mut noif = t.demo_config();
    noif.set("outside.interface", "nosuch0").set("admin.socket", s(&t.path("x.sock")));
    let run = |cfg: PathBuf| t.gw.output(&s(&natgw_bin()), &["run", "--config", &s(&cfg)]);
    let out = run(write("noif.toml", &noif));
    assert!(!out.status.success(), "started without its interface");
    assert!(text(&out).contains("nosuch0"), "missing-interface message: {}", text(&out));
    assert!(!t.path("x.sock").exists(), "admin socket left behind");
    // An address the kernel already has.
    let mut dup = t.demo_config();
    dup.set("admin.socket", s(&t.path("y.sock")));
    let dup_path = write("dup.toml", &dup);
    t.gw.ip(&["addr", "add", "198.51.100.10/24", "dev", "out0"]);
    let out = run(dup_path.clone());
    t.gw.ip(&["addr", "del", "198.51.100.10/24", "dev", "out0"]);
    assert!(
        !out.status.success() && text(&out).contains("198.51.100.10"),
        "address in use not refused: {}",
        text(&out)
    );
    // A second natgw on the same admin socket.
    let running = t.gateway.as_ref().expect("natgw runs").config.clone();
    let out = run(running);
    assert!(!out.status.success(), "a second instance started");
    assert!(text(&out).contains("already running"), "second-instance message: {}", text(&out));
    // Not root.
    let _ = std::fs::set_permissions(&dup_path, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let out = as_nobody(&t, &["run", "--config", &s(&dup_path)]);
    assert!(!out.status.success(), "ran as nobody");
    assert!(text(&out).contains("root"), "non-root message: {}", text(&out));
}

#[test]
fn stop_leaves_nothing() {
    let mut t = Topology::demo();
    let pid = t.gateway().pid();
    let socket = t.admin().path().to_string();
    let status = t.stop().expect("natgw was running");
    assert!(status.success(), "natgw exited with {status} on SIGTERM");
    assert!(!process::alive(pid), "natgw process {pid} is left");
    assert!(!Path::new(&socket).exists(), "admin socket left behind");
    // The collector stays; nothing else may.
    let collector = t.collector.as_ref().map_or(0, |c| c.pid());
    assert_nothing_runs_in(&t.gw, &[collector]);
}

#[test]
fn teardown_removes_namespaces_and_processes() {
    let names = |t: &Topology| t.namespaces().iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    let t = Topology::demo();
    let (ours, pid) = (names(&t), t.gateway.as_ref().expect("running").pid());
    drop(t);
    let left: Vec<String> = netns::list().into_iter().filter(|n| ours.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!process::alive(pid), "natgw left running");
    // Also when the test panics halfway.
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let t = Topology::demo();
        tx.send(names(&t)).expect("send");
        panic!("a test failing with its topology up");
    })
    .join();
    assert!(panicked.is_err());
    let ours = rx.recv().expect("names");
    let left: Vec<String> = netns::list().into_iter().filter(|n| ours.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left after a panic: {left:?}");
}
