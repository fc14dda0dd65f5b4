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
    Gateway::start(b, &path, cfg.admin_socket(), &t.path(&format!("natgw-b-{n}.log")))
}

/// Waits until `node` says its sync link is up and it holds at least `flows` replicated
/// flows (a standby) — what a standby that joined late shows once its bulk resync is in.
pub fn wait_replica(node: &natgw::admin::AdminClient, flows: u64, within: Duration) -> bool {
    wait_until(within, || {
        node.status().ok().and_then(|s| s.ha).is_some_and(|h| h.connected && h.replica_flows >= flows)
    })
}
