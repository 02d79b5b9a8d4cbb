//! Session security against the real services: connects that cost Redis nothing, admin
//! force-logout, refresh-token races and reuse, live token refresh on the socket, session
//! policies, login limits, password change.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use onlychat_e2e::{
    Cluster, ClusterOptions, Http, OwnService, Services, TEST_SECRET, Ws, free_ports, mint_token,
    unique,
};
use serde_json::{Value, json};

fn options(env: &[(&'static str, &str)]) -> ClusterOptions {
    ClusterOptions {
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..ClusterOptions::default()
    }
}

async fn refresh(http: &Http, token: &str) -> (u16, Value) {
    http.post("/v1/auth/refresh", &json!({"refresh_token": token}), None)
        .await
}

/// `cmdstat_*` call counts of a Redis server.
async fn command_counts(redis_url: &str) -> HashMap<String, u64> {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// What ran on Redis between two snapshots, leaving out the snapshots' own `INFO` (and the
/// `HELLO`/`CLIENT` of their connections).
fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| !["info", "hello", "client|setinfo", "client"].contains(&name.as_str()))
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_with_a_valid_token_sends_no_command_to_redis() {
    // A Redis of this test's own, so no other test's traffic is counted.
    let redis = OwnService::redis(free_ports(1));
    let services = Services {
        redis_url: redis.redis_url(),
        ..Services::from_env().await
    };
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            services: Some(services),
            // No presence refresh tick during the measurement.
            node_env: vec![("ONLYCHAT_HEARTBEAT_INTERVAL", "60s".to_owned())],
            ..ClusterOptions::default()
        },
    )
    .await;
    let http = cluster.http();
    let name = unique("counted");
    http.register(&name).await;

    let before = command_counts(&redis.redis_url()).await;
    let user = http.login(&name).await;
    let after_login = command_counts(&redis.redis_url()).await;
    let (status, next) = refresh(&http, &user.refresh_token).await;
    assert_eq!(status, 200, "{next}");
    let after_refresh = command_counts(&redis.redis_url()).await;
    let token = next["access_token"].as_str().expect("token");
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(Ws::connect(&cluster.ws_url(0), token).await);
    }
    let mut ws = Ws::open(&cluster.ws_url(0), None).await.expect("upgrade");
    ws.send(json!({"type": "auth", "token": token})).await;
    ws.expect("welcome").await;
    ws.send(json!({"type": "ping", "ref": "p"})).await;
    ws.expect("pong").await;
    let after_connects = command_counts(&redis.redis_url()).await;

    let connect = delta(&after_refresh, &after_connects);
    eprintln!(
        "redis commands: login {:?}, refresh {:?}, 6 connects {connect:?}",
        delta(&before, &after_login),
        delta(&after_login, &after_refresh)
    );
    assert!(
        connect.is_empty(),
        "connecting must not touch Redis: {connect:?}"
    );
    assert!(
        !delta(&before, &after_login).is_empty(),
        "the measurement sees Redis traffic at all (a login writes the session)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_and_ends_a_users_sessions_and_others_get_403() {
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let boss = unique("boss");
    http.register(&boss).await;
    let victim = http.user(&unique("victim")).await;
    let plain = http.user(&unique("plain")).await;

    // Non-admins: 403 on every admin endpoint; no token: 401.
    let paths = [
        format!("/v1/admin/users/{}/sessions", victim.user_id),
        format!("/v1/admin/users?username={boss}"),
    ];
    for path in &paths {
        assert_eq!(
            http.get(path, Some(&plain.access_token)).await.0,
            403,
            "{path}"
        );
        assert_eq!(http.get(path, None).await.0, 401, "{path}");
    }
    let logout_path = format!("/v1/admin/users/{}/logout", victim.user_id);
    let (status, body) = http
        .post(&logout_path, &json!({}), Some(&plain.access_token))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // `onlychat user promote` against the cluster's database; effective at the next login.
    let output = std::process::Command::new(onlychat_e2e::process::binary())
        .args(["user", "promote", &boss])
        .env("ONLYCHAT_DATABASE_URL", &cluster.database_url)
        .output()
        .expect("run onlychat user promote");
    assert!(output.status.success(), "promote: {output:?}");
    let admin = http.login(&boss).await;

    let (status, found) = http
        .get(
            &format!("/v1/admin/users?username={boss}"),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["roles"], json!(["admin"]));
    let (status, _) = http
        .get(
            "/v1/admin/users?username=nobody-at-all",
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(status, 404);

    let mut sockets = vec![
        Ws::connect(&cluster.ws_url(0), &victim.access_token).await,
        Ws::connect(&cluster.ws_url(1), &victim.access_token).await,
    ];
    let (status, listed) = http.get(&paths[0], Some(&admin.access_token)).await;
    assert_eq!(status, 200, "{listed}");
    let sessions = listed["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session_id"], victim.session_id.as_str());
    assert!(
        sessions[0]["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let (status, _) = http
        .post(&logout_path, &json!({}), Some(&admin.access_token))
        .await;
    assert_eq!(status, 204);
    for ws in &mut sockets {
        assert_eq!(ws.expect_close(Duration::from_secs(1)).await, Some(4003));
    }
    assert_eq!(refresh(&http, &victim.refresh_token).await.0, 401);
    let (status, body) = http.get("/v1/auth/me", Some(&victim.access_token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("session_revoked"))
    );
    let (status, _) = http
        .post(
            "/v1/admin/users/00000000-0000-0000-0000-000000000000/logout",
            &json!({}),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_one_successor_and_reuse_revokes_the_session() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let user = http.user(&unique("racer")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;

    let tries = (0..20).map(|_| {
        let http = http.clone();
        let token = user.refresh_token.clone();
        tokio::spawn(async move { refresh(&http, &token).await })
    });
    let mut successors = HashSet::new();
    for answer in futures_util::future::join_all(tries).await {
        let (status, body) = answer.expect("task");
        assert_eq!(
            status, 200,
            "every racer within the grace gets the successor: {body}"
        );
        assert_eq!(
            body["session_id"],
            user.session_id.as_str(),
            "the same session"
        );
        successors.insert(body["refresh_token"].as_str().expect("token").to_owned());
    }
    assert_eq!(successors.len(), 1, "exactly one successor: {successors:?}");
    let successor = successors.into_iter().next().expect("one");
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;

    // The successor works (the user was not logged out by the race)...
    let (status, third) = refresh(&http, &successor).await;
    assert_eq!(status, 200, "{third}");
    // ...and presenting the first token again now is reuse: the whole session ends.
    let (status, body) = refresh(&http, &user.refresh_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
    assert_eq!(ws.expect_close(Duration::from_secs(1)).await, Some(4003));
    let newest = third["refresh_token"].as_str().expect("token");
    assert_eq!(
        refresh(&http, newest).await.0,
        401,
        "the successor died with the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_lives_on_a_refreshed_token_and_closes_4002_when_it_runs_out() {
    let cluster = Cluster::start_with(
        1,
        options(&[
            ("ONLYCHAT_ACCESS_TTL", "6s"),
            // The test sleeps without reading; no heartbeat may drop it meanwhile.
            ("ONLYCHAT_HEARTBEAT_INTERVAL", "30s"),
        ]),
    )
    .await;
    let http = cluster.http();
    let user = http.user(&unique("longlived")).await;
    let other = http.user(&unique("other")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    let first_expiry = ws.welcome["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_owned();

    // Refused, and the expiry stays as it was: another user's token, an expired token, a token
    // with a bad signature.
    let expired = mint_token(
        TEST_SECRET,
        json!({"sub": user.user_id, "sid": user.session_id, "exp": chrono::Utc::now().timestamp() - 60}),
    );
    let forged = mint_token(
        "some-other-secret-that-is-32-bytes-long!!",
        json!({"sub": user.user_id, "sid": user.session_id}),
    );
    for (i, token) in [other.access_token.as_str(), &expired, &forged]
        .into_iter()
        .enumerate()
    {
        let r#ref = format!("bad{i}");
        ws.send(json!({"type": "refresh", "token": token, "ref": r#ref}))
            .await;
        let error = ws.expect("error").await;
        assert_eq!(
            (error["code"].as_str(), error["ref"].as_str()),
            (Some("invalid_token"), Some(r#ref.as_str()))
        );
    }

    // A newer token of the same session extends the socket's life.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, next) = refresh(&http, &user.refresh_token).await;
    assert_eq!(status, 200, "{next}");
    let token = next["access_token"].as_str().expect("token");
    ws.send(json!({"type": "refresh", "token": token, "ref": "r"}))
        .await;
    let refreshed = ws.expect("refreshed").await;
    assert_eq!(refreshed["ref"], "r");
    let extended = refreshed["expires_at"].as_str().expect("expires_at");
    assert!(
        extended > first_expiry.as_str(),
        "{extended} after {first_expiry}"
    );

    // Past the first token's expiry the socket still works...
    let first_exp = chrono::DateTime::parse_from_rfc3339(&first_expiry).expect("rfc3339");
    let until_first = (first_exp.timestamp() - chrono::Utc::now().timestamp() + 1).max(0);
    tokio::time::sleep(Duration::from_secs(until_first.unsigned_abs())).await;
    ws.send(json!({"type": "ping", "ref": "alive"})).await;
    assert_eq!(ws.expect("pong").await["ref"], "alive");
    // ...and with no further refresh it closes with 4002 when the second one runs out.
    assert_eq!(ws.expect_close(Duration::from_secs(8)).await, Some(4002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reject_refuses_a_second_live_session_with_409() {
    let cluster = Cluster::start_with(1, options(&[("ONLYCHAT_SESSION_POLICY", "reject")])).await;
    let http = cluster.http();
    let name = unique("single");
    let first = http.user(&name).await;
    let (status, body) = http
        .post(
            "/v1/auth/login",
            &json!({"username": name, "password": format!("password-{name}")}),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("session_active"))
    );
    // The first session is untouched; after its logout a new login is fine.
    Ws::connect(&cluster.ws_url(0), &first.access_token).await;
    http.post("/v1/auth/logout", &json!({}), Some(&first.access_token))
        .await;
    http.login(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_multi_keeps_n_sessions_and_a_password_change_ends_the_others() {
    let cluster = Cluster::start_with(1, options(&[("ONLYCHAT_SESSION_POLICY", "multi:2")])).await;
    let http = cluster.http();
    let name = unique("tabs");
    let first = http.user(&name).await;
    let mut ws1 = Ws::connect(&cluster.ws_url(0), &first.access_token).await;
    let second = http.login(&name).await;
    let mut ws2 = Ws::connect(&cluster.ws_url(0), &second.access_token).await;
    let third = http.login(&name).await;
    assert_eq!(
        ws1.expect_close(Duration::from_secs(1)).await,
        Some(4001),
        "the oldest of three"
    );
    ws2.send(json!({"type": "ping"})).await;
    ws2.expect("pong").await;
    let mut ws3 = Ws::connect(&cluster.ws_url(0), &third.access_token).await;

    // Password change from the third session: wrong current, weak new, then right.
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let old = format!("password-{name}");
    let (status, body) = http
        .post(
            "/v1/auth/password",
            &change("wrong-password", "a-new-password"),
            Some(&third.access_token),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, body) = http
        .post(
            "/v1/auth/password",
            &change(&old, "short"),
            Some(&third.access_token),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("weak_password"))
    );
    let (status, _) = http
        .post(
            "/v1/auth/password",
            &change(&old, "a-new-password"),
            Some(&third.access_token),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        ws2.expect_close(Duration::from_secs(1)).await,
        Some(4003),
        "the other session ends"
    );
    ws3.send(json!({"type": "ping"})).await;
    ws3.expect("pong").await;
    let login = |password: &str| json!({"username": name, "password": password});
    assert_eq!(http.post("/v1/auth/login", &login(&old), None).await.0, 401);
    assert_eq!(
        http.post("/v1/auth/login", &login("a-new-password"), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_answer_429_alike_for_unknown_and_known_users() {
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            gateway_env: vec![
                ("ONLYCHAT_LOGIN_RATE_USER", "0.01".to_owned()),
                ("ONLYCHAT_LOGIN_BURST_USER", "3".to_owned()),
            ],
            ..ClusterOptions::default()
        },
    )
    .await;
    let http = cluster.http();
    let known = unique("known");
    http.register(&known).await;
    for name in [known.as_str(), "no-such-user"] {
        for _ in 0..3 {
            let (status, body) = http
                .post(
                    "/v1/auth/login",
                    &json!({"username": name, "password": "wrong-password"}),
                    None,
                )
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("invalid_credentials"))
            );
        }
        let response = reqwest::Client::new()
            .post(format!("{}/v1/auth/login", cluster.gateway.base_url()))
            .json(&json!({"username": name, "password": format!("password-{name}")}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 429, "{name}");
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=100).contains(&retry), "Retry-After {retry}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // Another user is not affected.
    http.user(&unique("bystander")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_login_limit_spans_usernames() {
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            gateway_env: vec![
                ("ONLYCHAT_LOGIN_RATE_IP", "0.01".to_owned()),
                ("ONLYCHAT_LOGIN_BURST_IP", "5".to_owned()),
            ],
            ..ClusterOptions::default()
        },
    )
    .await;
    let http = cluster.http();
    let statuses: Vec<u16> = futures_util::future::join_all((0..7).map(|i| {
        let http = http.clone();
        async move {
            http.post(
                "/v1/auth/login",
                &json!({"username": format!("spray{i}"), "password": "guess-guess"}),
                None,
            )
            .await
            .0
        }
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_tokens_get_401_never_500() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let url = cluster.ws_url(0);
    let user = http.user(&unique("target")).await;
    let now = chrono::Utc::now().timestamp();
    let b64 = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let payload = user
        .access_token
        .split('.')
        .nth(1)
        .expect("payload")
        .to_owned();
    let mut forged: Vec<(String, String)> = ["none", "None", "NONE", "nOnE"]
        .iter()
        .map(|alg| {
            (
                format!("alg {alg}"),
                format!(
                    "{}.{payload}.",
                    b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#))
                ),
            )
        })
        .collect();
    let claims: [(&str, Value); 9] = [
        ("exp missing", json!({"exp": null})),
        ("exp string", json!({"exp": "tomorrow"})),
        ("exp zero", json!({"exp": 0})),
        ("exp negative", json!({"exp": -1})),
        ("exp huge", json!({"exp": 1e300})),
        (
            "exp beyond the maximum lifetime",
            json!({"exp": now + 365 * 86_400}),
        ),
        ("nbf in the future", json!({"nbf": now + 600})),
        (
            "iat in the future",
            json!({"iat": now + 600, "exp": now + 1200}),
        ),
        ("another issuer", json!({"iss": "someone-else"})),
    ];
    for (what, overrides) in claims {
        forged.push((what.to_owned(), mint_token(TEST_SECRET, overrides)));
    }
    forged.push(("a missing exp claim".into(), {
        let token = mint_token(TEST_SECRET, json!({}));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(&json!({"sub": user.user_id, "sid": user.session_id, "iss": "onlychat", "aud": "onlychat", "iat": now, "nbf": now}).to_string());
        parts.join(".")
    }));
    for (what, token) in &forged {
        let (status, body) = http.get("/v1/auth/me", Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            ["invalid_token", "token_expired"]
                .contains(&body["error"]["code"].as_str().unwrap_or("")),
            "{what}: {body}"
        );
        match Ws::open(&url, Some(token)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401, "{what}");
            }
            other => panic!(
                "{what}: the upgrade was not refused: {:?}",
                other.map(|_| ())
            ),
        }
    }
    let (status, _) = Http::new(&cluster.nodes[0].base_url())
        .get("/readyz", None)
        .await;
    assert_eq!(status, 200, "the node is fine");
}

/// Key files shipped for the tests (crates/auth/testdata).
fn key(name: &str) -> String {
    format!(
        "{}/../crates/auth/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_verify_on_nodes_with_the_public_key_and_survive_a_key_rotation() {
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            env: vec![
                ("ONLYCHAT_JWT_ALGORITHM", "EdDSA".to_owned()),
                ("ONLYCHAT_JWT_SECRET", String::new()),
            ],
            gateway_env: vec![("ONLYCHAT_JWT_KEY", key("ed-a.pem"))],
            // Nodes hold no private key: the current and the next public key.
            node_env: vec![(
                "ONLYCHAT_JWT_PUBLIC_KEYS",
                format!("{},{}", key("ed-a.pub.pem"), key("ed-b.pub.pem")),
            )],
            ..ClusterOptions::default()
        },
    )
    .await;
    let http = cluster.http();
    let (status, jwks) = http.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(
        (keys.len(), keys[0]["kty"].as_str(), keys[0]["crv"].as_str()),
        (1, Some("OKP"), Some("Ed25519"))
    );
    let before = http.user(&unique("rotated")).await;
    let header: Value = {
        use base64::Engine;
        let head = before.access_token.split('.').next().expect("header");
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(head)
                .expect("b64"),
        )
        .expect("json")
    };
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], keys[0]["kid"], "kid is the JWK thumbprint");
    Ws::connect(&cluster.ws_url(0), &before.access_token).await;

    // HS256 signed with the public key's bytes (the algorithm-confusion forgery): refused.
    let public_pem = std::fs::read_to_string(key("ed-a.pub.pem")).expect("pem");
    let forged = mint_token(
        &public_pem,
        json!({"sub": before.user_id, "sid": before.session_id}),
    );
    assert_eq!(http.get("/v1/auth/me", Some(&forged)).await.0, 401);
    assert!(Ws::open(&cluster.ws_url(0), Some(&forged)).await.is_err());

    // Rotation: a gateway signing with key B that still publishes A; tokens under A stay valid.
    let mut env: Vec<(&str, String)> = cluster.writer_env.clone();
    env.push(("ONLYCHAT_HISTORY_WRITER", "off".to_owned()));
    env.push(("ONLYCHAT_JWT_KEY", key("ed-b.pem")));
    env.push(("ONLYCHAT_JWT_PUBLIC_KEYS", key("ed-a.pub.pem")));
    let rotated = onlychat_e2e::Proc::spawn("gateway-b", &["gateway"], &env).await;
    let http_b = Http::new(&rotated.base_url());
    let (_, jwks_b) = http_b.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        jwks_b["keys"].as_array().map(Vec::len),
        Some(2),
        "new and previous key published"
    );
    let after = http_b.user(&unique("rotated")).await;
    Ws::connect(&cluster.ws_url(0), &after.access_token).await;
    let (status, _) = http_b.get("/v1/auth/me", Some(&before.access_token)).await;
    assert_eq!(
        status, 200,
        "a token under the previous key is still accepted"
    );
    let (status, _) = http.get("/v1/auth/me", Some(&after.access_token)).await;
    assert_eq!(status, 401, "the old gateway does not know key B");
}

/// A known endpoint asked with the wrong method answers 405 `method_not_allowed` with `Allow`
/// naming the one it takes; an unknown path stays 404 `not_found`. Both in the JSON error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_with_allow_and_an_unknown_path_404() {
    let cluster = Cluster::start(1).await;
    let base = cluster.gateway.base_url();
    let client = reqwest::Client::new();
    let cases = [
        (reqwest::Method::GET, "/v1/auth/register", Some("POST")),
        (reqwest::Method::PUT, "/v1/auth/login", Some("POST")),
        (reqwest::Method::POST, "/v1/auth/me", Some("GET")),
        (
            reqwest::Method::DELETE,
            "/v1/rooms/lobby/messages",
            Some("GET"),
        ),
        (
            reqwest::Method::GET,
            "/v1/admin/users/x/logout",
            Some("POST"),
        ),
        (reqwest::Method::GET, "/v1/auth/nothing-here", None),
        (reqwest::Method::POST, "/v1/nothing", None),
    ];
    for (method, path, allow) in cases {
        let response = client
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .expect("http request");
        let status = response.status().as_u16();
        let allowed = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let expected = match allow {
            Some(_) => (405, Some("method_not_allowed")),
            None => (404, Some("not_found")),
        };
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            expected,
            "{method} {path}: {body}"
        );
        assert_eq!(allowed.as_deref(), allow, "{method} {path}: Allow");
    }
    // A plain GET of /ws (no upgrade headers): 400; another WebSocket version: 426 with the
    // version the node speaks (RFC 6455 4.4). Both with the JSON error body.
    let ws = format!("{}/ws", cluster.nodes[0].base_url());
    for (headers, expected_status) in [
        (vec![], 400),
        (
            vec![
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "8"),
            ],
            426,
        ),
    ] {
        let mut request = client.get(&ws);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let version = response.headers().get("sec-websocket-version").cloned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (expected_status, Some("bad_request")),
            "GET /ws with {headers:?}: {body}"
        );
        assert_eq!(version.as_ref().and_then(|v| v.to_str().ok()), Some("13"));
    }
}
