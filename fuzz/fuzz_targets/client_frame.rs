//! Client frame parsing (`onlychat_protocol::parse_client_frame`) on arbitrary bytes.
//!
//! Besides "never panics", every outcome is checked against the input, read independently as a
//! `serde_json::Value`:
//! - input that is not a JSON object is refused as `bad_frame` with nothing echoed;
//! - an accepted frame has a valid `ref`, the input's `type`, fields that satisfy PROTOCOL.md's
//!   rules (room names, bodies, client ids) and equal the input's fields, and its canonical JSON
//!   form parses back to the same frame;
//! - a refused frame echoes the input's `ref`/`room`/`client_id` (when its `ref` was valid), its
//!   code is one of the codes frame parsing may give and is justified by the input, and the
//!   `error` reply built from it serialises with that code and `ref`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onlychat_protocol::{
    ClientFrame, ErrorCode, FrameError, Inbound, ServerFrame, parse_client_frame, validate,
};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    // The server only ever parses text frames (UTF-8 already checked by the WebSocket layer);
    // bytes that are not UTF-8 are still used, as their lossy conversion, so no input is wasted.
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});

fn check(text: &str) {
    let result = parse_client_frame(text);
    let value: Option<Value> = serde_json::from_str(text).ok();
    let Some(obj) = value.as_ref().and_then(Value::as_object) else {
        let err = result.expect_err("a frame that is not a JSON object was accepted");
        assert_eq!(err.code, ErrorCode::BadFrame);
        assert_eq!(
            (&err.r#ref, &err.room, &err.client_id),
            (&None, &None, &None),
            "nothing to echo from a frame that is not an object"
        );
        check_error_reply(&err);
        return;
    };
    // What `ref` must be echoed: `Some(r)` when the input's `ref` is valid (or absent/null),
    // `None` when the `ref` itself is bad (then nothing is echoed).
    let valid_ref: Option<Option<String>> = match obj.get("ref") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(r)) if validate::client_id_ok(r) => Some(Some(r.clone())),
        Some(_) => None,
    };
    match result {
        Ok(inbound) => check_accepted(obj, valid_ref, &inbound),
        Err(err) => check_refused(obj, valid_ref, &err),
    }
}

