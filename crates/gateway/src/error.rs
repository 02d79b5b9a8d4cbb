//! The one error type of the HTTP API: a status, a stable code and a message, rendered as
//! `{"error": {"code", "message"}}`. Causes are logged here, once, never sent to clients.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use onlychat_auth::{SessionError, TokenError};
use onlychat_protocol::{ErrorCode, error_body};
use onlychat_store::StoreError;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` on 429 (503 always gets a fixed hint).
    pub retry_after: Option<u64>,
}

/// Seconds a client should wait before retrying after 503.
const RETRY_AFTER_SECS: &str = "2";

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "a backing service is unavailable; retry shortly",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this needs the admin role",
        )
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many login attempts; retry later",
        );
        e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "not found")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", RETRY_AFTER_SECS));
        }
        response.json(error_body(self.code, &self.message))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(),
            StoreError::UsernameTaken => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::UsernameTaken,
                "that username is taken",
            ),
            other => {
                metrics::counter!("onlychat_db_errors_total", "op" => "api").increment(1);
                Self::unavailable(&other)
            }
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::InvalidRefreshToken => Self::unauthorized(
                ErrorCode::InvalidRefreshToken,
                "the refresh token is unknown, spent or expired",
            ),
            SessionError::Active => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::SessionActive,
                "this user already has a live session (session policy `reject`)",
            ),
            other @ SessionError::Unavailable(_) => Self::unavailable(&other),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => {
                Self::unauthorized(ErrorCode::TokenExpired, "the access token has expired")
            }
            TokenError::Invalid => {
                Self::unauthorized(ErrorCode::InvalidToken, "the access token is not valid")
            }
        }
    }
}

/// Maps JSON extractor failures to 400 `bad_request` or 413 `too_large`.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "the body is too large",
        )
        .into(),
        other => ApiError::bad_request(format!(
            "the body is not valid JSON for this request: {other}"
        ))
        .into(),
    }
}
