//! `GET /v1/rooms/{room}/messages`: pages of a room's durable history, oldest first.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use onlychat_protocol::{ErrorCode, validate};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, Gateway, bearer};

/// A page holds 50 messages unless asked otherwise, and never more than 200.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

#[derive(Deserialize)]
pub struct PageQuery {
    after: Option<u64>,
    before: Option<u64>,
    limit: Option<u32>,
}

pub async fn messages(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    room: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    bearer::claims(&req, &gw)?;
    if !validate::room_name_ok(&room) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRoom,
            "room names are 1-64 of a-z 0-9 _ . -",
        ));
    }
    if query.limit == Some(0) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1-{MAX_LIMIT} (larger values are clamped to {MAX_LIMIT})"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let page = gw
        .store
        .history_page(&room, &gw.epoch, query.after, query.before, limit)
        .await?;
    let messages: Vec<serde_json::Value> = page
        .messages
        .into_iter()
        .map(|m| {
            json!({"room": m.room, "id": m.id, "position": m.position, "epoch": m.epoch, "from": m.from,
                   "from_name": m.from_name, "body": m.body, "ts": m.ts, "client_id": m.client_id})
        })
        .collect();
    Ok(HttpResponse::Ok().json(
        json!({"room": *room, "epoch": gw.epoch, "messages": messages, "has_more": page.has_more}),
    ))
}
