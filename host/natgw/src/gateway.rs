//! Starting and stopping the gateway's threads, and the root-only admin socket that
//! `natgw status`, `natgw stats`, `natgw flows` and `natgw policy` talk to.

use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::admin::{
    self, AdminError, CounterValue, Envelope, FlowEntry, FlowFilter, HookStatus, LinkStatus, Reply, Request, Stats,
    Status, SwapReport, TopReport, UpgradeReport,
};
use crate::config::{self, Config};
use crate::handoff;
use crate::report;
use crossbeam_queue::ArrayQueue;
use natgw_core::conntrack::{proto_name, FlowSummary};
use natgw_core::counters::{self, Counter};
use natgw_core::l2::L2Link;
use natgw_core::nat::{InsideLink, NatConfig, Translator};
use natgw_io::l2thread::L2Thread;
use natgw_io::sys::{self, PacketSocket, PacketSocketOptions};
use natgw_io::worker::{Rings, Worker, WorkerLink};
use natgw_io::{ControlRequest, IoError, Shared};
use natgw_policy::config::{FailMode, Hook};
use natgw_policy::flowlog::{FlowLogExporter, Sinks, WallClock};
use natgw_policy::worker::WorkerPolicy;
use natgw_policy::{PolicyError, Runtime};
use natgw_telemetry::follow::Followers;
use natgw_telemetry::otlp::OtlpExporter;
use natgw_telemetry::prometheus;
use natgw_wire::ETHERTYPE_IPV4;

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
    #[error("another natgw is already running on interface {interface} (pid {holder}; lock {lock})")]
    InterfaceTaken { interface: String, holder: String, lock: String },
    #[error("interface lock {lock}: {source}")]
    InterfaceLock { lock: String, source: std::io::Error },
    #[error("admin socket {path}: {source}")]
    AdminSocket { path: String, source: std::io::Error },
    #[error("admin.socket = {path:?}: the path is {what}; natgw replaces only a stale socket there (remove it, or choose another path)")]
    AdminSocketOccupied { path: String, what: &'static str },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Ha(crate::ha::HaError),
    #[error("{0}")]
    Usage(String),
    #[error("natgw ha check: {0}")]
    Unhealthy(String),
    #[error("natgw run needs root (CAP_NET_RAW, CAP_NET_ADMIN); effective uid is {0}")]
    NotRoot(u32),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Vectors(#[from] natgw_policy::vectors::VectorError),
    #[error("{path}: {source}")]
    Path { path: String, source: std::io::Error },
    #[error("policy bench measures the per-flow hooks (egress, port-pool), not {0}")]
    BenchHook(Hook),
    #[error("{file}: the instance does not export the egress hook")]
    NotEgress { file: String },
    #[error("{summary}")]
    VectorsFailed { summary: String },
    #[error("otlp bench: {reason}")]
    OtlpBench { reason: String },
    #[error("{key} = \"{addr}\": cannot listen: {source}")]
    Listen { key: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("--takeover-fd: {0}")]
    Takeover(String),
}

/// Starts the gateway and blocks until SIGINT/SIGTERM. On SIGHUP the policy hooks are
/// reloaded from `config_path` and the flow-log file is opened again (log rotation). With
/// `takeover_fd` (`natgw upgrade` passes it) the gateway takes its flows, sockets and
/// locks from the process that started it.
pub fn run(cfg: Config, config_path: Option<PathBuf>, takeover_fd: Option<i32>) -> Result<(), ControlError> {
    let started = Instant::now();
    let uid = sys::effective_uid();
    if uid != 0 {
        return Err(ControlError::NotRoot(uid));
    }
    let takeover = takeover_fd
        .map(sys::adopt_inherited_fd)
        .transpose()
        .map_err(|e| ControlError::Takeover(format!("not an open descriptor: {e}")))?;
    // Under systemd: the flow journal and packet sockets a stopped or crashed natgw left in
    // its file-descriptor store (see `restart`).
    // In a pair (`[ha]`) the peer keeps the flows: a restarted node comes back as the
    // standby and takes its state from the active.
    let keep_flows = cfg.keep_flows && cfg.ha.is_none() && std::env::var_os("NOTIFY_SOCKET").is_some();
    let mut stored = match takeover {
        None => crate::restart::Stored::take(),
        Some(_) => crate::restart::Stored::default(),
    };
    if !keep_flows {
        for n in stored.names() {
            crate::restart::unstore(&n);
        }
        stored = crate::restart::Stored::default();
    }
    let stored_journals: Vec<String> = stored.names().into_iter().filter(|n| n.starts_with("natgw-journal-")).collect();
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
    // One gateway per interface: held until the process exits (or hands the files over;
    // a successor receives them from its predecessor).
    let interface_names: Vec<String> =
        cfg.inside.iter().map(|c| c.interface.clone()).chain(std::iter::once(cfg.outside.interface.clone())).collect();
    let mut interface_locks = match takeover {
        None => lock_interfaces(Path::new(INTERFACE_LOCK_DIR), interface_names.iter().map(String::as_str))?,
        Some(_) => Vec::new(),
    };
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1") {
        // The kernel would forward the same frames natgw translates, untranslated.
        tracing::warn!("natgw: warning: net.ipv4.ip_forward=1 in this namespace; set it to 0 so only natgw forwards");
    }

    let workers = cfg.worker_count();
    let mtus: Vec<u32> = inside_info.iter().chain(std::iter::once(&outside_info)).map(|i| i.mtu).collect();
    sys::install_signal_handlers();

    // Policies: compiled, validated and instantiated before any packet moves; a bad one
    // stops the start with the reason.
    let pool_names: Vec<String> = cfg.pools.iter().map(|p| p.name.clone()).collect();
    let rt = Runtime::new(cfg.policy.clone(), workers, pool_names)?;
    // DNS name binding: one table for every worker (an answer and the SYN that follows it
    // may meet different workers) and for the policies' `names` import.
    let names = cfg.dns.as_ref().map(|d| Arc::new(natgw_core::dns::NameTable::new(d.limits)));
    if let Some(t) = &names {
        rt.set_name_table(t.clone());
    }
    rt.load_configured()?;

    let source_ports = Arc::new(natgw_core::nat::pool::SourcePorts::default());
    let source_flows = Arc::new(natgw_core::shared_counts::SharedCounts::default());
    let nat_cfg = |w: usize| NatConfig {
        source_ports: source_ports.clone(),
        source_flows: source_flows.clone(),
        inside: cfg
            .inside
            .iter()
            .zip(&inside_info)
            .map(|(c, info)| InsideLink {
                name: c.interface.clone(),
                addresses: c.addresses.clone(),
                mtu: u16::try_from(info.mtu).unwrap_or(u16::MAX),
            })
            .collect(),
        external_addrs: cfg.outside.addresses.clone(),
        outside_net: cfg.outside.subnet,
        outside_gateway: cfg.outside.gateway,
        outside_mtu: u16::try_from(outside_info.mtu).unwrap_or(u16::MAX),
        pools: cfg.pools.clone(),
        filtering: cfg.filtering,
        timeouts: cfg.timeouts,
        max_flows: (cfg.max_flows / workers).max(1),
        // The worker's share of the mark. A source's limit holds for the gateway: its
        // flows are counted over every worker (`source_flows`), however they spread.
        high_water_flows: (cfg.max_flows / workers).max(1) * usize::from(cfg.high_water_percent) / 100,
        max_flows_per_source: cfg.max_flows_per_source,
        max_inbound_per_mapping: cfg.max_inbound_flows_per_mapping,
        fragment_memory: cfg.fragment_memory / workers,
        worker: w,
        workers,
        icmp_error_rate: cfg.icmp_error_rate,
        refusal_cache_ms: cfg.refusal_cache_ms,
        node_slice: cfg.ha.as_ref().map_or((0, 1), |ha| (ha.node_slice(), 2)),
    };

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
                .map(|a| natgw_wire::Ipv4Net { addr: *a, prefix: cfg.outside.subnet.prefix })
                .collect(),
        }))
        .collect();
    // The config allows at most 64 inside links: every link index fits a LinkId.
    let link_id = |i: usize| natgw_core::l2::LinkId::try_from(i).unwrap_or(natgw_core::l2::LinkId::MAX);
    let outside_link = link_id(cfg.inside.len());
    // What waits for the kernel (binding packet sockets, setting up rings: milliseconds
    // each) is made now, before a predecessor's workers stop for the handoff.
    let arp_sockets = L2Thread::open_sockets(&l2_links)?;
    let mut rings = (0..workers).map(|_| Rings::new(cfg.rx_buffers)).collect::<Result<Vec<_>, _>>()?.into_iter();
    let mut terms = handoff::Terms {
        version: env!("CARGO_PKG_VERSION").into(),
        workers,
        interfaces: interface_names.clone(),
        fingerprint: nat_cfg(0).state_fingerprint(),
        reads_rx_rings: true,
        // Known once the sockets are open (below).
        rx_rings_in_use: false,
    };
    // A successor: ready now. The predecessor sends a pre-copy of its flows while it
    // forwards on, or (an older natgw) pauses its workers and sends everything.
    let arrival = match takeover {
        Some(channel) => {
            let prepare_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let links = interface_names.len();
            Some(
                handoff::take_over(channel, terms.clone(), links, prepare_ms)
                    .map_err(|e| ControlError::Takeover(e.to_string()))?,
            )
        }
        None => None,
    };
    let (mut inherited, precopy) = match arrival {
        Some(handoff::Arrival::State(i)) => (Some(i), None),
        Some(handoff::Arrival::PreCopy { now_ms, state, handover }) => (None, Some((now_ms, state, handover))),
        None => (None, None),
    };
    let mut state_received = inherited.as_ref().map(|_| Instant::now());
    let per_worker_flows = (cfg.max_flows / workers).max(1);
    let restored = stored.restore(workers, per_worker_flows, terms.fingerprint);
    let links = interface_names.len();
    let stored_names = stored.names();
    // The stored sockets, all adopted or none (a socket left in the store would take its
    // share of the frames in its fanout group).
    let stored_sockets: Option<Vec<Vec<PacketSocket>>> = stored.take_sockets(workers, links).and_then(|all| {
        let adopted: Result<Vec<Vec<PacketSocket>>, IoError> = all
            .into_iter()
            .map(|fds| fds.into_iter().zip(&interface_names).map(|(fd, name)| PacketSocket::adopt(fd, name)).collect())
            .collect();
        adopted.map_err(|e| tracing::warn!("natgw: the stored packet sockets are not taken: {e}")).ok()
    });
    if stored_sockets.is_none() {
        for n in stored_names.iter().filter(|n| n.starts_with("natgw-packet-")) {
            crate::restart::unstore(n);
        }
    }
    let mut shared = Shared::new(workers, &mtus, cfg.flow_log.enabled)?;
    let predecessor_now = inherited.as_ref().map(|i| i.now_ms).or(precopy.as_ref().map(|p| p.0));
    if let Some(now_ms) = predecessor_now {
        // The predecessor's clock: every time in the handed-over table keeps its meaning.
        shared.adopt_clock(now_ms);
    } else if let Some(r) = &restored {
        // The journal's writer's clock (the same monotonic clock, another process): its
        // zero lies `origin_ms` into the system's clock (wrapping: it starts at
        // `CLOCK_BASE_MS`, before the machine booted).
        shared.adopt_clock(sys::monotonic_ms().wrapping_sub(r.origin_ms));
    }
    if cfg.ha.is_some() {
        // A pair starts as standby (keepalived promotes); a successor keeps its predecessor's role.
        shared.ha = Some(natgw_io::HaShared::new(workers, inherited.as_ref().is_some_and(|i| i.active)));
    }
    let shared = Arc::new(shared);
    let mut l2 = L2Thread::new(l2_links, arp_sockets, shared.clone(), vec![(outside_link, cfg.outside.gateway)])?;

    let mut translators = Vec::new();
    for w in 0..workers {
        let mut translator = Translator::new(nat_cfg(w), shared.counters[w].clone(), shared.now_ms());
        if let (Some(dc), Some(table)) = (&cfg.dns, &names) {
            translator.set_name_binder(natgw_core::dns::NameBinder::new(dc, table.clone()));
        }
        translator.set_policy(Box::new(WorkerPolicy::new(rt.clone(), w, shared.counters[w].clone())));
        translator.record_flow_ends(shared.flow_log_enabled, cfg.flow_log.refused, cfg.flow_log.active_interval_s);
        if cfg.ha.is_some() || keep_flows {
            translator.enable_replication();
        }
        translators.push(translator);
    }
    // The pre-copy: imported while the predecessor forwards on (each section as of its
    // worker's export), then the cutover's state.
    let precopied = precopy.is_some();
    let mut precopy_refused = 0;
    if let Some((_, state, handover)) = precopy {
        let (flows, refused) = match import_precopy(&mut translators, &state, workers) {
            Ok(r) => r,
            Err(e) => {
                handover.failed(&e);
                return Err(ControlError::Takeover(e));
            }
        };
        tracing::info!("natgw: took a pre-copy of {flows} flow(s) ({refused} refused) while the predecessor forwards");
        precopy_refused = refused;
        inherited = Some(handover.copied(flows, refused).map_err(|e| ControlError::Takeover(e.to_string()))?);
        state_received = Some(Instant::now());
        if let (Some(ha), Some(i)) = (&shared.ha, &inherited) {
            ha.active.store(i.active, std::sync::atomic::Ordering::Release);
        }
    }
    let state = inherited.as_mut().map(|i| std::mem::take(&mut i.state)).unwrap_or_default();
    let (sections, neighbours) = match &inherited {
        Some(_) => handoff::decode_state(&state).map_err(|e| ControlError::Takeover(e.to_string()))?,
        None => (Vec::new(), Vec::new()),
    };
    let deltas = inherited.as_ref().map(|i| i.delta.clone()).unwrap_or_default();
    let expected_sections = if deltas.is_empty() { workers } else { 2 * workers };
    if inherited.is_some() && (sections.len() != expected_sections || (!deltas.is_empty() && deltas.len() != workers)) {
        let e = format!("{} sections of flow state for {workers} workers", sections.len());
        if let Some(i) = &inherited {
            i.failed(&e);
        }
        return Err(ControlError::Takeover(e));
    }
    if !neighbours.is_empty() {
        l2.seed(neighbours.into_iter().collect());
    } else if let Some(r) = restored.as_ref().filter(|r| !r.neighbours.is_empty()) {
        // The journal's writer's neighbours: the first packets need no ARP.
        l2.seed(r.neighbours.clone());
    }

    // Every worker opens its own socket per link; with several workers they join one
    // fanout group per link whose steering program keeps each flow on its owner.
    // 1024 groups of 64 links: a process's groups do not meet another natgw's.
    let group_base = u16::try_from(std::process::id() % 1024).unwrap_or(0) * 64;
    let workers_from = Instant::now();
    let mut built = Vec::new();
    let mut parts = Vec::new();
    let mut inherited_sockets =
        inherited.as_mut().map(|i| std::mem::take(&mut i.sockets)).unwrap_or_default().into_iter();
    let reuse_stored = stored_sockets.is_some();
    let mut stored_sockets = stored_sockets.unwrap_or_default().into_iter();
    let mut to_store = Vec::new();
    let (mut imported, mut import_refused) = (0u64, 0u64);
    let mut translators = translators.into_iter();
    // Per link: how many of the workers' sockets read a receive ring (`natgw status`), and
    // why rings asked for were refused (one log line).
    let mut ring_sockets = vec![0usize; links];
    let mut rings_refused = Vec::new();
    for w in 0..workers {
        let mut adopted = inherited_sockets.next().unwrap_or_default().into_iter();
        let mut from_store = stored_sockets.next().unwrap_or_default().into_iter();
        let mut links = Vec::new();
        let all = cfg
            .inside
            .iter()
            .map(|c| (c.interface.clone(), true))
            .chain(std::iter::once((cfg.outside.interface.clone(), false)));
        for (li, (name, inside)) in all.enumerate() {
            let fanout =
                (workers > 1).then(|| (group_base.wrapping_add(u16::from(link_id(li))), sys::steering_program(inside)));
            let opts = PacketSocketOptions {
                protocol: ETHERTYPE_IPV4,
                vnet_hdr: true,
                fanout,
                rcvbuf: 8 << 20,
                rx_ring: cfg.rx_ring,
            };
            let mut socket = match (&inherited, adopted.next(), from_store.next()) {
                (Some(_), Some(fd), _) => steered(PacketSocket::adopt(fd, &name)?, &opts)?,
                (_, _, Some(socket)) => steered(socket, &opts)?,
                _ => {
                    let socket = PacketSocket::open(&name, &opts)?;
                    if keep_flows && inherited.is_none() && !reuse_stored {
                        to_store.push((crate::restart::packet_name(w, li), socket.raw_fd()));
                    }
                    socket
                }
            };
            let (side, index) = if inside {
                (natgw_core::conntrack::Side::Inside, link_id(li))
            } else {
                (natgw_core::conntrack::Side::Outside, 0)
            };
            if let Some(e) = socket.rx_ring_refused.take() {
                rings_refused.push(format!("{name} (worker {w}): {e}"));
            }
            let rx_ring = socket.take_rx_ring();
            if let Some(n) = ring_sockets.get_mut(li) {
                *n += usize::from(rx_ring.is_some());
            }
            links.push(WorkerLink { socket, rx_ring, side, index });
        }
        let Some(translator) = translators.next() else {
            return Err(IoError::Uring(std::io::ErrorKind::NotFound.into()).into());
        };
        parts.push((links, translator));
    }
    if !rings_refused.is_empty() {
        tracing::warn!("natgw: no receive ring, so receiving by socket, on {}", rings_refused.join("; "));
    }
    let packet_paths: Vec<String> = ring_sockets.iter().map(|&n| packet_path(n, workers)).collect();
    // A successor must read these rings (`Terms::refusal`).
    terms.rx_rings_in_use = ring_sockets.iter().any(|&n| n > 0);
    for (name, &n) in interface_names.iter().zip(&ring_sockets) {
        if (inherited.is_some() || reuse_stored) && (n > 0) != cfg.rx_ring {
            tracing::info!(
                "natgw: {name}: the sockets taken over receive {} as before; dataplane.receive applies to sockets this process opens",
                if n > 0 { "by ring" } else { "by socket" }
            );
        }
    }
    // The handed-over (or journaled) flows: each worker's section on a thread of its own
    // (the pause of an upgrade is mostly this, about a microsecond a flow).
    let journaled: Vec<Vec<u8>> = match (&inherited, &restored) {
        (None, Some(r)) => r.replica.sections(shared.now_ms()),
        _ => Vec::new(),
    };
    if let Some(r) = restored.as_ref().filter(|_| inherited.is_none()) {
        let now = shared.now_ms();
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter_mut()
                .zip(&journaled)
                .map(|((_, t), section)| scope.spawn(move || t.import_state(section, now)))
                .collect();
            handles.into_iter().map(|h| h.join().ok()).collect()
        });
        let (mut taken, mut refused) = (0, r.refused);
        for (w, result) in results.into_iter().enumerate() {
            match result {
                Some(Ok(report)) => {
                    shared.counters[w].add(Counter::JournalFlowsRestored, report.imported);
                    shared.counters[w].add(Counter::JournalFlowsRefused, report.refused());
                    taken += report.imported;
                    refused += report.refused();
                }
                Some(Err(e)) => tracing::warn!("natgw: worker {w}: the flow journal's flows are not taken: {e}"),
                None => tracing::warn!("natgw: worker {w}: taking the flow journal's flows failed"),
            }
        }
        shared.counters[0].add(Counter::JournalFlowsRefused, r.refused);
        tracing::info!(
            "natgw: took {taken} flow(s) from the flow journal {} ({refused} refused), {} ms after start",
            r.name,
            started.elapsed().as_millis()
        );
    }
    if let Some(i) = &inherited {
        let now = shared.now_ms();
        let (sections, ended) = sections.split_at(workers.min(sections.len()));
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter_mut()
                .zip(sections)
                .enumerate()
                .map(|(w, ((_, t), section))| {
                    let delta = (deltas.get(w) == Some(&true)).then(|| natgw_core::nat::precopy::Delta {
                        section: section.to_vec(),
                        ended: ended.get(w).map(|e| e.to_vec()).unwrap_or_default(),
                    });
                    scope.spawn(move || match delta {
                        Some(d) => t.apply_delta(&d, now),
                        None => {
                            // No delta after a pre-copy: the whole table replaces it.
                            if precopied {
                                t.discard_flows();
                            }
                            t.import_state(section, now)
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(natgw_core::nat::handoff::HandoffError::Panicked)))
                .collect()
        });
        for r in results {
            match r {
                Ok(r) => {
                    imported += r.imported;
                    import_refused += r.refused();
                }
                Err(e) => {
                    i.failed(&e.to_string());
                    return Err(ControlError::Takeover(e.to_string()));
                }
            }
        }
        if precopied {
            // Taken over: every flow the tables hold now, from the pre-copy or its delta.
            imported = parts.iter().map(|(_, t)| t.flows().len() as u64).sum();
            import_refused += precopy_refused;
        }
    }
    // This process's own journal, written whole by the workers from the flows they hold.
    let mut own_journal = None;
    let mut regions = Vec::new().into_iter();
    if let (true, Some((_, t))) = (keep_flows, parts.first()) {
        let origin = sys::monotonic_ms().wrapping_sub(shared.now_ms());
        match crate::restart::OwnJournal::create(
            workers,
            t.journal_capacity(),
            terms.fingerprint,
            origin,
            stored_journals.clone(),
        ) {
            Ok((j, r)) => {
                own_journal = Some(j);
                regions = r.into_iter();
            }
            Err(e) => tracing::warn!("natgw: no flow journal ({e}): a restart will not keep the flows"),
        }
    }
    for (w, (links, translator)) in parts.into_iter().enumerate() {
        let Some(worker_rings) = rings.next() else {
            return Err(IoError::Uring(std::io::ErrorKind::NotFound.into()).into());
        };
        built.push(Worker::new(w, links, translator, shared.clone(), worker_rings, cfg.busy_poll_us, regions.next()));
    }

    // The pair's sync listener: a bad `ha.address` stops the start here. A successor binds
    // it once its predecessor has let go (the sync link then reconnects and resyncs).
    let ha = cfg.ha.clone().map(|h| {
        let per_worker = (cfg.max_flows / workers).max(1);
        Arc::new(crate::ha::Ha::new(h, shared.clone(), workers, terms.fingerprint, per_worker))
    });
    let ha_listener = match (&ha, &inherited) {
        (Some(h), None) => Some(h.bind(Duration::ZERO).map_err(ControlError::Ha)?),
        _ => None,
    };
    // Last steps that can fail: nothing is left on disk when an earlier one does. The admin
    // socket first, so a second instance is reported as such.
    let (admin, inherited_metrics) = match inherited.as_mut() {
        Some(i) => {
            interface_locks = std::mem::take(&mut i.locks);
            for f in &mut interface_locks {
                use std::io::Seek;
                let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| writeln!(f, "{}", std::process::id()));
            }
            (
                i.admin
                    .try_clone()
                    .map_err(|e| ControlError::AdminSocket { path: cfg.admin_socket.clone(), source: e })?,
                i.metrics.take(),
            )
        }
        None => (bind_admin(&cfg.admin_socket)?, None),
    };
    admin.set_nonblocking(true).map_err(|e| ControlError::AdminSocket { path: cfg.admin_socket.clone(), source: e })?;
    let prometheus_listener = match cfg.metrics_listen {
        Some(_) if inherited_metrics.is_some() => inherited_metrics,
        Some(a) => match prometheus::bind(a) {
            Ok(l) => Some(l),
            Err(e) => {
                if inherited.is_none() {
                    let _ = std::fs::remove_file(&cfg.admin_socket);
                }
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
    if let Some(h) = &ha {
        let h = h.clone();
        threads.push(
            std::thread::Builder::new()
                .name("natgw-ha".into())
                .spawn(move || h.run(ha_listener))
                .map_err(|e| IoError::Os("spawn", e))?,
        );
    }
    let status = StatusInfo {
        ha,
        dns: names.clone().zip(cfg.dns.as_ref().map(|d| d.resolvers.iter().map(ToString::to_string).collect())),
        workers,
        inside: cfg
            .inside
            .iter()
            .map(|c| LinkStatus {
                interface: c.interface.clone(),
                addresses: c.addresses.iter().map(|n| n.to_string()).collect(),
                mtu: 0,
                workers_mtu: Vec::new(),
                packet_path: String::new(),
            })
            .zip(&packet_paths)
            .map(|(l, path)| LinkStatus { packet_path: path.clone(), ..l })
            .collect(),
        outside: LinkStatus {
            interface: cfg.outside.interface.clone(),
            addresses: cfg.outside.addresses.iter().map(|a| a.to_string()).collect(),
            mtu: 0,
            workers_mtu: Vec::new(),
            packet_path: packet_paths.last().cloned().unwrap_or_default(),
        },
        gateway: cfg.outside.gateway.to_string(),
        max_flows: cfg.max_flows,
        pools: cfg.pools.iter().map(|p| p.name.clone()).collect(),
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
            tracing::info!(
                "natgw: otlp: exporting {} to {} over {}",
                match (o.logs && cfg.flow_log.enabled, o.metrics_interval_ms > 0) {
                    (true, true) => "flow records and metrics",
                    (true, false) => "flow records",
                    (false, true) => "metrics",
                    (false, false) => "nothing",
                },
                o.endpoint,
                match o.protocol {
                    natgw_telemetry::config::OtlpProtocol::Grpc => "gRPC",
                    natgw_telemetry::config::OtlpProtocol::HttpProtobuf => "HTTP/protobuf",
                }
            );
            Some(
                std::thread::Builder::new()
                    .name("natgw-otlp".into())
                    .spawn(move || {
                        if let Err(e) = exporter.run(stop) {
                            tracing::warn!("natgw: {e}; nothing is exported over OTLP");
                        }
                    })
                    .map_err(|e| IoError::Os("spawn", e))?,
            )
        }
        None => None,
    };
    let metrics_fd = prometheus_listener.as_ref().map(AsRawFd::as_raw_fd);
    if let Some(l) = prometheus_listener {
        let counters = shared.counters.clone();
        threads.push(
            std::thread::Builder::new()
                .name("natgw-metrics".into())
                .spawn(move || {
                    if let Err(e) = prometheus::serve(l, counters, sys::stop_requested) {
                        tracing::warn!("natgw: metrics endpoint stopped: {e}");
                    }
                })
                .map_err(|e| IoError::Os("spawn", e))?,
        );
    }
    let flow_log_reopen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let exporter = FlowLogExporter {
        rt: rt.clone(),
        queue: shared.flow_ends.clone(),
        counters: shared.flow_log_counters(),
        sinks: Sinks {
            file: cfg.flow_log.file.clone(),
            reopen: flow_log_reopen.clone(),
            followers: followers.clone(),
            otlp: otlp_queue,
        },
        interval: Duration::from_millis(cfg.flow_log.interval_ms),
        batch: cfg.flow_log.batch,
        clock: WallClock::new(shared.now_ms()),
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
    let upgrades = Arc::new(UpgradeContext {
        config_path: config_path.as_ref().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        terms,
        lock_fds: interface_locks.iter().map(AsRawFd::as_raw_fd).collect(),
        admin_fd: admin.as_raw_fd(),
        metrics_fd,
        handing_over: Default::default(),
        handed_over: Default::default(),
        one_at_a_time: Default::default(),
        journal: own_journal.as_ref().map(|j| j.name.clone()),
    });
    let admin_upgrades = upgrades.clone();
    let explain = Arc::new(ExplainInputs { cfg: cfg.clone(), names: names.clone() });
    threads.push(
        std::thread::Builder::new()
            .name("natgw-admin".into())
            .spawn(move || serve_admin(admin, admin_shared, admin_rt, status, admin_followers, admin_upgrades, explain))
            .map_err(|e| IoError::Os("spawn", e))?,
    );
    if let Some(i) = &inherited {
        // The workers run: the predecessor's end.
        if let Err(e) = i.running(imported, import_refused) {
            tracing::warn!("natgw: the process handing over did not hear that this one runs: {e}");
        }
        let since = |t: Option<Instant>| t.map_or(0, |t| t.elapsed().as_micros());
        tracing::info!(
            "natgw: took over {imported} flow(s) from the previous process ({import_refused} refused): forwarding {} us after the state arrived (workers and flows {} us); started {} ms ago",
            since(state_received),
            since(Some(workers_from)),
            started.elapsed().as_millis()
        );
    }
    tracing::info!(
        "natgw: running with {workers} worker(s); inside {}; outside {} ({}); admin socket {}",
        cfg.inside.iter().map(|c| c.interface.as_str()).collect::<Vec<_>>().join(","),
        cfg.outside.interface,
        cfg.outside.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        cfg.admin_socket
    );
    if let Some(j) = &own_journal {
        crate::restart::store(&j.name, j.fd());
    }
    for (name, fd) in &to_store {
        crate::restart::store(name, *fd);
    }
    match sys::notify(&format!("READY=1\nMAINPID={}", std::process::id()), &[]) {
        Ok(true) => tracing::info!("natgw: told systemd it is ready, {} ms after start", started.elapsed().as_millis()),
        Ok(false) => {}
        Err(e) => tracing::warn!("natgw: telling systemd natgw is ready: {e}"),
    }
    let mut journal_neighbours = u64::MAX;
    while !sys::stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(j) = own_journal.as_mut() {
            let version = shared.neighbour_version.load(std::sync::atomic::Ordering::Acquire);
            if version != journal_neighbours {
                journal_neighbours = version;
                let table: Vec<_> = shared.neighbours.load().iter().map(|(&(link, a), n)| (link, a, n.mac)).collect();
                j.write_neighbours(&table);
            }
            let written = shared.journals_written.load(std::sync::atomic::Ordering::Acquire);
            if j.complete_when(written, workers) {
                tracing::info!("natgw: flow journal {} written whole; a restart keeps the flows", j.name);
            }
        }
        if sys::take_reload_request() {
            // logrotate's postrotate: the flow log is opened again by its path.
            flow_log_reopen.fetch_add(1, std::sync::atomic::Ordering::Release);
            match &config_path {
                Some(p) => reload_policies(p, &cfg, &rt, &shared),
                None => tracing::warn!("natgw: SIGHUP: no config file to reload"),
            }
        }
    }
    tracing::info!("natgw: stopping");
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
    let handed_over = upgrades.handed_over.load(std::sync::atomic::Ordering::Acquire);
    if handed_over {
        tracing::info!("natgw: handed over; the new process serves {admin_path}");
    } else {
        let _ = std::fs::remove_file(&admin_path);
    }
    drop(interface_locks);
    tracing::info!("natgw: stopped");
    Ok(())
}

/// The old side of a pre-copy: every worker's flows, exported between two of its batches,
/// to the successor, which imports them (up to a minute for a large table).
fn precopy(shared: &Shared, successor: &mut handoff::Successor) -> Result<(), String> {
    let began = Instant::now();
    let mut answers = Vec::new();
    for (w, q) in shared.control.iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        if q.push(ControlRequest::PreCopy(tx)).is_err() {
            return Err(format!("worker {w} has no room for the pre-copy request"));
        }
        shared.wake(w);
        answers.push(rx);
    }
    let mut sections = Vec::new();
    for (w, rx) in answers.iter().enumerate() {
        sections.push(
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|_| format!("worker {w} did not export its flows within 5 s"))?,
        );
    }
    let slices: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
    let memfd = sys::sealed_memfd("natgw-precopy", &handoff::encode_state(&slices, &[]))
        .map_err(|e| format!("pre-copy state file: {e}"))?;
    let exported = began.elapsed();
    let (flows, refused) = successor
        .precopy(shared.now_ms(), memfd.as_raw_fd(), Duration::from_secs(60))
        .map_err(|e| format!("pre-copy: {e}"))?;
    tracing::info!(
        "natgw: upgrade: pre-copied {flows} flow(s) ({refused} refused): exported in {} ms, imported by pid {} {} ms later",
        exported.as_millis(),
        successor.pid,
        (began.elapsed() - exported).as_millis()
    );
    Ok(())
}

