//! Where and how telemetry leaves the gateway (the config file's `[otlp]` section, as
//! validated by the `natgw` crate).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Scheme, host and port, no trailing slash.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub timeout_ms: u64,
    pub logs: bool,
    pub metrics_interval_ms: u64,
    pub buffer_records: usize,
    pub batch: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub instance_id: Option<String>,
    pub resource: Vec<(String, String)>,
}

impl OtlpConfig {
    /// Where one signal goes: gRPC takes the base URL, HTTP appends `/v1/logs` or
    /// `/v1/metrics` (as OTEL_EXPORTER_OTLP_ENDPOINT does).
    pub fn signal_url(&self, signal: &str) -> String {
        match self.protocol {
            OtlpProtocol::Grpc => self.endpoint.clone(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/{signal}", self.endpoint),
        }
    }
}
