//! Route table of the HTTP API.

mod admin;
mod auth;
mod rooms;
mod users;

use actix_web::http::{Method, header};
use actix_web::{HttpResponse, Resource, Route, web};
use onlychat_protocol::{ErrorCode, error_body};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/auth")
            .service(only("/register", Method::POST, auth::register))
            .service(only("/login", Method::POST, auth::login))
            .service(only("/refresh", Method::POST, auth::refresh))
            .service(only("/logout", Method::POST, auth::logout))
            .service(only("/me", Method::GET, auth::me))
            .service(only("/password", Method::POST, auth::password)),
    )
    .service(
        web::scope("/v1/admin/users")
            .service(only("", Method::GET, admin::find))
            .service(only("/{user_id}/sessions", Method::GET, admin::sessions))
            .service(only("/{user_id}/logout", Method::POST, admin::logout)),
    )
    .service(only("/v1/users/{user_id}", Method::GET, users::get))
    .service(only(
        "/v1/rooms/{room}/messages",
        Method::GET,
        rooms::messages,
    ))
    .service(only("/.well-known/jwks.json", Method::GET, jwks));
}

/// An endpoint that answers one method; any other gets 405 `method_not_allowed` with `Allow`.
fn only<F, Args>(path: &str, method: Method, handler: F) -> Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let allow = method.to_string();
    web::resource(path)
        .route(Route::new().method(method).to(handler))
        .default_service(web::to(move || {
            let message = format!("this endpoint answers {allow} only");
            let refused = HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, allow.as_str()))
                .json(error_body(ErrorCode::MethodNotAllowed, &message));
            std::future::ready(refused)
        }))
}

/// `GET /.well-known/jwks.json`: the public keys tokens are verified with (empty for HS256).
async fn jwks(gw: web::Data<crate::Gateway>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header(("Cache-Control", "max-age=300"))
        .json(gw.keys.jwks())
}
