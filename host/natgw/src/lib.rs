//! natgw: a programmable NAT gateway. This crate is the control path and the binary:
//! the config file (`config`, errors naming the key and the value), starting and stopping
//! the gateway's threads (`gateway`), the admin API and its client (`admin`), the CLI's
//! text (`report`), and the offline policy and OTLP commands.
//!
//! The data path lives in the crates below it, which the compiler keeps in layers:
//! `natgw-wire` (views and checksums) under `natgw-core` (conntrack, the translator, ARP,
//! counters; sans-IO), under `natgw-io` (every syscall, the worker loop), `natgw-telemetry`
//! (flow records, OTLP, Prometheus) and `natgw-policy` (the Wasm runtime).
//!
//! Owns: process lifecycle and operator-facing text. Must never: touch packets.

#![deny(unsafe_code)]

pub mod admin;
pub mod config;
pub mod explain;
mod gateway;
pub mod ha;
mod handoff;
pub mod logging;
mod policy_cli;
pub mod report;
mod restart;
mod telemetry_cli;
pub mod top;

pub use admin::admin_socket;
pub use explain::explain_offline;
pub use gateway::{run, ControlError};
pub use policy_cli::{policy_bench, policy_check, BenchLimits};
pub use telemetry_cli::otlp_bench;
