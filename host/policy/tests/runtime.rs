//! The Wasm policy runtime with real components: the built-in policies and the
//! deliberately broken fixture, built from policies/ by scripts/build-policy.sh (which
//! scripts/setup.sh runs before the tests).

// Test code: literal sizes and results that must be there.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use natgw_core::counters::{Counter, Counters};
use natgw_core::nat::policy::{EgressDecision, FlowPolicy, NewFlow, PoolDecision, DEFAULT_POOL};
use natgw_core::nat::{EndReason, FlowDirection, FlowEnd};
use natgw_policy::config::{FailMode, Hook, PolicyConfig};
use natgw_policy::flowlog::{export_batch, WallClock};
use natgw_policy::worker::{HookSlot, WorkerPolicy};
use natgw_policy::{PolicyError, Runtime};
use natgw_telemetry::record::Value;
use natgw_wire::{PROTO_TCP, PROTO_UDP};

fn component(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/policies").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run scripts/build-policy.sh (scripts/setup.sh does)", p.display());
    p
}

fn write(dir: &tempdir::Dir, name: &str, text: &str) -> PathBuf {
    let p = dir.0.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("natgw-policy-test-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn runtime(workers: usize) -> Arc<Runtime> {
    // 20 ms, not the gateway's 1 ms: these run in a debug build on a loaded 2-core machine,
    // where a preempted healthy call can pass 1 ms; the loop fixture still hits it.
    let cfg = PolicyConfig { call_timeout_us: 20_000, memory_limit_mb: 16, cache_dir: None, hooks: [None, None, None] };
    Runtime::new(cfg, workers, vec!["default".into(), "pool-a".into(), "pool-b".into()]).unwrap()
}

/// Waits (up to 5 s) until the spare thread has an instance ready for worker 0.
fn spare_ready(g: &natgw_policy::Generation, what: &str) {
    let t = Instant::now();
    while !g.spare_ready(0) {
        assert!(t.elapsed() < Duration::from_secs(5), "{what}: no spare instance after 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn flow(proto: u8, src: [u8; 4], dst: [u8; 4], dst_port: u16) -> NewFlow {
    NewFlow { proto, src: Ipv4Addr::from(src), src_port: 40000, dst: Ipv4Addr::from(dst), dst_port, ingress: 0 }
}

const ALLOWLIST: &str = r#"
default = "reject"
[[rule]]
action = "allow"
dst = "203.0.113.80/32"
protocol = "tcp"
ports = "80"
[[rule]]
action = "deny"
dst = "203.0.113.0/24"
protocol = "udp"
ports = "5000-6000"
"#;

#[test]
fn egress_allowlist_decides_in_rule_order() {
    let dir = tempdir::Dir::new("allow");
    let rt = runtime(1);
    rt.swap(Hook::Egress, &component("egress_allowlist"), Some(&write(&dir, "a.toml", ALLOWLIST)), None).unwrap();
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    assert_eq!(wp.egress(&flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 80)), EgressDecision::Allow);
    assert_eq!(wp.egress(&flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 81)), EgressDecision::Reject);
    assert_eq!(wp.egress(&flow(PROTO_UDP, [10, 10, 1, 10], [203, 0, 113, 9], 5353)), EgressDecision::Deny);
    assert_eq!(wp.egress(&flow(PROTO_UDP, [10, 10, 1, 10], [203, 0, 113, 9], 53)), EgressDecision::Reject);
    wp.batch_boundary();
    let g = rt.current(Hook::Egress).unwrap();
    assert_eq!(g.stats.calls.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(counters.get(Counter::PolicyErrors), 0);
}

#[test]
fn bad_policies_are_refused_with_the_file_and_the_reason() {
    let dir = tempdir::Dir::new("bad");
    let rt = runtime(1);
    let good = component("egress_allowlist");
    rt.swap(Hook::Egress, &good, Some(&write(&dir, "a.toml", ALLOWLIST)), None).unwrap();
    let serving = rt.current(Hook::Egress).unwrap().id;

    let text = write(&dir, "not.wasm", "this is not webassembly\n");
    let e = rt.swap(Hook::Egress, &text, None, None).unwrap_err();
    assert!(matches!(e, PolicyError::NotAComponent { .. }), "{e}");
    assert!(e.to_string().contains("not.wasm") && e.to_string().contains("magic"), "{e}");

    let core = dir.0.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let e = rt.swap(Hook::Egress, &core, None, None).unwrap_err();
    assert!(e.to_string().contains("core WebAssembly module"), "{e}");

    let e = rt.swap(Hook::Egress, &component("flow_log_filter"), None, None).unwrap_err();
    assert!(matches!(e, PolicyError::WrongWorld { .. }), "{e}");
    assert!(e.to_string().contains("natgw:policy/egress@0.1.0"), "{e}");
    assert!(
        e.to_string().contains("found `natgw:policy/lifecycle@0.2.0`, `natgw:policy/flow-log@0.2.0`"),
        "names what the component does export: {e}"
    );

    // The same egress policy, built against a contract version this gateway does not have.
    let e = rt.swap(Hook::Egress, &component("egress_wit_0_9_0"), None, None).unwrap_err();
    assert!(matches!(e, PolicyError::Link { .. }), "{e}");
    assert!(
        e.to_string().contains("natgw:policy/names@0.9.0") && e.to_string().contains("of 0.1.0 and 0.2.0"),
        "names the version found and the ones this gateway has: {e}"
    );

    let bad_cfg = write(&dir, "bad.toml", "default = \"maybe\"\n");
    let e = rt.swap(Hook::Egress, &good, Some(&bad_cfg), None).unwrap_err();
    assert!(matches!(e, PolicyError::InitRejected { .. }), "{e}");
    assert!(e.to_string().contains("default = \"maybe\""), "{e}");

    let e = rt.swap(Hook::Egress, &dir.0.join("missing.wasm"), None, None).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }), "{e}");

    assert_eq!(rt.current(Hook::Egress).unwrap().id, serving, "the previous policy keeps serving");
}

