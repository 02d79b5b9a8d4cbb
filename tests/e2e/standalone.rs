//! The same chat scenario against `onlychat standalone`: no outside service at all.

use std::time::Duration;

use onlychat_e2e::{Http, Proc, Ws, unique};
use serde_json::json;

async fn standalone(data_dir: &std::path::Path) -> Proc {
    let dir = data_dir.display().to_string();
    Proc::spawn(
        "standalone",
        &["standalone", "--data-dir", &dir],
        &[("ONLYCHAT_HEARTBEAT_INTERVAL", "2s".into())],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_runs_the_whole_chat_path_in_one_process() {
    let data_dir = std::env::temp_dir().join(unique("onlychat-standalone-"));
    let server = standalone(&data_dir).await;
    let http = Http::new(&server.base_url());
    let alice = http.user("alice").await;
    let bob = http.user("bob").await;
    let mut a = Ws::connect(&server.ws_url(), &alice.access_token).await;
    let mut b = Ws::connect(&server.ws_url(), &bob.access_token).await;
    a.join("lobby").await;
    let joined = b.join("lobby").await;
    assert_eq!(
        joined["online"],
        json!(
            [alice.user_id.clone(), bob.user_id.clone()]
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
        )
    );
    assert_eq!(a.expect("presence").await["event"], "join");

    a.send(json!({"type": "send", "room": "lobby", "body": "hello", "client_id": "a1"}))
        .await;
    let delivered = b.expect("message").await;
    let ack = a.expect("ack").await;
    assert_eq!(delivered["position"], ack["position"]);
    assert_eq!(delivered["body"], "hello");
    b.send(json!({"type": "typing", "room": "lobby"})).await;
    assert_eq!(a.expect("typing").await["user_id"], bob.user_id.as_str());

    // A second login evicts the first socket with 4001.
    http.login("alice").await;
    assert_eq!(a.expect_close(Duration::from_secs(1)).await, Some(4001));
    let leave = b.expect("presence").await;
    assert_eq!(
        (leave["event"].as_str(), leave["user_id"].as_str()),
        (Some("leave"), Some(alice.user_id.as_str()))
    );
    drop(server);

    // Accounts and the JWT secret survive a restart (SQLite and the secret file in the data dir).
    let server = standalone(&data_dir).await;
    let http = Http::new(&server.base_url());
    let again = http.login("bob").await;
    assert_eq!(again.user_id, bob.user_id);
    let (status, _) = http
        .post(
            "/v1/auth/register",
            &json!({"username": "bob", "password": "password-bob"}),
            None,
        )
        .await;
    assert_eq!(status, 409);
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The next `ack` or `error` answering `client_id`.
async fn answer(ws: &mut Ws, client_id: &str) -> serde_json::Value {
    loop {
        let frame = ws.recv().await;
        if frame["client_id"] == client_id && (frame["type"] == "ack" || frame["type"] == "error") {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_keeps_history_positions_and_dedupe_across_a_restart() {
    let data_dir = std::env::temp_dir().join(unique("onlychat-standalone-"));
    let server = standalone(&data_dir).await;
    let http = Http::new(&server.base_url());
    let alice = http.user("alice").await;
    let mut a = Ws::connect(&server.ws_url(), &alice.access_token).await;
    a.join("log").await;
    let mut acks = Vec::new();
    for i in 0..20 {
        let id = format!("s{i}");
        a.send(json!({"type": "send", "room": "log", "body": format!("m{i}"), "client_id": id}))
            .await;
        acks.push(answer(&mut a, &id).await);
    }
    assert!(acks.iter().all(|a| a["type"] == "ack"), "{acks:?}");
    let epoch = a.join("log").await["epoch"].clone();
    let old_token = alice.access_token.clone();
    drop(a);
    drop(server);

    let server = standalone(&data_dir).await;
    let http = Http::new(&server.base_url());
    // Sessions lived in the old process: its tokens are refused everywhere, /ws included.
    match Ws::open(&server.ws_url(), Some(&old_token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
        }
        other => panic!(
            "an access token from before the restart was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    for path in ["/v1/auth/me", "/v1/rooms/log/messages"] {
        let (status, body) = http.get(path, Some(&old_token)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("session_revoked")),
            "{path} with a token from before the restart"
        );
    }
    let alice = http.login("alice").await;
    let mut a = Ws::connect(&server.ws_url(), &alice.access_token).await;
    // Resume from the fifth message: the same epoch, the 15 after it, in order.
    let since = acks[4]["position"].as_u64().expect("position");
    a.send(json!({"type": "join", "room": "log", "since": since, "epoch": epoch}))
        .await;
    let joined = a.expect("joined").await;
    assert_eq!(
        (joined["recovered"].clone(), joined["epoch"].clone()),
        (json!(true), epoch)
    );
    for (i, ack) in acks.iter().enumerate().skip(5) {
        let message = a.expect("message").await;
        assert_eq!(message["body"], format!("m{i}"));
        assert_eq!(message["position"], ack["position"]);
    }
    // ...and nothing after them: no message replayed twice.
    while let Some(frame) = a.try_recv(std::time::Duration::from_millis(500)).await {
        assert_ne!(frame["type"], "message", "replayed again: {frame}");
    }
    // A resend of a message acked before the restart gets the original ack; nothing new.
    a.send(json!({"type": "send", "room": "log", "body": "m3", "client_id": "s3"}))
        .await;
    let again = answer(&mut a, "s3").await;
    assert_eq!(
        (&again["id"], &again["position"]),
        (&acks[3]["id"], &acks[3]["position"])
    );
    a.send(json!({"type": "send", "room": "log", "body": "after", "client_id": "s-after"}))
        .await;
    let next = answer(&mut a, "s-after").await;
    assert!(
        next["position"].as_u64() > acks[19]["position"].as_u64(),
        "positions continue after a restart"
    );
    let (status, page) = http
        .get(
            "/v1/rooms/log/messages?limit=200",
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("m{i}"))
        .chain(["after".to_owned()])
        .collect();
    assert_eq!(bodies, expected, "history holds every acked message once");
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_promote_works_against_a_running_standalones_database() {
    let data_dir = std::env::temp_dir().join(unique("onlychat-standalone-"));
    let server = standalone(&data_dir).await;
    let http = Http::new(&server.base_url());
    let name = unique("chief");
    let before = http.user(&name).await;
    let path = "/v1/admin/users?username=".to_owned() + &name;
    assert_eq!(http.get(&path, Some(&before.access_token)).await.0, 403);
    let output = std::process::Command::new(onlychat_e2e::process::binary())
        .args(["user", "promote", &name, "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run onlychat user promote");
    assert!(output.status.success(), "promote: {output:?}");
    // Effective at the next refresh, without a new login.
    let (status, next) = http
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": before.refresh_token}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{next}");
    let token = next["access_token"].as_str().expect("token");
    let (status, found) = http.get(&path, Some(token)).await;
    assert_eq!((status, found["roles"].clone()), (200, json!(["admin"])));
}
