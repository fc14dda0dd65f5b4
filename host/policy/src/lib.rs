//! natgw-policy, the Wasm policy runtime: policies are WebAssembly components built against the WIT
//! package `natgw:policy@0.1.0` (`wit/`), run by wasmtime's component model.
//!
//! Shape (wasmtime's own advice for a server): one `Engine` and one `Linker` for the
//! process; one `InstancePre` per policy *generation*; one `Store` (and instance) per
//! worker per generation, so workers never share or lock a store. A swap compiles,
//! validates (exports, `init` with its config), instantiates one instance per worker, then
//! publishes the generation with `arc-swap`; each worker picks up its instance at its next
//! batch boundary and the old generation is dropped when the last worker lets go.
//!
//! Every call runs under a CPU-time budget and every instance under one memory budget; a trap, a
//! timeout, a memory blow-up or an invalid answer applies the hook's fail mode and is
//! counted (`PolicyErrors`) and logged, and never stops the gateway.
//!
//! The budget measures the policy, not the scheduler: the epoch ticker only wakes a call
//! up, and the call's own thread CPU time (`CLOCK_THREAD_CPUTIME_ID`, read in the epoch
//! callback) decides whether it is cut. A call the OS preempted carries on; a call that
//! computed for longer than its budget traps. Calls shorter than a tick (nearly all) never
//! read the clock: the first tick a call sees marks its CPU time, and it is cut once it has
//! used its budget since that mark, so a looping call stops after between one budget and
//! one budget plus two ticks of CPU.
//!
//! No host call blocks past the call's deadline either. Everything a policy can wait on
//! through WASI is a monotonic-clock subscription (no preopens, no sockets, no name
//! lookups; stdin is empty and stdout/stderr never block), and natgw's own
//! `subscribe-duration`/`subscribe-instant` end every such wait by the call's deadline in
//! wall time (its CPU budget, counted from the call's start). A call that was woken early
//! this way has blocked: it fails with the hook's fail mode, counted as a timeout, and its
//! instance (not trapped) serves on.
//!
//! Owns: engine, linker, compiled-component cache, generations and their statistics.
//! Must never: be called on the fast path (once per new flow, or per flow-log batch).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod component_cache;
pub mod config;
pub mod flowlog;
pub mod output;
mod spares;
pub mod vectors;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::{FailMode, Hook, PolicyConfig};
use output::OutputTail;

/// Host-side bindings generated from the WIT contract.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/natgw-policy-0.1.0",
        world: "policy",
        additional_derives: [PartialEq],
    });
}

/// Host-side bindings of `natgw:policy@0.2.0`.
pub mod bindings_v020 {
    wasmtime::component::bindgen!({
        path: "../../wit/natgw-policy-0.2.0",
        world: "policy",
        additional_derives: [PartialEq],
    });
}

use bindings::exports::natgw::policy::{egress, flow_log, lifecycle, port_pool};
use bindings::natgw::policy::host::{self as host_iface, LogLevel};
use bindings::natgw::policy::types::{Flow, Verdict};
use bindings_v020::exports::natgw::policy::{
    egress as egress_v020, flow_log as flow_log_v020, lifecycle as lifecycle_v020, port_pool as port_pool_v020,
};
use bindings_v020::natgw::policy::host as host_iface_v020;
use bindings_v020::natgw::policy::names as names_iface_v020;
use bindings_v020::natgw::policy::types as types_v020;
use natgw_core::dns::{NamePattern, NameTable, MAX_PATTERNS};

/// The WIT packages this gateway implements, oldest first.
pub const WIT_PACKAGES: [&str; 2] = ["natgw:policy@0.1.0", "natgw:policy@0.2.0"];

/// The export a component of contract `package` ("natgw:policy@0.2.0") provides for `hook`.
fn hook_export(hook: Hook, package: &str) -> String {
    let version = package.rsplit('@').next().unwrap_or_default();
    format!("natgw:policy/{}@{version}", hook.name())
}

/// Names as "`a`, `b`", or "nothing".
fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("policy file {path}: cannot read it: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("policy config file {path}: cannot read it: {source}")]
    ReadConfig { path: String, source: std::io::Error },
    #[error("policy file {path}: not a WebAssembly component: {reason}")]
    NotAComponent { path: String, reason: String },
    #[error("policy file {path}: does not provide the {hook} hook: expected exports `natgw:policy/lifecycle@V` and `{export}` for a contract version V this gateway has, found {found} ({reason})")]
    WrongWorld { path: String, hook: Hook, export: String, found: String, reason: String },
    #[error(
        "policy file {path}: cannot be linked: {reason}; it imports {found}, and this gateway provides {provided}"
    )]
    Link { path: String, reason: String, found: String, provided: String },
    #[error("policy file {path}: instantiation failed (the policy's fault): {reason}{output}")]
    Instantiate { path: String, reason: String, output: String },
    #[error("policy file {path}: init rejected its config: {message}")]
    InitRejected { path: String, message: String },
    #[error("policy file {path}: init failed (the policy's fault): {reason}{output}")]
    InitFailed { path: String, reason: String, output: String },
    #[error("policy.cache_dir = {path:?}: {reason}")]
    CacheDir { path: String, reason: String },
    #[error("policy runtime: {0}")]
    Engine(String),
}

/// Short, one-line text of a wasmtime error: the trap (interrupt = the deadline, out of
/// memory, unreachable = a panic, ...) or the innermost cause.
pub fn error_text(e: &wasmtime::Error) -> String {
    let s = if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::Interrupt => "trap: interrupt (the call ran past its deadline)".to_string(),
            wasmtime::Trap::UnreachableCodeReached => {
                "trap: unreachable instruction executed (a panic or abort in the policy)".to_string()
            }
            t => format!("trap: {t}"),
        }
    } else {
        let root = e.root_cause().to_string();
        let top = e.to_string();
        if root == top {
            top
        } else if top.starts_with("error while executing at wasm backtrace") {
            // A host error raised inside a call (a memory limit, a resource limit): the
            // cause says what happened; the backtrace of unnamed functions would fill the
            // line and push it out.
            root
        } else {
            format!("{top}: {root}")
        }
    };
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ").chars().take(400).collect()
}

/// Per-store state: an empty WASI context (no preopens, no environment, no sockets) for
/// components that import WASI, the memory cap, and the host functions' state.
pub struct StoreData {
    wasi: WasiCtx,
    /// The instance's stdout and stderr (the last few KiB).
    output: OutputTail,
    table: ResourceTable,
    limits: MeteredLimits,
    tag: Arc<str>,
    clock: Instant,
    log_window: Instant,
    log_lines: u32,
    budget: CallBudget,
    names: NameContext,
}

/// What the `names` import (0.2.0) answers: the gateway's name table, the flow an egress
/// call is deciding, and the patterns this instance registered.
#[derive(Default)]
struct NameContext {
    table: Option<Arc<NameTable>>,
    /// The inside host, the destination and the time in the table's clock, during an
    /// egress call; `None` outside one.
    flow: Option<FlowNames>,
    patterns: Vec<NamePattern>,
}

