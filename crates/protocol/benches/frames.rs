//! Hot paths of the wire format: parsing and validating client frames, encoding the `message`
//! frame every member receives, and the bus envelope's encode/decode.
//! Run: `cargo bench -p onlychat-protocol` (results in docs/benchmarks.md).

use divan::{Bencher, black_box};
use onlychat_protocol::{BusEvent, ChatMessage, ServerFrame, parse_client_frame};

fn main() {
    divan::main();
}

const SEND: &str = r#"{"type":"send","ref":"r-1","room":"lobby-42","body":"hello there, this is a chat message of typical size","client_id":"c-7f3a9e"}"#;
const JOIN: &str = r#"{"type":"join","room":"lobby-42","since":1234,"epoch":"e-1"}"#;

fn event() -> BusEvent {
    BusEvent::Message {
        id: "0193f7a2-5b1c-7d2e-8f00-123456789abc".into(),
        room: "lobby-42".into(),
        from: "0193f7a2-0000-7000-8000-000000000001".into(),
        from_name: "alice".into(),
        body: "hello there, this is a chat message of typical size".into(),
        client_id: "c-7f3a9e".into(),
        ts: "2026-12-04T08:00:00.000Z".into(),
    }
}

#[divan::bench]
fn parse_send_frame() -> bool {
    parse_client_frame(black_box(SEND)).is_ok()
}

#[divan::bench]
fn parse_join_frame() -> bool {
    parse_client_frame(black_box(JOIN)).is_ok()
}

#[divan::bench]
fn reject_malformed_frame() -> bool {
    parse_client_frame(black_box(
        r#"{"type":"send","room":"UPPER CASE!","body":""}"#,
    ))
    .is_err()
}

#[divan::bench]
fn encode_message_frame(bencher: Bencher) {
    let message: ChatMessage = event()
        .into_chat_message(42, "e-1")
        .unwrap_or_else(|| unreachable!());
    bencher.bench_local(|| ServerFrame::Message(black_box(message.clone())).to_text());
}

#[divan::bench]
fn encode_bus_envelope(bencher: Bencher) {
    let event = event();
    bencher.bench_local(|| serde_json::to_vec(black_box(&event)).unwrap_or_default());
}

#[divan::bench]
fn decode_bus_envelope(bencher: Bencher) {
    let bytes = serde_json::to_vec(&event()).unwrap_or_default();
    bencher.bench_local(|| serde_json::from_slice::<BusEvent>(black_box(&bytes)).is_ok());
}