#[test]
fn a_runtime_that_fails_at_start_is_the_policys_fault_with_its_message() {
    // The Go example built with a panicking init (examples/policies/go/fixture_panic.go): Go's
    // runtime prints the panic and traps inside _initialize, before any export is called.
    let rt = runtime(1);
    let good = component("egress_allowlist");
    rt.swap(Hook::Egress, &good, None, None).unwrap();
    let serving = rt.current(Hook::Egress).unwrap().id;
    let e = rt.swap(Hook::Egress, &component("go_panics_at_start"), None, None).unwrap_err();
    assert!(matches!(e, PolicyError::Instantiate { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("go_panics_at_start.wasm") && text.contains("the policy's fault"), "{text}");
    assert!(
        text.contains("panic: egress-allowlist fixture: this runtime fails at start"),
        "quotes the runtime: {text}"
    );
    assert_eq!(rt.current(Hook::Egress).unwrap().id, serving, "the previous policy keeps serving");
}

#[test]
fn traps_loops_and_memory_bombs_are_contained() {
    let rt = runtime(1);
    rt.swap(Hook::Egress, &component("misbehaving_egress"), None, Some(FailMode::Closed)).unwrap();
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    let ok = flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 80);
    assert_eq!(wp.egress(&ok), EgressDecision::Allow);
    let g = rt.current(Hook::Egress).unwrap();
    for (port, what) in [(666, "trap"), (667, "infinite loop"), (668, "memory bomb")] {
        // The spare thread keeps one instance ready beside the one called.
        spare_ready(&g, what);
        let t = Instant::now();
        let d = wp.egress(&flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], port));
        let took = t.elapsed();
        assert_eq!(d, EgressDecision::Deny, "{what}: fail closed denies");
        assert!(took < Duration::from_millis(500), "{what}: stopped after {took:?}");
        // The spare serves the very next flow: no back-off, no instantiation here.
        assert_eq!(wp.egress(&ok), EgressDecision::Allow, "{what}: the spare serves at once");
    }
    assert_eq!(g.stats.errors.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert!(g.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the loop hit the deadline");
    assert_eq!(counters.get(Counter::PolicyErrors), 3);
    assert_eq!(counters.get(Counter::PolicySpareMisses), 0);

    // A policy that traps on every flow: each trap takes the spare, and spares are made at
    // most every 100 ms per worker, so in a burst most flows get the fail mode without a
    // call (counted), and far fewer instances are made than flows fail.
    spare_ready(&g, "burst");
    let trap = flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 666);
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(wp.egress(&trap), EgressDecision::Deny);
    }
    let took = t.elapsed();
    let misses = counters.get(Counter::PolicySpareMisses);
    let traps = 200 - misses;
    eprintln!("burst of 200 trapping flows in {took:?}: {traps} reached an instance, {misses} waited for a spare");
    let at_most = 2 + u64::try_from(took.as_millis() / 100).unwrap() * 2;
    assert!(traps <= at_most, "{traps} instances in {took:?}: spares were not paced");
    spare_ready(&g, "after the burst");
    assert_eq!(wp.egress(&ok), EgressDecision::Allow, "a spare serves after the burst");

    // Fail open lets the flow through instead.
    rt.swap(Hook::Egress, &component("misbehaving_egress"), None, Some(FailMode::Open)).unwrap();
    wp.batch_boundary();
    assert_eq!(wp.egress(&flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 666)), EgressDecision::Allow);
}

