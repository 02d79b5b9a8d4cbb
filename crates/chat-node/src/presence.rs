//! Who is in a room across the cluster, for `joined.online`.
//!
//! In the cluster each node writes its members into a Redis sorted set per room
//! (`presence:{room}`, member `node|user`, score = expiry), refreshes them every heartbeat and
//! removes them on leave; entries of a node that died expire after three heartbeats. In
//! standalone the node's own registry is the whole truth. If Redis is unreachable, `online`
//! falls back to this node's members rather than failing the join.
//!
//! Every roster command is bounded ([`ROSTER_TIMEOUT`]): the connection manager would otherwise
//! make a `join` wait through its whole reconnect backoff (seconds) while Redis is away, and a
//! join must not stall a socket's frame loop for the sake of a best-effort roster.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::aio::ConnectionManager;

/// How long a join, leave or refresh waits for the roster before going on without it.
pub const ROSTER_TIMEOUT: Duration = Duration::from_millis(1000);

/// Runs one roster command under [`ROSTER_TIMEOUT`].
async fn bounded<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    onlychat_auth::redis_within(ROSTER_TIMEOUT, "roster", op).await
}

/// Where the cluster-wide roster lives.
#[derive(Clone)]
pub enum Presence {
    /// Only this process exists (standalone).
    Local,
    Redis {
        conn: ConnectionManager,
        prefix: String,
        node_id: String,
        ttl: Duration,
    },
}

impl Presence {
    fn key(prefix: &str, room: &str) -> String {
        format!("{prefix}presence:{room}")
    }

    fn expiry(ttl: Duration) -> i64 {
        chrono::Utc::now().timestamp_millis()
            + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Records that `user_id` is in `room` on this node and returns everyone present.
    pub async fn enter(&self, room: &str, user_id: &str, local: Vec<String>) -> Vec<String> {
        let Self::Redis {
            conn,
            prefix,
            node_id,
            ttl,
        } = self
        else {
            return local;
        };
        let key = Self::key(prefix, room);
        let now = chrono::Utc::now().timestamp_millis();
        let mut conn = conn.clone();
        let result: redis::RedisResult<Vec<String>> = bounded(
            redis::pipe()
                .zadd(&key, format!("{node_id}|{user_id}"), Self::expiry(*ttl))
                .ignore()
                .zrembyscore(&key, "-inf", now)
                .ignore()
                .pexpire(&key, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
                .ignore()
                .zrange(&key, 0, -1)
                .query_async::<(Vec<String>,)>(&mut conn),
        )
        .await
        .map(|(members,)| members);
        match result {
            Ok(members) => {
                let mut users: BTreeSet<String> = members
                    .iter()
                    .filter_map(|m| m.split_once('|'))
                    .map(|(_, u)| u.to_owned())
                    .collect();
                users.extend(local);
                users.into_iter().collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence roster unavailable; answering with this node's members");
                local
            }
        }
    }

    /// Records that `user_id` has no connection left in `room` on this node.
    pub async fn exit(&self, room: &str, user_id: &str) {
        let Self::Redis {
            conn,
            prefix,
            node_id,
            ..
        } = self
        else {
            return;
        };
        let mut conn = conn.clone();
        let result: redis::RedisResult<i64> = bounded(
            redis::cmd("ZREM")
                .arg(Self::key(prefix, room))
                .arg(format!("{node_id}|{user_id}"))
                .query_async(&mut conn),
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "presence roster unavailable; entry will expire");
        }
    }

    /// Re-asserts every membership of this node (called each heartbeat).
    pub async fn refresh(&self, memberships: Vec<(String, Vec<String>)>) {
        let Self::Redis {
            conn,
            prefix,
            node_id,
            ttl,
        } = self
        else {
            return;
        };
        if memberships.is_empty() {
            return;
        }
        let expiry = Self::expiry(*ttl);
        let mut pipe = redis::pipe();
        for (room, users) in &memberships {
            let key = Self::key(prefix, room);
            for user in users {
                pipe.zadd(&key, format!("{node_id}|{user}"), expiry)
                    .ignore();
            }
            pipe.pexpire(&key, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
                .ignore();
        }
        let mut conn = conn.clone();
        if let Err(e) = bounded(pipe.query_async::<()>(&mut conn)).await {
            tracing::warn!(error = %e, "presence refresh failed");
        }
    }
}
