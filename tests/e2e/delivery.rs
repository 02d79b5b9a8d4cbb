//! Delivery guarantees against real Kafka, Redis and PostgreSQL: idempotent resends across
//! nodes, gap-free resume with `since`, node death, a stopped history writer, durable history.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use onlychat_e2e::{Cluster, ClusterOptions, Http, Ws, eventually, unique};
use serde_json::{Value, json};

fn send(room: &str, body: &str, client_id: &str) -> Value {
    json!({"type": "send", "room": room, "body": body, "client_id": client_id, "ref": client_id})
}

/// Reads frames until the `ack` of `client_id` arrives; panics on an error frame for it.
async fn ack_of(ws: &mut Ws, client_id: &str) -> Value {
    acks_of(ws, &[client_id.to_owned()])
        .await
        .remove(client_id)
        .expect("ack")
}

/// Reads frames until every one of `client_ids` is acked (acks may come in any order).
async fn acks_of(ws: &mut Ws, client_ids: &[String]) -> HashMap<String, Value> {
    let mut acks = HashMap::new();
    while acks.len() < client_ids.len() {
        let frame = ws.recv().await;
        let Some(client_id) = frame["client_id"]
            .as_str()
            .filter(|c| client_ids.iter().any(|w| w == c))
        else {
            continue;
        };
        match frame["type"].as_str() {
            Some("ack") => {
                acks.insert(client_id.to_owned(), frame);
            }
            Some("error") => panic!("send {client_id} refused: {frame}"),
            _ => {}
        }
    }
    acks
}

/// Every history row of a room, paging with `after`.
async fn history(http: &Http, token: &str, room: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = http
            .get(
                &format!("/v1/rooms/{room}/messages?after={after}&limit=200"),
                Some(token),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().expect("messages").clone();
        if let Some(last) = messages.last() {
            after = last["position"].as_u64().expect("position");
        }
        all.extend(messages);
        if page["has_more"] != true {
            return all;
        }
    }
}

