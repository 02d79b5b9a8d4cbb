//! Stable error codes (HTTP bodies and in-band `error` frames) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Every error code a client can see, in HTTP `{"error": {"code"}}` bodies and `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    TooLarge,
    InvalidUsername,
    WeakPassword,
    UsernameTaken,
    InvalidCredentials,
    SessionActive,
    RateLimited,
    InvalidRefreshToken,
    InvalidToken,
    TokenExpired,
    SessionRevoked,
    NotFound,
    MethodNotAllowed,
    Forbidden,
    Unavailable,
    Internal,
    BadFrame,
    InvalidRoom,
    InvalidBody,
    NotJoined,
    TooManyRooms,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::InvalidUsername => "invalid_username",
            Self::WeakPassword => "weak_password",
            Self::UsernameTaken => "username_taken",
            Self::InvalidCredentials => "invalid_credentials",
            Self::SessionActive => "session_active",
            Self::RateLimited => "rate_limited",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::SessionRevoked => "session_revoked",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::BadFrame => "bad_frame",
            Self::InvalidRoom => "invalid_room",
            Self::InvalidBody => "invalid_body",
            Self::NotJoined => "not_joined",
            Self::TooManyRooms => "too_many_rooms",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes of PROTOCOL.md section 3.
pub mod close {
    pub const GOING_AWAY_RESTART: u16 = 1012;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_UTF8: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const LOGGED_OUT: u16 = 4000;
    pub const REPLACED: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4002;
    pub const REVOKED: u16 = 4003;
    pub const NOT_AUTHENTICATED: u16 = 4004;
    pub const TOO_SLOW: u16 = 4008;
    pub const RATE_LIMITED: u16 = 4029;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::BadFrame,
            ErrorCode::InvalidRefreshToken,
            ErrorCode::TooManyRooms,
        ] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

/// The HTTP error body every endpoint uses: `{"error": {"code", "message"}}`.
pub fn error_body(code: ErrorCode, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code.as_str(), "message": message}})
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[test]
    fn the_error_body_has_a_pinned_shape() {
        let body = error_body(ErrorCode::InvalidToken, "nope");
        assert_eq!(
            body.to_string(),
            r#"{"error":{"code":"invalid_token","message":"nope"}}"#
        );
    }
}
