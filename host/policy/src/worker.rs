//! A worker's view of the policies: its own store and instance per hook, switched to a new
//! generation at batch boundaries, called once per new flow under a deadline. A failed
//! instance is replaced by the spare the spare thread keeps ready (`spares`): nothing here
//! instantiates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::natgw::policy::types::{Flow, IpAddress, Protocol, Verdict};
use super::{error_text, FlowNames, Generation, HookInstance, Runtime, StateError};
use crate::config::{FailMode, Hook};
use natgw_core::counters::{Counter, Counters};
use natgw_core::nat::policy::{DestinationNames, EgressDecision, FlowPolicy, NewFlow, PoolDecision, DEFAULT_POOL};
use natgw_core::nat::pool::PoolId;
use natgw_wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// The generation a caller serves for one hook (or the shadow egress policy), and its
/// instance.
pub struct HookSlot {
    hook: Hook,
    /// The shadow egress policy's slot: its failures count as `PolicyShadowErrors`, never
    /// as the live hook's errors.
    shadow: bool,
    /// Which caller this is (a worker's index, or the flow-log thread's).
    caller: usize,
    generation: Option<Arc<Generation>>,
    instance: Option<HookInstance>,
    last_log: Option<Instant>,
    /// Calls not yet added to the generation's statistics.
    calls: u64,
}

/// The outcome of one policy call.
pub enum Called<R> {
    /// No policy is installed for the hook.
    NoPolicy,
    Answer(R),
    /// The policy failed; apply this fail mode.
    Failed(FailMode),
}

impl HookSlot {
    pub fn new(hook: Hook, caller: usize) -> Self {
        HookSlot { hook, shadow: false, caller, generation: None, instance: None, last_log: None, calls: 0 }
    }

    /// The slot of the shadow egress policy (`Runtime::shadow`).
    pub fn shadow(caller: usize) -> Self {
        HookSlot { shadow: true, ..HookSlot::new(Hook::Egress, caller) }
    }

    fn error_counter(&self) -> Counter {
        if self.shadow {
            Counter::PolicyShadowErrors
        } else {
            Counter::PolicyErrors
        }
    }

    pub fn generation_id(&self) -> u64 {
        self.generation.as_ref().map_or(0, |g| g.id)
    }

    /// The generation this caller serves.
    pub fn generation(&self) -> Option<&Arc<Generation>> {
        self.generation.as_ref()
    }

    /// Takes over the current generation if it changed.
    pub fn refresh(&mut self, rt: &Runtime) {
        self.refresh_with(rt, None);
    }

    /// `refresh`, carrying the old instance's state to the new one (0.2.0 on both sides),
    /// counted in `counters`.
    pub fn refresh_with(&mut self, rt: &Runtime, counters: Option<&Counters>) {
        self.publish_calls();
        let id = if self.shadow { rt.shadow_id() } else { rt.current_id(self.hook) };
        if id == self.generation_id() {
            return;
        }
        let caller = self.caller;
        let old = self.instance.take();
        self.generation = if self.shadow { rt.shadow() } else { rt.current(self.hook) };
        if let Some(g) = &self.generation {
            // Prepared by the swap; its spare is made now, off this thread.
            self.instance = g.take_spare(caller);
            rt.request_spare(g, caller);
        }
        // Carried only to a generation that replaces the old one (not to none: a policy
        // removed, a shadow stopped or promoted).
        if let (Some(mut old), Some(counters), true) = (old, counters, self.generation.is_some()) {
            self.carry_state(rt, &mut old, counters);
        }
        if self.shadow {
            rt.set_shadow_serving(caller, self.generation_id());
        } else {
            rt.set_serving(self.hook, caller, self.generation_id());
        }
    }

