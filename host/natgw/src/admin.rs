//! The admin API: what `natgw status`, `stats`, `flows` and `policy` ask a running
//! gateway, and what it answers, over its root-only Unix socket.
//!
//! One request enum, one reply enum and one error enum (the Firecracker
//! `rpc_interface.rs` shape), each message one line of JSON. Every connection starts with
//! a hello that names the protocol version each side speaks, because two natgw binaries of
//! different versions talk to each other during an upgrade; then one request and its
//! reply (`follow-flows` then streams flow records, one JSON object per line). The CLI and
//! the end-to-end tests use the same `AdminClient`, and every `--json` output is one of
//! these types serialized.
//!
//! Owns: the protocol's types and the client. Must never: touch packets.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use natgw_core::counters::Counter;
/// The hook and fail-mode names the API uses, re-exported for its clients.
pub use natgw_policy::config::{FailMode, Hook};

/// The admin protocol this binary speaks. 2: `flows` takes a filter; `top`. 3: `explain`. A client says in its
/// hello the oldest version that carries its request (`Request::protocol`), so that a
/// newer CLI still talks to an older gateway for everything that gateway understands.
pub const PROTOCOL_VERSION: u32 = 3;
/// The oldest protocol version this binary still answers.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// The admin socket of a gateway whose config does not name one.
pub const DEFAULT_SOCKET: &str = "/run/natgw/admin.sock";

/// The socket a CLI command talks to: `socket` (`--socket`), else the `admin.socket` of
/// the config file `config` (`--config`, read and checked as `natgw run` would), else
/// `env` (`$NATGW_SOCKET`, when not empty), else `DEFAULT_SOCKET`.
pub fn admin_socket(
    socket: Option<String>,
    config: Option<&std::path::Path>,
    env: Option<String>,
) -> Result<String, crate::config::ConfigError> {
    if let Some(s) = socket {
        return Ok(s);
    }
    if let Some(file) = config {
        return crate::config::Config::load(file).map(|c| c.admin_socket);
    }
    Ok(env.filter(|e| !e.is_empty()).unwrap_or_else(|| DEFAULT_SOCKET.to_string()))
}

/// How long a client waits for an answer to anything but a policy swap.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `natgw policy swap` waits for its answer: the gateway compiles the component
/// first, which for an 18 MB Python component on a busy 2-core machine takes most of a
/// minute (once: the compiled code is cached in `policy.cache_dir`).
pub const SWAP_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// A message from a client. An unknown request is refused; fields a newer client adds to a
/// known one are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The first message of every connection.
    Hello {
        protocol: u32,
        client: String,
    },
    Status,
    Stats,
    /// The flows the filter selects (every flow with the default filter).
    Flows {
        #[serde(default, skip_serializing_if = "FlowFilter::is_empty")]
        filter: FlowFilter,
    },
    /// The `k` inside hosts and destinations with the most bytes in their current flows
    /// (`natgw top`), from each worker's bounded scan, never a copy of the table.
    Top {
        k: u32,
    },
    /// Every flow record exported from now on, as JSON lines, until the client goes away.
    FollowFlows,
    PolicyList,
    /// Replace a hook's policy; the answer comes when every caller serves it.
    PolicySwap {
        hook: Hook,
        /// Absolute path of the component.
        component: PathBuf,
        /// Absolute path of the file whose text is passed to the policy's `init`.
        config: Option<PathBuf>,
        /// Default: the hook's current fail mode.
        fail: Option<FailMode>,
        /// Re-check existing flows against the new egress policy.
        revalidate: bool,
    },
    /// Back to the built-in behaviour for a hook.
    PolicyRemove {
        hook: Hook,
    },
    /// Start `binary` (`run` with the running gateway's config file) and hand it every
    /// flow, socket and lock; answered when the new process forwards, or with why not
    /// (the running gateway then goes on).
    Upgrade {
        /// Absolute path of the natgw binary to run.
        binary: PathBuf,
    },
    /// `[ha]`: become the active node (keepalived's MASTER notify).
    HaPromote,
    /// `[ha]`: become the standby (keepalived's BACKUP or FAULT notify).
    HaDemote,
    /// Holds the connection open, never answering further, until the process ends: a
    /// watcher (`natgw ha watch`) learns of natgw's death the moment the kernel closes it.
    Watch,
    /// What the gateway would do with a new flow now, and why (`natgw explain`).
    Explain(ExplainQuery),
    /// Run a candidate egress policy beside the live one on the same new flows, never
    /// deciding (`natgw policy shadow`); answered when every worker runs it.
    PolicyShadow {
        hook: Hook,
        component: PathBuf,
        config: Option<PathBuf>,
    },
    /// Stop the shadow policy.
    PolicyShadowRemove {
        hook: Hook,
    },
    /// The shadow policy becomes the live one, through the same swap (`natgw policy promote`).
    PolicyPromote {
        hook: Hook,
        fail: Option<FailMode>,
    },
}