#[test]
fn a_swap_takes_effect_at_the_next_batch_boundary() {
    let dir = tempdir::Dir::new("swap");
    let rt = runtime(2);
    let allow80 = write(&dir, "a.toml", "default = \"deny\"\n[[rule]]\naction = \"allow\"\nports = \"80\"\n");
    let allow443 = write(&dir, "b.toml", "default = \"deny\"\n[[rule]]\naction = \"allow\"\nports = \"443\"\n");
    let c = component("egress_allowlist");
    let g1 = rt.swap(Hook::Egress, &c, Some(&allow80), None).unwrap();
    let counters = Arc::new(Counters::default());
    let mut w0 = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    let mut w1 = WorkerPolicy::new(rt.clone(), 1, counters.clone());
    let f80 = flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 80);
    let f443 = flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 443);
    assert_eq!(rt.serving(Hook::Egress, 0), g1.id);
    for _ in 0..20 {
        let g2 = rt.swap(Hook::Egress, &c, Some(&allow443), None).unwrap();
        // Until its batch boundary a worker finishes with the generation it had.
        assert_eq!(w0.egress(&f80), EgressDecision::Allow);
        w0.batch_boundary();
        w1.batch_boundary();
        assert_eq!(rt.serving(Hook::Egress, 0), g2.id);
        assert_eq!(rt.serving(Hook::Egress, 1), g2.id);
        assert_eq!(w0.egress(&f80), EgressDecision::Deny);
        assert_eq!(w1.egress(&f443), EgressDecision::Allow);
        rt.swap(Hook::Egress, &c, Some(&allow80), None).unwrap();
        w0.batch_boundary();
        w1.batch_boundary();
        assert_eq!(w1.egress(&f80), EgressDecision::Allow);
        assert_eq!(w0.egress(&f443), EgressDecision::Deny);
    }
    assert_eq!(counters.get(Counter::PolicyErrors), 0);
    // The first generation is gone once nobody holds it.
    assert_eq!(Arc::strong_count(&g1), 1);
}

#[test]
fn port_pool_names_a_configured_pool() {
    let dir = tempdir::Dir::new("pools");
    let rt = runtime(1);
    let cfg = write(
        &dir,
        "p.toml",
        "[[subnet]]\ncidr = \"10.10.1.0/24\"\npool = \"pool-a\"\n[[subnet]]\ncidr = \"10.10.2.0/24\"\npool = \"pool-b\"\nport_budget = 100\n[[subnet]]\ncidr = \"10.10.3.0/24\"\npool = \"nope\"\n",
    );
    rt.swap(Hook::PortPool, &component("subnet_port_pools"), Some(&cfg), None).unwrap();
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    assert_eq!(
        wp.port_pool(&flow(PROTO_TCP, [10, 10, 1, 5], [203, 0, 113, 80], 80)),
        PoolDecision::Pool { pool: 1, budget: None }
    );
    assert_eq!(
        wp.port_pool(&flow(PROTO_TCP, [10, 10, 2, 5], [203, 0, 113, 80], 80)),
        PoolDecision::Pool { pool: 2, budget: Some(100) }
    );
    assert_eq!(wp.port_pool(&flow(PROTO_TCP, [10, 10, 9, 5], [203, 0, 113, 80], 80)), DEFAULT_POOL);
    // An unknown pool name is an invalid answer: counted, and port-pool fails open.
    assert_eq!(wp.port_pool(&flow(PROTO_TCP, [10, 10, 3, 5], [203, 0, 113, 80], 80)), DEFAULT_POOL);
    assert_eq!(counters.get(Counter::PolicyErrors), 1);
}

/// A batch of ten flow ends: flows 0..=7 closed, 8 still open (an interim record), 9
/// refused; each its own source address and external port (40000 + i).
fn ten_ends() -> Vec<FlowEnd> {
    let end = |i: u8| FlowEnd {
        proto: PROTO_TCP,
        src: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(10, 10, 1, 10 + i), port: 40000 },
        dst: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(203, 0, 113, 80), port: 80 },
        ingress: 0,
        nat_src: natgw_core::conntrack::Endpoint { addr: Ipv4Addr::new(198, 51, 100, 10), port: 40000 + u16::from(i) },
        pool: 0,
        packets: [10, 8],
        bytes: [1000, 8000],
        tcp_flags: 0x1b,
        start_ms: 1000,
        end_ms: 5000,
        created_ms: 1000,
        reason: match i {
            9 => EndReason::Refused,
            8 => EndReason::Active,
            _ => EndReason::Closed,
        },
        direction: FlowDirection::Egress,
        verdict: if i == 9 { EgressDecision::Reject } else { EgressDecision::Allow },
        policy_generation: 4,
        shadow_verdict: None,
    };
    (0..10).map(end).collect()
}

fn str_of<'a>(r: &'a natgw_telemetry::record::ExportRecord, k: &str) -> Option<&'a str> {
    match r.get(k) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

/// The external port of an exported record; a refused flow (number 9) has none.
fn port_of(r: &natgw_telemetry::record::ExportRecord) -> i64 {
    match r.get("natgw.nat.source.port") {
        Some(Value::Int(p)) => *p,
        None => 40009,
        other => panic!("{other:?}"),
    }
}

