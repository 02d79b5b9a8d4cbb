//! What a node remembers of the recent log, rebuilt from the log itself at start (the bus
//! starts reading `lookback` back): the dedupe window and a replay buffer per room.
//!
//! Dedupe rule (the same one the history writer applies in SQL, so every consumer agrees): a
//! message is a duplicate if an earlier message of the same room, sender and `client_id` has a
//! timestamp within the window before its own. Duplicates are neither delivered nor buffered;
//! a resend is answered with the original's `ack`.

use crate::registry::Frame;
use std::collections::{HashMap, VecDeque};

use onlychat_protocol::{ChatMessage, ServerFrame, ts_ms};

/// The original of a deduplicated message: what its `ack` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub id: String,
    pub position: u64,
    pub ts: String,
    ts_ms: i64,
}

impl Original {
    /// A message's own identity, before any dedupe verdict.
    pub fn new(id: String, position: u64, ts: String) -> Self {
        let ts_ms = ts_ms(&ts);
        Self {
            id,
            position,
            ts,
            ts_ms,
        }
    }
}

type DedupeKey = (String, String, String);

/// One buffered message, ready to send.
#[derive(Debug, Clone)]
pub struct Buffered {
    pub position: u64,
    pub frame: Frame,
}

#[derive(Debug, Default)]
struct RoomBuffer {
    messages: VecDeque<Buffered>,
    /// Positions at or below this may be missing from `messages`.
    floor: u64,
}

/// Limits of what is remembered.
#[derive(Debug, Clone, Copy)]
pub struct RecentLimits {
    pub dedupe_window_ms: i64,
    pub per_room: usize,
}

/// The dedupe window and per-room replay buffers.
#[derive(Debug)]
pub struct Recent {
    limits: RecentLimits,
    originals: HashMap<DedupeKey, Original>,
    expiry: VecDeque<(i64, DedupeKey)>,
    newest_ts_ms: i64,
    rooms: HashMap<String, RoomBuffer>,
}

impl Recent {
    pub fn new(limits: RecentLimits) -> Self {
        Self {
            limits,
            originals: HashMap::new(),
            expiry: VecDeque::new(),
            newest_ts_ms: 0,
            rooms: HashMap::new(),
        }
    }

    fn key(room: &str, from: &str, client_id: &str) -> DedupeKey {
        (room.to_owned(), from.to_owned(), client_id.to_owned())
    }

    /// The original message of this room, sender and `client_id` within the window, if any.
    pub fn original(&self, room: &str, from: &str, client_id: &str) -> Option<&Original> {
        self.originals.get(&Self::key(room, from, client_id))
    }

    /// Takes in one message of the log; returns its frame text, or `None` for a duplicate.
    /// `start` is where the node began reading the room's partition.
    pub fn admit(&mut self, message: ChatMessage, start: u64) -> Option<Frame> {
        let ts_ms = ts_ms(&message.ts);
        let key = Self::key(&message.room, &message.from, &message.client_id);
        if self
            .originals
            .get(&key)
            .is_some_and(|o| o.ts_ms > ts_ms - self.limits.dedupe_window_ms)
        {
            return None;
        }
        self.expire(ts_ms);
        let original = Original {
            id: message.id.clone(),
            position: message.position,
            ts: message.ts.clone(),
            ts_ms,
        };
        self.expiry.push_back((ts_ms, key.clone()));
        self.originals.insert(key, original);
        let (room, position) = (message.room.clone(), message.position);
        let frame = Frame::from(ServerFrame::Message(message).to_text());
        let buffer = self.rooms.entry(room).or_insert_with(|| RoomBuffer {
            messages: VecDeque::new(),
            floor: start,
        });
        // Only what lies after the node's start in the log, in log order: a message from
        // before it (standalone's stored log, read back for dedupe) is replayed from the store,
        // and buffering it too would replay it twice.
        if position > buffer.floor && buffer.messages.back().is_none_or(|b| b.position < position) {
            buffer.messages.push_back(Buffered {
                position,
                frame: frame.clone(),
            });
        }
        while buffer.messages.len() > self.limits.per_room {
            if let Some(dropped) = buffer.messages.pop_front() {
                buffer.floor = dropped.position;
            }
        }
        Some(frame)
    }

