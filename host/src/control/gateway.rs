//! Starting and stopping the gateway's threads, and the root-only admin socket that
//! `natgw status`, `natgw stats`, `natgw flows` and `natgw policy` talk to.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::config::{self, Config, FailMode, Hook};
use crate::counters::{self, Counter};
use crate::io::l2thread::L2Thread;
use crate::io::sys::{self, PacketSocket, PacketSocketOptions};
use crate::io::worker::{Worker, WorkerLink};
use crate::io::{ControlRequest, FlowLine, IoError, Shared};
use crate::l2::L2Link;
use crate::nat::{InsideLink, NatConfig, Translator};
use crate::policy::flowlog::{FlowLogExporter, Sinks, WallClock};
use crate::policy::worker::WorkerPolicy;
use crate::policy::{PolicyError, Runtime};
use crate::telemetry::follow::Followers;
use crate::telemetry::otlp::OtlpExporter;
use crate::telemetry::prometheus;
use crate::wire::ETHERTYPE_IPV4;
use crossbeam_queue::ArrayQueue;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{key} = {name:?}: {source}")]
    Interface { key: String, name: String, source: IoError },
    #[error("{0}")]
    Io(#[from] IoError),
    #[error("address {addr} is already in use: the kernel has it on interface {interface} (natgw owns its addresses; remove it with `ip addr del {addr}/.. dev {interface}`)")]
    AddressInUse { addr: std::net::Ipv4Addr, interface: String },
    #[error("another natgw is already running: its admin socket {0} answers")]
    AlreadyRunning(String),
    #[error("admin socket {path}: {source}")]
    Admin { path: String, source: std::io::Error },
    #[error("cannot reach natgw at {path}: {source} (is `natgw run` running, and are you root?)")]
    Connect { path: String, source: std::io::Error },
    #[error("natgw run needs root (CAP_NET_RAW, CAP_NET_ADMIN); effective uid is {0}")]
    NotRoot(u32),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Vectors(#[from] super::VectorError),
    #[error("{0}")]
    Refused(String),
    #[error("{key} = \"{addr}\": cannot listen: {source}")]
    Listen { key: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
}

/// Starts the gateway and blocks until SIGINT/SIGTERM. On SIGHUP the policy hooks are
/// reloaded from `config_path`.
pub fn run(cfg: Config, config_path: Option<PathBuf>) -> Result<(), ControlError> {
    let uid = sys::effective_uid();
    if uid != 0 {
        return Err(ControlError::NotRoot(uid));
    }
    // Interfaces exist and are up; natgw's addresses are not the kernel's.
    let mut inside_info = Vec::new();
    for (i, c) in cfg.inside.iter().enumerate() {
        let info = sys::interface_info(&c.interface).map_err(|e| ControlError::Interface {
            key: format!("inside[{i}].interface"),
            name: c.interface.clone(),
            source: e,
        })?;
        inside_info.push(info);
    }
    let outside_info = sys::interface_info(&cfg.outside.interface).map_err(|e| ControlError::Interface {
        key: "outside.interface".into(),
        name: cfg.outside.interface.clone(),
        source: e,
    })?;
    let own: Vec<_> = cfg
        .inside
        .iter()
        .flat_map(|c| c.addresses.iter().map(|n| n.addr))
        .chain(cfg.outside.addresses.iter().copied())
        .collect();
    for (ifname, a) in sys::kernel_ipv4_addresses()? {
        if own.contains(&a) {
            return Err(ControlError::AddressInUse { addr: a, interface: ifname });
        }
    }
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1") {
        // The kernel would forward the same frames natgw translates, untranslated.
        eprintln!("natgw: warning: net.ipv4.ip_forward=1 in this namespace; set it to 0 so only natgw forwards");
    }

    let workers = cfg.worker_count();
    let mtus: Vec<u32> = inside_info.iter().chain(std::iter::once(&outside_info)).map(|i| i.mtu).collect();
    let shared = Arc::new(Shared::new(workers, &mtus, cfg.flow_log.enabled)?);
    sys::install_signal_handlers();

    // Policies: compiled, validated and instantiated before any packet moves; a bad one
    // stops the start with the reason.
    let pool_names: Vec<String> = cfg.pools.iter().map(|p| p.name.clone()).collect();
    let rt = Runtime::new(cfg.policy.clone(), workers, pool_names)?;
    rt.load_configured()?;

    let l2_links: Vec<L2Link> = cfg
        .inside
        .iter()
        .zip(&inside_info)
        .map(|(c, info)| L2Link { name: c.interface.clone(), mac: info.mac, addresses: c.addresses.clone() })
        .chain(std::iter::once(L2Link {
            name: cfg.outside.interface.clone(),
            mac: outside_info.mac,
            addresses: cfg
                .outside
                .addresses
                .iter()
                .map(|a| crate::nat::Ipv4Net { addr: *a, prefix: cfg.outside.subnet.prefix })
                .collect(),
        }))
        .collect();
    let outside_link = cfg.inside.len() as u8;
    let l2 = L2Thread::new(l2_links, shared.clone(), vec![(outside_link, cfg.outside.gateway)])?;

    let source_ports = Arc::new(crate::nat::pool::SourcePorts::default());
    let nat_cfg = |w: usize| NatConfig {
        source_ports: source_ports.clone(),
        inside: cfg
            .inside
            .iter()
            .zip(&inside_info)
            .map(|(c, info)| InsideLink {
                name: c.interface.clone(),
                addresses: c.addresses.clone(),
                mtu: info.mtu as u16,
            })
            .collect(),
        external_addrs: cfg.outside.addresses.clone(),
        outside_net: cfg.outside.subnet,
        outside_gateway: cfg.outside.gateway,
        outside_mtu: outside_info.mtu as u16,
        pools: cfg.pools.clone(),
        filtering: cfg.filtering,
        timeouts: cfg.timeouts,
        max_flows: (cfg.max_flows / workers).max(1),
        worker: w,
        workers,
        icmp_error_rate: cfg.icmp_error_rate,
    };

    // Every worker opens its own socket per link; with several workers they join one
    // fanout group per link whose steering program keeps each flow on its owner.
    let group_base = (std::process::id() as u16).wrapping_mul(64);
    let mut built = Vec::new();
    for w in 0..workers {
        let mut links = Vec::new();
        let all = cfg
            .inside
            .iter()
            .map(|c| (c.interface.clone(), true))
            .chain(std::iter::once((cfg.outside.interface.clone(), false)));
        for (li, (name, inside)) in all.enumerate() {
            let fanout = (workers > 1).then(|| (group_base.wrapping_add(li as u16), sys::steering_program(inside)));
            let opts = PacketSocketOptions { protocol: ETHERTYPE_IPV4, vnet_hdr: true, fanout, rcvbuf: 8 << 20 };
            let socket = PacketSocket::open(&name, &opts)?;
            let (side, index) =
                if inside { (crate::conntrack::Side::Inside, li as u8) } else { (crate::conntrack::Side::Outside, 0) };
            links.push(WorkerLink { socket, side, index });
        }
        let mut translator = Translator::new(nat_cfg(w), shared.counters[w].clone(), shared.now_ms());
        translator.set_policy(Box::new(WorkerPolicy::new(rt.clone(), w, shared.counters[w].clone())));
        translator.record_flow_ends(shared.flow_log_enabled, cfg.flow_log.refused, cfg.flow_log.active_interval_s);
        built.push(Worker::new(w, links, translator, shared.clone(), cfg.rx_buffers, cfg.busy_poll_us)?);
    }

    // Last steps that can fail: nothing is left on disk when an earlier one does. The admin
    // socket first, so a second instance is reported as such.
    let admin = bind_admin(&cfg.admin_socket)?;
    let prometheus_listener = match cfg.metrics_listen {
        Some(a) => match prometheus::bind(a) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.admin_socket);
                return Err(ControlError::Listen { key: "metrics.listen", addr: a, source: e });
            }
        },
        None => None,
    };
    let mut threads = Vec::new();
    threads.push(
        std::thread::Builder::new()
            .name("natgw-l2".into())
            .spawn(move || l2.run())
            .map_err(|e| IoError::Os("spawn", e))?,
    );
    for (w, worker) in built.into_iter().enumerate() {
        let pin = cfg.pin_workers;
        let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        threads.push(
            std::thread::Builder::new()
                .name(format!("natgw-w{w}"))
                .spawn(move || {
                    if pin {
                        let _ = sys::pin_to_cpu(w % ncpu);
                    }
                    worker.run()
                })
                .map_err(|e| IoError::Os("spawn", e))?,
        );
    }
    let status = StatusInfo {
        workers,
        inside: cfg
            .inside
            .iter()
            .map(|c| {
                format!("{} {}", c.interface, c.addresses.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
            })
            .collect(),
        outside: format!(
            "{} {} via {}",
            cfg.outside.interface,
            cfg.outside.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
            cfg.outside.gateway
        ),
        max_flows: cfg.max_flows,
    };
    // Telemetry: the OTLP exporter thread (flow records and metrics), the Prometheus
    // endpoint, the followers of `natgw flows --follow`.
    let followers = Arc::new(Followers::default());
    let otlp_queue = cfg
        .otlp
        .as_ref()
        .filter(|o| o.logs && cfg.flow_log.enabled)
        .map(|o| Arc::new(ArrayQueue::new(o.buffer_records)));
    let otlp_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let otlp_thread = match &cfg.otlp {
        Some(o) => {
            let exporter = OtlpExporter {
                cfg: o.clone(),
                queue: otlp_queue.clone().unwrap_or_else(|| Arc::new(ArrayQueue::new(1))),
                counters: shared.exporter_counters(),
                all: shared.counters.clone(),
            };
            let stop = otlp_stop.clone();
            eprintln!(
                "natgw: otlp: exporting {} to {} over {}",
                match (o.logs && cfg.flow_log.enabled, o.metrics_interval_ms > 0) {
                    (true, true) => "flow records and metrics",
                    (true, false) => "flow records",
                    (false, true) => "metrics",
                    (false, false) => "nothing",
                },
                o.endpoint,
                match o.protocol {
                    crate::control::config::OtlpProtocol::Grpc => "gRPC",
                    crate::control::config::OtlpProtocol::HttpProtobuf => "HTTP/protobuf",
                }
            );
            Some(
                std::thread::Builder::new()
                    .name("natgw-otlp".into())
                    .spawn(move || {
                        if let Err(e) = exporter.run(stop) {
                            eprintln!("natgw: {e}; nothing is exported over OTLP");
                        }
                    })
                    .map_err(|e| IoError::Os("spawn", e))?,
            )
        }
        None => None,
    };
    if let Some(l) = prometheus_listener {
        let counters = shared.counters.clone();
        threads.push(
            std::thread::Builder::new()
                .name("natgw-metrics".into())
                .spawn(move || prometheus::serve(l, counters, sys::stop_requested))
                .map_err(|e| IoError::Os("spawn", e))?,
        );
    }
    let exporter = FlowLogExporter {
        rt: rt.clone(),
        queue: shared.flow_ends.clone(),
        counters: shared.flow_log_counters(),
        sinks: Sinks { file: cfg.flow_log.file.clone(), followers: followers.clone(), otlp: otlp_queue },
        interval: Duration::from_millis(cfg.flow_log.interval_ms),
        batch: cfg.flow_log.batch,
        clock: WallClock::new(shared.start),
        interfaces: cfg.inside.iter().map(|c| c.interface.clone()).collect(),
    };
    // The flow-log thread outlives the workers long enough to write their last records.
    let workers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exporter_stop = workers_done.clone();
    let exporter_thread = std::thread::Builder::new()
        .name("natgw-flowlog".into())
        .spawn(move || exporter.run(move || exporter_stop.load(std::sync::atomic::Ordering::Acquire)))
        .map_err(|e| IoError::Os("spawn", e))?;
    let admin_shared = shared.clone();
    let admin_rt = rt.clone();
    let admin_followers = cfg.flow_log.enabled.then(|| followers.clone());
    let admin_path = cfg.admin_socket.clone();
    threads.push(
        std::thread::Builder::new()
            .name("natgw-admin".into())
            .spawn(move || serve_admin(admin, admin_shared, admin_rt, status, admin_followers))
            .map_err(|e| IoError::Os("spawn", e))?,
    );
    eprintln!(
        "natgw: running with {workers} worker(s); inside {}; outside {} ({}); admin socket {}",
        cfg.inside.iter().map(|c| c.interface.as_str()).collect::<Vec<_>>().join(","),
        cfg.outside.interface,
        cfg.outside.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        cfg.admin_socket
    );
    while !sys::stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
        if sys::take_reload_request() {
            match &config_path {
                Some(p) => reload_policies(p, &cfg, &rt, &shared),
                None => eprintln!("natgw: SIGHUP: no config file to reload"),
            }
        }
    }
    eprintln!("natgw: stopping");
    // Wake the admin thread's accept().
    let _ = UnixStream::connect(&admin_path);
    for t in threads {
        let _ = t.join();
    }
    workers_done.store(true, std::sync::atomic::Ordering::Release);
    let _ = exporter_thread.join();
    // The flow-log thread has queued the last records; the OTLP thread delivers them.
    otlp_stop.store(true, std::sync::atomic::Ordering::Release);
    if let Some(t) = otlp_thread {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&admin_path);
    eprintln!("natgw: stopped");
    Ok(())
}

