//! `natgw explain`: what the gateway would do with a new flow now, and why. The same
//! questions the slow path asks, answered off the data plane: the inside interface, the
//! names bound to the destination, the egress policy's verdict and reason (its `explain`
//! on an instance of its own, never a worker's), the pool, the translation, the filtering
//! that governs replies, the timeouts. Against the running gateway (the admin thread, with
//! its name table and flows) or offline against a config file.
//!
//! Owns: building an `ExplainReport`. Must never: touch a worker's instance or state, or
//! bind a name in the gateway's table (a supposed name goes into a table of its own).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use natgw_core::conntrack::Timeouts;
use natgw_core::dns::{NameLimits, NameTable};
use natgw_core::nat::Filtering;
use natgw_policy::bindings::natgw::policy::types::{Flow, IpAddress, Protocol, Verdict};
use natgw_policy::config::{FailMode, Hook};
use natgw_policy::{error_text, FlowNames, Runtime};

use crate::admin::{AdminError, ExplainQuery, ExplainReport, ExplainedName, ExplainedPool, FlowProto};
use crate::config::Config;

/// How long a refusal is reused for the same tuple: what the policy said, else the
/// operator's `policy.refusal_cache_ms`, at most the refusal cache's cap.
fn refusal_hold_text(hold_ms: Option<u32>, default_ms: u64) -> String {
    let cap = natgw_core::nat::refusals::MAX_HOLD_MS;
    let (ms, by) = match hold_ms {
        Some(h) => (u64::from(h).min(cap), "the policy's hold-ms"),
        None => (default_ms.min(cap), "policy.refusal_cache_ms"),
    };
    if ms == 0 {
        format!("the next packet of this tuple asks the policy again ({by} is 0)")
    } else {
        format!("the refusal holds {ms} ms for this tuple ({by})")
    }
}

/// What an explanation reads besides the query.
pub struct ExplainContext<'a> {
    pub cfg: &'a Config,
    pub rt: &'a Runtime,
    /// The gateway's name table (`[dns]`), when it has one.
    pub names: Option<&'a Arc<NameTable>>,
    /// The time in the name table's clock.
    pub now_ms: u64,
    pub offline: bool,
}

fn bad(reason: impl Into<String>) -> AdminError {
    AdminError::BadRequest { reason: reason.into() }
}

