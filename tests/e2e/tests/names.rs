//! DNS name binding end to end: a real DNS server (dnsmasq) in natgw-inet answers the
//! inside hosts' lookups (glibc's resolver, through natgw), and the egress allow-list
//! (natgw:policy@0.2.0) allows flows by the names bound to their destination.
//!
//! Names and addresses dnsmasq serves here:
//!   github.com          A 203.0.113.81               (rule: host = "github.com")
//!   files.pypi.org      A 203.0.113.82 (*.pypi.org)  (rule: host = "*.pypi.org")
//!   pypi.org            A 203.0.113.84               (the apex: not in *.pypi.org)
//!   www.example.com     CNAME cdn.example.net, A 203.0.113.83 (rule: host = "cdn.example.net")
//!   short.example       A 203.0.113.85, TTL 2 s      (rule: host = "short.example")
//!   ci.example          A 203.0.113.86               (rule: host = "ci.example"; an inside resolver's)
//! Every address answers TCP 443 and 8443 (an echo service).

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use natgw::admin::{ExplainQuery, FlowProto, Hook};
use natgw_e2e::net::{tcp_echo_probe, Probe};
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, policy, Netns, Topology};
use natgw_wire::dns::{Builder, Message, Name, RecordData, TYPE_A};

const RESOLVER: &str = "203.0.113.53";
/// A second trusted resolver: the test answers its queries itself, with forged answers.
const FORGER: &str = "203.0.113.54";

const POLICY: &str = r#"default = "reject"

[[rule]]
action = "allow"
protocol = "any"
dst = "203.0.113.52/30"
ports = "53"

[[rule]]
action = "allow"
host = "github.com"
protocol = "tcp"
ports = "443"

[[rule]]
action = "allow"
host = "*.pypi.org"
protocol = "tcp"
ports = "443"

[[rule]]
action = "allow"
host = "cdn.example.net"
protocol = "tcp"
ports = "443"

[[rule]]
action = "allow"
host = "short.example"
protocol = "tcp"
ports = "443"

[[rule]]
action = "allow"
host = "ci.example"
protocol = "tcp"
ports = "443"
"#;

/// dnsmasq in `ns`, in the foreground, answering on `listen` only, with no upstream, no
/// /etc/hosts and its log on stderr: the caller adds its records or its server.
fn dnsmasq(ns: &Netns, listen: &str) -> std::process::Command {
    let mut cmd = ns.cmd("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--log-facility=-",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--pid-file=",
        "--user=root",
        "--group=root",
        "--bind-interfaces",
    ]);
    cmd.arg(format!("--listen-address={listen}"));
    cmd
}

/// `/etc/netns/NAME/resolv.conf`: what `ip netns exec NAME` shows its programs as
/// /etc/resolv.conf. Removed on drop.
struct ResolvConf(PathBuf);

impl ResolvConf {
    fn point(ns: &Netns, nameserver: &str) -> ResolvConf {
        ResolvConf::point_with(ns, nameserver, "")
    }