struct StatusInfo {
    workers: usize,
    inside: Vec<String>,
    outside: String,
    max_flows: usize,
}

fn bind_admin(path: &str) -> Result<UnixListener, ControlError> {
    let p = Path::new(path);
    if p.exists() {
        if UnixStream::connect(p).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_string()));
        }
        // A stale socket from a process that died: take it over.
        let _ = std::fs::remove_file(p);
    }
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::Admin { path: path.into(), source: e })?;
    }
    let l = UnixListener::bind(p).map_err(|e| ControlError::Admin { path: path.into(), source: e })?;
    sys::chmod(path, 0o600).map_err(|e| ControlError::Admin { path: path.into(), source: e })?;
    Ok(l)
}

/// SIGHUP: re-read the config file and swap every hook whose component, config text or
/// fail mode changed; remove hooks the file no longer names. Other settings need a restart.
fn reload_policies(path: &Path, running: &Config, rt: &Runtime, shared: &Shared) {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natgw: SIGHUP: config not reloaded, every policy keeps serving: {e}");
            return;
        }
    };
    if cfg.pools != running.pools {
        eprintln!("natgw: SIGHUP: [[pool]] changes need a restart; only [policy] hooks are reloaded");
    }
    for h in Hook::ALL {
        let want = &cfg.policy.hooks[h.index()];
        let have = rt.current(h);
        match (want, have) {
            (None, None) => {}
            (None, Some(g)) => {
                rt.clear(h);
                eprintln!("natgw: SIGHUP: {h} policy #{} removed", g.id);
            }
            (Some(w), have) => {
                let same = have.as_ref().is_some_and(|g| {
                    g.file == w.component
                        && g.fail == w.fail
                        && std::fs::read(&w.component).is_ok_and(|b| crate::policy::sha256_hex(&b) == g.hash)
                        && w.config.as_ref().map_or(Some(String::new()), |c| std::fs::read_to_string(c).ok())
                            == Some(g.config_text.clone())
                });
                if same {
                    continue;
                }
                match swap_and_wait(rt, shared, h, &w.component, w.config.as_deref(), Some(w.fail), false) {
                    Ok(msg) => eprintln!("natgw: SIGHUP: {msg}"),
                    Err(e) => eprintln!("natgw: SIGHUP: {h} not swapped, the previous policy keeps serving: {e}"),
                }
            }
        }
    }
}