impl Request {
    /// The oldest admin protocol that carries this request as it is.
    pub fn protocol(&self) -> u32 {
        match self {
            Request::Flows { filter } if !filter.is_empty() => 2,
            Request::Top { .. } => 2,
            Request::Explain(_)
            | Request::PolicyShadow { .. }
            | Request::PolicyShadowRemove { .. }
            | Request::PolicyPromote { .. } => 3,
            _ => 1,
        }
    }
}

/// Which flows `natgw flows` lists, like `conntrack -L -s … -d … -p …`: a flow is listed
/// when it matches every field given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowFilter {
    /// The initiator's address (an inside host's, for outbound flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<Prefix>,
    /// The destination as the initiator addressed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<Prefix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<FlowProto>,
    /// A state as `natgw flows` prints it (`FLOW_STATES`), any case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The name of the pool the flow's external address and port come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl FlowFilter {
    pub fn is_empty(&self) -> bool {
        *self == FlowFilter::default()
    }

    /// Refuses a state the gateway has no flows in, naming the field and the states.
    pub fn check(&self) -> Result<(), AdminError> {
        match &self.state {
            Some(st) if !FLOW_STATES.iter().any(|n| n.eq_ignore_ascii_case(st)) => Err(AdminError::BadRequest {
                reason: format!("state {st:?} is not a flow state (one of {})", FLOW_STATES.join(", ")),
            }),
            _ => Ok(()),
        }
    }
}

/// The states `natgw flows` prints and `--state` selects (ICMP flows have none).
pub const FLOW_STATES: [&str; 8] =
    ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "TIME_WAIT", "CLOSE", "UNREPLIED", "ASSURED"];

/// A transport protocol natgw tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProto {
    Tcp,
    Udp,
    Icmp,
}

impl FlowProto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            FlowProto::Tcp => 6,
            FlowProto::Udp => 17,
            FlowProto::Icmp => 1,
        }
    }
}

impl std::str::FromStr for FlowProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(FlowProto::Tcp),
            "udp" => Ok(FlowProto::Udp),
            "icmp" => Ok(FlowProto::Icmp),
            _ => Err(format!("{s:?} is not tcp, udp or icmp")),
        }
    }
}

/// An IPv4 address or prefix (`10.10.1.10`, `10.10.0.0/16`); a string on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix(pub natgw_wire::Ipv4Net);

impl Prefix {
    pub fn contains(&self, a: std::net::Ipv4Addr) -> bool {
        self.0.contains(a)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, len) = s.split_once('/').unwrap_or((s, "32"));
        let bad = || format!("{s:?} is not an IPv4 address or prefix (10.10.1.10, 10.10.0.0/16)");
        let addr = a.parse().map_err(|_| bad())?;
        let prefix = len.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        Ok(Prefix(natgw_wire::Ipv4Net { addr, prefix }))
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A gateway's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Hello {
        protocol: u32,
        server: String,
    },
    /// Boxed: the largest reply by far.
    Status(Box<Status>),
    Stats(Stats),
    Flows {
        flows: Vec<FlowEntry>,
    },
    Top(TopReport),
    /// Flow records follow, one JSON object per line.
    Following,
    PolicyList {
        hooks: Vec<HookStatus>,
    },
    PolicySwapped(SwapReport),
    PolicyRemoved {
        hook: Hook,
    },
    Upgraded(UpgradeReport),
    Ha(crate::ha::HaReport),
    /// The connection is held (`Request::Watch`) until this process ends.
    Watching,
    Explained(Box<ExplainReport>),
}

/// `natgw explain`: a new flow as its inside host would send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub proto: FlowProto,
    pub src: std::net::SocketAddrV4,
    /// The destination; without it, the first address bound to `dst_name` for `src`, at
    /// `dst_port`.
    #[serde(default)]
    pub dst: Option<std::net::SocketAddrV4>,
    #[serde(default)]
    pub dst_port: Option<u16>,
    /// A destination name: with `dst`, supposed bound to it (beside what is bound); alone,
    /// the address is looked up among the names bound for `src`.
    #[serde(default)]
    pub dst_name: Option<String>,
}