/// Imports a pre-copy (`handoff::encode_state` of one section per worker) into the
/// workers' translators, each section as of its own export: `(flows, refused)`.
fn import_precopy(translators: &mut [Translator], state: &[u8], workers: usize) -> Result<(u64, u64), String> {
    let (sections, _) = handoff::decode_state(state).map_err(|e| e.to_string())?;
    if sections.len() != workers || translators.len() != workers {
        return Err(format!("a pre-copy of {} sections for {workers} workers", sections.len()));
    }
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = translators
            .iter_mut()
            .zip(&sections)
            .map(|(t, section)| {
                scope.spawn(move || {
                    let at = natgw_core::nat::handoff::SectionHeader::parse(section)?.0.now_ms;
                    t.import_state(section, at)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(natgw_core::nat::handoff::HandoffError::Panicked))).collect()
    });
    let (mut flows, mut refused) = (0, 0);
    for r in results {
        let r = r.map_err(|e| e.to_string())?;
        flows += r.imported;
        refused += r.refused();
    }
    Ok((flows, refused))
}

/// What `natgw upgrade` needs of the running gateway.
struct UpgradeContext {
    /// The config file the successor is started with (absolute).
    config_path: Option<PathBuf>,
    terms: handoff::Terms,
    lock_fds: Vec<std::os::fd::RawFd>,
    admin_fd: std::os::fd::RawFd,
    metrics_fd: Option<std::os::fd::RawFd>,
    /// The admin thread accepts nothing while set (the successor holds the listener too).
    handing_over: std::sync::atomic::AtomicBool,
    /// The successor runs: this process ends without removing the admin socket.
    handed_over: std::sync::atomic::AtomicBool,
    one_at_a_time: std::sync::Mutex<()>,
    /// This process's flow journal in systemd's store: the successor writes its own.
    journal: Option<String>,
}

