//! The message bus between chat nodes. Publishing resolves only once the event is durably in
//! the log, with its position; every node consumes every partition and hands each event, in
//! log order, to a [`DeliverySink`]. Kafka in the cluster, an in-process log in standalone.
#![forbid(unsafe_code)]

mod kafka;
mod kafka_group;
mod memory;
mod partitioner;
mod probe;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use onlychat_protocol::BusEvent;

pub use kafka::{KafkaBus, KafkaSettings};
pub use kafka_group::{Batch, GroupReader};
pub use memory::{Journal, MemoryBus};
pub use partitioner::partition_for;

/// An event read back from the log, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    /// Kafka offset + 1: strictly increasing within a partition, hence within a room.
    pub position: u64,
    pub event: BusEvent,
    /// The record's headers: the W3C trace context of the send that produced it, if traced.
    pub headers: Headers,
}

/// Record headers (name, value), carried through the log beside the event.
pub type Headers = Vec<(String, String)>;

/// Receives the log, in order, one partition at a time. Called on the consumer task: it must not
/// block (hand off with `try_send`).
pub trait DeliverySink: Send + Sync + 'static {
    /// The consumer is positioned on `partition`: everything after `position` will be delivered.
    fn positioned(&self, partition: i32, position: u64);
    /// One event of the log.
    fn deliver(&self, delivered: Delivered);
}

/// Bus failures as a client sees them: all of them mean "not acknowledged".
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the message log is unavailable: {0}")]
    Unavailable(String),
    #[error("bus setup failed: {0}")]
    Setup(String),
}

/// A durable, ordered, replicated log of room events.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Appends an event under its room key. The event is queued before this returns, so two
    /// calls from one task keep their order; the future resolves with the position once the
    /// log has durably acknowledged it.
    fn publish(&self, event: &BusEvent) -> BoxFuture<'static, Result<u64, BusError>> {
        self.publish_with(event, Headers::new())
    }
    /// [`Bus::publish`] with record headers (the trace context), which every consumer's
    /// [`Delivered`] carries.
    fn publish_with(
        &self,
        event: &BusEvent,
        headers: Headers,
    ) -> BoxFuture<'static, Result<u64, BusError>>;
    /// The partition a room's events go to.
    fn partition_of(&self, room: &str) -> i32;
    /// The log's epoch: changes only if the log was reset.
    fn epoch(&self) -> &str;
    /// Starts consuming every partition into `sink`, from `lookback` ago (so the sink can
    /// rebuild its dedupe window and replay buffers); returns once assigned.
    async fn start_consuming(
        &self,
        sink: Arc<dyn DeliverySink>,
        lookback: Duration,
    ) -> Result<(), BusError>;
    /// Whether the consumer is assigned and has read the log up to its end as of the start
    /// (the condition for exact join seams; it stays true once reached).
    fn is_ready(&self) -> bool;
    /// Why the bus is not ready for `/readyz`, or `None` when it is: not positioned yet, or
    /// (Kafka) no broker answering right now.
    fn not_ready_reason(&self) -> Option<String> {
        (!self.is_ready()).then(|| "bus consumer not positioned".to_owned())
    }
    /// Waits (bounded) until every accepted event has been acknowledged by the log.
    async fn flush(&self, timeout: Duration) -> Result<(), BusError>;
    /// The position of the last record `partition` holds now (0 when empty), or `None` when
    /// the log cannot say promptly. A resume's `since` beyond it was never a position: there
    /// is nothing to wait for.
    async fn log_end(&self, partition: i32) -> Option<u64>;
}