/// What the gateway would do with a new flow, and why (`natgw explain`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReport {
    /// `tcp 10.10.1.10:40000 -> 203.0.113.80:443`.
    pub flow: String,
    /// Against a config file, not a running gateway: no names bound, no flows.
    pub offline: bool,
    /// The inside interface the flow would arrive on.
    pub ingress: Option<String>,
    /// Refused before any policy is asked, and why (a source in no inside subnet, a
    /// destination natgw does not route to).
    pub refused_before_policy: Option<String>,
    /// A flow with this exact tuple exists now: its state and translation.
    pub existing: Option<String>,
    /// Names bound to the destination for the source (`supposed`: given with
    /// `--dst-name`, not bound).
    pub names: Vec<ExplainedName>,
    /// Other addresses the name is bound to for the source (`--dst-name` alone).
    pub other_addresses: Vec<String>,
    /// allow, deny or reject.
    pub verdict: String,
    /// Why, in the egress policy's words, or natgw's (no policy, the fail mode).
    pub reason: String,
    /// The egress policy asked: file, generation and contract.
    pub egress_policy: Option<String>,
    /// The pool the mapping would come from (allowed flows only).
    pub pool: Option<ExplainedPool>,
    /// The source it would leave with.
    pub translation: Option<String>,
    /// Who may answer, under the gateway's filtering.
    pub filtering: String,
    /// The idle timeouts that would apply, by state, in seconds.
    pub timeouts: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainedName {
    pub name: String,
    pub ttl_s: u32,
    pub supposed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainedPool {
    pub name: String,
    pub addresses: Vec<String>,
    pub ports: String,
    pub budget: Option<u32>,
    /// Who chose it: the port-pool policy (file, generation), or the default.
    pub chosen_by: String,
}

/// What `natgw upgrade` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub old_pid: u32,
    pub new_pid: u32,
    pub binary: String,
    /// Flows the new process took over, and those it refused (`HandoffFlowsRefused`).
    pub flows: u64,
    pub flows_refused: u64,
    /// From the moment the workers stopped receiving to the new process forwarding.
    pub pause_us: u64,
    /// How long the new process took to get ready (config, policies compiled).
    pub prepare_ms: u64,
}

/// Why a request failed, on either side of the socket.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "kebab-case")]
pub enum AdminError {
    #[error("admin protocol {client} is not spoken by this gateway (it speaks {oldest} to {newest}): use the natgw binary of the running gateway's version")]
    UnsupportedProtocol { client: u32, oldest: u32, newest: u32 },
    #[error("the gateway answered with admin protocol {server}, which this natgw does not speak (it speaks {oldest} to {newest})")]
    UnsupportedServerProtocol { server: u32, oldest: u32, newest: u32 },
    #[error("the admin socket is for root only")]
    NotRoot,
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    /// The new policy was refused; the old one keeps serving. The reason names the file.
    #[error("{reason}")]
    PolicyRefused { hook: Hook, reason: String },
    #[error("flow records are off (flow_log.enabled = false)")]
    FlowLogOff,
    #[error("this gateway has no [ha] section: it is not one of a pair")]
    NoHa,
    /// The upgrade did not happen; the running gateway goes on.
    #[error("upgrade refused, the running gateway goes on: {reason}")]
    UpgradeRefused { reason: String },
    #[error("cannot reach natgw at {path}: {reason} (is `natgw run` running, and are you root?)")]
    Connect { path: String, reason: String },
    #[error("admin socket {path}: {reason}")]
    Transport { path: String, reason: String },
    #[error("admin socket {path}: the gateway's answer is not understood: {reason}")]
    BadReply { path: String, reason: String },
}

/// One line on the wire from the gateway: a reply or an error.
// One per admin request, built and written at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Envelope {
    Ok(Reply),
    Error(AdminError),
}

impl From<Result<Reply, AdminError>> for Envelope {
    fn from(r: Result<Reply, AdminError>) -> Self {
        match r {
            Ok(reply) => Envelope::Ok(reply),
            Err(e) => Envelope::Error(e),
        }
    }
}

impl Envelope {
    /// The line sent on the socket, newline included.
    pub fn line(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"error":{"error":"bad-reply","path":"","reason":"unserializable"}}"#.into())
            + "\n"
    }
}

