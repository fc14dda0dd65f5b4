//! Operating natgw: the CLI and the admin socket, startup errors, stopping cleanly, and
//! the harness's own promise that a topology leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use natgw::admin::{FlowEntry, Hook, HookStatus, Stats, Status, PROTOCOL_VERSION};
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
    // Every link names its packet path.
    let links: Vec<&str> = s.lines().filter(|l| l.starts_with("inside: ") || l.starts_with("outside: ")).collect();
    assert!(links.len() == 3 && links.iter().all(|l| l.contains(" path af_packet (")), "{s}");
    let stats = text(&natgw(&["stats", "--socket", &socket]));
    assert!(stats.lines().any(|l| l.starts_with("ConnectionEstablishedCount ")), "{stats}");
    assert!(stats.lines().any(|l| l.starts_with("otlp: queued ")), "{stats}");
    let flows = text(&natgw(&["flows", "--socket", &socket]));
    let first = flows.lines().next().unwrap_or_default();
    assert!(first.starts_with("PROTO ") && first.contains("ORIGINAL") && first.contains("POOL"), "{flows}");
    assert!(flows.lines().any(|l| l.starts_with("tcp ") && l.contains(" 10.10.1.10:")), "{flows}");
    assert!(flows.lines().last().is_some_and(|l| l.starts_with("natgw: ")), "{flows}");
    let list = text(&natgw(&["policy", "list", "--socket", &socket]));
    assert!(list.lines().any(|l| l.starts_with("egress ")) && list.contains("egress_allowlist.wasm"), "{list}");
    // The contract each policy was built against: the built-ins are all 0.2.0.
    assert!(list.lines().next().is_some_and(|h| h.contains(" wit ")), "{list}");
    for hook in ["egress ", "port-pool ", "flow-log "] {
        assert!(list.lines().any(|l| l.starts_with(hook) && l.contains(" 0.2.0 ")), "{hook}: {list}");
    }
    // Load times as dates, not Unix seconds.
    let year =
        natgw::report::utc_text(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    assert!(list.lines().skip(1).all(|l| l.contains(&year[..4]) && l.contains(" UTC ")), "{list}");
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

/// `natgw flows` filters, like `conntrack -L -s … -p …`: each filter lists exactly the
/// flows of the unfiltered list that it selects; unknown values are refused naming the flag.
#[test]
fn flows_filters_select_exactly_their_flows_and_the_cli_finds_its_gateway() {
    let t = Topology::demo();
    // TCP from both subnets (two pools), an answered UDP flow from cli1, 20 unanswered ones
    // (port unreachable; ports the demo's allow-list lets out for traceroute) from cli2.
    for ns in [&t.cli1, &t.cli2] {
        ns.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl");
    }
    t.cli1
        .enter(|| natgw_e2e::net::udp_exchange(0, "203.0.113.7:7", b"filtered", Duration::from_secs(2)))
        .expect("echo");
    t.cli2.enter(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
        for port in 40_000..40_020 {
            s.send_to(b"x", ("203.0.113.80", port)).expect("send");
        }
    });
    let config = t.gateway.as_ref().expect("running").config.display().to_string();
    let list = |args: &[&str]| -> Vec<FlowEntry> {
        let mut a = vec!["flows", "--json", "--config", &config];
        a.extend_from_slice(args);
        let o = natgw(&a);
        assert!(o.status.success(), "natgw {a:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).expect("flows --json")
    };
    let originals = |v: &[FlowEntry]| {
        let mut o: Vec<String> = v.iter().map(|f| format!("{} {}", f.proto, f.original)).collect();
        o.sort();
        o
    };
    let wait = natgw_e2e::wait::wait_until(Duration::from_secs(5), || list(&[]).len() >= 23);
    let all = list(&[]);
    assert!(wait, "expected 2 TCP and 21 UDP flows: {all:?}");
    let src = |f: &FlowEntry| f.original.split(':').next().unwrap_or_default().to_string();
    let dst = |f: &FlowEntry| {
        f.original.split(" -> ").nth(1).and_then(|d| d.split(':').next()).unwrap_or_default().to_string()
    };
    type Select = Box<dyn Fn(&FlowEntry) -> bool>;
    let cases: Vec<(Vec<&str>, Select)> = vec![
        (vec!["--src", "10.10.1.0/24"], Box::new(move |f| src(f).starts_with("10.10.1."))),
        (vec!["--src", "10.10.2.10"], Box::new(move |f| src(f) == "10.10.2.10")),
        (vec!["--dst", "203.0.113.80"], Box::new(move |f| dst(f) == "203.0.113.80")),
        (vec!["--proto", "udp"], Box::new(|f| f.proto == "udp")),
        (vec!["--proto", "TCP"], Box::new(|f| f.proto == "tcp")),
        (vec!["--pool", "pool-b"], Box::new(|f| f.pool.as_deref() == Some("pool-b"))),
        (vec!["--state", "unreplied"], Box::new(|f| f.state == "UNREPLIED")),
        (
            vec!["--proto", "udp", "--src", "10.10.1.10", "--state", "ASSURED", "--pool", "pool-a"],
            Box::new(|f| {
                f.proto == "udp"
                    && f.original.starts_with("10.10.1.10:")
                    && f.state == "ASSURED"
                    && f.pool.as_deref() == Some("pool-a")
            }),
        ),
    ];
    for (args, select) in cases {
        let expected: Vec<FlowEntry> = all.iter().filter(|f| select(f)).cloned().collect();
        assert!(!expected.is_empty(), "{args:?} selects nothing of {all:?}");
        assert!(expected.len() < all.len(), "{args:?} selects everything");
        assert_eq!(originals(&list(&args)), originals(&expected), "natgw flows {args:?}");
    }
    // Each subnet's flows leave from its pool, and the list says which.
    assert!(
        all.iter().filter(|f| f.original.starts_with("10.10.2.")).all(|f| f.pool.as_deref() == Some("pool-b")),
        "{all:?}"
    );
    // Unknown values are refused naming the flag (the CLI) or the value and what exists (the gateway).
    for (args, says) in [
        (vec!["--state", "LISTEN"], "--state"),
        (vec!["--proto", "sctp"], "--proto"),
        (vec!["--src", "10.10.1.300"], "--src"),
        (vec!["--dst", "10.0.0.0/33"], "--dst"),
        (vec!["--pool", "pool-z"], "pool-a, pool-b"),
        (vec!["--follow", "--proto", "tcp"], "--follow"),
    ] {
        let mut a = vec!["flows", "--config", &config];
        a.extend_from_slice(&args);
        let o = natgw(&a);
        assert!(!o.status.success() && text(&o).contains(says), "natgw {a:?}: {}", text(&o));
    }
    // The gateway is found by --config, then $NATGW_SOCKET; --socket wins over both.
    let socket = t.admin().path().to_string();
    let status = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(natgw_bin());
        c.arg("status").args(args).env_remove("NATGW_SOCKET");
        if let Some(e) = env {
            c.env("NATGW_SOCKET", e);
        }
        c.output().expect("natgw runs")
    };
    assert!(status(&["--config", &config], None).status.success());
    assert!(status(&[], Some(&socket)).status.success());
    assert!(
        status(&["--config", &config], Some("/nonexistent/admin.sock")).status.success(),
        "--config comes before $NATGW_SOCKET"
    );
    assert!(status(&["--socket", &socket], Some("/nonexistent/admin.sock")).status.success());
    let o = status(&[], Some("/nonexistent/admin.sock"));
    assert!(!o.status.success() && text(&o).contains("/nonexistent/admin.sock"), "{}", text(&o));
    // A config that does not parse names the key, as `natgw run` would.
    let bad = t.path("bad.toml");
    let bad_text: Vec<String> = std::fs::read_to_string(&config)
        .expect("config")
        .lines()
        .map(|l| if l.starts_with("socket =") && l.contains(&socket) { "socket = 7".into() } else { l.to_string() })
        .collect();
    assert!(bad_text.iter().any(|l| l == "socket = 7"), "no admin socket line in {config}");
    std::fs::write(&bad, bad_text.join("\n")).expect("bad.toml");
    let o = status(&["--config", &bad.display().to_string()], Some(&socket));
    assert!(!o.status.success() && text(&o).contains("socket"), "{}", text(&o));
}