#[test]
fn flow_log_filter_samples_redacts_and_annotates() {
    let dir = tempdir::Dir::new("log");
    let rt = runtime(1);
    let cfg = write(
        &dir,
        "f.toml",
        "traffic = \"accept\"\nredact_inside_prefix = 24\ndrop_fields = [\"srcport\"]\n[attributes]\nsite = \"lab\"\n",
    );
    rt.swap(Hook::FlowLog, &component("flow_log_filter"), Some(&cfg), None).unwrap();
    let counters = Counters::default();
    let mut slot = HookSlot::new(Hook::FlowLog, rt.flow_log_caller());
    slot.refresh(&rt);
    let clock = WallClock { epoch_ns: 1_700_000_000_000_000_000 };
    let ends = ten_ends();
    let out = export_batch(&mut slot, &rt, &counters, &ends, clock, &["in1".into()]);
    assert_eq!(out.len(), 9, "the accepted traffic: all but the refused flow");
    let j = out[0].to_json();
    assert_eq!(j["source.address"], "10.10.1.0", "redacted to /24: {j}");
    assert!(j.get("source.port").is_none(), "dropped field: {j}");
    assert_eq!(j["destination.port"], 80);
    assert_eq!(j["natgw.nat.source.address"], "198.51.100.10");
    assert_eq!(j["natgw.flow.bytes"], 9000);
    assert_eq!(j["natgw.flow.start"], 1_700_000_001_000_000_000u64);
    assert_eq!(j["site"], "lab");
    assert_eq!(j["network.interface.name"], "in1");
    // The gateway's own fields are joined back to each entry by its record's id, whatever
    // the policy redacted: each is its own flow's (the flow id, the true end reason).
    for r in &out {
        let i = usize::try_from(port_of(r) - 40000).unwrap();
        assert_eq!(
            str_of(r, "natgw.flow.id"),
            Some(format!("{:016x}", natgw_policy::flowlog::flow_id(&ends[i], clock)).as_str())
        );
        assert_eq!(str_of(r, "natgw.flow.action"), Some("ACCEPT"));
        assert_eq!(str_of(r, "natgw.flow.end_reason"), Some(if i == 8 { "active" } else { "closed" }), "{r:?}");
        assert_eq!(r.get("natgw.policy.generation"), Some(&Value::Int(4)));
        assert_eq!(r.accepted, Some(true));
    }

    // Only the refused traffic; then one flow in two, chosen by flow id.
    for (config, want) in [
        ("traffic = \"reject\"", vec![9usize]),
        (
            "sample_one_in = 2",
            (0..10).filter(|&i| natgw_policy::flowlog::flow_id(&ends[i], clock).is_multiple_of(2)).collect(),
        ),
    ] {
        let cfg = write(&dir, "g.toml", config);
        rt.swap(Hook::FlowLog, &component("flow_log_filter"), Some(&cfg), None).unwrap();
        slot.refresh(&rt);
        let out = export_batch(&mut slot, &rt, &counters, &ends, clock, &["in1".into()]);
        let got: Vec<usize> = out.iter().map(|r| usize::try_from(port_of(r) - 40000).unwrap()).collect();
        assert_eq!(got, want, "{config}");
        if config.contains("reject") {
            let r = &out[0];
            assert_eq!(
                (str_of(r, "natgw.flow.action"), str_of(r, "natgw.flow.end_reason")),
                (Some("REJECT"), Some("refused"))
            );
            assert_eq!((str_of(r, "natgw.policy.verdict"), r.accepted), (Some("reject"), Some(false)));
        }
    }
    assert_eq!(counters.get(Counter::PolicyErrors), 0);
}