/// Explains `q`, with `existing` finding a flow of the same tuple (the running gateway's
/// flows; offline: none).
pub fn explain(
    ctx: &ExplainContext<'_>,
    q: &ExplainQuery,
    existing: impl FnOnce(SocketAddrV4, SocketAddrV4) -> Option<String>,
) -> Result<ExplainReport, AdminError> {
    let host = *q.src.ip();
    let supposed = match &q.dst_name {
        Some(n) => Some(
            natgw_core::dns::NamePattern::parse(n)
                .ok()
                .filter(|_| !n.contains('*'))
                .map_or_else(|| Err(bad(format!("--dst-name {n:?} is not a host name"))), |p| Ok(p.to_string()))?,
        ),
        None => None,
    };
    // The destination: given, or looked up among the names bound for the source.
    let mut other_addresses = Vec::new();
    let (dst, suppose) = match (q.dst, &supposed) {
        (Some(d), s) => (d, s.clone()),
        (None, Some(name)) => {
            let port = q.dst_port.or((q.proto == FlowProto::Icmp).then_some(0)).ok_or_else(|| {
                bad("--dst-name without --dst needs --dst-port (the address comes from the names bound)")
            })?;
            let bound: Vec<Ipv4Addr> = ctx
                .names
                .map(|t| t.addresses_of(host, name, ctx.now_ms))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) => Some(v),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let Some(first) = bound.first() else {
                let why = if ctx.offline {
                    "offline there is no name table: give the address with --dst (the name is then supposed bound to it)"
                } else if ctx.names.is_none() {
                    "DNS name binding is off ([dns] has no resolvers)"
                } else {
                    "it has not resolved it through a resolver in dns.resolvers (or an inside resolver), or the binding expired"
                };
                return Err(bad(format!("{name} is bound to no IPv4 address for {host}: {why}")));
            };
            other_addresses = bound[1..].iter().map(ToString::to_string).collect();
            (SocketAddrV4::new(*first, port), None)
        }
        (None, None) => {
            return Err(bad("give the destination: --dst ADDRESS:PORT, or --dst-name NAME --dst-port PORT"))
        }
    };
    let dst_port = if q.proto == FlowProto::Icmp { 0 } else { dst.port() };
    let mut r = ExplainReport {
        flow: format!("{} {} -> {}:{dst_port}", proto_name(q.proto), q.src, dst.ip()),
        offline: ctx.offline,
        other_addresses,
        filtering: filtering_text(ctx.cfg.filtering, q.proto),
        timeouts: timeouts_of(&ctx.cfg.timeouts, q.proto),
        ..ExplainReport::default()
    };

    // Before any policy: where it comes from and where it goes.
    let ingress = ctx.cfg.inside.iter().position(|l| l.addresses.iter().any(|n| n.contains(host)));
    r.ingress = ingress.map(|i| ctx.cfg.inside[i].interface.clone());
    r.refused_before_policy = if ingress.is_none()
        || ctx.cfg.inside.iter().any(|l| l.addresses.iter().any(|n| n.addr == host))
    {
        Some(format!("{host} is in no inside subnet (or is one of natgw's addresses): dropped as source-not-inside"))
    } else if ctx.cfg.inside.iter().any(|l| l.addresses.iter().any(|n| n.contains(*dst.ip()))) {
        Some(format!(
            "{} is inside: natgw translates to the outside and does not route between inside subnets (no-route)",
            dst.ip()
        ))
    } else if !natgw_core::nat::is_routable_destination(*dst.ip()) {
        Some(format!("{} is broadcast, multicast, loopback or reserved: never forwarded (no-route)", dst.ip()))
    } else {
        None
    };
    r.existing = existing(q.src, SocketAddrV4::new(*dst.ip(), dst_port));

    // The names bound to the destination for the source, and a supposed one.
    let mut bound = Vec::new();
    if let Some(t) = ctx.names {
        t.names_for(host, IpAddr::V4(*dst.ip()), ctx.now_ms, &mut bound);
    }
    r.names =
        bound.iter().map(|b| ExplainedName { name: b.name.to_string(), ttl_s: b.ttl_s, supposed: false }).collect();
    let supposed_table = suppose.as_ref().filter(|s| !r.names.iter().any(|n| &n.name == *s)).map(|name| {
        r.names.push(ExplainedName { name: name.clone(), ttl_s: 0, supposed: true });
        // What the policy sees: the names bound now, and the supposed one.
        let t = Arc::new(NameTable::new(NameLimits { min_ttl_s: 1, max_ttl_s: 86_400, ..NameLimits::default() }));
        for b in &bound {
            t.bind(host, IpAddr::V4(*dst.ip()), &b.name, b.ttl_s, ctx.now_ms);
        }
        t.bind(host, IpAddr::V4(*dst.ip()), name, 60, ctx.now_ms);
        t
    });
    if r.refused_before_policy.is_some() {
        r.verdict = "drop".into();
        r.reason = "refused before any policy is asked".into();
        return Ok(r);
    }

    // The egress policy, on an instance of its own.
    let flow = Flow {
        protocol: match q.proto {
            FlowProto::Tcp => Protocol::Tcp,
            FlowProto::Udp => Protocol::Udp,
            FlowProto::Icmp => Protocol::Icmp,
        },
        src: IpAddress::V4(u32::from(host)),
        src_port: q.src.port(),
        dst: IpAddress::V4(u32::from(*dst.ip())),
        dst_port,
        ingress: u16::try_from(ingress.unwrap_or(0)).unwrap_or(0),
    };
    // How long the policy said its refusal holds (0.2.0's hold-ms), from its check.
    let mut hold_ms: Option<u32> = None;
    let (verdict, reason) = match ctx.rt.current(Hook::Egress) {
        None => (Verdict::Allow, "no egress policy is installed: every flow may leave".to_string()),
        Some(g) => {
            r.egress_policy = Some(format!("{} (generation {}, {})", g.file.display(), g.id, g.contract));
            let names = FlowNames { host, dst: *dst.ip(), now_ms: ctx.now_ms };
            let called = ctx.rt.instantiate(&g).map_err(|e| e.to_string()).and_then(|mut inst| {
                if let Some(t) = &supposed_table {
                    inst.use_name_table(Some(t.clone()));
                }
                inst.arm(ctx.rt.call_budget(Hook::Egress).saturating_mul(100));
                let explained = inst.egress_explain(flow, Some(names)).ok_or("not an egress policy")?;
                let (v, why) = explained.map_err(|e| error_text(&e))?;
                // explain must agree with check: ask check too.
                inst.arm(ctx.rt.call_budget(Hook::Egress).saturating_mul(100));
                let checked = inst.egress_check(flow, Some(names)).and_then(Result::ok);
                Ok((v, why, checked))
            });
            match called {
                Ok((v, why, checked)) => {
                    let mut reason = why
                        .filter(|w| !w.is_empty())
                        .unwrap_or_else(|| format!("the policy gives no reason ({} has no explain)", g.contract));
                    hold_ms = checked.and_then(|c| c.hold_ms);
                    if let Some(c) = checked.filter(|c| c.verdict != v) {
                        reason.push_str(&format!(
                            " [but its check answers {}: the policy's explain and check disagree]",
                            verdict_name(c.verdict)
                        ));
                    }
                    (v, reason)
                }
                Err(e) => {
                    let v = if g.fail == FailMode::Open { Verdict::Allow } else { Verdict::Deny };
                    (v, format!("the policy failed ({e}): its fail mode, {}, applies", g.fail))
                }
            }
        }
    };
    r.verdict = verdict_name(verdict).into();
    r.reason = reason;
    if verdict != Verdict::Allow {
        let refused = match (verdict, q.proto) {
            (Verdict::Reject, FlowProto::Tcp) => "none: refused, and the host gets a TCP RST",
            (Verdict::Reject, _) => "none: refused, and the host gets ICMP administratively prohibited (3/13)",
            _ => "none: dropped silently",
        };
        r.translation = Some(format!("{refused}; {}", refusal_hold_text(hold_ms, ctx.cfg.refusal_cache_ms)));
        return Ok(r);
    }

    // The pool, on an instance of its own too.
    let pools = &ctx.cfg.pools;
    let default = (0usize, None, "the default pool (no port-pool policy)".to_string());
    let (pool, budget, chosen_by) = match ctx.rt.current(Hook::PortPool) {
        None => default,
        Some(g) => {
            let by = format!("{} (generation {})", g.file.display(), g.id);
            let answer = ctx.rt.instantiate(&g).map_err(|e| e.to_string()).and_then(|mut inst| {
                inst.arm(ctx.rt.call_budget(Hook::PortPool).saturating_mul(100));
                match inst.port_pool_select(flow) {
                    Some(r) => r.map_err(|e| error_text(&e)),
                    None => Err("not a port-pool policy".into()),
                }
            });
            match answer {
                Ok(None) => (0, None, format!("{by}: the default pool")),
                Ok(Some((name, port_budget))) => match pools.iter().position(|p| p.name == name) {
                    Some(i) => (i, port_budget, by),
                    None => (
                        0,
                        None,
                        format!(
                            "{by} named pool {:?}, which the config does not define: its fail mode, {}",
                            name, g.fail
                        ),
                    ),
                },
                Err(e) => (0, None, format!("{by} failed ({e}): its fail mode, {}", g.fail)),
            }
        }
    };
    if let Some(p) = pools.get(pool) {
        r.pool = Some(ExplainedPool {
            name: p.name.clone(),
            addresses: p.addrs.iter().map(ToString::to_string).collect(),
            ports: format!("{}-{}", p.lo, p.hi),
            budget,
            chosen_by,
        });
        let keeps = q.proto != FlowProto::Icmp && (p.lo..=p.hi).contains(&q.src.port());
        let port = if q.proto == FlowProto::Icmp { "echo identifier" } else { "port" };
        r.translation = Some(format!(
            "{host}:{} leaves from {} (one address per inside host), {port} {}; every flow from {}:{} shares that mapping (endpoint-independent)",
            q.src.port(),
            if p.addrs.len() == 1 { p.addrs[0].to_string() } else { format!("one of {}", r.pool.as_ref().map(|x| x.addresses.join(", ")).unwrap_or_default()) },
            if keeps { format!("{} kept when free, else another of {}-{}", q.src.port(), p.lo, p.hi) } else { format!("one of {}-{}", p.lo, p.hi) },
            host,
            q.src.port(),
        ));
    }
    Ok(r)
}