/// Hands everything to a new process running `binary`; see `handoff`. On any failure the
/// workers resume and the successor is stopped: the gateway goes on as before.
fn upgrade(ctx: &UpgradeContext, shared: &Shared, binary: &Path) -> Result<UpgradeReport, AdminError> {
    use natgw_io::{HandoverOutcome, WorkerHandover};
    use std::sync::atomic::Ordering;
    let refuse = |reason: String| AdminError::UpgradeRefused { reason };
    let Ok(_one) = ctx.one_at_a_time.try_lock() else { return Err(refuse("another upgrade is under way".into())) };
    let Some(config) = &ctx.config_path else {
        return Err(refuse("the gateway was not started from a config file".into()));
    };
    if !binary.is_absolute() {
        return Err(refuse(format!("{}: give the binary's absolute path", binary.display())));
    }
    tracing::info!("natgw: upgrade: starting {} with {}", binary.display(), config.display());
    let mut successor = handoff::Successor::start(binary, config, &ctx.terms, Duration::from_secs(600))
        .map_err(|e| refuse(e.to_string()))?;
    // The pre-copy: every worker exports its flows between two batches and forwards on,
    // noting what changes; the successor imports them meanwhile.
    let precopied = successor.takes_precopy;
    if precopied {
        if let Err(why) = precopy(shared, &mut successor) {
            successor.abandon();
            for (w, q) in shared.control.iter().enumerate() {
                let _ = q.push(ControlRequest::EndPreCopy);
                shared.wake(w);
            }
            tracing::warn!("natgw: upgrade: {why}; forwarding on");
            return Err(refuse(why));
        }
    }
    ctx.handing_over.store(true, Ordering::Release);
    let paused = Instant::now();
    let mut outcomes = Vec::new();
    let mut answers = Vec::new();
    for (w, q) in shared.control.iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (outcome_tx, outcome_rx) = std::sync::mpsc::channel();
        if q.push(ControlRequest::HandOver(tx, outcome_rx)).is_ok() {
            outcomes.push(outcome_tx);
            answers.push(rx);
        }
        shared.wake(w);
    }
    let parts: Vec<WorkerHandover> =
        answers.iter().filter_map(|rx| rx.recv_timeout(Duration::from_secs(2)).ok()).collect();
    let resume = |successor: &mut handoff::Successor, why: String| {
        successor.abandon();
        for o in &outcomes {
            let _ = o.send(HandoverOutcome::Resume);
        }
        ctx.handing_over.store(false, Ordering::Release);
        tracing::warn!("natgw: upgrade: {why}; forwarding on");
        refuse(why)
    };
    if parts.len() != shared.control.len() {
        return Err(resume(&mut successor, "a worker did not stop within 2 s".into()));
    }
    let neighbours: Vec<handoff::NeighbourEntry> =
        shared.neighbours.load().iter().map(|(&(link, a), n)| (link, a, n.mac)).collect();
    // After a pre-copy: each worker's delta (or whole table), then each one's ended keys.
    let mut sections: Vec<&[u8]> = parts.iter().map(|p| p.state.as_slice()).collect();
    let delta: Vec<bool> = if precopied { parts.iter().map(|p| p.ended.is_some()).collect() } else { Vec::new() };
    if precopied {
        sections.extend(parts.iter().map(|p| p.ended.as_deref().unwrap_or_default()));
    }
    let memfd = match sys::sealed_memfd("natgw-flows", &handoff::encode_state(&sections, &neighbours)) {
        Ok(m) => m,
        Err(e) => return Err(resume(&mut successor, format!("flow state file: {e}"))),
    };
    let mut fds = ctx.lock_fds.clone();
    fds.push(ctx.admin_fd);
    fds.extend(ctx.metrics_fd);
    fds.push(memfd.as_raw_fd());
    for p in &parts {
        fds.extend(&p.sockets);
    }
    let layout = handoff::Layout {
        locks: ctx.lock_fds.len(),
        metrics: ctx.metrics_fd.is_some(),
        sockets: parts.iter().map(|p| p.sockets.len()).sum(),
    };
    if let Err(e) = successor.hand(shared.now_ms(), shared.is_active(), delta, layout, &fds) {
        return Err(resume(&mut successor, e.to_string()));
    }
    // Shorter than a worker's own wait (`HANDOVER_WAIT`), so that it never resumes alone.
    match successor.wait_running(Duration::from_secs(5)) {
        Ok((flows, flows_refused)) => {
            for o in &outcomes {
                let _ = o.send(HandoverOutcome::Commit);
            }
            ctx.handed_over.store(true, Ordering::Release);
            // Under systemd: the successor is the service's main process now, and keeps a
            // journal of its own.
            let _ = sys::notify(&format!("MAINPID={}", successor.pid), &[]);
            if let Some(j) = &ctx.journal {
                crate::restart::unstore(j);
            }
            let pause_us = u64::try_from(paused.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::info!(
                "natgw: upgrade: pid {} took over {flows} flow(s) after a pause of {} us; this process ends",
                successor.pid,
                pause_us
            );
            Ok(UpgradeReport {
                old_pid: std::process::id(),
                new_pid: successor.pid,
                binary: binary.display().to_string(),
                flows,
                flows_refused,
                pause_us,
                prepare_ms: successor.prepare_ms,
            })
        }
        Err(e) => Err(resume(&mut successor, e.to_string())),
    }
}

