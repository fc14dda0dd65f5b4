//! Starting and stopping the gateway's threads, and the root-only admin socket that
//! `natgw status`, `natgw stats`, `natgw flows` and `natgw policy` talk to.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::counters::{self, Counter};
use crate::io::l2thread::L2Thread;
use crate::io::sys::{self, PacketSocket, PacketSocketOptions};
use crate::io::worker::{Worker, WorkerLink};
use crate::io::{ControlRequest, FlowLine, IoError, Shared};
use crate::l2::L2Link;
use crate::nat::{InsideLink, NatConfig, Translator};
use crate::wire::ETHERTYPE_IPV4;
use super::config::{self, Config};

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
}

/// Starts the gateway and blocks until SIGINT/SIGTERM.
pub fn run(cfg: Config) -> Result<(), ControlError> {
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
    let shared = Arc::new(Shared::new(workers, &mtus)?);
    sys::install_signal_handlers();

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

    let nat_cfg = |w: usize| NatConfig {
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
        let translator = Translator::new(nat_cfg(w), shared.counters[w].clone(), shared.now_ms());
        built.push(Worker::new(w, links, translator, shared.clone(), cfg.rx_buffers, cfg.busy_poll_us)?);
    }

    // Last step that can fail: nothing is left on disk when an earlier one does.
    let admin = bind_admin(&cfg.admin_socket)?;
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
    let admin_shared = shared.clone();
    let admin_path = cfg.admin_socket.clone();
    threads.push(
        std::thread::Builder::new()
            .name("natgw-admin".into())
            .spawn(move || serve_admin(admin, admin_shared, status))
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
    }
    eprintln!("natgw: stopping");
    // Wake the admin thread's accept().
    let _ = UnixStream::connect(&admin_path);
    for t in threads {
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

fn serve_admin(listener: UnixListener, shared: Arc<Shared>, status: StatusInfo) {
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
        let reply = match line.trim() {
            "status" => status_text(&shared, &status),
            "stats" => stats_text(&shared),
            "flows" => flows_json(&shared),
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
    counters::total(&shared.counters).iter().map(|(c, v)| format!("{} {}\n", c.name(), v)).collect()
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

/// Sends one command to a running gateway and returns its answer.
pub fn admin_request(path: &str, command: &str) -> Result<String, ControlError> {
    let mut s = UnixStream::connect(path).map_err(|e| ControlError::Connect { path: path.into(), source: e })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("{command}\n").as_bytes())
        .map_err(|e| ControlError::Connect { path: path.into(), source: e })?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out)
        .map_err(|e| ControlError::Connect { path: path.into(), source: e })?;
    Ok(out)
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
