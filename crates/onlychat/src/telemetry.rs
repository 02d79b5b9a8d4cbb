//! Logs (`RUST_LOG`, `ONLYCHAT_LOG_FORMAT=json`) and the Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The log filter when `RUST_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,librdkafka=off,rdkafka=off,actix_server=warn,sqlx=warn";

/// Keeps telemetry alive for the life of the process.
pub struct Telemetry;

/// Installs the log subscriber and the metrics recorder.
pub fn init() -> Telemetry {
    // librdkafka reports every failed reconnect (about ten a second per client while a broker
    // is away) at ERROR; onlychat logs broker trouble itself, rate-limited. `RUST_LOG` with
    // `librdkafka=warn,rdkafka=warn` brings them back when debugging the client.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = std::env::var("ONLYCHAT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    PROMETHEUS.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    });
    Telemetry
}

/// Starts the periodic upkeep the exporter needs (histogram buckets, idle series).
pub fn spawn_upkeep() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if let Some(Some(handle)) = PROMETHEUS.get() {
                handle.run_upkeep();
            }
        }
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    PROMETHEUS
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}
