//! The demo network for one test, and what runs in it: nginx and a UDP echo service on
//! "the internet", an OpenTelemetry Collector and natgw in the gateway namespace. Dropping
//! a `Topology` stops everything and deletes its namespaces, also while a test panics.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use natgw::admin::{AdminClient, Stats};

use crate::config::GatewayConfig;
use crate::netns::{self, Netns};
use crate::process::{alive, Daemon};
use crate::wait::wait_until;

/// One topology at a time: the tests measure loss and latency on a two-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Namespace names are `ngt<pid>-<n>-<role>`: a later run removes those of a run that
/// was killed before its topologies could clean up.
const PREFIX: &str = "ngt";

pub struct Topology {
    /// The namespace name prefix, unique to this topology.
    pub name: String,
    /// This topology's files: configs, logs, captures, the web root.
    pub dir: PathBuf,
    pub cli1: Netns,
    pub cli2: Netns,
    pub gw: Netns,
    pub inet: Netns,
    /// Namespaces a test added (`add_namespace`), removed with the rest.
    extra: Vec<Netns>,
    nginx: Option<Daemon>,
    pub echo: Option<UdpEcho>,
    pub collector: Option<Collector>,
    pub gateway: Option<Gateway>,
    /// Programs a test started (`daemon`), stopped before the namespaces go.
    daemons: Vec<Daemon>,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Topology {
    /// The demo network with the demo config, natgw running.
    pub fn demo() -> Topology {
        let mut t = Topology::network();
        let cfg = t.demo_config();
        t.start(&cfg);
        t
    }

    /// The demo network with the kernel as its gateway instead of natgw, for comparisons:
    /// the gateway namespace gets natgw's addresses, forwards, and translates with
    /// nftables masquerade over netfilter conntrack, what every Linux user already has.
    pub fn kernel_nat() -> Topology {
        let t = Topology::network();
        t.gw.ip(&["addr", "add", "10.10.1.1/24", "dev", "in1"]);
        t.gw.ip(&["addr", "add", "10.10.2.1/24", "dev", "in2"]);
        t.gw.ip(&["addr", "add", "198.51.100.10/24", "dev", "out0"]);
        t.gw.ip(&["route", "add", "default", "via", "198.51.100.1"]);
        t.gw.sysctl("net.ipv4.ip_forward", "1");
        let rules = "table ip natgw_compare {\n  chain postrouting {\n    type nat hook postrouting priority srcnat;\n    oifname \"out0\" masquerade\n  }\n}\n";
        let path = t.dir.join("masquerade.nft");
        std::fs::write(&path, rules).expect("masquerade.nft");
        let out = t.gw.output("nft", &["-f", &path.display().to_string()]);
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    /// The demo network, its servers and the collector; natgw not started.
    pub fn network() -> Topology {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        remove_leftovers();
        let name = format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = PathBuf::from(format!("/tmp/natgw-e2e-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("topology directory");
        // Non-root checks run a copy of the binary from here.
        set_mode(&dir, 0o755);
        let ns = |role: &str| Netns::create(&format!("{name}-{role}"));
        let (cli1, cli2, gw, inet) = (ns("cli1"), ns("cli2"), ns("gw"), ns("inet"));
        let mut t = Topology {
            name,
            dir,
            cli1,
            cli2,
            gw,
            inet,
            extra: Vec::new(),
            nginx: None,
            echo: None,
            collector: None,
            gateway: None,
            daemons: Vec::new(),
            _one_at_a_time: guard,
        };
        t.wire();
        t.start_servers();
        t.collector = Some(Collector::start(&t.gw, &t.dir.join("otel")));
        t
    }

    fn wire(&self) {
        let veth = |a: &str, a_ns: &Netns, b: &str, b_ns: &Netns| {
            netns::ip(&["link", "add", a, "netns", &a_ns.name, "type", "veth", "peer", "name", b, "netns", &b_ns.name]);
        };
        veth("c1", &self.cli1, "in1", &self.gw);
        veth("c2", &self.cli2, "in2", &self.gw);
        veth("out0", &self.gw, "i0", &self.inet);
        self.cli1.ip(&["addr", "add", "10.10.1.10/24", "dev", "c1"]);
        self.cli1.ip(&["link", "set", "c1", "up"]);
        self.cli1.ip(&["route", "add", "default", "via", "10.10.1.1"]);
        self.cli2.ip(&["addr", "add", "10.10.2.10/24", "dev", "c2"]);
        self.cli2.ip(&["link", "set", "c2", "up"]);
        self.cli2.ip(&["route", "add", "default", "via", "10.10.2.1"]);
        // natgw owns the gateway's addresses: the kernel there has none and forwards nothing.
        self.gw.sysctl("net.ipv4.ip_forward", "0");
        for d in ["in1", "in2", "out0"] {
            self.gw.ip(&["link", "set", d, "up"]);
        }
        self.inet.ip(&["addr", "add", "198.51.100.1/24", "dev", "i0"]);
        self.inet.ip(&["link", "set", "i0", "up"]);
        self.inet.ip(&["addr", "add", "203.0.113.80/32", "dev", "lo"]);
        self.inet.ip(&["addr", "add", "203.0.113.7/32", "dev", "lo"]);
        self.inet.sysctl("net.ipv4.ip_forward", "1");
    }

    fn start_servers(&mut self) {
        let www = self.dir.join("www");
        std::fs::create_dir_all(&www).expect("web root");
        std::fs::write(www.join("10M.bin"), random_bytes(10 << 20)).expect("10M.bin");
        let d = self.dir.display();
        let conf = format!(
            r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log {d}/nginx.access.log;
  client_max_body_size 64m;
  server {{
    listen 203.0.113.80:80 backlog=4096 reuseport;
    location = /ip {{ return 200 "$remote_addr:$remote_port\n"; }}
    location / {{ root {d}/www; }}
  }}
}}
"#
        );
        let conf_path = self.dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let mut cmd = self.inet.cmd("nginx");
        cmd.arg("-c").arg(&conf_path).args(["-g", "daemon off;"]);
        self.nginx = Some(Daemon::start("nginx", cmd, &self.dir.join("nginx.log")));
        self.echo = Some(UdpEcho::start(&self.inet, "203.0.113.7:7"));
        let ready = wait_until(Duration::from_secs(10), || {
            self.inet.enter(|| {
                std::net::TcpStream::connect_timeout(&crate::net::sa("203.0.113.80:80"), Duration::from_millis(200))
                    .is_ok()
            })
        });
        assert!(
            ready,
            "nginx did not start: {}",
            std::fs::read_to_string(self.dir.join("nginx.err")).unwrap_or_default()
        );
    }

    /// The demo config for this topology.
    pub fn demo_config(&self) -> GatewayConfig {
        GatewayConfig::demo(&self.dir)
    }

    /// Starts natgw with `cfg` (written to this topology's directory); panics with its log
    /// when it does not come up.
    pub fn start(&mut self, cfg: &GatewayConfig) -> &mut Gateway {
        self.start_binary(&crate::natgw_bin(), cfg)
    }

    /// Starts the natgw binary at `natgw` (an installed one, say) with `cfg`.
    pub fn start_binary(&mut self, natgw: &Path, cfg: &GatewayConfig) -> &mut Gateway {
        self.start_under(None, natgw, cfg)
    }

    /// Starts natgw with `cfg` as an argument of `wrapper` (`wrapper natgw run …`), a
    /// program that changes what natgw runs under and then executes it.
    pub fn start_wrapped(&mut self, wrapper: &Path, cfg: &GatewayConfig) -> &mut Gateway {
        self.start_under(Some(wrapper), &crate::natgw_bin(), cfg)
    }

    fn start_under(&mut self, wrapper: Option<&Path>, natgw: &Path, cfg: &GatewayConfig) -> &mut Gateway {
        assert!(self.gateway.is_none(), "natgw is already running");
        let n = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
        let path = cfg.write(&self.dir.join(format!("natgw-{n}.toml")));
        let log = self.dir.join("natgw.log");
        self.gateway = Some(Gateway::start_under(&self.gw, wrapper, natgw, &path, cfg.admin_socket(), &log));
        self.gateway.as_mut().expect("just started")
    }

    /// Stops natgw (SIGTERM, as the service manager would) and waits for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut g = self.gateway.take()?;
        match g.successor {
            None => g.daemon.stop(),
            Some(pid) => {
                // Not our child (its parent was the process it took over from): its exit
                // status is not ours to read. 0 when SIGTERM stopped it within 5 s.
                use std::os::unix::process::ExitStatusExt;
                crate::process::kill(pid, libc::SIGTERM);
                let stopped = wait_until(Duration::from_secs(5), || !alive(pid));
                if !stopped {
                    crate::process::kill(pid, libc::SIGKILL);
                    wait_until(Duration::from_secs(5), || !alive(pid));
                }
                Some(std::process::ExitStatus::from_raw(if stopped { 0 } else { libc::SIGKILL }))
            }
        }
    }

    /// `natgw upgrade BINARY`: once the answer came and the old process exited, the
    /// harness follows the new one (stopping it at the end as it would the first).
    pub fn upgrade(&mut self, binary: &Path) -> Result<natgw::admin::UpgradeReport, natgw::admin::AdminError> {
        let r = self.admin().upgrade(binary.to_path_buf())?;
        let g = self.gateway();
        match g.successor {
            None => {
                let status = g.daemon.wait_exit(Duration::from_secs(15));
                assert!(status.is_some_and(|s| s.success()), "the old natgw did not exit cleanly: {status:?}");
            }
            Some(old) => assert!(wait_until(Duration::from_secs(15), || !alive(old)), "the old natgw still runs"),
        }
        g.successor = Some(i32::try_from(r.new_pid).expect("a pid"));
        Ok(r)
    }

    /// Stops natgw and starts it again with `cfg`.
    pub fn restart(&mut self, cfg: &GatewayConfig) -> &mut Gateway {
        self.stop();
        self.start(cfg)
    }

    pub fn gateway(&mut self) -> &mut Gateway {
        self.gateway.as_mut().expect("natgw is running")
    }

    /// The running gateway's admin client.
    pub fn admin(&self) -> AdminClient {
        self.gateway.as_ref().expect("natgw is running").admin.clone()
    }

    pub fn stats(&self) -> Stats {
        self.admin().stats().expect("natgw stats")
    }

    /// A counter by its operator-facing name (`PacketsDropCount{reason="bad-ihl"}`).
    pub fn counter(&self, name: &str) -> u64 {
        let s = self.stats();
        assert!(s.counters.iter().any(|c| c.name == name), "natgw has no counter {name}");
        s.get(name)
    }

    /// natgw's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("natgw.log")).unwrap_or_default()
    }

