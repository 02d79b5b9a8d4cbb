//! Login abuse limits: a token bucket per key (a username, a client address), shared by every
//! gateway through Redis in the cluster, in memory in standalone.
//!
//! The bucket is GCRA (the "generic cell rate algorithm"): one timestamp per key, the
//! theoretical arrival time `tat`. A request at `now` passes if `tat - now` leaves room for one
//! more within `burst`; then `tat` moves one interval (`1 / rate`) forward. That is a bucket of
//! `burst` tokens refilled at `rate` per second, kept in a single value that expires by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::session::SessionError;

/// Longest a limiter check waits for Redis before the login answers 503.
const LIMITER_TIMEOUT: Duration = Duration::from_secs(2);

/// A limit: `rate` events per second sustained, `burst` back to back. `rate == 0` is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: u32,
}

impl Limit {
    /// Whether this limit applies at all.
    pub fn is_on(&self) -> bool {
        self.rate > 0.0
    }

    fn interval_ms(&self) -> f64 {
        1000.0 / self.rate
    }
}

/// Where buckets live.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one token from `key`'s bucket: `None` if it passed, else how long until it would.
    async fn take(&self, key: &str, limit: Limit) -> Result<Option<Duration>, SessionError>;
}

/// One GCRA step on `tat` (ms); returns the new `tat`, or the wait in ms.
fn gcra(tat: Option<f64>, now: f64, limit: Limit) -> Result<f64, f64> {
    let interval = limit.interval_ms();
    let tat = tat.unwrap_or(now).max(now);
    let allowed_at = tat + interval - f64::from(limit.burst.max(1)) * interval;
    if now < allowed_at {
        return Err(allowed_at - now);
    }
    Ok(tat + interval)
}

fn wait(ms: f64) -> Duration {
    Duration::from_millis(ms.ceil().max(1.0) as u64)
}

/// Buckets in one process (standalone, unit tests).
#[derive(Default)]
pub struct MemoryLimiter {
    tats: Mutex<HashMap<String, f64>>,
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn take(&self, key: &str, limit: Limit) -> Result<Option<Duration>, SessionError> {
        if !limit.is_on() {
            return Ok(None);
        }
        let now = chrono::Utc::now().timestamp_millis() as f64;
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tats.len() > 100_000 {
            // Buckets whose tat has passed are full again: forgetting them changes nothing.
            tats.retain(|_, tat| *tat > now);
        }
        match gcra(tats.get(key).copied(), now, limit) {
            Ok(tat) => {
                tats.insert(key.to_owned(), tat);
                Ok(None)
            }
            Err(ms) => Ok(Some(wait(ms))),
        }
    }
}

/// ARGV: key, now_ms, interval_ms, burst. Returns 0 if the request passes, else the wait in ms.
const TAKE_LUA: &str = r"
local key, now, interval, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', key)) or now
if tat < now then tat = now end
local allowed_at = tat + interval - burst * interval
if now < allowed_at then return math.max(1, math.ceil(allowed_at - now)) end
local new_tat = tat + interval
redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
";

/// Buckets in Redis, shared by every gateway: one script call per check.
pub struct RedisLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
}

impl RedisLimiter {
    /// Buckets under `<prefix>limit:`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}limit:"),
            script: Script::new(TAKE_LUA),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn take(&self, key: &str, limit: Limit) -> Result<Option<Duration>, SessionError> {
        if !limit.is_on() {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(format!("{}{key}", self.prefix))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(limit.interval_ms())
            .arg(limit.burst.max(1));
        let waited: i64 = crate::redis_within(
            LIMITER_TIMEOUT,
            "login limiter",
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok((waited > 0).then(|| wait(waited as f64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let limit = Limit {
            rate: 1.0,
            burst: 3,
        };
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 0.0, limit).expect("within the burst"));
        }
        let waited = gcra(tat, 0.0, limit).expect_err("burst spent");
        assert!((waited - 1000.0).abs() < 1e-6, "one interval: {waited}");
        assert!(
            gcra(tat, 1000.0, limit).is_ok(),
            "a token came back after 1 s"
        );
    }

    #[tokio::test]
    async fn an_off_limit_never_refuses_and_keys_do_not_share_a_bucket() {
        let limiter = MemoryLimiter::default();
        let off = Limit {
            rate: 0.0,
            burst: 0,
        };
        for _ in 0..100 {
            assert_eq!(limiter.take("k", off).await.expect("take"), None);
        }
        let one = Limit {
            rate: 0.01,
            burst: 1,
        };
        assert_eq!(limiter.take("a", one).await.expect("take"), None);
        assert!(limiter.take("a", one).await.expect("take").is_some());
        assert_eq!(limiter.take("b", one).await.expect("take"), None);
    }
}