/// Whose names an egress call may ask for: the flow's inside host and destination, and
/// the time in the name table's clock (the translator's `now_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowNames {
    pub host: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    pub now_ms: u64,
}

/// What the call running in a store may still use.
#[derive(Debug, Clone, Copy)]
struct CallBudget {
    /// CPU time the call may use.
    cpu: Duration,
    /// The thread's CPU time at the first epoch tick of this call (`None` before it).
    mark: Option<Duration>,
    /// Waits in host calls end by this instant.
    host_deadline: Instant,
    /// The longest wait the call asked for that was cut at `host_deadline`.
    blocked: Option<Duration>,
}

impl CallBudget {
    /// A call starting now with `cpu` to use.
    fn starting_now(cpu: Duration) -> CallBudget {
        CallBudget { cpu, mark: None, host_deadline: Instant::now() + cpu, blocked: None }
    }
}

/// The WASI interface whose subscriptions natgw replaces with ones that end by the call's
/// deadline (the version wasmtime-wasi links; components importing older 0.2 versions
/// resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A policy's monotonic clock: nanoseconds since its store was made (what the WASI clock
/// and `host.monotonic-now-ns` both report).
struct PolicyClock(Instant);

impl wasmtime_wasi::HostMonotonicClock for PolicyClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock subscription that is ready at its instant (already capped at the call's deadline).
struct CappedWait(tokio::time::Instant);

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for CappedWait {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

impl StoreData {
    /// A pollable for a wait of `asked`, ready no later than the call's deadline.
    fn capped_wait(&mut self, asked: Duration) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        let now = Instant::now();
        let left = self.budget.host_deadline.saturating_duration_since(now);
        let wait = if asked > left {
            self.budget.blocked = Some(self.budget.blocked.map_or(asked, |b| b.max(asked)));
            left
        } else {
            asked
        };
        let at = tokio::time::Instant::from_std(now) + wait;
        let r = self.table.push(CappedWait(at))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, r)
    }

    /// The longest wait the last call asked for that natgw cut at its deadline, if any.
    fn take_blocked(&mut self) -> Option<Duration> {
        self.budget.blocked.take()
    }
}

/// Epoch callbacks run in this process: each reads its thread's CPU clock once.
static DEADLINE_CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Deadline checks (epoch callbacks, one CPU-clock read each) this process has made.
pub fn deadline_checks() -> u64 {
    DEADLINE_CHECKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// What keeping a call's deadline costs, measured now on this thread, in nanoseconds:
/// the wall-clock read every call makes at its start (for waits in host calls), and the
/// CPU-clock read each deadline check makes (only when an epoch tick falls in a call).
pub fn deadline_clock_costs() -> (f64, f64) {
    const N: u32 = 100_000;
    let t = Instant::now();
    let mut sink = Duration::ZERO;
    for _ in 0..N {
        sink += std::hint::black_box(Instant::now()).elapsed();
    }
    let wall = t.elapsed().as_nanos() as f64 / f64::from(N) / 2.0;
    let t = Instant::now();
    for _ in 0..N {
        sink += std::hint::black_box(thread_cpu_time()).unwrap_or_default();
    }
    let cpu = t.elapsed().as_nanos() as f64 / f64::from(N);
    std::hint::black_box(sink);
    (wall, cpu)
}

/// CPU time the calling thread has used, or `None` where the clock is unavailable.
fn thread_cpu_time() -> Option<Duration> {
    use rustix::time::{clock_gettime_dynamic, ClockId, DynamicClockId};
    let t = clock_gettime_dynamic(DynamicClockId::Known(ClockId::ThreadCPUTime)).ok()?;
    Some(Duration::new(u64::try_from(t.tv_sec).ok()?, u32::try_from(t.tv_nsec).ok()?))
}

/// Ticks that cover `d` (at least one).
fn ticks_covering(d: Duration, tick: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(tick.as_nanos().max(1))).unwrap_or(u64::MAX).max(1)
}

/// The epoch callback: cut the call only once its thread has spent its budget in it.
fn on_epoch_deadline(b: &mut CallBudget, tick: Duration) -> wasmtime::UpdateDeadline {
    DEADLINE_CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(now) = thread_cpu_time() else {
        // No CPU clock: the budget becomes wall time, counted from the first tick.
        return match b.mark {
            None => {
                b.mark = Some(Duration::ZERO);
                wasmtime::UpdateDeadline::Continue(ticks_covering(b.cpu, tick))
            }
            Some(_) => wasmtime::UpdateDeadline::Interrupt,
        };
    };
    let used = match b.mark {
        None => {
            b.mark = Some(now);
            Duration::ZERO
        }
        Some(m) => now.saturating_sub(m),
    };
    if used >= b.cpu {
        wasmtime::UpdateDeadline::Interrupt
    } else {
        wasmtime::UpdateDeadline::Continue(ticks_covering(b.cpu - used, tick))
    }
}

/// Bytes a table element counts against the instance's budget (a `funcref` or `externref`
/// slot: a pointer and its type, as wasmtime lays them out).
const TABLE_ELEMENT_BYTES: usize = 16;

/// The store's limits: one budget (`policy.memory_limit_mb`) for everything its instance
/// holds, all its linear memories and all its tables together (a component may hold
/// several of each, one per core instance), and how much that is (`natgw policy bench`
/// reports it per instance). Counted from the initial sizes at instantiation, so a
/// component whose declared memories alone exceed the budget is refused at load.
struct MeteredLimits {
    limits: StoreLimits,
    budget_bytes: usize,
    memory_bytes: usize,
    table_bytes: usize,
}

impl MeteredLimits {
    fn new(budget_bytes: usize) -> MeteredLimits {
        MeteredLimits {
            limits: StoreLimitsBuilder::new()
                .memory_size(budget_bytes)
                .instances(64)
                .memories(16)
                .tables(64)
                .table_elements(1 << 20)
                .trap_on_grow_failure(true)
                .build(),
            budget_bytes,
            memory_bytes: 0,
            table_bytes: 0,
        }
    }

    /// Refuses growth by `more` bytes that would take the instance past its budget.
    fn within_budget(&self, more: usize, what: &str) -> wasmtime::Result<()> {
        let total = self.memory_bytes.saturating_add(self.table_bytes).saturating_add(more);
        if total > self.budget_bytes {
            return Err(wasmtime::Error::msg(format!(
                "memory budget: growing {what} by {more} bytes would make the instance hold {total} bytes \
                 across its memories and tables, over policy.memory_limit_mb = {} MiB",
                self.budget_bytes >> 20
            )));
        }
        Ok(())
    }
}