/// A component built against the released 0.1.0 contract still serves every hook beside
/// 0.2.0 ones: its egress and pool answers count, and its flow-log entries are tied back to
/// their flows (by the fields it does not rewrite) for the true end reason 0.1.0 cannot say.
#[test]
fn a_0_1_0_component_serves_every_hook() {
    let dir = tempdir::Dir::new("v010");
    let rt = runtime(1);
    let pool = write(&dir, "pool.txt", "pool-b");
    for hook in [Hook::Egress, Hook::PortPool, Hook::FlowLog] {
        let g = rt.swap(hook, &component("v010_hooks"), Some(&pool), None).unwrap();
        assert_eq!(g.contract, "natgw:policy@0.1.0", "{hook}");
    }
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    assert_eq!(wp.egress(&flow(PROTO_TCP, [10, 10, 1, 5], [203, 0, 113, 80], 23)), EgressDecision::Reject);
    assert_eq!(wp.egress_hold_ms(), None, "0.1.0 has no hold");
    assert_eq!(wp.egress(&flow(PROTO_TCP, [10, 10, 1, 5], [203, 0, 113, 80], 80)), EgressDecision::Allow);
    assert_eq!(
        wp.port_pool(&flow(PROTO_TCP, [10, 10, 1, 5], [203, 0, 113, 80], 80)),
        PoolDecision::Pool { pool: 2, budget: None }
    );

    let mut slot = HookSlot::new(Hook::FlowLog, rt.flow_log_caller());
    slot.refresh(&rt);
    let clock = WallClock { epoch_ns: 1_700_000_000_000_000_000 };
    let mut ends = ten_ends();
    ends[3].dst.port = 9; // the fixture leaves port 9 out
    let out = export_batch(&mut slot, &rt, &counters, &ends, clock, &["in1".into()]);
    assert_eq!(out.len(), 9);
    for r in &out {
        let i = usize::try_from(port_of(r) - 40000).unwrap();
        let (v010, truth) = match i {
            8 => ("closed", "active"),
            9 => ("closed", "refused"),
            _ => ("closed", "closed"),
        };
        assert_eq!(str_of(r, "v010.end_reason"), Some(v010), "what 0.1.0 could say");
        assert_eq!(str_of(r, "natgw.flow.end_reason"), Some(truth), "the true reason, joined back");
        assert_eq!(
            str_of(r, "natgw.flow.id"),
            Some(format!("{:016x}", natgw_policy::flowlog::flow_id(&ends[i], clock)).as_str())
        );
    }
    assert_eq!(counters.get(Counter::PolicyErrors), 0);
}

/// A 0.2.0 egress policy's decision carries how long its refusal holds; the gateway's
/// worker hands it to the refusal cache.
#[test]
fn a_0_2_0_decision_says_how_long_its_refusal_holds() {
    let dir = tempdir::Dir::new("hold");
    let rt = runtime(1);
    let cfg = write(
        &dir,
        "e.toml",
        "default = \"deny\"\n[[rule]]\naction = \"reject\"\nports = \"25\"\nhold_ms = 30000\n\
         [[rule]]\naction = \"reject\"\nports = \"26\"\nhold_ms = 0\n[[rule]]\naction = \"allow\"\nports = \"80\"\n",
    );
    rt.swap(Hook::Egress, &component("egress_allowlist"), Some(&cfg), None).unwrap();
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    for (port, verdict, hold) in [
        (25, EgressDecision::Reject, Some(30_000)),
        (26, EgressDecision::Reject, Some(0)),
        (27, EgressDecision::Deny, None),
        (80, EgressDecision::Allow, None),
    ] {
        assert_eq!(wp.egress(&flow(PROTO_TCP, [10, 10, 1, 5], [203, 0, 113, 80], port)), verdict, "port {port}");
        assert_eq!(wp.egress_hold_ms(), hold, "port {port}");
    }
}

/// The shared vectors against the Rust built-in pass, and a wrong expectation is reported
/// as a mismatch with the flow, the expected and the actual verdict (so the suite can fail).
#[test]
fn test_vectors_pass_on_the_rust_policy_and_report_mismatches() {
    use natgw_policy::vectors::{mismatch_table, parse_vectors, run_vectors};
    let rt = runtime(1);
    let good = component("egress_allowlist");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/egress.toml");
    let suites = parse_vectors("egress.toml", &std::fs::read_to_string(&path).unwrap()).unwrap();
    let out = run_vectors(&rt, &good, &suites).unwrap();
    assert!(out.mismatches.is_empty(), "{}", mismatch_table(&out.mismatches));
    assert!(out.checks >= 50 && out.suites == suites.len(), "{} checks", out.checks);

    let wrong = "[[suite]]\nname = \"wrong on purpose\"\nconfig = 'default = \"allow\"'\n\
                 [[suite.case]]\nflow = \"tcp 10.0.0.1:1 -> [2001:db8::1]:443\"\nexpect = \"deny\"\n\
                 [[suite]]\nname = \"refuses\"\nconfig = 'default = \"allow\"'\nexpect_init_error = \"x\"\n";
    let out = run_vectors(&rt, &good, &parse_vectors("w.toml", wrong).unwrap()).unwrap();
    let table = mismatch_table(&out.mismatches);
    assert_eq!(out.mismatches.len(), 2, "{table}");
    assert!(table.contains("tcp 10.0.0.1:1 -> [2001:db8::1]:443  deny"), "{table}");
    assert!(table.lines().nth(1).unwrap().ends_with("allow"), "{table}");
    assert!(table.contains("init") && table.contains("error containing \"x\""), "{table}");

    // A component for another hook is refused before any suite runs, naming the interfaces.
    let Err(e) = run_vectors(&rt, &component("flow_log_filter"), &suites) else { panic!("a flow-log policy passed") };
    assert!(e.to_string().contains("expected exports") && e.to_string().contains("found"), "{e}");
}

