//! The onlychat wire contract (PROTOCOL.md) as Rust types: client and server WebSocket frames,
//! the envelope carried on the message bus, error and close codes, and input validation.
//! This crate does no I/O, so every other crate can share it and tests can pin its shapes.
#![forbid(unsafe_code)]

pub mod client;
pub mod codes;
pub mod envelope;
pub mod server;
pub mod validate;

pub use client::{ClientFrame, FrameError, Inbound, parse_client_frame};
pub use codes::{ErrorCode, close, error_body};
pub use envelope::{BusEvent, ChatMessage, PresenceEvent};
pub use server::ServerFrame;

/// Formats a timestamp the way every frame carries it: RFC 3339, UTC, millisecond precision.
pub fn rfc3339(ts: chrono::DateTime<chrono::Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a frame timestamp (RFC 3339) into unix milliseconds; 0 if it is not one.
pub fn ts_ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts).map_or(0, |t| t.timestamp_millis())
}