    /// Forgets originals that no later message can match (by the newest timestamp seen).
    fn expire(&mut self, ts_ms: i64) {
        self.newest_ts_ms = self.newest_ts_ms.max(ts_ms);
        let horizon = self.newest_ts_ms - 2 * self.limits.dedupe_window_ms;
        while let Some((at, _)) = self.expiry.front()
            && *at < horizon
        {
            if let Some((at, key)) = self.expiry.pop_front()
                && self.originals.get(&key).is_some_and(|o| o.ts_ms == at)
            {
                self.originals.remove(&key);
            }
        }
    }

    /// The buffered messages of a room after `since`, if the buffer holds all of them.
    pub fn after(&self, room: &str, since: u64, start: u64) -> Result<Vec<Buffered>, u64> {
        let Some(buffer) = self.rooms.get(room) else {
            return if since >= start {
                Ok(Vec::new())
            } else {
                Err(start)
            };
        };
        if since < buffer.floor {
            return Err(buffer.floor);
        }
        Ok(buffer
            .messages
            .iter()
            .filter(|b| b.position > since)
            .cloned()
            .collect())
    }

    /// Positions of the room at or below this may be missing from its buffer.
    pub fn floor(&self, room: &str, start: u64) -> u64 {
        self.rooms.get(room).map_or(start, |b| b.floor)
    }

    /// Every buffered message of a room (for a replay that starts in the store).
    pub fn all(&self, room: &str) -> Vec<Buffered> {
        self.rooms
            .get(room)
            .map(|b| b.messages.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(position: u64, client_id: &str, ts: &str) -> ChatMessage {
        ChatMessage {
            room: "lobby".into(),
            id: format!("m{position}"),
            position,
            epoch: "e".into(),
            from: "u1".into(),
            from_name: "alice".into(),
            body: "hi".into(),
            ts: ts.into(),
            client_id: client_id.into(),
        }
    }

    fn limits() -> RecentLimits {
        RecentLimits {
            dedupe_window_ms: 60_000,
            per_room: 3,
        }
    }

    #[test]
    fn a_resend_within_the_window_is_a_duplicate_of_the_first() {
        let mut recent = Recent::new(limits());
        assert!(
            recent
                .admit(message(1, "c1", "2026-12-04T10:00:00Z"), 0)
                .is_some()
        );
        assert!(
            recent
                .admit(message(2, "c1", "2026-12-04T10:00:30Z"), 0)
                .is_none()
        );
        assert_eq!(
            recent.original("lobby", "u1", "c1").map(|o| o.position),
            Some(1)
        );
        // After the window the same client_id is a new message.
        assert!(
            recent
                .admit(message(3, "c1", "2026-12-04T10:05:00Z"), 0)
                .is_some()
        );
        assert_eq!(
            recent.original("lobby", "u1", "c1").map(|o| o.position),
            Some(3)
        );
    }

    #[test]
    fn messages_from_before_the_start_count_for_dedupe_but_are_not_buffered() {
        let mut recent = Recent::new(limits());
        // Read back from the stored log at start (positions up to the start, 10).
        assert!(
            recent
                .admit(message(4, "a", "2026-01-01T00:00:00Z"), 10)
                .is_some()
        );
        assert!(
            recent
                .admit(message(9, "b", "2026-01-01T00:00:01Z"), 10)
                .is_some()
        );
        assert!(
            recent
                .admit(message(12, "c", "2026-01-01T00:00:02Z"), 10)
                .is_some()
        );
        let buffered: Vec<u64> = recent.all("lobby").iter().map(|b| b.position).collect();
        assert_eq!(buffered, vec![12], "only what came after the start");
        assert!(
            recent.original("lobby", "u1", "a").is_some(),
            "still known for dedupe"
        );
    }

    #[test]
    fn the_buffer_replays_what_it_holds_and_knows_what_it_lost() {
        let mut recent = Recent::new(limits());
        for p in 1..=5 {
            recent.admit(message(p, &format!("c{p}"), "2026-12-04T10:00:00Z"), 0);
        }
        let positions = |v: Vec<Buffered>| v.into_iter().map(|b| b.position).collect::<Vec<_>>();
        assert_eq!(recent.after("lobby", 3, 0).map(positions), Ok(vec![4, 5]));
        assert_eq!(
            recent.after("lobby", 2, 0).map(positions),
            Ok(vec![3, 4, 5])
        );
        assert_eq!(recent.after("lobby", 1, 0).map(positions), Err(2));
        assert_eq!(recent.after("empty", 7, 7).map(positions), Ok(vec![]));
        assert_eq!(recent.after("empty", 6, 7).map(positions), Err(7));
    }
}
