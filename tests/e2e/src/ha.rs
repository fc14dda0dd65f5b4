//! A gateway pair (`[ha]`) on the demo network: the demo's gateway namespace is node A, a
//! second namespace node B, both on the same inside and outside segments (a bridge in each
//! client namespace and in the internet namespace) and joined by a dedicated sync link.
//!
//! ```text
//!  cli1 [br0: c1, c1b] ──in1── A ──out0── [br0: i0, i0b] inet
//!                       └─in1── B ──out0──┘
//!  (cli2 likewise on in2)      A sync0 10.99.0.1 ── B sync0 10.99.0.2
//! ```

use std::time::Duration;

use crate::{netns, wait_until, Gateway, GatewayConfig, Netns, Topology};

pub const SYNC_A: &str = "10.99.0.1:7801";
pub const SYNC_B: &str = "10.99.0.2:7801";
pub const KEY: &str = "natgw-e2e-pair-psk-0123456789";

/// Node B's namespace, wired beside the topology's gateway (node A).
pub fn wire_pair(t: &mut Topology) -> Netns {
    let b = t.add_namespace("gwb");
    let veth = |a: &str, a_ns: &Netns, z: &str, z_ns: &Netns| {
        netns::ip(&["link", "add", a, "netns", &a_ns.name, "type", "veth", "peer", "name", z, "netns", &z_ns.name]);
    };
    // Each segment becomes a bridge holding the existing link to A and a new one to B.
    for (ns, old, new, gw_if, addr, via) in [
        (&t.cli1, "c1", "c1b", "in1", "10.10.1.10/24", Some("10.10.1.1")),
        (&t.cli2, "c2", "c2b", "in2", "10.10.2.10/24", Some("10.10.2.1")),
        (&t.inet, "i0", "i0b", "out0", "198.51.100.1/24", None),
    ] {
        veth(new, ns, gw_if, &b);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "del", addr, "dev", old]);
        ns.ip(&["link", "set", old, "master", "br0"]);
        ns.ip(&["link", "set", new, "master", "br0"]);
        ns.ip(&["addr", "add", addr, "dev", "br0"]);
        for d in ["br0", new] {
            ns.ip(&["link", "set", d, "up"]);
        }
        if let Some(gw) = via {
            ns.ip(&["route", "replace", "default", "via", gw]);
        }
    }
    b.sysctl("net.ipv4.ip_forward", "0");
    for d in ["in1", "in2", "out0"] {
        b.ip(&["link", "set", d, "up"]);
    }
    veth("sync0", &t.gw, "sync0", &b);
    for (ns, addr) in [(&t.gw, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", "sync0"]);
        ns.ip(&["link", "set", "sync0", "up"]);
    }
    b
}

/// The demo config as one node of the pair; `b`: node B (its own admin socket and flow log).
pub fn node_config(t: &Topology, b: bool) -> GatewayConfig {
    let mut c = t.demo_config();
    let (me, peer, tag) = if b { (SYNC_B, SYNC_A, "b") } else { (SYNC_A, SYNC_B, "a") };
    c.set("dataplane.workers", 2i64);
    c.set("ha.interface", "sync0");
    c.set("ha.address", me);
    c.set("ha.peer", peer);
    c.set("ha.key", KEY);
    c.set("admin.socket", t.path(&format!("admin-{tag}.sock")).display().to_string());
    c.set("flow_log.file", t.path(&format!("flows-{tag}.jsonl")).display().to_string());
    c
}

/// Starts node B in its namespace.
pub fn start_b(t: &Topology, b: &Netns, cfg: &GatewayConfig, n: usize) -> Gateway {
    let path = cfg.write(&t.path(&format!("natgw-b-{n}.toml")));
    Gateway::start(b, &crate::natgw_bin(), &path, cfg.admin_socket(), &t.path(&format!("natgw-b-{n}.log")))
}

/// Waits until `node` says its sync link is up and it holds at least `flows` replicated
/// flows (a standby) — what a standby that joined late shows once its bulk resync is in.
pub fn wait_replica(node: &natgw::admin::AdminClient, flows: u64, within: Duration) -> bool {
    wait_until(within, || {
        node.status().ok().and_then(|s| s.ha).is_some_and(|h| h.connected && h.replica_flows >= flows)
    })
}

/// A node's config file. Fixed per node: keepalived's `track_process` matches natgw's
/// command line, config path included.
pub fn config_path(t: &Topology, b: bool) -> std::path::PathBuf {
    t.path(if b { "natgw-b.toml" } else { "natgw-a.toml" })
}

/// Starts a node's natgw with `cfg` at the node's fixed config path.
pub fn start_node(t: &Topology, ns: &Netns, b: bool, cfg: &GatewayConfig) -> Gateway {
    let path = cfg.write(&config_path(t, b));
    Gateway::start(
        ns,
        &crate::natgw_bin(),
        &path,
        cfg.admin_socket(),
        &t.path(if b { "natgw-b.log" } else { "natgw-a.log" }),
    )
}

