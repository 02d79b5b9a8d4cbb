//! `GET /v1/users/{user_id}`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::{ApiError, Gateway, bearer};

pub async fn get(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    bearer::claims(&req, &gw)?;
    let user = gw
        .store
        .user_by_id(&path)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(json!({"user_id": user.id, "username": user.username})))
}
