//! The session store contract. Policy `replace`: a user has at most one live session; a new
//! login ends the older one at once (refresh token dead, access tokens revoked, sockets closed
//! with 4001 through the revocation feed).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::revocation::Revocation;

/// What a successful login or refresh hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginGrant {
    pub user_id: String,
    pub sid: String,
    pub refresh_token: String,
}

/// A session as listed for its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub sid: String,
    pub device: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
}

/// Session store failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the refresh token is unknown, spent or expired")]
    InvalidRefreshToken,
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Lifetimes the store needs to know.
#[derive(Debug, Clone, Copy)]
pub struct SessionTtls {
    /// Access-token lifetime: how long a revoked session must stay in the revoked set.
    pub access: Duration,
    /// Refresh-token (and session) lifetime.
    pub refresh: Duration,
}

/// Where sessions live: Redis in the cluster, memory in standalone.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Starts a new session for the user, ending any older one (policy `replace`).
    async fn login(&self, user_id: &str, device: &str) -> Result<LoginGrant, SessionError>;
    /// Spends a refresh token and issues its successor in the same session.
    async fn refresh(&self, refresh_token: &str) -> Result<LoginGrant, SessionError>;
    /// Ends a session; its sockets close with `code`. Returns false if it was not live.
    async fn revoke(&self, sid: &str, code: u16) -> Result<bool, SessionError>;
    /// Whether the session stands.
    async fn is_live(&self, sid: &str) -> Result<bool, SessionError>;
    /// The user's live sessions.
    async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionInfo>, SessionError>;
    /// A feed of revocations. After subscribing (and after every reconnect to the store) it
    /// first replays the revocations still in force, so a listener never misses one.
    fn revocations(&self) -> broadcast::Receiver<Revocation>;
    /// Whether the store answers, for `/readyz`.
    async fn ping(&self) -> Result<(), SessionError>;
}

/// A fresh opaque refresh token: 256 random bits, base64url.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The only form in which a refresh token is stored.
pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh session id.
pub fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Unix seconds until which a session revoked now must stay in revoked sets.
pub fn revoked_until(ttls: &SessionTtls) -> i64 {
    let ttl = i64::try_from(ttls.access.as_secs()).unwrap_or(i64::MAX / 4);
    chrono::Utc::now().timestamp() + ttl + i64::try_from(crate::jwt::CLOCK_LEEWAY_SECS).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_long_and_stored_only_as_hashes() {
        let token = new_refresh_token();
        assert_eq!(token.len(), 43);
        let hash = hash_refresh_token(&token);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, token);
        assert_eq!(hash, hash_refresh_token(&token));
    }
}
