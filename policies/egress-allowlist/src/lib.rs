//! egress-allowlist: ordered rules of destination CIDR or host name, protocol and port
//! range, each allow, deny or reject; the first rule that matches decides, else the
//! default.
//!
//! ```toml
//! default = "reject"          # allow | deny | reject (default: deny)
//! default_hold_ms = 0         # optional: how long the default's refusal holds per tuple
//!
//! [[rule]]
//! action = "allow"
//! dst = "203.0.113.80/32"     # an IPv4 address or CIDR, or any (default: any)
//! protocol = "tcp"            # tcp | udp | icmp | any (default: any)
//! ports = "80"                # a port or range, destination side, or any (default: any)
//! src = "10.10.1.0/24"        # optional: the inside source
//!
//! [[rule]]
//! action = "allow"
//! host = "*.pypi.org"         # a name natgw bound to the destination from a DNS answer
//! protocol = "tcp"            #   the host received: "github.com" (that name) or
//! ports = "443"               #   "*.pypi.org" (one or more labels, never the apex)
//!
//! [[rule]]
//! action = "reject"
//! ports = "25"
//! hold_ms = 30000             # optional: this refusal holds 30 s per tuple
//! ```
//!
//! Words (allow, tcp, any) are case-insensitive. A CIDR matches IPv4 addresses only, so a
//! rule written for IPv4 never matches an IPv6 flow; an absent (or `any`) `dst`/`src`
//! matches every address. ICMP flows have no port, so `ports` does not restrict them. A
//! `host` rule matches when any name bound to the destination matches (natgw:policy@0.2.0;
//! a destination with no bound name never matches one), together with the rule's other
//! conditions; a pattern that is not a domain name is refused at `init`, naming the rule.
//! The shared test vectors (`tests/vectors/egress.toml`) pin all of this down for every
//! language's version of this policy.
//!
//! `hold_ms` (a rule's) and `default_hold_ms` (natgw:policy@0.2.0's `decision.hold-ms`)
//! say how long the gateway may refuse the same tuple again without asking: 0 asks every
//! time, at most 60 000; absent, the gateway's `policy.refusal_cache_ms`. They mean
//! nothing for an allow. This Rust version has them; the other languages' versions leave
//! every hold to the gateway.

use natgw_policy_sdk::{
    export_policy, names, parse_toml, Cidr, Decision, Egress, Explanation, Flow, Policy, PortRange, Protocol, Verdict,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default: Option<String>,
    default_hold_ms: Option<u32>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: String,
    dst: Option<String>,
    host: Option<String>,
    src: Option<String>,
    protocol: Option<String>,
    ports: Option<String>,
    hold_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub action: Verdict,
    /// None: any address, IPv4 or IPv6.
    pub dst: Option<Cidr>,
    /// None: any destination, named or not; else the pattern's index in the patterns
    /// registered with the gateway (`names::set_patterns`), which matches them.
    pub host: Option<usize>,
    pub src: Option<Cidr>,
    pub protocol: Option<Protocol>,
    pub ports: PortRange,
    /// How long its refusal holds per tuple (`None`: the gateway's default).
    pub hold_ms: Option<u32>,
    /// The rule as `explain` quotes it: its keys as written.
    pub text: String,
}

pub struct Allowlist {
    pub rules: Vec<Rule>,
    pub default: Verdict,
    pub default_hold_ms: Option<u32>,
}

/// The longest hold the gateway honours.
const MAX_HOLD_MS: u32 = 60_000;

fn hold(key: &str, h: Option<u32>) -> Result<Option<u32>, String> {
    match h {
        Some(ms) if ms > MAX_HOLD_MS => Err(format!("{key} = {ms}: must be 0 to {MAX_HOLD_MS} milliseconds")),
        h => Ok(h),
    }
}

/// An address rule: absent or "any" matches every address; otherwise an IPv4 CIDR.
fn address(key: &str, s: Option<&str>) -> Result<Option<Cidr>, String> {
    match s {
        None => Ok(None),
        Some(s) if s.trim().eq_ignore_ascii_case("any") => Ok(None),
        Some(s) => Cidr::parse(s).map(Some).map_err(|e| format!("{key}: {e}")),
    }
}

/// `action host=… dst=… src=… protocol=… ports=…`, the keys given.
fn rule_text(r: &RawRule) -> String {
    let mut t = r.action.to_ascii_lowercase();
    for (k, v) in [("host", &r.host), ("dst", &r.dst), ("src", &r.src), ("protocol", &r.protocol), ("ports", &r.ports)]
    {
        if let Some(v) = v {
            t.push_str(&format!(" {k}={v}"));
        }
    }
    t
}

