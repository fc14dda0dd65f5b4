//! The gateway's TOML configuration: parsing with serde, then validation that names the
//! key and the value on every error.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use natgw_core::conntrack::Timeouts;
use natgw_core::nat::pool::PoolSpec;
use natgw_core::nat::Filtering;
use natgw_policy::config::{FailMode, Hook, HookConfig, PolicyConfig};
use natgw_telemetry::config::{OtlpConfig, OtlpProtocol};
use natgw_wire::Ipv4Net;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {value:?} {reason}")]
    Invalid { key: String, value: String, reason: String },
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), value: value.to_string(), reason: reason.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub inside: Vec<RawInside>,
    pub outside: RawOutside,
    #[serde(default)]
    pub nat: RawNat,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub admin: RawAdmin,
    /// Named pools of external addresses and ports; `port-pool` policies choose among them.
    #[serde(default)]
    pub pool: Vec<RawPool>,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub flow_log: RawFlowLog,
    #[serde(default)]
    pub otlp: RawOtlp,
    #[serde(default)]
    pub metrics: RawMetrics,
    /// A pair of gateways: this node's sync link and its peer. Absent: a single gateway.
    #[serde(default)]
    pub ha: Option<RawHa>,
    /// DNS name binding for name-aware egress policies.
    #[serde(default)]
    pub dns: RawDns,
}

/// `[dns]`: which resolvers' answers bind names, and the name table's bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    /// Resolvers whose answers bind names (empty: binding off).
    pub resolvers: Vec<String>,
    /// Inside hosts that resolve for the others: what they resolve binds for every host.
    pub inside_resolvers: Vec<String>,
    pub min_ttl_s: u32,
    pub max_ttl_s: u32,
    pub max_names: usize,
    pub max_names_per_host: usize,
}

