//! `/v1/auth/*`: register, login (rate-limited), refresh, logout, me, password.

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
pub struct PasswordChange {
    current_password: String,
    new_password: String,
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
    check_strength(&password)?;
    let hash = password::hash(password)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    let user = gw.store.create_user(&username, &hash).await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(HttpResponse::Created().json(json!({"user_id": user.id, "username": user.username})))
}

fn check_strength(password: &str) -> Result<(), ApiError> {
    if validate::password_ok(password) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::WeakPassword,
        "passwords are 8-256 characters",
    ))
}

/// Spends one login attempt of the client's address and one of the username (known or not, so
/// the answer does not tell them apart); 429 with `Retry-After` when either bucket is empty.
async fn limit_login(req: &HttpRequest, gw: &Gateway, username: &str) -> Result<(), ApiError> {
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let checks = [
        (format!("login-ip:{ip}"), gw.login_limits.per_ip, "ip"),
        (
            format!("login-user:{}", username.to_lowercase()),
            gw.login_limits.per_user,
            "user",
        ),
    ];
    for (key, limit, scope) in checks {
        if let Some(wait) = gw.limiter.take(&key, limit).await? {
            metrics::counter!("onlychat_auth_failures_total", "reason" => "rate_limited", "scope" => scope)
                .increment(1);
            return Err(ApiError::rate_limited(wait));
        }
    }
    Ok(())
}

pub async fn login(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials {
        username,
        password,
        device,
    } = body.into_inner();
    limit_login(&req, &gw, &username).await?;
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
    let invalid = || {
        ApiError::unauthorized(
            ErrorCode::InvalidRefreshToken,
            "the refresh token is unknown, spent or expired",
        )
    };
    // The user is read (fresh roles and name: a promotion counts from here) *before* the token
    // is spent, so a database outage answers 503 and leaves the token usable.
    let owner = gw
        .sessions
        .owner(&body.refresh_token)
        .await?
        .ok_or_else(invalid)?;
    let user = gw.store.user_by_id(&owner).await?;
    let grant = gw.sessions.refresh(&body.refresh_token).await?;
    let Some(user) = user.filter(|u| u.id == grant.user_id) else {
        gw.sessions.revoke(&grant.sid, close::REVOKED).await?;
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidRefreshToken,
            "the account no longer exists",
        ));
    };
    token_pair(&gw, &grant, &user.username, &user.roles)
}

pub async fn logout(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let claims = bearer::claims(&req, &gw)?;
    gw.sessions.revoke(&claims.sid, close::LOGGED_OUT).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn me(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let claims = live_claims(&req, &gw).await?;
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

/// `POST /v1/auth/password`: needs the current password; every *other* session of the user
/// ends with 4003 (whoever else held the old password is out), the caller's stays.
pub async fn password(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let claims = live_claims(&req, &gw).await?;
    let PasswordChange {
        current_password,
        new_password,
    } = body.into_inner();
    check_strength(&new_password)?;
    let user = gw
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if !password::verify(current_password, Some(user.password_hash)).await {
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidCredentials,
            "the current password is wrong",
        ));
    }
    let hash = password::hash(new_password)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    gw.store.set_password(&user.id, &hash).await?;
    for session in gw.sessions.sessions_of(&user.id).await? {
        if session.sid != claims.sid {
            gw.sessions.revoke(&session.sid, close::REVOKED).await?;
        }
    }
    tracing::info!(user_id = %user.id, "password changed; other sessions revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// The bearer's claims, provided its session still stands (one session-store read).
pub(crate) async fn live_claims(
    req: &HttpRequest,
    gw: &Gateway,
) -> Result<onlychat_auth::Claims, ApiError> {
    let claims = bearer::claims(req, gw)?;
    if !gw.sessions.is_live(&claims.sid).await? {
        return Err(bearer::session_ended());
    }
    Ok(claims)
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
