//! Message history: idempotent batched writes with the log's dedupe rule, pages for the HTTP
//! API, position ranges for replay, and how far the writer got per partition.
//!
//! The dedupe rule is the one every consumer of the log applies (chat nodes in memory, here in
//! SQL): a message is a duplicate if an earlier message of the same room, sender and
//! `client_id` lies within the dedupe window (by the envelope timestamp). Because it depends on
//! the log alone, every node and the history agree on which copy of a resend counts.

use std::collections::HashMap;

use onlychat_protocol::ChatMessage;
use sqlx::Row;

use crate::{Store, StoreError};

/// Runs the same SQL text on whichever pool the store holds. Every statement here uses `$N`
/// placeholders in increasing order, which SQLite binds by position just as PostgreSQL does.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

const INSERT_UNLESS_DUPLICATE: &str = "INSERT INTO messages
       (id, room, epoch, position, from_user, from_name, body, client_id, ts, ts_ms)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
     WHERE NOT EXISTS (
       SELECT 1 FROM messages m WHERE m.room = $2 AND m.from_user = $5 AND m.client_id = $8
         AND m.epoch = $3 AND m.position < $4 AND m.ts_ms > $10 - $11)
     ON CONFLICT DO NOTHING";

const UPSERT_OFFSET: &str =
    "INSERT INTO history_offsets (epoch, log_partition, next_position) VALUES ($1, $2, $3)
     ON CONFLICT (epoch, log_partition) DO UPDATE SET next_position = excluded.next_position
     WHERE history_offsets.next_position < excluded.next_position";

type DedupeKey = (String, String, String, String);

fn dedupe_key(m: &ChatMessage) -> DedupeKey {
    (
        m.epoch.clone(),
        m.room.clone(),
        m.from.clone(),
        m.client_id.clone(),
    )
}

/// PostgreSQL: one query for the latest stored original of each key in the batch, the dedupe
/// rule in memory (exactly as the nodes apply it), then one bulk insert.
async fn pg_append(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &[LoggedMessage],
    window_ms: i64,
) -> Result<usize, StoreError> {
    if batch.is_empty() {
        return Ok(0);
    }
    // A correlated subquery per key, so each lookup is one probe of `messages_dedupe`
    // whatever the planner guesses about the unnested keys.
    const LATEST: &str = "SELECT k.epoch, k.room, k.from_user, k.client_id,
          (SELECT MAX(m.ts_ms) FROM messages m WHERE m.room = k.room AND m.from_user = k.from_user
             AND m.client_id = k.client_id AND m.epoch = k.epoch)
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS k(epoch, room, from_user, client_id)";
    const INSERT: &str = "INSERT INTO messages (id, room, epoch, position, from_user, from_name, body, client_id, ts, ts_ms)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::bigint[])
        ON CONFLICT DO NOTHING";
    let column = |f: fn(&ChatMessage) -> &String| {
        batch
            .iter()
            .map(|l| f(&l.message).clone())
            .collect::<Vec<_>>()
    };
    let rows = sqlx::query(LATEST)
        .bind(column(|m| &m.epoch))
        .bind(column(|m| &m.room))
        .bind(column(|m| &m.from))
        .bind(column(|m| &m.client_id))
        .fetch_all(&mut **tx)
        .await?;
    let mut originals: HashMap<DedupeKey, i64> = rows
        .iter()
        .filter_map(|r| {
            Some((
                (r.get(0), r.get(1), r.get(2), r.get(3)),
                r.get::<Option<i64>, _>(4)?,
            ))
        })
        .collect();
    let mut fresh: Vec<&LoggedMessage> = Vec::with_capacity(batch.len());
    for logged in batch {
        let key = dedupe_key(&logged.message);
        if originals
            .get(&key)
            .is_some_and(|ts| *ts > logged.ts_ms - window_ms)
        {
            continue; // a resend, or a row stored by an earlier run of this batch
        }
        originals.insert(key, logged.ts_ms);
        fresh.push(logged);
    }
    if fresh.is_empty() {
        return Ok(0);
    }
    let text = |f: fn(&ChatMessage) -> &String| {
        fresh
            .iter()
            .map(|l| f(&l.message).clone())
            .collect::<Vec<_>>()
    };
    let done = sqlx::query(INSERT)
        .bind(text(|m| &m.id))
        .bind(text(|m| &m.room))
        .bind(text(|m| &m.epoch))
        .bind(
            fresh
                .iter()
                .map(|l| to_i64(l.message.position))
                .collect::<Vec<_>>(),
        )
        .bind(text(|m| &m.from))
        .bind(text(|m| &m.from_name))
        .bind(text(|m| &m.body))
        .bind(text(|m| &m.client_id))
        .bind(text(|m| &m.ts))
        .bind(fresh.iter().map(|l| l.ts_ms).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(0))
}

