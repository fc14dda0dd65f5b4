//! `natgw policy test FILE.wasm --vectors FILE`: runs a shared test-vector suite against
//! any egress component, whatever language it was written in, and prints the cases whose
//! verdict differs from the expected one.
//!
//! A vector file is TOML: suites, each a config (the text `init` gets) and either the
//! error `init` must return (a substring of its message) or cases (a flow and the verdict
//! expected for it). A flow is written as the inside host sent it:
//!
//! ```toml
//! [[suite]]
//! name = "port ranges"
//! config = '''
//! [[rule]]
//! action = "allow"
//! ports = "1024-2048"
//! '''
//! [[suite.case]]
//! flow = "tcp 10.10.1.10:40000 -> 203.0.113.80:1024"   # v6: [2001:db8::1]:40000
//! expect = "allow"
//! ingress = 0                                          # optional: the inside interface index
//! names = ["github.com"]                               # optional: names bound to the destination
//! hold_ms = 30000                                      # optional: the refusal's hold (0.2.0)
//! ```
//!
//! `hold_ms` is what a 0.2.0 policy's decision must say about how long its refusal holds;
//! absent, it must say nothing (the gateway's default). A 0.1.0 policy never says.
//!
//! `names` are what DNS binding would have bound to the destination for the source (a
//! 0.2.0 policy asks for them through its `names` import; a 0.1.0 one never sees them):
//! filed in a name table of the runner's own, for this case only.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use thiserror::Error;

use crate::bindings::natgw::policy::types::{Flow, IpAddress, Protocol, Verdict};
use crate::config::{FailMode, Hook, PolicyConfig};
use crate::{error_text, HookExports, PolicyError, Runtime};