/// A `policy swap` request as the CLI sends it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SwapRequest {
    pub hook: String,
    /// Absolute path of the component.
    pub component: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub fail: Option<FailMode>,
    pub revalidate: bool,
    /// Remove the hook's policy instead.
    #[serde(default)]
    pub remove: bool,
}

/// Swaps a hook's policy, wakes the workers and waits until every caller serves the new
/// generation; then, if asked, revalidates existing flows. Returns the operator's report.
fn swap_and_wait(
    rt: &Runtime,
    shared: &Shared,
    hook: Hook,
    component: &Path,
    config: Option<&Path>,
    fail: Option<FailMode>,
    revalidate: bool,
) -> Result<String, ControlError> {
    let t0 = Instant::now();
    let g = rt.swap(hook, component, config, fail)?;
    let prepared = t0.elapsed();
    let published = Instant::now();
    let workers = shared.wake.len();
    for w in 0..workers {
        shared.wake(w);
    }
    let callers: Vec<usize> = rt.callers_of(hook).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !callers.iter().all(|&c| rt.serving(hook, c) == g.id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let serving_after = published.elapsed();
    let all = callers.iter().all(|&c| rt.serving(hook, c) == g.id);
    let mut msg = format!(
        "{hook} policy #{} ({}, sha256 {}) compiled and validated in {:.1} ms; {} in {:.1} ms",
        g.id,
        g.file.display(),
        g.short_hash(),
        prepared.as_secs_f64() * 1e3,
        if all { "serving on every caller" } else { "NOT yet serving on every caller" },
        serving_after.as_secs_f64() * 1e3,
    );
    if revalidate && hook == Hook::Egress {
        let mut revoked = 0;
        for q in shared.control.iter() {
            let (tx, rx) = std::sync::mpsc::channel();
            if q.push(ControlRequest::Revalidate(tx)).is_ok() {
                revoked += rx.recv_timeout(Duration::from_secs(5)).unwrap_or(0);
            }
        }
        msg += &format!("; revalidated existing flows: {revoked} revoked");
    }
    Ok(msg)
}

fn policy_swap(rt: &Runtime, shared: &Shared, json: &str) -> Result<String, ControlError> {
    let req: SwapRequest =
        serde_json::from_str(json).map_err(|e| ControlError::Refused(format!("bad swap request: {e}")))?;
    let hook = Hook::parse(&req.hook)
        .ok_or_else(|| ControlError::Refused(format!("unknown hook {:?} (egress, port-pool or flow-log)", req.hook)))?;
    if req.remove {
        rt.clear(hook);
        return Ok(format!("{hook} policy removed; the built-in behaviour applies to new flows"));
    }
    let component = req.component.ok_or_else(|| ControlError::Refused("no component given".into()))?;
    swap_and_wait(rt, shared, hook, &component, req.config.as_deref(), req.fail, req.revalidate)
}

fn serve_admin(
    listener: UnixListener,
    shared: Arc<Shared>,
    rt: Arc<Runtime>,
    status: StatusInfo,
    followers: Option<Arc<Followers>>,
) {
    let swap_lock = Arc::new(std::sync::Mutex::new(()));
    for conn in listener.incoming() {
        if sys::stop_requested() {
            break;
        }
        let Ok(mut conn) = conn else { continue };
        // Root only, whatever the socket's file mode says.
        match sys::peer_uid(conn.as_raw_fd()) {
            Ok(0) => {}
            _ => {
                let _ = conn.write_all(b"error: the admin socket is for root only\n");
                continue;
            }
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let line = line.trim();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        if cmd == "flows-follow" {
            match &followers {
                Some(f) => {
                    // The connection now belongs to the followers: every record from here on.
                    f.add(conn);
                }
                None => {
                    let _ = conn.write_all(b"error: flow records are off (flow_log.enabled = false)\n");
                }
            }
            continue;
        }
        let reply = match cmd {
            "status" => status_text(&shared, &status),
            "stats" => stats_text(&shared),
            "flows" => flows_json(&shared),
            "policy-list" => serde_json::to_string(&rt.status()).unwrap_or_default() + "\n",
            "policy-swap" => {
                // Compiling a large component (an interpreter in Python or JavaScript) takes
                // tens of seconds: the swap runs on its own thread so that status, stats and
                // flows keep answering meanwhile. One swap at a time keeps generations in
                // the order they were asked for.
                let (rt, shared, lock, arg) = (rt.clone(), shared.clone(), swap_lock.clone(), arg.to_string());
                let spawned = std::thread::Builder::new().name("natgw-swap".into()).spawn(move || {
                    let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let reply = match policy_swap(&rt, &shared, &arg) {
                        Ok(msg) => format!("ok: {msg}\n"),
                        Err(e) => format!("error: {e}\n"),
                    };
                    let _ = conn.write_all(reply.as_bytes());
                });
                if let Err(e) = spawned {
                    eprintln!("natgw: admin: cannot start a thread for a policy swap: {e}");
                }
                continue;
            }
            other => format!("error: unknown command {other:?}\n"),
        };
        let _ = conn.write_all(reply.as_bytes());
    }
}

fn status_text(shared: &Shared, s: &StatusInfo) -> String {
    let t = counters::total(&shared.counters);
    let get = |c: Counter| t.iter().find(|(x, _)| *x == c).map_or(0, |x| x.1);
    let drops: u64 = t.iter().filter(|(c, _)| c.name().starts_with("PacketsDropCount")).map(|x| x.1).sum();
    let mut out = String::new();
    out += &format!("uptime: {}s\n", shared.start.elapsed().as_secs());
    out += &format!("workers: {}\n", s.workers);
    for i in &s.inside {
        out += &format!("inside: {i}\n");
    }
    out += &format!("outside: {}\n", s.outside);
    out += &format!("flows: {} (limit {})\n", get(Counter::ActiveConnectionCount), s.max_flows);
    out += &format!("neighbours: {}\n", shared.neighbours.load().len());
    out += &format!(
        "connections: attempted {} established {} port-allocation-errors {} idle-timeouts {}\n",
        get(Counter::ConnectionAttemptCount),
        get(Counter::ConnectionEstablishedCount),
        get(Counter::ErrorPortAllocation),
        get(Counter::IdleTimeoutCount)
    );
    out += &format!(
        "packets: from-source {} to-destination {} from-destination {} to-source {} dropped {}\n",
        get(Counter::PacketsInFromSource),
        get(Counter::PacketsOutToDestination),
        get(Counter::PacketsInFromDestination),
        get(Counter::PacketsOutToSource),
        drops
    );
    out
}

fn stats_text(shared: &Shared) -> String {
    let mut out: String =
        counters::total(&shared.counters).iter().map(|(c, v)| format!("{} {}\n", c.name(), v)).collect();
    out += &crate::telemetry::otlp::health_line(&shared.counters);
    out.push('\n');
    out
}

fn flows_json(shared: &Shared) -> String {
    let mut all: Vec<FlowLine> = Vec::new();
    for q in &shared.control {
        let (tx, rx) = std::sync::mpsc::channel();
        if q.push(ControlRequest::Flows(tx)).is_err() {
            continue;
        }
        if let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
            all.extend(v);
        }
    }
    serde_json::to_string(&all).unwrap_or_else(|_| "[]".into()) + "\n"
}

/// Sends one command to a running gateway and returns its answer (waiting up to 10 s).
pub fn admin_request(path: &str, command: &str) -> Result<String, ControlError> {
    admin_request_within(path, command, Duration::from_secs(10))
}

/// How long `natgw policy swap` waits for its answer: the gateway compiles the component
/// first, which for an 18 MB Python component on a busy 2-core machine takes most of a
/// minute (once: the compiled code is cached in `policy.cache_dir`).
pub const SWAP_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Sends one command to a running gateway and returns its answer, waiting up to `timeout`.
pub fn admin_request_within(path: &str, command: &str, timeout: Duration) -> Result<String, ControlError> {
    let mut s = UnixStream::connect(path).map_err(|e| ControlError::Connect { path: path.into(), source: e })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.write_all(format!("{command}\n").as_bytes())
        .map_err(|e| ControlError::Connect { path: path.into(), source: e })?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out)
        .map_err(|e| ControlError::Connect { path: path.into(), source: e })?;
    Ok(out)
}

