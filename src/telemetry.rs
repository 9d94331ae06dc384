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
    /// Give MQTT 5 subscribers a traced message's context as the user
    /// property `traceparent` (gateways).
    pub(crate) mqtt_user_property: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: None, sample_ratio: 1.0, mqtt_user_property: false }
    }
}

impl TelemetryConfig {
    /// The endpoint to export to, if any (an empty one is none: how an
    /// unset variable in a compose file or chart arrives).
    fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())
    }

    /// Checks the values, naming the key.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.sample_ratio),
            "telemetry.sample_ratio: must be between 0 and 1"
        );
        if let Some(endpoint) = self.endpoint() {
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
    let endpoint = config.and_then(|c| c.endpoint().map(|e| (c, e)));
    let provider = match endpoint {
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
    if let Some((_, endpoint)) = endpoint {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_an_empty_endpoint_is_none() {
        let config = |endpoint: &str, sample_ratio: f64| TelemetryConfig {
            otlp_endpoint: Some(endpoint.to_owned()),
            sample_ratio,
            mqtt_user_property: false,
        };
        assert!(config("http://collector:4317", 0.5).validate().is_ok());
        assert_eq!(config("", 1.0).endpoint(), None, "an unset variable exports nothing");
        assert!(config("", 1.0).validate().is_ok());
        let error = config("collector:4317", 1.0).validate().expect_err("no scheme").to_string();
        assert!(error.contains("telemetry.otlp_endpoint"), "{error}");
        let error = config("http://collector:4317", 1.5).validate().expect_err("ratio").to_string();
        assert!(error.contains("telemetry.sample_ratio"), "{error}");
    }

    #[test]
    fn a_router_and_a_gateway_read_it_from_their_variables() {
        let vars: Vec<(String, String)> = [
            ("HERALD_TELEMETRY_OTLP_ENDPOINT", "http://collector:4317"),
            ("HERALD_TELEMETRY_SAMPLE_RATIO", "0.25"),
            ("HERALD_TELEMETRY_MQTT_USER_PROPERTY", "true"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let router = crate::cluster_config::RouterConfig::load(None, &vars).expect("router");
        assert_eq!(router.telemetry.endpoint(), Some("http://collector:4317"));
        assert_eq!(router.telemetry.sample_ratio, 0.25);
        let gateway = crate::cluster_config::GatewayConfig::load(None, &vars).expect("gateway");
        assert!(gateway.telemetry.mqtt_user_property);
    }
}
