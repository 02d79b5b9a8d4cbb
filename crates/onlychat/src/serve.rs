//! The HTTP server every process runs: its routes, `/healthz`, `/readyz`, `/metrics`, and the
//! shutdown sequence (first SIGTERM/SIGINT drains, a second one exits at once).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use onlychat_chat_node::Node;
use onlychat_gateway::Gateway;
use onlychat_protocol::{ErrorCode, error_body};
use serde_json::json;

use crate::telemetry;

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

/// Serves `parts` on `listen` until a signal, then drains within `shutdown_timeout`.
pub async fn run(listen: &str, parts: Parts, shutdown_timeout: Duration) -> anyhow::Result<()> {
    telemetry::spawn_upkeep();
    let app_parts = parts.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new()
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
    .shutdown_timeout(shutdown_timeout.as_secs().max(1))
    .bind(listen)
    .with_context(|| format!("cannot listen on {listen}"))?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    tracing::info!(addresses = ?addrs, "listening");
    // Tests and tools read this line to learn the port when listening on :0.
    eprintln!(
        "onlychat listening on {}",
        addrs.first().map(ToString::to_string).unwrap_or_default()
    );
    let serving = tokio::spawn(server);
    wait_for_signal().await;
    tracing::info!("signal received; draining");
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("onlychat: second signal; exiting at once");
        std::process::exit(130);
    });
    if let Some(node) = &parts.node {
        let closed = node.drain();
        tracing::info!(closed, "sockets asked to close with 1012");
    }
    handle.stop(true).await;
    if let Some(node) = &parts.node
        && let Err(e) = node.flush(shutdown_timeout).await
    {
        tracing::error!(error = %e, "producer flush did not complete");
    }
    let _ = serving.await;
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
