//! `Authorization: Bearer` access tokens on HTTP requests.

use actix_web::HttpRequest;
use onlychat_auth::Claims;
use onlychat_protocol::ErrorCode;

use crate::{ApiError, Gateway};

/// The verified claims of the request's bearer token, provided its session is not known to
/// have ended (the gateway's revoked set: no session-store read, so this works while Redis is
/// away). Endpoints that read the session store anyway also ask it (`live_claims`).
pub fn claims(req: &HttpRequest, gw: &Gateway) -> Result<Claims, ApiError> {
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "an Authorization: Bearer token is required",
            )
        })?;
    let claims = gw.keys.verify(token.trim())?;
    if gw.revoked.code_for_token(&claims).is_some() {
        return Err(session_ended());
    }
    Ok(claims)
}

/// 401 `session_revoked`.
pub fn session_ended() -> ApiError {
    ApiError::unauthorized(ErrorCode::SessionRevoked, "this session has ended")
}
