//! The measured phase of `idle`, `broadcast` and `dm`: each connection publishes at its rate
//! and counts what it receives, until --duration (or the coordinator's `stop`) and --drain
//! after that. With `--reconnect` a connection is driven by [`crate::resume`] instead.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Fail, Ws, send_text};
use crate::peer::Incoming;
use crate::plan::{Role, Spec};
use crate::seen::{Delivery, Seen};
use crate::stats::{Counters, Outcome};
use crate::worker::{Ctx, Opened, finish};
use crate::{resume, stamp};

/// The measured phase of `idle`, `broadcast` and `dm`: publishers publish for --duration (or
/// until the coordinator says `stop`), everyone counts deliveries until --drain after that.
pub async fn exchange(ctx: &Arc<Ctx>, conns: Vec<Opened>, start: Instant) -> Outcome {
    let publish_until = start + ctx.cli.common.duration;
    let end = publish_until + ctx.cli.common.drain;
    let resuming = ctx.cli.scenario.reconnect();
    let mut tasks = JoinSet::new();
    for (spec, ws, joined) in conns {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let phase = Phase {
                start,
                publish_until,
                end,
            };
            let ws = if resuming {
                resume::drive(&ctx, spec, ws, &joined, phase).await?
            } else {
                drive(&ctx, spec, ws, phase).await?
            };
            conn::close(ws).await;
            Some(())
        });
    }
    let mut outcome = Outcome::default();
    while let Some(still_open) = tasks.join_next().await {
        if let Ok(Some(())) = still_open {
            outcome.still_open += 1;
        }
    }
    finish(ctx, outcome)
}

/// Resolves with the time of the coordinator's `stop`, if one comes.
pub async fn stop_requested(stop: &mut watch::Receiver<Option<Instant>>) -> Instant {
    // The guard of `wait_for` must not live across the `pending` await (it is not `Send`).
    let at = stop.wait_for(Option::is_some).await.ok().and_then(|at| *at);
    match at {
        Some(at) => at,
        None => std::future::pending().await,
    }
}

/// The measured phase's clock: publishing from `start` until `publish_until`, counting until
/// `end`. A `stop` from the coordinator brings both forward (the drain then runs in full).
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub start: Instant,
    pub publish_until: Instant,
    pub end: Instant,
}

impl Phase {
    /// Publishing stops at `at`; counting ends --drain later (never later than planned).
    pub fn stop_at(&mut self, at: Instant, drain: Duration) {
        self.publish_until = self.publish_until.min(at);
        self.end = self.end.min(at + drain);
    }
}

/// The publishing rate of a connection and the deliveries each of its sends should make.
pub fn publishing(role: Role) -> (f64, u64) {
    match role {
        Role::Publisher { rate, recipients } => (rate, recipients),
        Role::Pair { rate } => (rate, 1),
        _ => (0.0, 0),
    }
}

/// When a connection publishes first: publishers are spread over one interval so they do not
/// fire in lockstep.
pub fn first_publish(start: Instant, interval: Option<Duration>, index: usize) -> Instant {
    start
        + interval
            .map(|i| i.mul_f64((index % 97) as f64 / 97.0))
            .unwrap_or_default()
}

/// One connection's measured phase; returns the socket if it was still open at `end`.
async fn drive(ctx: &Ctx, spec: Spec, mut ws: Ws, mut phase: Phase) -> Option<Ws> {
    let (rate, recipients) = publishing(spec.role);
    let mut receiver = Receiver::new(spec, recipients);
    let channel = ctx.peer.channel(&ctx.prefix, spec.room);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let first = first_publish(phase.start, interval, spec.index);
    // Both timers live across iterations: a receiver handles thousands of frames a second.
    let (stop, next) = (sleep_until(phase.end), sleep_until(first));
    tokio::pin!(stop, next);
    let mut stopped = ctx.stop.subscribe();
    let mut stopping = false;
    let mut seq = 0u64;
    let c = &ctx.counters;
    loop {
        let publishing = interval.is_some() && next.deadline() < phase.publish_until;
        tokio::select! {
            () = &mut stop => return Some(ws),
            at = stop_requested(&mut stopped), if !stopping => {
                stopping = true;
                phase.stop_at(at, ctx.cli.common.drain);
                stop.as_mut().reset(phase.end);
            }
            () = &mut next, if publishing => {
                seq += 1;
                let body = stamp::body(spec.index as u32, seq, ctx.plan.body_bytes);
                let frame = ctx.peer.publish(&channel, &body, &format!("{}-{seq}", spec.index), seq);
                if let Err(fail) = send_text(&mut ws, frame).await {
                    return lost(ctx, &fail);
                }
                c.sent.fetch_add(1, Relaxed);
                c.expected.fetch_add(recipients, Relaxed);
                let due = next.deadline() + interval.unwrap_or_default();
                next.as_mut().reset(due);
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => return lost(ctx, &conn::closed(close)),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return lost(ctx, &Fail::new("closed")),
                };
                if let Err(fail) = receiver.on_text(ctx, &mut ws, &text).await {
                    return lost(ctx, &fail);
                }
            }
        }
    }
}