/// `natgw flows --follow`: copies the gateway's flow records to stdout as they come.
pub fn follow_flows(path: &str) -> Result<(), ControlError> {
    use std::io::BufRead;
    let connect = |e| ControlError::Connect { path: path.into(), source: e };
    let mut s = UnixStream::connect(path).map_err(connect)?;
    s.write_all(b"flows-follow\n").map_err(connect)?;
    let stdout = std::io::stdout();
    for line in BufReader::new(s).lines() {
        let line = line.map_err(connect)?;
        if let Some(e) = line.strip_prefix("error: ") {
            return Err(ControlError::Refused(e.to_string()));
        }
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away (a closed pipe)
        }
    }
    Ok(())
}

/// `conntrack -L`-like lines.
pub fn format_flows(json: &str) -> String {
    let flows: Vec<FlowLine> = match serde_json::from_str(json.trim()) {
        Ok(f) => f,
        Err(_) => return json.to_string(),
    };
    let mut out = String::new();
    for f in &flows {
        out += &format!(
            "{:<4} {:<11} orig {:<43} nat {:<43} age {}s expires {}s packets {}/{} bytes {}/{} worker {}\n",
            f.proto,
            f.state,
            f.original,
            f.translated,
            f.age_s,
            f.expires_in_s,
            f.packets[0],
            f.packets[1],
            f.bytes[0],
            f.bytes[1],
            f.worker
        );
    }
    out += &format!("natgw: {} flow entries\n", flows.len());
    out
}
