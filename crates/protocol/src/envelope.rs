//! What travels on the message bus between nodes. One JSON object per Kafka record, keyed by
//! room, so that a room's events share a partition and keep one order.

use serde::{Deserialize, Serialize};

use crate::server::PresenceKind;

/// A chat message as clients see it in `message` frames and history pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    pub id: String,
    pub position: u64,
    pub epoch: String,
    pub from: String,
    pub from_name: String,
    pub body: String,
    pub ts: String,
    pub client_id: String,
}

/// A presence change, published so members on other nodes see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub room: String,
    pub user_id: String,
    pub username: String,
    pub event: PresenceKind,
    /// The node that saw the change; lets nodes keep a cluster-wide roster per room.
    pub node: String,
}

/// One bus record. Positions are not inside: the bus assigns them (Kafka offset + 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    Message {
        id: String,
        room: String,
        from: String,
        from_name: String,
        body: String,
        client_id: String,
        ts: String,
    },
    Presence(PresenceEvent),
    Typing {
        room: String,
        user_id: String,
        username: String,
    },
}

impl BusEvent {
    /// The room the event belongs to; the bus key.
    pub fn room(&self) -> &str {
        match self {
            Self::Message { room, .. } | Self::Typing { room, .. } => room,
            Self::Presence(p) => &p.room,
        }
    }

    /// Turns a bus message into the frame payload clients see, once its position is known.
    pub fn into_chat_message(self, position: u64, epoch: &str) -> Option<ChatMessage> {
        match self {
            Self::Message {
                id,
                room,
                from,
                from_name,
                body,
                client_id,
                ts,
            } => Some(ChatMessage {
                room,
                id,
                position,
                epoch: epoch.to_owned(),
                from,
                from_name,
                body,
                ts,
                client_id,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_events_round_trip_through_json() {
        let event = BusEvent::Typing {
            room: "r".into(),
            user_id: "u".into(),
            username: "n".into(),
        };
        let text = serde_json::to_string(&event).expect("serializes");
        assert!(text.contains(r#""kind":"typing""#));
        let back: BusEvent = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, event);
    }
}