/// One link as `natgw status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub interface: String,
    /// `a.b.c.d/len` on inside links, `a.b.c.d` outside.
    pub addresses: Vec<String>,
    /// The link's MTU as natgw last read it (it follows `ip link set … mtu`).
    pub mtu: u32,
    /// The MTU each worker applies to the link now (they follow `mtu` within 100 ms).
    pub workers_mtu: Vec<u32>,
    /// How frames move between the link and the workers (`gateway::PACKET_PATH`).
    #[serde(default)]
    pub packet_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The gateway process (it changes with `natgw upgrade`).
    #[serde(default)]
    pub pid: u32,
    pub uptime_s: u64,
    pub workers: usize,
    pub inside: Vec<LinkStatus>,
    pub outside: LinkStatus,
    /// The upstream router.
    pub gateway: String,
    pub flows: u64,
    pub max_flows: usize,
    /// Flows never answered given up to make room (`EarlyDropCount`).
    #[serde(default)]
    pub early_drops: u64,
    pub neighbours: usize,
    pub connections_attempted: u64,
    pub connections_established: u64,
    pub port_allocation_errors: u64,
    pub idle_timeouts: u64,
    pub packets_from_source: u64,
    pub packets_to_destination: u64,
    pub packets_from_destination: u64,
    pub packets_to_source: u64,
    /// Every `PacketsDropCount` reason together.
    pub packets_dropped: u64,
    /// The pair this node belongs to (`[ha]`); absent for a single gateway.
    #[serde(default)]
    pub ha: Option<Box<crate::ha::HaStatus>>,
    /// Workers that have not turned their loop for half a second (the watchdog's view:
    /// `natgw ha check` fails while any is).
    #[serde(default)]
    pub stalled_workers: Vec<usize>,
    /// DNS name binding (`[dns]`); absent when it is off.
    #[serde(default)]
    pub dns: Option<DnsStatus>,
}

/// The name table (`natgw status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    pub resolvers: Vec<String>,
    /// Bindings held now (expired ones not yet swept included), and the bound.
    pub names: u64,
    pub max_names: u64,
    pub answers_matched: u64,
    pub answers_unmatched: u64,
    pub malformed: u64,
    pub bindings_refused: u64,
}

/// One counter's total over every worker, by its operator-facing name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterValue {
    pub name: String,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every counter, in declaration order.
    pub counters: Vec<CounterValue>,
}

impl Stats {
    /// A counter's value by its name (`PacketsDropCount{reason="bad-ihl"}`); 0 if absent.
    pub fn get(&self, name: &str) -> u64 {
        self.counters.iter().find(|c| c.name == name).map_or(0, |c| c.value)
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.get(c.name())
    }

    /// Every `PacketsDropCount` reason together.
    pub fn drops(&self) -> u64 {
        self.counters.iter().filter(|c| c.name.starts_with("PacketsDropCount")).map(|c| c.value).sum()
    }
}

/// One flow as `natgw flows` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub worker: usize,
    pub proto: String,
    pub state: String,
    /// `src:port -> dst:port` as the initiator's packets arrive.
    pub original: String,
    /// The same packets as they leave.
    pub translated: String,
    /// The responder's packets as they arrive.
    pub reply: String,
    pub age_s: u64,
    pub expires_in_s: u64,
    /// Original direction, then reply.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The pool its external address and port come from (none from a gateway before
    /// protocol 2, or for a flow without a mapping).
    #[serde(default)]
    pub pool: Option<String>,
}

/// The top talkers (`natgw top`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopReport {
    /// Workers asked, and those that answered within 5 s (the lists are theirs only).
    #[serde(default)]
    pub workers: usize,
    #[serde(default)]
    pub answered: usize,
    /// Inside hosts, most bytes (both ways) of their current flows first.
    pub by_host: Vec<Talker>,
    /// Destinations as the hosts addressed them, most bytes first.
    pub by_destination: Vec<Talker>,
    /// Flows the scans saw (opened from inside).
    pub flows: u64,
    /// Flows of hosts no worker's tally had room to rank (more than 65 536 hosts).
    pub unranked_flows: u64,
    /// How long the workers took to walk their tables.
    pub scan_ms: u64,
}

/// One host or destination and its flows' bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Talker {
    pub address: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub flows: u64,
}