    /// Hands the old generation's instance's state to the new one, on this worker, each
    /// call under the hook's deadline. Lost state is counted and logged; after a trap in
    /// `import-state` the new instance is dropped for its spare (which starts from `init`).
    fn carry_state(&mut self, rt: &Runtime, old: &mut HookInstance, counters: &Counters) {
        if !old.carries_state() {
            return;
        }
        let budget = rt.call_budget(self.hook);
        let result = match self.instance.as_mut() {
            Some(new) if new.carries_state() => {
                old.arm(budget);
                // A trap in the old instance's export costs the state, never the new
                // instance: it has not been entered.
                old.export_state()
                    .map_err(|e| match e {
                        StateError::Trapped(why) => StateError::Refused(format!("export-state failed: {why}")),
                        refused => refused,
                    })
                    .and_then(|state| {
                        new.arm(budget);
                        new.import_state(&state)
                    })
            }
            Some(_) => return,
            None => Err(StateError::Refused("no instance of the new generation was ready on this worker".into())),
        };
        let why = match result {
            Ok(()) => {
                counters.inc(Counter::PolicyStateCarried);
                return;
            }
            Err(StateError::Trapped(why)) => {
                // The new instance may have trapped: its spare takes over, from init.
                self.instance = None;
                if let Some(g) = &self.generation {
                    rt.request_spare(g, self.caller);
                }
                why
            }
            Err(StateError::Refused(why)) => why,
        };
        counters.inc(Counter::PolicyStateLost);
        if let Some(g) = &self.generation {
            tracing::warn!(
                "natgw: policy {}#{} ({}): the state of the previous generation was lost on worker {}: {why}",
                self.hook,
                g.id,
                g.file.display(),
                self.caller
            );
        }
    }

    fn failed(&mut self, counters: &Counters, why: &str) {
        counters.inc(self.error_counter());
        if let Some(g) = &self.generation {
            g.stats.errors.fetch_add(1, Ordering::Relaxed);
            // One line a second per slot: a policy failing on every flow must not flood.
            if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.last_log = Some(Instant::now());
                if self.shadow {
                    tracing::warn!(
                        "natgw: shadow policy {}#{} ({}): {why}; the live policy decides as ever",
                        self.hook,
                        g.id,
                        g.file.display()
                    );
                } else {
                    tracing::warn!(
                        "natgw: policy {}#{} ({}): {why}; fail mode {} applies",
                        self.hook,
                        g.id,
                        g.file.display(),
                        g.fail
                    );
                }
            }
        }
    }

    /// Calls the policy with the hook's deadline. A failure (trap, deadline, memory budget,
    /// or `f` judging the answer invalid) drops the instance, asks for the next spare and
    /// reports the fail mode; the next call takes the spare if it is ready.
    pub fn call<R>(
        &mut self,
        rt: &Runtime,
        counters: &Counters,
        f: impl FnOnce(&mut HookInstance) -> Result<R, String>,
    ) -> Called<R> {
        let Some(g) = self.generation.as_ref() else { return Called::NoPolicy };
        let fail = g.fail;
        // Counted locally, published at the batch boundary: no shared cache line per call.
        self.calls += 1;
        if self.instance.is_none() {
            match g.take_spare(self.caller) {
                Some(i) => {
                    self.instance = Some(i);
                    rt.request_spare(g, self.caller);
                }
                None => {
                    // Asked again: a request the spare thread's full queue dropped must
                    // not leave this caller without spares (it ignores duplicates).
                    rt.request_spare(g, self.caller);
                    counters.inc(self.error_counter());
                    counters.inc(Counter::PolicySpareMisses);
                    g.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Called::Failed(fail);
                }
            }
        }
        let Some(inst) = self.instance.as_mut() else { return Called::Failed(fail) };
        inst.arm(rt.call_budget(self.hook));
        match f(inst) {
            Ok(r) => match inst.blocked() {
                None => Called::Answer(r),
                Some(why) => {
                    // Woken at the deadline, not trapped: the instance serves on.
                    g.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    self.failed(counters, &why);
                    Called::Failed(fail)
                }
            },
            Err(why) => {
                if why.contains("interrupt") {
                    g.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                // After a trap the instance may not be entered again: the spare takes over.
                self.instance = None;
                rt.request_spare(g, self.caller);
                self.failed(counters, &why);
                Called::Failed(fail)
            }
        }
    }

    /// Adds the calls made since the last time to the generation's statistics.
    pub fn publish_calls(&mut self) {
        if let Some(g) = &self.generation {
            g.stats.calls.fetch_add(std::mem::take(&mut self.calls), Ordering::Relaxed);
        }
    }
}

