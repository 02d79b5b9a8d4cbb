//! The in-process bus of `onlychat standalone`: one log in memory, one partition.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use onlychat_protocol::BusEvent;

use crate::{Bus, BusError, Delivered, DeliverySink};

#[derive(Default)]
struct State {
    last_position: u64,
    sinks: Vec<Arc<dyn DeliverySink>>,
}

/// A single-process log: publishing delivers synchronously to every sink, in position order.
pub struct MemoryBus {
    state: Mutex<State>,
    epoch: String,
}

impl MemoryBus {
    /// A log that starts after `last_position` (so positions keep rising across restarts).
    pub fn new(last_position: u64, epoch: &str) -> Self {
        Self { state: Mutex::new(State { last_position, sinks: Vec::new() }), epoch: epoch.to_owned() }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn publish(&self, event: &BusEvent) -> BoxFuture<'static, Result<u64, BusError>> {
        // The lock spans numbering and hand-off so every sink sees positions in order.
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.last_position += 1;
        let position = state.last_position;
        for sink in &state.sinks {
            sink.deliver(Delivered { partition: 0, position, event: event.clone() });
        }
        Box::pin(std::future::ready(Ok(position)))
    }

    fn partition_of(&self, _room: &str) -> i32 {
        0
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    async fn start_consuming(&self, sink: Arc<dyn DeliverySink>) -> Result<(), BusError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sink.positioned(0, state.last_position);
        state.sinks.push(sink);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        Ok(())
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

    #[tokio::test]
    async fn published_events_reach_sinks_in_position_order() {
        let bus = MemoryBus::new(10, "e");
        let recorder = Arc::new(Recorder::default());
        bus.start_consuming(recorder.clone()).await.expect("consume");
        let event = BusEvent::Typing { room: "r".into(), user_id: "u".into(), username: "n".into() };
        assert_eq!(bus.publish(&event).await.expect("publish"), 11);
        assert_eq!(bus.publish(&event).await.expect("publish"), 12);
        assert_eq!(*recorder.0.lock().expect("lock"), vec![11, 12]);
    }
}
