//! Client-to-server frames and their parsing. Parsing never fails silently: every problem is a
//! [`FrameError`] carrying the code to send back and the `ref`/`room`/`client_id` to echo.

use serde::Deserialize;
use serde_json::Value;

use crate::codes::ErrorCode;
use crate::validate;

/// A frame a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Join {
        room: String,
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        epoch: Option<String>,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        body: String,
        client_id: String,
    },
    Typing {
        room: String,
    },
    Refresh {
        token: String,
    },
    Ping,
}

const KNOWN_TYPES: &[&str] = &["auth", "join", "leave", "send", "typing", "refresh", "ping"];

/// A parsed and validated client frame with the `ref` its replies must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub r#ref: Option<String>,
    pub frame: ClientFrame,
}

/// Why a frame was refused, with everything the `error` reply must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub r#ref: Option<String>,
    pub room: Option<String>,
    pub client_id: Option<String>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            r#ref: None,
            room: None,
            client_id: None,
        }
    }
}

fn str_field(value: &Value, name: &str) -> Option<String> {
    value.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Parses one text frame into a validated [`Inbound`].
pub fn parse_client_frame(text: &str) -> Result<Inbound, FrameError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::BadFrame, format!("frame is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(FrameError::new(
            ErrorCode::BadFrame,
            "frame must be a JSON object",
        ));
    }
    let r#ref = match value.get("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if validate::client_id_ok(r) => Some(r.clone()),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::BadFrame,
                "`ref` must be a string of 1-64 characters",
            ));
        }
    };
    let echo = |mut err: FrameError| {
        err.r#ref.clone_from(&r#ref);
        err.room = str_field(&value, "room");
        err.client_id = str_field(&value, "client_id");
        err
    };
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(echo(FrameError::new(
                ErrorCode::BadFrame,
                "`type` must be a string",
            )));
        }
        None => {
            return Err(echo(FrameError::new(
                ErrorCode::BadFrame,
                "frame has no `type`",
            )));
        }
    };
    if !KNOWN_TYPES.contains(&kind) {
        return Err(echo(FrameError::new(
            ErrorCode::BadFrame,
            format!("unknown frame type `{kind}`"),
        )));
    }
    let frame: ClientFrame = serde_json::from_value(value.clone()).map_err(|e| {
        echo(FrameError::new(
            ErrorCode::BadFrame,
            format!("bad `{kind}` frame: {e}"),
        ))
    })?;
    validate_frame(&frame).map_err(echo)?;
    Ok(Inbound { r#ref, frame })
}

fn validate_frame(frame: &ClientFrame) -> Result<(), FrameError> {
    let room = match frame {
        ClientFrame::Join { room, .. }
        | ClientFrame::Leave { room }
        | ClientFrame::Send { room, .. }
        | ClientFrame::Typing { room } => Some(room),
        _ => None,
    };
    if let Some(room) = room
        && !validate::room_name_ok(room)
    {
        return Err(FrameError::new(
            ErrorCode::InvalidRoom,
            "room names are 1-64 of a-z 0-9 _ . -",
        ));
    }
    if let ClientFrame::Send {
        body, client_id, ..
    } = frame
    {
        if !validate::body_ok(body) {
            return Err(FrameError::new(
                ErrorCode::InvalidBody,
                "body must be 1-4096 characters and not only whitespace",
            ));
        }
        if !validate::client_id_ok(client_id) {
            return Err(FrameError::new(
                ErrorCode::BadFrame,
                "client_id must be 1-64 characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse_client_frame(text)
            .expect_err("frame should be refused")
            .code
    }

    #[test]
    fn a_send_frame_parses_with_its_ref() {
        let inbound = parse_client_frame(
            r#"{"type":"send","room":"lobby","body":"hi","client_id":"c1","ref":"r1"}"#,
        )
        .expect("valid");
        assert_eq!(inbound.r#ref.as_deref(), Some("r1"));
        assert_eq!(
            inbound.frame,
            ClientFrame::Send {
                room: "lobby".into(),
                body: "hi".into(),
                client_id: "c1".into()
            }
        );
    }

    #[test]
    fn bad_frames_get_precise_codes() {
        assert_eq!(code_of("not json"), ErrorCode::BadFrame);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code_of(r#"{"room":"x"}"#), ErrorCode::BadFrame);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::BadFrame);
        assert_eq!(code_of(r#"{"type":"join"}"#), ErrorCode::BadFrame);
        assert_eq!(code_of(r#"{"type":"join","room":5}"#), ErrorCode::BadFrame);
        assert_eq!(
            code_of(r#"{"type":"join","room":"Bad Room"}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            code_of(r#"{"type":"send","room":"a","body":"","client_id":"c"}"#),
            ErrorCode::InvalidBody
        );
        let long = "x".repeat(4097);
        let frame = format!(r#"{{"type":"send","room":"a","body":"{long}","client_id":"c"}}"#);
        assert_eq!(code_of(&frame), ErrorCode::InvalidBody);
    }

    #[test]
    fn errors_echo_ref_room_and_client_id() {
        let err = parse_client_frame(
            r#"{"type":"send","room":"a","body":"","client_id":"c9","ref":"r7"}"#,
        )
        .expect_err("empty body");
        assert_eq!(err.r#ref.as_deref(), Some("r7"));
        assert_eq!(err.room.as_deref(), Some("a"));
        assert_eq!(err.client_id.as_deref(), Some("c9"));
    }
}