impl wasmtime::ResourceLimiter for MeteredLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        self.within_budget(more, "a linear memory")?;
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if ok {
            self.memory_bytes += more;
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES);
        self.within_budget(more, "a table")?;
        let ok = self.limits.table_growing(current, desired, maximum)?;
        if ok {
            self.table_bytes += more;
        }
        Ok(ok)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl HookInstance {
    /// Bytes of linear memory this instance holds.
    pub fn linear_memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes
    }

    /// Gives the next call `cpu` of CPU time, and until `cpu` from now in host calls.
    pub fn arm(&mut self, cpu: Duration) {
        arm(&mut self.store, cpu);
    }

    /// After a call that returned: why it must count as failed although it returned (it
    /// blocked in a host call until natgw woke it at the deadline).
    pub fn blocked(&mut self) -> Option<String> {
        self.store.data_mut().take_blocked().map(blocked_text)
    }
}

fn blocked_text(asked: Duration) -> String {
    format!("blocked in a host call (a wait of {asked:?}, woken at the call's deadline)")
}

fn arm(store: &mut Store<StoreData>, cpu: Duration) {
    store.data_mut().budget = CallBudget::starting_now(cpu);
    // Woken at the next tick, which marks the CPU time used so far.
    store.set_epoch_deadline(1);
}

/// Log lines a policy may write per second, per instance.
const LOG_LINES_PER_SECOND: u32 = 20;

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl host_iface::Host for StoreData {
    fn log(&mut self, level: LogLevel, message: String) {
        // Kept for the error message too, rate limit or not: a runtime without WASI stdio
        // (the Go adapter) reports its panic through here.
        self.output.push(message.as_bytes());
        self.output.push(b"\n");
        if self.log_window.elapsed() >= Duration::from_secs(1) {
            self.log_window = Instant::now();
            self.log_lines = 0;
        }
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_SECOND {
            return;
        }
        let msg: String = message.chars().filter(|c| !c.is_control()).take(512).collect();
        let tag = &self.tag;
        match level {
            LogLevel::Debug => tracing::debug!("natgw: policy {tag} debug: {msg}"),
            LogLevel::Info => tracing::info!("natgw: policy {tag} info: {msg}"),
            LogLevel::Warn => tracing::warn!("natgw: policy {tag} warn: {msg}"),
            LogLevel::Error => tracing::error!("natgw: policy {tag} error: {msg}"),
        }
    }

    fn monotonic_now_ns(&mut self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl host_iface_v020::Host for StoreData {
    fn log(&mut self, level: host_iface_v020::LogLevel, message: String) {
        let level = match level {
            host_iface_v020::LogLevel::Debug => LogLevel::Debug,
            host_iface_v020::LogLevel::Info => LogLevel::Info,
            host_iface_v020::LogLevel::Warn => LogLevel::Warn,
            host_iface_v020::LogLevel::Error => LogLevel::Error,
        };
        host_iface::Host::log(self, level, message);
    }

    fn monotonic_now_ns(&mut self) -> u64 {
        host_iface::Host::monotonic_now_ns(self)
    }
}

impl names_iface_v020::Host for StoreData {
    fn set_patterns(&mut self, patterns: Vec<String>) -> Result<(), String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("{} name patterns: at most {MAX_PATTERNS}", patterns.len()));
        }
        self.names.patterns = patterns.iter().map(|p| NamePattern::parse(p)).collect::<Result<_, _>>()?;
        Ok(())
    }

    fn dst_matches(&mut self) -> u64 {
        match (&self.names.table, self.names.flow) {
            (Some(t), Some(f)) if !self.names.patterns.is_empty() => {
                t.matching(f.host, std::net::IpAddr::V4(f.dst), f.now_ms, &self.names.patterns)
            }
            _ => 0,
        }
    }

    fn dst_names(&mut self) -> Vec<types_v020::BoundName> {
        let (Some(t), Some(f)) = (&self.names.table, self.names.flow) else { return Vec::new() };
        let mut v = Vec::new();
        t.names_for(f.host, std::net::IpAddr::V4(f.dst), f.now_ms, &mut v);
        v.into_iter().map(|n| types_v020::BoundName { name: n.name.to_string(), ttl_s: n.ttl_s }).collect()
    }
}

/// Counters of one generation, shared by every worker running it.
#[derive(Debug, Default)]
pub struct GenerationStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    /// Calls that hit the deadline (also counted in `errors`).
    pub timeouts: AtomicU64,
}

/// One instance of a generation, ready to be called: its store and the hook's exports.
pub struct HookInstance {
    pub store: Store<StoreData>,
    pub exports: HookExports,
    /// 0.2.0's lifecycle, whose state calls carry state across a swap.
    state: Option<lifecycle_v020::Guest>,
}

/// State one instance may hand the next generation's at a swap.
pub const MAX_STATE_BYTES: usize = 4 << 20;

/// Why state did not reach the new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The call trapped, ran out of time or blocked: the instance may not be entered again.
    Trapped(String),
    /// The policy refused it, or it was too large: the instance serves on.
    Refused(String),
}

impl HookInstance {
    /// Whether this instance takes part in carrying state (built against 0.2.0).
    pub fn carries_state(&self) -> bool {
        self.state.is_some()
    }

    /// `export-state`, armed by the caller. At most `MAX_STATE_BYTES`.
    pub fn export_state(&mut self) -> Result<Vec<u8>, StateError> {
        let Some(l) = self.state.clone() else { return Err(StateError::Refused("a 0.1.0 policy has no state".into())) };
        let r = l.call_export_state(&mut self.store).map_err(|e| StateError::Trapped(error_text(&e)))?;
        if let Some(b) = self.blocked() {
            return Err(StateError::Trapped(b));
        }
        if r.len() > MAX_STATE_BYTES {
            return Err(StateError::Refused(format!("{} bytes of state, over {MAX_STATE_BYTES}", r.len())));
        }
        Ok(r)
    }

    /// `import-state`, armed by the caller.
    pub fn import_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        let Some(l) = self.state.clone() else { return Err(StateError::Refused("a 0.1.0 policy has no state".into())) };
        let r = l.call_import_state(&mut self.store, state).map_err(|e| StateError::Trapped(error_text(&e)))?;
        if let Some(b) = self.blocked() {
            return Err(StateError::Trapped(b));
        }
        r.map_err(|m| {
            StateError::Refused(format!("import-state refused it: {}", m.chars().take(200).collect::<String>()))
        })
    }
}

pub enum HookExports {
    Egress(egress::Guest),
    /// An egress policy built against 0.2.0: it reads the destination's names.
    EgressV020(egress_v020::Guest),
    PortPool(port_pool::Guest),
    PortPoolV020(port_pool_v020::Guest),
    FlowLog(flow_log::Guest),
    /// A flow-log policy built against 0.2.0: its records carry ids and true end reasons.
    FlowLogV020(flow_log_v020::Guest),
}

/// A port-pool policy's choice: the pool's name and the port budget per inside source.
pub type PoolChoice = (String, Option<u32>);

/// What an egress policy decided for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub verdict: Verdict,
    /// How long a refusal may be reused for the tuple, ms (0.2.0's `decision.hold-ms`):
    /// `None` for the gateway's default, and always for a 0.1.0 policy.
    pub hold_ms: Option<u32>,
}

