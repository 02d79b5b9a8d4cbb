//! Measures the history writer's throughput into PostgreSQL and replay speed (from a node's
//! buffer and from the store) on real services. Not a test: it prints figures. Needs the
//! services (`scripts/services.sh up`, then `eval "$(scripts/services.sh env)"`) and a built
//! `onlychat` binary.
//!
//!   cargo run -p onlychat-e2e --bin delivery-bench -- [messages=20000]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use onlychat_e2e::{Cluster, ClusterOptions, Ws, unique};
use serde_json::{Value, json};
use sqlx::Connection;

/// Sends `count` messages in pipelined chunks; returns the acks in send order.
async fn send_all(ws: &mut Ws, room: &str, count: usize) -> Vec<Value> {
    let mut acks = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        for i in chunk {
            ws.send(json!({"type": "send", "room": room, "body": format!("message {i} {}", "x".repeat(64)), "client_id": format!("b{i}")}))
                .await;
        }
        let mut got: HashMap<String, Value> = HashMap::new();
        while got.len() < chunk.len() {
            let frame = ws.recv().await;
            assert_ne!(frame["type"], "error", "{frame}");
            if frame["type"] == "ack" {
                got.insert(
                    frame["client_id"].as_str().unwrap_or_default().to_owned(),
                    frame,
                );
            }
        }
        acks.extend(
            chunk
                .iter()
                .map(|i| got.remove(&format!("b{i}")).expect("ack")),
        );
    }
    acks
}

async fn stored(database_url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .expect("database");
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

/// Joins with `since` and times the arrival of `expect` replayed messages.
async fn replay(
    cluster: &Cluster,
    token: &str,
    room: &str,
    since: u64,
    expect: usize,
) -> (bool, f64) {
    let mut ws = Ws::connect(&cluster.ws_url(0), token).await;
    let started = Instant::now();
    ws.send(json!({"type": "join", "room": room, "since": since}))
        .await;
    let recovered = ws.expect("joined").await["recovered"] == true;
    let mut n = 0;
    while n < expect {
        if ws.recv().await["type"] == "message" {
            n += 1;
        }
    }
    (recovered, started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let options = ClusterOptions {
        history_writer: "off",
        // The bench's sender outruns the per-connection send limit on purpose.
        env: vec![("ONLYCHAT_SEND_RATE", "0".to_owned())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(1, options).await;
    let http = cluster.http();
    let user = http.user(&unique("bench")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    ws.join("bench").await;
    let sent = Instant::now();
    let acks = send_all(&mut ws, "bench", messages).await;
    let send_s = sent.elapsed().as_secs_f64();
    drop(ws);

    let writer = cluster.spawn_history_writer().await;
    let started = Instant::now();
    while stored(&cluster.database_url).await < i64::try_from(messages).unwrap_or(i64::MAX) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the writer did not catch up in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let write_s = started.elapsed().as_secs_f64();
    drop(writer);

    let position = |i: usize| acks[i]["position"].as_u64().expect("position");
    let buffered = 1000.min(messages - 1);
    let (buffer_ok, buffer_s) = replay(
        &cluster,
        &user.access_token,
        "bench",
        position(messages - buffered - 1),
        buffered,
    )
    .await;
    let from_store = 10_000.min(messages - 1);
    let (store_ok, store_s) = replay(
        &cluster,
        &user.access_token,
        "bench",
        position(messages - from_store - 1),
        from_store,
    )
    .await;
    println!(
        "messages={messages} send+ack={:.0}/s history_writer={:.0} rows/s ({write_s:.2}s) \
         replay_buffer={buffered} msgs in {buffer_s:.3}s ({:.0}/s, recovered={buffer_ok}) \
         replay_store={from_store} msgs in {store_s:.3}s ({:.0}/s, recovered={store_ok})",
        messages as f64 / send_s,
        messages as f64 / write_s,
        buffered as f64 / buffer_s,
        from_store as f64 / store_s,
    );
}