/// What `natgw status` says about the configuration, fixed at start.
struct StatusInfo {
    ha: Option<Arc<crate::ha::Ha>>,
    /// The name table and the resolvers it trusts (`[dns]`).
    dns: Option<(Arc<natgw_core::dns::NameTable>, Vec<String>)>,
    workers: usize,
    inside: Vec<LinkStatus>,
    outside: LinkStatus,
    gateway: String,
    max_flows: usize,
    /// Pool names by `PoolId`.
    pools: Vec<String>,
}

/// Where the per-interface locks live.
pub const INTERFACE_LOCK_DIR: &str = "/run/natgw";

/// Takes an exclusive lock per interface (in this network namespace), so a second natgw on
/// the same interfaces is refused whatever its admin socket. The lock is the open file
/// description (`flock`): it goes when the process does, and a restart handoff passes it on
/// by handing the files to the new process.
pub fn lock_interfaces<'a>(
    dir: &Path,
    interfaces: impl Iterator<Item = &'a str>,
) -> Result<Vec<std::fs::File>, ControlError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let lock_err = |lock: &Path, source| ControlError::InterfaceLock { lock: lock.display().to_string(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| lock_err(dir, e))?;
    // Interface names are per network namespace: so is the lock.
    let netns = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
    let mut held = Vec::new();
    for name in interfaces {
        let lock = dir.join(format!("netns-{netns}-{name}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(sys::O_NOFOLLOW)
            .open(&lock)
            .map_err(|e| lock_err(&lock, e))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim().chars().take(16).collect::<String>();
                return Err(ControlError::InterfaceTaken {
                    interface: name.to_string(),
                    holder: if holder.is_empty() { "unknown".into() } else { holder },
                    lock: lock.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(&lock, e)),
        }
        let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| writeln!(f, "{}", std::process::id()));
        held.push(f);
    }
    Ok(held)
}

fn bind_admin(path: &str) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::FileTypeExt;
    let p = Path::new(path);
    // Never follow a link here, and never remove anything but a socket nobody answers on.
    if let Ok(meta) = std::fs::symlink_metadata(p) {
        let kind = meta.file_type();
        if !kind.is_socket() {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_file() {
                "a regular file"
            } else {
                "not a socket"
            };
            return Err(ControlError::AdminSocketOccupied { path: path.to_string(), what });
        }
        if UnixStream::connect(p).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_string()));
        }
        // A stale socket from a process that died: take it over.
        std::fs::remove_file(p).map_err(|e| ControlError::AdminSocket { path: path.into(), source: e })?;
    }
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::AdminSocket { path: path.into(), source: e })?;
    }
    let l = UnixListener::bind(p).map_err(|e| ControlError::AdminSocket { path: path.into(), source: e })?;
    sys::chmod(path, 0o600).map_err(|e| ControlError::AdminSocket { path: path.into(), source: e })?;
    Ok(l)
}

