//! The JSON Schemas in `crates/protocol/schema/` describe the frames exactly: the client schema
//! accepts what `parse_client_frame` accepts and nothing else (on a corpus of good and bad
//! frames), and every kind of server frame validates while a wrong one does not.

use onlychat_protocol::envelope::ChatMessage;
use onlychat_protocol::server::PresenceKind;
use onlychat_protocol::{ErrorCode, ServerFrame, parse_client_frame};
use serde_json::{Value, json};

fn validator(text: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

fn client_schema() -> jsonschema::Validator {
    validator(include_str!("../schema/client-frames.schema.json"))
}

fn server_schema() -> jsonschema::Validator {
    validator(include_str!("../schema/server-frames.schema.json"))
}

#[test]
fn the_client_schema_accepts_exactly_what_the_node_accepts() {
    let long = |n: usize| "x".repeat(n);
    let corpus = vec![
        json!({"type": "auth", "token": "t"}),
        json!({"type": "auth"}),
        json!({"type": "auth", "token": 5}),
        json!({"type": "join", "room": "lobby"}),
        json!({"type": "join", "room": "lobby", "since": 0, "epoch": "e1", "ref": "r"}),
        json!({"type": "join", "room": "lobby", "since": null, "epoch": null, "ref": null}),
        json!({"type": "join", "room": "lobby", "since": u64::MAX}),
        json!({"type": "join", "room": "lobby", "since": -1}),
        json!({"type": "join", "room": "lobby", "since": 1.5}),
        json!({"type": "join", "room": "lobby", "since": "7"}),
        json!({"type": "join", "room": "lobby", "epoch": 3}),
        json!({"type": "join", "room": long(64)}),
        json!({"type": "join", "room": long(65)}),
        json!({"type": "join", "room": "Lobby"}),
        json!({"type": "join", "room": "a b"}),
        json!({"type": "join", "room": ""}),
        json!({"type": "join", "room": "café"}),
        json!({"type": "join", "room": "r1\n"}),
        json!({"type": "join"}),
        json!({"type": "leave", "room": "lobby"}),
        json!({"type": "leave", "room": 1}),
        json!({"type": "send", "room": "lobby", "body": "hi", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "é".repeat(4096), "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "é".repeat(4097), "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": " \n\t", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": " x ", "client_id": "c1"}),
        // Whitespace as the node counts it (Unicode White_Space), not as one regex engine does.
        json!({"type": "send", "room": "lobby", "body": "\u{85}\u{a0}\u{3000}\u{2029}", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "\u{feff}", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "\u{1c}\u{1f}", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "\u{200b}", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "\u{3000}x", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "hi", "client_id": ""}),
        json!({"type": "send", "room": "lobby", "body": "hi", "client_id": long(64)}),
        json!({"type": "send", "room": "lobby", "body": "hi", "client_id": long(65)}),
        json!({"type": "send", "room": "lobby", "body": "hi"}),
        json!({"type": "send", "room": "lobby", "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": 7, "client_id": "c1"}),
        json!({"type": "send", "room": "lobby", "body": "hi", "client_id": "c1", "extra": [1]}),
        json!({"type": "typing", "room": "lobby"}),
        json!({"type": "typing"}),
        json!({"type": "refresh", "token": "t"}),
        json!({"type": "refresh"}),
        json!({"type": "ping"}),
        json!({"type": "ping", "ref": "p1"}),
        json!({"type": "ping", "ref": ""}),
        json!({"type": "ping", "ref": long(64)}),
        json!({"type": "ping", "ref": long(65)}),
        json!({"type": "ping", "ref": 3}),
        json!({"type": "pong"}),
        json!({"type": 1}),
        json!({"room": "lobby"}),
        json!([{"type": "ping"}]),
        json!("ping"),
        json!(null),
    ];
    let schema = client_schema();
    let mut disagreements = Vec::new();
    for frame in &corpus {
        let node = parse_client_frame(&frame.to_string()).is_ok();
        let valid = schema.is_valid(frame);
        if node != valid {
            disagreements.push(format!("node {node}, schema {valid}: {frame:.80}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    let accepted = corpus.iter().filter(|f| schema.is_valid(f)).count();
    assert!(
        (10..corpus.len() - 10).contains(&accepted),
        "the corpus has good and bad frames"
    );
}

/// The one documented difference: JSON Schema counts 1.0 and 1e3 as integers; the node wants
/// integers written as integers.
#[test]
fn an_integral_float_is_a_schema_integer_but_the_node_refuses_it() {
    let schema = client_schema();
    for text in [
        r#"{"type":"join","room":"lobby","since":1.0}"#,
        r#"{"type":"join","room":"lobby","since":1e3}"#,
    ] {
        let value: Value = serde_json::from_str(text).expect("JSON");
        assert!(schema.is_valid(&value), "{text}");
        assert!(parse_client_frame(text).is_err(), "{text}");
    }
}

#[test]
fn every_server_frame_validates_and_a_wrong_one_does_not() {
    let ts = "2026-12-04T10:00:00.000Z".to_owned();
    let frames = [
        ServerFrame::Welcome {
            r#ref: Some("a1".into()),
            user_id: "u1".into(),
            session_id: "s1".into(),
            node: "n1".into(),
            heartbeat_s: 25,
            max_frame_bytes: 65536,
            expires_at: ts.clone(),
        },
        ServerFrame::Joined {
            r#ref: None,
            room: "lobby".into(),
            epoch: "e1".into(),
            position: 0,
            recovered: false,
            online: vec!["u1".into()],
        },
        ServerFrame::Left {
            r#ref: Some("l".into()),
            room: "lobby".into(),
        },
        ServerFrame::Message(ChatMessage {
            room: "lobby".into(),
            id: "m1".into(),
            position: 7,
            epoch: "e1".into(),
            from: "u1".into(),
            from_name: "alice".into(),
            body: "hi".into(),
            ts: ts.clone(),
            client_id: "c1".into(),
        }),
        ServerFrame::Ack {
            r#ref: Some("c1".into()),
            room: "lobby".into(),
            client_id: "c1".into(),
            id: "m1".into(),
            position: 7,
            ts: ts.clone(),
        },
        ServerFrame::Presence {
            room: "lobby".into(),
            user_id: "u2".into(),
            username: "bob".into(),
            event: PresenceKind::Leave,
        },
        ServerFrame::Typing {
            room: "lobby".into(),
            user_id: "u2".into(),
            username: "bob".into(),
        },
        ServerFrame::Refreshed {
            r#ref: None,
            expires_at: ts.clone(),
        },
        ServerFrame::Pong { r#ref: None },
        ServerFrame::Error {
            code: ErrorCode::NotJoined,
            message: "join the room before sending to it".into(),
            r#ref: Some("r".into()),
            room: Some("lobby".into()),
            client_id: Some("c1".into()),
        },
    ];
    let schema = server_schema();
    for frame in &frames {
        let value: Value = serde_json::from_str(&frame.to_text()).expect("JSON");
        let errors: Vec<String> = schema.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
    let wrong = [
        json!({"type": "pong", "extra": 1}),
        json!({"type": "ack", "room": "lobby", "client_id": "c1", "id": "m1", "ts": ts}),
        json!({"type": "message", "room": "lobby", "id": "m1", "position": 0, "epoch": "e",
               "from": "u", "from_name": "a", "body": "hi", "ts": ts, "client_id": "c"}),
        json!({"type": "error", "code": "internal", "message": "m"}),
        json!({"type": "refreshed", "expires_at": "yesterday"}),
        json!({"type": "hello"}),
    ];
    for value in &wrong {
        assert!(!schema.is_valid(value), "accepted {value}");
    }
}
