//! The session store contract and its policies.
//!
//! - `replace` (default): a new login ends the user's older sessions at once (refresh token
//!   dead, access tokens revoked, sockets closed with 4001 through the revocation feed).
//! - `reject`: a login while another session is live answers 409 `session_active`. A session is
//!   live while it was issued or refreshed within one access-token lifetime. That also covers
//!   "has an open socket": a socket closes (4002) when its token expires unless it presents a
//!   newer token of the session, which only a refresh issues. A stale session is replaced.
//! - `multi:N`: up to N sessions; the oldest beyond N are ended with 4001.
//!
//! Refresh tokens rotate: each use spends the token and issues a random successor. The store
//! keeps the successor sealed under the spent token (see [`seal_successor`]), so concurrent
//! refreshes with one token within the reuse grace all get the same successor and the user is
//! not logged out by the race.
//! Presenting a spent token after the grace (or after its successor was itself used) is reuse:
//! the whole session is revoked (4003).

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
    #[error("another session of this user is live")]
    Active,
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Lifetimes the store needs to know.
#[derive(Debug, Clone, Copy)]
pub struct SessionTtls {
    /// Access-token lifetime: how long a revoked session must stay in the revoked set, and how
    /// long a session counts as live for policy `reject` after its last issue or refresh.
    pub access: Duration,
    /// Refresh-token (and session) lifetime.
    pub refresh: Duration,
    /// How long after a refresh the spent token still yields the same successor.
    pub reuse_grace: Duration,
}

/// How many sessions a user may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionPolicy {
    Replace,
    Reject,
    Multi(u32),
}

impl std::str::FromStr for SessionPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "replace" => Ok(Self::Replace),
            "reject" => Ok(Self::Reject),
            _ => text
                .strip_prefix("multi:")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=100).contains(n))
                .map(Self::Multi)
                .ok_or_else(|| {
                    format!("`{text}` is not replace, reject or multi:N with N in 1..=100")
                }),
        }
    }
}

impl SessionPolicy {
    /// The Lua-side name and limit.
    pub(crate) fn wire(self) -> (&'static str, u32) {
        match self {
            Self::Replace => ("replace", 1),
            Self::Reject => ("reject", 1),
            Self::Multi(n) => ("multi", n),
        }
    }
}

/// The one-time pad that seals a successor under the spent token it replaces.
fn successor_pad(spent: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"onlychat refresh successor seal\0")
        .chain_update(spent.as_bytes())
        .finalize()
        .into()
}

/// Seals a (random) successor refresh token under the token it replaces, so a repeat of the
/// refresh within the grace can get the same successor back while the store keeps neither in
/// clear: only whoever presents the spent token can open the seal, and the store holds just
/// the spent token's hash. The successor is random, so knowing a spent token reveals nothing
/// about later ones once the grace is over.
pub fn seal_successor(successor: &str, spent: &str) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut bytes = engine.decode(successor).unwrap_or_default();
    for (b, p) in bytes.iter_mut().zip(successor_pad(spent)) {
        *b ^= p;
    }
    engine.encode(bytes)
}

/// Opens a seal made by [`seal_successor`] with the spent token.
pub fn unseal_successor(seal: &str, spent: &str) -> Option<String> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut bytes = engine.decode(seal).ok()?;
    for (b, p) in bytes.iter_mut().zip(successor_pad(spent)) {
        *b ^= p;
    }
    Some(engine.encode(bytes))
}

/// Where sessions live: Redis in the cluster, memory in standalone.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Starts a new session for the user under the store's policy (`Active` under `reject`).
    async fn login(&self, user_id: &str, device: &str) -> Result<LoginGrant, SessionError>;
    /// Spends a refresh token and issues its successor in the same session; a spent token
    /// presented again after the grace revokes the session (4003).
    async fn refresh(&self, refresh_token: &str) -> Result<LoginGrant, SessionError>;
    /// The user a refresh token belongs to (live or spent-and-remembered), spending nothing:
    /// the gateway reads the user before it rotates, so a database outage cannot burn a token.
    async fn owner(&self, refresh_token: &str) -> Result<Option<String>, SessionError>;
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
    fn policies_parse_from_their_flag_values() {
        assert_eq!("replace".parse(), Ok(SessionPolicy::Replace));
        assert_eq!("reject".parse(), Ok(SessionPolicy::Reject));
        assert_eq!("multi:3".parse(), Ok(SessionPolicy::Multi(3)));
        assert!("multi:0".parse::<SessionPolicy>().is_err());
        assert!("many".parse::<SessionPolicy>().is_err());
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_spent_token() {
        let (spent, successor) = (new_refresh_token(), new_refresh_token());
        let seal = seal_successor(&successor, &spent);
        assert_ne!(seal, successor);
        assert_eq!(
            unseal_successor(&seal, &spent).as_deref(),
            Some(successor.as_str())
        );
        assert_ne!(
            unseal_successor(&seal, &new_refresh_token()).as_deref(),
            Some(successor.as_str())
        );
    }

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
