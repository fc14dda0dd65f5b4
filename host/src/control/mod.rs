//! The control path: configuration, starting and stopping the gateway's threads, policy
//! swaps, and the root-only admin socket.
//!
//! Owns: process lifecycle and operator-facing text. Must never: touch packets.

#[cfg(feature = "gateway")]
pub mod admin;
pub mod config;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "gateway")]
pub use gateway::*;
#[cfg(feature = "gateway")]
mod policy_cli;
#[cfg(feature = "gateway")]
pub use policy_cli::*;
#[cfg(feature = "gateway")]
mod policy_test;
#[cfg(feature = "gateway")]
pub use policy_test::*;
#[cfg(feature = "gateway")]
pub mod report;
#[cfg(feature = "gateway")]
mod telemetry_cli;
#[cfg(feature = "gateway")]
pub use telemetry_cli::*;
