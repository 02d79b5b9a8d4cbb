//! Sessions in Redis. Each state change is one Lua script, so fifty simultaneous logins of one
//! user serialize inside Redis and leave exactly one session.
//!
//! Keys (under the configured prefix):
//! - `user:{user_id}:sessions` sorted set of session ids by creation time
//! - `session:{sid}` hash: user_id, device, created_at, last_seen_at, refresh (token hash)
//! - `refresh:{hash}` the session id a refresh token belongs to
//! - `revoked` sorted set of revocations (JSON) scored by the time their tokens expire
//! - channel `revocations` carries each revocation (JSON) to every node

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2};
use redis::{AsyncCommands, IntoConnectionInfo, Script};
use tokio::sync::broadcast;

use crate::revocation::Revocation;
use crate::session::{
    LoginGrant, SessionError, SessionInfo, SessionPolicy, SessionStore, SessionTtls,
    hash_refresh_token, new_refresh_token, new_session_id, revoked_until, seal_successor,
    unseal_successor,
};

/// Ends one session: drops its refresh token and record, records and publishes the revocation.
const END_SESSION_LUA: &str = r"
local function end_session(p, sid, code, expires)
  local skey = p .. 'session:' .. sid
  local uid = redis.call('HGET', skey, 'user_id')
  if not uid then return 0 end
  local rh = redis.call('HGET', skey, 'refresh')
  if rh then redis.call('DEL', p .. 'refresh:' .. rh) end
  redis.call('DEL', skey)
  redis.call('ZREM', p .. 'user:' .. uid .. ':sessions', sid)
  local rev = cjson.encode({sid = sid, user_id = uid, code = tonumber(code), ['until'] = tonumber(expires)})
  redis.call('ZADD', p .. 'revoked', expires, rev)
  redis.call('PUBLISH', p .. 'revocations', rev)
  return 1
end
";

/// ARGV: prefix, user_id, sid, refresh_hash, device, now_ms, ttl_s, revoked_until, now_s,
/// policy (`replace` | `reject` | `multi`), limit, access_ttl_ms. Returns 1, or 0 when `reject`
/// finds a live session.
const LOGIN_LUA: &str = r"
local p, uid, sid, rh, device, now, ttl, expires, now_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local policy, limit, access_ms = ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12])
local ukey = p .. 'user:' .. uid .. ':sessions'
local live = {}
for _, old in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  if redis.call('EXISTS', p .. 'session:' .. old) == 1 then table.insert(live, old) else redis.call('ZREM', ukey, old) end
end
local ending = #live
if policy == 'reject' then
  for _, old in ipairs(live) do
    local seen = tonumber(redis.call('HGET', p .. 'session:' .. old, 'last_seen_at'))
    if seen and tonumber(now) - seen < access_ms then return 0 end
  end
elseif policy == 'multi' then
  ending = #live - (limit - 1)
end
for i = 1, ending do end_session(p, live[i], 4001, expires) end
redis.call('ZREMRANGEBYSCORE', p .. 'revoked', '-inf', '(' .. now_s)
redis.call('ZADD', ukey, now, sid)
redis.call('EXPIRE', ukey, ttl)
local skey = p .. 'session:' .. sid
redis.call('HSET', skey, 'user_id', uid, 'device', device, 'created_at', now, 'last_seen_at', now, 'refresh', rh)
redis.call('EXPIRE', skey, ttl)
redis.call('SET', p .. 'refresh:' .. rh, sid, 'EX', ttl)
return 1
";