/// `examples/ha/keepalived.conf` for one node of this topology: the shipped settings with
/// this test's paths (and node B's addresses and lower priority). Script security is off:
/// the test's files live under /tmp, which any user may write.
pub fn keepalived_config(t: &Topology, b: bool, socket: &str) -> String {
    let shipped = std::fs::read_to_string(crate::root().join("examples/ha/keepalived.conf")).expect("keepalived.conf");
    let notify = crate::root().join("examples/ha/notify");
    let mut c = shipped
        .replace("/usr/sbin/natgw", &crate::natgw_bin().display().to_string())
        .replace("/etc/natgw/natgw.toml", &config_path(t, b).display().to_string())
        .replace("/usr/lib/natgw/ha/notify", &notify.display().to_string())
        .replace("/run/natgw/admin.sock", socket)
        .replace("/run/natgw/ha-up", &t.path(if b { "ha-up-b" } else { "ha-up-a" }).display().to_string())
        .replace("    enable_script_security\n    script_user root\n", "");
    if b {
        c = c
            .replace("unicast_src_ip 10.99.0.1", "unicast_src_ip 10.99.0.X")
            .replace("        10.99.0.2\n", "        10.99.0.1\n")
            .replace("unicast_src_ip 10.99.0.X", "unicast_src_ip 10.99.0.2")
            .replace("priority 150", "priority 100");
    }
    c
}

/// keepalived (VRRP only, in the foreground) beside a node, and `natgw ha watch` feeding
/// its track file, as daemons of the topology.
pub fn start_keepalived(t: &mut Topology, ns: &Netns, b: bool, socket: &str) {
    let tag = if b { "b" } else { "a" };
    let mut watch = ns.cmd(crate::natgw_bin());
    watch.args(["ha", "watch", "--socket", socket, "--track-file"]).arg(t.path(&format!("ha-up-{tag}")));
    t.daemon(&format!("natgw-ha-watch-{tag}"), watch);
    let conf = t.path(&format!("keepalived-{tag}.conf"));
    std::fs::write(&conf, keepalived_config(t, b, socket)).expect("keepalived.conf");
    let mut cmd = ns.cmd("keepalived");
    cmd.args(["--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog", "-f"]).arg(&conf);
    cmd.arg("-p").arg(t.path(&format!("keepalived-{tag}.pid")));
    cmd.arg("-r").arg(t.path(&format!("keepalived-{tag}-vrrp.pid")));
    t.daemon(&format!("keepalived-{tag}"), cmd);
}

/// The state keepalived beside node A (`b` false) or B last entered (MASTER, BACKUP,
/// FAULT), from its log.
pub fn keepalived_state(t: &Topology, b: bool) -> Option<String> {
    let log = t.daemon_log(if b { "keepalived-b" } else { "keepalived-a" })?;
    log.lines().rev().find_map(|l| {
        let state = l.split("Entering ").nth(1)?.split(' ').next()?;
        Some(state.to_string())
    })
}

/// The node's role as its natgw says (None: not answering).
pub fn role(node: &natgw::admin::AdminClient) -> Option<natgw::ha::Role> {
    node.status().ok().and_then(|s| s.ha).map(|h| h.role)
}

/// Node A and node B with keepalived beside each; A (priority 150) is active once this
/// returns. `change` adjusts both nodes' configs.
pub struct Pair {
    pub t: Topology,
    pub b_ns: Netns,
    /// Node B's natgw (node A's is `t.gateway`).
    pub b: Gateway,
    pub cfg_a: GatewayConfig,
    pub cfg_b: GatewayConfig,
}

impl Pair {
    pub fn with_keepalived(change: impl Fn(&mut GatewayConfig)) -> Pair {
        let mut t = Topology::network();
        let b_ns = wire_pair(&mut t);
        let (mut cfg_a, mut cfg_b) = (node_config(&t, false), node_config(&t, true));
        change(&mut cfg_a);
        change(&mut cfg_b);
        let a_ns = t.gw.clone();
        t.gateway = Some(start_node(&t, &a_ns, false, &cfg_a));
        let b = start_node(&t, &b_ns, true, &cfg_b);
        start_keepalived(&mut t, &a_ns, false, &cfg_a.admin_socket());
        start_keepalived(&mut t, &b_ns, true, &cfg_b.admin_socket());
        let a = t.admin();
        crate::eventually(Duration::from_secs(10), "keepalived to make A active and B standby", || {
            role(&a) == Some(natgw::ha::Role::Active) && role(&b.admin) == Some(natgw::ha::Role::Standby)
        });
        Pair { t, b_ns, b, cfg_a, cfg_b }
    }
}
