//! The cluster bus on Apache Kafka. One idempotent producer per process (acks=all); one consumer
//! per node that is *assigned* every partition (no consumer group: every node must see every
//! room) and positioned at the partitions' ends when it starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use onlychat_protocol::BusEvent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::probe::{self, Reachability};
use crate::{Bus, BusError, Delivered, DeliverySink, Headers, partition_for};

/// How to reach Kafka and shape the topic.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// Partitions when the topic has to be created.
    pub partitions: i32,
    /// Upper bound on how long a `send` may wait for the broker's acknowledgement.
    pub produce_timeout: Duration,
    /// Used in client ids so broker logs tell nodes apart.
    pub node_id: String,
}

/// The Kafka-backed bus.
pub struct KafkaBus {
    pub(crate) settings: KafkaSettings,
    producer: FutureProducer,
    partitions: i32,
    epoch: String,
    ready: Arc<AtomicBool>,
    /// Whether a broker answers now (probed only once consuming, i.e. on nodes).
    reachability: Arc<Reachability>,
}

pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a partition's end ([`Bus::log_end`]).
const LOG_END_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the consumer may log the same kind of transient error.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often librdkafka reports its statistics (the consumer lag gauge is fed from them).
const STATISTICS_INTERVAL: &str = "5000";

/// A consumer's context: publishes each assigned partition's lag — records in the log (up to
/// its last stable offset) not yet handed to onlychat — as the gauge
/// `onlychat_consumer_lag_messages{consumer, partition}`. librdkafka's own `consumer_lag` is
/// measured from the committed offset, which the fan-out consumer never has.
pub(crate) struct LagReporter {
    pub(crate) consumer: &'static str,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            // Partition -1 is librdkafka's internal "unassigned" bucket; negative offsets are
            // "not known yet". Before the first record, the fetch position is where it stands.
            for (partition, stats) in topic.partitions.iter().filter(|(p, _)| **p >= 0) {
                let end = if stats.ls_offset >= 0 {
                    stats.ls_offset
                } else {
                    stats.hi_offset
                };
                let read = if stats.app_offset >= 0 {
                    stats.app_offset
                } else {
                    stats.next_offset
                };
                if end >= 0 && read >= 0 {
                    metrics::gauge!(
                        "onlychat_consumer_lag_messages",
                        "consumer" => self.consumer,
                        "partition" => partition.to_string()
                    )
                    .set((end - read).max(0) as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

/// A consumer with a [`LagReporter`].
pub(crate) type LagConsumer = StreamConsumer<LagReporter>;

/// Creates a consumer from `config` that reports its lag as `consumer`.
pub(crate) fn lag_consumer(
    config: &mut ClientConfig,
    consumer: &'static str,
) -> Result<LagConsumer, BusError> {
    config
        .set("statistics.interval.ms", STATISTICS_INTERVAL)
        .create_with_context(LagReporter { consumer })
        .map_err(setup_err)
}

pub(crate) fn setup_err(e: impl std::fmt::Display) -> BusError {
    BusError::Setup(e.to_string())
}

/// Settings every onlychat Kafka client shares. The reconnect backoff is capped at 1 s (the
/// librdkafka default grows to 10 s): after a broker outage every node must produce *and*
/// consume again within seconds, and an idle fan-out consumer would otherwise sit out the
/// whole backoff before it fetches again.
pub(crate) fn client_config(settings: &KafkaSettings, role: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", format!("onlychat-{}{role}", settings.node_id))
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

impl KafkaBus {
    /// Connects, creates the topic if it is missing, and learns its partition count.
    pub async fn connect(settings: KafkaSettings) -> Result<Self, BusError> {
        let producer: FutureProducer = client_config(&settings, "")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                settings.produce_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(setup_err)?;
        ensure_topic(&settings).await?;
        let partitions = partition_count(&producer, &settings.topic).await?;
        let epoch = epoch_of(&settings.topic, partitions);
        Ok(Self {
            settings,
            producer,
            partitions,
            epoch,
            ready: Arc::new(AtomicBool::new(false)),
            reachability: Arc::new(Reachability::default()),
        })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    fn consumer(&self) -> Result<LagConsumer, BusError> {
        let mut config = client_config(&self.settings, "-fanout");
        config
            // Required by librdkafka even for manual assignment; never committed to.
            .set(
                "group.id",
                format!("onlychat-fanout-{}", self.settings.node_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10")
            .set("isolation.level", "read_committed");
        lag_consumer(&mut config, "fanout")
    }
}

/// The epoch of a topic: it changes when the topic is recreated with another partition count.
pub(crate) fn epoch_of(topic: &str, partitions: i32) -> String {
    format!("{topic}-p{partitions}")
}

pub(crate) async fn ensure_topic(settings: &KafkaSettings) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings, "-admin")
        .create()
        .map_err(setup_err)?;
    // Replication -1: the broker's default.replication.factor decides.
    let topic = NewTopic::new(
        &settings.topic,
        settings.partitions,
        TopicReplication::Fixed(-1),
    );
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(METADATA_TIMEOUT)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(setup_err)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BusError::Setup(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) async fn partition_count(
    producer: &FutureProducer,
    topic: &str,
) -> Result<i32, BusError> {
    let producer = producer.clone();
    let topic = topic.to_owned();
    let deadline = Instant::now() + METADATA_TIMEOUT;
    // A just-created topic can take a moment to show up in metadata.
    loop {
        let (producer, name) = (producer.clone(), topic.clone());
        let count = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            Ok::<_, rdkafka::error::KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .map_or(0, |t| t.partitions().len()),
            )
        })
        .await
        .map_err(setup_err)?
        .map_err(setup_err)?;
        if count > 0 {
            return i32::try_from(count).map_err(setup_err);
        }
        if Instant::now() > deadline {
            return Err(BusError::Setup(format!("topic {topic} has no partitions")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[async_trait]
impl Bus for KafkaBus {
    fn publish_with(
        &self,
        event: &BusEvent,
        headers: Headers,
    ) -> BoxFuture<'static, Result<u64, BusError>> {
        let unavailable = |e: rdkafka::error::KafkaError| BusError::Unavailable(e.to_string());
        let payload = match serde_json::to_vec(event) {
            Ok(payload) => payload,
            Err(e) => {
                return Box::pin(std::future::ready(Err(BusError::Unavailable(
                    e.to_string(),
                ))));
            }
        };
        let room = event.room();
        let mut record = FutureRecord::to(&self.settings.topic)
            .key(room)
            .payload(&payload)
            .partition(self.partition_of(room));
        if !headers.is_empty() {
            let owned = headers.iter().fold(
                OwnedHeaders::new_with_capacity(headers.len()),
                |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v),
                    })
                },
            );
            record = record.headers(owned);
        }
        // send_result enqueues now (keeping the caller's order); the delivery future is bounded
        // by message.timeout.ms.
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((e, _)) => return Box::pin(std::future::ready(Err(unavailable(e)))),
        };
        Box::pin(async move {
            let delivery = delivery
                .await
                .map_err(|_| BusError::Unavailable("the producer went away".into()))?
                .map_err(|(e, _)| unavailable(e))?;
            u64::try_from(delivery.offset + 1).map_err(|e| BusError::Unavailable(e.to_string()))
        })
    }

    fn partition_of(&self, room: &str) -> i32 {
        partition_for(room, self.partitions)
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    async fn start_consuming(
        &self,
        sink: Arc<dyn DeliverySink>,
        lookback: Duration,
    ) -> Result<(), BusError> {
        let consumer = Arc::new(self.consumer()?);
        let (topic, partitions) = (self.settings.topic.clone(), self.partitions);
        let positioner = consumer.clone();
        let since_ms = chrono_ms() - i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX / 4);
        // Start `lookback` back (the node rebuilds its dedupe window and replay buffers from
        // the log), and count as positioned once the log's end as of now has been read.
        let starts = tokio::task::spawn_blocking(move || {
            let mut wanted = TopicPartitionList::new();
            for p in 0..partitions {
                wanted.add_partition_offset(&topic, p, Offset::Offset(since_ms))?;
            }
            let found = positioner.offsets_for_times(wanted, METADATA_TIMEOUT)?;
            let mut list = TopicPartitionList::new();
            let mut starts = Vec::new();
            for p in 0..partitions {
                let (low, high) = positioner.fetch_watermarks(&topic, p, METADATA_TIMEOUT)?;
                let start = match found.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= low => o.min(high),
                    _ => high, // no record at or after the time: nothing to look back on
                };
                list.add_partition_offset(&topic, p, Offset::Offset(start))?;
                starts.push((p, start, high));
            }
            positioner.assign(&list)?;
            Ok::<_, rdkafka::error::KafkaError>(starts)
        })
        .await
        .map_err(setup_err)?
        .map_err(setup_err)?;
        let mut catching_up = std::collections::HashMap::new();
        for (partition, start, high) in starts {
            sink.positioned(partition, u64::try_from(start).unwrap_or(0));
            if high > start {
                catching_up.insert(partition, high);
            }
        }
        self.ready.store(catching_up.is_empty(), Ordering::SeqCst);
        tokio::spawn(consume(
            consumer.clone(),
            sink,
            catching_up,
            self.ready.clone(),
        ));
        tokio::spawn(probe::run(
            self.producer.clone(),
            consumer,
            self.settings.topic.clone(),
            self.reachability.clone(),
        ));
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn not_ready_reason(&self) -> Option<String> {
        if !self.is_ready() {
            return Some("bus consumer not positioned".to_owned());
        }
        self.reachability
            .reason()
            .map(|why| format!("message log unreachable: {why}"))
    }

    /// The partition's high watermark: the offset after its last record, which is that
    /// record's position. Asked of the broker on the blocking pool, bounded by
    /// [`LOG_END_TIMEOUT`].
    async fn log_end(&self, partition: i32) -> Option<u64> {
        let (producer, topic) = (self.producer.clone(), self.settings.topic.clone());
        let high = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, partition, LOG_END_TIMEOUT)
        })
        .await
        .ok()?
        .ok()?
        .1;
        u64::try_from(high).ok()
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Decodes one record; a record that is not an onlychat event is logged and skipped.
pub(crate) fn decode(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Delivered> {
    let payload = message.payload()?;
    let position = u64::try_from(message.offset() + 1).unwrap_or(0);
    match serde_json::from_slice::<BusEvent>(payload) {
        Ok(event) => Some(Delivered {
            partition: message.partition(),
            position,
            event,
            headers: message.headers().map_or_else(Headers::new, |headers| {
                headers
                    .iter()
                    .filter_map(|h| {
                        let value = std::str::from_utf8(h.value?).ok()?;
                        Some((h.key.to_owned(), value.to_owned()))
                    })
                    .collect()
            }),
        }),
        Err(e) => {
            tracing::warn!(partition = message.partition(), position, error = %e, "skipping a record that is not an onlychat event");
            None
        }
    }
}

/// Rate-limits the consumer's transient-error log: Kafka being away produces many per second.
#[derive(Default)]
pub(crate) struct ErrorLog(Option<Instant>);

impl ErrorLog {
    pub(crate) async fn transient(&mut self, what: &str, e: &rdkafka::error::KafkaError) {
        if self.0.is_none_or(|t| t.elapsed() > ERROR_LOG_EVERY) {
            tracing::warn!(error = %e, "{what}; retrying");
            self.0 = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fan-out loop: every record, in partition order, to the sink. `catching_up` holds the
/// log end per partition as of the start; `ready` turns true once all of them were read.
async fn consume(
    consumer: Arc<LagConsumer>,
    sink: Arc<dyn DeliverySink>,
    mut catching_up: std::collections::HashMap<i32, i64>,
    ready: Arc<AtomicBool>,
) {
    let mut errors = ErrorLog::default();
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let (partition, offset) = (message.partition(), message.offset());
                if let Some(delivered) = decode(&message) {
                    sink.deliver(delivered);
                }
                if catching_up
                    .get(&partition)
                    .is_some_and(|high| offset + 1 >= *high)
                {
                    catching_up.remove(&partition);
                    if catching_up.is_empty() {
                        tracing::info!("caught up with the log on every partition");
                        ready.store(true, Ordering::SeqCst);
                    }
                }
            }
            Err(e) => errors.transient("kafka consumer error", &e).await,
        }
    }
}