    /// With more resolver options (`use-vc`: glibc asks over TCP).
    fn point_with(ns: &Netns, nameserver: &str, options: &str) -> ResolvConf {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("/etc/netns/NAME");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:2 attempts:2 {options}\n"),
        )
        .expect("resolv.conf");
        ResolvConf(dir)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo network; in natgw-inet dnsmasq on 203.0.113.53 and an echo service on every
/// address at port 443; natgw with `[dns]` trusting both resolvers, cli2 (10.10.2.10) an
/// inside resolver, and the name allow-list as its egress policy.
fn names_topology() -> (Topology, Vec<ResolvConf>) {
    let mut t = Topology::network();
    for a in [
        RESOLVER,
        FORGER,
        "203.0.113.81",
        "203.0.113.82",
        "203.0.113.83",
        "203.0.113.84",
        "203.0.113.85",
        "203.0.113.86",
    ] {
        t.inet.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    let mut dnsmasq = dnsmasq(&t.inet, RESOLVER);
    dnsmasq.args([
        "--log-queries",
        "--host-record=github.com,203.0.113.81,300",
        "--address=/pypi.org/203.0.113.82",
        "--host-record=pypi.org,203.0.113.84,300",
        "--host-record=cdn.example.net,203.0.113.83,300",
        "--cname=www.example.com,cdn.example.net,300",
        "--host-record=short.example,203.0.113.85,2",
        "--host-record=ci.example,203.0.113.86,300",
    ]);
    t.daemon("dnsmasq", dnsmasq);
    let mut echo = t.inet.cmd("socat");
    echo.args(["TCP-LISTEN:443,fork,reuseaddr", "EXEC:cat"]);
    t.daemon("echo-443", echo);
    // And 8443, which no rule allows.
    let mut echo = t.inet.cmd("socat");
    echo.args(["TCP-LISTEN:8443,fork,reuseaddr", "EXEC:cat"]);
    t.daemon("echo-8443", echo);
    let inet = t.inet.clone();
    eventually(secs(5), "dnsmasq and the echo service to listen", || {
        inet.enter(|| {
            tcp_echo_probe("203.0.113.81:443", secs(1)) == Probe::Open
                && lookup_raw("203.0.113.53:53", 1, "github.com").is_some()
        })
    });

    let policy_cfg = t.path("names.toml");
    std::fs::write(&policy_cfg, POLICY).expect("names.toml");
    let mut cfg = t.demo_config();
    cfg.set("policy.egress.component", policy("egress_allowlist.wasm").display().to_string());
    cfg.set("policy.egress.config", policy_cfg.display().to_string());
    cfg.set("dns.resolvers", vec![RESOLVER.to_string(), FORGER.to_string()]);
    cfg.set("dns.inside_resolvers", vec!["10.10.2.10".to_string()]);
    cfg.set("dns.min_ttl_s", 1i64);
    // Kept for `natgw explain --offline`.
    cfg.write(&t.path("names-gateway.toml"));
    t.start(&cfg);
    let confs = vec![ResolvConf::point(&t.cli1, RESOLVER), ResolvConf::point(&t.cli2, "10.10.2.10")];
    (t, confs)
}

/// Resolves `name` in `ns` the way programs there do (glibc, /etc/resolv.conf).
fn getent(ns: &Netns, name: &str) -> Option<Ipv4Addr> {
    let out = ns.output("getent", &["ahostsv4", name]);
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|a| a.parse().ok())
}

/// One A query to `server` from this namespace with a UDP socket: the first address of the
/// answer, if one came.
fn lookup_raw(server: &str, id: u16, name: &str) -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut q = [0u8; 512];
    let len = Builder::query(&mut q, id, &Name::from_text(name).ok()?, TYPE_A).ok()?.finish();
    s.send_to(&q[..len], server).ok()?;
    let mut b = [0u8; 1500];
    let n = s.recv(&mut b).ok()?;
    let m = Message::new_checked(&b[..n]).ok()?;
    let question = m.question().ok()?;
    m.answers(&question).filter_map(Result::ok).find_map(|r| match r.data {
        RecordData::A(a) => Some(a),
        _ => None,
    })
}

fn probe(ns: &Netns, addr: &str) -> Probe {
    ns.enter(|| tcp_echo_probe(&format!("{addr}:443"), secs(2)))
}

#[test]
fn flows_are_allowed_by_the_names_their_host_resolved() {
    let (t, _confs) = names_topology();
    // Before any lookup: the address alone is refused (a RST: the policy rejects).
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Refused, "no name bound yet");

    // cli1 resolves github.com through natgw; the flow to its address then passes.
    let before = t.counter("DnsAnswersMatched");
    assert_eq!(getent(&t.cli1, "github.com"), Some(Ipv4Addr::new(203, 0, 113, 81)), "dnsmasq answers through natgw");
    assert!(t.counter("DnsAnswersMatched") > before, "the answer matched its query");
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Open, "github.com is allowed");
    // A host that did not resolve it: still refused.
    assert_eq!(probe(&t.cli2, "203.0.113.81"), Probe::Refused, "cli2 never resolved github.com");
    // Another port of the same name (an echo service listens there too): the rule says 443.
    let other_port = t.cli1.enter(|| tcp_echo_probe("203.0.113.81:8443", secs(2)));
    assert_eq!(other_port, Probe::Refused);

    // A wildcard: one or more labels under pypi.org, never the apex.
    assert_eq!(getent(&t.cli1, "files.pypi.org"), Some(Ipv4Addr::new(203, 0, 113, 82)));
    assert_eq!(probe(&t.cli1, "203.0.113.82"), Probe::Open, "files.pypi.org matches *.pypi.org");
    assert_eq!(getent(&t.cli1, "pypi.org"), Some(Ipv4Addr::new(203, 0, 113, 84)));
    assert_eq!(probe(&t.cli1, "203.0.113.84"), Probe::Refused, "pypi.org is not in *.pypi.org");

    // A CNAME chain: the rule names the chain's target, the host asked for the alias.
    assert_eq!(getent(&t.cli1, "www.example.com"), Some(Ipv4Addr::new(203, 0, 113, 83)));
    assert_eq!(probe(&t.cli1, "203.0.113.83"), Probe::Open, "cdn.example.net is bound through the CNAME");

    let flows = t.admin().flows().expect("flows");
    assert!(flows.iter().any(|f| f.original.contains("203.0.113.53:53")), "the lookups crossed natgw: {flows:?}");
}