#[derive(Debug, Error)]
pub enum VectorError {
    #[error("vector file {path}: cannot read it: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("vector file {path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("vector file {path}: suite[{suite}].case[{case}].{key} = {value:?}: {reason}")]
    Case { path: String, suite: usize, case: usize, key: &'static str, value: String, reason: String },
    #[error("vector file {path}: suite[{suite}] ({name}): {reason}")]
    Suite { path: String, suite: usize, name: String, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{file}: the instance does not export the egress hook")]
    NotEgress { file: String },
    /// Some cases did not match: the summary line (the table is printed before).
    #[error("{summary}")]
    Mismatches { summary: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    suite: Vec<RawSuite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: String,
    #[serde(default)]
    config: String,
    expect_init_error: Option<String>,
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    flow: String,
    expect: String,
    #[serde(default)]
    ingress: u16,
    #[serde(default)]
    names: Vec<String>,
    hold_ms: Option<u32>,
    note: Option<String>,
}

/// A suite: a config, and what it must do.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub config: String,
    pub expect: SuiteExpect,
}

#[derive(Debug, Clone)]
pub enum SuiteExpect {
    /// `init` must fail with a message that contains this text.
    InitError(String),
    /// `init` must succeed, then each flow gets its verdict.
    Cases(Vec<Case>),
}

#[derive(Debug, Clone)]
pub struct Case {
    /// As written in the file (for the mismatch table).
    pub text: String,
    pub flow: Flow,
    pub expect: Verdict,
    /// Names bound to the destination for the source during this case.
    pub names: Vec<String>,
    /// The hold its decision must carry (`None`: none).
    pub hold_ms: Option<u32>,
    pub note: Option<String>,
}

/// "reject", or "reject, hold 30000 ms".
fn decision_text(v: Verdict, hold_ms: Option<u32>) -> String {
    match hold_ms {
        None => verdict_name(v).to_string(),
        Some(h) => format!("{}, hold {h} ms", verdict_name(v)),
    }
}

/// Parses a vector file's text.
pub fn parse_vectors(path: &str, text: &str) -> Result<Vec<Suite>, VectorError> {
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| VectorError::Syntax { path: path.into(), reason: one_line(&e.to_string()) })?;
    let mut suites = Vec::with_capacity(raw.suite.len());
    for (si, s) in raw.suite.into_iter().enumerate() {
        let bad_suite = |reason: &str| VectorError::Suite {
            path: path.into(),
            suite: si,
            name: s.name.clone(),
            reason: reason.into(),
        };
        let expect = match (s.expect_init_error, s.case.is_empty()) {
            (Some(_), false) => {
                return Err(bad_suite("has both expect_init_error and cases; a suite is one or the other"))
            }
            (None, true) => return Err(bad_suite("has neither cases nor expect_init_error")),
            (Some(e), true) => SuiteExpect::InitError(e),
            (None, false) => {
                let mut cases = Vec::with_capacity(s.case.len());
                for (ci, c) in s.case.into_iter().enumerate() {
                    let bad = |key, value: &str, reason: String| VectorError::Case {
                        path: path.into(),
                        suite: si,
                        case: ci,
                        key,
                        value: value.into(),
                        reason,
                    };
                    let mut flow = parse_flow(&c.flow).map_err(|r| bad("flow", &c.flow, r))?;
                    flow.ingress = c.ingress;
                    let expect = parse_verdict(&c.expect)
                        .ok_or_else(|| bad("expect", &c.expect, "must be allow, deny or reject".into()))?;
                    for n in &c.names {
                        natgw_core::dns::NamePattern::parse(n)
                            .ok()
                            .filter(|_| !n.contains('*'))
                            .ok_or_else(|| bad("names", n, "is not a host name".into()))?;
                    }
                    let text = match c.names.is_empty() {
                        true => c.flow,
                        false => format!("{} (names {})", c.flow, c.names.join(", ")),
                    };
                    cases.push(Case { text, flow, expect, names: c.names, hold_ms: c.hold_ms, note: c.note });
                }
                SuiteExpect::Cases(cases)
            }
        };
        suites.push(Suite { name: s.name, config: s.config, expect });
    }
    Ok(suites)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn parse_verdict(s: &str) -> Option<Verdict> {
    match s {
        "allow" => Some(Verdict::Allow),
        "deny" => Some(Verdict::Deny),
        "reject" => Some(Verdict::Reject),
        _ => None,
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Reject => "reject",
    }
}

/// `PROTO SRC:PORT -> DST:PORT`, IPv6 addresses in brackets. For ICMP echo the source port
/// is the echo identifier and the destination port is 0.
pub fn parse_flow(s: &str) -> Result<Flow, String> {
    let form = "write it as `tcp 10.0.0.1:40000 -> 192.0.2.1:443` (IPv6 in brackets: [2001:db8::1]:443)";
    let (proto, rest) = s.trim().split_once(' ').ok_or_else(|| form.to_string())?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        p => return Err(format!("protocol {p:?} is not tcp, udp or icmp")),
    };
    let (src, dst) = rest.split_once("->").ok_or_else(|| form.to_string())?;
    let (src, src_port) = parse_endpoint(src.trim()).ok_or_else(|| format!("source {:?}: {form}", src.trim()))?;
    let (dst, dst_port) = parse_endpoint(dst.trim()).ok_or_else(|| format!("destination {:?}: {form}", dst.trim()))?;
    Ok(Flow { protocol, src, src_port, dst, dst_port, ingress: 0 })
}

fn parse_endpoint(s: &str) -> Option<(IpAddress, u16)> {
    let (addr, port) = if let Some(r) = s.strip_prefix('[') {
        let (a, p) = r.split_once("]:")?;
        (a, p)
    } else {
        s.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    let addr = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if !s.starts_with('[') => IpAddress::V4(u32::from(a)),
        IpAddr::V6(a) if s.starts_with('[') => {
            let v = u128::from(a);
            // The two halves of the address, high first.
            IpAddress::V6((u64::try_from(v >> 64).unwrap_or(0), u64::try_from(v & u128::from(u64::MAX)).unwrap_or(0)))
        }
        _ => return None,
    };
    Some((addr, port))
}

/// One case whose answer differs from the expected one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub suite: String,
    /// The flow as written, or "init".
    pub case: String,
    pub expected: String,
    pub got: String,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub suites: usize,
    pub checks: usize,
    pub mismatches: Vec<Mismatch>,
}