/// SIGHUP: re-read the config file and swap every hook whose component, config text or
/// fail mode changed; remove hooks the file no longer names. Other settings need a restart.
fn reload_policies(path: &Path, running: &Config, rt: &Runtime, shared: &Shared) {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("natgw: SIGHUP: config not reloaded, every policy keeps serving: {e}");
            return;
        }
    };
    if cfg.pools != running.pools {
        tracing::warn!("natgw: SIGHUP: [[pool]] changes need a restart; only [policy] hooks are reloaded");
    }
    for h in Hook::ALL {
        let want = &cfg.policy.hooks[h.index()];
        let have = rt.current(h);
        match (want, have) {
            (None, None) => {}
            (None, Some(g)) => {
                rt.clear(h);
                tracing::info!("natgw: SIGHUP: {h} policy #{} removed", g.id);
            }
            (Some(w), have) => {
                let same = have.as_ref().is_some_and(|g| {
                    g.file == w.component
                        && g.fail == w.fail
                        && std::fs::read(&w.component).is_ok_and(|b| natgw_policy::sha256_hex(&b) == g.hash)
                        && w.config.as_ref().map_or(Some(String::new()), |c| std::fs::read_to_string(c).ok())
                            == Some(g.config_text.clone())
                });
                if same {
                    continue;
                }
                match swap_and_wait(rt, shared, h, &w.component, w.config.as_deref(), Some(w.fail), false) {
                    Ok(report) => tracing::info!("natgw: SIGHUP: {}", report::swap_text(&report)),
                    Err(e) => tracing::warn!("natgw: SIGHUP: {h} not swapped, the previous policy keeps serving: {e}"),
                }
            }
        }
    }
}