/// glibc asking over TCP (`options use-vc`): natgw follows the stream and binds from it.
#[test]
fn lookups_over_tcp_bind_as_lookups_over_udp_do() {
    let (t, mut confs) = names_topology();
    confs.push(ResolvConf::point_with(&t.cli1, RESOLVER, "use-vc"));
    let (matched, unread) = (t.counter("DnsAnswersMatched"), t.counter("DnsTcpUnread"));
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Refused, "no name bound yet");
    assert_eq!(getent(&t.cli1, "github.com"), Some(Ipv4Addr::new(203, 0, 113, 81)), "dnsmasq answers over TCP");
    let flows = t.admin().flows().expect("flows");
    assert!(
        flows.iter().any(|f| f.proto == "tcp" && f.original.contains("203.0.113.53:53")),
        "the lookup went over TCP: {flows:?}"
    );
    assert!(t.counter("DnsAnswersMatched") > matched, "the answer read from the stream matched its query");
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Open, "github.com is allowed");
    // A CNAME chain over TCP too.
    assert_eq!(getent(&t.cli1, "www.example.com"), Some(Ipv4Addr::new(203, 0, 113, 83)));
    assert_eq!(probe(&t.cli1, "203.0.113.83"), Probe::Open);
    assert_eq!(t.counter("DnsTcpUnread"), unread, "every stream was read from its SYN");
}

#[test]
fn a_binding_lasts_its_ttl() {
    let (t, _confs) = names_topology();
    assert_eq!(getent(&t.cli1, "short.example"), Some(Ipv4Addr::new(203, 0, 113, 85)));
    let bound = Instant::now();
    assert_eq!(probe(&t.cli1, "203.0.113.85"), Probe::Open, "within its TTL");
    // dnsmasq gave it a TTL of 2 s (and dns.min_ttl_s is 1): refused once that has passed.
    eventually(secs(10), "the binding of short.example to expire", || probe(&t.cli1, "203.0.113.85") == Probe::Refused);
    let held = bound.elapsed();
    eprintln!("short.example (TTL 2 s) held for {} ms", held.as_millis());
    assert!(held >= Duration::from_millis(1500), "expired after {held:?}, before its TTL");
}

#[test]
fn forged_answers_bind_nothing() {
    let (t, _confs) = names_topology();
    // cli1 asks the second trusted resolver (the test itself, in natgw-inet) for
    // github.com with id 4242; the "resolver" answers with the id the host chose (what a
    // helper the host told it to would forge: natgw put its own id on the wire), with the
    // wrong transaction id, then with the right id for another question, all naming
    // 203.0.113.86 as github.com.
    // Bound before the query leaves (a socket stays in the namespace it was made in).
    let s = t.inet.enter(|| UdpSocket::bind(format!("{FORGER}:53")).expect("bind the forger"));
    let forger = std::thread::spawn(move || {
        s.set_read_timeout(Some(secs(10))).expect("timeout");
        let mut b = [0u8; 1500];
        let (n, from) = s.recv_from(&mut b).expect("a query reaches the forger");
        let m = Message::new_checked(&b[..n]).expect("a DNS query");
        let id = m.id();
        assert_ne!(id, 4242, "the query left with natgw's own id, not the host's");
        let forge = |id: u16, name: &str| {
            let mut out = [0u8; 512];
            let n = Name::from_text(name).expect("name");
            let mut w = Builder::response(&mut out, id, &n, TYPE_A, 0).expect("response");
            w.answer(
                &Name::from_text("github.com").expect("name"),
                300,
                &RecordData::A(Ipv4Addr::new(203, 0, 113, 86)),
            )
            .expect("answer");
            let len = w.finish();
            out[..len].to_vec()
        };
        s.send_to(&forge(4242, "github.com"), from).expect("send");
        s.send_to(&forge(id.wrapping_add(1), "github.com"), from).expect("send");
        s.send_to(&forge(id, "ci.example"), from).expect("send");
    });
    let before = t.counter("DnsAnswersUnmatched");
    let got = t.cli1.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(secs(3))).expect("timeout");
        let mut q = [0u8; 512];
        let len = Builder::query(&mut q, 4242, &Name::from_text("github.com").expect("name"), TYPE_A)
            .expect("query")
            .finish();
        s.send_to(&q[..len], format!("{FORGER}:53")).expect("send");
        let mut b = [0u8; 1500];
        (0..3).filter(|_| s.recv(&mut b).is_ok()).count()
    });
    forger.join().expect("forger");
    assert_eq!(got, 3, "the forged answers were forwarded to the host (natgw reads, never drops, DNS)");
    assert_eq!(t.counter("DnsAnswersUnmatched"), before + 3, "all counted as unmatched");
    assert_eq!(probe(&t.cli1, "203.0.113.86"), Probe::Refused, "a forged answer bound nothing");
}