/// Runs every suite against the component. A component that cannot be loaded at all
/// (not a component, the wrong world: its message names the interfaces) is an error at the
/// first suite, not a mismatch.
pub fn run_vectors(rt: &Runtime, component: &Path, suites: &[Suite]) -> Result<Outcome, VectorError> {
    let mut out = Outcome::default();
    // Each case's names live one second of this clock, which moves on a minute a case.
    let mut clock_ms = 0u64;
    for s in suites {
        out.suites += 1;
        let mismatch = |case: &str, expected: &str, got: String| Mismatch {
            suite: s.name.clone(),
            case: case.into(),
            expected: expected.into(),
            got,
        };
        let prepared = rt.prepare_with_text(Hook::Egress, component, s.config.clone(), FailMode::Closed);
        let (cases, g) = match (&s.expect, prepared) {
            (SuiteExpect::InitError(want), Err(PolicyError::InitRejected { message, .. })) => {
                out.checks += 1;
                if !message.contains(want.as_str()) {
                    out.mismatches.push(mismatch(
                        "init",
                        &format!("error containing {want:?}"),
                        format!("error {message:?}"),
                    ));
                }
                continue;
            }
            (SuiteExpect::InitError(want), Ok(_)) => {
                out.checks += 1;
                out.mismatches.push(mismatch("init", &format!("error containing {want:?}"), "ok".into()));
                continue;
            }
            (SuiteExpect::Cases(cases), Err(PolicyError::InitRejected { message, .. })) => {
                out.checks += cases.len();
                out.mismatches.push(mismatch("init", "ok", format!("error {message:?}")));
                continue;
            }
            // Anything else (a trap, a link error) is the component's failure, not the suite's.
            (_, Err(e)) => return Err(e.into()),
            (SuiteExpect::Cases(cases), Ok(g)) => (cases, g),
        };
        let mut inst = g.instance_for(rt, 0)?;
        if !matches!(inst.exports, HookExports::Egress(_) | HookExports::EgressV020(_)) {
            return Err(VectorError::NotEgress { file: component.display().to_string() });
        }
        for c in cases {
            out.checks += 1;
            let names = case_names(rt, c, &mut clock_ms);
            // Generous: this is a correctness test, not a benchmark.
            inst.arm(rt.call_budget(Hook::Egress).saturating_mul(200));
            match inst.egress_check(c.flow, names) {
                None => return Err(VectorError::NotEgress { file: component.display().to_string() }),
                Some(Ok(v)) if v.verdict == c.expect && v.hold_ms == c.hold_ms => {}
                Some(Ok(v)) => out.mismatches.push(mismatch(
                    &c.text,
                    &decision_text(c.expect, c.hold_ms),
                    decision_text(v.verdict, v.hold_ms),
                )),
                Some(Err(e)) => {
                    out.mismatches.push(mismatch(
                        &c.text,
                        verdict_name(c.expect),
                        format!("error: {}", error_text(&e)),
                    ));
                    // A trapped instance may not be entered again.
                    inst = g.instance_for(rt, 0)?;
                }
            }
        }
    }
    Ok(out)
}

/// The name table every vector run binds its cases' names in: bindings live one second.
pub fn vector_name_table() -> std::sync::Arc<natgw_core::dns::NameTable> {
    std::sync::Arc::new(natgw_core::dns::NameTable::new(natgw_core::dns::NameLimits {
        min_ttl_s: 1,
        max_ttl_s: 1,
        max_bindings: 4096,
        max_bindings_per_host: 4096,
    }))
}

/// Files a case's names in the runtime's name table at a moment of its own (after every
/// earlier case's names expired), and says whose names the call may ask for. `None` for
/// an IPv6 flow (natgw binds IPv4 destinations for IPv4 hosts) or without a table.
fn case_names(rt: &Runtime, c: &Case, clock_ms: &mut u64) -> Option<crate::FlowNames> {
    *clock_ms += 60_000;
    let (IpAddress::V4(src), IpAddress::V4(dst)) = (c.flow.src, c.flow.dst) else { return None };
    let table = rt.name_table()?;
    let (host, dst) = (std::net::Ipv4Addr::from(src), std::net::Ipv4Addr::from(dst));
    for n in &c.names {
        table.bind(host, IpAddr::V4(dst), n, 1, *clock_ms);
    }
    Some(crate::FlowNames { host, dst, now_ms: *clock_ms })
}

/// The mismatch table, or "" when there are none.
pub fn mismatch_table(m: &[Mismatch]) -> String {
    if m.is_empty() {
        return String::new();
    }
    let w = |f: fn(&Mismatch) -> &str, title: &str| {
        m.iter().map(|x| f(x).chars().count()).max().unwrap_or(0).max(title.len())
    };
    let (ws, wc, we) = (w(|x| &x.suite, "suite"), w(|x| &x.case, "flow"), w(|x| &x.expected, "expected"));
    let mut t = format!("{:<ws$}  {:<wc$}  {:<we$}  got\n", "suite", "flow", "expected");
    for x in m {
        let _ = writeln!(t, "{:<ws$}  {:<wc$}  {:<we$}  {}", x.suite, x.case, x.expected, x.got);
    }
    t
}

