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
