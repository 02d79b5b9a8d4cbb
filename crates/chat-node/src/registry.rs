//! Who is connected to this node and in which rooms, and the fan-out of the log to them.
//!
//! One mutex guards rooms, sessions and the per-partition positions together: the consumer
//! advances a partition's position and hands the event to the room's members under the lock,
//! and `join` adds a member and reads the position under the same lock. That is what makes
//! `joined.position` an exact seam: every later position reaches the new member.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use onlychat_bus::{Delivered, DeliverySink};
use onlychat_protocol::{BusEvent, ServerFrame, close};
use tokio::sync::{mpsc, oneshot, watch};

use crate::recent::{Buffered, Original, Recent, RecentLimits};

/// A connection's id, unique within this node.
pub type ConnId = u64;

/// A serialized server frame. Cloning shares the bytes: a message fanned out to a thousand
/// members is encoded once and handed to each socket's writer without a copy.
pub type Frame = bytestring::ByteString;

/// How the registry reaches one connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: ConnId,
    pub user_id: String,
    pub sid: String,
    /// Bounded outbound queue of serialized frames.
    pub tx: mpsc::Sender<Frame>,
    /// Set once to ask the connection to close with a code.
    pub kill: watch::Sender<Option<u16>>,
}

impl ConnHandle {
    /// Queues a frame; a full queue means a slow consumer, closed with 4008.
    fn offer(&self, frame: &Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame.clone()) {
            self.kill.send_replace(Some(close::TOO_SLOW));
        }
    }
}

struct Inner {
    rooms: HashMap<String, HashMap<ConnId, ConnHandle>>,
    sessions: HashMap<String, HashMap<ConnId, ConnHandle>>,
    /// Per partition, the last position handed out.
    positions: HashMap<i32, u64>,
    /// Per partition, where this node began reading: nothing before it is in `recent`.
    starts: HashMap<i32, u64>,
    recent: Recent,
    /// Acks waiting for this node to have read a position (so the dedupe verdict is known).
    waiters: HashMap<i32, Vec<(u64, oneshot::Sender<()>)>>,
}

/// This node's connections and rooms.
pub struct Registry {
    inner: Mutex<Inner>,
    epoch: String,
    partition_of: Box<dyn Fn(&str) -> i32 + Send + Sync>,
}

/// What `join` reports.
pub struct JoinOutcome {
    /// The seam: every message with a greater position reaches the member.
    pub position: u64,
    /// Whether this is the user's first connection in the room on this node.
    pub first_for_user: bool,
    /// What to send before live traffic, for a join with `since`.
    pub replay: Replay,
}

/// The replay a `join` with `since` gets, decided atomically with the seam.
#[derive(Debug)]
pub enum Replay {
    /// No `since`: live traffic only.
    None,
    /// Every message after `since` is in the buffer: these, then live.
    Buffered(Vec<Buffered>),
    /// The buffer lacks positions up to `floor`: read `(since, floor]` from the store first.
    FromStore {
        since: u64,
        floor: u64,
        partition: i32,
        then: Vec<Buffered>,
    },
    /// `since` is from another epoch or out of reach: `recovered: false` and the latest page.
    Stale {
        partition: i32,
        floor: u64,
        buffered: Vec<Buffered>,
    },
}

impl Registry {
    pub fn new(
        epoch: String,
        partition_of: Box<dyn Fn(&str) -> i32 + Send + Sync>,
        limits: RecentLimits,
    ) -> Self {
        let inner = Inner {
            rooms: HashMap::new(),
            sessions: HashMap::new(),
            positions: HashMap::new(),
            starts: HashMap::new(),
            recent: Recent::new(limits),
            waiters: HashMap::new(),
        };
        Self {
            inner: Mutex::new(inner),
            epoch,
            partition_of,
        }
    }

    /// The partition a room's messages are in.
    pub fn partition_of(&self, room: &str) -> i32 {
        (self.partition_of)(room)
    }

    /// Takes in messages read before this node started (standalone's stored log), so resends
    /// of them are still recognised; nothing is delivered.
    pub fn remember(&self, messages: Vec<onlychat_protocol::ChatMessage>) {
        let mut inner = self.lock();
        for message in messages {
            let start = inner
                .starts
                .get(&self.partition_of(&message.room))
                .copied()
                .unwrap_or(0);
            inner.recent.admit(message, start);
        }
    }