/// A policy's verdict as the translator takes it.
fn decision(v: Verdict) -> EgressDecision {
    match v {
        Verdict::Allow => EgressDecision::Allow,
        Verdict::Deny => EgressDecision::Deny,
        Verdict::Reject => EgressDecision::Reject,
    }
}

/// Converts the translator's view of a new flow into the WIT record.
pub fn wit_flow(f: &NewFlow) -> Flow {
    Flow {
        protocol: match f.proto {
            PROTO_TCP => Protocol::Tcp,
            PROTO_UDP => Protocol::Udp,
            PROTO_ICMP => Protocol::Icmp,
            // The translator only creates TCP, UDP and ICMP flows.
            _ => Protocol::Udp,
        },
        src: IpAddress::V4(u32::from(f.src)),
        src_port: f.src_port,
        dst: IpAddress::V4(u32::from(f.dst)),
        dst_port: f.dst_port,
        ingress: f.ingress,
    }
}

/// One worker's policies: the slow path's `FlowPolicy`, backed by Wasm instances.
pub struct WorkerPolicy {
    rt: Arc<Runtime>,
    counters: Arc<Counters>,
    egress: HookSlot,
    port_pool: HookSlot,
    /// Whether the last egress answer was the fail mode.
    egress_failed: bool,
    /// How long the last egress answer may be reused, if the policy said (0.2.0).
    egress_hold_ms: Option<u32>,
    /// The shadow egress policy, its answer to the last question, and its share of this
    /// worker: call time used in the current second.
    shadow: HookSlot,
    shadow_verdict: Option<EgressDecision>,
    shadow_second: Instant,
    shadow_used: Duration,
}

/// Call time the shadow policy may use per second on a worker (10 %): past it, shadow
/// calls are skipped (counted) until the next second.
pub const SHADOW_SHARE_PER_SECOND: Duration = Duration::from_millis(100);

impl WorkerPolicy {
    pub fn new(rt: Arc<Runtime>, worker: usize, counters: Arc<Counters>) -> Self {
        let mut w = WorkerPolicy {
            rt,
            counters,
            egress: HookSlot::new(Hook::Egress, worker),
            port_pool: HookSlot::new(Hook::PortPool, worker),
            egress_failed: false,
            egress_hold_ms: None,
            shadow: HookSlot::shadow(worker),
            shadow_verdict: None,
            shadow_second: Instant::now(),
            shadow_used: Duration::ZERO,
        };
        w.batch_boundary();
        w
    }
}

impl WorkerPolicy {
    /// The flow as the policies see it, and whose names they may ask for (looked up only
    /// if a policy asks: 0.2.0's `names` import).
    fn question(flow: &NewFlow, names: DestinationNames<'_>) -> (Flow, Option<FlowNames>) {
        let asked = names.has_table().then(|| FlowNames { host: flow.src, dst: flow.dst, now_ms: names.now_ms() });
        (wit_flow(flow), asked)
    }

    /// The live egress policy's answer (no shadow).
    fn live_egress(&mut self, wf: Flow, names: Option<FlowNames>) -> EgressDecision {
        let r = self.egress.call(&self.rt, &self.counters, |inst| match inst.egress_check(wf, names) {
            Some(r) => r.map_err(|e| error_text(&e)),
            None => Err("instance does not export egress".into()),
        });
        self.egress_failed = matches!(r, Called::Failed(_));
        self.egress_hold_ms = None;
        match r {
            Called::NoPolicy | Called::Failed(FailMode::Open) => EgressDecision::Allow,
            Called::Answer(c) => {
                self.egress_hold_ms = c.hold_ms;
                decision(c.verdict)
            }
            Called::Failed(FailMode::Closed) => EgressDecision::Deny,
        }
    }

