//! In-memory sessions for `onlychat standalone` and unit tests. Same semantics as Redis.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::revocation::Revocation;
use crate::session::{
    LoginGrant, SessionError, SessionInfo, SessionPolicy, SessionStore, SessionTtls,
    hash_refresh_token, new_refresh_token, new_session_id, revoked_until, seal_successor,
    unseal_successor,
};

#[derive(Debug, Clone)]
struct Session {
    user_id: String,
    info: SessionInfo,
    refresh_hash: String,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    by_refresh: HashMap<String, String>,
    /// Spent refresh-token hash -> (session, when it was spent in ms, sealed successor).
    spent: HashMap<String, (String, i64, String)>,
    revoked: Vec<Revocation>,
}

/// Sessions in this process's memory.
pub struct MemorySessions {
    state: Mutex<State>,
    feed: broadcast::Sender<Revocation>,
    ttls: SessionTtls,
    policy: SessionPolicy,
}

impl MemorySessions {
    pub fn new(ttls: SessionTtls, policy: SessionPolicy) -> Self {
        Self {
            state: Mutex::default(),
            feed: broadcast::channel(1024).0,
            ttls,
            policy,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn end(&self, state: &mut State, sid: &str, code: u16) -> bool {
        let Some(session) = state.sessions.remove(sid) else {
            return false;
        };
        state.by_refresh.remove(&session.refresh_hash);
        let revocation = Revocation {
            sid: sid.to_owned(),
            user_id: session.user_id,
            code,
            until: revoked_until(&self.ttls),
        };
        let now = chrono::Utc::now().timestamp();
        state.revoked.retain(|r| r.until >= now);
        state.revoked.push(revocation.clone());
        // No receiver is fine: nobody has a socket to close.
        let _ = self.feed.send(revocation);
        true
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn login(&self, user_id: &str, device: &str) -> Result<LoginGrant, SessionError> {
        let mut state = self.lock();
        let mut live: Vec<(i64, i64, String)> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.user_id == user_id)
            .map(|(sid, s)| (s.info.created_at_ms, s.info.last_seen_at_ms, sid.clone()))
            .collect();
        live.sort();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let access_ms = i64::try_from(self.ttls.access.as_millis()).unwrap_or(i64::MAX);
        let ending = match self.policy {
            SessionPolicy::Reject if live.iter().any(|(_, seen, _)| now_ms - seen < access_ms) => {
                return Err(SessionError::Active);
            }
            SessionPolicy::Multi(n) => live.len().saturating_sub(n as usize - 1),
            _ => live.len(),
        };
        for (_, _, sid) in live.into_iter().take(ending) {
            self.end(&mut state, &sid, onlychat_protocol::close::REPLACED);
        }
        let sid = new_session_id();
        let refresh_token = new_refresh_token();
        let refresh_hash = hash_refresh_token(&refresh_token);
        let now = chrono::Utc::now().timestamp_millis();
        let info = SessionInfo {
            sid: sid.clone(),
            device: device.to_owned(),
            created_at_ms: now,
            last_seen_at_ms: now,
        };
        state.by_refresh.insert(refresh_hash.clone(), sid.clone());
        state.sessions.insert(
            sid.clone(),
            Session {
                user_id: user_id.to_owned(),
                info,
                refresh_hash,
            },
        );
        Ok(LoginGrant {
            user_id: user_id.to_owned(),
            sid,
            refresh_token,
        })
    }

    async fn refresh(&self, refresh_token: &str) -> Result<LoginGrant, SessionError> {
        let mut state = self.lock();
        let spent_hash = hash_refresh_token(refresh_token);
        let successor = new_refresh_token();
        let successor_hash = hash_refresh_token(&successor);
        let now = chrono::Utc::now().timestamp_millis();
        let Some(sid) = state.by_refresh.remove(&spent_hash) else {
            // Spent before: the same successor within the grace, else reuse ends the session.
            let (sid, at, seal) = state
                .spent
                .get(&spent_hash)
                .cloned()
                .ok_or(SessionError::InvalidRefreshToken)?;
            let grace = i64::try_from(self.ttls.reuse_grace.as_millis()).unwrap_or(0);
            let session = state
                .sessions
                .get(&sid)
                .ok_or(SessionError::InvalidRefreshToken)?;
            let sealed = unseal_successor(&seal, refresh_token).unwrap_or_default();
            if now - at < grace && session.refresh_hash == hash_refresh_token(&sealed) {
                let user_id = session.user_id.clone();
                return Ok(LoginGrant {
                    user_id,
                    sid,
                    refresh_token: sealed,
                });
            }
            self.end(&mut state, &sid, onlychat_protocol::close::REVOKED);
            return Err(SessionError::InvalidRefreshToken);
        };
        let session = state
            .sessions
            .get_mut(&sid)
            .ok_or(SessionError::InvalidRefreshToken)?;
        session.refresh_hash.clone_from(&successor_hash);
        session.info.last_seen_at_ms = now;
        let user_id = session.user_id.clone();
        state.by_refresh.insert(successor_hash, sid.clone());
        let refresh_ms = i64::try_from(self.ttls.refresh.as_millis()).unwrap_or(i64::MAX);
        state.spent.retain(|_, (_, at, _)| now - *at < refresh_ms);
        state.spent.insert(
            spent_hash,
            (sid.clone(), now, seal_successor(&successor, refresh_token)),
        );
        Ok(LoginGrant {
            user_id,
            sid,
            refresh_token: successor,
        })
    }

    async fn revoke(&self, sid: &str, code: u16) -> Result<bool, SessionError> {
        let mut state = self.lock();
        Ok(self.end(&mut state, sid, code))
    }

    async fn owner(&self, refresh_token: &str) -> Result<Option<String>, SessionError> {
        let state = self.lock();
        let hash = hash_refresh_token(refresh_token);
        let sid = state
            .by_refresh
            .get(&hash)
            .or_else(|| state.spent.get(&hash).map(|(sid, _, _)| sid));
        Ok(sid
            .and_then(|sid| state.sessions.get(sid))
            .map(|s| s.user_id.clone()))
    }

    async fn is_live(&self, sid: &str) -> Result<bool, SessionError> {
        Ok(self.lock().sessions.contains_key(sid))
    }

    async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionInfo>, SessionError> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.user_id == user_id)
            .map(|s| s.info.clone())
            .collect())
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        let state = self.lock();
        let rx = self.feed.subscribe();
        for revocation in &state.revoked {
            let _ = self.feed.send(revocation.clone());
        }
        rx
    }

    async fn ping(&self) -> Result<(), SessionError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store_with(policy: SessionPolicy, reuse_grace: Duration) -> MemorySessions {
        let ttls = SessionTtls {
            access: Duration::from_secs(60),
            refresh: Duration::from_secs(600),
            reuse_grace,
        };
        MemorySessions::new(ttls, policy)
    }

    fn store() -> MemorySessions {
        store_with(SessionPolicy::Replace, Duration::ZERO)
    }

    #[tokio::test]
    async fn a_second_login_evicts_the_first_session() {
        let store = store();
        let mut feed = store.revocations();
        let first = store.login("u1", "laptop").await.expect("login");
        let second = store.login("u1", "phone").await.expect("login");
        assert!(!store.is_live(&first.sid).await.expect("live"));
        assert!(store.is_live(&second.sid).await.expect("live"));
        let revocation = feed.recv().await.expect("revocation");
        assert_eq!(
            (revocation.sid.as_str(), revocation.code),
            (first.sid.as_str(), 4001)
        );
        assert!(matches!(
            store.refresh(&first.refresh_token).await,
            Err(SessionError::InvalidRefreshToken)
        ));
    }

    #[tokio::test]
    async fn reusing_a_spent_refresh_token_revokes_the_session() {
        let store = store();
        let mut feed = store.revocations();
        let grant = store.login("u1", "").await.expect("login");
        let next = store.refresh(&grant.refresh_token).await.expect("refresh");
        assert_eq!(next.sid, grant.sid);
        assert!(
            store.refresh(&grant.refresh_token).await.is_err(),
            "reuse outside the grace"
        );
        assert_eq!(feed.recv().await.expect("revocation").code, 4003);
        assert!(
            store.refresh(&next.refresh_token).await.is_err(),
            "the successor died with the session"
        );
    }

    #[tokio::test]
    async fn a_repeat_within_the_grace_gets_the_same_successor() {
        let store = store_with(SessionPolicy::Replace, Duration::from_secs(10));
        let grant = store.login("u1", "").await.expect("login");
        let a = store.refresh(&grant.refresh_token).await.expect("refresh");
        let b = store.refresh(&grant.refresh_token).await.expect("repeat");
        assert_eq!(a, b);
        let c = store
            .refresh(&a.refresh_token)
            .await
            .expect("the successor works");
        assert!(
            store.refresh(&grant.refresh_token).await.is_err(),
            "its successor was used: reuse"
        );
        assert!(
            store.refresh(&c.refresh_token).await.is_err(),
            "and the session is gone"
        );
    }

    #[tokio::test]
    async fn reject_refuses_a_second_live_session_and_multi_keeps_the_newest_n() {
        let reject = store_with(SessionPolicy::Reject, Duration::ZERO);
        reject.login("u1", "").await.expect("login");
        assert!(matches!(
            reject.login("u1", "").await,
            Err(SessionError::Active)
        ));
        assert!(
            reject.login("u2", "").await.is_ok(),
            "other users are unaffected"
        );
        let multi = store_with(SessionPolicy::Multi(2), Duration::ZERO);
        let first = multi.login("u1", "a").await.expect("login");
        let second = multi.login("u1", "b").await.expect("login");
        let third = multi.login("u1", "c").await.expect("login");
        assert!(
            !multi.is_live(&first.sid).await.expect("live"),
            "the oldest is evicted"
        );
        assert!(
            multi.is_live(&second.sid).await.expect("live")
                && multi.is_live(&third.sid).await.expect("live")
        );
    }
}
