//! Server-to-client frames.

use serde::Serialize;

use crate::codes::ErrorCode;
use crate::envelope::ChatMessage;

/// A frame the server sends. `ref` is echoed where the frame answers a client frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        /// The `ref` of the `auth` frame it answers (browser flow); none after header auth.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        user_id: String,
        session_id: String,
        node: String,
        heartbeat_s: u64,
        max_frame_bytes: usize,
        expires_at: String,
    },
    Joined {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        room: String,
        epoch: String,
        position: u64,
        recovered: bool,
        online: Vec<String>,
    },
    Left {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        room: String,
    },
    Message(ChatMessage),
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        room: String,
        client_id: String,
        id: String,
        position: u64,
        ts: String,
    },
    Presence {
        room: String,
        user_id: String,
        username: String,
        event: PresenceKind,
    },
    Typing {
        room: String,
        user_id: String,
        username: String,
    },
    Refreshed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        expires_at: String,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
}

/// Whether a user came into or went out of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    Join,
    Leave,
}

impl ServerFrame {
    /// Serializes the frame to its JSON text.
    pub fn to_text(&self) -> String {
        // Serializing these plain structs cannot fail: every key is a string and no value is a
        // map with non-string keys or a failing Serialize impl.
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from(r#"{"type":"error","code":"internal"}"#))
    }

    /// An `error` frame answering a refused client frame.
    pub fn error(err: crate::FrameError) -> Self {
        Self::Error {
            code: err.code,
            message: err.message,
            r#ref: err.r#ref,
            room: err.room,
            client_id: err.client_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_type_and_ref() {
        let text = ServerFrame::Pong {
            r#ref: Some("r1".into()),
        }
        .to_text();
        assert_eq!(text, r#"{"type":"pong","ref":"r1"}"#);
        let text = ServerFrame::Left {
            r#ref: None,
            room: "lobby".into(),
        }
        .to_text();
        assert_eq!(text, r#"{"type":"left","room":"lobby"}"#);
    }

    #[test]
    fn a_message_frame_is_flat() {
        let msg = ChatMessage {
            room: "lobby".into(),
            id: "m1".into(),
            position: 7,
            epoch: "e".into(),
            from: "u1".into(),
            from_name: "alice".into(),
            body: "hi".into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
            client_id: "c1".into(),
        };
        let value: serde_json::Value =
            serde_json::from_str(&ServerFrame::Message(msg).to_text()).expect("json");
        assert_eq!(value["type"], "message");
        assert_eq!(value["position"], 7);
        assert_eq!(value["from_name"], "alice");
    }
}
