//! Logs (`RUST_LOG`, `ONLYCHAT_LOG_FORMAT=json`), the Prometheus recorder behind `/metrics`,
//! and OpenTelemetry traces exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static TRACES: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Histogram buckets (seconds) of every `*_seconds` metric: sub-millisecond fan-out up to
/// multi-second broker outages.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
    PROMETHEUS.get_or_init(|| {
        let installed = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder);
        match installed {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
    describe_metrics();
    init_traces();
    Telemetry
}

/// `# HELP` text for every metric (README "metrics" has the same list).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "onlychat_connections",
        "Authenticated sockets open on this node."
    );
    describe_counter!("onlychat_joins_total", "Room joins.");
    describe_counter!("onlychat_frames_in_total", "Client frames read.");
    describe_counter!("onlychat_messages_in_total", "Sends taken from clients.");
    describe_counter!(
        "onlychat_messages_out_total",
        "Frames from the log (messages, presence, typing) queued to sockets."
    );
    describe_histogram!(
        "onlychat_deliver_latency_seconds",
        Unit::Seconds,
        "From the sending node accepting a message to its fan-out on this node."
    );
    describe_histogram!(
        "onlychat_produce_seconds",
        Unit::Seconds,
        "Kafka produce until the broker acknowledged (acks=all)."
    );
    describe_gauge!(
        "onlychat_consumer_lag_messages",
        "Records in the log not yet read, per consumer and partition."
    );
    describe_counter!(
        "onlychat_history_stored_total",
        "Messages stored by the history writer."
    );
    describe_histogram!(
        "onlychat_history_batch_seconds",
        Unit::Seconds,
        "Time to store one history batch."
    );
    describe_counter!(
        "onlychat_evictions_total",
        "Sockets closed because their session ended."
    );
    describe_counter!(
        "onlychat_revocations_total",
        "Session revocations received, by close code."
    );
    describe_counter!(
        "onlychat_auth_failures_total",
        "Refused logins and upgrades, by reason."
    );
    describe_counter!(
        "onlychat_ws_closes_total",
        "WebSocket closes sent by the server, by code."
    );
    describe_counter!(
        "onlychat_redis_errors_total",
        "Failed or timed-out Redis operations, by op."
    );
    describe_counter!(
        "onlychat_db_errors_total",
        "Failed database operations, by op."
    );
    describe_counter!(
        "onlychat_upgrades_refused_total",
        "WebSocket upgrades refused before the upgrade, by reason."
    );
    describe_counter!(
        "onlychat_dead_peers_total",
        "Sockets dropped for two silent heartbeats."
    );
    describe_counter!(
        "onlychat_connection_panics_total",
        "Frame handlers that panicked (socket closed with 1011)."
    );
    describe_counter!(
        "onlychat_duplicates_dropped_total",
        "Resent messages read from the log and dropped as duplicates."
    );
    describe_counter!(
        "onlychat_replays_from_store_total",
        "Joins whose replay was read from the history store."
    );
}

/// Creates a role's unlabelled series at zero, so that a fresh process exports them before
/// its first event (an alert on `rate(x[5m]) == 0` needs the series to exist).
pub fn zero_series(names: &[&'static str]) {
    for name in names {
        if name.ends_with("_total") {
            metrics::counter!(*name).absolute(0);
        } else {
            metrics::gauge!(*name).set(0.0);
        }
    }
}

/// The series a chat node exports from its start.
pub const NODE_SERIES: &[&str] = &[
    "onlychat_connections",
    "onlychat_joins_total",
    "onlychat_frames_in_total",
    "onlychat_messages_in_total",
    "onlychat_messages_out_total",
    "onlychat_evictions_total",
    "onlychat_dead_peers_total",
    "onlychat_connection_panics_total",
    "onlychat_duplicates_dropped_total",
];

/// The series a history writer exports from its start.
pub const WRITER_SERIES: &[&str] = &["onlychat_history_stored_total"];

/// Whether an OTLP trace endpoint is configured (and tracing not switched off with
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
fn traces_configured() -> bool {
    let is =
        |name: &str, value: &str| otel_var(name).is_some_and(|v| v.eq_ignore_ascii_case(value));
    trace_endpoint().is_some()
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// A standard `OTEL_*` variable, trimmed; unset and blank are the same.
fn otel_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The traces endpoint as configured: the signal's own variable first, then the base one.
fn trace_endpoint() -> Option<String> {
    otel_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| otel_var("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Installs the global tracer provider (batching, OTLP/HTTP protobuf; endpoint, headers,
/// timeout and `OTEL_SERVICE_NAME`/`OTEL_RESOURCE_ATTRIBUTES` from the standard variables) and
/// the W3C trace-context propagator. The batch exporter runs on its own thread with a bounded
/// queue: an unreachable collector drops spans, it never slows or grows the process.
fn init_traces() {
    if !traces_configured() {
        return;
    }
    let endpoint = trace_endpoint().unwrap_or_default();
    if endpoint.starts_with("https:") {
        tracing::warn!(
            endpoint,
            "the OTLP exporter has no TLS built in; spans to an https:// endpoint are lost \
             (send them to a collector beside the process over http://)"
        );
    }
    let protocol = otel_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| otel_var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
        tracing::warn!(
            protocol,
            "only the http/protobuf OTLP protocol is built in; exporting with it anyway"
        );
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            tracing::warn!(error = %e, "OTLP trace exporter not started; traces are off");
            return;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("onlychat");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    let _ = TRACES.set(provider);
    tracing::info!(endpoint, "exporting traces over OTLP/HTTP (protobuf)");
}

/// Turns on the chat path's spans for node `node_id`, if traces are exported.
pub fn enable_chat_traces(node_id: &str) {
    if TRACES.get().is_some() {
        onlychat_chat_node::trace::enable(node_id);
    }
}

/// Exports the spans still queued, waiting at most `within` (the exporter's own thread
/// carries on if it is stuck; the process exits regardless).
pub async fn shutdown(within: Duration) {
    let Some(provider) = TRACES.get().cloned() else {
        return;
    };
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
    match tokio::time::timeout(within, flushed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace exporter did not shut down cleanly"),
        Ok(Err(_)) | Err(_) => tracing::warn!("trace exporter shutdown timed out"),
    }
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
