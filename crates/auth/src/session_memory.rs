//! In-memory sessions for `onlychat standalone` and unit tests. Same semantics as Redis.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::revocation::Revocation;
use crate::session::{
    LoginGrant, SessionError, SessionInfo, SessionStore, SessionTtls, hash_refresh_token,
    new_refresh_token, new_session_id, revoked_until,
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
    revoked: Vec<Revocation>,
}

/// Sessions in this process's memory.
pub struct MemorySessions {
    state: Mutex<State>,
    feed: broadcast::Sender<Revocation>,
    ttls: SessionTtls,
}

impl MemorySessions {
    pub fn new(ttls: SessionTtls) -> Self {
        Self {
            state: Mutex::default(),
            feed: broadcast::channel(1024).0,
            ttls,
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
        let old: Vec<String> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.user_id == user_id)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in old {
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
        let sid = state
            .by_refresh
            .remove(&hash_refresh_token(refresh_token))
            .ok_or(SessionError::InvalidRefreshToken)?;
        let refresh_token = new_refresh_token();
        let refresh_hash = hash_refresh_token(&refresh_token);
        let session = state
            .sessions
            .get_mut(&sid)
            .ok_or(SessionError::InvalidRefreshToken)?;
        session.refresh_hash.clone_from(&refresh_hash);
        session.info.last_seen_at_ms = chrono::Utc::now().timestamp_millis();
        let user_id = session.user_id.clone();
        state.by_refresh.insert(refresh_hash, sid.clone());
        Ok(LoginGrant {
            user_id,
            sid,
            refresh_token,
        })
    }

    async fn revoke(&self, sid: &str, code: u16) -> Result<bool, SessionError> {
        let mut state = self.lock();
        Ok(self.end(&mut state, sid, code))
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

    fn store() -> MemorySessions {
        MemorySessions::new(SessionTtls {
            access: Duration::from_secs(60),
            refresh: Duration::from_secs(600),
        })
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
    async fn a_refresh_token_is_spent_by_its_use() {
        let store = store();
        let grant = store.login("u1", "").await.expect("login");
        let next = store.refresh(&grant.refresh_token).await.expect("refresh");
        assert_eq!(next.sid, grant.sid);
        assert!(store.refresh(&grant.refresh_token).await.is_err());
        assert!(store.refresh(&next.refresh_token).await.is_ok());
    }
}
