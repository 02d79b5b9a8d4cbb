//! `Authorization: Bearer` access tokens on HTTP requests.

use actix_web::HttpRequest;
use onlychat_auth::{Claims, JwtKeys};
use onlychat_protocol::ErrorCode;

use crate::ApiError;

/// The verified claims of the request's bearer token.
pub fn claims(req: &HttpRequest, keys: &JwtKeys) -> Result<Claims, ApiError> {
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
    Ok(keys.verify(token.trim())?)
}
