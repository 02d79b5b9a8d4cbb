//! Route table of the HTTP API.

mod admin;
mod auth;
mod rooms;
mod users;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/auth")
            .route("/register", web::post().to(auth::register))
            .route("/login", web::post().to(auth::login))
            .route("/refresh", web::post().to(auth::refresh))
            .route("/logout", web::post().to(auth::logout))
            .route("/me", web::get().to(auth::me))
            .route("/password", web::post().to(auth::password)),
    )
    .service(
        web::scope("/v1/admin/users")
            .route("", web::get().to(admin::find))
            .route("/{user_id}/sessions", web::get().to(admin::sessions))
            .route("/{user_id}/logout", web::post().to(admin::logout)),
    )
    .route("/v1/users/{user_id}", web::get().to(users::get))
    .route("/v1/rooms/{room}/messages", web::get().to(rooms::messages))
    .route("/.well-known/jwks.json", web::get().to(jwks));
}

/// `GET /.well-known/jwks.json`: the public keys tokens are verified with (empty for HS256).
async fn jwks(gw: web::Data<crate::Gateway>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header(("Cache-Control", "max-age=300"))
        .json(gw.keys.jwks())
}
