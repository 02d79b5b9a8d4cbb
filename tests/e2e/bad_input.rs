//! Malformed frames get an in-band `error` with the right code, and the socket keeps working.

use onlychat_e2e::{Cluster, Ws, unique};
use serde_json::json;

async fn still_works(ws: &mut Ws) {
    ws.send(json!({"type": "ping", "ref": "alive"})).await;
    let pong = ws.recv().await;
    assert_eq!(
        (pong["type"].as_str(), pong["ref"].as_str()),
        (Some("pong"), Some("alive")),
        "{pong}"
    );
}

async fn expect_error(ws: &mut Ws, text: &str, code: &str) -> serde_json::Value {
    ws.send_text(text).await;
    let frame = ws.recv().await;
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some(code)),
        "for {text}: {frame}"
    );
    still_works(ws).await;
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_precise_errors_and_the_socket_survives() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let user = http.user(&unique("fuzzy")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;

    expect_error(&mut ws, "this is not json", "bad_frame").await;
    expect_error(&mut ws, "[1,2,3]", "bad_frame").await;
    expect_error(&mut ws, r#"{"no_type": true}"#, "bad_frame").await;
    let frame = expect_error(&mut ws, r#"{"type": "dance", "ref": "d1"}"#, "bad_frame").await;
    assert_eq!(frame["ref"], "d1");
    expect_error(&mut ws, r#"{"type": "join"}"#, "bad_frame").await;
    expect_error(&mut ws, r#"{"type": "join", "room": 42}"#, "bad_frame").await;
    expect_error(
        &mut ws,
        r#"{"type": "send", "room": "lobby", "body": "x"}"#,
        "bad_frame",
    )
    .await;
    let frame = expect_error(
        &mut ws,
        r#"{"type": "join", "room": "Not A Room!", "ref": "j"}"#,
        "invalid_room",
    )
    .await;
    assert_eq!(
        (frame["ref"].as_str(), frame["room"].as_str()),
        (Some("j"), Some("Not A Room!"))
    );
    expect_error(
        &mut ws,
        &json!({"type": "join", "room": "r".repeat(65)}).to_string(),
        "invalid_room",
    )
    .await;

    // Send before joining.
    let frame = expect_error(
        &mut ws,
        r#"{"type": "send", "room": "lobby", "body": "hi", "client_id": "c0"}"#,
        "not_joined",
    )
    .await;
    assert_eq!(frame["client_id"], "c0");
    expect_error(
        &mut ws,
        r#"{"type": "typing", "room": "lobby"}"#,
        "not_joined",
    )
    .await;

    ws.join("lobby").await;
    let frame = expect_error(
        &mut ws,
        r#"{"type": "send", "room": "lobby", "body": "", "client_id": "c1", "ref": "s1"}"#,
        "invalid_body",
    )
    .await;
    assert_eq!(
        (
            frame["ref"].as_str(),
            frame["room"].as_str(),
            frame["client_id"].as_str()
        ),
        (Some("s1"), Some("lobby"), Some("c1"))
    );
    let long =
        json!({"type": "send", "room": "lobby", "body": "é".repeat(4097), "client_id": "c2"});
    expect_error(&mut ws, &long.to_string(), "invalid_body").await;
    let long_id =
        json!({"type": "send", "room": "lobby", "body": "ok", "client_id": "x".repeat(65)});
    expect_error(&mut ws, &long_id.to_string(), "bad_frame").await;

    // After all that, chat still works: a 4096-character body is accepted and delivered.
    let body = "é".repeat(4096);
    ws.send(json!({"type": "send", "room": "lobby", "body": body, "client_id": "c3"}))
        .await;
    let message = ws.expect("message").await;
    assert_eq!(
        message["body"].as_str().map(|b| b.chars().count()),
        Some(4096)
    );
}
