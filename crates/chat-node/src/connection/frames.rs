//! What each client frame does once a socket is authenticated. Replies go through the
//! connection's own outbound queue, the same path as fan-out, so one writer owns the socket;
//! only `joined` and its replay bypass it (`direct`), so they precede the live messages that
//! queue up behind the seam while the replay is being read.

use crate::registry::Frame;
use std::collections::HashSet;
use std::sync::Arc;

use onlychat_auth::Claims;
use onlychat_protocol::server::PresenceKind;
use onlychat_protocol::{
    BusEvent, ClientFrame, ErrorCode, PresenceEvent, ServerFrame, parse_client_frame, rfc3339,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::flood::{Flood, Verdict};
use crate::Node;
use crate::recent::Original;
use crate::registry::ConnHandle;
use crate::trace::SendSpans;

/// The state of one authenticated connection.
pub(crate) struct Conn {
    pub(crate) node: Arc<Node>,
    handle: ConnHandle,
    claims: Claims,
    rooms: HashSet<String>,
    in_flight: Arc<Semaphore>,
    /// Frames the socket writer sends before anything queued (a join's `joined` and replay).
    pub(crate) direct: Vec<Frame>,
    flood: Flood,
    /// Set when a frame's handling decided the socket must close (flooding: 4029).
    pub(crate) close_with: Option<u16>,
}

fn error(
    code: ErrorCode,
    message: &str,
    r#ref: Option<String>,
    room: Option<String>,
) -> ServerFrame {
    ServerFrame::Error {
        code,
        message: message.to_owned(),
        r#ref,
        room,
        client_id: None,
    }
}

fn expires_at_text(exp: i64) -> String {
    chrono::DateTime::from_timestamp(exp, 0)
        .map(rfc3339)
        .unwrap_or_default()
}

impl Conn {
    pub(crate) fn new(node: Arc<Node>, handle: ConnHandle, claims: Claims) -> Self {
        let in_flight = Arc::new(Semaphore::new(node.settings.max_in_flight_sends));
        Self {
            flood: Flood::new(node.settings.send_rate, node.settings.send_burst),
            close_with: None,
            node,
            handle,
            claims,
            rooms: HashSet::new(),
            in_flight,
            direct: Vec::new(),
        }
    }

    /// The first frame, answering the `auth` frame whose `ref` is `r#ref` (if any).
    pub(crate) fn welcome(&self, r#ref: Option<String>) -> ServerFrame {
        ServerFrame::Welcome {
            r#ref,
            user_id: self.claims.sub.clone(),
            session_id: self.claims.sid.clone(),
            node: self.node.settings.node_id.clone(),
            heartbeat_s: self.node.settings.heartbeat.as_secs(),
            max_frame_bytes: self.node.settings.max_frame_bytes,
            expires_at: expires_at_text(self.claims.exp),
        }
    }

    /// When the access token stops covering this socket.
    pub(crate) fn expires_at(&self) -> Instant {
        super::instant_at(self.claims.exp)
    }

    /// The token's `exp` (unix seconds); changes only on a `refresh`.
    pub(crate) fn expiry_unix(&self) -> i64 {
        self.claims.exp
    }

    /// Resolves once no send of this connection awaits its answer (each answer is queued).
    pub(crate) async fn settled(&self) {
        let all = u32::try_from(self.node.settings.max_in_flight_sends).unwrap_or(u32::MAX);
        let _ = self.in_flight.acquire_many(all).await;
    }

    /// Queues a frame for this socket.
    pub(crate) fn reply(&self, frame: ServerFrame) {
        offer(&self.handle, frame);
    }

    /// Handles one text frame; never fails the connection.
    pub(crate) async fn on_text(&mut self, text: &str) {
        metrics::counter!("onlychat_frames_in_total").increment(1);
        let inbound = match parse_client_frame(text) {
            Ok(inbound) => inbound,
            Err(err) => return self.reply(ServerFrame::error(err)),
        };
        let r#ref = inbound.r#ref;
        if let ClientFrame::Send { room, .. } | ClientFrame::Typing { room } = &inbound.frame {
            match self.flood.check(Instant::now()) {
                Verdict::Pass => {}
                Verdict::Limited => {
                    let client_id = match &inbound.frame {
                        ClientFrame::Send { client_id, .. } => Some(client_id.clone()),
                        _ => None,
                    };
                    return self.reply(ServerFrame::Error {
                        code: ErrorCode::RateLimited,
                        message: "too many messages; slow down".into(),
                        r#ref,
                        room: Some(room.clone()),
                        client_id,
                    });
                }
                Verdict::Close => {
                    self.close_with = Some(onlychat_protocol::close::RATE_LIMITED);
                    return;
                }
            }
        }
        match inbound.frame {
            ClientFrame::Auth { .. } => {
                self.reply(error(
                    ErrorCode::BadFrame,
                    "this socket is already authenticated",
                    r#ref,
                    None,
                ));
            }
            ClientFrame::Ping => self.reply(ServerFrame::Pong { r#ref }),
            ClientFrame::Join { room, since, epoch } => self.join(room, since, epoch, r#ref).await,
            ClientFrame::Leave { room } => self.leave(room, r#ref).await,
            ClientFrame::Send {
                room,
                body,
                client_id,
            } => self.send(room, body, client_id, r#ref).await,
            ClientFrame::Typing { room } => self.typing(room, r#ref),
            ClientFrame::Refresh { token } => self.refresh(&token, r#ref),
        }
    }

    async fn join(
        &mut self,
        room: String,
        since: Option<u64>,
        epoch: Option<String>,
        r#ref: Option<String>,
    ) {
        if !self.rooms.contains(&room)
            && self.rooms.len() >= self.node.settings.max_rooms_per_connection
        {
            return self.reply(error(
                ErrorCode::TooManyRooms,
                "this connection is in too many rooms",
                r#ref,
                Some(room),
            ));
        }
        // A client resuming from another node may have seen further than this node has read
        // (it just started, or its consumer is behind): wait, bounded, until it has, so the
        // resume is exact instead of `recovered: false` and a replay of what the client has.
        // A `since` beyond the log's end was never a position (a bad or hostile client): no
        // wait, it gets `recovered: false` at once.
        if let Some(since) = since
            && epoch
                .as_deref()
                .is_none_or(|e| e == self.node.registry.epoch())
        {
            let partition = self.node.deps.bus.partition_of(&room);
            if let Some(read) = self.node.registry.when_read(partition, since)
                && self
                    .node
                    .deps
                    .bus
                    .log_end(partition)
                    .await
                    .is_none_or(|end| since <= end)
            {
                let _ = tokio::time::timeout(self.node.settings.read_back_timeout, read).await;
            }
        }
        let outcome = self
            .node
            .registry
            .join(&room, &self.handle, since, epoch.as_deref());
        let newly_joined = self.rooms.insert(room.clone());
        let local = self.node.registry.local_online(&room);
        let online = self
            .node
            .deps
            .presence
            .enter(&room, &self.claims.sub, local)
            .await;
        let replay = self.node.resolve_replay(&room, outcome.replay).await;
        let joined = ServerFrame::Joined {
            r#ref,
            room: room.clone(),
            epoch: self.node.registry.epoch().to_owned(),
            position: outcome.position,
            recovered: replay.recovered,
            online,
        };
        metrics::counter!("onlychat_joins_total").increment(1);
        self.direct.push(Frame::from(joined.to_text()));
        self.direct.extend(replay.frames);
        if newly_joined && outcome.first_for_user {
            self.announce(&room, PresenceKind::Join);
        }
    }

    async fn leave(&mut self, room: String, r#ref: Option<String>) {
        if self.rooms.remove(&room) && self.node.registry.leave(&room, &self.handle) {
            self.node.deps.presence.exit(&room, &self.claims.sub).await;
            self.announce(&room, PresenceKind::Leave);
        }
        self.reply(ServerFrame::Left { r#ref, room });
    }

    async fn send(&mut self, room: String, body: String, client_id: String, r#ref: Option<String>) {
        assert!(
            !(self.node.settings.fault_injection && body == crate::PANIC_BODY),
            "fault injection: a panic in a frame handler"
        );
        if !self.rooms.contains(&room) {
            return self.reply(ServerFrame::Error {
                code: ErrorCode::NotJoined,
                message: "join the room before sending to it".into(),
                r#ref,
                room: Some(room),
                client_id: Some(client_id),
            });
        }
        // A resend of a message this node has read: answer the original's ack, publish nothing.
        if let Some(original) = self
            .node
            .registry
            .original(&room, &self.claims.sub, &client_id)
        {
            let Original {
                id, position, ts, ..
            } = original;
            return self.reply(ServerFrame::Ack {
                r#ref,
                room,
                client_id,
                id,
                position,
                ts,
            });
        }
        // Bounded in-flight sends: a client that outruns the log stops being read.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let id = uuid::Uuid::now_v7().to_string();
        let ts = rfc3339(chrono::Utc::now());
        let event = BusEvent::Message {
            id: id.clone(),
            room: room.clone(),
            from: self.claims.sub.clone(),
            from_name: self.claims.name.clone(),
            body,
            client_id: client_id.clone(),
            ts: ts.clone(),
        };
        metrics::counter!("onlychat_messages_in_total").increment(1);
        let spans = crate::trace::SendSpans::start(&room, &self.claims.sub, &client_id);
        let headers = spans.as_ref().map(SendSpans::headers).unwrap_or_default();
        let published = self.node.deps.bus.publish_with(&event, headers);
        let (node, handle, from) = (
            self.node.clone(),
            self.handle.clone(),
            self.claims.sub.clone(),
        );
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let published = published.await;
            if let Some(spans) = spans {
                spans.end(published.as_ref().map(|p| *p).map_err(|e| e as _));
            }
            let reply = match published {
                Ok(position) => {
                    metrics::histogram!("onlychat_produce_seconds")
                        .record(started.elapsed().as_secs_f64());
                    node.settle(
                        room,
                        client_id,
                        r#ref,
                        &from,
                        Original::new(id, position, ts),
                    )
                    .await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "send not acknowledged by the log");
                    unavailable(r#ref, room, client_id)
                }
            };
            offer(&handle, reply);
            drop(permit);
        });
    }

    fn typing(&self, room: String, r#ref: Option<String>) {
        if !self.rooms.contains(&room) {
            return self.reply(error(
                ErrorCode::NotJoined,
                "join the room first",
                r#ref,
                Some(room),
            ));
        }
        let event = BusEvent::Typing {
            room,
            user_id: self.claims.sub.clone(),
            username: self.claims.name.clone(),
        };
        // Typing is best effort: nobody waits for its acknowledgement.
        drop(self.node.deps.bus.publish(&event));
    }

    fn refresh(&mut self, token: &str, r#ref: Option<String>) {
        match self.node.deps.keys.verify(token) {
            Ok(claims)
                if claims.sid == self.claims.sid
                    && claims.sub == self.claims.sub
                    && self.node.revocation_of(&claims).is_none() =>
            {
                if claims.exp > self.claims.exp {
                    self.claims = claims;
                }
                self.reply(ServerFrame::Refreshed {
                    r#ref,
                    expires_at: expires_at_text(self.claims.exp),
                });
            }
            _ => self.reply(error(
                ErrorCode::InvalidToken,
                "not a valid token of this session",
                r#ref,
                None,
            )),
        }
    }

    fn announce(&self, room: &str, event: PresenceKind) {
        let event = BusEvent::Presence(PresenceEvent {
            room: room.to_owned(),
            user_id: self.claims.sub.clone(),
            username: self.claims.name.clone(),
            event,
            node: self.node.settings.node_id.clone(),
        });
        drop(self.node.deps.bus.publish(&event));
    }

    /// Leaves every room on disconnect and tells the others.
    pub(crate) async fn finish(self) {
        for room in self.node.registry.detach(&self.handle) {
            self.node.deps.presence.exit(&room, &self.claims.sub).await;
            self.announce(&room, PresenceKind::Leave);
        }
    }
}

fn unavailable(r#ref: Option<String>, room: String, client_id: String) -> ServerFrame {
    ServerFrame::Error {
        code: ErrorCode::Unavailable,
        message: "the message log did not acknowledge; resend with the same client_id".into(),
        r#ref,
        room: Some(room),
        client_id: Some(client_id),
    }
}

impl Node {
    /// The ack of a message the log accepted at `ours.position`. It waits until this node has
    /// read that position, because only then is it known whether an earlier copy (a concurrent
    /// resend, maybe via another node) came first; the ack then names the copy that counts.
    async fn settle(
        &self,
        room: String,
        client_id: String,
        r#ref: Option<String>,
        from: &str,
        ours: Original,
    ) -> ServerFrame {
        let partition = self.registry.partition_of(&room);
        if let Some(read) = self.registry.when_read(partition, ours.position)
            && !matches!(
                tokio::time::timeout(self.settings.read_back_timeout, read).await,
                Ok(Ok(()))
            )
        {
            // Durable but unconfirmed: "unavailable" tells the client to resend, which dedupes.
            return unavailable(r#ref, room, client_id);
        }
        let Original {
            id, position, ts, ..
        } = self
            .registry
            .original(&room, from, &client_id)
            .unwrap_or(ours);
        ServerFrame::Ack {
            r#ref,
            room,
            client_id,
            id,
            position,
            ts,
        }
    }
}

fn offer(handle: &ConnHandle, frame: ServerFrame) {
    let text = Frame::from(frame.to_text());
    if handle.tx.try_send(text).is_err() {
        handle
            .kill
            .send_replace(Some(onlychat_protocol::close::TOO_SLOW));
    }
}
