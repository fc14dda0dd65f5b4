//! OTLP export: flow records as OpenTelemetry logs, counters as OpenTelemetry metrics,
//! over gRPC or HTTP/protobuf, with the `opentelemetry-otlp` exporters.
//!
//! One thread owns the exporters and a current-thread tokio runtime; nothing else in the
//! gateway is async. The flow-log thread hands records over through a bounded queue
//! (`otlp.buffer_records`): when it is full the record is dropped and counted
//! (OtlpRecordsDropped), so the data plane and the flow-log thread never wait on a
//! collector. A batch that fails to export (collector down, refusing, answering garbage,
//! TLS failure, timeout) stays in flight and is retried with exponential backoff
//! (`retry_initial_ms` doubling to `retry_max_ms`), each failure counted
//! (OtlpExportRetries) and logged at most once per 10 s with the exporter's reason.
//! Records keep queueing behind it up to the buffer size. The exporters' own retries are
//! off, so every attempt is visible here.
//!
//! Metrics: every counter is an observable instrument (gauges for levels, monotonic sums
//! for totals, drop reasons as a `reason` attribute) read by a manual reader and pushed
//! every `metrics_interval_ms`, cumulative.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;
use thiserror::Error;

use super::record::{ExportRecord, Value};
use crate::config::{OtlpConfig, OtlpProtocol};
use natgw_core::counters::{Counter, Counters};

#[derive(Debug, Error)]
pub enum OtlpError {
    #[error("otlp: cannot start the exporter runtime: {0}")]
    Runtime(std::io::Error),
    #[error("otlp: cannot build the {signal} exporter for {endpoint}: {reason}")]
    Build { signal: &'static str, endpoint: String, reason: String },
    #[error("otlp.ca_file {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// The resource every export carries.
pub fn resource(cfg: &OtlpConfig) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let instance = cfg.instance_id.clone().unwrap_or_else(|| host.clone());
    let mut attrs = vec![
        KeyValue::new("service.name", "natgw"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance),
        KeyValue::new("host.name", host),
    ];
    attrs.extend(cfg.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    Resource::builder_empty().with_attributes(attrs).build()
}

fn read_ca(cfg: &OtlpConfig) -> Result<Option<Vec<u8>>, OtlpError> {
    cfg.ca_file
        .as_ref()
        .map(|p| std::fs::read(p).map_err(|e| OtlpError::Ca { path: p.display().to_string(), reason: e.to_string() }))
        .transpose()
}

fn host_of(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => hostport.to_string(),
    }
}

fn tonic_tls(cfg: &OtlpConfig) -> Result<Option<tonic::transport::ClientTlsConfig>, OtlpError> {
    if !cfg.endpoint.starts_with("https://") {
        return Ok(None);
    }
    let tls = tonic::transport::ClientTlsConfig::new().domain_name(host_of(&cfg.endpoint));
    Ok(Some(match read_ca(cfg)? {
        Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    }))
}

fn metadata(cfg: &OtlpConfig) -> tonic::metadata::MetadataMap {
    let mut md = tonic::metadata::MetadataMap::new();
    for (k, v) in &cfg.headers {
        // Validated by the config: lower-case token names, printable ASCII values.
        if let (Ok(k), Ok(v)) = (tonic::metadata::MetadataKey::from_bytes(k.as_bytes()), v.parse()) {
            md.insert(k, v);
        }
    }
    md
}

fn http_client(cfg: &OtlpConfig) -> Result<reqwest::Client, OtlpError> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_millis(cfg.timeout_ms));
    if let Some(pem) = read_ca(cfg)? {
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| OtlpError::Ca {
            path: cfg.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| OtlpError::Build { signal: "http", endpoint: cfg.endpoint.clone(), reason: e.to_string() })
}

fn compression(cfg: &OtlpConfig) -> Option<opentelemetry_otlp::Compression> {
    cfg.gzip.then_some(opentelemetry_otlp::Compression::Gzip)
}

fn build_error(signal: &'static str, cfg: &OtlpConfig, e: impl std::fmt::Display) -> OtlpError {
    OtlpError::Build { signal, endpoint: cfg.signal_url(signal), reason: e.to_string() }
}