#[test]
fn an_inside_resolvers_lookups_bind_for_every_host() {
    let (mut t, _confs) = names_topology();
    // dnsmasq on cli2 as the site's resolver, asking the one in natgw-inet through natgw.
    let mut local = dnsmasq(&t.cli2, "10.10.2.10");
    local.args(["--server=203.0.113.53", "--cache-size=0"]);
    t.daemon("dnsmasq-inside", local);
    let cli2 = t.cli2.clone();
    eventually(secs(5), "the inside resolver to answer", || {
        cli2.enter(|| lookup_raw("10.10.2.10:53", 2, "github.com").is_some())
    });
    assert_eq!(probe(&t.cli1, "203.0.113.86"), Probe::Refused, "nobody resolved ci.example yet");
    assert_eq!(getent(&t.cli2, "ci.example"), Some(Ipv4Addr::new(203, 0, 113, 86)), "asked the inside resolver");
    // cli1 never asked anyone: the inside resolver's lookup binds for every host.
    assert_eq!(probe(&t.cli1, "203.0.113.86"), Probe::Open);
}

#[test]
fn a_name_policy_swaps_with_a_policy_of_the_older_contract() {
    let (t, _confs) = names_topology();
    assert_eq!(getent(&t.cli1, "github.com"), Some(Ipv4Addr::new(203, 0, 113, 81)));
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Open);
    assert_eq!(probe(&t.cli1, "203.0.113.84"), Probe::Refused, "no name of the name policy is bound to it");
    // A policy built against natgw:policy@0.1.0 (the Python test fixture, which allows
    // every flow but its sleeping ports), into the same gateway and back.
    let r =
        t.admin().policy_swap(Hook::Egress, policy("sleepy_python.wasm"), None, None, false).expect("swap to 0.1.0");
    assert!(r.serving_everywhere, "{r:?}");
    let listed = t.admin().policy_list().expect("list");
    assert!(listed.iter().any(|h| h.hook == Hook::Egress && h.contract == "natgw:policy@0.1.0"), "{listed:?}");
    assert_eq!(probe(&t.cli1, "203.0.113.84"), Probe::Open, "the 0.1.0 policy decides now");
    let names = t.path("names.toml");
    t.admin().policy_swap(Hook::Egress, policy("egress_allowlist.wasm"), Some(names), None, false).expect("swap back");
    let listed = t.admin().policy_list().expect("list");
    assert!(listed.iter().any(|h| h.hook == Hook::Egress && h.contract == "natgw:policy@0.2.0"), "{listed:?}");
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Open, "the 0.2.0 policy sees the name bound before the swaps");
    assert_eq!(probe(&t.cli1, "203.0.113.84"), Probe::Refused);
}

fn explain(
    t: &Topology,
    src: &str,
    dst: Option<&str>,
    name: Option<&str>,
    port: Option<u16>,
) -> natgw::admin::ExplainReport {
    let q = ExplainQuery {
        proto: FlowProto::Tcp,
        src: src.parse().expect("src"),
        dst: dst.map(|d| d.parse().expect("dst")),
        dst_port: port,
        dst_name: name.map(String::from),
    };
    t.admin().explain(q).unwrap_or_else(|e| panic!("explain {src} -> {dst:?} {name:?}: {e}"))
}