impl HookInstance {
    /// Calls `egress.check` of whichever contract version the instance was built against;
    /// during a 0.2.0 call the `names` import answers for `names`. `None`: the instance is
    /// not an egress policy.
    pub fn egress_check(&mut self, flow: Flow, names: Option<FlowNames>) -> Option<wasmtime::Result<Checked>> {
        Some(match &self.exports {
            HookExports::Egress(g) => {
                g.clone().call_check(&mut self.store, flow).map(|verdict| Checked { verdict, hold_ms: None })
            }
            HookExports::EgressV020(g) => {
                let g = g.clone();
                self.store.data_mut().names.flow = names;
                let r = g.call_check(&mut self.store, flow_v020(flow));
                self.store.data_mut().names.flow = None;
                r.map(|d| Checked { verdict: verdict_v010(d.verdict), hold_ms: d.hold_ms })
            }
            _ => return None,
        })
    }

    /// `port-pool.select` of whichever contract version the instance was built against: the
    /// pool's name and port budget, `Some(None)` for the default pool. `None`: the instance
    /// is not a port-pool policy.
    pub fn port_pool_select(&mut self, flow: Flow) -> Option<wasmtime::Result<Option<PoolChoice>>> {
        Some(match &self.exports {
            HookExports::PortPool(g) => {
                g.clone().call_select(&mut self.store, flow).map(|s| s.map(|s| (s.pool, s.port_budget)))
            }
            HookExports::PortPoolV020(g) => {
                g.clone().call_select(&mut self.store, flow_v020(flow)).map(|s| s.map(|s| (s.pool, s.port_budget)))
            }
            _ => return None,
        })
    }

    /// `natgw explain`: the verdict and the policy's reason, from `egress.explain` of a
    /// 0.2.0 policy (a 0.1.0 one has none: its `check`, and `None`). `None` for an instance
    /// that is not an egress policy.
    pub fn egress_explain(
        &mut self,
        flow: Flow,
        names: Option<FlowNames>,
    ) -> Option<wasmtime::Result<(Verdict, Option<String>)>> {
        Some(match &self.exports {
            HookExports::Egress(g) => g.clone().call_check(&mut self.store, flow).map(|v| (v, None)),
            HookExports::EgressV020(g) => {
                let g = g.clone();
                self.store.data_mut().names.flow = names;
                let r = g.call_explain(&mut self.store, flow_v020(flow));
                self.store.data_mut().names.flow = None;
                r.map(|e| (verdict_v010(e.verdict), Some(e.reason.chars().take(1000).collect())))
            }
            _ => return None,
        })
    }

    /// Answers this instance's `names` calls from `table` instead of the gateway's (what
    /// `natgw explain` supposes bound). Never used on a worker's instance.
    pub fn use_name_table(&mut self, table: Option<Arc<NameTable>>) {
        self.store.data_mut().names.table = table;
    }
}

fn verdict_v010(v: types_v020::Verdict) -> Verdict {
    match v {
        types_v020::Verdict::Allow => Verdict::Allow,
        types_v020::Verdict::Deny => Verdict::Deny,
        types_v020::Verdict::Reject => Verdict::Reject,
    }
}

/// A 0.1.0 flow as 0.2.0 spells it (the same record).
pub(crate) fn flow_v020(f: Flow) -> types_v020::Flow {
    use bindings::natgw::policy::types::{IpAddress, Protocol};
    let addr = |a: IpAddress| match a {
        IpAddress::V4(v) => types_v020::IpAddress::V4(v),
        IpAddress::V6(v) => types_v020::IpAddress::V6(v),
    };
    types_v020::Flow {
        protocol: match f.protocol {
            Protocol::Tcp => types_v020::Protocol::Tcp,
            Protocol::Udp => types_v020::Protocol::Udp,
            Protocol::Icmp => types_v020::Protocol::Icmp,
        },
        src: addr(f.src),
        src_port: f.src_port,
        dst: addr(f.dst),
        dst_port: f.dst_port,
        ingress: f.ingress,
    }
}

/// A compiled, validated policy for one hook, with one prepared instance for each caller
/// that runs the hook (`Runtime::callers_of`).
pub struct Generation {
    pub id: u64,
    pub hook: Hook,
    pub file: PathBuf,
    /// SHA-256 of the component, hex.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub fail: FailMode,
    pub config_text: String,
    pub stats: GenerationStats,
    /// The contract version the component was built against (`WIT_PACKAGES`).
    pub contract: &'static str,
    pre: InstancePre<StoreData>,
    lifecycle: LifecycleIndices,
    exports: ExportIndices,
    prepared: Vec<Mutex<Option<HookInstance>>>,
}

enum LifecycleIndices {
    V010(lifecycle::GuestIndices),
    V020(lifecycle_v020::GuestIndices),
}

enum ExportIndices {
    Egress(egress::GuestIndices),
    EgressV020(egress_v020::GuestIndices),
    PortPool(port_pool::GuestIndices),
    PortPoolV020(port_pool_v020::GuestIndices),
    FlowLog(flow_log::GuestIndices),
    FlowLogV020(flow_log_v020::GuestIndices),
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} policy #{} ({}, sha256 {})", self.hook, self.id, self.file.display(), self.short_hash())
    }
}

impl Generation {
    /// The instance prepared for `caller`, or a fresh one made here (when it was used up:
    /// after a trap, an instance may not be entered again). For the tools (bench, vectors);
    /// callers on the data plane take spares (`take_spare`) and never instantiate.
    pub fn instance_for(&self, rt: &Runtime, caller: usize) -> Result<HookInstance, PolicyError> {
        if let Some(inst) = self.take_spare(caller) {
            return Ok(inst);
        }
        rt.instantiate(self)
    }

    /// The instance ready for `caller` (prepared at the swap, or a spare made since), if
    /// any; never waits (the spare thread holds the lock only to store one).
    pub fn take_spare(&self, caller: usize) -> Option<HookInstance> {
        self.prepared.get(caller)?.try_lock().ok()?.take()
    }

    /// Whether an instance is ready for `caller`.
    pub fn spare_ready(&self, caller: usize) -> bool {
        self.prepared.get(caller).is_some_and(|m| m.lock().is_ok_and(|s| s.is_some()))
    }

    fn put_spare(&self, caller: usize, inst: HookInstance) {
        if let Some(m) = self.prepared.get(caller) {
            let mut slot = m.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(inst);
            }
        }
    }

    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }
}

/// What `natgw policy list` shows for a hook.
#[derive(Debug, Clone)]
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
    /// The shadow egress policy, not a live one.
    pub shadow: bool,
    /// The contract version it was built against.
    pub contract: &'static str,
}

