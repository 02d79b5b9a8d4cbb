//! The HTTP server every process runs: its listener (plain or TLS), CORS, its routes,
//! `/healthz`, `/readyz`, `/metrics`, and the shutdown sequence (first SIGTERM/SIGINT drains, a
//! second one exits at once).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::http::{Method, Uri, header};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use onlychat_chat_node::Node;
use onlychat_gateway::Gateway;
use onlychat_protocol::{ErrorCode, error_body};
use serde_json::json;

use crate::ConfigError;
use crate::config::ServeArgs;
use crate::telemetry;

/// How one process listens, read and checked from `ServeArgs` before anything else starts.
pub struct Listener {
    addr: String,
    tls: Option<rustls::ServerConfig>,
    origins: Vec<String>,
    shutdown_timeout: Duration,
    drain_window: Duration,
    request_head_timeout: Duration,
}

/// Longest the trace exporter may take to send its last spans at exit.
const TRACE_FLUSH: Duration = Duration::from_secs(1);
/// Kept free before the deadline so the process is gone by then, not just leaving.
const EXIT_MARGIN: Duration = Duration::from_millis(500);
/// The drain window when none is set (and the shutdown timeout is at least twice as long).
const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_secs(10);
/// Time kept back from the shutdown deadline for flushing the producer and the trace exporter.
const FLUSH_RESERVE: Duration = Duration::from_secs(2);

impl Listener {
    /// Loads the TLS files and checks the origins; a bad setting is a one-line `ConfigError`.
    pub fn new(args: &ServeArgs, default_addr: &str) -> anyhow::Result<Self> {
        let origins = allowed_origins(args);
        if let Some(bad) = origins.iter().find(|o| !is_origin(o)) {
            return Err(config_error(format!(
                "--allowed-origins (ONLYCHAT_ALLOWED_ORIGINS): {bad:?} is not an origin like \
                 https://chat.example or http://127.0.0.1:3000 (scheme and host, no path); \
                 leave the list empty to allow any"
            )));
        }
        // A window that was not set follows the timeout, so any timeout works on its own.
        let drain_window = args
            .drain_window
            .unwrap_or_else(|| default_drain_window(args.shutdown_timeout));
        if args.drain_window.is_some() && drain_window + FLUSH_RESERVE > args.shutdown_timeout {
            return Err(config_error(format!(
                "--drain-window (ONLYCHAT_DRAIN_WINDOW) {drain_window:?} must be at least \
                 {FLUSH_RESERVE:?} shorter than --shutdown-timeout (ONLYCHAT_SHUTDOWN_TIMEOUT) \
                 {:?}: the time left answers in-flight sends and flushes the producer",
                args.shutdown_timeout
            )));
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
            (Some(_), None) => {
                return Err(config_error(
                    "--tls-key (ONLYCHAT_TLS_KEY) is required with --tls-cert (ONLYCHAT_TLS_CERT)",
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "--tls-cert (ONLYCHAT_TLS_CERT) is required with --tls-key (ONLYCHAT_TLS_KEY)",
                ));
            }
        };
        Ok(Self {
            addr: args
                .listen
                .clone()
                .unwrap_or_else(|| default_addr.to_owned()),
            tls,
            origins,
            shutdown_timeout: args.shutdown_timeout,
            drain_window,
            request_head_timeout: args.request_head_timeout,
        })
    }
}

/// Half the shutdown timeout, at most 10 s, and never into the flush reserve.
fn default_drain_window(shutdown_timeout: Duration) -> Duration {
    (shutdown_timeout / 2)
        .min(DEFAULT_DRAIN_WINDOW)
        .min(shutdown_timeout.saturating_sub(FLUSH_RESERVE))
}

/// `--allowed-origins` without blanks; empty means any origin.
pub fn allowed_origins(args: &ServeArgs) -> Vec<String> {
    args.allowed_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect()
}

fn config_error(message: impl Into<String>) -> anyhow::Error {
    ConfigError(message.into()).into()
}

/// An origin as browsers send it: `http(s)://host[:port]`, nothing after the authority (a
/// trailing slash or path would never match an `Origin` header).
fn is_origin(text: &str) -> bool {
    let Ok(uri) = text.parse::<Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && !text.ends_with('/')
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
}

