//! The end-to-end harness: natgw and real programs (curl, nginx, iperf3, socat, ping,
//! tracepath, traceroute, tcpdump, an OpenTelemetry Collector) in network namespaces that
//! a `Topology` builds for one test and removes when it is dropped, even when the test
//! panics.
//!
//! The demo network (examples/demo/topology.sh draws the same one for the demo):
//!
//! ```text
//!   <p>-cli1  c1 10.10.1.10/24 --veth-- in1 ┐
//!   <p>-cli2  c2 10.10.2.10/24 --veth-- in2 ┤ <p>-gw: natgw (no kernel addresses, ip_forward=0),
//!                                           │         an OpenTelemetry Collector on 127.0.0.1
//!   <p>-inet  i0 198.51.100.1/24 --veth-- out0 ┘ (natgw: 198.51.100.10, .11)
//!             lo 203.0.113.80 (nginx :80), 203.0.113.7 (UDP echo :7)
//! ```
//!
//! `<p>-inet` has no route to 10.10.0.0/16: whatever reaches a server there was translated.
//! Tests wait on conditions (`eventually`), never on fixed sleeps; each builds its own
//! topology under a name of its own, and the harness runs one topology at a time (the
//! tests measure loss and latency on a two-core machine). Nothing is written into the
//! source tree: each topology's files live in a directory of its own under /tmp.

#![deny(unsafe_code)]

pub mod config;
pub mod ha;
pub mod hostile;
pub mod load;
pub mod net;
pub mod netns;
pub mod process;
pub mod systemd;
pub mod topology;
pub mod wait;

pub use config::GatewayConfig;
pub use netns::Netns;
pub use process::{Capture, Daemon};
pub use topology::{Collector, Gateway, Topology, UdpEcho};
pub use wait::{eventually, wait_until};

use std::path::PathBuf;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

/// The natgw binary under test: `$NATGW_BIN`, else the release build.
pub fn natgw_bin() -> PathBuf {
    std::env::var_os("NATGW_BIN").map(PathBuf::from).unwrap_or_else(|| root().join("target/release/natgw"))
}

/// Built components (scripts/build-policy.sh and the language examples' builds).
pub fn policies() -> PathBuf {
    root().join("target/policies")
}

/// One built component by file name, checked to exist.
pub fn policy(file: &str) -> PathBuf {
    let p = policies().join(file);
    assert!(p.is_file(), "{} is missing: scripts/setup.sh builds it", p.display());
    p
}

/// The demo's policy configs (examples/demo/policies).
pub fn demo_policy_config(file: &str) -> PathBuf {
    root().join("examples/demo/policies").join(file)
}