/// The policy runtime of a gateway: engine, linker, cache and the current generation of
/// each hook.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreData>,
    cfg: PolicyConfig,
    /// Callers that hold instances: the workers, then the flow-log thread.
    callers: usize,
    current: [ArcSwapOption<Generation>; 3],
    /// Per hook, per caller: the generation id it serves (0 = none).
    serving: [Vec<AtomicU64>; 3],
    /// A candidate egress policy run beside the live one (`natgw policy shadow`), and the
    /// shadow generation each worker serves.
    shadow: ArcSwapOption<Generation>,
    shadow_serving: Vec<AtomicU64>,
    next_id: AtomicU64,
    /// CPU time per call (`policy.call_timeout_us`).
    call_budget: Duration,
    tick: Duration,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serialises swaps (compile + publish), not calls.
    swap_lock: Mutex<()>,
    pool_names: Vec<String>,
    /// Recently compiled components by content hash: swapping back and forth between
    /// policies compiles each once.
    compiled: Mutex<Vec<(String, Component)>>,
    /// Requests to the spare thread (`spares`).
    spare_tx: std::sync::mpsc::SyncSender<spares::SpareRequest>,
    /// The gateway's DNS name table (`[dns]`), for the `names` import; set before any
    /// policy is loaded, or never (then every policy sees no names).
    name_table: std::sync::OnceLock<Arc<NameTable>>,
}

/// Compiled components kept in memory.
const COMPILED_IN_MEMORY: usize = 8;

/// Flow-log calls carry a batch: their deadline is this many call deadlines.
pub const FLOW_LOG_DEADLINE_FACTOR: u32 = 64;
/// How much of a failed policy's output an error message quotes.
const QUOTED_OUTPUT_CHARS: usize = 600;
/// Instantiation and `init` may use this much CPU (JS and Python runtimes start up in init).
const INIT_DEADLINE: Duration = Duration::from_secs(5);