fn check_accepted(obj: &Map<String, Value>, valid_ref: Option<Option<String>>, inbound: &Inbound) {
    let expected_ref = valid_ref.expect("a frame with an invalid `ref` was accepted");
    assert_eq!(inbound.r#ref, expected_ref, "accepted frame's ref");
    assert_eq!(
        obj.get("type").and_then(Value::as_str),
        Some(type_name(&inbound.frame)),
        "accepted frame's type is the input's `type`"
    );
    match &inbound.frame {
        ClientFrame::Join { room, .. }
        | ClientFrame::Leave { room }
        | ClientFrame::Typing { room } => {
            assert!(validate::room_name_ok(room), "accepted bad room {room:?}");
        }
        ClientFrame::Send {
            room,
            body,
            client_id,
        } => {
            assert!(validate::room_name_ok(room), "accepted bad room {room:?}");
            assert!(validate::body_ok(body), "accepted bad body {body:?}");
            assert!(
                validate::client_id_ok(client_id),
                "accepted bad client_id {client_id:?}"
            );
        }
        ClientFrame::Auth { .. } | ClientFrame::Refresh { .. } | ClientFrame::Ping => {}
    }
    // Every field of the parsed frame is exactly the input's field (an absent optional field
    // may be absent or null in the input).
    let canonical = canonical_json(inbound);
    for (key, want) in canonical.as_object().expect("object") {
        let got = obj.get(key);
        if want.is_null() {
            assert!(
                got.is_none_or(Value::is_null),
                "field `{key}` was dropped: input has {got:?}"
            );
        } else {
            assert_eq!(got, Some(want), "field `{key}` differs from the input");
        }
    }
    // The canonical form of an accepted frame is accepted too, as the same frame.
    let again = parse_client_frame(&canonical.to_string()).unwrap_or_else(|e| {
        panic!("canonical form {canonical} of an accepted frame refused: {e:?}")
    });
    assert_eq!(&again, inbound, "canonical form parses to another frame");
}

fn check_refused(obj: &Map<String, Value>, valid_ref: Option<Option<String>>, err: &FrameError) {
    match valid_ref {
        None => {
            assert_eq!(
                err.code,
                ErrorCode::BadFrame,
                "an invalid ref is a bad frame"
            );
            assert_eq!(
                (&err.r#ref, &err.room, &err.client_id),
                (&None, &None, &None),
                "nothing is echoed when the ref itself is invalid"
            );
        }
        Some(expected_ref) => {
            assert_eq!(err.r#ref, expected_ref, "refused frame echoes the ref");
            assert_eq!(
                err.room.as_deref(),
                obj.get("room").and_then(Value::as_str),
                "refused frame echoes the room"
            );
            assert_eq!(
                err.client_id.as_deref(),
                obj.get("client_id").and_then(Value::as_str),
                "refused frame echoes the client_id"
            );
        }
    }
    let kind = obj.get("type").and_then(Value::as_str);
    let room = obj.get("room").and_then(Value::as_str);
    match err.code {
        ErrorCode::BadFrame => {}
        ErrorCode::InvalidRoom => {
            assert!(
                matches!(kind, Some("join" | "leave" | "send" | "typing")),
                "invalid_room for a {kind:?} frame"
            );
            let room = room.expect("invalid_room without a room string");
            assert!(!validate::room_name_ok(room), "valid room {room:?} refused");
        }
        ErrorCode::InvalidBody => {
            assert_eq!(kind, Some("send"), "invalid_body for a non-send frame");
            assert!(
                room.is_some_and(validate::room_name_ok),
                "the room is checked before the body"
            );
            let body = obj.get("body").and_then(Value::as_str);
            let body = body.expect("invalid_body without a body string");
            assert!(!validate::body_ok(body), "valid body {body:?} refused");
        }
        other => panic!("frame parsing gave code {other}, which it never should"),
    }
    assert!(!err.message.is_empty(), "error without a message");
    check_error_reply(err);
}

/// The `error` frame sent back for a refused frame serialises with the right code and `ref`.
fn check_error_reply(err: &FrameError) {
    let reply = serde_json::to_string(&ServerFrame::error(err.clone())).expect("reply serialises");
    let reply: Value = serde_json::from_str(&reply).expect("reply is JSON");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], err.code.as_str());
    assert_eq!(
        reply.get("ref").and_then(Value::as_str),
        err.r#ref.as_deref()
    );
    assert_eq!(
        reply.get("room").and_then(Value::as_str),
        err.room.as_deref()
    );
    assert_eq!(
        reply.get("client_id").and_then(Value::as_str),
        err.client_id.as_deref()
    );
}

fn type_name(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Auth { .. } => "auth",
        ClientFrame::Join { .. } => "join",
        ClientFrame::Leave { .. } => "leave",
        ClientFrame::Send { .. } => "send",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::Refresh { .. } => "refresh",
        ClientFrame::Ping => "ping",
    }
}

/// The frame as PROTOCOL.md writes it (`ClientFrame` has no `Serialize`, on purpose: clients
/// send it, the server only parses it).
fn canonical_json(inbound: &Inbound) -> Value {
    let mut v = match &inbound.frame {
        ClientFrame::Auth { token } => json!({"type": "auth", "token": token}),
        ClientFrame::Join { room, since, epoch } => {
            json!({"type": "join", "room": room, "since": since, "epoch": epoch})
        }
        ClientFrame::Leave { room } => json!({"type": "leave", "room": room}),
        ClientFrame::Send {
            room,
            body,
            client_id,
        } => json!({"type": "send", "room": room, "body": body, "client_id": client_id}),
        ClientFrame::Typing { room } => json!({"type": "typing", "room": room}),
        ClientFrame::Refresh { token } => json!({"type": "refresh", "token": token}),
        ClientFrame::Ping => json!({"type": "ping"}),
    };
    v["ref"] = json!(inbound.r#ref);
    v
}
