//! Failure drills with a Kafka broker of the test's own: the broker stopped for 30 s under
//! traffic, and a node drained by SIGTERM right after a burst. Nothing acknowledged is lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use onlychat_e2e::{Cluster, ClusterOptions, OwnKafka, Services, Ws, free_ports, unique};
use serde_json::{Value, json};

fn send(room: &str, client_id: &str) -> Value {
    json!({"type": "send", "room": room, "body": format!("body {client_id}"), "client_id": client_id, "ref": client_id})
}

/// The reply to one send: its `ack`, or `None` for `error` `unavailable`.
async fn reply(ws: &mut Ws, client_id: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = ws
            .try_recv(left)
            .await
            .unwrap_or_else(|| panic!("no reply to {client_id} within {within:?}"));
        if frame["client_id"] != client_id {
            continue;
        }
        match frame["type"].as_str() {
            Some("ack") => return Some(frame),
            Some("error") => {
                assert_eq!(frame["code"], "unavailable", "{frame}");
                assert_eq!(
                    (frame["ref"].as_str(), frame["room"].as_str()),
                    (Some(client_id), Some("outage"))
                );
                return None;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_no_acked_message_and_heals_by_itself() {
    let kafka = OwnKafka::start(free_ports(2));
    let shared = Services::from_env().await;
    let services = Services {
        kafka_brokers: kafka.address.clone(),
        ..shared
    };
    let options = ClusterOptions {
        services: Some(services),
        // The sender's socket is not read while the test stops and starts the broker.
        env: vec![("ONLYCHAT_HEARTBEAT_INTERVAL", "30s".to_owned())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(2, options).await;
    let http = cluster.http();
    let sender = http.user(&unique("sender")).await;
    let reader = http.user(&unique("reader")).await;
    let mut tx = Ws::connect(&cluster.ws_url(0), &sender.access_token).await;
    let mut rx = Ws::connect(&cluster.ws_url(1), &reader.access_token).await;
    tx.join("outage").await;
    rx.join("outage").await;
    // The reader keeps reading (and so answering pings) all along, and stops once it holds
    // every message id it is told to wait for (or after a bounded wait).
    let (want_tx, mut want_rx) = tokio::sync::oneshot::channel::<HashSet<String>>();
    let reading = tokio::spawn(async move {
        let mut messages: Vec<Value> = Vec::new();
        let mut wanted: Option<(HashSet<String>, Instant)> = None;
        loop {
            if let Some((ids, since)) = &wanted {
                let have: HashSet<&str> =
                    messages.iter().filter_map(|m| m["id"].as_str()).collect();
                if ids.iter().all(|id| have.contains(id.as_str()))
                    || since.elapsed() > Duration::from_secs(30)
                {
                    // A little longer, so a late duplicate would be seen too.
                    while let Some(frame) = rx.try_recv(Duration::from_millis(500)).await {
                        if frame["type"] == "message" {
                            messages.push(frame);
                        }
                    }
                    return messages;
                }
            }
            tokio::select! {
                ids = &mut want_rx, if wanted.is_none() => {
                    wanted = Some((ids.expect("wanted ids"), Instant::now()));
                }
                frame = rx.try_recv(Duration::from_millis(200)) => {
                    if let Some(frame) = frame.filter(|f| f["type"] == "message") {
                        messages.push(frame);
                    }
                }
            }
        }
    });

    // Every send gets an answer in bounded time: ack, or unavailable while the broker is away.
    let bound = Duration::from_secs(20);
    let (mut acked, mut refused) = (HashMap::new(), Vec::new());
    let mut n = 0;
    let next = |n: &mut usize| {
        *n += 1;
        format!("o{n}")
    };
    for _ in 0..20 {
        let id = next(&mut n);
        tx.send(send("outage", &id)).await;
        acked.insert(
            id.clone(),
            reply(&mut tx, &id, bound)
                .await
                .expect("ack before the outage"),
        );
    }
    kafka.stop();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        let id = next(&mut n);
        tx.send(send("outage", &id)).await;
        match reply(&mut tx, &id, bound).await {
            Some(ack) => drop(acked.insert(id, ack)),
            None => refused.push(id),
        }
    }
    assert!(
        !refused.is_empty(),
        "sends during the outage were answered unavailable"
    );
    kafka.restart();
    let restarted = Instant::now();
    // Without restarting any node, sends are acked again within 30 s.
    let resumed_after = loop {
        let id = next(&mut n);
        tx.send(send("outage", &id)).await;
        if let Some(ack) = reply(&mut tx, &id, bound).await {
            acked.insert(id, ack);
            break restarted.elapsed();
        }
        refused.push(id);
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "producing did not resume within 30 s"
        );
    };
    eprintln!(
        "broker outage: {} refused, produce resumed {resumed_after:?} after the broker restarted",
        refused.len()
    );
    // The client's part: resend every refused message with the same client_id.
    for id in &refused {
        tx.send(send("outage", id)).await;
        acked.insert(
            id.clone(),
            reply(&mut tx, id, bound).await.expect("ack of the resend"),
        );
    }
    // The reader on the other node gets every acked message, each client_id at most once.
    let wanted: HashSet<String> = acked
        .values()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect();
    let waiting = Instant::now();
    let _ = want_tx.send(wanted.clone());
    let messages = reading.await.expect("reader");
    eprintln!(
        "broker outage: the reader on the other node held every acked message {:?} after the last ack (incl. a 0.5 s quiet tail)",
        waiting.elapsed()
    );
    let mut seen: HashMap<String, String> = HashMap::new();
    for frame in &messages {
        let client_id = frame["client_id"].as_str().expect("client_id").to_owned();
        let id = frame["id"].as_str().expect("id").to_owned();
        assert!(
            seen.insert(client_id.clone(), id).is_none(),
            "{client_id} delivered twice"
        );
    }
    let delivered: HashSet<String> = seen.values().cloned().collect();
    let missing: Vec<&String> = wanted.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "acked messages missing at the reader: {missing:?}"
    );
    for (client_id, ack) in &acked {
        assert_eq!(
            seen.get(client_id).map(String::as_str),
            ack["id"].as_str(),
            "the acked copy was delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_by_sigterm_right_after_a_burst_loses_no_acked_message() {
    let mut cluster = Cluster::start(2).await;
    let http = cluster.http();
    let sender = http.user(&unique("sender")).await;
    let reader = http.user(&unique("reader")).await;
    let mut tx = Ws::connect(&cluster.ws_url(0), &sender.access_token).await;
    let mut rx = Ws::connect(&cluster.ws_url(1), &reader.access_token).await;
    tx.join("drain").await;
    rx.join("drain").await;
    for i in 0..300 {
        tx.send(send("drain", &format!("d{i}"))).await;
    }
    // SIGTERM while the node is mid-burst: some sends acked, many still in flight.
    let mut early = Vec::new();
    while early.iter().filter(|f: &&Value| f["type"] == "ack").count() < 10 {
        early.push(
            tx.try_recv(Duration::from_secs(20))
                .await
                .expect("first acks of the burst"),
        );
    }
    let status = cluster.nodes[0]
        .terminate(Duration::from_secs(30))
        .await
        .expect("node exited after SIGTERM");
    assert!(status.success(), "graceful exit: {status}");
    let (mut frames, code) = tx.frames_until_close(Duration::from_secs(5)).await;
    frames.extend(early);
    assert_eq!(code, Some(1012), "sockets close with 1012 on drain");
    let acked: HashSet<String> = frames
        .iter()
        .filter(|f| f["type"] == "ack")
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    let mut delivered = HashSet::new();
    while !acked.is_subset(&delivered) {
        let frame = rx
            .try_recv(Duration::from_secs(10))
            .await
            .expect("an acked message is missing at the other node");
        if frame["type"] == "message" {
            delivered.insert(frame["id"].as_str().expect("id").to_owned());
        }
    }
    eprintln!(
        "drain: {} of 300 sends acked before the socket closed, all delivered on the other node",
        acked.len()
    );
}