fn verdict(key: &str, s: &str) -> Result<Verdict, String> {
    Verdict::parse(s).ok_or_else(|| format!("{key} = {s:?}: must be allow, deny or reject"))
}

impl Policy for Allowlist {
    fn init(config: &str) -> Result<Self, String> {
        let raw: RawConfig = parse_toml(config)?;
        let default = verdict("default", raw.default.as_deref().unwrap_or("deny"))?;
        let mut rules = Vec::new();
        let mut patterns = Vec::new();
        for (i, r) in raw.rule.iter().enumerate() {
            let at = |k: &str| format!("rule[{i}].{k}");
            let protocol = match r.protocol.as_deref().unwrap_or("any") {
                p if p.eq_ignore_ascii_case("any") => None,
                p => Some(
                    Protocol::parse(p)
                        .ok_or_else(|| format!("{} = {p:?}: must be tcp, udp, icmp or any", at("protocol")))?,
                ),
            };
            rules.push(Rule {
                action: verdict(&at("action"), &r.action)?,
                dst: address(&at("dst"), r.dst.as_deref())?,
                host: match &r.host {
                    None => None,
                    Some(h) => {
                        // Checked one at a time, so that an error names its rule.
                        names::set_patterns(std::slice::from_ref(h)).map_err(|e| format!("{}: {e}", at("host")))?;
                        patterns.push(h.clone());
                        Some(patterns.len() - 1)
                    }
                },
                src: address(&at("src"), r.src.as_deref())?,
                protocol,
                ports: r
                    .ports
                    .as_deref()
                    .map(PortRange::parse)
                    .transpose()
                    .map_err(|e| format!("{}: {e}", at("ports")))?
                    .unwrap_or(PortRange::ANY),
                hold_ms: hold(&at("hold_ms"), r.hold_ms)?,
                text: rule_text(r),
            });
        }
        names::set_patterns(&patterns).map_err(|e| format!("rule[].host: {e}"))?;
        Ok(Allowlist { rules, default, default_hold_ms: hold("default_hold_ms", raw.default_hold_ms)? })
    }
}

impl Allowlist {
    /// The rule that decides `f` (its index), or `None`: the default.
    fn deciding_rule(&self, f: &Flow) -> Option<usize> {
        // Asked once, and only when a rule with a host is reached.
        let mut matches: Option<u64> = None;
        self.rules.iter().position(|r| {
            r.protocol.is_none_or(|p| p == f.protocol)
                && r.dst.is_none_or(|c| c.contains(f.dst))
                && r.host.is_none_or(|i| *matches.get_or_insert_with(names::dst_matches) & (1 << i) != 0)
                && r.src.is_none_or(|c| c.contains(f.src))
                && (f.protocol == Protocol::Icmp || r.ports.contains(f.dst_port))
        })
    }
}

impl Egress for Allowlist {
    fn check(&mut self, f: &Flow) -> Verdict {
        self.decide(f).verdict
    }

    fn decide(&mut self, f: &Flow) -> Decision {
        match self.deciding_rule(f) {
            Some(i) => Decision { verdict: self.rules[i].action, hold_ms: self.rules[i].hold_ms },
            None => Decision { verdict: self.default, hold_ms: self.default_hold_ms },
        }
    }

    fn explain(&mut self, f: &Flow) -> Explanation {
        let bound: Vec<String> = names::dst_names().into_iter().map(|n| n.name).collect();
        let bound =
            if bound.is_empty() { "no name bound".to_string() } else { format!("names bound: {}", bound.join(", ")) };
        match self.deciding_rule(f) {
            Some(i) => {
                let r = &self.rules[i];
                Explanation { verdict: r.action, reason: format!("rule[{i}] ({}) matched; {bound}", r.text) }
            }
            None => Explanation {
                verdict: self.default,
                reason: format!("no rule of {} matched; {bound}: the default", self.rules.len()),
            },
        }
    }
}

