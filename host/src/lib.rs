//! natgw: a programmable NAT gateway.
//!
//! The core (`wire`, `conntrack`, `nat`, `l2`) does no I/O: it takes a buffer and `now`
//! and returns what to do. `io` moves frames with io_uring over AF_PACKET; `control` reads
//! the config, serves the admin socket and implements the CLI.
//! `unsafe` is allowed only in `io` (see CONVENTIONS.md), and denied everywhere else.

#![deny(unsafe_code)]

pub mod conntrack;
pub mod control;
pub mod counters;
#[cfg(feature = "gateway")]
#[allow(unsafe_code)]
pub mod io;
pub mod l2;
pub mod nat;
#[cfg(feature = "gateway")]
pub mod policy;
#[cfg(feature = "gateway")]
pub mod telemetry;
pub mod wire;
