//! The `/ws` upgrade request. Everything that can be refused with an HTTP status is refused
//! here, before the upgrade: draining, still starting or full (503), too many or too large
//! headers (431), origin (403), a bad `Authorization` header (401), not a WebSocket handshake
//! (400, or 426 for another protocol version). Every refusal has the API's JSON error body.
//! A query-string token is refused *after* the upgrade with close 1008, because a browser
//! cannot read the status of a failed upgrade.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use onlychat_auth::{Claims, TokenError};
use onlychat_protocol::{ErrorCode, close, error_body};

use crate::Node;
use crate::connection;
use crate::frame_guard::FrameGuard;

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(error_body(code, message))
}

/// 503 before the upgrade, with `Retry-After` like every 503 of the API, counted by `reason`.
fn unavailable(reason: &'static str, message: &str) -> HttpResponse {
    metrics::counter!("onlychat_upgrades_refused_total", "reason" => reason).increment(1);
    HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::RETRY_AFTER, "2"))
        .json(error_body(ErrorCode::Unavailable, message))
}

fn has_query_token(req: &HttpRequest) -> bool {
    req.query_string()
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .any(|k| k == "token" || k == "access_token")
}

fn origin_allowed(node: &Node, req: &HttpRequest) -> bool {
    let allowed = &node.settings.allowed_origins;
    if allowed.is_empty() {
        return true;
    }
    req.headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|origin| allowed.iter().any(|a| a == origin))
}

/// Checks an access token against the keys and this node's revoked set.
pub(crate) fn admit(node: &Node, token: &str) -> Result<Claims, (ErrorCode, u16)> {
    let claims = node.deps.keys.verify(token).map_err(|e| match e {
        TokenError::Expired => (ErrorCode::TokenExpired, close::TOKEN_EXPIRED),
        TokenError::Invalid => (ErrorCode::InvalidToken, close::NOT_AUTHENTICATED),
    })?;
    if let Some(code) = node.revocation_of(&claims) {
        return Err((ErrorCode::SessionRevoked, code));
    }
    Ok(claims)
}

/// Whether the request's headers stay within the node's count and size limits. (actix-web
/// itself refuses heads over 128 KiB with 431 and over 96 headers with 400 before this runs.)
fn headers_within_limits(node: &Node, req: &HttpRequest) -> bool {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    headers.len() <= node.settings.max_upgrade_headers
        && bytes <= node.settings.max_upgrade_header_bytes
}

pub async fn ws(
    req: HttpRequest,
    body: web::Payload,
    node: web::Data<Node>,
) -> actix_web::Result<HttpResponse> {
    if node.shutdown.is_cancelled() {
        return Ok(unavailable("draining", "this node is draining"));
    }
    if !node.deps.bus.is_ready() {
        // Until the node has read the log back to its end, a join could not have an exact seam
        // without replaying old messages as live ones.
        return Ok(unavailable("starting", "this node is still starting"));
    }
    if !headers_within_limits(&node, &req) {
        return Ok(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::TooLarge,
            "too many or too large request headers",
        ));
    }
    let Some(slot) = node.claim_socket() else {
        return Ok(unavailable(
            "full",
            "this node holds all the connections it may; try another",
        ));
    };
    if !origin_allowed(&node, &req) {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        ));
    }
    let query_token = has_query_token(&req);
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or(""));
    let claims = match (query_token, header) {
        (false, Some(value)) => {
            let Some(token) = value.strip_prefix("Bearer ") else {
                return Ok(refuse(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::InvalidToken,
                    "use Authorization: Bearer <token>",
                ));
            };
            match admit(&node, token.trim()) {
                Ok(claims) => Some(claims),
                Err((code, _)) => {
                    metrics::counter!("onlychat_auth_failures_total", "reason" => code.as_str())
                        .increment(1);
                    return Ok(refuse(
                        StatusCode::UNAUTHORIZED,
                        code,
                        "access token refused",
                    ));
                }
            }
        }
        _ => None,
    };
    // The size limit is enforced on the raw bytes first, so an oversized frame is never buffered.
    let guarded: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(FrameGuard::new(body, node.settings.max_frame_bytes));
    let mut payload = actix_web::dev::Payload::from(guarded);
    let body = <web::Payload as actix_web::FromRequest>::from_request(&req, &mut payload).await?;
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(upgraded) => upgraded,
        // Not a WebSocket handshake (no upgrade headers, no key, another version): the status
        // actix-ws chose, with the API's JSON error body instead of an empty one.
        Err(e) => {
            let status = e.error_response().status();
            let mut refused = refuse(
                status,
                ErrorCode::BadRequest,
                &format!("not a WebSocket upgrade: {e}"),
            );
            refused.headers_mut().insert(
                actix_web::http::header::SEC_WEBSOCKET_VERSION,
                actix_web::http::header::HeaderValue::from_static("13"),
            );
            return Ok(refused);
        }
    };
    let stream = stream
        .max_frame_size(node.settings.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(node.settings.max_frame_bytes);
    let node = node.into_inner();
    if query_token {
        actix_web::rt::spawn(async move {
            connection::refuse(
                session,
                close::POLICY,
                "tokens in the query string are refused",
            )
            .await;
            drop(slot);
        });
    } else {
        actix_web::rt::spawn(async move {
            connection::run(node, session, stream, claims).await;
            drop(slot);
        });
    }
    Ok(response)
}