impl Default for RawDns {
    fn default() -> Self {
        let l = natgw_core::dns::NameLimits::default();
        RawDns {
            resolvers: Vec::new(),
            inside_resolvers: Vec::new(),
            min_ttl_s: l.min_ttl_s,
            max_ttl_s: l.max_ttl_s,
            max_names: l.max_bindings,
            max_names_per_host: l.max_bindings_per_host,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHa {
    /// The dedicated sync link's interface.
    pub interface: String,
    /// This node's sync address and port (an address of `interface`).
    pub address: String,
    /// The peer's sync address and port.
    pub peer: String,
    /// The pre-shared key (at least 16 bytes), or `key_file`.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: String,
    /// A subset of `outside.addresses`.
    pub addresses: Vec<String>,
    /// Defaults to `nat.port_range`.
    pub port_range: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    /// Deadline of one policy call, in microseconds.
    pub call_timeout_us: u64,
    /// Memory budget of one policy instance (all its memories and tables), MiB.
    pub memory_limit_mb: u64,
    /// How long the egress policy's refusal holds for the same full tuple, ms (0: off).
    pub refusal_cache_ms: u64,
    /// Where compiled components are cached (by content hash). "" = no cache.
    pub cache_dir: String,
    pub egress: Option<RawHook>,
    pub port_pool: Option<RawHook>,
    pub flow_log: Option<RawHook>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            call_timeout_us: 1000,
            memory_limit_mb: 64,
            refusal_cache_ms: 1000,
            cache_dir: "/var/cache/natgw".into(),
            egress: None,
            port_pool: None,
            flow_log: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    /// The component file (.wasm). Relative paths are relative to the config file.
    pub component: String,
    /// A file whose text is passed to the policy's `init`. Relative to the config file.
    pub config: Option<String>,
    /// What happens when the policy traps, times out or answers nonsense.
    pub fail: Option<FailMode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFlowLog {
    /// Produce flow records at all (for the file, OTLP and `natgw flows --follow`).
    pub enabled: bool,
    /// Append one JSON object per exported flow to this file. "" = no flow log file.
    pub file: String,
    /// Hand finished flows to the flow-log policy and the exporters at least this often.
    pub interval_ms: u64,
    /// At most this many records per batch.
    pub batch: usize,
    /// A flow that lives longer gets a record at least this often (counting its packets
    /// since the previous one). 0 = only when it ends.
    pub active_interval_s: u64,
    /// A record for every flow the egress policy denies or rejects (action REJECT).
    pub refused: bool,
}

impl Default for RawFlowLog {
    fn default() -> Self {
        RawFlowLog {
            enabled: true,
            file: String::new(),
            interval_ms: 1000,
            batch: 256,
            active_interval_s: 60,
            refused: true,
        }
    }
}

/// OTLP export of flow records (logs) and counters (metrics) to an OpenTelemetry collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtlp {
    /// Base URL of the collector, e.g. "http://127.0.0.1:4317". "" = no OTLP export.
    pub endpoint: String,
    /// "grpc" or "http/protobuf".
    pub protocol: String,
    /// Sent with every export (gRPC metadata or HTTP headers), e.g. an API key.
    pub headers: std::collections::BTreeMap<String, String>,
    /// "none" or "gzip".
    pub compression: String,
    /// PEM file of the certificate authorities to trust for an https endpoint; "" = the
    /// system's roots.
    pub ca_file: String,
    /// Deadline of one export call.
    pub timeout_ms: u64,
    /// Export flow records as OTLP logs.
    pub logs: bool,
    /// Export the counters as OTLP metrics, this often (0 = no metrics).
    pub metrics_interval_ms: u64,
    /// Flow records kept while the collector cannot be reached; past this, records are
    /// dropped and counted.
    pub buffer_records: usize,
    /// Records per export call.
    pub batch: usize,
    /// Backoff between failed exports: starts here, doubles, stops growing at retry_max_ms.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// The `service.instance.id` resource attribute; "" = the host name.
    pub instance_id: String,
    /// More resource attributes.
    pub resource: std::collections::BTreeMap<String, String>,
}

impl Default for RawOtlp {
    fn default() -> Self {
        RawOtlp {
            endpoint: String::new(),
            protocol: "grpc".into(),
            headers: Default::default(),
            compression: "none".into(),
            ca_file: String::new(),
            timeout_ms: 5000,
            logs: true,
            metrics_interval_ms: 10_000,
            buffer_records: 65_536,
            batch: 512,
            retry_initial_ms: 250,
            retry_max_ms: 5000,
            instance_id: String::new(),
            resource: Default::default(),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Serve the counters as Prometheus text at http://LISTEN/metrics. "" = off.
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics { listen: "127.0.0.1:9108".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInside {
    pub interface: String,
    /// Gateway addresses with prefix length, e.g. "10.10.1.1/24".
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutside {
    pub interface: String,
    /// External addresses natgw translates to (and answers ARP for).
    pub addresses: Vec<String>,
    /// The outside subnet, e.g. "198.51.100.0/24".
    pub subnet: String,
    /// The upstream router.
    pub gateway: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNat {
    pub port_range: String,
    pub filtering: Filtering,
    pub max_flows: usize,
    /// Absent: a quarter of `max_flows`. 0: no limit.
    pub max_flows_per_source: Option<usize>,
    /// 0: no limit.
    pub max_inbound_flows_per_mapping: usize,
    pub high_water_percent: u8,
    pub fragment_memory_kib: usize,
    pub icmp_error_rate: u32,
}

impl Default for RawNat {
    fn default() -> Self {
        RawNat {
            port_range: "1024-65535".into(),
            filtering: Filtering::AddressAndPortDependent,
            max_flows: 1 << 20,
            max_flows_per_source: None,
            max_inbound_flows_per_mapping: 1024,
            high_water_percent: 90,
            // Linux's ipfrag_high_thresh.
            fragment_memory_kib: 4096,
            icmp_error_rate: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDataplane {
    /// 0 = one per core.
    pub workers: usize,
    /// Receive buffers per worker (power of two).
    pub rx_buffers: u16,
    /// Pin worker n to core n.
    pub pin_workers: bool,
    /// Spin on an empty ring this many microseconds before sleeping (lower latency, more CPU).
    pub busy_poll_us: u64,
    /// How frames come in from each link: "socket" (multishot `recv` into the worker's
    /// buffers) or "ring" (a PACKET_MMAP receive ring per socket, 4 MiB each).
    pub receive: String,
    /// Under systemd (`$NOTIFY_SOCKET`): keep the flows in a journal in its
    /// file-descriptor store, so that a restart or a crash of natgw keeps them.
    pub keep_flows: bool,
}

impl Default for RawDataplane {
    fn default() -> Self {
        RawDataplane {
            workers: 0,
            rx_buffers: 512,
            pin_workers: false,
            busy_poll_us: 0,
            receive: "socket".into(),
            keep_flows: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub socket: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { socket: crate::admin::DEFAULT_SOCKET.into() }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub inside: Vec<InsideConfig>,
    pub outside: OutsideConfig,
    pub port_lo: u16,
    pub port_hi: u16,
    pub filtering: Filtering,
    pub max_flows: usize,
    /// Flows one inside host may hold (0: no limit).
    pub max_flows_per_source: usize,
    /// Flows the outside may open towards one mapping (0: no limit).
    pub max_inbound_flows_per_mapping: usize,
    /// Past this share of `max_flows`, flows never answered go after
    /// `timeouts.unanswered_under_pressure`.
    pub high_water_percent: u8,
    /// Fragment state (entries and early fragments) the gateway may hold, in bytes.
    pub fragment_memory: usize,
    pub icmp_error_rate: u32,
    /// How long an egress refusal holds for its full tuple, ms (0: off).
    pub refusal_cache_ms: u64,
    pub timeouts: Timeouts,
    pub workers: usize,
    pub rx_buffers: u16,
    pub pin_workers: bool,
    pub busy_poll_us: u64,
    /// Receive rings (`dataplane.receive = "ring"`) rather than `recv` into buffers.
    pub rx_ring: bool,
    pub keep_flows: bool,
    pub admin_socket: String,
    /// Pool 0 is the default pool: the one named "default", else the first `[[pool]]`,
    /// else (no `[[pool]]`) every outside address with `nat.port_range`.
    pub pools: Vec<PoolSpec>,
    pub policy: PolicyConfig,
    pub flow_log: FlowLogConfig,
    /// None: no OTLP export.
    pub otlp: Option<OtlpConfig>,
    /// The Prometheus endpoint's address; None: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// None: a single gateway.
    pub ha: Option<HaConfig>,
    /// None: DNS name binding off (no `dns.resolvers`).
    pub dns: Option<natgw_core::dns::DnsConfig>,
}

/// A validated `[ha]` section.
#[derive(Clone)]
pub struct HaConfig {
    pub interface: String,
    pub address: std::net::SocketAddrV4,
    pub peer: std::net::SocketAddrV4,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for HaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaConfig")
            .field("interface", &self.interface)
            .field("address", &self.address)
            .field("peer", &self.peer)
            .field("key", &"<hidden>")
            .finish()
    }
}

impl HaConfig {
    /// Which half of each worker's ports this node allocates from (`NatConfig::node_slice`):
    /// the node with the lower sync address takes slice 0. Both nodes compute the same
    /// split from the same two addresses, so no setting can make them overlap.
    pub fn node_slice(&self) -> u16 {
        u16::from((self.address.ip(), self.address.port()) > (self.peer.ip(), self.peer.port()))
    }
}

#[derive(Debug, Clone)]
pub struct FlowLogConfig {
    pub enabled: bool,
    pub file: Option<std::path::PathBuf>,
    pub interval_ms: u64,
    pub batch: usize,
    pub active_interval_s: u64,
    pub refused: bool,
}

#[derive(Debug, Clone)]
pub struct InsideConfig {
    pub interface: String,
    pub addresses: Vec<Ipv4Net>,
}

#[derive(Debug, Clone)]
pub struct OutsideConfig {
    pub interface: String,
    pub addresses: Vec<Ipv4Addr>,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

pub fn parse_ipv4(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim().parse::<Ipv4Addr>().map_err(|_| invalid(key, s, "is not an IPv4 address"))
}

pub fn parse_net(key: &str, s: &str) -> Result<Ipv4Net, ConfigError> {
    let (a, p) = s.split_once('/').ok_or_else(|| invalid(key, s, "needs a prefix length, like 10.0.0.1/24"))?;
    let addr = parse_ipv4(key, a).map_err(|_| invalid(key, s, "is not an IPv4 address with prefix"))?;
    let prefix: u8 = p.parse().map_err(|_| invalid(key, s, "has a prefix length that is not 0-32"))?;
    if prefix > 32 {
        return Err(invalid(key, s, "has a prefix length that is not 0-32"));
    }
    Ok(Ipv4Net { addr, prefix })
}

fn parse_range(key: &str, s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || invalid(key, s, "is not a port range like 1024-65535 (low >= 1, low <= high)");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

impl Config {
    /// Reads and validates a config file. Relative policy and flow-log paths are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), source: e })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_in(&text, &base).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: path.display().to_string(), message },
            e => e,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_in(text, Path::new(""))
    }

    fn parse_in(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: String::new(), message: e.to_string() })?;
        Self::validate(raw, base)
    }

    fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        if raw.inside.is_empty() {
            return Err(invalid("inside", "[]", "must list at least one inside interface"));
        }
        if raw.inside.len() > 64 {
            return Err(invalid("inside", raw.inside.len(), "lists more than 64 interfaces"));
        }
        let mut inside = Vec::new();
        for (i, r) in raw.inside.iter().enumerate() {
            let key = format!("inside[{i}].interface");
            check_ifname(&key, &r.interface)?;
            if r.addresses.is_empty() {
                return Err(invalid(format!("inside[{i}].addresses"), "[]", "must list at least one address"));
            }
            let mut addrs = Vec::new();
            for (j, a) in r.addresses.iter().enumerate() {
                let n = parse_net(&format!("inside[{i}].addresses[{j}]"), a)?;
                if n.prefix > 30 || n.prefix < 8 {
                    return Err(invalid(
                        format!("inside[{i}].addresses[{j}]"),
                        a,
                        "needs a prefix length from /8 to /30",
                    ));
                }
                addrs.push(n);
            }
            inside.push(InsideConfig { interface: r.interface.clone(), addresses: addrs });
        }
        // Inside subnets must not overlap: the subnet names the interface.
        let all: Vec<(String, Ipv4Net)> = inside
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                c.addresses.iter().enumerate().map(move |(j, n)| (format!("inside[{i}].addresses[{j}]"), *n))
            })
            .collect();
        for (x, (ka, a)) in all.iter().enumerate() {
            for (kb, b) in all.iter().skip(x + 1) {
                if a.contains(b.addr) || b.contains(a.addr) {
                    return Err(invalid(kb.clone(), b, format!("overlaps {ka} = {a}")));
                }
            }
        }
        let o = &raw.outside;
        check_ifname("outside.interface", &o.interface)?;
        if inside.iter().any(|i| i.interface == o.interface) {
            return Err(invalid("outside.interface", &o.interface, "is also an inside interface"));
        }
        let subnet = parse_net("outside.subnet", &o.subnet)?;
        let gateway = parse_ipv4("outside.gateway", &o.gateway)?;
        if !subnet.contains(gateway) {
            return Err(invalid("outside.gateway", &o.gateway, format!("is not in outside.subnet {subnet}")));
        }
        if o.addresses.is_empty() {
            return Err(invalid("outside.addresses", "[]", "must list at least one external address"));
        }
        let mut addresses = Vec::new();
        for (j, a) in o.addresses.iter().enumerate() {
            let key = format!("outside.addresses[{j}]");
            let ip = parse_ipv4(&key, a)?;
            if !subnet.contains(ip) || ip == subnet.broadcast() || ip == gateway {
                return Err(invalid(key, a, format!("is not a usable host address in outside.subnet {subnet}")));
            }
            if addresses.contains(&ip) {
                return Err(invalid(key, a, "is listed twice"));
            }
            if all.iter().any(|(_, n)| n.contains(ip)) {
                return Err(invalid(key, a, "is inside an inside subnet"));
            }
            addresses.push(ip);
        }
        let (port_lo, port_hi) = parse_range("nat.port_range", &raw.nat.port_range)?;
        if raw.nat.max_flows == 0 {
            return Err(invalid("nat.max_flows", 0, "must be at least 1"));
        }
        // A quarter by default: one host (a scan, a broken client) cannot take the table
        // from the others, and it takes four acting together to fill it; the busiest
        // single host expected behind a NAT, a DNS resolver at ~800 queries a second with
        // the 5-minute UDP timeout, still fits in the default table's quarter (262 144).
        let max_flows_per_source = raw.nat.max_flows_per_source.unwrap_or(raw.nat.max_flows.div_ceil(4));
        if max_flows_per_source > raw.nat.max_flows {
            return Err(invalid(
                "nat.max_flows_per_source",
                max_flows_per_source,
                format!("must be 0 (no limit) to nat.max_flows ({})", raw.nat.max_flows),
            ));
        }
        let fm = raw.nat.fragment_memory_kib;
        if !(64..=1 << 20).contains(&fm) {
            return Err(invalid("nat.fragment_memory_kib", fm, "must be 64 to 1048576 (KiB)"));
        }
        let hw = raw.nat.high_water_percent;
        if !(50..=100).contains(&hw) {
            return Err(invalid("nat.high_water_percent", hw, "must be 50 to 100"));
        }
        let t = raw.timeouts;
        for (k, v) in [
            ("timeouts.tcp_established", t.tcp_established),
            ("timeouts.tcp_transitory", t.tcp_transitory),
            ("timeouts.tcp_time_wait", t.tcp_time_wait),
            ("timeouts.tcp_closed", t.tcp_closed),
            ("timeouts.udp", t.udp),
            ("timeouts.icmp", t.icmp),
            ("timeouts.unanswered_under_pressure", t.unanswered_under_pressure),
        ] {
            if v == 0 || v > 7 * 86_400 {
                return Err(invalid(k, v, "must be 1 to 604800 seconds"));
            }
        }
        let rb = raw.dataplane.rx_buffers;
        if !rb.is_power_of_two() || !(16..=4096).contains(&rb) {
            return Err(invalid("dataplane.rx_buffers", rb, "must be a power of two from 16 to 4096"));
        }
        let rx_ring = match raw.dataplane.receive.as_str() {
            "socket" => false,
            "ring" => true,
            other => return Err(invalid("dataplane.receive", other, "must be \"socket\" or \"ring\"")),
        };
        if raw.dataplane.workers > 64 {
            return Err(invalid("dataplane.workers", raw.dataplane.workers, "must be 0 (one per core) to 64"));
        }
        if raw.admin.socket.is_empty() {
            return Err(invalid("admin.socket", "", "must be a path"));
        }
        let pools = validate_pools(&raw.pool, &addresses, (port_lo, port_hi))?;
        let policy = validate_policy(&raw.policy, base)?;
        let fl = &raw.flow_log;
        if !(10..=3_600_000).contains(&fl.interval_ms) {
            return Err(invalid("flow_log.interval_ms", fl.interval_ms, "must be 10 to 3600000"));
        }
        if !(1..=65536).contains(&fl.batch) {
            return Err(invalid("flow_log.batch", fl.batch, "must be 1 to 65536"));
        }
        if fl.active_interval_s > 86_400 {
            return Err(invalid("flow_log.active_interval_s", fl.active_interval_s, "must be 0 (off) to 86400"));
        }
        let flow_log = FlowLogConfig {
            enabled: fl.enabled,
            file: (!fl.file.is_empty()).then(|| join_clean(base, &fl.file)),
            interval_ms: fl.interval_ms,
            batch: fl.batch,
            active_interval_s: fl.active_interval_s,
            refused: fl.refused,
        };
        let otlp = validate_otlp(&raw.otlp, base)?;
        let metrics_listen = match raw.metrics.listen.trim() {
            "" => None,
            l => Some(l.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid("metrics.listen", l, "is not an address:port like 127.0.0.1:9108 (\"\" turns it off)")
            })?),
        };
        let ha = raw.ha.as_ref().map(|h| validate_ha(h, base)).transpose()?;
        let dns = validate_dns(&raw.dns, &inside)?;
        if ha.is_some() && raw.dataplane.workers == 0 {
            return Err(invalid(
                "dataplane.workers",
                0,
                "must be set explicitly with [ha]: both nodes of a pair must run the same number of workers",
            ));
        }
        Ok(Config {
            inside,
            outside: OutsideConfig { interface: o.interface.clone(), addresses, subnet, gateway },
            port_lo,
            port_hi,
            filtering: raw.nat.filtering,
            max_flows: raw.nat.max_flows,
            max_flows_per_source,
            max_inbound_flows_per_mapping: raw.nat.max_inbound_flows_per_mapping,
            high_water_percent: hw,
            fragment_memory: fm * 1024,
            icmp_error_rate: raw.nat.icmp_error_rate,
            refusal_cache_ms: raw.policy.refusal_cache_ms,
            timeouts: raw.timeouts,
            workers: raw.dataplane.workers,
            rx_buffers: rb,
            pin_workers: raw.dataplane.pin_workers,
            busy_poll_us: raw.dataplane.busy_poll_us,
            rx_ring,
            keep_flows: raw.dataplane.keep_flows,
            admin_socket: raw.admin.socket,
            pools,
            policy,
            flow_log,
            otlp,
            metrics_listen,
            ha,
            dns,
        })
    }

    /// The default pool's name.
    pub fn default_pool(&self) -> &str {
        &self.pools[0].name
    }

    /// Workers to run: the configured number, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

fn validate_pools(raw: &[RawPool], outside: &[Ipv4Addr], range: (u16, u16)) -> Result<Vec<PoolSpec>, ConfigError> {
    if raw.is_empty() {
        return Ok(vec![PoolSpec { name: "default".into(), addrs: outside.to_vec(), lo: range.0, hi: range.1 }]);
    }
    let mut pools: Vec<PoolSpec> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("pool[{i}].name");
        if r.name.is_empty()
            || r.name.len() > 64
            || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(key, &r.name, "must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        if pools.iter().any(|p| p.name == r.name) {
            return Err(invalid(key, &r.name, "names another pool too"));
        }
        if r.addresses.is_empty() {
            return Err(invalid(format!("pool[{i}].addresses"), "[]", "must list at least one address"));
        }
        let mut addrs = Vec::new();
        for (j, a) in r.addresses.iter().enumerate() {
            let key = format!("pool[{i}].addresses[{j}]");
            let ip = parse_ipv4(&key, a)?;
            if !outside.contains(&ip) {
                return Err(invalid(key, a, "is not one of outside.addresses"));
            }
            if addrs.contains(&ip) {
                return Err(invalid(key, a, "is listed twice"));
            }
            addrs.push(ip);
        }
        let (lo, hi) = match &r.port_range {
            Some(s) => parse_range(&format!("pool[{i}].port_range"), s)?,
            None => range,
        };
        // An external (address, port) must name one mapping: pools may share an address
        // only with port ranges that do not overlap.
        for (k, p) in pools.iter().enumerate() {
            if p.addrs.iter().any(|a| addrs.contains(a)) && lo <= p.hi && p.lo <= hi {
                return Err(invalid(
                    format!("pool[{i}].port_range"),
                    format!("{lo}-{hi}"),
                    format!("overlaps pool[{k}] ({:?}, {}-{}) on a shared address", p.name, p.lo, p.hi),
                ));
            }
        }
        pools.push(PoolSpec { name: r.name.clone(), addrs, lo, hi });
    }
    if let Some(d) = pools.iter().position(|p| p.name == "default") {
        let p = pools.remove(d);
        pools.insert(0, p);
    }
    if pools.len() > usize::from(u16::MAX) {
        return Err(invalid("pool", pools.len(), "lists too many pools"));
    }
    Ok(pools)
}

/// `base/rel` with `.` and `..` resolved lexically (the file need not exist yet).
/// A header name as HTTP/2 and gRPC metadata accept it: lower-case token characters.
fn valid_header_name(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn validate_otlp(raw: &RawOtlp, base: &Path) -> Result<Option<OtlpConfig>, ConfigError> {
    let endpoint = raw.endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return Ok(None);
    }
    let bad_url =
        || invalid("otlp.endpoint", &raw.endpoint, "is not a URL like http://127.0.0.1:4317 or https://collector:4318");
    let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://")).ok_or_else(bad_url)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        invalid("otlp.endpoint", &raw.endpoint, "needs a port (4317 is OTLP/gRPC's, 4318 OTLP/HTTP's)")
    })?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad_url());
    }
    let protocol = match raw.protocol.as_str() {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        p => return Err(invalid("otlp.protocol", p, "must be \"grpc\" or \"http/protobuf\"")),
    };
    let gzip = match raw.compression.as_str() {
        "none" => false,
        "gzip" => true,
        c => return Err(invalid("otlp.compression", c, "must be \"none\" or \"gzip\"")),
    };
    for (k, v) in &raw.headers {
        if !valid_header_name(k) {
            return Err(invalid(
                format!("otlp.headers.{k}"),
                k,
                "is not a header name (lower-case letters, digits, - _ .)",
            ));
        }
        if v.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            return Err(invalid(format!("otlp.headers.{k}"), v, "must be printable ASCII"));
        }
    }
    let ca_file = (!raw.ca_file.is_empty()).then(|| join_clean(base, &raw.ca_file));
    if let Some(p) = &ca_file {
        if !endpoint.starts_with("https://") {
            return Err(invalid("otlp.ca_file", &raw.ca_file, "is set but otlp.endpoint is not https://"));
        }
        let text = std::fs::read_to_string(p)
            .map_err(|e| invalid("otlp.ca_file", p.display(), format!("cannot be read: {e}")))?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid("otlp.ca_file", p.display(), "holds no PEM certificate"));
        }
    }
    let range = |key: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(key, v, format!("must be {lo} to {hi}")))
        }
    };
    let timeout_ms = range("otlp.timeout_ms", raw.timeout_ms, 10, 600_000)?;
    let metrics_interval_ms = match raw.metrics_interval_ms {
        0 => 0,
        v => range("otlp.metrics_interval_ms", v, 100, 3_600_000)?,
    };
    // Both bounded far below usize::MAX.
    let buffer_records =
        usize::try_from(range("otlp.buffer_records", raw.buffer_records as u64, 1, 16 << 20)?).unwrap_or(16 << 20);
    let batch = usize::try_from(range("otlp.batch", raw.batch as u64, 1, 65_536)?).unwrap_or(65_536);
    let retry_initial_ms = range("otlp.retry_initial_ms", raw.retry_initial_ms, 1, 600_000)?;
    let retry_max_ms = range("otlp.retry_max_ms", raw.retry_max_ms, retry_initial_ms, 3_600_000)?;
    for k in raw.resource.keys() {
        if k.is_empty() || k.chars().any(char::is_whitespace) {
            return Err(invalid(format!("otlp.resource.{k}"), k, "is not an attribute name"));
        }
    }
    Ok(Some(OtlpConfig {
        endpoint: endpoint.to_string(),
        protocol,
        headers: raw.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        gzip,
        ca_file,
        timeout_ms,
        logs: raw.logs,
        metrics_interval_ms,
        buffer_records,
        batch,
        retry_initial_ms,
        retry_max_ms,
        instance_id: (!raw.instance_id.is_empty()).then(|| raw.instance_id.clone()),
        resource: raw.resource.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }))
}