    /// The original of a resent message (same room, sender, `client_id`) this node has read.
    pub fn original(&self, room: &str, from: &str, client_id: &str) -> Option<Original> {
        self.lock().recent.original(room, from, client_id).cloned()
    }

    /// Resolves once this node has read `position` of `partition` (`None`: already has).
    /// Waiters whose receiver was dropped (a bounded wait that gave up) are pruned here, so the
    /// list holds only live waits however many give up.
    pub fn when_read(&self, partition: i32, position: u64) -> Option<oneshot::Receiver<()>> {
        let mut inner = self.lock();
        if inner.positions.get(&partition).copied().unwrap_or(0) >= position {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let waiters = inner.waiters.entry(partition).or_default();
        waiters.retain(|(_, waiting)| !waiting.is_closed());
        waiters.push((position, tx));
        Some(rx)
    }

    /// How many waits for a position are registered (all partitions).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiters.values().map(Vec::len).sum()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bus epoch messages are stamped with.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Registers an authenticated connection under its session, for eviction.
    pub fn attach(&self, conn: &ConnHandle) {
        self.lock()
            .sessions
            .entry(conn.sid.clone())
            .or_default()
            .insert(conn.id, conn.clone());
    }

    /// Removes a connection from its session and every room; returns the rooms it left for good
    /// (no other connection of the same user remains in them here).
    pub fn detach(&self, conn: &ConnHandle) -> Vec<String> {
        let mut inner = self.lock();
        if let Some(conns) = inner.sessions.get_mut(&conn.sid) {
            conns.remove(&conn.id);
            if conns.is_empty() {
                inner.sessions.remove(&conn.sid);
            }
        }
        let rooms: Vec<String> = inner
            .rooms
            .iter()
            .filter(|(_, m)| m.contains_key(&conn.id))
            .map(|(r, _)| r.clone())
            .collect();
        rooms
            .into_iter()
            .filter(|room| Self::remove_member(&mut inner, room, conn))
            .collect()
    }

    /// Adds a connection to a room; with `since`, also decides its replay under the same lock,
    /// so replay and live traffic meet exactly at the seam. `epoch` is the one `since` came from.
    pub fn join(
        &self,
        room: &str,
        conn: &ConnHandle,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> JoinOutcome {
        let partition = (self.partition_of)(room);
        let mut inner = self.lock();
        let members = inner.rooms.entry(room.to_owned()).or_default();
        let first_for_user = !members.values().any(|m| m.user_id == conn.user_id);
        members.insert(conn.id, conn.clone());
        let position = inner.positions.get(&partition).copied().unwrap_or(0);
        let start = inner.starts.get(&partition).copied().unwrap_or(0);
        let replay = match since {
            None => Replay::None,
            Some(since) if since > position || epoch.is_some_and(|e| e != self.epoch) => {
                let floor = inner.recent.floor(room, start);
                Replay::Stale {
                    partition,
                    floor,
                    buffered: inner.recent.all(room),
                }
            }
            Some(since) => match inner.recent.after(room, since, start) {
                Ok(buffered) => Replay::Buffered(buffered),
                Err(floor) => Replay::FromStore {
                    since,
                    floor,
                    partition,
                    then: inner.recent.all(room),
                },
            },
        };
        JoinOutcome {
            position,
            first_for_user,
            replay,
        }
    }

    /// Removes a connection from a room; true if it was the user's last one there.
    pub fn leave(&self, room: &str, conn: &ConnHandle) -> bool {
        Self::remove_member(&mut self.lock(), room, conn)
    }

    fn remove_member(inner: &mut Inner, room: &str, conn: &ConnHandle) -> bool {
        let Some(members) = inner.rooms.get_mut(room) else {
            return false;
        };
        if members.remove(&conn.id).is_none() {
            return false;
        }
        let last = !members.values().any(|m| m.user_id == conn.user_id);
        if members.is_empty() {
            inner.rooms.remove(room);
        }
        last
    }

    /// User ids with a connection in the room on this node.
    pub fn local_online(&self, room: &str) -> Vec<String> {
        let inner = self.lock();
        let users: HashSet<&String> = inner
            .rooms
            .get(room)
            .map(|m| m.values().map(|c| &c.user_id).collect())
            .unwrap_or_default();
        let mut users: Vec<String> = users.into_iter().cloned().collect();
        users.sort();
        users
    }

    /// Every room with a member here, with the user ids present (for presence refreshes).
    pub fn memberships(&self) -> Vec<(String, Vec<String>)> {
        let inner = self.lock();
        inner
            .rooms
            .iter()
            .map(|(room, members)| {
                let users: HashSet<&String> = members.values().map(|c| &c.user_id).collect();
                (room.clone(), users.into_iter().cloned().collect())
            })
            .collect()
    }

    /// Asks every connection of a session to close with `code`; returns how many.
    pub fn close_session(&self, sid: &str, code: u16) -> usize {
        let inner = self.lock();
        let Some(conns) = inner.sessions.get(sid) else {
            return 0;
        };
        for conn in conns.values() {
            conn.kill.send_replace(Some(code));
        }
        conns.len()
    }

    /// Every connection open on this node (for the drain).
    pub fn connections(&self) -> Vec<ConnHandle> {
        let inner = self.lock();
        inner
            .sessions
            .values()
            .flat_map(HashMap::values)
            .cloned()
            .collect()
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.lock().sessions.values().map(HashMap::len).sum()
    }

    fn fan_out(
        &self,
        inner: &Inner,
        room: &str,
        frame: &ServerFrame,
        skip_user: Option<&str>,
    ) -> usize {
        if !inner.rooms.contains_key(room) {
            return 0;
        }
        self.fan_out_text(inner, room, &Frame::from(frame.to_text()), skip_user)
    }

    fn fan_out_text(
        &self,
        inner: &Inner,
        room: &str,
        text: &Frame,
        skip_user: Option<&str>,
    ) -> usize {
        let Some(members) = inner.rooms.get(room) else {
            return 0;
        };
        let mut n = 0;
        for member in members
            .values()
            .filter(|m| skip_user != Some(m.user_id.as_str()))
        {
            member.offer(text);
            n += 1;
        }
        n
    }
}

impl DeliverySink for Registry {
    fn positioned(&self, partition: i32, position: u64) {
        let mut inner = self.lock();
        inner.positions.insert(partition, position);
        inner.starts.insert(partition, position);
    }

    fn deliver(&self, delivered: Delivered) {
        let mut inner = self.lock();
        let position = inner.positions.entry(delivered.partition).or_default();
        if delivered.position <= *position {
            return; // already handed out (a re-read after a consumer reset)
        }
        *position = delivered.position;
        if let Some(waiters) = inner.waiters.get_mut(&delivered.partition) {
            for (_, tx) in waiters.extract_if(.., |(p, _)| *p <= delivered.position) {
                let _ = tx.send(());
            }
        }
        let delivered_count = match delivered.event {
            BusEvent::Typing {
                room,
                user_id,
                username,
            } => {
                let frame = ServerFrame::Typing {
                    room: room.clone(),
                    user_id: user_id.clone(),
                    username,
                };
                self.fan_out(&inner, &room, &frame, Some(&user_id))
            }
            BusEvent::Presence(p) => {
                let frame = ServerFrame::Presence {
                    room: p.room.clone(),
                    user_id: p.user_id.clone(),
                    username: p.username,
                    event: p.event,
                };
                // A user is not told about their own coming and going.
                self.fan_out(&inner, &p.room, &frame, Some(&p.user_id))
            }
            event @ BusEvent::Message { .. } => {
                let room = event.room().to_owned();
                // Only a node with members in the room has a delivery to trace: records read
                // back at start, or rooms with nobody here, make no span.
                let span = crate::trace::start_deliver(&delivered.headers, &room, || {
                    inner.rooms.get(&room).is_some_and(|m| !m.is_empty())
                });
                let Some(message) = event.into_chat_message(delivered.position, &self.epoch) else {
                    return;
                };
                let accepted = chrono::DateTime::parse_from_rfc3339(&message.ts).ok();
                let start = inner.starts.get(&delivered.partition).copied().unwrap_or(0);
                let Some(frame) = inner.recent.admit(message, start) else {
                    metrics::counter!("onlychat_duplicates_dropped_total").increment(1);
                    crate::trace::end_deliver(span, 0);
                    return;
                };
                let sockets = self.fan_out_text(&inner, &room, &frame, None);
                if let Some(accepted) = accepted.filter(|_| sockets > 0) {
                    record_deliver_latency(accepted);
                }
                crate::trace::end_deliver(span, sockets);
                sockets
            }
        };
        metrics::counter!("onlychat_messages_out_total").increment(delivered_count as u64);
    }
}

/// Records `onlychat_deliver_latency_seconds`: from the moment the sender's node accepted the
/// message (its `ts`, that node's clock) to its fan-out here.
fn record_deliver_latency(accepted: chrono::DateTime<chrono::FixedOffset>) {
    let elapsed = chrono::Utc::now().signed_duration_since(accepted);
    metrics::histogram!("onlychat_deliver_latency_seconds")
        .record(elapsed.as_seconds_f64().max(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(
        id: ConnId,
        user: &str,
        queue: usize,
    ) -> (
        ConnHandle,
        mpsc::Receiver<Frame>,
        watch::Receiver<Option<u16>>,
    ) {
        let (tx, rx) = mpsc::channel(queue);
        let (kill, kill_rx) = watch::channel(None);
        (
            ConnHandle {
                id,
                user_id: user.into(),
                sid: format!("s-{user}"),
                tx,
                kill,
            },
            rx,
            kill_rx,
        )
    }

    const LIMITS: RecentLimits = RecentLimits {
        dedupe_window_ms: 600_000,
        per_room: 100,
    };

    fn message(room: &str, position: u64) -> Delivered {
        Delivered {
            partition: 0,
            position,
            event: BusEvent::Message {
                id: format!("m{position}"),
                room: room.into(),
                from: "u".into(),
                from_name: "n".into(),
                body: "hi".into(),
                client_id: format!("c{position}"),
                ts: "2026-12-04T10:00:00.000Z".into(),
            },
            headers: Vec::new(),
        }
    }

    #[test]
    fn join_reports_the_seam_and_later_messages_arrive() {
        let registry = Registry::new("e".into(), Box::new(|_| 0), LIMITS);
        registry.positioned(0, 41);
        let (alice, mut rx, _) = conn(1, "alice", 8);
        registry.attach(&alice);
        assert_eq!(registry.join("lobby", &alice, None, None).position, 41);
        registry.deliver(message("lobby", 42));
        registry.deliver(message("other", 43));
        let text = rx.try_recv().expect("one message");
        assert!(text.contains(r#""position":42"#));
        assert!(rx.try_recv().is_err());
        assert_eq!(registry.join("other", &alice, None, None).position, 43);
    }

    #[test]
    fn waits_that_gave_up_are_pruned_and_live_ones_resolve() {
        let registry = Registry::new("e".into(), Box::new(|_| 0), LIMITS);
        registry.positioned(0, 10);
        assert!(registry.when_read(0, 10).is_none(), "already read");
        for _ in 0..1000 {
            drop(registry.when_read(0, u64::MAX).expect("a wait"));
        }
        let live = registry.when_read(0, 11).expect("a wait");
        assert_eq!(registry.waiting(), 1, "the 1000 abandoned waits are gone");
        registry.deliver(message("lobby", 11));
        assert!(live.blocking_recv().is_ok(), "resolved once read");
        assert_eq!(registry.waiting(), 0);
    }

    #[test]
    fn a_full_queue_closes_the_slow_connection_with_4008() {
        let registry = Registry::new("e".into(), Box::new(|_| 0), LIMITS);
        let (slow, _rx, kill) = conn(1, "slow", 1);
        registry.join("lobby", &slow, None, None);
        registry.deliver(message("lobby", 1));
        assert_eq!(*kill.borrow(), None);
        registry.deliver(message("lobby", 2));
        assert_eq!(*kill.borrow(), Some(close::TOO_SLOW));
    }

    #[test]
    fn closing_a_session_reaches_all_its_connections() {
        let registry = Registry::new("e".into(), Box::new(|_| 0), LIMITS);
        let (a, _, kill_a) = conn(1, "alice", 1);
        let (b, _, kill_b) = conn(2, "alice", 1);
        registry.attach(&a);
        registry.attach(&b);
        assert_eq!(registry.close_session("s-alice", 4001), 2);
        assert_eq!(
            (*kill_a.borrow(), *kill_b.borrow()),
            (Some(4001), Some(4001))
        );
        registry.detach(&a);
        registry.detach(&b);
        assert_eq!(registry.connection_count(), 0);
    }
}
