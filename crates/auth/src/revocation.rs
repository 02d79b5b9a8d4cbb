//! Revoked sessions as a node sees them: an in-memory set fed by the session store's
//! revocation feed, so admitting a socket costs no round trip to Redis.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

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
}

impl RevokedSet {
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