fn join_clean(base: &Path, rel: &str) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn validate_policy(raw: &RawPolicy, base: &Path) -> Result<PolicyConfig, ConfigError> {
    if !(10..=1_000_000).contains(&raw.call_timeout_us) {
        return Err(invalid("policy.call_timeout_us", raw.call_timeout_us, "must be 10 to 1000000 microseconds"));
    }
    if !(1..=4096).contains(&raw.memory_limit_mb) {
        return Err(invalid("policy.memory_limit_mb", raw.memory_limit_mb, "must be 1 to 4096"));
    }
    if raw.refusal_cache_ms > 60_000 {
        return Err(invalid("policy.refusal_cache_ms", raw.refusal_cache_ms, "must be 0 (off) to 60000 milliseconds"));
    }
    let hook = |h: Hook, r: &Option<RawHook>| -> Result<Option<HookConfig>, ConfigError> {
        let Some(r) = r else { return Ok(None) };
        let key = format!("policy.{}.component", h.name().replace('-', "_"));
        if r.component.is_empty() {
            return Err(invalid(key, "", "must be the path of a .wasm component"));
        }
        Ok(Some(HookConfig {
            component: join_clean(base, &r.component),
            config: r.config.as_ref().map(|c| join_clean(base, c)),
            fail: r.fail.unwrap_or(h.default_fail()),
        }))
    };
    Ok(PolicyConfig {
        call_timeout_us: raw.call_timeout_us,
        memory_limit_mb: raw.memory_limit_mb,
        cache_dir: (!raw.cache_dir.is_empty()).then(|| std::path::PathBuf::from(&raw.cache_dir)),
        hooks: [
            hook(Hook::Egress, &raw.egress)?,
            hook(Hook::PortPool, &raw.port_pool)?,
            hook(Hook::FlowLog, &raw.flow_log)?,
        ],
    })
}