    /// The senders the UDP echo service saw, with each datagram's length.
    pub fn echo_log(&self) -> Vec<(SocketAddr, usize)> {
        self.echo.as_ref().map(|e| e.seen()).unwrap_or_default()
    }

    /// The records natgw wrote to its flow log file (`flow_log.file`), one JSON object each.
    pub fn flow_log(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.flow_log_at("flows.jsonl")
    }

    /// The records of the flow log at `name` in the topology's directory (a node of a pair
    /// writes its own).
    pub fn flow_log_at(&self, name: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.as_object().cloned())
            .collect()
    }

    pub fn nginx_access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx.access.log")).unwrap_or_default()
    }

    /// A program that runs until the topology goes (or the test stops it).
    pub fn daemon(&mut self, name: &str, cmd: std::process::Command) -> &mut Daemon {
        let log = self.dir.join(format!("{name}-{}.log", self.daemons.len()));
        self.daemons.push(Daemon::start(name, cmd, &log));
        self.daemons.last_mut().expect("just pushed")
    }

    /// The log of the daemon started as `name` (the latest one of that name), if any.
    pub fn daemon_log(&self, name: &str) -> Option<String> {
        self.daemons.iter().rev().find(|d| d.name == name).map(Daemon::log_text)
    }

    /// A further namespace, removed with the topology.
    pub fn add_namespace(&mut self, role: &str) -> Netns {
        let ns = Netns::create(&format!("{}-{role}", self.name));
        self.extra.push(ns.clone());
        ns
    }

    /// Every namespace of this topology.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![&self.cli1, &self.cli2, &self.gw, &self.inet];
        v.extend(self.extra.iter());
        v
    }

    /// A file in this topology's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What natgw said is the first thing to read when a test failed.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("--- natgw.log of {} (last lines):", self.name);
            for l in tail.iter().rev() {
                eprintln!("    {l}");
            }
        }
        self.stop();
        self.daemons.clear();
        self.collector = None;
        self.echo = None;
        self.nginx = None;
        for ns in self.namespaces() {
            ns.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the namespaces and directories of earlier runs whose process is gone (killed
/// before their topologies could clean up).
fn remove_leftovers() {
    for name in netns::list() {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid != std::process::id() as i32 && !alive(pid) {
            Netns { name: name.clone() }.destroy();
            if let Some(topo) = name.rsplit_once('-').map(|(t, _)| t) {
                let _ = std::fs::remove_dir_all(format!("/tmp/natgw-e2e-{topo}"));
            }
        }
    }
}

#[allow(unsafe_code)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Bytes that compress to nothing (xorshift), for files whose integrity a test checks.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64 ^ u64::from(std::process::id());
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// natgw, running in the gateway namespace.
pub struct Gateway {
    pub daemon: Daemon,
    pub config: PathBuf,
    pub admin: AdminClient,
    /// The process that took over after `Topology::upgrade`.
    successor: Option<i32>,
}

impl Gateway {
    pub fn start(gw: &Netns, natgw: &Path, config: &Path, socket: String, log: &Path) -> Gateway {
        Self::start_under(gw, None, natgw, config, socket, log)
    }

    /// `start`, with natgw run as an argument of `wrapper` when there is one.
    pub fn start_under(
        gw: &Netns,
        wrapper: Option<&Path>,
        natgw: &Path,
        config: &Path,
        socket: String,
        log: &Path,
    ) -> Gateway {
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = gw.cmd(w);
                c.arg(natgw);
                c
            }
            None => gw.cmd(natgw),
        };
        cmd.arg("run").arg("--config").arg(config);
        let mut daemon = Daemon::start("natgw", cmd, log);
        let admin = AdminClient::new(socket);
        // Up when its admin socket answers (it is bound last, once the data plane runs).
        let up = wait_until(Duration::from_secs(60), || !daemon.running() || admin.status().is_ok());
        assert!(up && daemon.running(), "natgw did not start with {}:\n{}", config.display(), daemon.log_text());
        Gateway { daemon, config: config.to_path_buf(), admin, successor: None }
    }

    pub fn pid(&self) -> i32 {
        self.successor.unwrap_or_else(|| self.daemon.pid())
    }

    pub fn running(&mut self) -> bool {
        match self.successor {
            Some(pid) => alive(pid),
            None => self.daemon.running(),
        }
    }
}