/// A tmux session, killed when the test ends.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let out = Command::new("tmux")
            .args(["new-session", "-d", "-s", name, "-x", "200", "-y", "45", command])
            .output()
            .expect("tmux (setup.sh installs it)");
        assert!(out.status.success(), "tmux: {}", text(&out));
        Tmux(name.to_string())
    }
    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn alive(&self) -> bool {
        Command::new("tmux").args(["has-session", "-t", &self.0]).output().is_ok_and(|o| o.status.success())
    }
    #[track_caller]
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) {
        let ok = natgw_e2e::wait_until(Duration::from_secs(15), || cond(&self.screen()));
        assert!(ok, "natgw top: waited for {what}; the screen:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
    }
}

/// `natgw top` under tmux: rates, the top talkers ranked by bytes, "disconnected" while
/// the gateway is gone and the view back when it returns, q quits.
#[test]
fn natgw_top_shows_the_gateway_live_and_survives_its_restart() {
    let mut t = Topology::demo();
    let socket = t.admin().path().to_string();
    let top = Tmux::start(
        &format!("natgw-top-{}", std::process::id()),
        &format!("{} top --socket {socket}", natgw_bin().display()),
    );
    top.wait_for("the first frame", |s| s.contains("natgw top   pid ") && s.contains("top inside hosts"));
    // cli1 downloads 10 MB, cli2 asks for a few bytes: cli1 is the top host.
    t.cli1.run("curl", &["-s", "-o", "/dev/null", "http://203.0.113.80/10M.bin"]).expect("download");
    t.cli2.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl");
    top.wait_for("both hosts ranked by bytes, cli1 first", |s| {
        let hosts: Vec<&str> = s.lines().filter_map(|l| l.split('│').nth(1)).map(str::trim).collect();
        let first = hosts.iter().position(|l| l.starts_with("10.10.1.10 "));
        let second = hosts.iter().position(|l| l.starts_with("10.10.2.10 "));
        matches!((first, second), (Some(a), Some(b)) if a < b) && s.contains("203.0.113.80")
    });
    assert!(top.screen().contains("MB"), "cli1's 10 MB: {}", top.screen());
    // The same through the API: every worker answered, cli1 first with its 10 MB.
    let report = t.admin().top(10).expect("top");
    assert!(report.workers >= 1 && report.answered == report.workers, "{report:?}");
    assert!(report.by_host.first().is_some_and(|h| h.address == "10.10.1.10" && h.bytes_in > 10_000_000), "{report:?}");
    // Traffic moves the rates.
    let udp = natgw_e2e::load::udp_stream(&t.cli2, 4);
    top.wait_for("packets per second from the source", |s| {
        s.lines().any(|l| l.starts_with("packets/s: from source ") && !l.starts_with("packets/s: from source 0 "))
    });
    let _ = udp.join();
    // The gateway goes away: the view says so, and comes back with the new process.
    let old_pid = t.gateway().pid();
    t.stop();
    top.wait_for("disconnected", |s| s.contains("disconnected from"));
    let cfg = t.demo_config();
    t.start(&cfg);
    let new_pid = t.gateway().pid();
    assert_ne!(old_pid, new_pid);
    top.wait_for("the new gateway", |s| s.contains(&format!("pid {new_pid} ")));
    Command::new("tmux").args(["send-keys", "-t", &top.0, "q"]).output().expect("send-keys");
    let quit = natgw_e2e::wait_until(Duration::from_secs(5), || !top.alive());
    assert!(quit, "q did not quit: {}", top.screen());
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
    // A second natgw on the same interfaces with an admin socket of its own: the interface
    // lock refuses it, naming the interface.
    let out = run(dup_path.clone());
    assert!(
        !out.status.success() && text(&out).contains("already running on interface"),
        "a second instance on the same interfaces started: {}",
        text(&out)
    );
    assert!(!t.path("y.sock").exists(), "the refused instance left its admin socket");
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

#[test]
fn a_dead_stderr_costs_log_lines_not_the_gateway() {
    let t = Topology::network();
    let mut cfg = t.demo_config();
    let path = cfg.write(&t.path("dead-stderr.toml"));
    // natgw's stderr is a pipe whose reader is gone before natgw writes its first line:
    // every log line meets EPIPE.
    let mut child =
        t.gw.cmd(natgw_bin())
            .args(["run", "--config"])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("natgw");
    drop(child.stderr.take());
    let admin = natgw::admin::AdminClient::new(cfg.admin_socket());
    let alive = |c: &mut std::process::Child| c.try_wait().expect("wait").is_none();
    natgw_e2e::eventually(Duration::from_secs(60), "natgw to answer on its admin socket", || {
        assert!(alive(&mut child), "natgw died writing to a dead stderr");
        admin.status().is_ok()
    });
    // Things that log: SIGHUP reloads that swap the egress policy, a few lines each.
    let pid = child.id() as i32;
    let generation = || admin.policy_list().ok()?.into_iter().find(|h| h.hook == Hook::Egress).map(|h| h.generation);
    for variant in ["egress-allowlist-b.toml", "egress-allowlist.toml", "egress-allowlist-b.toml"] {
        let before = generation();
        cfg.set("policy.egress.config", natgw_e2e::demo_policy_config(variant).display().to_string()).write(&path);
        natgw_e2e::process::kill(pid, libc::SIGHUP);
        natgw_e2e::eventually(Duration::from_secs(10), "the SIGHUP reload", || {
            assert!(alive(&mut child), "natgw died logging to a dead stderr");
            generation() != before
        });
    }
    t.cli1.run("curl", &["-s", "-m", "5", "-o", "/dev/null", "http://203.0.113.80/ip"]).expect("traffic through natgw");
    // The lines were written and lost, and the loss is counted.
    let lost = admin.stats().expect("stats").counters.iter().find(|c| c.name == "LogLinesLost").map(|c| c.value);
    assert!(lost.is_some_and(|n| n >= 4), "lost log lines not counted: {lost:?}");
    // And it still stops cleanly, logging as it goes.
    natgw_e2e::process::kill(pid, libc::SIGTERM);
    let mut status = None;
    natgw_e2e::wait_until(Duration::from_secs(10), || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "natgw did not stop cleanly: {status:?}");
}

#[test]
fn watchers_are_bounded_and_the_gone_ones_make_room() {
    let t = Topology::demo();
    let admin = t.admin();
    // The bound (64) holds: the next watcher is refused, naming it; the gateway answers on.
    let mut held: Vec<UnixStream> =
        (0..64).map(|i| admin.watch().unwrap_or_else(|e| panic!("watcher {i}: {e}"))).collect();
    let refused = admin.watch().map(|_| ()).expect_err("a 65th watcher");
    assert!(refused.to_string().contains("64 watchers"), "{refused}");
    assert!(admin.status().is_ok());
    // Watchers that went away (a restarted `natgw ha watch`) leave room for as many new ones.
    held.truncate(54);
    for i in 0..10 {
        held.push(admin.watch().unwrap_or_else(|e| panic!("new watcher {i}: {e}")));
    }
    assert!(admin.watch().is_err(), "64 live watchers again");
    // A watcher learns of the gateway's end: its connection closes.
    let mut w = held.pop().expect("a watcher");
    w.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    drop(t);
    let mut b = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut w, &mut b).unwrap_or(0), 0, "end of file when natgw stops");
}
