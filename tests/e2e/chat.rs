//! The core chat path across two nodes through real Kafka.

use std::collections::HashMap;

use onlychat_e2e::{Cluster, Ws, unique};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_two_nodes_chat_both_ways_exactly_once() {
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let (alice_name, bob_name) = (unique("alice"), unique("bob"));
    let alice = http.user(&alice_name).await;
    let bob = http.user(&bob_name).await;
    let mut a = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    let mut b = Ws::connect(&cluster.ws_url(1), &bob.access_token).await;
    assert_eq!(a.welcome["node"], "node1");
    assert_eq!(b.welcome["node"], "node2");
    assert_eq!(a.welcome["user_id"], alice.user_id.as_str());

    let joined = a.join("lobby").await;
    assert_eq!(joined["recovered"], false);
    assert!(joined["epoch"].is_string());
    let joined = b.join("lobby").await;
    let online = joined["online"].as_array().expect("online");
    assert!(
        online.contains(&json!(alice.user_id)),
        "bob sees alice online: {joined}"
    );
    let presence = a.expect("presence").await;
    assert_eq!(
        (presence["user_id"].as_str(), presence["event"].as_str()),
        (Some(bob.user_id.as_str()), Some("join"))
    );

    // alice -> bob
    a.send(
        json!({"type": "send", "room": "lobby", "body": "hi bob", "client_id": "a1", "ref": "r1"}),
    )
    .await;
    let (ack, own) = ack_and_message(&mut a, "a1").await;
    assert_eq!(ack["ref"], "r1");
    let got = b.expect("message").await;
    assert_eq!(got["body"], "hi bob");
    assert_eq!(got["from"], alice.user_id.as_str());
    assert_eq!(got["from_name"], alice_name.as_str());
    assert_eq!(
        got["position"], ack["position"],
        "ack position equals delivered position"
    );
    assert_eq!(own["position"], ack["position"]);
    assert_eq!(got["id"], ack["id"]);

    // bob -> alice
    b.send(json!({"type": "send", "room": "lobby", "body": "hi alice", "client_id": "b1"}))
        .await;
    let (ack, _) = ack_and_message(&mut b, "b1").await;
    let got = a.expect("message").await;
    assert_eq!(
        (got["body"].as_str(), got["position"].clone()),
        (Some("hi alice"), ack["position"].clone())
    );
    assert!(got["position"].as_u64() > own["position"].as_u64());

    // Exactly once: nothing else arrives.
    a.send(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(a.expect("pong").await["ref"], "p");
    b.send(json!({"type": "ping"})).await;
    let next = b.recv().await;
    assert_eq!(
        next["type"], "pong",
        "no duplicate message reached bob: {next}"
    );
}

/// Reads frames until both the `ack` and the own `message` for `client_id` arrived (either order).
async fn ack_and_message(ws: &mut Ws, client_id: &str) -> (Value, Value) {
    let (mut ack, mut message) = (None, None);
    while ack.is_none() || message.is_none() {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("ack") if frame["client_id"] == client_id => ack = Some(frame),
            Some("message") if frame["client_id"] == client_id => message = Some(frame),
            Some("error") => panic!("send refused: {frame}"),
            _ => {}
        }
    }
    (ack.expect("ack"), message.expect("message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_two_nodes_give_every_receiver_the_same_order() {
    const PER_SENDER: usize = 500;
    let cluster = Cluster::start(2).await;
    let http = cluster.http();
    let mut sockets = Vec::new();
    for (i, node) in [0, 1, 0, 1].into_iter().enumerate() {
        let login = http.user(&unique(&format!("u{i}"))).await;
        let mut ws = Ws::connect(&cluster.ws_url(node), &login.access_token).await;
        ws.join("race").await;
        sockets.push(ws);
    }
    let (s1, rest) = sockets.split_first_mut().expect("sockets");
    let (s2, receivers) = rest.split_first_mut().expect("sockets");
    tokio::join!(send_all(s1, "a", PER_SENDER), send_all(s2, "b", PER_SENDER));

    let mut orders = Vec::new();
    for ws in receivers.iter_mut().chain([s1, s2]) {
        let mut order = Vec::new();
        let mut last = 0;
        while order.len() < PER_SENDER * 2 {
            let frame = ws.recv().await;
            if frame["type"] == "message" {
                let position = frame["position"].as_u64().expect("position");
                assert!(
                    position > last,
                    "positions strictly increase: {last} then {position}"
                );
                last = position;
                order.push(frame["body"].as_str().expect("body").to_owned());
            }
            assert_ne!(frame["type"], "error", "{frame}");
        }
        orders.push(order);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "every receiver sees the same order");
    }
    let mut counts: HashMap<char, usize> = HashMap::new();
    for body in &orders[0] {
        *counts.entry(body.chars().next().expect("tag")).or_default() += 1;
    }
    assert_eq!(
        (counts[&'a'], counts[&'b']),
        (PER_SENDER, PER_SENDER),
        "each message exactly once"
    );
}

async fn send_all(ws: &mut Ws, tag: &str, count: usize) {
    for i in 0..count {
        ws.send(json!({"type": "send", "room": "race", "body": format!("{tag}{i}"), "client_id": format!("{tag}{i}")}))
            .await;
    }
}
