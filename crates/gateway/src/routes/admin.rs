//! `/v1/admin/*`: find a user, list their sessions, force them out. Needs the `admin` role in a
//! token of a session that still stands (a promotion counts from the next login or refresh).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{TimeZone, Utc};
use onlychat_protocol::close;
use onlychat_store::User;
use serde::Deserialize;
use serde_json::json;

use super::auth::live_claims;
use crate::{ApiError, Gateway};

#[derive(Deserialize)]
pub struct ByName {
    username: String,
}

async fn require_admin(req: &HttpRequest, gw: &Gateway) -> Result<(), ApiError> {
    let claims = live_claims(req, gw).await?;
    if claims.roles.iter().any(|r| r == "admin") {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

async fn user(gw: &Gateway, user_id: &str) -> Result<User, ApiError> {
    gw.store
        .user_by_id(user_id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// `GET /v1/admin/users?username=NAME`.
pub async fn find(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    query: web::Query<ByName>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &gw).await?;
    let user = gw
        .store
        .user_by_name(&query.username)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user.id, "username": user.username, "roles": user.roles,
    })))
}

/// `GET /v1/admin/users/{user_id}/sessions`.
pub async fn sessions(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &gw).await?;
    let user = user(&gw, &path).await?;
    let rfc3339 = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let sessions: Vec<_> = gw
        .sessions
        .sessions_of(&user.id)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "session_id": s.sid,
                "device": s.device,
                "created_at": rfc3339(s.created_at_ms),
                "last_seen_at": rfc3339(s.last_seen_at_ms),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions })))
}

/// `POST /v1/admin/users/{user_id}/logout`: every session of the user ends (refresh tokens
/// dead, access tokens refused, sockets closed with 4003 on every node).
pub async fn logout(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &gw).await?;
    let user = user(&gw, &path).await?;
    let mut ended = 0;
    for session in gw.sessions.sessions_of(&user.id).await? {
        if gw.sessions.revoke(&session.sid, close::REVOKED).await? {
            ended += 1;
        }
    }
    tracing::info!(user_id = %user.id, ended, "admin forced a user out");
    Ok(HttpResponse::NoContent().finish())
}
