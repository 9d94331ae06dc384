//! Logging and tracing: log lines on stderr (`HERALD_LOG` filters them) and,
//! when an OTLP endpoint is configured, Herald's spans exported over
//! OTLP/gRPC, one trace per push across processes (the context travels with
//! each message, `herald_proto::trace`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use std::io::IsTerminal;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetryConfig {
    /// OTLP/gRPC endpoint spans are exported to, e.g.
    /// `http://127.0.0.1:4317`; none: no export.
    pub(crate) otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0 to 1 (a trace begun upstream follows
    /// its caller's decision).
    pub(crate) sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: None, sample_ratio: 1.0 }
    }
}

impl TelemetryConfig {
    /// Checks the values, naming the key.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.sample_ratio),
            "telemetry.sample_ratio: must be between 0 and 1"
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            anyhow::ensure!(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                "telemetry.otlp_endpoint: {endpoint:?} is not an http:// or https:// URL"
            );
        }
        Ok(())
    }
}

/// What must be flushed at exit.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered; waits a bounded time.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "telemetry: spans not exported at exit");
        }
    }
}

/// Installs the global subscriber: stderr logs, plus span export when
/// `config` names an endpoint (call inside the Tokio runtime: the exporter
/// is built on it). `service` names this process in the traces.
pub(crate) fn init(config: Option<&TelemetryConfig>, service: &'static str) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // openraft narrates every election and snapshot at info.
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter);
    let provider = match config.and_then(|c| c.otlp_endpoint.as_deref().map(|e| (c, e))) {
        Some((config, endpoint)) => Some(provider(config, endpoint, service)?),
        None => None,
    };
    // Only Herald's own spans are exported: not the HTTP, gRPC and Raft
    // libraries' internals.
    let spans = provider.as_ref().map(|provider| {
        let targets = tracing_subscriber::filter::Targets::new().with_target("herald", tracing::Level::INFO);
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_filter(targets)
    });
    tracing_subscriber::registry().with(logs).with(spans).try_init()?;
    if let Some(endpoint) = config.and_then(|c| c.otlp_endpoint.as_deref()) {
        tracing::info!(endpoint, service, "telemetry: exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

fn provider(
    config: &TelemetryConfig,
    endpoint: &str,
    service: &'static str,
) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}