/// ARGV: prefix, old_hash, new_hash, now_ms, ttl_s, grace_ms, revoked_until, seal. Returns
/// {sid, user_id} for a rotation, {sid, user_id, seal} for a repeat within the grace while the
/// successor is still the session's token (the caller opens the seal), or false; a spent token
/// presented otherwise ends the session with 4003.
const REFRESH_LUA: &str = r"
local p, old, new, now, ttl, grace, expires, seal = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
local sid = redis.call('GET', p .. 'refresh:' .. old)
if sid then
  redis.call('DEL', p .. 'refresh:' .. old)
  local skey = p .. 'session:' .. sid
  local uid = redis.call('HGET', skey, 'user_id')
  if not uid then return false end
  redis.call('HSET', skey, 'refresh', new, 'last_seen_at', now)
  redis.call('EXPIRE', skey, ttl)
  redis.call('EXPIRE', p .. 'user:' .. uid .. ':sessions', ttl)
  redis.call('SET', p .. 'refresh:' .. new, sid, 'EX', ttl)
  redis.call('SET', p .. 'spent:' .. old, sid .. ' ' .. now .. ' ' .. new .. ' ' .. seal, 'EX', ttl)
  return {sid, uid}
end
local spent = redis.call('GET', p .. 'spent:' .. old)
if not spent then return false end
local ssid, at, successor, sealed = string.match(spent, '^(%S+) (%d+) (%S+) (%S+)$')
if not ssid then return false end
local skey = p .. 'session:' .. ssid
local uid = redis.call('HGET', skey, 'user_id')
if not uid then return false end
if now - tonumber(at) < grace and redis.call('HGET', skey, 'refresh') == successor then
  return {ssid, uid, sealed}
end
end_session(p, ssid, 4003, expires)
return false
";

/// ARGV: prefix, token_hash. The user id of the session a refresh token (live, or spent and
/// still remembered) belongs to, or false; spends nothing.
const OWNER_LUA: &str = r"
local p, h = ARGV[1], ARGV[2]
local sid = redis.call('GET', p .. 'refresh:' .. h)
if not sid then
  local spent = redis.call('GET', p .. 'spent:' .. h)
  if spent then sid = string.match(spent, '^(%S+)') end
end
if not sid then return false end
return redis.call('HGET', p .. 'session:' .. sid, 'user_id')
";

/// ARGV: prefix, sid, code, revoked_until.
const REVOKE_LUA: &str = r"
return end_session(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
";

/// How long the revocation listener waits before its first reconnect, and at most between two.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);
const RESUBSCRIBE_DELAY_MAX: Duration = Duration::from_secs(2);
/// Bound on each step of (re)subscribing.
const FEED_STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// Hard bound on one session-store operation (a login, a refresh, a readiness ping), whatever
/// the connection manager does underneath: the caller answers 503 rather than hang.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// The connection manager's defaults retry a lost connection six times with exponential
/// backoff (up to ~12 s with jitter) while every command waits on it; a login must instead fail
/// within about a second when Redis is away. The next command after a failed reconnect starts
/// another one, so nothing is lost by giving up early. The response timeout (500 ms by default)
/// is raised so that a loaded but healthy Redis does not turn logins into 503s.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(400))
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
}

/// TCP keepalive on every connection to Redis. The revocation subscription is idle most of the
/// time; if Redis vanishes without closing the connection (host lost, network partition), the
/// kernel's probes find out within about 25 s and the feed resubscribes. A PING would do the
/// same but would be a Redis command, and a node must cost Redis nothing while it idles. The
/// user timeout bounds how long sent data may go unacknowledged.
fn with_keepalive(tcp: &TcpSettings) -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    tcp.clone()
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(10))
}

/// Runs one Redis command (or script) under [`OP_TIMEOUT`].
async fn bounded<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, SessionError> {
    Ok(redis_within(OP_TIMEOUT, "session store", op).await?)
}

/// Runs one Redis operation, `what`, under `limit`: a Redis that does not answer becomes an I/O
/// error instead of a wait through the connection manager's whole reconnect backoff. Failures
/// are counted in `onlychat_redis_errors_total{op=what}`.
pub async fn redis_within<T>(
    limit: Duration,
    what: &'static str,
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    let result = tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer from Redis in time",
            what.to_owned(),
        )))
    });
    if result.is_err() {
        metrics::counter!("onlychat_redis_errors_total", "op" => what).increment(1);
    }
    result
}

/// Runs one step of the revocation feed under [`FEED_STEP_TIMEOUT`].
async fn step<T>(
    what: &'static str,
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    redis_within(FEED_STEP_TIMEOUT, what, op).await
}