/// The rustls server settings from PEM files, with the ring provider (the one already linked
/// for sqlx; no second crypto library).
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    const CERT: &str = "--tls-cert (ONLYCHAT_TLS_CERT)";
    const KEY: &str = "--tls-key (ONLYCHAT_TLS_KEY)";
    let pem_error = |flag: &str, path: &Path, section: &str, e: pem::Error| {
        let reason = match e {
            pem::Error::Io(e) => format!("cannot read it: {e}"),
            pem::Error::NoItemsFound => format!("no {section} section in it"),
            e => format!("not valid PEM: {e}"),
        };
        config_error(format!("{flag}: {}: {reason}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| pem_error(CERT, cert, "CERTIFICATE", e))?;
    if chain.is_empty() {
        return Err(pem_error(
            CERT,
            cert,
            "CERTIFICATE",
            pem::Error::NoItemsFound,
        ));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(KEY, key, "PRIVATE KEY", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| {
            let reason = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate".to_owned()
                }
                e => e.to_string(),
            };
            config_error(format!("{CERT} and {KEY}: {reason}"))
        })
}

/// CORS for the whole app. Preflights are answered here; a request from an origin not on a
/// non-empty list is still served but gets no CORS headers (the browser then withholds the
/// response), so the node's own `Origin` check can answer a WebSocket upgrade with 403.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .block_on_origin_mismatch(false)
        .max_age(3600);
    if origins.is_empty() {
        // Echoes the request's Origin (never `*`); no credentials are involved (bearer tokens).
        return cors.allow_any_origin();
    }
    origins.iter().fold(cors, |cors, o| cors.allowed_origin(o))
}

/// What one process serves.
#[derive(Clone, Default)]
pub struct Parts {
    pub gateway: Option<Arc<Gateway>>,
    pub node: Option<Arc<Node>>,
}

impl Parts {
    async fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(gateway) = &self.gateway {
            reasons.extend(gateway.not_ready_reasons().await);
        }
        if let Some(node) = &self.node {
            reasons.extend(node.not_ready_reasons().await);
        }
        reasons
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

async fn readyz(parts: web::Data<Parts>) -> HttpResponse {
    let reasons = parts.not_ready_reasons().await;
    if reasons.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "not_ready", "reasons": reasons}))
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(telemetry::render())
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(error_body(ErrorCode::NotFound, "no such endpoint"))
}

/// Serves `parts` on the listener until a signal, then drains within its shutdown timeout.
pub async fn run(listener: Listener, parts: Parts) -> anyhow::Result<()> {
    telemetry::spawn_upkeep();
    let (shutdown_timeout, drain_window) = (listener.shutdown_timeout, listener.drain_window);
    let app_parts = parts.clone();
    let origins = listener.origins.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .wrap(cors(&origins))
            .app_data(web::Data::new(app_parts.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
        if let Some(gateway) = &app_parts.gateway {
            app = app.configure(|cfg| gateway.configure(cfg));
        }
        if let Some(node) = &app_parts.node {
            app = app.configure(|cfg| node.configure(cfg));
        }
        app.default_service(web::to(not_found))
    })
    .disable_signals()
    .client_request_timeout(listener.request_head_timeout)
    .shutdown_timeout(shutdown_timeout.as_secs().max(1));
    let listen = &listener.addr;
    let tls = listener.tls.is_some();
    let server = match listener.tls {
        Some(tls) => server.bind_rustls_0_23(listen, tls),
        None => server.bind(listen),
    }
    .with_context(|| format!("cannot listen on {listen}"))?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    tracing::info!(addresses = ?addrs, tls, origins = ?listener.origins, "listening");
    // Tests and tools read this line to learn the port when listening on :0.
    eprintln!(
        "onlychat listening on {}",
        addrs.first().map(ToString::to_string).unwrap_or_default()
    );
    let serving = tokio::spawn(server);
    wait_for_signal().await;
    let now = tokio::time::Instant::now();
    // A timeout too large for the clock (days of them) means "no deadline" in practice.
    let deadline = now
        .checked_add(shutdown_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    if parts.node.is_some() {
        tracing::info!(
            ?drain_window,
            ?shutdown_timeout,
            "signal received; draining"
        );
    } else {
        tracing::info!(
            ?shutdown_timeout,
            "signal received; finishing in-flight requests"
        );
    }
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("onlychat: second signal; exiting at once");
        std::process::exit(130);
    });
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline - EXIT_MARGIN / 2).await;
        eprintln!("onlychat: shutdown deadline ({shutdown_timeout:?}) reached; exiting");
        std::process::exit(1);
    });
    if let Some(node) = &parts.node {
        let spread = node.drain(drain_window);
        tracing::info!(spread, "closing sockets with 1012 over the drain window");
        // The sockets close over the window, then answer their in-flight sends; wait for the
        // last of them, keeping the reserve for the flushes below.
        let sockets_gone = deadline - FLUSH_RESERVE;
        while node.connection_count() > 0 && tokio::time::Instant::now() < sockets_gone {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(open = node.connection_count(), "sockets closed");
    }
    // In-flight HTTP requests finish; the listener takes no more.
    handle.stop(true).await;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    if let Some(node) = &parts.node
        && let Err(e) = node.flush(left()).await
    {
        tracing::error!(error = %e, "producer flush did not complete");
    }
    let _ = serving.await;
    // Spans still queued get a moment; a collector that does not answer gets no more.
    telemetry::shutdown(left().saturating_sub(EXIT_MARGIN).min(TRACE_FLUSH)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; keep serving.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
