//! Whether a broker answers now, for a node's `/readyz`. Being positioned at start-up says
//! nothing about a broker that went away later, and librdkafka reports a lost broker as error
//! events with no matching "healthy again" event. So a node asks for the bus topic's metadata
//! every [`PROBE_EVERY`], on the blocking pool (the call blocks) with a short timeout: one small
//! request every few seconds, and both edges of an outage are seen.
//!
//! It asks through both of the node's clients, the producer and the fan-out consumer. Each has
//! its own broker connections and reconnects on its own schedule: after an outage the producer
//! can be back while the consumer is not, and a send would then be written but not read back
//! in time to be acknowledged. `/readyz` turns 200 only when both can reach the log.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};

use crate::kafka::LagConsumer;

/// How often the brokers are asked while they answer.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one metadata request may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Failures in a row before the log counts as unreachable: one slow answer on a loaded
/// machine must not take a node out of its load balancer.
const FAILURES_TO_TRIP: u32 = 2;

/// The last verdict of the probe: `None` while a broker answers.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    unreachable: Mutex<Option<String>>,
}

impl Reachability {
    /// Why the log is unreachable, or `None`.
    pub(crate) fn reason(&self) -> Option<String> {
        self.unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, verdict: Option<String>) {
        let mut current = self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (&*current, &verdict) {
            (None, Some(why)) => tracing::warn!(error = %why, "message log unreachable"),
            (Some(_), None) => tracing::info!("message log reachable again"),
            _ => {}
        }
        *current = verdict;
    }
}

/// One metadata request: a broker answered and every partition of `topic` has a leader.
fn ask<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<(), String> {
    let metadata = client
        .fetch_metadata(Some(topic), PROBE_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic {topic} is missing from the metadata"))?;
    if let Some(e) = found.error() {
        return Err(format!("topic {topic}: {e:?}"));
    }
    match found
        .partitions()
        .iter()
        .find(|p| p.error().is_some() || p.leader() < 0)
    {
        Some(p) => Err(format!("partition {} of {topic} has no leader", p.id())),
        None => Ok(()),
    }
}

/// Asks through the producer and the fan-out consumer at once; the first failure wins.
async fn ask_both(
    producer: &FutureProducer,
    consumer: &Arc<LagConsumer>,
    topic: &str,
) -> Result<(), String> {
    let (p, t) = (producer.clone(), topic.to_owned());
    let (c, u) = (consumer.clone(), topic.to_owned());
    let (produced, consumed) = tokio::join!(
        tokio::task::spawn_blocking(move || ask(p.client(), &t)),
        tokio::task::spawn_blocking(move || ask(c.client(), &u)),
    );
    let answer = |joined: Result<Result<(), String>, tokio::task::JoinError>| {
        joined.unwrap_or_else(|e| Err(e.to_string()))
    };
    answer(produced).and(answer(consumed).map_err(|why| format!("fan-out consumer: {why}")))
}

/// Probes until the process ends, recording the verdict in `state`.
pub(crate) async fn run(
    producer: FutureProducer,
    consumer: Arc<LagConsumer>,
    topic: String,
    state: Arc<Reachability>,
) {
    let mut failures = 0u32;
    loop {
        let answer = ask_both(&producer, &consumer, &topic).await;
        match answer {
            Ok(()) => {
                failures = 0;
                state.set(None);
                tokio::time::sleep(PROBE_EVERY).await;
            }
            Err(why) => {
                failures += 1;
                if failures >= FAILURES_TO_TRIP {
                    state.set(Some(why));
                }
                // A failed request already waited out its timeout (or the broker refused at
                // once): ask again soon, but never in a tight loop.
                tokio::time::sleep(PROBE_EVERY / 4).await;
            }
        }
    }
}
