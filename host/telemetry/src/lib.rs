//! natgw-telemetry: where flow records and counters leave the gateway.
//!
//! The flow-log stage (`natgw_policy::flowlog`) turns finished, interim and refused flows
//! into `ExportRecord`s after the flow-log policy and hands them to the sinks here: the
//! JSON-lines file, the followers of `natgw flows --follow`, and the OTLP exporter thread.
//! Counters leave as OTLP metrics (same thread) and as Prometheus text (`prometheus`).
//!
//! Owns: the record schema (`record::FIELDS`), the OTLP exporter thread, the Prometheus
//! endpoint, the followers. Must never: block a worker or the flow-log thread on a
//! collector, a reader or a socket, or know that the flow-log policy is WebAssembly.

#![deny(unsafe_code)]

pub mod config;
pub mod follow;
pub mod otlp;
pub mod prometheus;
pub mod record;
