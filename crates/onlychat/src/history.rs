//! The history writer: a Kafka consumer group that stores every chat message in the database,
//! in batches, idempotently (message id, and the log's dedupe rule), committing Kafka offsets
//! only after the database transaction committed. A crash re-reads at most one batch, which the
//! idempotent insert absorbs. Standalone has no writer: its journal stores before it acks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use onlychat_bus::{BusError, Delivered, GroupReader, Journal, KafkaBus};
use onlychat_protocol::{BusEvent, ts_ms};
use onlychat_store::{LoggedMessage, Store};

/// How long a batch waits for more records once it has one.
const LINGER: Duration = Duration::from_millis(50);
/// Pause between attempts while the database is down.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The chat messages among `events`, as history rows of `epoch`.
fn rows(events: &[Delivered], epoch: &str) -> Vec<LoggedMessage> {
    events
        .iter()
        .filter(|d| matches!(d.event, BusEvent::Message { .. }))
        .filter_map(|d| {
            let message = d.event.clone().into_chat_message(d.position, epoch)?;
            Some(LoggedMessage {
                partition: d.partition,
                ts_ms: ts_ms(&message.ts),
                message,
            })
        })
        .collect()
}

fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Runs the writer until the process ends.
pub async fn run(
    bus: Arc<KafkaBus>,
    mut reader: GroupReader,
    store: Store,
    batch_max: usize,
    window: Duration,
) {
    let epoch = onlychat_bus::Bus::epoch(bus.as_ref()).to_owned();
    tracing::info!(%epoch, "history writer started");
    loop {
        let batch = reader.next_batch(batch_max, LINGER).await;
        let rows = rows(&batch.events, &epoch);
        let offsets: Vec<(String, i32, u64)> = batch
            .next_positions
            .iter()
            .map(|(p, next)| (epoch.clone(), *p, *next))
            .collect();
        let started = Instant::now();
        let mut failures = 0u32;
        let stored = loop {
            match store
                .append_history(&rows, &offsets, window_ms(window))
                .await
            {
                Ok(stored) => break stored,
                Err(e) => {
                    // Nothing is committed to Kafka until the database has the batch.
                    if failures.is_multiple_of(10) {
                        tracing::warn!(error = %e, rows = rows.len(), "history batch not stored; retrying");
                    }
                    failures += 1;
                    metrics::counter!("onlychat_db_errors_total", "op" => "history").increment(1);
                    // The lag statistics stop while no records are read; keep the gauge true.
                    reader.report_lag().await;
                    tokio::time::sleep(RETRY_EVERY).await;
                }
            }
        };
        metrics::histogram!("onlychat_history_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("onlychat_history_stored_total").increment(stored as u64);
        tracing::debug!(
            records = batch.events.len(),
            stored,
            took_ms = started.elapsed().as_millis() as u64,
            "history batch"
        );
        if let Err(e) = reader.commit(&batch) {
            tracing::warn!(error = %e, "history offsets not committed; the batch will be re-read (idempotent)");
        }
    }
}

/// Standalone's journal: the in-process log stores each message in SQLite before it is acked.
pub struct StoreJournal {
    pub store: Store,
    pub epoch: String,
    pub window: Duration,
}

impl Journal for StoreJournal {
    fn record(&self, events: Vec<Delivered>) -> BoxFuture<'static, Result<(), BusError>> {
        let (store, epoch, window) = (self.store.clone(), self.epoch.clone(), self.window);
        Box::pin(async move {
            let rows = rows(&events, &epoch);
            let next = events.iter().map(|d| d.position + 1).max().unwrap_or(0);
            let offsets = vec![(epoch, 0, next)];
            store
                .append_history(&rows, &offsets, window_ms(window))
                .await
                .map(drop)
                .map_err(|e| {
                    metrics::counter!("onlychat_db_errors_total", "op" => "journal").increment(1);
                    BusError::Unavailable(e.to_string())
                })
        })
    }
}