impl Runtime {
    /// Creates the engine and linker and starts the epoch ticker. `callers` is the number of
    /// workers; one more instance is prepared for the flow-log thread.
    pub fn new(cfg: PolicyConfig, workers: usize, pool_names: Vec<String>) -> Result<Arc<Runtime>, PolicyError> {
        if let Some(dir) = &cfg.cache_dir {
            prepare_cache_dir(dir)?;
        }
        let mut wc = Config::new();
        wc.wasm_component_model(true);
        // Roughly 5x cheaper component calls; natgw makes no async component calls.
        wc.concurrency_support(false);
        wc.epoch_interruption(true);
        wc.max_wasm_stack(1 << 20);
        let engine = Engine::new(&wc).map_err(|e| PolicyError::Engine(error_text(&e)))?;
        let mut linker: Linker<StoreData> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PolicyError::Engine(error_text(&e)))?;
        // The only WASI waits a policy can start: replaced by ones that end by the deadline.
        linker.allow_shadowing(true);
        {
            let mut clock = linker.instance(MONOTONIC_CLOCK).map_err(|e| PolicyError::Engine(error_text(&e)))?;
            clock
                .func_wrap("subscribe-duration", |mut cx: StoreContextMut<'_, StoreData>, (ns,): (u64,)| {
                    Ok((cx.data_mut().capped_wait(Duration::from_nanos(ns))?,))
                })
                .map_err(|e| PolicyError::Engine(error_text(&e)))?;
            clock
                .func_wrap("subscribe-instant", |mut cx: StoreContextMut<'_, StoreData>, (when,): (u64,)| {
                    let d = cx.data_mut();
                    let now = u64::try_from(d.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    Ok((d.capped_wait(Duration::from_nanos(when.saturating_sub(now)))?,))
                })
                .map_err(|e| PolicyError::Engine(error_text(&e)))?;
        }
        linker.allow_shadowing(false);
        host_iface::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(|e| PolicyError::Engine(error_text(&e)))?;
        host_iface_v020::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(|e| PolicyError::Engine(error_text(&e)))?;
        names_iface_v020::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(|e| PolicyError::Engine(error_text(&e)))?;
        // Type-only interface imports: an empty instance satisfies each.
        for v in ["0.1.0", "0.2.0"] {
            linker.instance(&format!("natgw:policy/types@{v}")).map_err(|e| PolicyError::Engine(error_text(&e)))?;
        }
        // Ticks of a quarter of the call budget: a looping call is cut after between 1 and
        // 1.5 budgets of CPU, at a cost of a few thousand wakeups a second.
        let call_budget = Duration::from_micros(cfg.call_timeout_us.max(1));
        let tick = Duration::from_micros((cfg.call_timeout_us / 4).max(50));
        let callers = workers + 1;
        let stop = Arc::new(AtomicBool::new(false));
        let (spare_tx, spare_rx) = spares::channel();
        let rt = Arc::new(Runtime {
            engine,
            linker,
            callers,
            current: Default::default(),
            serving: std::array::from_fn(|_| (0..callers).map(|_| AtomicU64::new(0)).collect()),
            shadow: ArcSwapOption::empty(),
            shadow_serving: (0..callers).map(|_| AtomicU64::new(0)).collect(),
            next_id: AtomicU64::new(1),
            call_budget,
            tick,
            stop: Arc::clone(&stop),
            ticker: Mutex::new(None),
            swap_lock: Mutex::new(()),
            compiled: Mutex::new(Vec::new()),
            pool_names,
            cfg,
            spare_tx,
            name_table: std::sync::OnceLock::new(),
        });
        let engine = rt.engine.clone();
        let handle = std::thread::Builder::new()
            .name("natgw-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| PolicyError::Engine(format!("cannot start the epoch thread: {e}")))?;
        *rt.ticker.lock().expect("not poisoned") = Some(handle);
        // Ends by itself when the runtime is dropped (its sender with it).
        let weak = Arc::downgrade(&rt);
        std::thread::Builder::new()
            .name("natgw-spares".into())
            .spawn(move || spares::run(weak, spare_rx))
            .map_err(|e| PolicyError::Engine(format!("cannot start the spare-instance thread: {e}")))?;
        Ok(rt)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Gives the policies' `names` import the gateway's name table. Instances made before
    /// this see no names; a second call changes nothing.
    pub fn set_name_table(&self, table: Arc<NameTable>) {
        let _ = self.name_table.set(table);
    }

    /// The name table set by `set_name_table`, if any.
    pub fn name_table(&self) -> Option<&Arc<NameTable>> {
        self.name_table.get()
    }

    pub fn callers(&self) -> usize {
        self.callers
    }

    /// The caller index of the flow-log thread.
    pub fn flow_log_caller(&self) -> usize {
        self.callers - 1
    }

    /// The callers that run a hook: the workers for egress and port-pool, the flow-log
    /// thread for flow-log.
    pub fn callers_of(&self, hook: Hook) -> std::ops::Range<usize> {
        match hook {
            Hook::FlowLog => self.flow_log_caller()..self.callers,
            Hook::Egress | Hook::PortPool => 0..self.flow_log_caller(),
        }
    }

    pub fn pool_names(&self) -> &[String] {
        &self.pool_names
    }

    /// The CPU time one call of `hook` may use.
    pub fn call_budget(&self, hook: Hook) -> Duration {
        match hook {
            Hook::FlowLog => self.call_budget.saturating_mul(FLOW_LOG_DEADLINE_FACTOR),
            _ => self.call_budget,
        }
    }

    pub fn current(&self, hook: Hook) -> Option<Arc<Generation>> {
        self.current[hook.index()].load_full()
    }

    /// Cheap check for workers: the id of the current generation (0 = none).
    pub fn current_id(&self, hook: Hook) -> u64 {
        self.current[hook.index()].load().as_ref().map_or(0, |g| g.id)
    }

    /// Records which generation a caller now serves.
    pub fn set_serving(&self, hook: Hook, caller: usize, id: u64) {
        if let Some(s) = self.serving[hook.index()].get(caller) {
            s.store(id, Ordering::Release);
        }
    }

    /// The generation a caller serves for `hook` (0 = none).
    pub fn serving(&self, hook: Hook, caller: usize) -> u64 {
        self.serving[hook.index()].get(caller).map_or(0, |s| s.load(Ordering::Acquire))
    }

    fn new_store(&self, tag: Arc<str>, deadline: Duration) -> Store<StoreData> {
        // The config bounds it (`policy.memory_limit_mb`); saturate rather than wrap anyway.
        let limit = usize::try_from(self.cfg.memory_limit_mb).unwrap_or(usize::MAX).saturating_mul(1 << 20);
        let output = OutputTail::default();
        let clock = Instant::now();
        let data = StoreData {
            wasi: WasiCtxBuilder::new()
                .monotonic_clock(PolicyClock(clock))
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .stdout(output.clone())
                .stderr(output.clone())
                .build(),
            output,
            table: ResourceTable::new(),
            limits: MeteredLimits::new(limit),
            tag,
            clock,
            log_window: Instant::now(),
            log_lines: 0,
            // Armed below, once the store exists.
            budget: CallBudget::starting_now(deadline),
            names: NameContext { table: self.name_table.get().cloned(), ..NameContext::default() },
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limits);
        let tick = self.tick;
        store.epoch_deadline_callback(move |mut ctx| Ok(on_epoch_deadline(&mut ctx.data_mut().budget, tick)));
        arm(&mut store, deadline);
        store
    }

    /// Compiles a component, from the cache when it has been compiled before.
    fn compile(&self, path: &Path, bytes: &[u8], hash: &str) -> Result<Component, PolicyError> {
        if let Some((_, c)) = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(h, _)| h == hash) {
            return Ok(c.clone());
        }
        let c = self.compile_uncached(path, bytes, hash)?;
        let mut m = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= COMPILED_IN_MEMORY {
            m.remove(0);
        }
        m.push((hash.to_string(), c.clone()));
        Ok(c)
    }

    fn compile_uncached(&self, path: &Path, bytes: &[u8], hash: &str) -> Result<Component, PolicyError> {
        let display = path.display().to_string();
        let cached = self.cfg.cache_dir.as_ref().map(|d| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            d.join(format!("{hash}-{:016x}.cwasm", h.finish()))
        });
        if let Some(c) = cached.as_ref().filter(|c| cache_dir_trusted(c)) {
            if let Ok(b) = std::fs::read(c) {
                if let Ok(comp) = crate::component_cache::deserialize_component(&self.engine, &b) {
                    return Ok(comp);
                }
            }
        }
        let comp = Component::from_binary(&self.engine, bytes)
            .map_err(|e| PolicyError::NotAComponent { path: display, reason: error_text(&e) })?;
        if let (Some(c), Ok(ser)) = (&cached, comp.serialize()) {
            // Best effort: a cache that cannot be written only costs compile time.
            let _ = write_cache(c, &ser);
        }
        Ok(comp)
    }

    /// Which hooks a component provides (by its exports).
    pub fn provided_hooks(&self, component: &Path) -> Result<Vec<Hook>, PolicyError> {
        let display = component.display().to_string();
        let bytes = std::fs::read(component).map_err(|e| PolicyError::Read { path: display.clone(), source: e })?;
        let comp = self.compile(component, &bytes, &sha256_hex(&bytes))?;
        let names: Vec<String> = comp.component_type().exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        Ok(Hook::ALL
            .into_iter()
            .filter(|h| names.iter().any(|n| WIT_PACKAGES.iter().any(|p| *n == hook_export(*h, p))))
            .collect())
    }

    /// Compiles and validates a policy for `hook` and prepares one instance for each caller
    /// that runs it, each initialised with the config text. Nothing is published.
    pub fn prepare(
        &self,
        hook: Hook,
        component: &Path,
        config: Option<&Path>,
        fail: FailMode,
    ) -> Result<Arc<Generation>, PolicyError> {
        let config_text = match config {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| PolicyError::ReadConfig { path: p.display().to_string(), source: e })?,
            None => String::new(),
        };
        self.prepare_with_text(hook, component, config_text, fail)
    }

    /// `prepare`, with the config's text instead of its file.
    pub fn prepare_with_text(
        &self,
        hook: Hook,
        component: &Path,
        config_text: String,
        fail: FailMode,
    ) -> Result<Arc<Generation>, PolicyError> {
        let display = component.display().to_string();
        let bytes = std::fs::read(component).map_err(|e| PolicyError::Read { path: display.clone(), source: e })?;
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(PolicyError::NotAComponent {
                path: display,
                reason: "the file does not start with the WebAssembly magic number".into(),
            });
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(PolicyError::NotAComponent {
                path: display,
                reason: "this is a core WebAssembly module, not a component: wrap it with `wasm-tools component new`"
                    .into(),
            });
        }
        let hash = sha256_hex(&bytes);
        let comp = self.compile(component, &bytes, &hash)?;
        let ty = comp.component_type();
        let pre = self.linker.instantiate_pre(&comp).map_err(|e| PolicyError::Link {
            path: display.clone(),
            reason: error_text(&e),
            found: name_list(ty.imports(&self.engine).map(|(n, _)| n)),
            provided: "`natgw:policy/host` and `natgw:policy/types` of 0.1.0 and 0.2.0, `natgw:policy/names@0.2.0`, \
                       and WASI 0.2 (`wasi:*@0.2.x`)"
                .into(),
        })?;
        let exported: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        // Built against 0.2.0 when it exports that version's hook; otherwise 0.1.0's.
        let v020 = exported.iter().any(|n| *n == hook_export(hook, WIT_PACKAGES[1]));
        let wrong = |e: wasmtime::Error| PolicyError::WrongWorld {
            path: display.clone(),
            hook,
            export: WIT_PACKAGES.iter().map(|p| hook_export(hook, p)).collect::<Vec<_>>().join("` or `"),
            found: name_list(ty.exports(&self.engine).map(|(n, _)| n)),
            reason: error_text(&e),
        };
        let lifecycle = if v020 {
            LifecycleIndices::V020(lifecycle_v020::GuestIndices::new(&pre).map_err(&wrong)?)
        } else {
            LifecycleIndices::V010(lifecycle::GuestIndices::new(&pre).map_err(&wrong)?)
        };
        let exports = match hook {
            Hook::Egress if v020 => ExportIndices::EgressV020(egress_v020::GuestIndices::new(&pre).map_err(&wrong)?),
            Hook::Egress => ExportIndices::Egress(egress::GuestIndices::new(&pre).map_err(&wrong)?),
            Hook::PortPool if v020 => {
                ExportIndices::PortPoolV020(port_pool_v020::GuestIndices::new(&pre).map_err(&wrong)?)
            }
            Hook::PortPool => ExportIndices::PortPool(port_pool::GuestIndices::new(&pre).map_err(&wrong)?),
            Hook::FlowLog if v020 => {
                ExportIndices::FlowLogV020(flow_log_v020::GuestIndices::new(&pre).map_err(&wrong)?)
            }
            Hook::FlowLog => ExportIndices::FlowLog(flow_log::GuestIndices::new(&pre).map_err(&wrong)?),
        };
        let mut generation = Generation {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            hook,
            file: component.to_path_buf(),
            hash,
            loaded_at: SystemTime::now(),
            fail,
            config_text,
            stats: GenerationStats::default(),
            contract: if v020 { WIT_PACKAGES[1] } else { WIT_PACKAGES[0] },
            pre,
            lifecycle,
            exports,
            prepared: Vec::new(),
        };
        let mut prepared = Vec::with_capacity(self.callers);
        for caller in 0..self.callers {
            // Only the callers that run this hook get an instance.
            let inst =
                if self.callers_of(hook).contains(&caller) { Some(self.instantiate(&generation)?) } else { None };
            prepared.push(Mutex::new(inst));
        }
        generation.prepared = prepared;
        Ok(Arc::new(generation))
    }

    /// Asks the spare thread to make `caller` its next instance of `g`; never blocks.
    pub fn request_spare(&self, g: &Arc<Generation>, caller: usize) {
        spares::request(&self.spare_tx, g, caller);
    }

    /// A new instance of a generation: instantiate, then `init` with its config.
    pub fn instantiate(&self, g: &Generation) -> Result<HookInstance, PolicyError> {
        let path = g.file.display().to_string();
        let tag: Arc<str> =
            format!("{}#{} ({})", g.hook, g.id, g.file.file_name().unwrap_or_default().to_string_lossy()).into();
        let mut store = self.new_store(tag, INIT_DEADLINE);
        // What the policy wrote before it failed: its runtime's own message.
        let output = store.data().output.clone();
        let failed = |e: wasmtime::Error| PolicyError::Instantiate {
            path: path.clone(),
            reason: error_text(&e),
            output: output.quoted(QUOTED_OUTPUT_CHARS),
        };
        let instance = g.pre.instantiate(&mut store).map_err(failed)?;
        let mut state = None;
        let init = match &g.lifecycle {
            LifecycleIndices::V010(i) => {
                i.load(&mut store, &instance).map_err(failed)?.call_init(&mut store, &g.config_text)
            }
            LifecycleIndices::V020(i) => {
                let l = i.load(&mut store, &instance).map_err(failed)?;
                let r = l.call_init(&mut store, &g.config_text);
                state = Some(l);
                r
            }
        };
        if let Some(asked) = store.data_mut().take_blocked() {
            let output = output.quoted(QUOTED_OUTPUT_CHARS);
            return Err(PolicyError::InitFailed { path, reason: format!("init {}", blocked_text(asked)), output });
        }
        match init {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                let message: String = message.chars().take(400).collect();
                return Err(PolicyError::InitRejected { path, message });
            }
            Err(e) => {
                let output = output.quoted(QUOTED_OUTPUT_CHARS);
                return Err(PolicyError::InitFailed { path, reason: error_text(&e), output });
            }
        }
        let exports = match &g.exports {
            ExportIndices::Egress(i) => HookExports::Egress(i.load(&mut store, &instance).map_err(failed)?),
            ExportIndices::EgressV020(i) => HookExports::EgressV020(i.load(&mut store, &instance).map_err(failed)?),
            ExportIndices::PortPool(i) => HookExports::PortPool(i.load(&mut store, &instance).map_err(failed)?),
            ExportIndices::PortPoolV020(i) => HookExports::PortPoolV020(i.load(&mut store, &instance).map_err(failed)?),
            ExportIndices::FlowLog(i) => HookExports::FlowLog(i.load(&mut store, &instance).map_err(failed)?),
            ExportIndices::FlowLogV020(i) => HookExports::FlowLogV020(i.load(&mut store, &instance).map_err(failed)?),
        };
        Ok(HookInstance { store, exports, state })
    }

    /// Prepares and publishes a new generation for `hook`. On error the current one keeps
    /// serving. Returns the new generation.
    pub fn swap(
        &self,
        hook: Hook,
        component: &Path,
        config: Option<&Path>,
        fail: Option<FailMode>,
    ) -> Result<Arc<Generation>, PolicyError> {
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let fail = fail.or_else(|| self.current(hook).map(|g| g.fail)).unwrap_or(hook.default_fail());
        let g = self.prepare(hook, component, config, fail)?;
        self.current[hook.index()].store(Some(Arc::clone(&g)));
        Ok(g)
    }

    /// `natgw policy shadow`: prepares a candidate egress policy and runs it beside the
    /// live one (never deciding anything). Returns the shadow generation.
    pub fn shadow_swap(&self, component: &Path, config: Option<&Path>) -> Result<Arc<Generation>, PolicyError> {
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.prepare(Hook::Egress, component, config, FailMode::Closed)?;
        self.shadow.store(Some(Arc::clone(&g)));
        Ok(g)
    }

    /// The shadow egress generation, if any.
    pub fn shadow(&self) -> Option<Arc<Generation>> {
        self.shadow.load_full()
    }

    /// The shadow generation's id (0 = none): the workers' cheap check.
    pub fn shadow_id(&self) -> u64 {
        self.shadow.load().as_ref().map_or(0, |g| g.id)
    }

    pub fn set_shadow_serving(&self, caller: usize, id: u64) {
        if let Some(s) = self.shadow_serving.get(caller) {
            s.store(id, Ordering::Release);
        }
    }

    /// The shadow generation a caller serves (0 = none).
    pub fn shadow_serving(&self, caller: usize) -> u64 {
        self.shadow_serving.get(caller).map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// Stops the shadow policy.
    pub fn clear_shadow(&self) {
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.shadow.store(None);
    }

    /// `natgw policy promote`: the shadow policy becomes the live egress policy, through
    /// the same swap as any other (a new generation prepared from its file and config,
    /// published, each worker switching at a batch boundary), and stops being a shadow.
    pub fn promote_shadow(&self, fail: Option<FailMode>) -> Result<Arc<Generation>, PolicyError> {
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = self.shadow.load_full() else {
            return Err(PolicyError::Engine("no shadow egress policy to promote (natgw policy shadow)".into()));
        };
        let fail = fail.or_else(|| self.current(Hook::Egress).map(|g| g.fail)).unwrap_or(Hook::Egress.default_fail());
        let g = self.prepare_with_text(Hook::Egress, &s.file, s.config_text.clone(), fail)?;
        if g.hash != s.hash {
            // What goes live must be what ran as the shadow.
            return Err(PolicyError::Engine(format!(
                "{} changed since it was shadowed (sha256 {} then, {} now): shadow it again",
                s.file.display(),
                s.short_hash(),
                g.short_hash()
            )));
        }
        self.current[Hook::Egress.index()].store(Some(Arc::clone(&g)));
        self.shadow.store(None);
        Ok(g)
    }

    /// Removes the policy of a hook: the gateway's built-in behaviour applies again.
    pub fn clear(&self, hook: Hook) {
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.current[hook.index()].store(None);
    }

    pub fn status(&self) -> Vec<HookStatus> {
        Hook::ALL
            .iter()
            .filter_map(|&h| {
                let g = self.current(h)?;
                Some(self.status_of(&g, false, self.callers_of(h).map(|c| self.serving(h, c)).collect()))
            })
            .chain(self.shadow().map(|g| {
                let serving = self.callers_of(Hook::Egress).map(|c| self.shadow_serving(c)).collect();
                self.status_of(&g, true, serving)
            }))
            .collect()
    }

    fn status_of(&self, g: &Generation, shadow: bool, serving: Vec<u64>) -> HookStatus {
        HookStatus {
            hook: g.hook,
            generation: g.id,
            file: g.file.display().to_string(),
            sha256: g.hash.clone(),
            loaded_unix_s: g.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            calls: g.stats.calls.load(Ordering::Relaxed),
            errors: g.stats.errors.load(Ordering::Relaxed),
            timeouts: g.stats.timeouts.load(Ordering::Relaxed),
            fail: g.fail,
            serving,
            shadow,
            contract: g.contract,
        }
    }

    /// Loads every hook the config names. The first failure is returned and nothing
    /// of the failing hook is published.
    pub fn load_configured(&self) -> Result<(), PolicyError> {
        for h in Hook::ALL {
            if let Some(hc) = &self.cfg.hooks[h.index()] {
                self.swap(h, &hc.component, hc.config.as_deref(), Some(hc.fail))?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            let _ = h.join();
        }
    }
}

/// Makes sure the cache directory can be trusted with machine code: created (mode 0700) when
/// missing; an existing one only if it is a directory this process's user owns that nobody
/// else can write to. It is never chmod-ed: a directory shared with others is refused.
fn prepare_cache_dir(dir: &Path) -> Result<(), PolicyError> {
    use std::os::unix::fs::DirBuilderExt;
    let refuse = |reason: String| PolicyError::CacheDir { path: dir.display().to_string(), reason };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| refuse(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(refuse(format!("cannot inspect it: {e}"))),
        Ok(_) => {}
    }
    cache_dir_problem(dir).map_or(Ok(()), |why| Err(refuse(why)))
}

/// Why `dir` must not hold machine code natgw will run, or `None` when it may.
fn cache_dir_problem(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect it: {e}")),
    };
    let me = effective_uid();
    if m.file_type().is_symlink() {
        Some("is a symbolic link; name the directory itself".into())
    } else if !m.is_dir() {
        Some("is not a directory".into())
    } else if m.uid() != me {
        Some(format!(
            "is owned by uid {}, not by this process's uid {me}: natgw keeps compiled policies only in a directory of its own",
            m.uid()
        ))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by its group or by others (mode {:04o}): anyone who can write there could make natgw run their code; use a directory of mode 0700",
            m.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// The cache directory holds machine code: read from it only while it is still ours and
/// nobody else can write to it (checked at start, and again before each read).
fn cache_dir_trusted(file: &Path) -> bool {
    file.parent().is_some_and(|d| cache_dir_problem(d).is_none())
}

/// This process's effective uid: the owner of its /proc directory (proc(5)), which needs
/// no system call of our own.
fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// 64 bits nobody else can guess: std's hasher keys come from the OS's random source.
fn unpredictable_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// Writes a cache file: a new file of an unpredictable name (`O_CREAT|O_EXCL|O_NOFOLLOW`,
/// mode 0600) in the cache directory, renamed over the final name once complete.
fn write_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(why) = cache_dir_problem(dir) {
        return Err(std::io::Error::other(why));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", unpredictable_u64()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()));
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// SHA-256 of a component, as `policy list` shows it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Burns about `d` of this thread's CPU time.
    fn spin(d: Duration) {
        let start = thread_cpu_time().unwrap();
        while thread_cpu_time().unwrap().saturating_sub(start) < d {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn the_budget_counts_cpu_time_not_time_off_the_cpu() {
        let tick = Duration::from_millis(2);
        let mut b = CallBudget::starting_now(Duration::from_millis(10));
        // The first tick marks the CPU time and gives the whole budget.
        assert!(matches!(on_epoch_deadline(&mut b, tick), wasmtime::UpdateDeadline::Continue(5)));
        // Off the CPU (preempted, or here: asleep) for three budgets: not cut.
        std::thread::sleep(Duration::from_millis(30));
        match on_epoch_deadline(&mut b, tick) {
            wasmtime::UpdateDeadline::Continue(n) => assert!((4..=5).contains(&n), "{n} ticks"),
            _ => panic!("a call off the CPU was cut"),
        }
        // Half the budget computed: half the ticks remain.
        spin(Duration::from_millis(5));
        match on_epoch_deadline(&mut b, tick) {
            wasmtime::UpdateDeadline::Continue(n) => assert!((1..=3).contains(&n), "{n} ticks"),
            _ => panic!("cut before its budget"),
        }
        // The whole budget computed: cut.
        spin(Duration::from_millis(6));
        assert!(matches!(on_epoch_deadline(&mut b, tick), wasmtime::UpdateDeadline::Interrupt));
    }

    #[test]
    fn one_budget_holds_all_of_an_instances_memories_and_tables() {
        use wasmtime::ResourceLimiter;
        const MIB: usize = 1 << 20;
        let mut l = MeteredLimits::new(16 * MIB);
        // Two memories of 6 MiB each fit, as each would under a per-memory cap.
        assert!(l.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(l.memory_growing(0, 6 * MIB, None).unwrap());
        // A third of 6 MiB would be under the per-memory cap but over the instance's budget.
        let e = l.memory_growing(0, 6 * MIB, None).unwrap_err().to_string();
        assert!(e.contains("policy.memory_limit_mb = 16 MiB") && e.contains("memories and tables"), "{e}");
        // Growing one of the first two by 5 MiB is refused the same way; by 3 MiB it fits.
        assert!(l.memory_growing(6 * MIB, 11 * MIB, None).is_err());
        assert!(l.memory_growing(6 * MIB, 9 * MIB, None).unwrap());
        assert_eq!(l.memory_bytes, 15 * MIB);
        // Tables count against the same budget: 1 MiB left is 65 536 elements.
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(l.table_growing(1000, (MIB / TABLE_ELEMENT_BYTES) + 1, None).is_err());
        assert!(l.memory_growing(0, MIB, None).is_err());
        assert_eq!(l.memory_bytes + l.table_bytes, 15 * MIB + 1000 * TABLE_ELEMENT_BYTES);
    }
}