/// `natgw policy test`: prints a summary (and the mismatch table); an error when any case
/// does not match, so the exit status is non-zero.
pub fn policy_test(component: &Path, vectors: &Path) -> Result<String, VectorError> {
    let path = vectors.display().to_string();
    let text = std::fs::read_to_string(vectors).map_err(|e| VectorError::Read { path: path.clone(), source: e })?;
    let suites = parse_vectors(&path, &text)?;
    let cfg = PolicyConfig { call_timeout_us: 1000, memory_limit_mb: 256, cache_dir: None, hooks: [None, None, None] };
    let rt = Runtime::new(cfg, 1, vec!["default".into()])?;
    rt.set_name_table(vector_name_table());
    let t0 = Instant::now();
    let out = run_vectors(&rt, component, &suites)?;
    let summary = format!(
        "{}: {} suites, {} checks, {} mismatches ({}, {:.0} ms)\n",
        component.display(),
        out.suites,
        out.checks,
        out.mismatches.len(),
        vectors.display(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    if out.mismatches.is_empty() {
        Ok(summary)
    } else {
        // Never print!: a reader gone (`| head`) must cost output, not the process.
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(mismatch_table(&out.mismatches).as_bytes());
        Err(VectorError::Mismatches { summary: summary.trim_end().to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_parse_v4_v6_and_icmp() {
        let f = parse_flow("tcp 10.10.1.10:40000 -> 203.0.113.80:443").unwrap();
        assert_eq!(f.protocol, Protocol::Tcp);
        assert_eq!(f.src, IpAddress::V4(0x0a0a_010a));
        assert_eq!((f.src_port, f.dst_port), (40000, 443));
        assert_eq!(f.dst, IpAddress::V4(0xcb00_7150));
        let f = parse_flow("udp [2001:db8::1]:5353 -> [::ffff:1.2.3.4]:53").unwrap();
        assert_eq!(f.src, IpAddress::V6((0x2001_0db8_0000_0000, 1)));
        assert_eq!(f.dst, IpAddress::V6((0, 0xffff_0102_0304)));
        let f = parse_flow("icmp 10.0.0.1:7 -> 192.0.2.1:0").unwrap();
        assert_eq!((f.protocol, f.src_port, f.dst_port), (Protocol::Icmp, 7, 0));
    }

    #[test]
    fn bad_flows_say_what_is_wrong() {
        assert!(parse_flow("sctp 10.0.0.1:1 -> 10.0.0.2:2").unwrap_err().contains("sctp"));
        assert!(parse_flow("tcp 10.0.0.1:1 10.0.0.2:2").unwrap_err().contains("->"));
        assert!(parse_flow("tcp 10.0.0.1:70000 -> 10.0.0.2:2").unwrap_err().contains("source"));
        assert!(parse_flow("tcp 2001:db8::1:80 -> 10.0.0.2:2").unwrap_err().contains("brackets"));
        assert!(parse_flow("tcp [10.0.0.1]:80 -> 10.0.0.2:2").is_err(), "IPv4 is written without brackets");
    }

    #[test]
    fn vector_files_name_the_bad_key() {
        let ok = "[[suite]]\nname = \"a\"\nconfig = 'default = \"allow\"'\n\
                  [[suite.case]]\nflow = \"udp 10.0.0.1:1 -> 10.0.0.2:2\"\nexpect = \"allow\"\ningress = 1\n\
                  [[suite]]\nname = \"b\"\nconfig = 'default = 3'\nexpect_init_error = \"default\"\n";
        let s = parse_vectors("v.toml", ok).unwrap();
        assert_eq!(s.len(), 2);
        let SuiteExpect::Cases(c) = &s[0].expect else { panic!("cases") };
        assert_eq!((c[0].flow.ingress, c[0].expect), (1, Verdict::Allow));
        assert!(matches!(&s[1].expect, SuiteExpect::InitError(e) if e == "default"));
        let e = parse_vectors("v.toml", &ok.replace("\"allow\"\ningress", "\"maybe\"\ningress")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vector file v.toml: suite[0].case[0].expect = \"maybe\": must be allow, deny or reject"
        );
        let e = parse_vectors("v.toml", "[[suite]]\nname = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("suite[0] (x): has neither"), "{e}");
        let e = parse_vectors("v.toml", "[[suite]]\nnam = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("nam"), "{e}");
    }

    #[test]
    fn the_table_lines_up() {
        let m = vec![
            Mismatch {
                suite: "ports".into(),
                case: "tcp 10.0.0.1:1 -> 10.0.0.2:1024".into(),
                expected: "allow".into(),
                got: "deny".into(),
            },
            Mismatch {
                suite: "bad config".into(),
                case: "init".into(),
                expected: "error containing \"x\"".into(),
                got: "ok".into(),
            },
        ];
        assert_eq!(
            mismatch_table(&m),
            "suite       flow                             expected              got\n\
             ports       tcp 10.0.0.1:1 -> 10.0.0.2:1024  allow                 deny\n\
             bad config  init                             error containing \"x\"  ok\n"
        );
        assert_eq!(mismatch_table(&[]), "");
    }
}