fn validate_dns(raw: &RawDns, inside: &[InsideConfig]) -> Result<Option<natgw_core::dns::DnsConfig>, ConfigError> {
    let addrs = |key: &str, list: &[String]| -> Result<Vec<Ipv4Addr>, ConfigError> {
        list.iter().enumerate().map(|(i, a)| parse_ipv4(&format!("{key}[{i}]"), a)).collect()
    };
    let resolvers = addrs("dns.resolvers", &raw.resolvers)?;
    let inside_resolvers = addrs("dns.inside_resolvers", &raw.inside_resolvers)?;
    for (i, a) in inside_resolvers.iter().enumerate() {
        if !inside.iter().any(|l| l.addresses.iter().any(|n| n.contains(*a))) {
            return Err(invalid(format!("dns.inside_resolvers[{i}]"), a, "is in no inside subnet"));
        }
    }
    if resolvers.is_empty() {
        if !inside_resolvers.is_empty() {
            return Err(invalid(
                "dns.resolvers",
                "[]",
                "must list the resolvers the inside resolvers ask: only their answers bind names",
            ));
        }
        return Ok(None);
    }
    if raw.min_ttl_s > raw.max_ttl_s {
        return Err(invalid("dns.min_ttl_s", raw.min_ttl_s, format!("is above dns.max_ttl_s = {}", raw.max_ttl_s)));
    }
    if raw.max_ttl_s == 0 || raw.max_ttl_s > 7 * 86_400 {
        return Err(invalid("dns.max_ttl_s", raw.max_ttl_s, "must be 1 to 604800 seconds"));
    }
    if raw.max_names == 0 || raw.max_names > 10_000_000 {
        return Err(invalid("dns.max_names", raw.max_names, "must be 1 to 10000000"));
    }
    if raw.max_names_per_host == 0 || raw.max_names_per_host > raw.max_names {
        return Err(invalid("dns.max_names_per_host", raw.max_names_per_host, "must be 1 to dns.max_names"));
    }
    Ok(Some(natgw_core::dns::DnsConfig {
        resolvers,
        inside_resolvers,
        limits: natgw_core::dns::NameLimits {
            min_ttl_s: raw.min_ttl_s,
            max_ttl_s: raw.max_ttl_s,
            max_bindings: raw.max_names,
            max_bindings_per_host: raw.max_names_per_host,
        },
        ..natgw_core::dns::DnsConfig::default()
    }))
}

