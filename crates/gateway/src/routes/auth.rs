//! `/v1/auth/*`: register, login, refresh, logout, me.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use onlychat_auth::{LoginGrant, password};
use onlychat_protocol::{ErrorCode, close, validate};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, Gateway, bearer};

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    device: Option<String>,
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

/// Longest accepted `device` label.
const MAX_DEVICE_CHARS: usize = 128;

pub async fn register(
    gw: web::Data<Gateway>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials {
        username, password, ..
    } = body.into_inner();
    if !validate::username_ok(&username) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidUsername,
            "usernames are 3-32 of a-z 0-9 _ . -",
        ));
    }
    if !validate::password_ok(&password) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword,
            "passwords are 8-256 characters",
        ));
    }
    let hash = password::hash(password)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    let user = gw.store.create_user(&username, &hash).await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(HttpResponse::Created().json(json!({"user_id": user.id, "username": user.username})))
}

pub async fn login(
    gw: web::Data<Gateway>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials {
        username,
        password,
        device,
    } = body.into_inner();
    let user = gw.store.user_by_name(&username).await?;
    // Unknown users cost one dummy verification, so both failures look and time the same.
    let ok = password::verify(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let Some(user) = user.filter(|_| ok) else {
        metrics::counter!("onlychat_auth_failures_total", "reason" => "invalid_credentials")
            .increment(1);
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        ));
    };
    let device: String = device
        .unwrap_or_default()
        .chars()
        .take(MAX_DEVICE_CHARS)
        .collect();
    let grant = gw.sessions.login(&user.id, &device).await?;
    token_pair(&gw, &grant, &user.username, &user.roles)
}

pub async fn refresh(
    gw: web::Data<Gateway>,
    body: web::Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let grant = gw.sessions.refresh(&body.refresh_token).await?;
    // Roles and name are read fresh, so a promotion takes effect at the next refresh.
    let Some(user) = gw.store.user_by_id(&grant.user_id).await? else {
        gw.sessions.revoke(&grant.sid, close::REVOKED).await?;
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidRefreshToken,
            "the account no longer exists",
        ));
    };
    token_pair(&gw, &grant, &user.username, &user.roles)
}

pub async fn logout(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let claims = bearer::claims(&req, &gw.keys)?;
    gw.sessions.revoke(&claims.sid, close::LOGGED_OUT).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn me(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let claims = bearer::claims(&req, &gw.keys)?;
    if !gw.sessions.is_live(&claims.sid).await? {
        return Err(ApiError::unauthorized(
            ErrorCode::SessionRevoked,
            "this session has ended",
        ));
    }
    let user = gw
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user.id,
        "username": user.username,
        "roles": user.roles,
        "session_id": claims.sid,
    })))
}

fn token_pair(
    gw: &Gateway,
    grant: &LoginGrant,
    username: &str,
    roles: &[String],
) -> Result<HttpResponse, ApiError> {
    let (access_token, _) = gw.keys.issue(&grant.user_id, username, &grant.sid, roles)?;
    Ok(HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": gw.keys.ttl().as_secs(),
        "refresh_token": grant.refresh_token,
        "refresh_expires_in": gw.refresh_ttl.as_secs(),
        "session_id": grant.sid,
        "user_id": grant.user_id,
    })))
}
