//! Telemetry: where flow records and counters leave the gateway.
//!
//! The flow-log thread (`policy::flowlog`) turns finished, interim and refused flows into
//! `ExportRecord`s after the flow-log policy and hands them to the sinks: the JSON-lines
//! file, the followers of `natgw flows --follow`, and the OTLP exporter thread. Counters
//! leave as OTLP metrics (same thread) and as Prometheus text (`prometheus`).
//!
//! Owns: the record schema (`record::FIELDS`), the OTLP exporter thread, the Prometheus
//! endpoint, the followers. Must never: block a worker or the flow-log thread on a
//! collector, a reader or a socket.

pub mod follow;
pub mod otlp;
pub mod prometheus;
pub mod record;
