//! Revoked sessions as a node or a gateway sees them: an in-memory set fed by the session
//! store's revocation feed, so checking a token costs no round trip to Redis (and still works
//! while Redis is away).

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::Claims;

/// A session that ended, and the close code its sockets get (4000, 4001 or 4003).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub sid: String,
    pub user_id: String,
    pub code: u16,
    /// Unix seconds after which no access token of the session can still be valid.
    pub until: i64,
}

/// The sessions revoked while their access tokens may still be unexpired.
#[derive(Debug, Default)]
pub struct RevokedSet {
    inner: RwLock<HashMap<String, (u16, i64)>>,
    /// Tokens issued before this (unix seconds) count as revoked: a process that keeps its
    /// sessions in memory (standalone) sets it to its start.
    issued_from: Option<i64>,
}

impl RevokedSet {
    /// A set that also refuses every token issued before `issued_from`.
    pub fn issued_from(issued_from: Option<i64>) -> Self {
        Self {
            issued_from,
            ..Self::default()
        }
    }

    /// The close code for a token whose session no longer stands, or `None` if it stands:
    /// its session was revoked, or it was issued before [`RevokedSet::issued_from`] (4003).
    pub fn code_for_token(&self, claims: &Claims) -> Option<u16> {
        self.code_for(&claims.sid).or_else(|| {
            self.issued_from
                .filter(|from| claims.iat < *from)
                .map(|_| onlychat_protocol::close::REVOKED)
        })
    }

    /// Applies `feed` to this set until the feed closes.
    pub async fn follow(&self, mut feed: broadcast::Receiver<Revocation>) {
        loop {
            match feed.recv().await {
                Ok(revocation) => self.insert(&revocation),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(
                        missed,
                        "revocation feed lagged; some revoked tokens may pass"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Records a revocation and forgets the ones whose tokens have all expired.
    pub fn insert(&self, revocation: &Revocation) {
        let now = chrono::Utc::now().timestamp();
        let mut map = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (_, until)| *until >= now);
        map.insert(revocation.sid.clone(), (revocation.code, revocation.until));
    }

    /// The close code for a revoked session, or `None` if it stands.
    pub fn code_for(&self, sid: &str) -> Option<u16> {
        let map = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(sid).map(|(code, _)| *code)
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no revocation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_sessions_are_remembered_until_their_tokens_expire() {
        let set = RevokedSet::default();
        let now = chrono::Utc::now().timestamp();
        set.insert(&Revocation {
            sid: "old".into(),
            user_id: "u".into(),
            code: 4001,
            until: now - 10,
        });
        set.insert(&Revocation {
            sid: "s".into(),
            user_id: "u".into(),
            code: 4003,
            until: now + 60,
        });
        assert_eq!(set.code_for("s"), Some(4003));
        assert_eq!(set.code_for("old"), None);
        assert_eq!(set.code_for("other"), None);
    }
}