/// What a connection does with the text frames it receives.
pub struct Receiver {
    /// Whether deliveries to this connection are counted (members and pairs).
    pub counts: bool,
    me: u32,
    /// Deliveries one of this connection's sends should make (0: it does not publish).
    recipients: u64,
    seen: Seen,
}

impl Receiver {
    pub fn new(spec: Spec, recipients: u64) -> Self {
        Receiver {
            counts: matches!(spec.role, Role::Member | Role::Pair { .. }),
            me: spec.index as u32,
            recipients,
            seen: Seen::default(),
        }
    }

    /// Counts the stamps in a frame that carries messages.
    pub fn count(&mut self, c: &Counters, text: &str) {
        if self.counts {
            count_deliveries(c, text, self.me, &mut self.seen);
        }
    }

    async fn on_text(&mut self, ctx: &Ctx, ws: &mut Ws, text: &str) -> Result<(), Fail> {
        let c = &ctx.counters;
        match ctx.peer.classify(text) {
            Incoming::Ping(reply) => send_text(ws, reply.to_owned()).await?,
            Incoming::Error(code) => {
                c.error(&code);
                if self.recipients > 0 {
                    c.refused.fetch_add(1, Relaxed);
                    c.expected.fetch_sub(self.recipients, Relaxed);
                }
            }
            Incoming::Other => {}
        }
        self.count(c, text);
        Ok(())
    }
}

fn lost(ctx: &Ctx, fail: &Fail) -> Option<Ws> {
    ctx.counters.closed_early.fetch_add(1, Relaxed);
    ctx.counters.error(&fail.0);
    None
}

/// Counts each stamp from another publisher once: a stamp seen before is a duplicate; one
/// first seen after a higher seq of its publisher (a replay filling a gap) is a delivery, also
/// counted as out of order.
fn count_deliveries(c: &Counters, text: &str, me: u32, seen: &mut Seen) {
    let now = stamp::now_ns();
    stamp::find_all(text, |s| {
        if s.publisher == me {
            return;
        }
        match seen.record(s.publisher, s.seq) {
            Delivery::Duplicate => {
                c.duplicated.fetch_add(1, Relaxed);
                return;
            }
            Delivery::Late => {
                c.out_of_order.fetch_add(1, Relaxed);
            }
            Delivery::New => {}
        }
        c.delivered.fetch_add(1, Relaxed);
        c.record_latency(now.saturating_sub(s.sent_ns) / 1_000);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_count_as_duplicates_and_own_messages_are_ignored() {
        let c = Counters::default();
        let mut seen = Seen::default();
        for (publisher, seq) in [(1, 1), (1, 2), (1, 2), (2, 1), (9, 1), (1, 1)] {
            count_deliveries(&c, &stamp::body(publisher, seq, 0), 9, &mut seen);
        }
        assert_eq!(c.delivered.load(Relaxed), 3);
        assert_eq!(c.duplicated.load(Relaxed), 2);
    }

    #[test]
    fn a_message_first_seen_in_a_replay_after_later_ones_is_delivered_not_duplicated() {
        let c = Counters::default();
        let mut seen = Seen::default();
        // 2 was missed when the socket closed; 3 came live on the new socket before the
        // replay brought 2; then the replay overlapped with 3.
        for seq in [1, 3, 2, 3] {
            count_deliveries(&c, &stamp::body(1, seq, 0), 9, &mut seen);
        }
        assert_eq!(c.delivered.load(Relaxed), 3);
        assert_eq!(c.out_of_order.load(Relaxed), 1);
        assert_eq!(c.duplicated.load(Relaxed), 1);
        assert_eq!(c.latency_pairs().iter().map(|p| p.1).sum::<u64>(), 3);
    }
}