/// The OpenTelemetry Collector (scripts/build-collector.sh builds it): OTLP on
/// 127.0.0.1:4317 (gRPC) and :4318 (HTTP) in the gateway namespace, writing what it
/// receives as OTLP/JSON lines to `dir/logs.jsonl` and `dir/metrics.jsonl`.
pub struct Collector {
    daemon: Option<Daemon>,
    ns: Netns,
    pub dir: PathBuf,
}

impl Collector {
    pub fn start(ns: &Netns, dir: &Path) -> Collector {
        std::fs::create_dir_all(dir).expect("collector directory");
        let mut c = Collector { daemon: None, ns: ns.clone(), dir: dir.to_path_buf() };
        c.restart();
        c
    }

    /// Starts it (again), waiting until it says it is ready.
    pub fn restart(&mut self) {
        assert!(self.daemon.is_none(), "the collector is running");
        let bin = crate::root().join("target/otelcol/otelcol-natgw");
        assert!(bin.exists(), "{} is missing: scripts/setup.sh builds it", bin.display());
        let d = self.dir.display();
        let yaml = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\n      http:\n        endpoint: 127.0.0.1:4318\n\
             exporters:\n  file/logs:\n    path: {d}/logs.jsonl\n    flush_interval: 100ms\n  file/metrics:\n    path: {d}/metrics.jsonl\n    flush_interval: 100ms\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [file/logs]\n    metrics:\n      receivers: [otlp]\n      exporters: [file/metrics]\n"
        );
        let conf = self.dir.join("otelcol.yaml");
        std::fs::write(&conf, yaml).expect("otelcol.yaml");
        let log = self.dir.join("otelcol.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = self.ns.cmd(&bin);
        cmd.arg("--config").arg(&conf);
        let mut daemon = Daemon::start("otelcol", cmd, &log);
        let ready = wait_until(Duration::from_secs(30), || {
            !daemon.running() || daemon.log_text().contains("Everything is ready")
        });
        assert!(ready && daemon.running(), "the collector did not start:\n{}", daemon.log_text());
        self.daemon = Some(daemon);
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    pub fn pid(&self) -> i32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }

    /// Every flow record it received: each log record's attributes, plus `_resource` (the
    /// resource attributes) and `_event` (the event name).
    pub fn flow_records(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let text = std::fs::read_to_string(self.dir.join("logs.jsonl")).unwrap_or_default();
        let mut recs = Vec::new();
        for line in text.lines() {
            // A line being written does not parse yet.
            let Ok(d) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            for rl in d["resourceLogs"].as_array().into_iter().flatten() {
                let resource = attributes(&rl["resource"]["attributes"]);
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    for r in sl["logRecords"].as_array().into_iter().flatten() {
                        let mut a = attributes(&r["attributes"]);
                        a.insert("_resource".into(), serde_json::Value::Object(resource.clone()));
                        a.insert("_event".into(), r["eventName"].clone());
                        recs.push(a);
                    }
                }
            }
        }
        recs
    }

    /// The metrics file's text.
    pub fn metrics_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("metrics.jsonl")).unwrap_or_default()
    }

    /// Waits until some flow record satisfies `pred`; panics naming `what` and showing the
    /// last records otherwise.
    #[track_caller]
    pub fn wait_for_record(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&[serde_json::Map<String, serde_json::Value>]) -> bool,
    ) {
        let ok = wait_until(timeout, || pred(&self.flow_records()));
        if !ok {
            let recs = self.flow_records();
            let last: Vec<String> = recs.iter().rev().take(2).map(|r| format!("{r:?}")).collect();
            panic!("waited {timeout:?} for {what}; the collector has {} records, the last: {last:?}", recs.len());
        }
    }
}