/// One message read back from the log, with the partition it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    pub partition: i32,
    pub message: ChatMessage,
    /// The envelope timestamp in unix milliseconds (for the dedupe window).
    pub ts_ms: i64,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn message_of<R: Row>(row: &R) -> ChatMessage
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    ChatMessage {
        id: row.get("id"),
        room: row.get("room"),
        epoch: row.get("epoch"),
        position: u64::try_from(row.get::<i64, _>("position")).unwrap_or(0),
        from: row.get("from_user"),
        from_name: row.get("from_name"),
        body: row.get("body"),
        client_id: row.get("client_id"),
        ts: row.get("ts"),
    }
}

impl Store {
    /// Stores a batch in one transaction, skipping duplicates (by id, and by the dedupe rule
    /// within `window_ms`), and records for each partition that every position up to
    /// `next_positions` is stored. Returns how many messages were new.
    pub async fn append_history(
        &self,
        batch: &[LoggedMessage],
        next_positions: &[(String, i32, u64)],
        window_ms: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let inserted = pg_append(&mut tx, batch, window_ms).await?;
                for (epoch, partition, next) in next_positions {
                    sqlx::query(UPSERT_OFFSET)
                        .bind(epoch)
                        .bind(partition)
                        .bind(to_i64(*next))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut inserted = 0;
                for logged in batch {
                    let m = &logged.message;
                    let done = sqlx::query(INSERT_UNLESS_DUPLICATE)
                        .bind(&m.id)
                        .bind(&m.room)
                        .bind(&m.epoch)
                        .bind(to_i64(m.position))
                        .bind(&m.from)
                        .bind(&m.from_name)
                        .bind(&m.body)
                        .bind(&m.client_id)
                        .bind(&m.ts)
                        .bind(logged.ts_ms)
                        .bind(window_ms)
                        .execute(&mut *tx)
                        .await?;
                    inserted += usize::try_from(done.rows_affected()).unwrap_or(0);
                }
                for (epoch, partition, next) in next_positions {
                    sqlx::query(UPSERT_OFFSET)
                        .bind(epoch)
                        .bind(partition)
                        .bind(to_i64(*next))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
        }
    }

    /// Every position of `partition` in `epoch` below the returned one is stored.
    pub async fn history_covered(&self, epoch: &str, partition: i32) -> Result<u64, StoreError> {
        const SQL: &str =
            "SELECT next_position FROM history_offsets WHERE epoch = $1 AND log_partition = $2";
        let next: Option<i64> = on_pool!(self, pool => {
            sqlx::query(SQL).bind(epoch).bind(partition).fetch_optional(pool).await?.map(|r| r.get(0))
        });
        Ok(next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// The highest stored position in `epoch` (standalone's log continues after it).
    pub async fn last_position(&self, epoch: &str) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(position), 0) FROM messages WHERE epoch = $1";
        let last: i64 =
            on_pool!(self, pool => sqlx::query(SQL).bind(epoch).fetch_one(pool).await?.get(0));
        Ok(u64::try_from(last).unwrap_or(0))
    }

    /// Every message of `epoch` stamped after `since_ts_ms`, in log order (at most `limit`).
    pub async fn messages_since(
        &self,
        epoch: &str,
        since_ts_ms: i64,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        const SQL: &str =
            "SELECT id, room, epoch, position, from_user, from_name, body, client_id, ts
            FROM messages WHERE epoch = $1 AND ts_ms > $2 ORDER BY position LIMIT $3";
        on_pool!(self, pool => {
            let rows = sqlx::query(SQL).bind(epoch).bind(since_ts_ms).bind(i64::from(limit)).fetch_all(pool).await?;
            Ok(rows.iter().map(message_of).collect())
        })
    }

    /// Messages of a room with `after < position <= upto`, oldest first, at most `limit`.
    pub async fn history_range(
        &self,
        room: &str,
        epoch: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        const SQL: &str =
            "SELECT id, room, epoch, position, from_user, from_name, body, client_id, ts
            FROM messages WHERE room = $1 AND epoch = $2 AND position > $3 AND position <= $4
            ORDER BY position LIMIT $5";
        on_pool!(self, pool => {
            let rows = sqlx::query(SQL)
                .bind(room)
                .bind(epoch)
                .bind(to_i64(after))
                .bind(to_i64(upto))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(message_of).collect())
        })
    }

