//! One session per user in Redis, eviction across nodes, and refusal of bad tokens.

use std::time::Duration;

use base64::Engine;
use onlychat_e2e::{Cluster, TEST_SECRET, Ws, eventually, mint_token, unique};
use redis::AsyncCommands;
use serde_json::json;
use tokio_tungstenite::tungstenite;

/// The HTTP status of a refused upgrade, or None if the upgrade succeeded.
async fn upgrade_status(url: &str, token: Option<&str>) -> Option<u16> {
    match Ws::open(url, token).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(e) => panic!("unexpected upgrade error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_evicts_the_first_on_every_node() {
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let name = unique("alice");
    let first = http.user(&name).await;
    let mut on_node1 = Ws::connect(&cluster.ws_url(0), &first.access_token).await;
    let mut on_node2 = Ws::connect(&cluster.ws_url(1), &first.access_token).await;
    on_node2.join("lobby").await;

    let second = http.login(&name).await;
    assert_ne!(second.session_id, first.session_id);
    assert_eq!(
        on_node1.expect_close(Duration::from_secs(1)).await,
        Some(4001),
        "node1 closes within 1 s"
    );
    assert_eq!(
        on_node2.expect_close(Duration::from_secs(1)).await,
        Some(4001),
        "node2 closes within 1 s"
    );

    let (status, body) = http
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": first.refresh_token}),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
    for node in 0..2 {
        assert_eq!(
            upgrade_status(&cluster.ws_url(node), Some(&first.access_token)).await,
            Some(401)
        );
    }
    let (status, body) = http.get("/v1/auth/me", Some(&first.access_token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("session_revoked"))
    );

    // The new session works everywhere.
    let mut fresh = Ws::connect(&cluster.ws_url(1), &second.access_token).await;
    fresh.join("lobby").await;
    let (status, me) = http.get("/v1/auth/me", Some(&second.access_token)).await;
    assert_eq!(
        (status, me["session_id"].as_str()),
        (200, Some(second.session_id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_logins_leave_exactly_one_session() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let name = unique("many");
    http.register(&name).await;
    let logins = futures_util::future::join_all((0..50).map(|_| http.login(&name))).await;

    let mut redis = redis::Client::open(cluster.services.redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let user_id = &logins[0].user_id;
    let live: Vec<String> = redis
        .zrange(format!("{}user:{user_id}:sessions", cluster.prefix), 0, -1)
        .await
        .expect("zrange");
    assert_eq!(live.len(), 1, "exactly one session in Redis: {live:?}");
    let survivors: Vec<_> = logins.iter().filter(|l| l.session_id == live[0]).collect();
    assert_eq!(survivors.len(), 1);

    // Exactly one access token is admitted, once every revocation has reached the node.
    let url = cluster.ws_url(0);
    let admitted = eventually(
        Duration::from_secs(5),
        "49 revocations to reach the node",
        || async {
            let mut ok = 0;
            for login in &logins {
                if upgrade_status(&url, Some(&login.access_token))
                    .await
                    .is_none()
                {
                    ok += 1;
                }
            }
            (ok == 1).then_some(ok)
        },
    )
    .await;
    assert_eq!(admitted, 1);
    // And exactly one refresh token still works.
    let mut refreshed = 0;
    for login in &logins {
        let (status, _) = http
            .post(
                "/v1/auth/refresh",
                &json!({"refresh_token": login.refresh_token}),
                None,
            )
            .await;
        refreshed += usize::from(status == 200);
    }
    assert_eq!(refreshed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_nothing_crashes() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let url = cluster.ws_url(0);
    let user = http.user(&unique("victim")).await;

    assert_eq!(upgrade_status(&url, Some("garbage")).await, Some(401));
    assert_eq!(upgrade_status(&url, Some("a.b.c")).await, Some(401));
    let other_secret = mint_token("another-secret-that-is-also-32-bytes-long", json!({}));
    assert_eq!(upgrade_status(&url, Some(&other_secret)).await, Some(401));
    let expired = mint_token(
        TEST_SECRET,
        json!({"exp": chrono::Utc::now().timestamp() - 120}),
    );
    assert_eq!(upgrade_status(&url, Some(&expired)).await, Some(401));
    let wrong_audience = mint_token(TEST_SECRET, json!({"aud": "someone-else"}));
    assert_eq!(upgrade_status(&url, Some(&wrong_audience)).await, Some(401));
    let bad_claim_type = mint_token(TEST_SECRET, json!({"exp": "tomorrow"}));
    assert_eq!(upgrade_status(&url, Some(&bad_claim_type)).await, Some(401));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = user.access_token.split('.').nth(1).expect("payload");
    let alg_none = format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    assert_eq!(upgrade_status(&url, Some(&alg_none)).await, Some(401));

    // The HTTP API refuses them the same way, with the error body.
    let (status, body) = http.get("/v1/auth/me", Some(&expired)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    let (status, body) = http.get("/v1/auth/me", Some(&alg_none)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );

    // A query-string token: upgrade, then 1008, even with a valid header.
    let mut ws = Ws::open(
        &format!("{url}?token={}", user.access_token),
        Some(&user.access_token),
    )
    .await
    .expect("upgrade");
    assert_eq!(ws.expect_close(Duration::from_secs(2)).await, Some(1008));

    // First-frame auth: none in time, a non-auth frame, a bad, an expired, then a good token.
    let mut ws = Ws::open(&url, None).await.expect("upgrade");
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4004));
    let mut ws = Ws::open(&url, None).await.expect("upgrade");
    ws.send(json!({"type": "join", "room": "lobby"})).await;
    assert_eq!(ws.expect_close(Duration::from_secs(2)).await, Some(4004));
    let mut ws = Ws::open(&url, None).await.expect("upgrade");
    ws.send(json!({"type": "auth", "token": other_secret}))
        .await;
    assert_eq!(ws.expect_close(Duration::from_secs(2)).await, Some(4004));
    let mut ws = Ws::open(&url, None).await.expect("upgrade");
    ws.send(json!({"type": "auth", "token": expired})).await;
    assert_eq!(ws.expect_close(Duration::from_secs(2)).await, Some(4002));
    let mut ws = Ws::open(&url, None).await.expect("upgrade");
    ws.send(json!({"type": "auth", "token": user.access_token, "ref": "first"}))
        .await;
    let welcome = ws.expect("welcome").await;
    assert_eq!(welcome["user_id"], user.user_id.as_str());
    assert_eq!(
        welcome["ref"], "first",
        "welcome answers the auth frame: {welcome}"
    );
    ws.send(json!({"type": "auth", "token": user.access_token, "ref": "again"}))
        .await;
    let error = ws.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("bad_frame"), Some("again"))
    );

    // The node is still healthy.
    let (status, _) = onlychat_e2e::Http::new(&cluster.nodes[0].base_url())
        .get("/readyz", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_sessions_sockets_with_4000() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let user = http.user(&unique("leaver")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    let (status, _) = http
        .post("/v1/auth/logout", &json!({}), Some(&user.access_token))
        .await;
    assert_eq!(status, 204);
    assert_eq!(ws.expect_close(Duration::from_secs(1)).await, Some(4000));
    let (status, _) = http
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": user.refresh_token}),
            None,
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_repeat_within_the_grace_gets_the_same_successor() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let user = http.user(&unique("rotor")).await;
    let refresh = |token: String| {
        let http = http.clone();
        async move {
            http.post("/v1/auth/refresh", &json!({"refresh_token": token}), None)
                .await
        }
    };
    let (status, next) = refresh(user.refresh_token.clone()).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["session_id"], user.session_id.as_str());
    assert_ne!(next["refresh_token"], user.refresh_token.as_str());
    // A retry of the same refresh (a lost response, a second tab) within the grace.
    let (status, again) = refresh(user.refresh_token.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["refresh_token"], next["refresh_token"],
        "the same successor"
    );
    let token = next["access_token"].as_str().expect("access token");
    Ws::connect(&cluster.ws_url(0), token).await;
    let (status, _) = refresh("never-issued".to_owned()).await;
    assert_eq!(status, 401);
}

/// Every endpoint that takes a bearer token refuses one whose session ended, also the ones
/// that do not read the session store (a user's profile, room history): a replaced login's
/// token, and after a logout the logged-out token (logout itself included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sessions_token_is_refused_by_every_bearer_endpoint() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let name = unique("ended");
    let first = http.user(&name).await;
    let profile = format!("/v1/users/{}", first.user_id);
    let history = "/v1/rooms/lobby/messages";
    for path in [profile.as_str(), history, "/v1/auth/me"] {
        let (status, body) = http.get(path, Some(&first.access_token)).await;
        assert_eq!(status, 200, "{path} with a live token: {body}");
    }
    let refused = |token: String| {
        let (http, profile) = (cluster.http(), profile.clone());
        async move {
            let mut answers = Vec::new();
            for path in [profile.as_str(), history, "/v1/auth/me"] {
                answers.push(http.get(path, Some(&token)).await);
            }
            answers.push(http.post("/v1/auth/logout", &json!({}), Some(&token)).await);
            answers
                .iter()
                .all(|(status, body)| *status == 401 && body["error"]["code"] == "session_revoked")
                .then_some(())
        }
    };
    // A second login ends the first session (the revocation reaches the gateway's set through
    // the session store's feed, within milliseconds).
    let second = http.login(&name).await;
    eventually(
        Duration::from_secs(5),
        "the replaced token refused everywhere",
        || refused(first.access_token.clone()),
    )
    .await;
    let (status, body) = http.get(history, Some(&second.access_token)).await;
    assert_eq!(status, 200, "the new session reads history: {body}");
    let (status, _) = http
        .post("/v1/auth/logout", &json!({}), Some(&second.access_token))
        .await;
    assert_eq!(status, 204);
    eventually(
        Duration::from_secs(5),
        "the logged-out token refused everywhere",
        || refused(second.access_token.clone()),
    )
    .await;
}