fn validate_ha(raw: &RawHa, base: &Path) -> Result<HaConfig, ConfigError> {
    check_ifname("ha.interface", &raw.interface)?;
    let addr = |key: &str, v: &str| {
        v.parse::<std::net::SocketAddrV4>()
            .map_err(|_| invalid(key, v, "is not an IPv4 address and port like 10.99.0.1:7801"))
    };
    let address = addr("ha.address", &raw.address)?;
    let peer = addr("ha.peer", &raw.peer)?;
    if address.ip() == peer.ip() {
        return Err(invalid("ha.peer", &raw.peer, "is this node's own sync address (ha.address)"));
    }
    let key = match (&raw.key, &raw.key_file) {
        (Some(k), None) => k.as_bytes().to_vec(),
        (None, Some(f)) => {
            let path = base.join(f);
            let mut k = std::fs::read(&path)
                .map_err(|e| invalid("ha.key_file", path.display(), format!("cannot be read: {e}")))?;
            while k.last().is_some_and(u8::is_ascii_whitespace) {
                k.pop();
            }
            k
        }
        _ => return Err(invalid("ha.key", "", "give exactly one of ha.key and ha.key_file")),
    };
    if key.len() < 16 {
        let what = if raw.key.is_some() { "ha.key" } else { "ha.key_file" };
        return Err(invalid(what, format!("{} bytes", key.len()), "must hold at least 16 bytes (a pre-shared key)"));
    }
    Ok(HaConfig { interface: raw.interface.clone(), address, peer, key })
}

