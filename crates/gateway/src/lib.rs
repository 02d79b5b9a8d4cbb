//! The HTTP API of PROTOCOL.md section 2: accounts and tokens (`routes/auth.rs`), users
//! (`routes/users.rs`), room history (`routes/rooms.rs`), administration (`routes/admin.rs`),
//! the public keys (`routes/mod.rs`). Every error is an [`ApiError`] with the shared JSON body.
#![forbid(unsafe_code)]

mod bearer;
mod error;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use onlychat_auth::{JwtKeys, Limit, RateLimiter, RevokedSet, SessionStore};
use onlychat_store::Store;

pub use error::ApiError;

/// How long each dependency may take to answer a readiness check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest accepted JSON body.
pub const MAX_JSON_BYTES: usize = 16 * 1024;

/// What the gateway talks to.
#[derive(Clone)]
pub struct Gateway {
    pub store: Store,
    pub sessions: Arc<dyn SessionStore>,
    pub keys: JwtKeys,
    /// Refresh-token lifetime, reported as `refresh_expires_in`.
    pub refresh_ttl: Duration,
    /// The message log's epoch, which history pages are read from and report.
    pub epoch: String,
    /// Where login rate-limit buckets live (Redis in the cluster).
    pub limiter: Arc<dyn RateLimiter>,
    pub login_limits: LoginLimits,
    /// Sessions that ended, fed by the session store's revocation feed
    /// ([`Gateway::watch_revocations`], or the chat node's set when both run in one process):
    /// every endpoint that takes a bearer token refuses their tokens, also the ones that do
    /// not read the session store (history, users).
    pub revoked: Arc<RevokedSet>,
}

/// Login attempts allowed per username and per client address.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub per_user: Limit,
    pub per_ip: Limit,
}

impl Gateway {
    /// Mounts the API on an actix app.
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()))
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_JSON_BYTES)
                    .error_handler(error::json_error),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
            )
            .configure(routes::configure);
    }

    /// Keeps [`Gateway::revoked`] up to date for as long as the process runs.
    pub fn watch_revocations(self: &Arc<Self>) {
        let gateway = self.clone();
        tokio::spawn(async move {
            let feed = gateway.sessions.revocations();
            gateway.revoked.follow(feed).await;
        });
    }

    /// Why the gateway is not ready; empty when it is. The database and the session store are
    /// asked at once, each bounded by [`READY_CHECK_TIMEOUT`], so `/readyz` answers promptly
    /// even while one of them hangs (a pool acquire alone may wait 5 s). Kafka is not a
    /// readiness condition here: the API serves logins and history without it.
    pub async fn not_ready_reasons(&self) -> Vec<String> {
        let (database, sessions) = tokio::join!(
            ready_check("database", self.store.ping()),
            ready_check("session store", self.sessions.ping()),
        );
        database.into_iter().chain(sessions).collect()
    }
}

/// One readiness check under [`READY_CHECK_TIMEOUT`]: `None` if it passed, else the reason.
async fn ready_check<E: std::fmt::Display>(
    what: &str,
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Option<String> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{what}: {e}")),
        Err(_) => Some(format!("{what}: no answer within {READY_CHECK_TIMEOUT:?}")),
    }
}