/// OTLP/JSON attributes as a map of plain values.
fn attributes(list: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for a in list.as_array().into_iter().flatten() {
        let v = &a["value"];
        let plain = if let Some(i) = v.get("intValue") {
            // OTLP/JSON writes 64-bit integers as strings.
            i.as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or_else(|| i.as_i64())
                .map_or(serde_json::Value::Null, Into::into)
        } else {
            ["stringValue", "boolValue", "doubleValue"].iter().find_map(|k| v.get(*k).cloned()).unwrap_or_default()
        };
        if let Some(k) = a["key"].as_str() {
            m.insert(k.into(), plain);
        }
    }
    m
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP echo service (RFC 862) on a thread in a namespace: echoes every datagram and
/// remembers who sent it, so a test sees which address natgw translated to.
pub struct UdpEcho {
    seen: Arc<Mutex<Vec<(SocketAddr, usize)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(ns: &Netns, addr: &str) -> UdpEcho {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let addr: SocketAddr = crate::net::sa(addr);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = ns.spawn(move || {
            let s = match UdpSocket::bind(addr) {
                Ok(s) => s,
                Err(e) => {
                    let _ = bound_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = bound_tx.send(Ok(()));
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = s.recv_from(&mut buf) else { continue };
                // Logged first: a test that got its echo back may read the log at once.
                seen2.lock().unwrap_or_else(|p| p.into_inner()).push((peer, n));
                let _ = s.send_to(&buf[..n], peer);
            }
        });
        match bound_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            other => panic!("UDP echo on {addr}: {other:?}"),
        }
        UdpEcho { seen, stop, thread: Some(thread) }
    }

    pub fn seen(&self) -> Vec<(SocketAddr, usize)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fails the test unless `ns`'s processes other than `except` are gone.
#[track_caller]
pub fn assert_nothing_runs_in(ns: &Netns, except: &[i32]) {
    let left: Vec<i32> = ns.pids().into_iter().filter(|p| !except.contains(p)).collect();
    assert!(left.is_empty(), "processes left in {}: {left:?}", ns.name);
}

/// Waits until a counter of the running gateway reaches `at_least`.
#[track_caller]
pub fn wait_counter(t: &Topology, name: &str, at_least: u64, timeout: Duration) -> u64 {
    let mut v = 0;
    let reached = wait_until(timeout, || {
        v = t.counter(name);
        v >= at_least
    });
    assert!(reached, "waited {timeout:?} for {name} >= {at_least}; it is {v}");
    v
}