    /// A page of a room's history with exclusive bounds. With `after`, the oldest `limit`
    /// after it; otherwise the newest `limit` before `before` (or overall). Oldest first.
    pub async fn history_page(
        &self,
        room: &str,
        epoch: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let ascending = after.is_some();
        let sql: &'static str = if ascending {
            "SELECT id, room, epoch, position, from_user, from_name, body, client_id, ts FROM messages
             WHERE room = $1 AND epoch = $2 AND position > $3 AND position < $4 ORDER BY position ASC LIMIT $5"
        } else {
            "SELECT id, room, epoch, position, from_user, from_name, body, client_id, ts FROM messages
             WHERE room = $1 AND epoch = $2 AND position > $3 AND position < $4 ORDER BY position DESC LIMIT $5"
        };
        let (low, high) = (to_i64(after.unwrap_or(0)), before.map_or(i64::MAX, to_i64));
        let mut messages: Vec<ChatMessage> = on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(room)
                .bind(epoch)
                .bind(low)
                .bind(high)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            rows.iter().map(message_of).collect()
        });
        let has_more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        if !ascending {
            messages.reverse();
        }
        Ok(Page { messages, has_more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(id: &str, position: u64, client_id: &str, ts_ms: i64) -> LoggedMessage {
        LoggedMessage {
            partition: 0,
            ts_ms,
            message: ChatMessage {
                room: "lobby".into(),
                id: id.into(),
                position,
                epoch: "e".into(),
                from: "u1".into(),
                from_name: "alice".into(),
                body: format!("body {id}"),
                ts: "2026-12-04T00:00:00.000Z".into(),
                client_id: client_id.into(),
            },
        }
    }

    async fn sqlite() -> (Store, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("onlychat-history-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("sqlite");
        store.migrate().await.expect("migrate");
        (store, path)
    }

    #[tokio::test]
    async fn history_is_idempotent_and_drops_resends_within_the_window() {
        let (store, path) = sqlite().await;
        let batch = vec![
            logged("a", 1, "c1", 1_000),
            logged("b", 2, "c1", 2_000),
            logged("c", 3, "c2", 2_000),
        ];
        let offsets = vec![("e".to_owned(), 0, 4)];
        assert_eq!(
            store
                .append_history(&batch, &offsets, 60_000)
                .await
                .expect("append"),
            2
        );
        // The same batch again (a writer restart) stores nothing new.
        assert_eq!(
            store
                .append_history(&batch, &offsets, 60_000)
                .await
                .expect("append"),
            0
        );
        // Outside the window the same client_id is a new message.
        let late = vec![logged("d", 5, "c1", 100_000)];
        assert_eq!(
            store
                .append_history(&late, &[("e".into(), 0, 6)], 60_000)
                .await
                .expect("append"),
            1
        );
        assert_eq!(store.history_covered("e", 0).await.expect("covered"), 6);
        assert_eq!(store.last_position("e").await.expect("last"), 5);
        let ids: Vec<String> = store
            .history_range("lobby", "e", 0, 10, 100)
            .await
            .expect("range")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["a", "c", "d"]);
        drop(store);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn pages_are_oldest_first_with_exclusive_bounds() {
        let (store, path) = sqlite().await;
        let batch: Vec<_> = (1..=10)
            .map(|i| logged(&format!("m{i}"), i, &format!("c{i}"), 0))
            .collect();
        store.append_history(&batch, &[], 1).await.expect("append");
        let positions = |p: &Page| p.messages.iter().map(|m| m.position).collect::<Vec<_>>();
        let newest = store
            .history_page("lobby", "e", None, None, 3)
            .await
            .expect("page");
        assert_eq!(
            (positions(&newest), newest.has_more),
            (vec![8, 9, 10], true)
        );
        let before = store
            .history_page("lobby", "e", None, Some(8), 3)
            .await
            .expect("page");
        assert_eq!(positions(&before), vec![5, 6, 7]);
        let after = store
            .history_page("lobby", "e", Some(7), None, 5)
            .await
            .expect("page");
        assert_eq!((positions(&after), after.has_more), (vec![8, 9, 10], false));
        let between = store
            .history_page("lobby", "e", Some(2), Some(5), 50)
            .await
            .expect("page");
        assert_eq!(positions(&between), vec![3, 4]);
        drop(store);
        let _ = std::fs::remove_file(path);
    }
}