fn check_ifname(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 15 || name.contains('/') || name.contains(char::is_whitespace) {
        return Err(invalid(key, name, "is not a valid interface name (1-15 characters, no '/' or spaces)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[inside]]
interface = "in1"
addresses = ["10.10.1.1/24"]
[[inside]]
interface = "in2"
addresses = ["10.10.2.1/24"]
[outside]
interface = "out0"
addresses = ["198.51.100.10", "198.51.100.11"]
subnet = "198.51.100.0/24"
gateway = "198.51.100.1"
[timeouts]
udp = 30
"#;

    #[test]
    fn parses_and_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.inside.len(), 2);
        assert_eq!((c.port_lo, c.port_hi), (1024, 65535));
        assert_eq!(c.timeouts.udp, 30);
        assert_eq!(c.timeouts.tcp_established, 7440);
        assert_eq!(c.filtering, Filtering::AddressAndPortDependent);
        // Fairness: a quarter of the table per source, 1024 inbound flows per mapping,
        // unanswered flows reaped after 30 s only above 90 %.
        assert_eq!(c.max_flows_per_source, (1 << 20) / 4);
        assert_eq!((c.max_inbound_flows_per_mapping, c.high_water_percent), (1024, 90));
        assert_eq!(c.timeouts.unanswered_under_pressure, 30);
        let c =
            Config::parse(&GOOD.replace("[timeouts]", "[nat]\nmax_flows = 1000\nmax_flows_per_source = 0\n[timeouts]"))
                .unwrap();
        assert_eq!((c.max_flows, c.max_flows_per_source), (1000, 0), "0 turns the limit off");
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_receive_path_is_socket_unless_ring_is_asked_for() {
        assert!(!Config::parse(GOOD).unwrap().rx_ring, "sockets by default");
        let with = |v: &str| GOOD.replace("[timeouts]", &format!("[dataplane]\nreceive = \"{v}\"\n[timeouts]"));
        assert!(Config::parse(&with("ring")).unwrap().rx_ring);
        assert!(!Config::parse(&with("socket")).unwrap().rx_ring);
        for bad in ["xdp", "Ring", ""] {
            let e = err(&with(bad));
            assert!(e.contains("dataplane.receive") && e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = err(&GOOD.replace("198.51.100.1\"", "198.51.300.1\""));
        assert!(e.contains("outside.gateway") && e.contains("198.51.300.1"), "{e}");
        let e = err(&GOOD.replace("[timeouts]", "[nat]\nport_range = \"70-20\"\n[timeouts]"));
        assert!(e.contains("nat.port_range") && e.contains("70-20"), "{e}");
        let e = err(&GOOD.replace("10.10.2.1/24", "10.10.1.7/16"));
        assert!(e.contains("inside[1].addresses[0]") && e.contains("overlaps"), "{e}");
        let e = err(&GOOD.replace("udp = 30", "udp = 0"));
        assert!(e.contains("timeouts.udp") && e.contains('0'), "{e}");
        let e = err(&GOOD.replace("udp = 30", "udpp = 30"));
        assert!(e.contains("udpp"), "{e}");
        let e = err(&GOOD.replace("\"198.51.100.11\"", "\"203.0.113.5\""));
        assert!(e.contains("outside.addresses[1]") && e.contains("203.0.113.5"), "{e}");
        let e = err(&GOOD.replace("[timeouts]", "[nat]\nfiltering = \"open\"\n[timeouts]"));
        assert!(e.contains("open") && e.contains("filtering"), "{e}");
        let e = err(&GOOD.replace("[timeouts]", "[nat]\nmax_flows = 100\nmax_flows_per_source = 101\n[timeouts]"));
        assert!(e.contains("nat.max_flows_per_source") && e.contains("101"), "{e}");
        let e = err(&GOOD.replace("[timeouts]", "[nat]\nfragment_memory_kib = 1\n[timeouts]"));
        assert!(e.contains("nat.fragment_memory_kib") && e.contains('1'), "{e}");
        let e = err(&GOOD.replace("[timeouts]", "[nat]\nhigh_water_percent = 20\n[timeouts]"));
        assert!(e.contains("nat.high_water_percent") && e.contains("20"), "{e}");
        let e = err(&GOOD.replace("udp = 30", "unanswered_under_pressure = 0"));
        assert!(e.contains("timeouts.unanswered_under_pressure"), "{e}");
        let e = err(&format!("{GOOD}\n[policy]\ncall_timeout_us = 0\n"));
        assert!(e.contains("policy.call_timeout_us") && e.contains('0'), "{e}");
        let e = err(&format!("{GOOD}\n[policy.egress]\ncomponent = \"a.wasm\"\nfail = \"sometimes\"\n"));
        assert!(e.contains("sometimes") && e.contains("fail"), "{e}");
    }

    #[test]
    fn dns_binding_is_off_without_resolvers_and_its_errors_name_the_key() {
        assert!(Config::parse(GOOD).unwrap().dns.is_none());
        let on = Config::parse(&format!(
            "{GOOD}\n[dns]\nresolvers = [\"203.0.113.53\"]\ninside_resolvers = [\"10.10.2.53\"]\n"
        ))
        .unwrap();
        let d = on.dns.expect("[dns] with resolvers is on");
        assert_eq!((d.resolvers.len(), d.inside_resolvers.len(), d.limits.min_ttl_s), (1, 1, 60));
        for (dns, key, value) in [
            ("resolvers = [\"203.0.113.300\"]", "dns.resolvers[0]", "203.0.113.300"),
            (
                "resolvers = [\"203.0.113.53\"]\ninside_resolvers = [\"10.99.0.1\"]",
                "dns.inside_resolvers[0]",
                "10.99.0.1",
            ),
            ("inside_resolvers = [\"10.10.1.53\"]", "dns.resolvers", "[]"),
            ("resolvers = [\"203.0.113.53\"]\nmin_ttl_s = 600\nmax_ttl_s = 60", "dns.min_ttl_s", "600"),
            ("resolvers = [\"203.0.113.53\"]\nmax_names = 0", "dns.max_names", "0"),
            ("resolvers = [\"203.0.113.53\"]\nmax_names = 10\nmax_names_per_host = 11", "dns.max_names_per_host", "11"),
            ("resolver = [\"203.0.113.53\"]", "resolver", ""),
        ] {
            let e = err(&format!("{GOOD}\n[dns]\n{dns}\n"));
            assert!(e.contains(key) && e.contains(value), "{dns}: {e}");
        }
    }

    #[test]
    fn ha_section_and_its_errors() {
        let ha = "[dataplane]\nworkers = 2\n[ha]\ninterface = \"sync0\"\naddress = \"10.99.0.2:7801\"\n\
                  peer = \"10.99.0.1:7801\"\nkey = \"0123456789abcdef\"\n";
        let c = Config::parse(&format!("{GOOD}{ha}")).unwrap();
        let h = c.ha.unwrap();
        assert_eq!((h.interface.as_str(), h.peer.to_string().as_str()), ("sync0", "10.99.0.1:7801"));
        assert_eq!(h.node_slice(), 1, "the higher sync address takes slice 1");
        assert!(!format!("{h:?}").contains("0123456789abcdef"), "the key is not printed");
        for (from, to, key, value) in [
            ("address = \"10.99.0.2:7801\"", "address = \"10.99.0.2\"", "ha.address", "10.99.0.2"),
            ("peer = \"10.99.0.1:7801\"", "peer = \"10.99.0.2:7801\"", "ha.peer", "10.99.0.2:7801"),
            ("key = \"0123456789abcdef\"", "key = \"short\"", "ha.key", "5 bytes"),
            ("key = \"0123456789abcdef\"", "key_file = \"/nonexistent/key\"", "ha.key_file", "/nonexistent/key"),
            ("interface = \"sync0\"", "interface = \"a/b\"", "ha.interface", "a/b"),
            ("workers = 2", "workers = 0", "dataplane.workers", "0"),
        ] {
            let e = Config::parse(&format!("{GOOD}{}", ha.replace(from, to))).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value), "{to}: {e}");
        }
    }

    #[test]
    fn telemetry_defaults_and_errors() {
        let c = Config::parse(GOOD).unwrap();
        assert!(c.otlp.is_none(), "no endpoint, no OTLP");
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9108".parse().unwrap()));
        assert!(c.flow_log.enabled && c.flow_log.refused);
        assert_eq!(c.flow_log.active_interval_s, 60);

        let with = |t: &str| format!("{GOOD}{t}");
        let c = Config::parse(&with(
            "[otlp]\nendpoint = \"http://127.0.0.1:4318/\"\nprotocol = \"http/protobuf\"\n\
             compression = \"gzip\"\nheaders = { \"x-api-key\" = \"k1\" }\n[otlp.resource]\n\
             \"deployment.environment.name\" = \"lab\"\n[metrics]\nlisten = \"\"\n",
        ))
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.signal_url("logs"), "http://127.0.0.1:4318/v1/logs");
        assert!(o.gzip);
        assert_eq!(o.headers, vec![("x-api-key".to_string(), "k1".to_string())]);
        assert_eq!(o.resource[0].0, "deployment.environment.name");
        assert_eq!(c.metrics_listen, None);

        for (text, key, value) in [
            ("[otlp]\nendpoint = \"127.0.0.1:4317\"", "otlp.endpoint", "127.0.0.1:4317"),
            ("[otlp]\nendpoint = \"http://collector\"", "otlp.endpoint", "http://collector"),
            ("[otlp]\nendpoint = \"http://c:4317\"\nprotocol = \"udp\"", "otlp.protocol", "udp"),
            ("[otlp]\nendpoint = \"http://c:4317\"\ncompression = \"zstd\"", "otlp.compression", "zstd"),
            ("[otlp]\nendpoint = \"http://c:4317\"\nbuffer_records = 0", "otlp.buffer_records", "0"),
            ("[otlp]\nendpoint = \"http://c:4317\"\nca_file = \"/etc/hostname\"", "otlp.ca_file", "/etc/hostname"),
            ("[otlp]\nendpoint = \"https://c:4317\"\nca_file = \"/etc/hostname\"", "otlp.ca_file", "no PEM"),
            ("[otlp]\nendpoint = \"http://c:4317\"\nheaders = { \"Bad Name\" = \"v\" }", "otlp.headers", "Bad Name"),
            ("[metrics]\nlisten = \"localhost\"", "metrics.listen", "localhost"),
            ("[flow_log]\nactive_interval_s = 100000", "flow_log.active_interval_s", "100000"),
        ] {
            let e = err(&with(text));
            assert!(e.contains(key) && e.contains(value), "{text}: {e}");
        }
    }

    #[test]
    fn pools() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.default_pool(), "default");
        assert_eq!(c.pools[0].addrs.len(), 2);
        let two = format!(
            "{GOOD}\n[[pool]]\nname = \"a\"\naddresses = [\"198.51.100.10\"]\n\
             [[pool]]\nname = \"b\"\naddresses = [\"198.51.100.11\"]\nport_range = \"2000-2999\"\n"
        );
        let c = Config::parse(&two).unwrap();
        assert_eq!(c.default_pool(), "a");
        assert_eq!((c.pools[1].lo, c.pools[1].hi), (2000, 2999));
        let e = err(&two.replace("\"198.51.100.11\"]\nport", "\"198.51.100.12\"]\nport"));
        assert!(e.contains("pool[1].addresses[0]") && e.contains("198.51.100.12"), "{e}");
        let e = err(&two.replace("\"198.51.100.11\"]\nport", "\"198.51.100.10\"]\nport"));
        assert!(e.contains("pool[1].port_range") && e.contains("overlaps"), "{e}");
        let e = err(&two.replace("name = \"b\"", "name = \"a\""));
        assert!(e.contains("pool[1].name"), "{e}");
    }

    #[test]
    fn policy_paths_are_relative_to_the_config_file() {
        let text = format!("{GOOD}\n[policy.egress]\ncomponent = \"p/e.wasm\"\nconfig = \"e.toml\"\n");
        let c = Config::parse_in(&text.replace("p/e.wasm", "../natgw/./p/e.wasm"), Path::new("/etc/natgw")).unwrap();
        let h = c.policy.hooks[Hook::Egress.index()].as_ref().unwrap();
        assert_eq!(h.component, Path::new("/etc/natgw/p/e.wasm"));
        assert_eq!(h.config.as_deref(), Some(Path::new("/etc/natgw/e.toml")));
        assert_eq!(h.fail, FailMode::Closed);
        assert!(c.policy.hooks[Hook::PortPool.index()].is_none());
    }

    /// The parser meets operator input, not traffic, but a typo must never crash natgw:
    /// every line of the demo config deleted, every value replaced by values of the wrong
    /// kind or size, and the text cut short everywhere, parse to a config or to an error
    /// with a message.
    #[test]
    fn mutated_configs_never_panic() {
        let demo = include_str!("../../../examples/demo/natgw.toml");
        let lines: Vec<&str> = demo.lines().collect();
        let mut variants: Vec<String> = Vec::new();
        for i in 0..lines.len() {
            let mut v = lines.clone();
            v.remove(i);
            variants.push(v.join("\n"));
            if let Some((key, _)) = lines[i].split_once(" = ") {
                for bad in ["\"\"", "-1", "0", "99999999999999999999", "\"x\"", "[]", "{}", "1.5", "true", "[\"a\", 1]"]
                {
                    let mut v = lines.clone();
                    let line = format!("{key} = {bad}");
                    v[i] = &line;
                    variants.push(v.join("\n"));
                }
            }
        }
        for cut in (0..demo.len()).step_by(17).filter(|&c| demo.is_char_boundary(c)) {
            variants.push(demo[..cut].to_string());
        }
        let mut errors = 0;
        for text in &variants {
            if let Err(e) = Config::parse_in(text, Path::new("/etc/natgw")) {
                errors += 1;
                let msg = e.to_string();
                assert!(!msg.is_empty() && msg.len() < 2000, "an unhelpful error: {msg:?}");
            }
        }
        assert!(errors > variants.len() / 2, "{errors} of {} mutated configs refused", variants.len());
    }
}