/// Sessions kept in Redis, shared by every gateway and node.
pub struct RedisSessions {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    ttls: SessionTtls,
    policy: SessionPolicy,
    login: Script,
    refresh: Script,
    owner: Script,
    revoke: Script,
    feed: OnceLock<broadcast::Sender<Revocation>>,
}

impl RedisSessions {
    /// Connects to Redis; fails if it does not answer.
    pub async fn connect(
        url: &str,
        prefix: &str,
        ttls: SessionTtls,
        policy: SessionPolicy,
    ) -> Result<Arc<Self>, SessionError> {
        let info = url.into_connection_info()?;
        let tcp = with_keepalive(info.tcp_settings());
        let client = redis::Client::open(info.set_tcp_settings(tcp))?;
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config()).await?;
        Ok(Arc::new(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            ttls,
            policy,
            login: Script::new(&format!("{END_SESSION_LUA}{LOGIN_LUA}")),
            refresh: Script::new(&format!("{END_SESSION_LUA}{REFRESH_LUA}")),
            owner: Script::new(OWNER_LUA),
            revoke: Script::new(&format!("{END_SESSION_LUA}{REVOKE_LUA}")),
            feed: OnceLock::new(),
        }))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The store's connection to Redis (bounded reconnects, see `manager_config`), for other
    /// best-effort users of the same Redis such as a node's presence roster.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Login rate limits kept in the same Redis, under the same key prefix.
    pub fn limiter(&self) -> crate::limiter::RedisLimiter {
        crate::limiter::RedisLimiter::new(self.conn.clone(), &self.prefix)
    }

    /// Listens on the revocation channel for ever: subscribe, then replay the revocations in
    /// force, then forward each published one; on any error, reconnect and do it again. The
    /// replay after each (re)subscription covers revocations published while this process was
    /// not subscribed (Redis down, connection lost): their sockets close then.
    async fn listen(
        client: redis::Client,
        channel: String,
        revoked_key: String,
        tx: broadcast::Sender<Revocation>,
    ) {
        let mut failures = 0u32;
        loop {
            let mut subscribed = false;
            if let Err(e) =
                Self::listen_once(&client, &channel, &revoked_key, &tx, &mut subscribed).await
            {
                if subscribed {
                    failures = 0;
                }
                // The first loss is worth a warning; a Redis that stays away is not, each time.
                if failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, failures, "revocation feed lost; resubscribing");
                }
                failures += 1;
            }
            let backoff = RESUBSCRIBE_DELAY
                .saturating_mul(1 << failures.saturating_sub(1).min(4))
                .min(RESUBSCRIBE_DELAY_MAX);
            tokio::time::sleep(backoff).await;
        }
    }

    async fn listen_once(
        client: &redis::Client,
        channel: &str,
        revoked_key: &str,
        tx: &broadcast::Sender<Revocation>,
        subscribed: &mut bool,
    ) -> redis::RedisResult<()> {
        let mut pubsub = step("pubsub connect", client.get_async_pubsub()).await?;
        step("subscribe", pubsub.subscribe(channel)).await?;
        let mut conn = step("connect", client.get_multiplexed_async_connection()).await?;
        let now = chrono::Utc::now().timestamp();
        let in_force: Vec<String> =
            step("read revoked", conn.zrangebyscore(revoked_key, now, "+inf")).await?;
        drop(conn);
        *subscribed = true;
        tracing::info!(
            channel,
            in_force = in_force.len(),
            "revocation feed subscribed"
        );
        for text in in_force {
            if let Ok(revocation) = serde_json::from_str(&text) {
                let _ = tx.send(revocation);
            }
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Revocation>(&text) {
                Ok(revocation) => {
                    let _ = tx.send(revocation);
                }
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed revocation"),
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "revocation channel closed",
        )))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ttl_secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn login(&self, user_id: &str, device: &str) -> Result<LoginGrant, SessionError> {
        let sid = new_session_id();
        let refresh_token = new_refresh_token();
        let now = chrono::Utc::now();
        let mut conn = self.conn.clone();
        let (policy, limit) = self.policy.wire();
        let created: i64 = bounded(
            self.login
                .arg(&self.prefix)
                .arg(user_id)
                .arg(&sid)
                .arg(hash_refresh_token(&refresh_token))
                .arg(device)
                .arg(now.timestamp_millis())
                .arg(ttl_secs(self.ttls.refresh))
                .arg(revoked_until(&self.ttls))
                .arg(now.timestamp())
                .arg(policy)
                .arg(limit)
                .arg(millis(self.ttls.access))
                .invoke_async(&mut conn),
        )
        .await?;
        if created == 0 {
            return Err(SessionError::Active);
        }
        Ok(LoginGrant {
            user_id: user_id.to_owned(),
            sid,
            refresh_token,
        })
    }

    async fn refresh(&self, refresh_token: &str) -> Result<LoginGrant, SessionError> {
        let next = new_refresh_token();
        let mut conn = self.conn.clone();
        let found: Option<Vec<String>> = bounded(
            self.refresh
                .arg(&self.prefix)
                .arg(hash_refresh_token(refresh_token))
                .arg(hash_refresh_token(&next))
                .arg(chrono::Utc::now().timestamp_millis())
                .arg(ttl_secs(self.ttls.refresh))
                .arg(millis(self.ttls.reuse_grace))
                .arg(revoked_until(&self.ttls))
                .arg(seal_successor(&next, refresh_token))
                .invoke_async(&mut conn),
        )
        .await?;
        match found.as_deref() {
            Some([sid, user_id]) => Ok(LoginGrant {
                user_id: user_id.clone(),
                sid: sid.clone(),
                refresh_token: next,
            }),
            Some([sid, user_id, seal]) => Ok(LoginGrant {
                user_id: user_id.clone(),
                sid: sid.clone(),
                refresh_token: unseal_successor(seal, refresh_token)
                    .ok_or(SessionError::InvalidRefreshToken)?,
            }),
            _ => Err(SessionError::InvalidRefreshToken),
        }
    }

    async fn revoke(&self, sid: &str, code: u16) -> Result<bool, SessionError> {
        let mut conn = self.conn.clone();
        let ended: i64 = bounded(
            self.revoke
                .arg(&self.prefix)
                .arg(sid)
                .arg(code)
                .arg(revoked_until(&self.ttls))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(ended == 1)
    }

    async fn owner(&self, refresh_token: &str) -> Result<Option<String>, SessionError> {
        let mut conn = self.conn.clone();
        bounded(
            self.owner
                .arg(&self.prefix)
                .arg(hash_refresh_token(refresh_token))
                .invoke_async(&mut conn),
        )
        .await
    }

    async fn is_live(&self, sid: &str) -> Result<bool, SessionError> {
        let mut conn = self.conn.clone();
        bounded(conn.exists(self.key(&format!("session:{sid}")))).await
    }

    async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionInfo>, SessionError> {
        let mut conn = self.conn.clone();
        let sids: Vec<String> =
            bounded(conn.zrange(self.key(&format!("user:{user_id}:sessions")), 0, -1)).await?;
        let mut out = Vec::with_capacity(sids.len());
        for sid in sids {
            let fields: std::collections::HashMap<String, String> =
                bounded(conn.hgetall(self.key(&format!("session:{sid}")))).await?;
            let ms = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
            if fields.contains_key("user_id") {
                out.push(SessionInfo {
                    device: fields.get("device").cloned().unwrap_or_default(),
                    created_at_ms: ms("created_at"),
                    last_seen_at_ms: ms("last_seen_at"),
                    sid,
                });
            }
        }
        Ok(out)
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        let tx = self.feed.get_or_init(|| {
            let (tx, _) = broadcast::channel(4096);
            tokio::spawn(Self::listen(
                self.client.clone(),
                self.key("revocations"),
                self.key("revoked"),
                tx.clone(),
            ));
            tx
        });
        tx.subscribe()
    }

    async fn ping(&self) -> Result<(), SessionError> {
        let mut conn = self.conn.clone();
        let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}