/// Swaps a hook's policy, wakes the workers and waits until every caller serves the new
/// generation; then, if asked, revalidates existing flows.
fn swap_and_wait(
    rt: &Runtime,
    shared: &Shared,
    hook: Hook,
    component: &Path,
    config: Option<&Path>,
    fail: Option<FailMode>,
    revalidate: bool,
) -> Result<SwapReport, PolicyError> {
    let t0 = Instant::now();
    let g = rt.swap(hook, component, config, fail)?;
    let prepared = t0.elapsed();
    let (serving_after, serving_everywhere) = wait_serving(rt, shared, hook, |c| rt.serving(hook, c) == g.id);
    let revoked = (revalidate && hook == Hook::Egress).then(|| {
        let mut revoked = 0u64;
        for q in shared.control.iter() {
            let (tx, rx) = std::sync::mpsc::channel();
            if q.push(ControlRequest::Revalidate(tx)).is_ok() {
                revoked += rx.recv_timeout(Duration::from_secs(5)).unwrap_or(0) as u64;
            }
        }
        revoked
    });
    Ok(SwapReport {
        hook,
        generation: g.id,
        file: g.file.display().to_string(),
        sha256: g.hash.clone(),
        prepared_us: u64::try_from(prepared.as_micros()).unwrap_or(u64::MAX),
        serving_after_us: u64::try_from(serving_after.as_micros()).unwrap_or(u64::MAX),
        serving_everywhere,
        revoked,
        shadow: false,
    })
}

/// `natgw policy shadow` and `promote`: the shadow started (every worker running it), or
/// promoted through the live swap (every worker serving it), with the same report.
fn shadow_and_wait(
    rt: &Runtime,
    shared: &Shared,
    hook: Hook,
    start: Option<(&Path, Option<&Path>)>,
    fail: Option<FailMode>,
) -> Result<SwapReport, PolicyError> {
    if hook != Hook::Egress {
        return Err(PolicyError::Engine(format!("shadow policies are for the egress hook, not {hook}")));
    }
    let t0 = Instant::now();
    let g = match start {
        Some((component, config)) => rt.shadow_swap(component, config)?,
        None => rt.promote_shadow(fail)?,
    };
    let prepared = t0.elapsed();
    let serves = |c: usize| if start.is_some() { rt.shadow_serving(c) == g.id } else { rt.serving(hook, c) == g.id };
    let (serving_after, serving_everywhere) = wait_serving(rt, shared, hook, serves);
    Ok(SwapReport {
        hook,
        generation: g.id,
        file: g.file.display().to_string(),
        sha256: g.hash.clone(),
        prepared_us: u64::try_from(prepared.as_micros()).unwrap_or(u64::MAX),
        serving_after_us: u64::try_from(serving_after.as_micros()).unwrap_or(u64::MAX),
        serving_everywhere,
        revoked: None,
        shadow: start.is_some(),
    })
}

/// After a generation is published: wakes every worker and waits (up to 5 s) until each
/// caller of `hook` `serves` it; how long that took, and whether all do.
fn wait_serving(rt: &Runtime, shared: &Shared, hook: Hook, serves: impl Fn(usize) -> bool) -> (Duration, bool) {
    let published = Instant::now();
    for w in 0..shared.wake.len() {
        shared.wake(w);
    }
    let callers: Vec<usize> = rt.callers_of(hook).collect();
    let deadline = published + Duration::from_secs(5);
    while !callers.iter().all(|&c| serves(c)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    (published.elapsed(), callers.iter().all(|&c| serves(c)))
}

/// The admin thread: one connection at a time, each a hello and one request. A policy
/// swap is answered from a thread of its own (compiles take seconds), one swap at a time.
/// Watchers (`natgw ha watch`) one gateway holds at most.
const MAX_WATCHERS: usize = 64;

/// Drops the watchers whose other end has gone (a restarted `natgw ha watch`); the count
/// left.
fn prune_watchers(watchers: &mut Vec<UnixStream>) -> usize {
    use std::io::Read;
    watchers.retain_mut(|w| {
        if w.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 64];
        match w.read(&mut b) {
            // End of file: the watcher closed its end.
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    });
    watchers.len()
}

/// Answers a request that takes long (compiling, instantiating) from a thread of its own, so
/// that the admin socket keeps answering meanwhile.
fn answer_on_thread(
    mut conn: std::os::unix::net::UnixStream,
    name: &str,
    what: &str,
    answer: impl FnOnce() -> Result<Reply, AdminError> + Send + 'static,
) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let _ = conn.write_all(Envelope::from(answer()).line().as_bytes());
    });
    if let Err(e) = spawned {
        tracing::warn!("natgw: admin: cannot start a thread for {what}: {e}");
    }
}

/// `natgw explain` requests answered at once (each instantiates its policies).
const MAX_EXPLAINS_AT_ONCE: usize = 4;

/// What `natgw explain` reads besides the runtime: the config and the name table.
struct ExplainInputs {
    cfg: Config,
    names: Option<Arc<natgw_core::dns::NameTable>>,
}

/// `natgw explain` against the running gateway: an existing flow of the tuple comes from
/// the workers' flows.
fn explain_now(
    shared: &Shared,
    rt: &Runtime,
    inputs: &ExplainInputs,
    pools: &[String],
    q: &crate::admin::ExplainQuery,
) -> Result<crate::admin::ExplainReport, AdminError> {
    let ctx = crate::explain::ExplainContext {
        cfg: &inputs.cfg,
        rt,
        names: inputs.names.as_ref(),
        now_ms: shared.now_ms(),
        offline: false,
    };
    crate::explain::explain(&ctx, q, |src, dst| {
        let one = |a: std::net::Ipv4Addr| crate::admin::Prefix(natgw_wire::Ipv4Net { addr: a, prefix: 32 });
        let filter = FlowFilter {
            src: Some(one(*src.ip())),
            dst: Some(one(*dst.ip())),
            proto: Some(q.proto),
            ..FlowFilter::default()
        };
        let original = format!("{src} -> {dst}");
        flow_entries(shared, &filter, pools).ok()?.into_iter().find(|f| f.original == original).map(|f| {
            format!("{} on worker {}, leaving as {}, expires in {} s", f.state, f.worker, f.translated, f.expires_in_s)
        })
    })
}