fn proto_name(p: FlowProto) -> &'static str {
    match p {
        FlowProto::Tcp => "tcp",
        FlowProto::Udp => "udp",
        FlowProto::Icmp => "icmp",
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Reject => "reject",
    }
}

fn filtering_text(f: Filtering, proto: FlowProto) -> String {
    match (f, proto) {
        (_, FlowProto::Icmp) => "only echo replies to this echo identifier, from the destination".into(),
        (Filtering::AddressAndPortDependent, _) => {
            "address-and-port-dependent: only the destination address and port may answer".into()
        }
        (Filtering::EndpointIndependent, _) => {
            "endpoint-independent: once mapped, any remote may send to the external \
             address and port, each such flow asked of the egress policy as the inside host's"
                .into()
        }
    }
}

fn timeouts_of(t: &Timeouts, proto: FlowProto) -> Vec<(String, u64)> {
    let v = match proto {
        FlowProto::Tcp => vec![
            ("tcp established", t.tcp_established),
            ("tcp opening and closing", t.tcp_transitory),
            ("tcp time-wait", t.tcp_time_wait),
            ("tcp after a reset", t.tcp_closed),
        ],
        FlowProto::Udp => vec![("udp", t.udp)],
        FlowProto::Icmp => vec![("icmp", t.icmp)],
    };
    let mut v: Vec<(String, u64)> = v.into_iter().map(|(k, s)| (k.to_string(), s)).collect();
    v.push(("never answered, under table pressure".into(), t.unanswered_under_pressure));
    v
}

/// `natgw explain --offline --config FILE`: the config's policies loaded as the gateway
/// would load them, and the query explained against them, with no names bound and no flows.
pub fn explain_offline(config: &std::path::Path, q: &ExplainQuery) -> Result<ExplainReport, crate::ControlError> {
    let cfg = Config::load(config)?;
    let pool_names: Vec<String> = cfg.pools.iter().map(|p| p.name.clone()).collect();
    let rt = Runtime::new(cfg.policy.clone(), 1, pool_names)?;
    rt.load_configured()?;
    let ctx = ExplainContext { cfg: &cfg, rt: &rt, names: None, now_ms: 0, offline: true };
    Ok(explain(&ctx, q, |_, _| None)?)
}
