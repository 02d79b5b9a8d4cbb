//! Measures logins and refreshes per second through a real gateway (PostgreSQL, Redis,
//! argon2id on the blocking pool). Not a test: it prints figures. Needs the services
//! (`scripts/services.sh up`, then `eval "$(scripts/services.sh env)"`) and a built `onlychat`.
//!
//!   cargo run -p onlychat-e2e --bin auth-bench -- [users=200] [concurrency=8]

use std::time::Instant;

use futures_util::StreamExt;
use onlychat_e2e::{Cluster, ClusterOptions, unique};
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let users = args.first().copied().unwrap_or(200);
    let concurrency = args.get(1).copied().unwrap_or(8);
    let cluster = Cluster::start_with(0, ClusterOptions::default()).await;
    let http = cluster.http();
    let names: Vec<String> = (0..users).map(|_| unique("bench")).collect();
    futures_util::stream::iter(names.iter().map(|n| http.register(n)))
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;

    let started = Instant::now();
    let logins = futures_util::stream::iter(names.iter().map(|n| http.login(n)))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let login_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let bodies: Vec<_> = logins
        .iter()
        .map(|login| json!({"refresh_token": login.refresh_token}))
        .collect();
    let refreshed = futures_util::stream::iter(
        bodies
            .iter()
            .map(|body| http.post("/v1/auth/refresh", body, None)),
    )
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    let refresh_secs = started.elapsed().as_secs_f64();
    assert!(refreshed.iter().all(|(status, _)| *status == 200));

    println!(
        "logins: {users} in {login_secs:.2} s = {:.0}/s; refreshes: {users} in {refresh_secs:.2} s = {:.0}/s (concurrency {concurrency})",
        users as f64 / login_secs,
        users as f64 / refresh_secs
    );
}