/// The host-rule vectors (natgw:policy@0.2.0) pass on the Rust built-in, with names bound
/// in the runtime's table; without the table, the cases that name names fail.
#[test]
fn name_vectors_pass_on_the_rust_policy_through_the_names_import() {
    use natgw_policy::vectors::{mismatch_table, parse_vectors, run_vectors, vector_name_table};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/egress-names.toml");
    let suites = parse_vectors("egress-names.toml", &std::fs::read_to_string(&path).unwrap()).unwrap();
    let rt = runtime(1);
    rt.set_name_table(vector_name_table());
    let out = run_vectors(&rt, &component("egress_allowlist"), &suites).unwrap();
    assert!(out.mismatches.is_empty(), "{}", mismatch_table(&out.mismatches));
    assert!(out.checks >= 25, "{} checks", out.checks);
    // A runtime without a name table: the cases decided by a name go the other way, and
    // only those (the vectors test the names, not something else).
    let blind = runtime(1);
    let out = run_vectors(&blind, &component("egress_allowlist"), &suites).unwrap();
    let table = mismatch_table(&out.mismatches);
    assert!(out.mismatches.len() >= 8, "{table}");
    assert!(out.mismatches.iter().all(|m| m.case.contains("(names ")), "{table}");
}

fn cached_runtime(cache: &std::path::Path) -> Result<Arc<Runtime>, PolicyError> {
    let cfg = PolicyConfig {
        call_timeout_us: 20_000,
        memory_limit_mb: 16,
        cache_dir: Some(cache.to_path_buf()),
        hooks: [None, None, None],
    };
    Runtime::new(cfg, 1, vec!["default".into()])
}

#[test]
fn the_component_cache_is_a_directory_nobody_else_can_write() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempdir::Dir::new("cache");
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;

    // Missing: created, 0700; compiled components land there through temporary files of
    // their own, with nothing left over.
    let fresh = dir.0.join("made/by/natgw");
    let rt = cached_runtime(&fresh).unwrap();
    assert_eq!(mode(&fresh), 0o700);
    rt.swap(Hook::Egress, &component("egress_allowlist"), None, None).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&fresh).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 1, "one compiled component, no temporary files: {names:?}");
    assert!(names[0].ends_with(".cwasm"), "{names:?}");
    assert_eq!(mode(&fresh.join(&names[0])), 0o600);
    // And it is used: a second runtime loads the same component from it.
    drop(rt);
    cached_runtime(&fresh).unwrap().swap(Hook::Egress, &component("egress_allowlist"), None, None).unwrap();

    // Existing and shared: refused, naming the key, the path and the cause; never chmod-ed.
    for (perm, cause) in [(0o777, "writable by its group or by others"), (0o770, "writable by its group")] {
        let shared = dir.0.join(format!("shared{perm:o}"));
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(perm)).unwrap();
        let e = cached_runtime(&shared).err().expect("a shared directory is refused").to_string();
        assert!(
            e.contains("policy.cache_dir") && e.contains(&shared.display().to_string()) && e.contains(cause),
            "{e}"
        );
        assert_eq!(mode(&shared), perm, "left as it was");
    }
    // Owned by someone else (here: nobody), even with mode 0700.
    let theirs = dir.0.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("the tests run as root");
    let e = cached_runtime(&theirs).err().expect("another user's directory is refused").to_string();
    assert!(e.contains("policy.cache_dir") && e.contains("owned by uid 65534"), "{e}");
    // A symbolic link, even to a good directory: its owner could point it elsewhere later.
    let link = dir.0.join("link");
    std::os::unix::fs::symlink(&fresh, &link).unwrap();
    let e = cached_runtime(&link).err().expect("a link is refused").to_string();
    assert!(e.contains("symbolic link"), "{e}");
    // A file.
    let file = write(&dir, "file", "x");
    assert!(cached_runtime(&file).err().expect("a file is refused").to_string().contains("not a directory"));
}

/// A flow of the blocking fixtures' kind to `port`.
fn to_port(port: u16) -> NewFlow {
    flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], port)
}

#[test]
fn waits_in_host_calls_end_at_the_deadline() {
    // Rust waiting in wasi:io (pollable.block, poll, a sleep loop) and Python's time.sleep
    // (through its runtime's wasi:clocks subscription): each wait of 20 s ends by the call's
    // deadline (20 ms here), the call fails with the fail mode, and the next flow is served.
    for (file, ports) in [("blocking_egress", &[669u16, 670, 671][..]), ("sleepy_python", &[669, 671][..])] {
        let rt = runtime(1);
        rt.swap(Hook::Egress, &component(file), None, Some(FailMode::Closed)).unwrap();
        let counters = Arc::new(Counters::default());
        let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
        assert_eq!(wp.egress(&to_port(80)), EgressDecision::Allow, "{file}");
        for &port in ports {
            let t = Instant::now();
            let d = wp.egress(&to_port(port));
            let took = t.elapsed();
            assert_eq!(d, EgressDecision::Deny, "{file} port {port}: a call that blocked fails closed");
            // Far under the 20 s asked for. (Wall time: on a loaded 2-core machine running
            // tests in parallel, 20 ms of CPU can take a few hundred ms.)
            assert!(took < Duration::from_secs(2), "{file} port {port}: the worker waited {took:?}");
            // A wait cut short leaves the instance usable; a sleep loop spins on once its
            // waits end at once, and is cut on its CPU time (a trap: the spare takes over).
            spare_ready(&rt.current(Hook::Egress).unwrap(), file);
            let t = Instant::now();
            assert_eq!(wp.egress(&to_port(80)), EgressDecision::Allow, "{file}: served after port {port}");
            assert!(t.elapsed() < Duration::from_secs(1), "{file}: the next flow waited {:?}", t.elapsed());
        }
        let g = rt.current(Hook::Egress).unwrap();
        let timeouts = g.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(timeouts, ports.len() as u64, "{file}: each blocked call counts as a timeout");
        assert_eq!(counters.get(Counter::PolicyErrors), ports.len() as u64, "{file}");
    }
}

