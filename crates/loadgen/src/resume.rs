//! `--reconnect` (broadcast and dm, onlychat): a client that loses its socket (1012 from a
//! draining node, 1011, 4008, or a dropped connection) comes back through the same URL after
//! a small jittered backoff, rejoins every room with `since` = the last position it saw there
//! ([`Rooms`]), and writes again every send not yet acknowledged, with the same `client_id`
//! ([`Outbox`]). The counts stay exact across sockets: deliveries are told apart by stamp (a
//! copy seen twice is a duplicate, a message first seen in a replay is a delivery), and a send
//! is expected from the moment it is created because it is written again until it is
//! acknowledged; whatever is still unacknowledged at the end is reported as `unacked`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::conn::{self, Fail, Ws, backoff, send_text};
use crate::exchange::{Phase, Receiver, first_publish, publishing, stop_requested};
use crate::fields::{frame_type, str_field};
use crate::outbox::{self, Outbox, Refusal};
use crate::plan::Spec;
use crate::rooms::{Rejoined, Rooms};
use crate::stamp;
use crate::worker::Ctx;

/// How soon a send answered `unavailable` or `rate_limited` is written again.
const RESEND_AFTER: Duration = Duration::from_millis(200);

/// Close codes after which a client stops (PROTOCOL.md: "stop" or "fix the client"); after any
/// other close, or none, it comes back.
fn resumable(kind: &str) -> bool {
    !matches!(
        kind,
        "closed_1002"
            | "closed_1007"
            | "closed_1008"
            | "closed_1009"
            | "closed_4000"
            | "closed_4001"
            | "closed_4003"
            | "closed_4004"
    )
}

/// One client's state that outlives its sockets.
struct Client<'c> {
    ctx: &'c Ctx,
    spec: Spec,
    channel: String,
    recipients: u64,
    rooms: Rooms,
    outbox: Outbox,
    receiver: Receiver,
    /// Since when this client has been without a socket with every room joined.
    down_since: Option<Instant>,
    /// Failed connection attempts since the socket was lost.
    attempt: u32,
    /// When to act without a frame: reconnect (no socket), give up the rejoin (not joined
    /// yet), or write refused sends again (joined).
    wake: Option<Instant>,
}

/// Drives one client through the measured phase, across as many sockets as it takes; returns
/// the socket open at the end, if it has one with every room joined.
pub async fn drive(
    ctx: &Ctx,
    spec: Spec,
    ws: Ws,
    joined: &[String],
    mut phase: Phase,
) -> Option<Ws> {
    let (rate, recipients) = publishing(spec.role);
    let mut client = Client {
        ctx,
        spec,
        channel: ctx.peer.channel(&ctx.prefix, spec.room),
        recipients,
        rooms: Rooms::new(&ctx.channels(&spec), joined),
        outbox: Outbox::default(),
        receiver: Receiver::new(spec, recipients),
        down_since: None,
        attempt: 0,
        wake: None,
    };
    let mut link = Some(ws);
    if !client.rooms.all_joined() {
        client.rejoin(&mut link).await;
    }
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let (stop, next, wake) = (
        sleep_until(phase.end),
        sleep_until(first_publish(phase.start, interval, spec.index)),
        sleep_until(phase.end),
    );
    tokio::pin!(stop, next, wake);
    let mut stopped = ctx.stop.subscribe();
    let (mut stopping, mut gave_up) = (false, false);
    let mut seq = 0u64;
    while !gave_up {
        if let Some(at) = client.wake
            && wake.deadline() != at
        {
            wake.as_mut().reset(at);
        }
        let publishing = interval.is_some() && next.deadline() < phase.publish_until;
        tokio::select! {
            () = &mut stop => break,
            at = stop_requested(&mut stopped), if !stopping => {
                stopping = true;
                phase.stop_at(at, ctx.cli.common.drain);
                stop.as_mut().reset(phase.end);
            }
            () = &mut next, if publishing => {
                seq += 1;
                client.create(seq);
                let due = next.deadline() + interval.unwrap_or_default();
                next.as_mut().reset(due);
                if let Err(fail) = client.flush(&mut link).await {
                    gave_up = !client.lose(&mut link, fail);
                }
            }
            () = &mut wake, if client.wake.is_some() => {
                client.wake = None;
                if link.is_none() {
                    client.reconnect(&mut link).await;
                } else if !client.rooms.all_joined() {
                    gave_up = !client.lose(&mut link, Fail::new("rejoin_timeout"));
                } else if let Err(fail) = client.flush(&mut link).await {
                    gave_up = !client.lose(&mut link, fail);
                }
            }
            frame = next_frame(&mut link), if link.is_some() => {
                let outcome = match frame {
                    Some(Ok(Message::Text(text))) => client.on_text(&text, &mut link).await,
                    Some(Ok(Message::Close(close))) => Err(conn::closed(close)),
                    Some(Ok(_)) => Ok(()),
                    Some(Err(_)) | None => Err(Fail::new("closed")),
                };
                if let Err(fail) = outcome {
                    gave_up = !client.lose(&mut link, fail);
                }
            }
        }
    }
    client.finish(link, gave_up)
}