/// The settings every gRPC exporter gets, logs or metrics alike.
fn tonic_settings<B: WithExportConfig + WithTonicConfig>(b: B, cfg: &OtlpConfig, signal: &str) -> Result<B, OtlpError> {
    let mut b = b
        .with_endpoint(cfg.signal_url(signal))
        .with_timeout(Duration::from_millis(cfg.timeout_ms))
        .with_metadata(metadata(cfg))
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled());
    if let Some(c) = compression(cfg) {
        b = b.with_compression(c);
    }
    if let Some(tls) = tonic_tls(cfg)? {
        b = b.with_tls_config(tls);
    }
    Ok(b)
}

/// The settings every HTTP/protobuf exporter gets, logs or metrics alike.
fn http_settings<B: WithExportConfig + WithHttpConfig>(b: B, cfg: &OtlpConfig, signal: &str) -> Result<B, OtlpError> {
    let mut b = b
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(cfg.signal_url(signal))
        .with_timeout(Duration::from_millis(cfg.timeout_ms))
        .with_headers(cfg.headers.iter().cloned().collect())
        .with_http_client(http_client(cfg)?)
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled());
    if let Some(c) = compression(cfg) {
        b = b.with_compression(c);
    }
    Ok(b)
}

/// Builds the log exporter (inside the exporter thread's runtime).
pub fn log_exporter(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::LogExporter, OtlpError> {
    let b = opentelemetry_otlp::LogExporter::builder();
    match cfg.protocol {
        OtlpProtocol::Grpc => tonic_settings(b.with_tonic(), cfg, "logs")?.build(),
        OtlpProtocol::HttpProtobuf => http_settings(b.with_http(), cfg, "logs")?.build(),
    }
    .map_err(|e| build_error("logs", cfg, e))
}

fn metric_exporter(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::MetricExporter, OtlpError> {
    let b = opentelemetry_otlp::MetricExporter::builder();
    match cfg.protocol {
        OtlpProtocol::Grpc => {
            tonic_settings(b.with_tonic(), cfg, "metrics")?.with_temporality(Temporality::Cumulative).build()
        }
        OtlpProtocol::HttpProtobuf => {
            http_settings(b.with_http(), cfg, "metrics")?.with_temporality(Temporality::Cumulative).build()
        }
    }
    .map_err(|e| build_error("metrics", cfg, e))
}

/// A `ManualReader` the exporter thread keeps a handle on after giving it to the provider.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// A meter provider whose instruments are natgw's counters, read at collection time.
fn counter_metrics(resource: Resource, all: Vec<Arc<Counters>>) -> (SdkMeterProvider, Arc<ManualReader>) {
    let reader = Arc::new(ManualReader::builder().with_temporality(Temporality::Cumulative).build());
    let provider =
        SdkMeterProvider::builder().with_resource(resource).with_reader(SharedReader(reader.clone())).build();
    let meter = provider.meter("natgw");
    let all = Arc::new(all);
    let mut families: Vec<(&'static str, Vec<Counter>)> = Vec::new();
    for &c in Counter::ALL {
        let base = c.metric().0;
        match families.iter_mut().find(|(b, _)| *b == base) {
            Some((_, v)) => v.push(c),
            None => families.push((base, vec![c])),
        }
    }
    for (base, members) in families {
        let all = all.clone();
        let gauge = members[0].is_gauge();
        let unit = members[0].unit();
        let observe = move |members: &[Counter]| -> Vec<(u64, Vec<KeyValue>)> {
            members
                .iter()
                .map(|&c| {
                    let v: u64 = all.iter().map(|w| w.get(c)).sum();
                    let attrs = c.metric().1.map(|r| vec![KeyValue::new("reason", r)]).unwrap_or_default();
                    (v, attrs)
                })
                .collect()
        };
        if gauge {
            meter
                .u64_observable_gauge(base)
                .with_unit(unit)
                .with_callback(move |o| {
                    for (v, a) in observe(&members) {
                        o.observe(v, &a)
                    }
                })
                .build();
        } else {
            meter
                .u64_observable_counter(base)
                .with_unit(unit)
                .with_callback(move |o| {
                    for (v, a) in observe(&members) {
                        o.observe(v, &a)
                    }
                })
                .build();
        }
    }
    (provider, reader)
}

/// Turns a record into an OTLP log record.
fn log_record(logger: &opentelemetry_sdk::logs::SdkLogger, r: &ExportRecord, now: SystemTime) -> SdkLogRecord {
    let mut lr = logger.create_log_record();
    lr.set_event_name("natgw.flow");
    lr.set_timestamp(SystemTime::UNIX_EPOCH + Duration::from_nanos(r.time_unix_ns));
    lr.set_observed_timestamp(now);
    lr.set_severity_number(Severity::Info);
    lr.set_severity_text("INFO");
    let action = match r.accepted {
        Some(true) => "ACCEPT",
        Some(false) => "REJECT",
        None => "-",
    };
    let reason = match r.get("natgw.flow.end_reason") {
        Some(Value::Str(s)) => s.as_str(),
        _ => "-",
    };
    lr.set_body(AnyValue::from(format!("flow {action} {reason}")));
    for (k, v) in &r.attributes {
        let v = match v {
            Value::Str(s) => AnyValue::from(s.clone()),
            Value::Int(i) => AnyValue::Int(*i),
        };
        lr.add_attribute(k.clone(), v);
    }
    lr
}

/// Where the exporter stands, for logs: at most one line per 10 s while failing.
struct Health {
    failing_since: Option<Instant>,
    failures: u64,
    last_log: Option<Instant>,
}

impl Health {
    fn failed(&mut self, what: &str, url: &str, reason: &str) {
        self.failures += 1;
        self.failing_since.get_or_insert_with(Instant::now);
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.last_log = Some(Instant::now());
            tracing::warn!(
                "natgw: otlp: {what} to {url} failed ({} failures so far): {reason}; retrying",
                self.failures
            );
        }
    }
    fn ok(&mut self, url: &str, waiting: usize) {
        if let Some(since) = self.failing_since.take() {
            tracing::warn!(
                "natgw: otlp: {url} accepts exports again after {:.1} s and {} failed attempts; {waiting} records were waiting",
                since.elapsed().as_secs_f64(),
                self.failures
            );
            self.failures = 0;
            self.last_log = None;
        }
    }
}

/// The exporter thread's inputs.
pub struct OtlpExporter {
    pub cfg: OtlpConfig,
    /// Filled by the flow-log thread; its capacity is `otlp.buffer_records`.
    pub queue: Arc<ArrayQueue<ExportRecord>>,
    /// This thread's own counters.
    pub counters: Arc<Counters>,
    /// Every counter set, for the metrics.
    pub all: Vec<Arc<Counters>>,
}

/// How long the exporter keeps trying to deliver what is left when the gateway stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

impl OtlpExporter {
    /// Runs until `stop` is set and the queue is drained (or the grace period is over).
    pub fn run(self, stop: Arc<AtomicBool>) -> Result<(), OtlpError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(OtlpError::Runtime)?;
        let _enter = rt.enter();
        let cfg = &self.cfg;
        let resource = resource(cfg);
        let mut logs = if cfg.logs { Some(log_exporter(cfg)?) } else { None };
        if let Some(l) = logs.as_mut() {
            l.set_resource(&resource);
        }
        let metrics = if cfg.metrics_interval_ms > 0 {
            let exporter = metric_exporter(cfg)?;
            let (provider, reader) = counter_metrics(resource.clone(), self.all.clone());
            Some((exporter, provider, reader))
        } else {
            None
        };
        let provider = SdkLoggerProvider::builder().with_resource(resource.clone()).build();
        let scope = InstrumentationScope::builder("natgw").with_version(env!("CARGO_PKG_VERSION")).build();
        let logger = provider.logger_with_scope(scope.clone());
        let logs_url = cfg.signal_url("logs");
        let metrics_url = cfg.signal_url("metrics");
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let retry_initial = Duration::from_millis(cfg.retry_initial_ms);
        let retry_max = Duration::from_millis(cfg.retry_max_ms);
        let metrics_every = Duration::from_millis(cfg.metrics_interval_ms.max(1));

        let mut inflight: Vec<SdkLogRecord> = Vec::with_capacity(cfg.batch);
        let mut backoff = retry_initial;
        let mut next_attempt = Instant::now();
        let mut next_metrics = Instant::now() + metrics_every;
        let mut log_health = Health { failing_since: None, failures: 0, last_log: None };
        let mut metric_health = Health { failing_since: None, failures: 0, last_log: None };
        let mut stopping_since: Option<Instant> = None;

        loop {
            let stopping = stop.load(Ordering::Acquire);
            if stopping && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
                next_attempt = Instant::now();
                next_metrics = Instant::now();
            }
            if inflight.is_empty() {
                let now = SystemTime::now();
                while inflight.len() < cfg.batch {
                    match self.queue.pop() {
                        Some(r) => inflight.push(log_record(&logger, &r, now)),
                        None => break,
                    }
                }
            }
            if let Some(exporter) = logs.as_ref().filter(|_| !inflight.is_empty() && Instant::now() >= next_attempt) {
                let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> = inflight.iter().map(|r| (r, &scope)).collect();
                let result = rt.block_on(async {
                    match tokio::time::timeout(
                        timeout + Duration::from_millis(100),
                        exporter.export(LogBatch::new(&refs)),
                    )
                    .await
                    {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                    }
                });
                match result {
                    Ok(()) => {
                        self.counters.add(Counter::OtlpRecordsSent, inflight.len() as u64);
                        log_health.ok(&logs_url, self.queue.len());
                        inflight.clear();
                        backoff = retry_initial;
                    }
                    Err(reason) => {
                        self.counters.inc(Counter::OtlpExportRetries);
                        log_health.failed("log export", &logs_url, &reason);
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(retry_max);
                    }
                }
            } else if logs.is_none() && !inflight.is_empty() {
                inflight.clear();
            }
            if let Some((exporter, _, reader)) = metrics.as_ref().filter(|_| Instant::now() >= next_metrics) {
                next_metrics = Instant::now() + metrics_every;
                let mut rm = ResourceMetrics::default();
                let result = match reader.collect(&mut rm) {
                    Ok(()) => rt.block_on(async {
                        match tokio::time::timeout(timeout + Duration::from_millis(100), exporter.export(&rm)).await {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                        }
                    }),
                    Err(e) => Err(format!("collecting the counters: {e}")),
                };
                match result {
                    Ok(()) => {
                        self.counters.inc(Counter::OtlpMetricExports);
                        metric_health.ok(&metrics_url, 0);
                    }
                    Err(reason) => {
                        self.counters.inc(Counter::OtlpMetricExportErrors);
                        metric_health.failed("metric export", &metrics_url, &reason);
                    }
                }
            }
            self.counters.set(Counter::OtlpRecordsQueued, (self.queue.len() + inflight.len()) as u64);
            if let Some(since) = stopping_since {
                let drained = inflight.is_empty() && self.queue.is_empty();
                if drained || since.elapsed() >= SHUTDOWN_GRACE {
                    let lost = inflight.len() + self.queue.len();
                    if lost > 0 {
                        self.counters.add(Counter::OtlpRecordsDropped, lost as u64);
                        tracing::warn!("natgw: otlp: stopping with {lost} flow records the collector did not take");
                    }
                    self.counters.set(Counter::OtlpRecordsQueued, 0);
                    break;
                }
            }
            // Sleep inside the runtime so the connection tasks keep running.
            let idle = if !inflight.is_empty() && Instant::now() < next_attempt {
                (next_attempt - Instant::now()).min(Duration::from_millis(50))
            } else if inflight.is_empty() && self.queue.is_empty() {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            };
            if !idle.is_zero() {
                rt.block_on(tokio::time::sleep(idle));
            }
        }
        if let Some(l) = logs.as_ref() {
            let _ = l.shutdown();
        }
        if let Some((e, p, _)) = metrics.as_ref() {
            let _ = e.shutdown();
            let _ = p.shutdown();
        }
        Ok(())
    }
}

/// Queues records for the exporter; those that do not fit are dropped and counted.
pub fn enqueue(queue: &ArrayQueue<ExportRecord>, records: &[ExportRecord], counters: &Counters) {
    let mut dropped = 0u64;
    for r in records {
        if queue.push(r.clone()).is_err() {
            dropped += 1;
        }
    }
    if dropped > 0 {
        counters.add(Counter::OtlpRecordsDropped, dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_scheme_port_and_brackets() {
        assert_eq!(host_of("https://collector.lab:4317"), "collector.lab");
        assert_eq!(host_of("http://[::1]:4318"), "::1");
    }

    #[test]
    fn enqueue_counts_what_does_not_fit() {
        let q = ArrayQueue::new(2);
        let c = Counters::default();
        let r = ExportRecord { time_unix_ns: 1, accepted: Some(true), attributes: vec![] };
        enqueue(&q, &[r.clone(), r.clone(), r.clone()], &c);
        assert_eq!((q.len(), c.get(Counter::OtlpRecordsDropped)), (2, 1));
    }
}