export_policy!(Allowlist: egress);

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_policy_sdk::Ipv4Addr;

    fn flow(protocol: Protocol, dst: [u8; 4], dst_port: u16) -> Flow {
        Flow {
            protocol,
            src: Ipv4Addr::new(10, 10, 1, 10).into(),
            src_port: 40000,
            dst: Ipv4Addr::from(dst).into(),
            dst_port,
            ingress: 0,
        }
    }

    #[test]
    fn first_matching_rule_decides_else_default() {
        let mut p = Allowlist::init(
            "default = \"reject\"\n\
             [[rule]]\naction = \"deny\"\ndst = \"203.0.113.80\"\nports = \"8080\"\n\
             [[rule]]\naction = \"allow\"\ndst = \"203.0.113.0/24\"\nprotocol = \"tcp\"\nports = \"80-8080\"\n\
             [[rule]]\naction = \"allow\"\nprotocol = \"icmp\"\n",
        )
        .unwrap();
        assert_eq!(p.check(&flow(Protocol::Tcp, [203, 0, 113, 80], 80)), Verdict::Allow);
        assert_eq!(p.check(&flow(Protocol::Tcp, [203, 0, 113, 80], 8080)), Verdict::Deny, "earlier rule wins");
        assert_eq!(p.check(&flow(Protocol::Udp, [203, 0, 113, 80], 80)), Verdict::Reject, "protocol must match");
        assert_eq!(p.check(&flow(Protocol::Tcp, [198, 51, 100, 1], 80)), Verdict::Reject);
        assert_eq!(p.check(&flow(Protocol::Icmp, [192, 0, 2, 1], 0)), Verdict::Allow);
    }

    #[test]
    fn host_rules_ask_the_gateway_which_patterns_the_destinations_names_match() {
        let mut p = Allowlist::init(
            "default = \"reject\"\n\
             [[rule]]\naction = \"allow\"\nhost = \"github.com\"\nprotocol = \"tcp\"\nports = \"443\"\n\
             [[rule]]\naction = \"allow\"\nhost = \"*.pypi.org\"\n",
        )
        .unwrap();
        assert_eq!(names::testing::patterns(), vec!["github.com".to_string(), "*.pypi.org".to_string()]);
        let f = flow(Protocol::Tcp, [203, 0, 113, 80], 443);
        // The gateway says which registered patterns a bound name matches (bit per pattern).
        names::testing::bind(0b01, &["github.com"]);
        assert_eq!(p.check(&f), Verdict::Allow);
        names::testing::bind(0b10, &["files.pypi.org"]);
        assert_eq!(p.check(&f), Verdict::Allow);
        names::testing::bind(0, &[]);
        assert_eq!(p.check(&f), Verdict::Reject, "no name matches");
        names::testing::bind(0b01, &["github.com"]);
        assert_eq!(
            p.check(&flow(Protocol::Tcp, [203, 0, 113, 80], 80)),
            Verdict::Reject,
            "the name's rule is 443 only"
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = Allowlist::init("[[rule]]\naction = \"allow\"\nports = \"90-80\"\n").err().unwrap();
        assert!(e.contains("rule[0].ports"), "{e}");
        let e = Allowlist::init("[[rule]]\naction = \"perhaps\"\n").err().unwrap();
        assert!(e.contains("rule[0].action") && e.contains("perhaps"), "{e}");
        let e = Allowlist::init("rules = 3\n").err().unwrap();
        assert!(e.contains("rules"), "{e}");
        assert_eq!(Allowlist::init("").unwrap().default, Verdict::Deny);
    }

    #[test]
    fn a_rule_or_the_default_says_how_long_its_refusal_holds() {
        let mut a = Allowlist::init(
            "default = \"deny\"\ndefault_hold_ms = 0\n\
             [[rule]]\naction = \"reject\"\nports = \"25\"\nhold_ms = 30000\n\
             [[rule]]\naction = \"reject\"\nports = \"26\"\n\
             [[rule]]\naction = \"allow\"\nports = \"443\"\nhold_ms = 5\n",
        )
        .unwrap();
        let d = |a: &mut Allowlist, port| a.decide(&flow(Protocol::Tcp, [203, 0, 113, 9], port));
        assert_eq!(d(&mut a, 25), Decision { verdict: Verdict::Reject, hold_ms: Some(30_000) });
        assert_eq!(d(&mut a, 26), Decision { verdict: Verdict::Reject, hold_ms: None }, "the gateway's default");
        assert_eq!(d(&mut a, 80), Decision { verdict: Verdict::Deny, hold_ms: Some(0) }, "the default's hold");
        assert_eq!(d(&mut a, 443).verdict, Verdict::Allow);
        assert_eq!(a.check(&flow(Protocol::Tcp, [203, 0, 113, 9], 25)), Verdict::Reject, "check agrees");
        let e = Allowlist::init("[[rule]]\naction = \"deny\"\nhold_ms = 60001\n").err().unwrap();
        assert!(e.contains("rule[0].hold_ms = 60001"), "{e}");
        assert!(Allowlist::init("default_hold_ms = 99999").err().unwrap().contains("default_hold_ms"));
    }
}