async fn next_frame(link: &mut Option<Ws>) -> Option<Result<Message, WsError>> {
    match link {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

impl Client<'_> {
    /// A new message: expected from now on, since it is written until acknowledged.
    fn create(&mut self, seq: u64) {
        let c = &self.ctx.counters;
        let body = stamp::body(self.spec.index as u32, seq, self.ctx.plan.body_bytes);
        self.outbox.create(seq, body);
        c.sent.fetch_add(1, Relaxed);
        c.expected.fetch_add(self.recipients, Relaxed);
    }

    /// Writes every send waiting to be written, once the socket has joined every room.
    async fn flush(&mut self, link: &mut Option<Ws>) -> Result<(), Fail> {
        let Some(ws) = link else { return Ok(()) };
        if !self.rooms.all_joined() || !self.outbox.has_unwritten() {
            return Ok(());
        }
        let (frames, resends) = self.outbox.take_unwritten();
        self.ctx.counters.resent.fetch_add(resends, Relaxed);
        for (seq, body) in frames {
            let id = outbox::client_id(self.spec.index, seq);
            send_text(ws, self.ctx.peer.publish(&self.channel, &body, &id, seq)).await?;
        }
        Ok(())
    }

    async fn on_text(&mut self, text: &str, link: &mut Option<Ws>) -> Result<(), Fail> {
        let c = &self.ctx.counters;
        match frame_type(text) {
            Some("message") => {
                self.rooms.on_message(text);
                self.receiver.count(c, text);
            }
            Some("ack") => {
                let seq =
                    str_field(text, "client_id").and_then(|id| outbox::seq_of(id, self.spec.index));
                if seq.is_some_and(|seq| self.outbox.ack(seq)) {
                    c.acked.fetch_add(1, Relaxed);
                }
            }
            Some("joined") => {
                if self.rooms.on_joined(text) == Rejoined::NotRecovered {
                    c.not_recovered.fetch_add(1, Relaxed);
                    c.error("not_recovered");
                }
                if self.rooms.all_joined() {
                    self.back();
                    self.flush(link).await?;
                }
            }
            Some("error") => self.on_error(text)?,
            _ => {}
        }
        Ok(())
    }

    fn on_error(&mut self, text: &str) -> Result<(), Fail> {
        let c = &self.ctx.counters;
        let code = str_field(text, "code").unwrap_or("error");
        c.error(code);
        if Rooms::is_join_error(text) {
            return Err(Fail(format!("rejoin_{code}")));
        }
        let Some(seq) =
            str_field(text, "client_id").and_then(|id| outbox::seq_of(id, self.spec.index))
        else {
            return Ok(());
        };
        let refusal = Refusal::of(code);
        if self.outbox.refuse(seq, refusal) {
            match refusal {
                Refusal::Final => {
                    c.refused.fetch_add(1, Relaxed);
                    c.expected.fetch_sub(self.recipients, Relaxed);
                }
                Refusal::Retry => {
                    let at = Instant::now() + RESEND_AFTER;
                    self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
                }
            }
        }
        Ok(())
    }

    /// Every room is joined on the current socket: if it replaced a lost one, the client is
    /// back (timed from the close it saw).
    fn back(&mut self) {
        if let Some(since) = self.down_since.take() {
            let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.ctx.counters.record_reconnect(micros);
        }
        self.attempt = 0;
        self.wake = None;
    }

    /// The socket is gone (or given up): false if the client stops for good.
    fn lose(&mut self, link: &mut Option<Ws>, fail: Fail) -> bool {
        let c = &self.ctx.counters;
        c.error(&fail.0);
        *link = None;
        self.outbox.link_lost();
        self.rooms.link_lost();
        if self.down_since.is_some() {
            self.attempt += 1;
        } else {
            self.down_since = Some(Instant::now());
            self.attempt = 0;
        }
        if !resumable(&fail.0) {
            c.closed_early.fetch_add(1, Relaxed);
            return false;
        }
        self.wake = Some(Instant::now() + backoff(self.attempt));
        true
    }

    /// One attempt to open a socket through the same URL and send the rejoins.
    async fn reconnect(&mut self, link: &mut Option<Ws>) {
        let c = &self.ctx.counters;
        c.reconnect_attempt();
        // A fresh token: the old one may have expired while the client was away.
        let token = self.ctx.mint(self.spec.index);
        match self.ctx.connect_to(&self.spec, token.as_deref(), &[]).await {
            Ok((ws, _)) => {
                *link = Some(ws);
                self.rejoin(link).await;
            }
            Err(fail) => {
                c.error(&format!("reconnect_{}", fail.0));
                self.attempt += 1;
                self.wake = Some(Instant::now() + backoff(self.attempt));
            }
        }
    }

    /// Sends the `join`s (with `since`) on a new socket; their `joined` frames come as frames.
    async fn rejoin(&mut self, link: &mut Option<Ws>) {
        let Some(ws) = link else { return };
        for frame in self.rooms.join_frames() {
            if let Err(fail) = send_text(ws, frame).await {
                // Counted like a lost socket; a later wake tries again.
                self.lose(link, fail);
                return;
            }
        }
        self.wake = Some(Instant::now() + self.ctx.cli.common.connect_timeout);
    }

    /// The end: counts what is still unacknowledged and whether the client is back (one that
    /// gave up was counted as closed early when it did).
    fn finish(self, link: Option<Ws>, gave_up: bool) -> Option<Ws> {
        let c = &self.ctx.counters;
        c.unacked.fetch_add(self.outbox.unacked(), Relaxed);
        match link {
            Some(ws) if self.rooms.all_joined() => Some(ws),
            _ if gave_up => None,
            _ => {
                c.error("not_back_by_end");
                c.closed_early.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_node_or_a_dropped_socket_is_resumed_and_a_revoked_session_is_not() {
        for kind in [
            "closed_1012",
            "closed_1011",
            "closed_4008",
            "closed",
            "reset",
        ] {
            assert!(resumable(kind), "{kind}");
        }
        for kind in ["closed_4001", "closed_4003", "closed_1008"] {
            assert!(!resumable(kind), "{kind}");
        }
    }
}
