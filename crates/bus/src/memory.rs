//! The in-process bus of `onlychat standalone`: one partition, numbered in this process.
//!
//! Without a [`Journal`] an event is delivered as it is published (unit tests). With one, a
//! single writer task takes the queued events in position order, has the journal store the
//! messages durably (SQLite in standalone), and only then delivers them and resolves the
//! publishers' futures: an acknowledged message survives a restart, and positions continue.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use onlychat_protocol::BusEvent;
use tokio::sync::{mpsc, oneshot};

use crate::{Bus, BusError, Delivered, DeliverySink};

/// Durable storage behind the in-process bus.
pub trait Journal: Send + Sync + 'static {
    /// Stores the messages among `events` (in order) durably, or fails them all.
    fn record(&self, events: Vec<Delivered>) -> BoxFuture<'static, Result<(), BusError>>;
}

/// Events waiting for the journal, at most this many (more is answered `unavailable`).
const JOURNAL_QUEUE: usize = 8192;
/// Events stored per journal transaction, at most.
const JOURNAL_BATCH: usize = 512;

type Sinks = Arc<Mutex<Vec<Arc<dyn DeliverySink>>>>;
type Queued = (Delivered, oneshot::Sender<Result<u64, BusError>>);

struct State {
    last_position: u64,
    journal: Option<mpsc::Sender<Queued>>,
}

/// A single-process log.
pub struct MemoryBus {
    state: Mutex<State>,
    sinks: Sinks,
    epoch: String,
}

fn deliver(sinks: &Sinks, delivered: &Delivered) {
    for sink in sinks.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        sink.deliver(delivered.clone());
    }
}

impl MemoryBus {
    /// A log that starts after `last_position`, delivering at once (nothing is stored).
    pub fn new(last_position: u64, epoch: &str) -> Self {
        let state = Mutex::new(State {
            last_position,
            journal: None,
        });
        Self {
            state,
            sinks: Sinks::default(),
            epoch: epoch.to_owned(),
        }
    }

    /// A log that starts after `last_position` and acknowledges only what `journal` stored.
    pub fn journaled(last_position: u64, epoch: &str, journal: Arc<dyn Journal>) -> Self {
        let bus = Self::new(last_position, epoch);
        let (tx, rx) = mpsc::channel(JOURNAL_QUEUE);
        tokio::spawn(write_journal(journal, rx, bus.sinks.clone()));
        bus.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .journal = Some(tx);
        bus
    }
}

/// The writer task: store a batch, then deliver it and answer its publishers, in order.
async fn write_journal(journal: Arc<dyn Journal>, mut rx: mpsc::Receiver<Queued>, sinks: Sinks) {
    let mut queued = Vec::with_capacity(JOURNAL_BATCH);
    while rx.recv_many(&mut queued, JOURNAL_BATCH).await > 0 {
        let events: Vec<Delivered> = queued.iter().map(|(d, _)| d.clone()).collect();
        let stored = journal.record(events).await;
        for (delivered, reply) in queued.drain(..) {
            let answer = match &stored {
                Ok(()) => {
                    deliver(&sinks, &delivered);
                    Ok(delivered.position)
                }
                Err(e) => Err(BusError::Unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn publish_with(
        &self,
        event: &BusEvent,
        headers: crate::Headers,
    ) -> BoxFuture<'static, Result<u64, BusError>> {
        // The lock spans numbering and hand-off so positions reach sinks (or the journal) in order.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let delivered = Delivered {
            partition: 0,
            position: state.last_position + 1,
            event: event.clone(),
            headers,
        };
        let Some(journal) = &state.journal else {
            state.last_position += 1;
            deliver(&self.sinks, &delivered);
            return Box::pin(std::future::ready(Ok(delivered.position)));
        };
        let (reply, answer) = oneshot::channel();
        if journal.try_send((delivered, reply)).is_err() {
            return Box::pin(std::future::ready(Err(BusError::Unavailable(
                "the journal queue is full".into(),
            ))));
        }
        state.last_position += 1;
        Box::pin(async move {
            answer
                .await
                .map_err(|_| BusError::Unavailable("the journal stopped".into()))?
        })
    }

    fn partition_of(&self, _room: &str) -> i32 {
        0
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    async fn start_consuming(
        &self,
        sink: Arc<dyn DeliverySink>,
        _lookback: Duration,
    ) -> Result<(), BusError> {
        // Holding the state lock keeps a publish from slipping between positioning and joining.
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        sink.positioned(0, state.last_position);
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sink);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let Some(journal) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .journal
            .clone()
        else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while journal.capacity() < journal.max_capacity() {
            if tokio::time::Instant::now() > deadline {
                return Err(BusError::Unavailable(
                    "the journal did not drain in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Every position handed out so far (one partition), stored or still in the journal queue.
    async fn log_end(&self, _partition: i32) -> Option<u64> {
        Some(
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_position,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl DeliverySink for Recorder {
        fn positioned(&self, _partition: i32, _position: u64) {}
        fn deliver(&self, delivered: Delivered) {
            self.0.lock().expect("lock").push(delivered.position);
        }
    }

    struct FlakyJournal(Mutex<bool>);

    impl Journal for FlakyJournal {
        fn record(&self, _events: Vec<Delivered>) -> BoxFuture<'static, Result<(), BusError>> {
            let fail = std::mem::replace(&mut *self.0.lock().expect("lock"), false);
            Box::pin(async move {
                if fail {
                    Err(BusError::Unavailable("disk".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn typing() -> BusEvent {
        BusEvent::Typing {
            room: "r".into(),
            user_id: "u".into(),
            username: "n".into(),
        }
    }

    #[tokio::test]
    async fn published_events_reach_sinks_in_position_order() {
        let bus = MemoryBus::new(10, "e");
        let recorder = Arc::new(Recorder::default());
        bus.start_consuming(recorder.clone(), Duration::ZERO)
            .await
            .expect("consume");
        assert_eq!(bus.publish(&typing()).await.expect("publish"), 11);
        assert_eq!(bus.publish(&typing()).await.expect("publish"), 12);
        assert_eq!(*recorder.0.lock().expect("lock"), vec![11, 12]);
    }

    #[tokio::test]
    async fn a_journal_failure_is_not_acknowledged_nor_delivered() {
        let bus = MemoryBus::journaled(0, "e", Arc::new(FlakyJournal(Mutex::new(true))));
        let recorder = Arc::new(Recorder::default());
        bus.start_consuming(recorder.clone(), Duration::ZERO)
            .await
            .expect("consume");
        assert!(bus.publish(&typing()).await.is_err());
        assert_eq!(bus.publish(&typing()).await.expect("publish"), 2);
        bus.flush(Duration::from_secs(1)).await.expect("flush");
        assert_eq!(*recorder.0.lock().expect("lock"), vec![2]);
    }
}