fn serve_admin(
    listener: UnixListener,
    shared: Arc<Shared>,
    rt: Arc<Runtime>,
    status: StatusInfo,
    followers: Option<Arc<Followers>>,
    upgrades: Arc<UpgradeContext>,
    explain: Arc<ExplainInputs>,
) {
    let swap_lock = Arc::new(std::sync::Mutex::new(()));
    // Connections held open until this process ends (`Request::Watch`), bounded.
    let mut watchers: Vec<std::os::unix::net::UnixStream> = Vec::new();
    // Non-blocking, polled: the thread notices a stop, and during a handoff (when the
    // successor holds the same listener) it accepts nothing.
    loop {
        if sys::stop_requested() {
            break;
        }
        let ready = sys::poll_readable(&[listener.as_raw_fd()], 100).map(|r| r.first().copied().unwrap_or(false));
        if !ready.unwrap_or(false) || upgrades.handing_over.load(std::sync::atomic::Ordering::Acquire) {
            if upgrades.handed_over.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            continue;
        }
        let Ok((mut conn, _)) = listener.accept() else { continue };
        // Root only, whatever the socket's file mode says.
        if sys::peer_uid(conn.as_raw_fd()).ok() != Some(0) {
            let _ = conn.write_all(Envelope::from(Err(AdminError::NotRoot)).line().as_bytes());
            continue;
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let Ok(read_half) = conn.try_clone() else { continue };
        let mut reader = BufReader::new(read_half);
        let Some(hello) = admin::read_request(&mut reader) else { continue };
        let hello = admin::answer_hello(hello);
        let refused = hello.is_err();
        let _ = conn.write_all(Envelope::from(hello).line().as_bytes());
        if refused {
            continue;
        }
        let request = match admin::read_request(&mut reader) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                let _ = conn.write_all(Envelope::from(Err(e)).line().as_bytes());
                continue;
            }
            None => continue,
        };
        let reply = match request {
            Request::Hello { .. } => Err(AdminError::BadRequest { reason: "a second hello".into() }),
            Request::Status => Ok(Reply::Status(Box::new(status_report(&shared, &status)))),
            Request::Stats => Ok(Reply::Stats(stats_report(&shared))),
            Request::Top { k } => Ok(Reply::Top(top_talkers(&shared, k))),
            Request::Flows { filter } => {
                flow_entries(&shared, &filter, &status.pools).map(|flows| Reply::Flows { flows })
            }
            Request::PolicyList => Ok(Reply::PolicyList { hooks: rt.status().into_iter().map(hook_status).collect() }),
            Request::Explain(_) if Arc::strong_count(&explain) > MAX_EXPLAINS_AT_ONCE => {
                Err(AdminError::BadRequest { reason: format!("{MAX_EXPLAINS_AT_ONCE} explains are running already") })
            }
            Request::Explain(q) => {
                // Instantiating a policy takes milliseconds (an interpreter's, a second):
                // on a thread of its own, so that the admin socket keeps answering. Each
                // thread holds a reference to `explain`: that bounds how many run at once.
                let (shared, rt, explain, pools) = (shared.clone(), rt.clone(), explain.clone(), status.pools.clone());
                answer_on_thread(conn, "natgw-explain", "explain", move || {
                    explain_now(&shared, &rt, &explain, &pools, &q).map(|r| Reply::Explained(Box::new(r)))
                });
                continue;
            }
            Request::PolicyRemove { hook } => {
                rt.clear(hook);
                Ok(Reply::PolicyRemoved { hook })
            }
            Request::PolicyShadowRemove { hook } => {
                rt.clear_shadow();
                Ok(Reply::PolicyRemoved { hook })
            }
            Request::PolicyShadow { hook, component, config } => {
                // Compiles and instantiates like a swap: on a thread of its own, one at a time.
                let (rt, shared, lock) = (rt.clone(), shared.clone(), swap_lock.clone());
                answer_on_thread(conn, "natgw-swap", "a shadow policy", move || {
                    let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
                    shadow_and_wait(&rt, &shared, hook, Some((&component, config.as_deref())), None)
                        .map(Reply::PolicySwapped)
                        .map_err(|e| AdminError::PolicyRefused { hook, reason: e.to_string() })
                });
                continue;
            }
            Request::PolicyPromote { hook, fail } => {
                let (rt, shared, lock) = (rt.clone(), shared.clone(), swap_lock.clone());
                answer_on_thread(conn, "natgw-swap", "a promotion", move || {
                    let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
                    shadow_and_wait(&rt, &shared, hook, None, fail)
                        .map(Reply::PolicySwapped)
                        .map_err(|e| AdminError::PolicyRefused { hook, reason: e.to_string() })
                });
                continue;
            }
            Request::FollowFlows => match &followers {
                Some(f) => {
                    if conn.write_all(Envelope::Ok(Reply::Following).line().as_bytes()).is_ok() {
                        // The connection now belongs to the followers: every record from here on.
                        f.add(conn);
                    }
                    continue;
                }
                None => Err(AdminError::FlowLogOff),
            },
            Request::Watch if prune_watchers(&mut watchers) >= MAX_WATCHERS => {
                Err(AdminError::BadRequest { reason: format!("{MAX_WATCHERS} watchers are connected already") })
            }
            Request::Watch => {
                if conn.write_all(Envelope::Ok(Reply::Watching).line().as_bytes()).is_ok() {
                    watchers.push(conn);
                }
                continue;
            }
            Request::HaPromote | Request::HaDemote => match &status.ha {
                Some(h) if matches!(request, Request::HaPromote) => Ok(Reply::Ha(h.promote())),
                Some(h) => Ok(Reply::Ha(h.demote())),
                None => Err(AdminError::NoHa),
            },
            Request::Upgrade { binary } => {
                // Minutes when the successor compiles large policies: on a thread of its own.
                let (shared, upgrades) = (shared.clone(), upgrades.clone());
                let spawned = std::thread::Builder::new().name("natgw-upgrade".into()).spawn(move || {
                    let reply = upgrade(&upgrades, &shared, &binary).map(Reply::Upgraded);
                    let ok = reply.is_ok();
                    let _ = conn.write_all(Envelope::from(reply).line().as_bytes());
                    if ok {
                        sys::request_stop();
                    }
                });
                if let Err(e) = spawned {
                    tracing::warn!("natgw: admin: cannot start a thread for an upgrade: {e}");
                }
                continue;
            }
            Request::PolicySwap { hook, component, config, fail, revalidate } => {
                // Compiling a large component (an interpreter in Python or JavaScript) takes
                // tens of seconds: the swap runs on its own thread so that status, stats and
                // flows keep answering meanwhile. One swap at a time keeps generations in
                // the order they were asked for.
                let (rt, shared, lock) = (rt.clone(), shared.clone(), swap_lock.clone());
                answer_on_thread(conn, "natgw-swap", "a policy swap", move || {
                    let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
                    swap_and_wait(&rt, &shared, hook, &component, config.as_deref(), fail, revalidate)
                        .map(Reply::PolicySwapped)
                        .map_err(|e| AdminError::PolicyRefused { hook, reason: e.to_string() })
                });
                continue;
            }
        };
        let _ = conn.write_all(Envelope::from(reply).line().as_bytes());
    }
}

fn hook_status(h: natgw_policy::HookStatus) -> HookStatus {
    HookStatus {
        hook: h.hook,
        generation: h.generation,
        file: h.file,
        sha256: h.sha256,
        loaded_unix_s: h.loaded_unix_s,
        calls: h.calls,
        errors: h.errors,
        timeouts: h.timeouts,
        fail: h.fail,
        serving: h.serving,
        shadow: h.shadow,
        contract: h.contract.to_string(),
    }
}

fn status_report(shared: &Shared, s: &StatusInfo) -> Status {
    let t = counters::total(&shared.counters);
    let get = |c: Counter| t.iter().find(|(x, _)| *x == c).map_or(0, |x| x.1);
    // Link MTUs: inside links in order, then the outside one.
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let link = |i: usize, l: &LinkStatus| LinkStatus {
        mtu: shared.link_mtu.get(i).map_or(0, |m| m.load(relaxed)),
        workers_mtu: shared.applied_mtu.iter().map(|w| w.get(i).map_or(0, |m| m.load(relaxed))).collect(),
        ..l.clone()
    };
    let inside = s.inside.iter().enumerate().map(|(i, l)| link(i, l)).collect();
    Status {
        pid: std::process::id(),
        uptime_s: shared.uptime_s(),
        workers: s.workers,
        inside,
        outside: link(s.inside.len(), &s.outside),
        gateway: s.gateway.clone(),
        flows: get(Counter::ActiveConnectionCount),
        max_flows: s.max_flows,
        early_drops: get(Counter::EarlyDropCount),
        neighbours: shared.neighbours.load().len(),
        connections_attempted: get(Counter::ConnectionAttemptCount),
        connections_established: get(Counter::ConnectionEstablishedCount),
        port_allocation_errors: get(Counter::ErrorPortAllocation),
        idle_timeouts: get(Counter::IdleTimeoutCount),
        packets_from_source: get(Counter::PacketsInFromSource),
        packets_to_destination: get(Counter::PacketsOutToDestination),
        packets_from_destination: get(Counter::PacketsInFromDestination),
        packets_to_source: get(Counter::PacketsOutToSource),
        packets_dropped: t.iter().filter(|(c, _)| c.metric().0 == "PacketsDropCount").map(|x| x.1).sum(),
        ha: s.ha.as_ref().map(|h| Box::new(h.status())),
        stalled_workers: shared.stalled_workers(),
        dns: s.dns.as_ref().map(|(t, resolvers)| crate::admin::DnsStatus {
            resolvers: resolvers.clone(),
            names: t.len() as u64,
            max_names: t.limits().max_bindings as u64,
            answers_matched: get(Counter::DnsAnswersMatched),
            answers_unmatched: get(Counter::DnsAnswersUnmatched),
            malformed: get(Counter::DnsMessagesMalformed),
            bindings_refused: get(Counter::DnsBindingsRefused),
        }),
    }
}