/// What `natgw policy list` shows for a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    pub hook: Hook,
    pub generation: u64,
    pub file: String,
    pub sha256: String,
    pub loaded_unix_s: u64,
    pub calls: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub fail: FailMode,
    /// Generation each caller of the hook (the workers, or the flow-log thread) serves.
    pub serving: Vec<u64>,
    /// The shadow egress policy (`natgw policy shadow`): it decides nothing; `calls` are
    /// the flows it answered for, `errors` its failures.
    #[serde(default)]
    pub shadow: bool,
    /// The contract version the component was built against.
    #[serde(default)]
    pub contract: String,
}

/// A policy swap that was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapReport {
    pub hook: Hook,
    pub generation: u64,
    pub file: String,
    pub sha256: String,
    /// Compile (or cache), validate, instantiate and `init` one instance per caller.
    pub prepared_us: u64,
    /// Publish until every caller serves it (or the 5 s wait ran out).
    pub serving_after_us: u64,
    /// Every caller serves the new generation.
    pub serving_everywhere: bool,
    /// With `revalidate`: existing flows the new policy denied, now revoked.
    pub revoked: Option<u64>,
    /// A shadow policy was started (it decides nothing), not a live one swapped.
    #[serde(default)]
    pub shadow: bool,
}

/// A connection to a running gateway's admin socket. Each call is one connection: hello,
/// request, reply.
#[derive(Debug, Clone)]
pub struct AdminClient {
    path: String,
    /// The client name sent in the hello.
    client: String,
}

impl AdminClient {
    pub fn new(path: impl Into<String>) -> Self {
        AdminClient { path: path.into(), client: format!("natgw {}", env!("CARGO_PKG_VERSION")) }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Connects and exchanges hellos, saying `protocol`; returns the stream, ready for a
    /// request.
    fn open(&self, timeout: Duration, protocol: u32) -> Result<BufReader<UnixStream>, AdminError> {
        let path = &self.path;
        let stream =
            UnixStream::connect(path).map_err(|e| AdminError::Connect { path: path.clone(), reason: e.to_string() })?;
        let transport = |e: std::io::Error| AdminError::Transport { path: path.clone(), reason: e.to_string() };
        stream.set_read_timeout(Some(timeout)).map_err(transport)?;
        stream.set_write_timeout(Some(timeout)).map_err(transport)?;
        let mut conn = BufReader::new(stream);
        send(&mut conn, &Request::Hello { protocol, client: self.client.clone() }, path)?;
        match receive(&mut conn, path)? {
            Reply::Hello { protocol, .. } if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol) => {
                Ok(conn)
            }
            Reply::Hello { protocol, .. } => Err(AdminError::UnsupportedServerProtocol {
                server: protocol,
                oldest: OLDEST_PROTOCOL_VERSION,
                newest: PROTOCOL_VERSION,
            }),
            other => Err(unexpected(path, &other)),
        }
    }

    /// Sends one request and returns the gateway's reply, waiting up to `timeout`.
    pub fn call_within(&self, request: &Request, timeout: Duration) -> Result<Reply, AdminError> {
        let mut conn = self.open(timeout, request.protocol())?;
        send(&mut conn, request, &self.path)?;
        receive(&mut conn, &self.path)
    }

    pub fn call(&self, request: &Request) -> Result<Reply, AdminError> {
        self.call_within(request, ANSWER_TIMEOUT)
    }