#[test]
fn an_init_that_blocks_is_refused_with_the_cause() {
    let dir = tempdir::Dir::new("init-blocks");
    let cfg = write(&dir, "block.txt", "block-in-init");
    // Compiled once beforehand (a swap whose init does not wait), so that the time below
    // is the blocked init's, not a debug build compiling the component on a busy machine.
    let cache = dir.0.join("cache");
    let rt = cached_runtime(&cache).unwrap();
    let benign = write(&dir, "benign.txt", "");
    rt.swap(Hook::Egress, &component("blocking_egress"), Some(&benign), None).expect("a benign init");
    let serving = rt.current(Hook::Egress).unwrap().id;
    let t = Instant::now();
    let e = rt.swap(Hook::Egress, &component("blocking_egress"), Some(&cfg), None).unwrap_err().to_string();
    // Init may use 5 s: its waits end there too.
    assert!(t.elapsed() < Duration::from_secs(8), "init blocked for {:?}", t.elapsed());
    assert!(e.contains("blocking_egress.wasm") && e.contains("init blocked in a host call"), "{e}");
    assert_eq!(rt.current(Hook::Egress).unwrap().id, serving, "the old generation keeps serving");
    // And it answers a worker at once.
    let mut wp = WorkerPolicy::new(rt.clone(), 0, Arc::new(Counters::default()));
    let t = Instant::now();
    wp.egress(&flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 80));
    assert!(t.elapsed() < Duration::from_secs(1), "the old generation took {:?}", t.elapsed());
}

#[test]
fn a_loop_is_cut_on_cpu_time_even_when_the_cpu_is_shared() {
    // Two threads spinning beside the caller on this 2-core machine: the loop gets a
    // share of a core, and is still cut once it has used its 20 ms of CPU time.
    let rt = runtime(1);
    rt.swap(Hook::Egress, &component("misbehaving_egress"), None, Some(FailMode::Closed)).unwrap();
    let mut wp = WorkerPolicy::new(rt.clone(), 0, Arc::new(Counters::default()));
    let g = rt.current(Hook::Egress).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let mut took = Vec::new();
    for _ in 0..3 {
        spare_ready(&g, "loop under load");
        let t = Instant::now();
        let d = wp.egress(&flow(PROTO_TCP, [10, 10, 1, 10], [203, 0, 113, 80], 667));
        took.push(t.elapsed());
        assert_eq!(d, EgressDecision::Deny, "the loop was cut: fail closed");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    eprintln!("an infinite loop under two spinners was cut after {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(2)), "{took:?}");
    assert_eq!(g.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed), 3, "each cut counts as a timeout");
}

#[test]
fn a_component_over_its_memory_budget_is_refused_at_load_with_the_reason() {
    // The Python allow-list declares tens of MiB of linear memory across its core
    // instances (the interpreter's heap, the adapter's): over a 4 MiB budget at
    // instantiation, while the Rust one (about 1 MiB) fits and keeps serving.
    let cfg = PolicyConfig { call_timeout_us: 20_000, memory_limit_mb: 4, cache_dir: None, hooks: [None, None, None] };
    let rt = Runtime::new(cfg, 1, vec!["default".into()]).unwrap();
    let dir = tempdir::Dir::new("budget");
    let allowlist = write(&dir, "a.toml", ALLOWLIST);
    rt.swap(Hook::Egress, &component("egress_allowlist"), Some(&allowlist), None).unwrap();
    let serving = rt.current(Hook::Egress).unwrap().id;
    let e = rt.swap(Hook::Egress, &component("egress_allowlist_py"), Some(&allowlist), None).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("egress_allowlist_py.wasm"), "names the file: {text}");
    assert!(text.contains("memory budget") && text.contains("policy.memory_limit_mb = 4 MiB"), "{text}");
    assert_eq!(rt.current(Hook::Egress).unwrap().id, serving, "the previous policy keeps serving");
}

