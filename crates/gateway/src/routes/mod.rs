//! Route table of the HTTP API.

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
            .route("/me", web::get().to(auth::me)),
    )
    .route("/v1/users/{user_id}", web::get().to(users::get))
    .route("/v1/rooms/{room}/messages", web::get().to(rooms::messages));
}