    pub fn status(&self) -> Result<Status, AdminError> {
        match self.call(&Request::Status)? {
            Reply::Status(s) => Ok(*s),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    pub fn stats(&self) -> Result<Stats, AdminError> {
        match self.call(&Request::Stats)? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    pub fn flows(&self) -> Result<Vec<FlowEntry>, AdminError> {
        self.flows_matching(FlowFilter::default())
    }

    /// The flows `filter` selects, filtered by the gateway (a gateway before protocol 2
    /// refuses a filter, naming the versions).
    pub fn flows_matching(&self, filter: FlowFilter) -> Result<Vec<FlowEntry>, AdminError> {
        match self.call(&Request::Flows { filter })? {
            Reply::Flows { flows } => Ok(flows),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// What the gateway would do with a new flow now (`natgw explain`).
    pub fn explain(&self, q: ExplainQuery) -> Result<ExplainReport, AdminError> {
        match self.call(&Request::Explain(q))? {
            Reply::Explained(r) => Ok(*r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    pub fn top(&self, k: u32) -> Result<TopReport, AdminError> {
        match self.call(&Request::Top { k })? {
            Reply::Top(r) => Ok(r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    pub fn policy_list(&self) -> Result<Vec<HookStatus>, AdminError> {
        match self.call(&Request::PolicyList)? {
            Reply::PolicyList { hooks } => Ok(hooks),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// Swaps a hook's policy and waits (up to `SWAP_ANSWER_TIMEOUT`) until it serves.
    pub fn policy_swap(
        &self,
        hook: Hook,
        component: PathBuf,
        config: Option<PathBuf>,
        fail: Option<FailMode>,
        revalidate: bool,
    ) -> Result<SwapReport, AdminError> {
        let req = Request::PolicySwap { hook, component, config, fail, revalidate };
        match self.call_within(&req, SWAP_ANSWER_TIMEOUT)? {
            Reply::PolicySwapped(r) => Ok(r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// Asks the gateway to hand over to `binary`; answered once the new process forwards.
    pub fn upgrade(&self, binary: PathBuf) -> Result<UpgradeReport, AdminError> {
        // The new process compiles the policies first (minutes for a large one, once).
        match self.call_within(&Request::Upgrade { binary }, SWAP_ANSWER_TIMEOUT * 2)? {
            Reply::Upgraded(r) => Ok(r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// `[ha]`: promote (true) or demote this node.
    pub fn ha(&self, promote: bool) -> Result<crate::ha::HaReport, AdminError> {
        let request = if promote { Request::HaPromote } else { Request::HaDemote };
        match self.call_within(&request, SWAP_ANSWER_TIMEOUT)? {
            Reply::Ha(r) => Ok(r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// A connection held by the gateway until its process ends (`Request::Watch`):
    /// reading it returns end-of-file at that moment.
    pub fn watch(&self) -> Result<std::os::unix::net::UnixStream, AdminError> {
        let mut conn = self.open(ANSWER_TIMEOUT, Request::Watch.protocol())?;
        send(&mut conn, &Request::Watch, &self.path)?;
        match receive(&mut conn, &self.path)? {
            Reply::Watching => {}
            other => return Err(unexpected(&self.path, &other)),
        }
        let stream = conn.into_inner();
        stream
            .set_read_timeout(None)
            .map_err(|e| AdminError::Transport { path: self.path.clone(), reason: e.to_string() })?;
        Ok(stream)
    }

    /// `natgw policy shadow`: a candidate beside the live egress policy.
    pub fn policy_shadow(
        &self,
        hook: Hook,
        component: PathBuf,
        config: Option<PathBuf>,
    ) -> Result<SwapReport, AdminError> {
        match self.call_within(&Request::PolicyShadow { hook, component, config }, SWAP_ANSWER_TIMEOUT)? {
            Reply::PolicySwapped(r) => Ok(r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    pub fn policy_shadow_remove(&self, hook: Hook) -> Result<(), AdminError> {
        match self.call_within(&Request::PolicyShadowRemove { hook }, SWAP_ANSWER_TIMEOUT)? {
            Reply::PolicyRemoved { .. } => Ok(()),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// `natgw policy promote`: the shadow becomes the live policy.
    pub fn policy_promote(&self, hook: Hook, fail: Option<FailMode>) -> Result<SwapReport, AdminError> {
        match self.call_within(&Request::PolicyPromote { hook, fail }, SWAP_ANSWER_TIMEOUT)? {
            Reply::PolicySwapped(r) => Ok(r),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    pub fn policy_remove(&self, hook: Hook) -> Result<(), AdminError> {
        match self.call_within(&Request::PolicyRemove { hook }, SWAP_ANSWER_TIMEOUT)? {
            Reply::PolicyRemoved { .. } => Ok(()),
            other => Err(unexpected(&self.path, &other)),
        }
    }

    /// Follows the flow records: each item is one record, a JSON object, as the gateway
    /// exports it. The iterator ends when the gateway closes the connection.
    pub fn follow_flows(&self) -> Result<impl Iterator<Item = Result<String, AdminError>>, AdminError> {
        let mut conn = self.open(ANSWER_TIMEOUT, Request::FollowFlows.protocol())?;
        send(&mut conn, &Request::FollowFlows, &self.path)?;
        match receive(&mut conn, &self.path)? {
            Reply::Following => {}
            other => return Err(unexpected(&self.path, &other)),
        }
        let path = self.path.clone();
        // Records come when flows end: no read deadline from here on.
        conn.get_ref()
            .set_read_timeout(None)
            .map_err(|e| AdminError::Transport { path: path.clone(), reason: e.to_string() })?;
        Ok(conn
            .lines()
            .map(move |l| l.map_err(|e| AdminError::Transport { path: path.clone(), reason: e.to_string() })))
    }
}

fn unexpected(path: &str, reply: &Reply) -> AdminError {
    let name = serde_json::to_value(reply)
        .ok()
        .and_then(|v| v.get("reply").and_then(|r| r.as_str().map(str::to_string)))
        .unwrap_or_default();
    AdminError::BadReply { path: path.into(), reason: format!("unexpected reply `{name}`") }
}

fn send(conn: &mut BufReader<UnixStream>, request: &Request, path: &str) -> Result<(), AdminError> {
    let line = serde_json::to_string(request).map_err(|e| AdminError::BadRequest { reason: e.to_string() })? + "\n";
    conn.get_mut()
        .write_all(line.as_bytes())
        .map_err(|e| AdminError::Transport { path: path.into(), reason: e.to_string() })
}

fn receive(conn: &mut BufReader<UnixStream>, path: &str) -> Result<Reply, AdminError> {
    let mut line = String::new();
    let n =
        conn.read_line(&mut line).map_err(|e| AdminError::Transport { path: path.into(), reason: e.to_string() })?;
    if n == 0 {
        return Err(AdminError::Transport { path: path.into(), reason: "the gateway closed the connection".into() });
    }
    match serde_json::from_str::<Envelope>(line.trim_end()) {
        Ok(Envelope::Ok(reply)) => Ok(reply),
        Ok(Envelope::Error(e)) => Err(e),
        Err(e) => Err(AdminError::BadReply { path: path.into(), reason: e.to_string() }),
    }
}

/// Reads one request line from a client (the server side); `None` at end of stream.
pub fn read_request(conn: &mut impl BufRead) -> Option<Result<Request, AdminError>> {
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            Some(serde_json::from_str(line.trim_end()).map_err(|e| AdminError::BadRequest { reason: e.to_string() }))
        }
    }
}

/// The server's answer to a hello: its own hello, or why it will not talk.
pub fn answer_hello(request: Result<Request, AdminError>) -> Result<Reply, AdminError> {
    match request? {
        Request::Hello { protocol, .. } if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol) => {
            Ok(Reply::Hello { protocol: PROTOCOL_VERSION, server: format!("natgw {}", env!("CARGO_PKG_VERSION")) })
        }
        Request::Hello { protocol, .. } => Err(AdminError::UnsupportedProtocol {
            client: protocol,
            oldest: OLDEST_PROTOCOL_VERSION,
            newest: PROTOCOL_VERSION,
        }),
        _ => Err(AdminError::BadRequest { reason: "a connection starts with a hello".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_finds_its_gateway_by_flag_then_config_then_environment() {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/natgw.toml");
        let env = || Some("/env/admin.sock".to_string());
        assert_eq!(admin_socket(Some("/flag.sock".into()), Some(&demo), env()).unwrap(), "/flag.sock");
        assert_eq!(admin_socket(None, Some(&demo), env()).unwrap(), "/run/natgw-demo/admin.sock");
        assert_eq!(admin_socket(None, None, env()).unwrap(), "/env/admin.sock");
        assert_eq!(admin_socket(None, None, Some(String::new())).unwrap(), DEFAULT_SOCKET);
        assert_eq!(admin_socket(None, None, None).unwrap(), DEFAULT_SOCKET);
        let err = admin_socket(None, Some(std::path::Path::new("/nonexistent/natgw.toml")), env()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/natgw.toml"), "{err}");
    }

    #[test]
    fn flows_asks_for_protocol_2_only_with_a_filter() {
        let plain = Request::Flows { filter: FlowFilter::default() };
        // What a protocol-1 gateway reads, and what a protocol-1 client sends.
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"request":"flows"}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"request":"flows"}"#).unwrap(), plain);
        assert_eq!(plain.protocol(), 1);
        let filter = FlowFilter {
            src: Some("10.10.0.0/16".parse().unwrap()),
            dst: Some("203.0.113.80".parse().unwrap()),
            proto: Some(FlowProto::Udp),
            state: Some("assured".into()),
            pool: Some("pool-a".into()),
        };
        let filtered = Request::Flows { filter: filter.clone() };
        assert_eq!(filtered.protocol(), 2);
        let line = serde_json::to_string(&filtered).unwrap();
        assert_eq!(
            line,
            r#"{"request":"flows","filter":{"src":"10.10.0.0/16","dst":"203.0.113.80/32","proto":"udp","state":"assured","pool":"pool-a"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), filtered);
        // A protocol-1 gateway refuses the hello of a client that needs 2, so a filter is
        // never silently ignored.
        assert!(filtered.protocol() > OLDEST_PROTOCOL_VERSION);
        assert!(filter.check().is_ok());
        // A field this gateway does not know is refused, not ignored: it would select.
        assert!(serde_json::from_str::<Request>(r#"{"request":"flows","filter":{"port":80}}"#).is_err());
    }

    #[test]
    fn filter_values_are_checked_naming_what_is_wrong() {
        for bad in ["10.10.1.300", "10.0.0.0/33", "10.0.0.0/", "", "a.b.c.d", "10.0.0.0/-1", "::1"] {
            let err = bad.parse::<Prefix>().unwrap_err();
            assert!(err.contains(bad) && err.contains("IPv4"), "{bad}: {err}");
        }
        let p: Prefix = "10.10.1.0/24".parse().unwrap();
        assert!(p.contains("10.10.1.255".parse().unwrap()) && !p.contains("10.10.2.0".parse().unwrap()));
        let any: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.80".parse().unwrap()));
        assert_eq!("icmp".parse::<FlowProto>().unwrap().number(), 1);
        assert!("sctp".parse::<FlowProto>().unwrap_err().contains("sctp"));
        let bad_state = FlowFilter { state: Some("LISTEN".into()), ..FlowFilter::default() };
        let err = bad_state.check().unwrap_err().to_string();
        assert!(err.contains("LISTEN") && err.contains("ESTABLISHED"), "{err}");
        // Every state natgw prints is one a filter accepts.
        use natgw_core::conntrack::{FlowState, TcpState};
        for st in [
            FlowState::Tcp(TcpState::SynSent),
            FlowState::Tcp(TcpState::SynReceived),
            FlowState::Tcp(TcpState::Established),
            FlowState::Tcp(TcpState::FinWait),
            FlowState::Tcp(TcpState::TimeWait),
            FlowState::Tcp(TcpState::Closed),
            FlowState::Udp { replied: false },
            FlowState::Udp { replied: true },
        ] {
            assert!(FLOW_STATES.contains(&st.name()), "{}", st.name());
        }
    }

    #[test]
    fn requests_and_replies_round_trip_as_tagged_json() {
        let req = Request::PolicySwap {
            hook: Hook::PortPool,
            component: "/p/x.wasm".into(),
            config: None,
            fail: Some(FailMode::Open),
            revalidate: true,
        };
        let line = serde_json::to_string(&req).unwrap();
        assert!(line.contains(r#""request":"policy-swap""#) && line.contains(r#""hook":"port-pool""#), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        let e = Envelope::from(Err(AdminError::PolicyRefused { hook: Hook::Egress, reason: "bad".into() }));
        let back: Envelope = serde_json::from_str(e.line().trim_end()).unwrap();
        assert!(matches!(back, Envelope::Error(AdminError::PolicyRefused { hook: Hook::Egress, .. })));
        // An unknown request is refused; fields a newer client adds are ignored.
        assert!(serde_json::from_str::<Request>(r#"{"request":"reboot"}"#).is_err());
        assert_eq!(serde_json::from_str::<Request>(r#"{"request":"status","extra":1}"#).unwrap(), Request::Status);
    }

    #[test]
    fn hello_names_both_versions_when_they_do_not_meet() {
        let hello = |protocol| Ok(Request::Hello { protocol, client: "test".into() });
        assert!(matches!(answer_hello(hello(PROTOCOL_VERSION)), Ok(Reply::Hello { protocol: PROTOCOL_VERSION, .. })));
        let err = answer_hello(hello(PROTOCOL_VERSION + 1)).unwrap_err();
        assert_eq!(
            err,
            AdminError::UnsupportedProtocol {
                client: PROTOCOL_VERSION + 1,
                oldest: OLDEST_PROTOCOL_VERSION,
                newest: PROTOCOL_VERSION
            }
        );
        assert!(err.to_string().contains(&format!("{}", PROTOCOL_VERSION + 1)));
        assert!(matches!(answer_hello(Ok(Request::Status)), Err(AdminError::BadRequest { .. })));
    }
}