/// Messages of `room` until `count` arrived, in order; panics on a duplicate position.
async fn messages(ws: &mut Ws, room: &str, count: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    while got.len() < count {
        let frame = ws.recv().await;
        if frame["type"] == "message" && frame["room"] == room {
            if let Some(last) = got.last() {
                assert!(
                    frame["position"].as_u64() > last["position"].as_u64(),
                    "out of order or duplicate: {frame}"
                );
            }
            got.push(frame);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_on_another_node_is_delivered_and_stored_once() {
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let alice = http.user(&unique("alice")).await;
    let bob = http.user(&unique("bob")).await;
    let mut a1 = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    let mut b = Ws::connect(&cluster.ws_url(1), &bob.access_token).await;
    a1.join("dedupe").await;
    b.join("dedupe").await;
    a1.send(send("dedupe", "once", "c-1")).await;
    let first = ack_of(&mut a1, "c-1").await;
    // The same client_id again: from the same socket, then from a socket on the other node.
    a1.send(send("dedupe", "once", "c-1")).await;
    let again = ack_of(&mut a1, "c-1").await;
    let mut a2 = Ws::connect(&cluster.ws_url(1), &alice.access_token).await;
    a2.join("dedupe").await;
    a2.send(send("dedupe", "once", "c-1")).await;
    let other_node = ack_of(&mut a2, "c-1").await;
    for ack in [&again, &other_node] {
        assert_eq!(
            (&ack["id"], &ack["position"]),
            (&first["id"], &first["position"]),
            "the original ack: {ack}"
        );
    }
    // Concurrent resends racing on both nodes: still one message.
    a1.send(send("dedupe", "race", "c-2")).await;
    a2.send(send("dedupe", "race", "c-2")).await;
    let (r1, r2) = (ack_of(&mut a1, "c-2").await, ack_of(&mut a2, "c-2").await);
    assert_eq!((&r1["id"], &r1["position"]), (&r2["id"], &r2["position"]));
    b.send(send("dedupe", "end", "b-end")).await;
    let got = messages(&mut b, "dedupe", 3).await;
    let bodies: Vec<&str> = got
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        bodies,
        ["once", "race", "end"],
        "each message reached bob once"
    );
    let rows = eventually(Duration::from_secs(20), "history rows", || async {
        let rows = history(&http, &bob.access_token, "dedupe").await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let bodies: Vec<&str> = rows
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(bodies, ["once", "race", "end"], "one history row each");
    assert_eq!(rows[0]["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_with_since_replays_exactly_the_missed_messages_then_live() {
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let sender = http.user(&unique("sender")).await;
    let reader = http.user(&unique("reader")).await;
    let mut tx = Ws::connect(&cluster.ws_url(0), &sender.access_token).await;
    tx.join("resume").await;
    let mut rx = Ws::connect(&cluster.ws_url(1), &reader.access_token).await;
    rx.join("resume").await;
    tx.send(send("resume", "before", "m-before")).await;
    let seen = messages(&mut rx, "resume", 1).await;
    let since = seen[0]["position"].as_u64().expect("position");
    let epoch = seen[0]["epoch"].clone();
    drop(rx);
    for i in 0..200 {
        tx.send(send("resume", &format!("missed {i}"), &format!("m{i}")))
            .await;
    }
    acks_of(
        &mut tx,
        &(0..200).map(|i| format!("m{i}")).collect::<Vec<_>>(),
    )
    .await;
    // Traffic keeps flowing while the reader rejoins and replays.
    let sending = tokio::spawn(async move {
        for i in 0..100 {
            tx.send(send("resume", &format!("live {i}"), &format!("l{i}")))
                .await;
        }
        acks_of(
            &mut tx,
            &(0..100).map(|i| format!("l{i}")).collect::<Vec<_>>(),
        )
        .await;
    });
    let mut rx = Ws::connect(&cluster.ws_url(0), &reader.access_token).await;
    rx.send(json!({"type": "join", "room": "resume", "since": since, "epoch": epoch}))
        .await;
    let joined = rx.expect("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let got = messages(&mut rx, "resume", 300).await;
    sending.await.expect("sender");
    let bodies: Vec<String> = got
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..200)
        .map(|i| format!("missed {i}"))
        .chain((0..100).map(|i| format!("live {i}")))
        .collect();
    assert_eq!(
        bodies, expected,
        "the 200 missed in order, then the live ones, no gap or duplicate"
    );

    // A `since` from another epoch is not trusted: recovered false and the latest page.
    let mut stale = Ws::connect(&cluster.ws_url(1), &reader.access_token).await;
    stale
        .send(json!({"type": "join", "room": "resume", "since": 1, "epoch": "another-epoch"}))
        .await;
    let joined = stale.expect("joined").await;
    assert_eq!(joined["recovered"], false);
    let page = messages(&mut stale, "resume", 50).await;
    assert_eq!(
        page.last().map(|m| m["body"].clone()),
        Some(json!("live 99"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_on_the_other_without_losing_acked_messages() {
    let mut cluster = Cluster::start(2).await;
    let http = cluster.http();
    let sender = http.user(&unique("sender")).await;
    let reader = http.user(&unique("reader")).await;
    let mut tx = Ws::connect(&cluster.ws_url(1), &sender.access_token).await;
    tx.join("crash").await;
    let mut rx = Ws::connect(&cluster.ws_url(0), &reader.access_token).await;
    let since = rx.join("crash").await["position"]
        .as_u64()
        .expect("position");
    let sending = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..300 {
            let id = format!("k{i}");
            tx.send(send("crash", &id, &id)).await;
            acked.push(
                ack_of(&mut tx, &id).await["id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            );
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        acked
    });
    // Read a little, then kill -9 the reader's node under traffic.
    let mut last = since;
    for _ in 0..20 {
        let frame = rx.expect("message").await;
        last = frame["position"].as_u64().expect("position");
    }
    cluster.nodes[0].kill().await;
    let acked = sending.await.expect("sender");
    let mut rx = Ws::connect(&cluster.ws_url(1), &reader.access_token).await;
    rx.send(json!({"type": "join", "room": "crash", "since": last}))
        .await;
    assert_eq!(rx.expect("joined").await["recovered"], true);
    let seen_before = 20;
    let got = messages(&mut rx, "crash", acked.len() - seen_before).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default())
        .collect();
    let expected: Vec<&str> = acked[seen_before..].iter().map(String::as_str).collect();
    assert_eq!(
        ids, expected,
        "every acked message after the last one seen, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_history_writer_stores_every_acked_message_once() {
    let options = ClusterOptions {
        history_writer: "off",
        // 600 sends from one socket: more than the default burst.
        env: vec![("ONLYCHAT_SEND_RATE", "0".to_owned())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(1, options).await;
    let http = cluster.http();
    let user = http.user(&unique("writer")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    ws.join("hist").await;
    let mut writer = cluster.spawn_history_writer().await;
    let mut acked = Vec::new();
    for round in 0..3 {
        let ids: Vec<String> = (round * 200..(round + 1) * 200)
            .map(|j| format!("h{j}"))
            .collect();
        for id in &ids {
            ws.send(send("hist", id, id)).await;
        }
        let mut acks = acks_of(&mut ws, &ids).await;
        acked.extend(
            ids.iter()
                .map(|id| acks.remove(id).expect("ack")["id"].clone()),
        );
        match round {
            0 => {
                // Mid-stream: once the writer has stored some, kill it without a chance to commit.
                eventually(
                    Duration::from_secs(30),
                    "the writer storing rows",
                    || async {
                        (!history(&http, &user.access_token, "hist").await.is_empty()).then_some(())
                    },
                )
                .await;
                writer.kill().await;
            }
            1 => writer = cluster.spawn_history_writer().await,
            _ => {}
        }
    }
    let rows = eventually(Duration::from_secs(60), "all 600 history rows", || async {
        let rows = history(&http, &user.access_token, "hist").await;
        (rows.len() >= 600).then_some(rows)
    })
    .await;
    let ids: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids.len(), 600, "exactly once");
    let unique_ids: HashSet<String> = ids.iter().map(|v| v.to_string()).collect();
    assert_eq!(unique_ids.len(), 600);
    assert_eq!(
        ids,
        acked.iter().collect::<Vec<_>>(),
        "every acked message, in order"
    );
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_oldest_first_with_exclusive_bounds() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let user = http.user(&unique("pager")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    ws.join("pages").await;
    let mut positions = Vec::new();
    for i in 0..30 {
        ws.send(send("pages", &format!("p{i}"), &format!("p{i}")))
            .await;
        positions.push(
            ack_of(&mut ws, &format!("p{i}")).await["position"]
                .as_u64()
                .expect("position"),
        );
    }
    let token = user.access_token.as_str();
    let newest = eventually(Duration::from_secs(20), "history caught up", || async {
        let (_, page) = http
            .get("/v1/rooms/pages/messages?limit=10", Some(token))
            .await;
        (page["messages"].as_array().map(Vec::len) == Some(10)
            && page["messages"][9]["position"].as_u64() == positions.last().copied())
        .then_some(page)
    })
    .await;
    assert_eq!(newest["has_more"], true);
    assert_eq!(newest["room"], "pages");
    assert!(newest["epoch"].is_string());
    assert_eq!(newest["messages"][0]["body"], "p20");
    let (_, before) = http
        .get(
            &format!("/v1/rooms/pages/messages?before={}&limit=5", positions[20]),
            Some(token),
        )
        .await;
    let bodies: Vec<&str> = before["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["p15", "p16", "p17", "p18", "p19"]);
    let (_, after) = http
        .get(
            &format!("/v1/rooms/pages/messages?after={}", positions[27]),
            Some(token),
        )
        .await;
    assert_eq!(after["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(after["has_more"], false);
    let (status, bad) = http.get("/v1/rooms/Bad%20Room/messages", Some(token)).await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_room"))
    );
    let (status, _) = http.get("/v1/rooms/pages/messages", None).await;
    assert_eq!(status, 401);
    // A page of nothing is not a page: limit 0 is refused; above 200 is clamped to 200.
    let (status, zero) = http
        .get("/v1/rooms/pages/messages?limit=0", Some(token))
        .await;
    assert_eq!(
        (status, zero["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{zero}"
    );
    let (status, clamped) = http
        .get("/v1/rooms/pages/messages?limit=100000", Some(token))
        .await;
    assert_eq!(status, 200, "{clamped}");
    assert_eq!(clamped["messages"].as_array().map(Vec::len), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_older_than_the_node_buffer_replays_from_postgres() {
    let options = ClusterOptions {
        node_env: vec![("ONLYCHAT_REPLAY_BUFFER", "20".to_owned())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(1, options).await;
    let http = cluster.http();
    let user = http.user(&unique("old")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    let since = ws.join("old").await["position"].as_u64().expect("position");
    let ids: Vec<String> = (0..150).map(|i| format!("o{i}")).collect();
    for id in &ids {
        ws.send(send("old", id, id)).await;
    }
    let mut acks = acks_of(&mut ws, &ids).await;
    let acked: Vec<Value> = ids
        .iter()
        .map(|id| acks.remove(id).expect("ack")["id"].clone())
        .collect();
    // The node keeps only the last 20; the rest must come from history once it has them.
    eventually(
        Duration::from_secs(20),
        "history to hold all 150",
        || async { (history(&http, &user.access_token, "old").await.len() == 150).then_some(()) },
    )
    .await;
    let mut again = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    again
        .send(json!({"type": "join", "room": "old", "since": since}))
        .await;
    assert_eq!(again.expect("joined").await["recovered"], true);
    let got = messages(&mut again, "old", 150).await;
    assert_eq!(
        got.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        acked,
        "all 150 in order, no gap at the buffer's floor"
    );
}

/// A client that moves to a node whose consumer is behind what the client has seen (the node
/// was paused, or just started) gets an exact resume: the join waits until the node has read
/// up to `since`, answers `recovered: true`, and sends nothing the client already had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_a_node_that_is_behind_waits_for_it_and_sends_nothing_twice() {
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let room = unique("behind");
    let (sender, mover) = (
        http.user(&unique("sender")).await,
        http.user(&unique("mover")).await,
    );
    let mut tx = Ws::connect(&cluster.ws_url(0), &sender.access_token).await;
    tx.join(&room).await;
    let mut on_b = Ws::connect(&cluster.ws_url(1), &mover.access_token).await;
    let pid = cluster.nodes[1].pid().expect("node B pid").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    // Node B stops reading while 300 messages are acknowledged on node A.
    signal("-STOP");
    let ids: Vec<String> = (0..300).map(|i| format!("b{i}")).collect();
    for id in &ids {
        tx.send(send(&room, "while B was paused", id)).await;
    }
    let acks = acks_of(&mut tx, &ids).await;
    let last = acks
        .values()
        .filter_map(|a| a["position"].as_u64())
        .max()
        .expect("positions");
    // The client has seen everything up to `last` (elsewhere) and resumes on B the moment B
    // runs again: its join is read before B's consumer has caught up.
    on_b.send(json!({"type": "join", "room": room, "since": last, "ref": "resume"}))
        .await;
    signal("-CONT");
    let joined = on_b.expect("joined").await;
    assert_eq!(joined["recovered"], true, "an exact resume: {joined}");
    assert_eq!(joined["position"].as_u64(), Some(last), "{joined}");
    // Nothing at or below `last` comes again; the next message is the next one.
    tx.send(send(&room, "after", "after")).await;
    let next = on_b.expect("message").await;
    assert_eq!(
        next["client_id"], "after",
        "no replay of what the client had: {next}"
    );
}

/// A `since` beyond the log's end was never a position: the join is answered `recovered:
/// false` without waiting for the node to read it (it never will), and the socket keeps
/// answering and receiving. The node waits up to 60 s here (its produce timeout), so a join
/// that waited would miss the 20 s this test allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_beyond_the_log_end_is_answered_without_waiting() {
    let options = ClusterOptions {
        node_env: vec![("ONLYCHAT_KAFKA_PRODUCE_TIMEOUT", "60s".to_owned())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(1, options).await;
    let http = cluster.http();
    let room = unique("beyond");
    let (alice, bob) = (
        http.user(&unique("alice")).await,
        http.user(&unique("bob")).await,
    );
    let mut a = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    a.join(&room).await;
    let first = ack_of_sent(&mut a, &room, "first").await;
    let end = first["position"].as_u64().expect("position");
    let mut b = Ws::connect(&cluster.ws_url(0), &bob.access_token).await;
    for since in [end + 1_000_000, u64::MAX] {
        b.send(json!({"type": "join", "room": room, "since": since, "ref": "beyond"}))
            .await;
        b.send(json!({"type": "ping", "ref": "after"})).await;
        let mut answered = Vec::new();
        while answered.len() < 2 {
            let frame = b
                .try_recv(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("join since={since}: no answer within 20 s"));
            match frame["type"].as_str() {
                Some("joined") => {
                    assert_eq!(frame["recovered"], false, "{frame}");
                    answered.push("joined");
                }
                Some("pong") => answered.push("pong"),
                _ => {}
            }
        }
        assert_eq!(answered, ["joined", "pong"], "since={since}");
    }
    // The socket still receives the room.
    ack_of_sent(&mut a, &room, "second").await;
    loop {
        let frame = b
            .try_recv(Duration::from_secs(10))
            .await
            .expect("bob receives the next message");
        if frame["type"] == "message" && frame["client_id"] == "second" {
            break;
        }
    }
}

async fn ack_of_sent(ws: &mut Ws, room: &str, client_id: &str) -> Value {
    ws.send(send(room, client_id, client_id)).await;
    ack_of(ws, client_id).await
}
