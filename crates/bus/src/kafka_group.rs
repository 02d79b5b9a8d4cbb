//! A consumer-group reader of the log for workers that each own a share of the partitions (the
//! history writer). Offsets are committed only when the caller says its work is done, so a
//! crash re-reads from the last finished batch (at-least-once; the work must be idempotent).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{ErrorLog, LagConsumer, client_config, decode, lag_consumer, setup_err};

/// Longest wait for each broker answer when reporting lag.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
use crate::{BusError, Delivered, KafkaBus};

/// One batch read from the group's partitions, and where each partition got to.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Delivered>,
    /// Per partition, the position after the last record read (records that were not onlychat
    /// events count too, so the group never re-reads them).
    pub next_positions: HashMap<i32, u64>,
}

/// A member of a consumer group on the bus topic.
pub struct GroupReader {
    consumer: Arc<LagConsumer>,
    topic: String,
    errors: ErrorLog,
}

impl KafkaBus {
    /// Joins consumer group `group` on the topic; reading starts at the group's committed
    /// offsets, or at the beginning of the log for a new group.
    pub fn group_reader(&self, group: &str) -> Result<GroupReader, BusError> {
        let mut config = client_config(&self.settings, &format!("-{group}"));
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            // A crashed writer's partitions move to the others after this long.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000");
        let consumer = lag_consumer(&mut config, "history")?;
        consumer
            .subscribe(&[&self.settings.topic])
            .map_err(setup_err)?;
        Ok(GroupReader {
            consumer: Arc::new(consumer),
            topic: self.settings.topic.clone(),
            errors: ErrorLog::default(),
        })
    }
}

impl GroupReader {
    /// Waits for at least one record, then takes what else arrives within `linger`, up to `max`.
    pub async fn next_batch(&mut self, max: usize, linger: Duration) -> Batch {
        let mut batch = Batch::default();
        let mut deadline = None;
        loop {
            let received = match deadline {
                None => Ok(self.consumer.recv().await),
                Some(deadline) => tokio::time::timeout_at(deadline, self.consumer.recv()).await,
            };
            match received {
                Err(_) => break, // linger over
                Ok(Ok(message)) => {
                    let next = u64::try_from(message.offset() + 1).unwrap_or(0);
                    batch.next_positions.insert(message.partition(), next);
                    if let Some(delivered) = decode(&message) {
                        batch.events.push(delivered);
                    }
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
                    if batch.events.len() >= max {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    if !batch.next_positions.is_empty() {
                        break;
                    }
                    self.errors
                        .transient("kafka group consumer error", &e)
                        .await;
                }
            }
        }
        batch
    }

    /// Sets `onlychat_consumer_lag_messages{consumer="history"}` from the broker: each assigned
    /// partition's end minus the group's committed offset (its start, before any commit). For a caller stuck on a batch (its
    /// database is down): the statistics that feed the gauge come only while records are read.
    pub async fn report_lag(&self) {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let lags = tokio::task::spawn_blocking(move || {
            let assigned = consumer.assignment()?;
            let committed = consumer.committed_offsets(assigned, LAG_QUERY_TIMEOUT)?;
            let mut lags = Vec::new();
            for element in committed.elements_for_topic(&topic) {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, element.partition(), LAG_QUERY_TIMEOUT)?;
                // Nothing committed yet: the group reads from the start of the log.
                let at = match element.offset() {
                    Offset::Offset(at) => at,
                    _ => low,
                };
                lags.push((element.partition(), (high - at).max(0)));
            }
            Ok::<_, rdkafka::error::KafkaError>(lags)
        })
        .await;
        if let Ok(Ok(lags)) = lags {
            for (partition, lag) in lags {
                metrics::gauge!(
                    "onlychat_consumer_lag_messages",
                    "consumer" => "history",
                    "partition" => partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }

    /// Commits the batch's positions: call only once its work is durably done.
    pub fn commit(&self, batch: &Batch) -> Result<(), BusError> {
        let mut list = TopicPartitionList::new();
        for (partition, next) in &batch.next_positions {
            // The committed offset is the next one to read, which is our position.
            let offset = i64::try_from(*next).unwrap_or(i64::MAX);
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(offset))
                .map_err(setup_err)?;
        }
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}