fn stats_report(shared: &Shared) -> Stats {
    let mut counters: Vec<CounterValue> = counters::total(&shared.counters)
        .into_iter()
        .map(|(c, value)| CounterValue { name: c.name().into(), value })
        .collect();
    // Log lines a stderr nobody reads any more did not take (`logging`).
    counters.push(CounterValue { name: "LogLinesLost".into(), value: crate::logging::lines_lost() });
    Stats { counters }
}

/// The top talkers over every worker: each walks its table in chunks between packets
/// (`natgw_io::worker::TOP_PER_WORKER` of each kind back), the lists are summed per key.
fn top_talkers(shared: &Shared, k: u32) -> TopReport {
    use natgw_core::conntrack::top;
    let began = Instant::now();
    let k = usize::try_from(k).unwrap_or(usize::MAX).min(natgw_io::worker::TOP_PER_WORKER);
    let parts: Vec<top::TopTalkers> =
        shared.ask_workers(|_, tx| ControlRequest::Top(tx), Duration::from_secs(5)).into_iter().flatten().collect();
    let merged = top::merge(&parts, k);
    let talkers = |v: &[(std::net::Ipv4Addr, top::Talker)]| {
        v.iter()
            .map(|(a, t)| admin::Talker {
                address: a.to_string(),
                bytes_out: t.bytes_out,
                bytes_in: t.bytes_in,
                flows: t.flows,
            })
            .collect()
    };
    TopReport {
        workers: shared.control.len(),
        answered: parts.len(),
        by_host: talkers(&merged.by_host),
        by_destination: talkers(&merged.by_destination),
        flows: merged.flows,
        unranked_flows: merged.hosts_beyond.flows,
        scan_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Every worker's flows that `filter` selects; a filter naming a state or pool the gateway
/// does not have is refused, naming them.
fn flow_entries(shared: &Shared, filter: &FlowFilter, pools: &[String]) -> Result<Vec<FlowEntry>, AdminError> {
    filter.check()?;
    let pool = match &filter.pool {
        Some(name) => Some(pools.iter().position(|p| p == name).ok_or_else(|| AdminError::BadRequest {
            reason: format!("pool {name:?} is not configured (pools: {})", pools.join(", ")),
        })?),
        None => None,
    };
    let selects = |f: &FlowSummary| {
        filter.src.is_none_or(|p| p.contains(f.original.src))
            && filter.dst.is_none_or(|p| p.contains(f.original.dst))
            && filter.proto.is_none_or(|p| p.number() == f.original.proto)
            && filter.state.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(f.state.name()))
            && pool.is_none_or(|p| f.pool.map(usize::from) == Some(p))
    };
    let answers = shared.ask_workers(|_, tx| ControlRequest::Flows(tx), Duration::from_secs(2));
    let mut all = Vec::new();
    for (worker, summaries) in answers.iter().enumerate() {
        let summaries = summaries.iter().flatten();
        all.extend(summaries.filter(|f| selects(f)).map(|f| flow_entry(worker, f, pools)));
    }
    Ok(all)
}

fn flow_entry(worker: usize, f: &FlowSummary, pools: &[String]) -> FlowEntry {
    let key = |k: &natgw_core::conntrack::FlowKey| format!("{}:{} -> {}:{}", k.src, k.src_port, k.dst, k.dst_port);
    let t = &f.translated;
    FlowEntry {
        worker,
        proto: proto_name(f.original.proto).to_string(),
        state: f.state.name().to_string(),
        original: key(&f.original),
        translated: format!("{}:{} -> {}:{}", t.src.addr, t.src.port, t.dst.addr, t.dst.port),
        reply: key(&f.reply),
        age_s: f.age_ms / 1000,
        expires_in_s: f.expires_in_ms / 1000,
        packets: f.packets,
        bytes: f.bytes,
        pool: f.pool.and_then(|p| pools.get(usize::from(p))).cloned(),
    }
}

/// How frames move between a link and the workers, as `natgw status` shows it: one packet
/// socket per worker and link, each worker receiving with one io_uring multishot receive
/// into a provided-buffer ring and sending from the same buffers, virtio-net headers on
/// (GSO super-frames and partial checksums pass whole), the qdisc bypassed.
pub const PACKET_PATH: &str = "af_packet (io_uring multishot recv, vnet header, qdisc bypass)";
/// The same with `dataplane.receive = "ring"`: each socket has a PACKET_MMAP receive ring
/// (`natgw_io::rxring`) the worker reads after one multishot poll, sending from its slots.
pub const RING_PACKET_PATH: &str =
    "af_packet (TPACKET_V2 receive ring, io_uring poll and send, vnet header, qdisc bypass)";

/// A link's packet path when `rings` of its `workers` sockets read a receive ring.
fn packet_path(rings: usize, workers: usize) -> String {
    match rings {
        0 => PACKET_PATH.into(),
        n if n == workers => RING_PACKET_PATH.into(),
        n => format!("{RING_PACKET_PATH} on {n} of {workers} workers, {PACKET_PATH} on the others"),
    }
}

/// A socket from the process before (handed over, or kept in systemd's store) steers
/// with the program that process installed, perhaps an older build's: install this one's.
fn steered(socket: PacketSocket, opts: &PacketSocketOptions) -> Result<PacketSocket, IoError> {
    if let Some((_, prog)) = &opts.fanout {
        socket.set_steering(prog)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("natgw-admin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_admin_socket_replaces_only_a_stale_socket() {
        let d = scratch("occupied");
        // Whatever else sits at the path stays, and the error names the key and the path.
        let file = d.join("file");
        std::fs::write(&file, b"precious").unwrap();
        let target = d.join("target");
        std::fs::write(&target, b"also precious").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dir = d.join("dir");
        std::fs::create_dir(&dir).unwrap();
        for (p, what) in [(&file, "a regular file"), (&link, "a symbolic link"), (&dir, "a directory")] {
            let e = bind_admin(p.to_str().unwrap()).unwrap_err().to_string();
            assert!(e.contains("admin.socket") && e.contains(p.to_str().unwrap()) && e.contains(what), "{e}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        assert_eq!(std::fs::read(&link).unwrap(), b"also precious", "the link and its target stay");
        assert!(dir.is_dir());

        // A socket somebody answers on: another gateway runs.
        let live = d.join("live.sock");
        let _other = UnixListener::bind(&live).unwrap();
        let e = bind_admin(live.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, ControlError::AlreadyRunning(_)), "{e}");

        // A socket nobody answers on (its process died): taken over, root-only.
        let stale = d.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let l = bind_admin(stale.to_str().unwrap()).unwrap();
        assert!(UnixStream::connect(&stale).is_ok());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777, 0o600);
        drop(l);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn one_gateway_per_interface() {
        let d = scratch("locks");
        let first = lock_interfaces(&d, ["in0", "out0"].into_iter()).unwrap();
        // Another instance on an interface already served: refused, naming it and the holder,
        // whichever admin socket it would use; an instance on other interfaces runs.
        let e = lock_interfaces(&d, ["in1", "out0"].into_iter()).unwrap_err().to_string();
        assert!(e.contains("out0") && e.contains(&std::process::id().to_string()), "{e}");
        let other = lock_interfaces(&d, ["in1", "out1"].into_iter()).unwrap();
        assert_eq!(other.len(), 2);
        // The lock goes with the process (here: the files): the next start takes it over.
        drop(first);
        assert_eq!(lock_interfaces(&d, ["in0", "out0"].into_iter()).unwrap().len(), 2);
        // A lock path that is a symbolic link is not followed.
        let netns = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self/ns/net").unwrap().ino()
        };
        let target = d.join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, d.join(format!("netns-{netns}-in9.lock"))).unwrap();
        assert!(lock_interfaces(&d, ["in9"].into_iter()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&d);
    }
}