#[test]
fn a_component_importing_what_natgw_does_not_provide_is_refused_naming_the_import() {
    // wasi:http would let a policy reach the network; natgw links no such thing. The
    // component is written in the component text format and assembled by wasm-tools
    // (scripts/setup.sh installs it).
    let dir = tempdir::Dir::new("imports");
    let wat = write(
        &dir,
        "http.wat",
        r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func)))))"#,
    );
    let wasm = dir.0.join("http.wasm");
    let tool = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/wasm-tools"));
    let tool = tool.filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("wasm-tools"));
    let st = std::process::Command::new(tool).arg("parse").arg(&wat).arg("-o").arg(&wasm).status().unwrap();
    assert!(st.success(), "wasm-tools parse");
    let rt = runtime(1);
    rt.swap(Hook::Egress, &component("egress_allowlist"), None, None).unwrap();
    let serving = rt.current(Hook::Egress).unwrap().id;
    let e = rt.swap(Hook::Egress, &wasm, None, None).unwrap_err();
    assert!(matches!(e, PolicyError::Link { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("http.wasm") && text.contains("wasi:http/outgoing-handler@0.2.0"), "{text}");
    eprintln!("{text}");
    assert_eq!(rt.current(Hook::Egress).unwrap().id, serving, "the previous policy keeps serving");
}

/// A shadow policy that blocks on every flow until natgw wakes it at the deadline (so each
/// call takes the whole deadline and its instance serves on): the live answers are the
/// live policy's, its failures count as the shadow's (never `PolicyErrors`), and once
/// shadow calls have used the worker's share for the second they are skipped (counted)
/// instead of called. (A shadow that traps is throttled by its spares instead.)
#[test]
fn a_shadow_policy_never_changes_the_live_answer_and_is_held_to_its_share() {
    let dir = tempdir::Dir::new("shadow");
    let rt = runtime(1);
    rt.swap(
        Hook::Egress,
        &component("egress_allowlist"),
        Some(&write(&dir, "allow.toml", "default = \"allow\"\n")),
        None,
    )
    .unwrap();
    let shadow = rt.shadow_swap(&component("blocking_egress"), None).unwrap();
    let counters = Arc::new(Counters::default());
    let mut wp = WorkerPolicy::new(rt.clone(), 0, counters.clone());
    assert_eq!(rt.shadow_serving(0), shadow.id);
    let flow = |port: u16| NewFlow {
        proto: PROTO_TCP,
        src: Ipv4Addr::new(10, 10, 1, 10),
        src_port: 40000,
        dst: Ipv4Addr::new(203, 0, 113, 80),
        dst_port: port,
        ingress: 0,
    };
    // Port 669 blocks in the shadow until its deadline (20 ms here).
    let mut asked = 0;
    while counters.get(Counter::PolicyShadowSkipped) == 0 {
        assert_eq!(wp.egress(&flow(669)), EgressDecision::Allow, "the live policy decides");
        assert_eq!(wp.shadow_verdict(), None, "a shadow that failed or was skipped answers nothing");
        asked += 1;
        assert!(
            asked < 500,
            "shadow calls were never skipped: errors {}, spare misses {}, stats {:?}",
            counters.get(Counter::PolicyShadowErrors),
            counters.get(Counter::PolicySpareMisses),
            rt.status()
        );
    }
    assert_eq!(counters.get(Counter::PolicyErrors), 0, "the shadow's failures are not the live policy's");
    // About 100 ms of 20 ms calls before the share ran out (more on a slow machine, where
    // a second may pass meanwhile); never hundreds.
    let failed = counters.get(Counter::PolicyShadowErrors);
    assert!((4..100).contains(&failed), "{failed} shadow calls ran before the share ran out");
    assert_eq!(counters.get(Counter::PolicyShadowCalls), 0);
    // In a later second, with its share back, it answers again (and agrees: allow).
    let t = Instant::now();
    loop {
        assert_eq!(wp.egress(&flow(80)), EgressDecision::Allow);
        if wp.shadow_verdict() == Some(EgressDecision::Allow) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the shadow never answered again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counters.get(Counter::PolicyShadowDisagreements), 0);
    // What goes live is what ran as the shadow: a file changed since is refused.
    let candidate = dir.0.join("candidate.wasm");
    std::fs::copy(component("egress_allowlist"), &candidate).unwrap();
    rt.shadow_swap(&candidate, Some(&write(&dir, "deny.toml", "default = \"deny\"\n"))).unwrap();
    std::fs::copy(component("misbehaving_egress"), &candidate).unwrap();
    let e = rt.promote_shadow(None).unwrap_err();
    assert!(e.to_string().contains("changed since it was shadowed"), "{e}");
    // Stopped: no more shadow answers.
    rt.clear_shadow();
    wp.batch_boundary();
    wp.egress(&flow(80));
    assert_eq!((wp.shadow_verdict(), rt.shadow_serving(0)), (None, 0));
}