    /// The shadow policy's answer for the flow the live one just decided, if a shadow runs
    /// and has share left this second: after the live decision, which it never changes.
    fn ask_shadow(&mut self, wf: Flow, names: Option<FlowNames>, live: EgressDecision) -> Option<EgressDecision> {
        self.shadow.generation()?;
        let now = Instant::now();
        if now.duration_since(self.shadow_second) >= Duration::from_secs(1) {
            (self.shadow_second, self.shadow_used) = (now, Duration::ZERO);
        }
        if self.shadow_used >= SHADOW_SHARE_PER_SECOND {
            self.counters.inc(Counter::PolicyShadowSkipped);
            return None;
        }
        let r = self.shadow.call(&self.rt, &self.counters, |inst| match inst.egress_check(wf, names) {
            Some(r) => r.map_err(|e| error_text(&e)),
            None => Err("instance does not export egress".into()),
        });
        self.shadow_used += now.elapsed();
        let Called::Answer(c) = r else { return None };
        let answer = decision(c.verdict);
        self.counters.inc(Counter::PolicyShadowCalls);
        if answer != live {
            self.counters.inc(Counter::PolicyShadowDisagreements);
        }
        Some(answer)
    }
}

impl FlowPolicy for WorkerPolicy {
    fn egress_generation(&self) -> u64 {
        self.egress.generation_id()
    }

    fn egress_failed(&self) -> bool {
        self.egress_failed
    }

    fn shadow_verdict(&self) -> Option<EgressDecision> {
        self.shadow_verdict
    }

    fn egress_hold_ms(&self) -> Option<u32> {
        self.egress_hold_ms
    }

    fn egress(&mut self, flow: &NewFlow) -> EgressDecision {
        self.egress_named(flow, DestinationNames::none())
    }

    fn egress_recheck(&mut self, flow: &NewFlow, names: DestinationNames<'_>) -> EgressDecision {
        let (wf, names) = Self::question(flow, names);
        self.live_egress(wf, names)
    }

    fn egress_named(&mut self, flow: &NewFlow, names: DestinationNames<'_>) -> EgressDecision {
        let (wf, names) = Self::question(flow, names);
        let live = self.live_egress(wf, names);
        self.shadow_verdict = self.ask_shadow(wf, names, live);
        live
    }

    fn port_pool(&mut self, flow: &NewFlow) -> PoolDecision {
        let wf = wit_flow(flow);
        let names = self.rt.pool_names();
        let r = self.port_pool.call(&self.rt, &self.counters, |inst| match inst.port_pool_select(wf) {
            Some(sel) => match sel.map_err(|e| error_text(&e))? {
                None => Ok(DEFAULT_POOL),
                Some((pool, budget)) => {
                    match names.iter().position(|n| *n == pool).and_then(|i| PoolId::try_from(i).ok()) {
                        Some(id) => Ok(PoolDecision::Pool { pool: id, budget }),
                        None => Err(format!(
                            "select returned pool {:?}, which the gateway config does not define (pools: {})",
                            pool.chars().take(64).collect::<String>(),
                            names.join(", ")
                        )),
                    }
                }
            },
            None => Err("instance does not export port-pool".into()),
        });
        match r {
            Called::NoPolicy => DEFAULT_POOL,
            Called::Answer(d) => d,
            Called::Failed(FailMode::Open) => DEFAULT_POOL,
            Called::Failed(FailMode::Closed) => PoolDecision::Refuse,
        }
    }

    fn batch_boundary(&mut self) {
        let counters = Some(&*self.counters);
        self.egress.refresh_with(&self.rt, counters);
        self.port_pool.refresh_with(&self.rt, counters);
        self.shadow.refresh_with(&self.rt, counters);
    }
}