#[test]
fn explain_says_what_the_gateway_would_do_and_why() {
    let (t, _confs) = names_topology();
    // Before cli1 resolves github.com: refused by the default, no name bound.
    let r = explain(&t, "10.10.1.10:40000", Some("203.0.113.81:443"), None, None);
    assert_eq!(r.verdict, "reject", "{r:?}");
    assert!(r.reason.contains("no rule of 6 matched") && r.names.is_empty() && r.pool.is_none(), "{r:?}");
    assert!(r.translation.as_deref().is_some_and(|x| x.contains("TCP RST")), "{r:?}");
    // A name looked up among what the host resolved: none yet.
    let e = t.admin().explain(ExplainQuery {
        proto: FlowProto::Tcp,
        src: "10.10.1.10:40000".parse().expect("src"),
        dst: None,
        dst_port: Some(443),
        dst_name: Some("github.com".into()),
    });
    assert!(e.as_ref().is_err_and(|e| e.to_string().contains("bound to no IPv4 address")), "{e:?}");

    assert_eq!(getent(&t.cli1, "github.com"), Some(Ipv4Addr::new(203, 0, 113, 81)));
    // The name alone: the address comes from the names bound for cli1.
    let r = explain(&t, "10.10.1.10:40000", None, Some("github.com"), Some(443));
    eprintln!("{}", natgw::report::explain_text(&r));
    assert_eq!((r.flow.as_str(), r.verdict.as_str()), ("tcp 10.10.1.10:40000 -> 203.0.113.81:443", "allow"), "{r:?}");
    assert!(r.reason.starts_with("rule[1] (allow host=github.com protocol=tcp ports=443) matched"), "{r:?}");
    assert!(r.names.iter().any(|n| n.name == "github.com" && !n.supposed && n.ttl_s > 0), "{r:?}");
    assert_eq!(r.ingress.as_deref(), Some("in1"));
    // The demo's port-pool policy: 10.10.1.0/24 leaves from pool-a.
    let pool = r.pool.as_ref().expect("an allowed flow has a pool");
    assert_eq!(pool.name, "pool-a", "{r:?}");
    assert!(pool.chosen_by.contains("subnet_port_pools"), "{r:?}");
    assert!(r.filtering.starts_with("address-and-port-dependent"), "{r:?}");
    assert!(r.timeouts.iter().any(|(k, v)| k == "tcp established" && *v == 7440), "{r:?}");
    // The rule's port: 8443 is refused even with the name bound.
    assert_eq!(explain(&t, "10.10.1.10:40000", Some("203.0.113.81:8443"), None, None).verdict, "reject");
    // cli2 never resolved it: refused; with the name supposed bound, allowed (and nothing
    // is bound for real: a probe is still refused).
    assert_eq!(explain(&t, "10.10.2.10:40000", Some("203.0.113.81:443"), None, None).verdict, "reject");
    let r = explain(&t, "10.10.2.10:40000", Some("203.0.113.81:443"), Some("github.com"), None);
    assert_eq!(r.verdict, "allow", "{r:?}");
    assert!(r.names.iter().any(|n| n.name == "github.com" && n.supposed), "{r:?}");
    assert_eq!(r.pool.as_ref().map(|p| p.name.as_str()), Some("pool-b"), "{r:?}");
    assert_eq!(probe(&t.cli2, "203.0.113.81"), Probe::Refused, "explain bound nothing");
    // A flow of the tuple that exists is reported.
    let held = t.cli1.enter(|| std::net::TcpStream::connect_timeout(&"203.0.113.81:443".parse().expect("sa"), secs(2)));
    let held = held.expect("cli1 connects to github.com");
    let local = match held.local_addr().expect("local") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let r = explain(&t, &local.to_string(), Some("203.0.113.81:443"), None, None);
    assert!(r.existing.as_deref().is_some_and(|e| e.contains("ESTABLISHED")), "{r:?}");
    drop(held);
    // Refused before any policy: a source in no inside subnet.
    let r = explain(&t, "10.99.0.1:40000", Some("203.0.113.81:443"), None, None);
    assert!(r.refused_before_policy.as_deref().is_some_and(|w| w.contains("source-not-inside")), "{r:?}");

    // The command, as an operator types it, and offline against the config file.
    let out = t.gw.output(
        natgw_e2e::natgw_bin().to_str().expect("path"),
        &[
            "explain",
            "--socket",
            t.admin().path(),
            "--proto",
            "tcp",
            "--src",
            "10.10.1.10:40000",
            "--dst-name",
            "github.com",
            "--dst-port",
            "443",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("verdict      allow") && text.contains("pool-a"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = t.path("names-gateway.toml");
    let out = t.gw.output(
        natgw_e2e::natgw_bin().to_str().expect("path"),
        &[
            "explain",
            "--offline",
            "--config",
            cfg.to_str().expect("path"),
            "--proto",
            "tcp",
            "--src",
            "10.10.1.10:40000",
            "--dst",
            "203.0.113.81:443",
            "--dst-name",
            "github.com",
            "--json",
        ],
    );
    let r: natgw::admin::ExplainReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert!(r.offline && r.verdict == "allow" && r.names.iter().all(|n| n.supposed), "{r:?}");
}

/// Hostile DNS: 20 000 answers on one flow, half forged (random transaction ids), half
/// malformed (a compression pointer to itself, truncated records): every one is forwarded
/// untouched and counted, none binds, and name-based forwarding goes on.
#[test]
fn a_flood_of_forged_and_malformed_answers_binds_nothing() {
    let (t, _confs) = names_topology();
    let (matched, unmatched, malformed) =
        (t.counter("DnsAnswersMatched"), t.counter("DnsAnswersUnmatched"), t.counter("DnsMessagesMalformed"));
    const FLOOD: usize = 20_000;
    let s = t.inet.enter(|| UdpSocket::bind(format!("{FORGER}:53")).expect("bind the forger"));
    let forger = std::thread::spawn(move || {
        s.set_read_timeout(Some(secs(10))).expect("timeout");
        let mut b = [0u8; 1500];
        let (n, from) = s.recv_from(&mut b).expect("a query reaches the forger");
        let id = Message::new_checked(&b[..n]).expect("a query").id();
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..FLOOD {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut out = [0u8; 512];
            let len = if i % 2 == 0 {
                // A forged answer: any id but the query's.
                let low = x.to_le_bytes();
                let low = u16::from_le_bytes([low[0], low[1]]);
                let forged = if low == id { id.wrapping_add(1) } else { low };
                let name = Name::from_text("github.com").expect("name");
                let mut w = Builder::response(&mut out, forged, &name, TYPE_A, 0).expect("response");
                w.answer(&name, 300, &RecordData::A(Ipv4Addr::new(203, 0, 113, 86))).expect("answer");
                w.finish()
            } else if i % 4 == 1 {
                // The question's name a pointer to itself.
                let m = [0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
                out[..m.len()].copy_from_slice(&m);
                m.len()
            } else {
                // The right id, a record cut short.
                let name = Name::from_text("github.com").expect("name");
                let mut w = Builder::response(&mut out, id, &name, TYPE_A, 0).expect("response");
                w.answer(&name, 300, &RecordData::A(Ipv4Addr::new(203, 0, 113, 86))).expect("answer");
                w.finish() - 3
            };
            let _ = s.send_to(&out[..len], from);
        }
    });
    let received = t.cli1.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
        let mut q = [0u8; 512];
        let len = Builder::query(&mut q, 4243, &Name::from_text("github.com").expect("name"), TYPE_A)
            .expect("query")
            .finish();
        s.send_to(&q[..len], format!("{FORGER}:53")).expect("send");
        let mut b = [0u8; 1500];
        let mut n = 0;
        while s.recv(&mut b).is_ok() {
            n += 1;
        }
        n
    });
    forger.join().expect("forger");
    let counted = (t.counter("DnsAnswersUnmatched") - unmatched) + (t.counter("DnsMessagesMalformed") - malformed);
    eprintln!("{received} of {FLOOD} answers reached the host; natgw counted {counted}");
    assert!(received >= FLOOD / 10, "answers are forwarded, not dropped: {received}");
    assert!(counted >= received as u64, "every answer forwarded was counted: {counted} < {received}");
    assert_eq!(t.counter("DnsAnswersMatched"), matched, "none matched");
    let status = t.admin().status().expect("status");
    let dns = status.dns.expect("[dns] is on");
    assert_eq!(dns.names, 0, "nothing bound: {dns:?}");
    assert_eq!(probe(&t.cli1, "203.0.113.86"), Probe::Refused, "the forged address is not allowed");
    // A real lookup after the flood binds as ever.
    assert_eq!(getent(&t.cli1, "github.com"), Some(Ipv4Addr::new(203, 0, 113, 81)));
    assert_eq!(probe(&t.cli1, "203.0.113.81"), Probe::Open);
    assert!(t.admin().status().expect("status").dns.is_some_and(|d| d.names >= 1));
}
