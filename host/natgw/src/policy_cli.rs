//! `natgw policy check|bench|list` helpers that run without (or format for) a gateway.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::ControlError;
use natgw_core::counters::Counters;
use natgw_core::nat::policy::{FlowPolicy, NewFlow};
use natgw_policy::config::{Hook, PolicyConfig};
use natgw_policy::worker::WorkerPolicy;
use natgw_policy::Runtime;
use natgw_wire::PROTO_TCP;

/// Settings for offline use: the gateway's defaults, no cache.
fn offline_config() -> PolicyConfig {
    PolicyConfig { call_timeout_us: 1000, memory_limit_mb: 64, cache_dir: None, hooks: [None, None, None] }
}

/// Compiles, validates and initialises a policy for `hook`, as a swap would.
pub fn policy_check(hook: Hook, file: &Path, config: Option<&Path>) -> Result<String, ControlError> {
    let rt = Runtime::new(offline_config(), 1, vec!["default".into()])?;
    let t0 = Instant::now();
    let provided = rt.provided_hooks(file)?;
    let g = rt.prepare(hook, file, config, hook.default_fail())?;
    Ok(format!(
        "{}: ok for the {hook} hook (sha256 {}, compiled, validated and initialised in {:.1} ms; exports: {})",
        file.display(),
        g.short_hash(),
        t0.elapsed().as_secs_f64() * 1e3,
        provided.iter().map(|h| h.name()).collect::<Vec<_>>().join(", ")
    ))
}

/// The gateway settings `natgw policy bench` runs the policy under.
#[derive(Debug, Clone, Copy)]
pub struct BenchLimits {
    pub call_timeout_us: u64,
    pub memory_limit_mb: u64,
    /// Names bound to every flow's destination (egress): the lookup and the list each
    /// call of a 0.2.0 policy carries.
    pub dst_names: usize,
}

/// Instances `natgw policy bench` starts to time instantiation.
const INSTANCES_MEASURED: usize = 21;

/// The cost of one slow-path policy call, through the same code the workers use, and of
/// loading the policy and starting an instance.
pub fn policy_bench(
    hook: Hook,
    file: &Path,
    config: Option<&Path>,
    calls: u64,
    limits: BenchLimits,
) -> Result<String, ControlError> {
    let BenchLimits { call_timeout_us, memory_limit_mb, dst_names } = limits;
    if hook == Hook::FlowLog {
        return Err(ControlError::BenchHook(hook));
    }
    let pools: Vec<String> = ["default", "pool-a", "pool-b"].iter().map(|s| s.to_string()).collect();
    let rt = Runtime::new(PolicyConfig { call_timeout_us, memory_limit_mb, ..offline_config() }, 1, pools)?;
    // A name table as `[dns]` makes: names bound to every bench flow's destination below.
    let names = Arc::new(natgw_core::dns::NameTable::new(natgw_core::dns::NameLimits {
        max_bindings: 1 << 20,
        max_bindings_per_host: 1 << 20,
        ..Default::default()
    }));
    rt.set_name_table(names.clone());
    // Loading: compile (no cache offline), validate, and start one instance.
    let t0 = Instant::now();
    let g = rt.prepare(hook, file, config, hook.default_fail())?;
    let load = t0.elapsed();
    // A new instance: what every worker pays once per swap.
    let mut starts = Vec::new();
    let mut memory = 0;
    for _ in 0..INSTANCES_MEASURED {
        let t = Instant::now();
        let instance = rt.instantiate(&g)?;
        starts.push(t.elapsed());
        memory = instance.linear_memory_bytes();
    }
    starts.sort();
    rt.swap(hook, file, config, None)?;
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    let flows: Vec<NewFlow> = (0..1024u32)
        .map(|i| NewFlow {
            proto: PROTO_TCP,
            src: Ipv4Addr::from(0x0a0a_0100 + (i % 250) + 2),
            src_port: 30000 + u16::try_from(i).unwrap_or(0),
            dst: Ipv4Addr::new(203, 0, 113, 80),
            dst_port: [80, 443, 22, 8080][(i % 4) as usize],
            ingress: u16::from(i % 2 == 1),
        })
        .collect();
    for f in &flows {
        for k in 0..dst_names {
            names.bind(f.src, std::net::IpAddr::V4(f.dst), &format!("n{k}.bench.example"), 3600, 0);
        }
    }
    let mut sink = 0u64;
    // Every call is timed too (about 20 ns each): the tail is what a deadline meets.
    let mut each = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    let mut run = |n: u64, each: &mut Vec<u32>| {
        each.clear();
        let t = Instant::now();
        for i in 0..n {
            let f = &flows[usize::try_from(i % 1024).unwrap_or(0)];
            let c = Instant::now();
            sink += match hook {
                Hook::Egress => {
                    let bound = natgw_core::nat::policy::DestinationNames::new(Some(&names), f.src, f.dst, 1);
                    wp.egress_named(f, bound) as u64
                }
                _ => matches!(wp.port_pool(f), natgw_core::nat::policy::PoolDecision::Pool { .. }) as u64,
            };
            each.push(u32::try_from(c.elapsed().as_nanos()).unwrap_or(u32::MAX));
        }
        t.elapsed()
    };
    run(calls / 10 + 1, &mut each);
    let checks_before = natgw_policy::deadline_checks();
    let elapsed = run(calls, &mut each);
    let checks = natgw_policy::deadline_checks() - checks_before;
    let (wall_ns, cpu_ns) = natgw_policy::deadline_clock_costs();
    let per_call = checks as f64 / calls.max(1) as f64;
    each.sort_unstable();
    // In parts per ten thousand: 5000 is the median, 10000 the maximum.
    let quantile = |per_10k: usize| f64::from(each[(each.len() - 1) * per_10k / 10_000]) / 1e3;
    wp.batch_boundary();
    let g = rt.current(hook).expect("swapped in above");
    let errors = g.stats.errors.load(std::sync::atomic::Ordering::Relaxed);
    Ok(format!(
        "{hook}: {calls} calls in {:.1} ms: {:.0} ns per call ({}, {}, sha256 {}, {errors} errors, checksum {sink}, \
         {dst_names} names bound to each destination)\n\
         per call: median {:.2} us, 99th percentile {:.2} us, 99.99th {:.1} us, max {:.1} us \
         (deadline {call_timeout_us} us, memory budget {memory_limit_mb} MiB an instance)\n\
         load (compile, validate, first instance): {:.1} ms; new instance with init: median {:.2} ms of {}; \
         linear memory per instance: {:.1} MiB; size {:.1} KiB\n\
         deadline bookkeeping: {:.1} ns a call (a wall-clock read at each call's start, {wall_ns:.1} ns; \
         {checks} CPU-time checks in {calls} calls, {per_call:.4} a call, {cpu_ns:.0} ns each)\n",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / calls as f64,
        file.display(),
        g.contract,
        g.short_hash(),
        quantile(5000),
        quantile(9900),
        quantile(9999),
        quantile(10_000),
        load.as_secs_f64() * 1e3,
        starts[starts.len() / 2].as_secs_f64() * 1e3,
        starts.len(),
        memory as f64 / (1 << 20) as f64,
        std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) as f64 / 1024.0,
        wall_ns + per_call * cpu_ns,
    ))
}
