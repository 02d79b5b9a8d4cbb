//! Hostile peers against a real node: oversized and fragmented frames, invalid UTF-8, protocol
//! violations, handshake limits, a reader that stops reading, a peer that stops answering
//! pings, flooding. Raw frames where no client library would send the bad input.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use onlychat_e2e::raw::op;
use onlychat_e2e::{Cluster, ClusterOptions, RawWs, Ws, eventually, unique};
use serde_json::{Value, json};

fn env(pairs: &[(&'static str, &str)]) -> ClusterOptions {
    ClusterOptions {
        node_env: pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..ClusterOptions::default()
    }
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {token}"))]
}

/// An authenticated raw socket (welcome read).
async fn raw(cluster: &Cluster, token: &str) -> RawWs {
    let (status, ws) = RawWs::upgrade(&cluster.nodes[0].addr, &bearer(token)).await;
    assert_eq!(status, 101);
    let mut ws = ws.expect("upgraded");
    let welcome = ws
        .read_frame(Duration::from_secs(5))
        .await
        .expect("welcome");
    assert!(String::from_utf8_lossy(&welcome.payload).contains("welcome"));
    ws
}

async fn chat_still_works(ws: &mut Ws, room: &str) {
    let client_id = unique("ok");
    ws.send(json!({"type": "send", "room": room, "body": "still here", "client_id": client_id}))
        .await;
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "ack" && frame["client_id"] == client_id.as_str() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_messages_close_1009_as_soon_as_the_limit_is_crossed() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let good = http.user(&unique("good")).await;
    let bad = http.user(&unique("bad")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &good.access_token).await;
    ws.join("calm").await;

    // A header claiming 10 MiB: closed without the payload ever being sent.
    let mut liar = raw(&cluster, &bad.access_token).await;
    liar.header_claiming(op::TEXT, 10 * 1024 * 1024).await;
    assert_eq!(liar.until_close(Duration::from_secs(3)).await.1, Some(1009));

    // Fragments of 40 KiB: the second takes the message past 64 KiB; no last fragment needed.
    let mut grower = raw(&cluster, &bad.access_token).await;
    let chunk = vec![b'a'; 40 * 1024];
    grower.frame(false, op::TEXT, &chunk).await;
    grower.frame(false, op::CONTINUATION, &chunk).await;
    assert_eq!(
        grower.until_close(Duration::from_secs(3)).await.1,
        Some(1009)
    );

    // Just under the limit is a frame like any other (an in-band error: too long a body).
    let mut fine = raw(&cluster, &bad.access_token).await;
    let body = "b".repeat(60 * 1024);
    fine.text(
        &json!({"type": "send", "room": "calm", "body": body, "client_id": "big"}).to_string(),
    )
    .await;
    let reply = fine
        .read_frame(Duration::from_secs(5))
        .await
        .expect("reply");
    let reply: Value = serde_json::from_slice(&reply.payload).expect("a JSON frame, not a close");
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("invalid_body"))
    );

    chat_still_works(&mut ws, "calm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_1007_and_nothing_of_it_is_forwarded() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let listener = http.user(&unique("listener")).await;
    let sender = http.user(&unique("sender")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &listener.access_token).await;
    ws.join("utf").await;
    let join = json!({"type": "join", "room": "utf"}).to_string();

    // One frame with invalid bytes inside the body.
    let mut whole = raw(&cluster, &sender.access_token).await;
    whole.text(&join).await;
    let mut frame = br#"{"type":"send","room":"utf","client_id":"w","body":"caf"#.to_vec();
    frame.extend_from_slice(&[0xff, 0xfe]);
    frame.extend_from_slice(br#""}"#);
    whole.frame(true, op::TEXT, &frame).await;
    assert_eq!(
        whole.until_close(Duration::from_secs(3)).await.1,
        Some(1007)
    );

    // Split over fragments: a valid lead byte ends the first, an invalid continuation starts
    // the second.
    let mut split = raw(&cluster, &sender.access_token).await;
    split.text(&join).await;
    let mut first = br#"{"type":"send","room":"utf","client_id":"s","body":"caf"#.to_vec();
    first.push(0xc3);
    split.frame(false, op::TEXT, &first).await;
    let mut second = vec![0x28];
    second.extend_from_slice(br#""}"#);
    split.frame(true, op::CONTINUATION, &second).await;
    assert_eq!(
        split.until_close(Duration::from_secs(3)).await.1,
        Some(1007)
    );

    // The listener saw the two joins and leaves, but no message.
    while let Some(frame) = ws.try_recv(Duration::from_millis(700)).await {
        assert_ne!(frame["type"], "message", "{frame}");
    }
    chat_still_works(&mut ws, "utf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_1002() {
    let cluster = Cluster::start(1).await;
    let user = cluster.http().user(&unique("violator")).await;
    let mut reserved = raw(&cluster, &user.access_token).await;
    reserved.frame(true, 0x3, b"reserved opcode").await;
    assert_eq!(
        reserved.until_close(Duration::from_secs(3)).await.1,
        Some(1002)
    );
    let mut unmasked = raw(&cluster, &user.access_token).await;
    unmasked
        .unmasked_frame(op::TEXT, br#"{"type":"ping"}"#)
        .await;
    assert_eq!(
        unmasked.until_close(Duration::from_secs(3)).await.1,
        Some(1002)
    );
    let mut orphan = raw(&cluster, &user.access_token).await;
    orphan.frame(true, op::CONTINUATION, b"no start").await;
    assert_eq!(
        orphan.until_close(Duration::from_secs(3)).await.1,
        Some(1002)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_beyond_the_header_limits_or_the_connection_cap_are_refused() {
    let cluster = Cluster::start_with(1, env(&[("ONLYCHAT_MAX_CONNECTIONS", "3")])).await;
    let user = cluster.http().user(&unique("capped")).await;
    let addr = cluster.nodes[0].addr.clone();

    let mut many = bearer(&user.access_token);
    many.extend((0..70).map(|i| (format!("X-Filler-{i}"), "x".to_owned())));
    assert_eq!(RawWs::upgrade(&addr, &many).await.0, 431);
    let mut large = bearer(&user.access_token);
    large.push(("X-Large".into(), "y".repeat(9000)));
    assert_eq!(RawWs::upgrade(&addr, &large).await.0, 431);

    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Ws::connect(&cluster.ws_url(0), &user.access_token).await);
    }
    assert_eq!(
        RawWs::upgrade(&addr, &bearer(&user.access_token)).await.0,
        503
    );
    drop(open.pop());
    eventually(Duration::from_secs(5), "a freed slot", || async {
        Ws::open(&cluster.ws_url(0), Some(&user.access_token))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// A quiet round, then three rounds each with a fresh member that joins and stops reading, while
/// 3000 messages of 4 KB go through the room per round: every stalled member is closed with
/// 4008, the reading member gets everything (its send-to-deliver latency in the quiet round and
/// in the stalled rounds is printed), and the node's memory returns to the baseline taken after
/// the first stalled round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_4008_and_the_room_keeps_flowing() {
    let cluster = Cluster::start_with(
        1,
        env(&[
            ("ONLYCHAT_OUTBOUND_QUEUE", "64"),
            ("ONLYCHAT_SEND_RATE", "0"),
            ("MALLOC_ARENA_MAX", "2"),
            // Memory the node keeps on purpose (recent messages for replay, the dedupe window)
            // grows with traffic; kept small here so the rounds compare the sockets alone.
            ("ONLYCHAT_REPLAY_BUFFER", "10"),
            ("ONLYCHAT_DEDUPE_WINDOW", "1s"),
        ]),
    )
    .await;
    let pid = cluster.nodes[0].pid().expect("node pid");
    let http = cluster.http();
    let (sender, reader, stalled) = (
        http.user(&unique("sender")).await,
        http.user(&unique("reader")).await,
        http.user(&unique("stalled")).await,
    );
    let mut tx = Ws::connect(&cluster.ws_url(0), &sender.access_token).await;
    let mut rx = Ws::connect(&cluster.ws_url(0), &reader.access_token).await;
    tx.join("busy").await;
    rx.join("busy").await;
    // Round 0 is quiet (nobody stalls): the reading member's latency to compare with.
    let (rounds, per_round) = (3, 3000);
    let reading = tokio::spawn(async move {
        let mut latencies: Vec<(usize, Duration)> = Vec::new();
        while latencies.len() < (rounds + 1) * per_round {
            let frame = rx.recv().await;
            if frame["type"] == "message" {
                let sent: f64 = frame["body"]
                    .as_str()
                    .and_then(|b| b.split(' ').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0);
                let round = frame["client_id"]
                    .as_str()
                    .and_then(|c| c.strip_prefix('m')?.split('-').next()?.parse().ok())
                    .unwrap_or(usize::MAX);
                latencies.push((round, Duration::from_secs_f64((unix_now() - sent).max(0.0))));
            }
        }
        latencies
    });
    let body = "z".repeat(4000);
    let mut baseline = 0;
    for round in 0..=rounds {
        // The stalled member joins, then never reads again: its TCP window fills, then its queue.
        let mut slow = if round == 0 {
            None
        } else {
            let mut slow = raw(&cluster, &stalled.access_token).await;
            slow.text(&json!({"type": "join", "room": "busy"}).to_string())
                .await;
            Some(slow)
        };
        // In batches, each answered before the next, so the sender itself keeps up: a batch's
        // acks and echoes (two frames per send) fit the sender's own queue of 64 even while
        // its socket buffer is full, whatever the relative speed of node and test.
        for batch in 0..per_round / 25 {
            let ids: Vec<String> = (0..25)
                .map(|i| format!("m{round}-{}", batch * 25 + i))
                .collect();
            for id in &ids {
                tx.send(json!({"type": "send", "room": "busy", "body": format!("{} {body}", unix_now()), "client_id": id}))
                    .await;
            }
            let mut acked = 0;
            while acked < ids.len() {
                acked += usize::from(tx.recv().await["type"] == "ack");
            }
        }
        let Some(mut slow) = slow.take() else {
            continue;
        };
        let (_, code) = slow.until_close(Duration::from_secs(20)).await;
        assert_eq!(
            code,
            Some(4008),
            "round {round}: the stalled member closed as too slow"
        );
        drop(slow);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rss = onlychat_e2e::rss_kib(pid);
        eprintln!("slow consumer round {round}: node RSS {rss} KiB");
        if round == 1 {
            baseline = rss;
        } else {
            assert!(
                rss * 100 < baseline * 105,
                "round {round}: RSS {rss} KiB is 5% or more over the baseline {baseline} KiB"
            );
        }
    }
    let latencies = reading.await.expect("reader");
    assert_eq!(
        latencies.len(),
        (rounds + 1) * per_round,
        "the reading member got everything"
    );
    let (mut quiet, mut stalled): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (round, latency) in latencies {
        if round == 0 {
            quiet.push(latency);
        } else {
            stalled.push(latency);
        }
    }
    quiet.sort();
    stalled.sort();
    eprintln!(
        "slow consumer: the reading member got all {} messages; send-to-deliver quiet p50 {:?} p99 {:?}, with a stalled member p50 {:?} p99 {:?} max {:?}",
        quiet.len() + stalled.len(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        percentile(&stalled, 0.5),
        percentile(&stalled, 0.99),
        stalled.last().copied().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_dropped_and_a_quiet_one_stays() {
    let cluster = Cluster::start_with(1, env(&[("ONLYCHAT_HEARTBEAT_INTERVAL", "1s")])).await;
    let http = cluster.http();
    let (watcher, ghost, quiet) = (
        http.user(&unique("watcher")).await,
        http.user(&unique("ghost")).await,
        http.user(&unique("quiet")).await,
    );
    let mut watch = Ws::connect(&cluster.ws_url(0), &watcher.access_token).await;
    watch.join("haunt").await;
    // A raw socket never answers pings; a library socket that is polled does, and sends nothing.
    let mut dead = raw(&cluster, &ghost.access_token).await;
    dead.text(&json!({"type": "join", "room": "haunt"}).to_string())
        .await;
    // The clock starts once the server has handled the dead peer's last frame.
    while let Some(frame) = dead.read_frame(Duration::from_secs(5)).await {
        if String::from_utf8_lossy(&frame.payload).contains("\"joined\"") {
            break;
        }
    }
    let joined = Instant::now();
    let mut alive = Ws::connect(&cluster.ws_url(0), &quiet.access_token).await;
    // The quiet peer is read (so its library answers pings) but sends nothing for 5 s.
    let quiet_peer = tokio::spawn(async move {
        if let Some(frame) = alive.try_recv(Duration::from_secs(5)).await {
            panic!("the quiet peer got {frame}");
        }
        alive.send(json!({"type": "ping", "ref": "still"})).await;
        alive.expect("pong").await["ref"].clone()
    });
    let dropped = tokio::spawn(async move {
        // The raw peer never reads its pings as pongs; it only waits for the server to go.
        while dead.read_frame(Duration::from_secs(5)).await.is_some() {}
        joined.elapsed()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let leave = loop {
        let frame = watch
            .try_recv(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("the dead peer's presence leave within 5 s");
        if frame["type"] == "presence" && frame["event"] == "leave" {
            break frame;
        }
    };
    assert_eq!(leave["user_id"], ghost.user_id.as_str());
    let after = dropped.await.expect("dead peer");
    // Two intervals of 1 s, plus up to 1 s for the TCP teardown to reach the raw client on a
    // busy machine (the node's own timer fires at two intervals; it is the server-side fact
    // the presence leave above shows).
    assert!(
        after < Duration::from_millis(3000),
        "closed within two intervals (+ slack): {after:?}"
    );
    eprintln!("dead peer: dropped and its presence cleared {after:?} after it went silent");

    assert_eq!(
        quiet_peer.await.expect("quiet peer"),
        "still",
        "the quiet peer is still connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_is_answered_rate_limited_then_closed_4029() {
    let cluster = Cluster::start(1).await;
    let user = cluster.http().user(&unique("flood")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    ws.join("flood").await;
    let send = |i: usize| json!({"type": "send", "room": "flood", "body": "x", "client_id": format!("f{i}"), "ref": format!("r{i}")});
    // The default burst lets 500 back-to-back sends through.
    for i in 0..500 {
        ws.send(send(i)).await;
    }
    let mut acks = 0;
    while acks < 500 {
        let frame = ws.recv().await;
        assert_ne!(frame["code"], "rate_limited", "within the burst: {frame}");
        acks += usize::from(frame["type"] == "ack");
    }
    // Beyond it (plus the few tokens that came back meanwhile), sends are refused in-band...
    for i in 500..600 {
        ws.send_lossy(send(i)).await;
    }
    let (frames, code) = ws.frames_until_close(Duration::from_secs(5)).await;
    let limited: Vec<&Value> = frames
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .collect();
    let first = limited.first().expect("a rate_limited error");
    let i = first["client_id"]
        .as_str()
        .and_then(|c| c.strip_prefix('f'))
        .expect("client_id");
    assert_eq!(
        (
            first["type"].as_str(),
            first["ref"].as_str(),
            first["room"].as_str()
        ),
        (Some("error"), Some(format!("r{i}").as_str()), Some("flood"))
    );
    // ...and the 20th refusal within 10 s closes the socket.
    assert_eq!(code, Some(4029), "kept flooding after being told");
    assert_eq!(
        limited.len(),
        19,
        "closed at the documented 20th rate_limited"
    );
}

/// A flooder cut off with 4029 still gets the answer to every send the node accepted before
/// (its ack: the message was stored), so it knows what to resend; only the refused ones and
/// those after the close was decided go unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_closed_4029_first_gets_the_acks_of_its_accepted_sends() {
    let cluster = Cluster::start(1).await;
    let user = cluster.http().user(&unique("flood")).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    ws.join("flood").await;
    // Back to back, reading nothing: the burst (500), then refusals until the 20th closes.
    for i in 0..540 {
        ws.send_lossy(
            json!({"type": "send", "room": "flood", "body": "x", "client_id": format!("f{i}")}),
        )
        .await;
    }
    let (frames, code) = ws.frames_until_close(Duration::from_secs(20)).await;
    assert_eq!(code, Some(4029), "kept flooding after being told");
    let index = |f: &Value| {
        f["client_id"]
            .as_str()
            .and_then(|c| c.strip_prefix('f'))
            .and_then(|i| i.parse::<usize>().ok())
    };
    let refused: HashSet<usize> = frames
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .filter_map(index)
        .collect();
    let acked: HashSet<usize> = frames
        .iter()
        .filter(|f| f["type"] == "ack")
        .filter_map(index)
        .collect();
    let last_refused = *refused.iter().max().expect("rate_limited errors");
    let unanswered: Vec<usize> = (0..last_refused)
        .filter(|i| !refused.contains(i) && !acked.contains(i))
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} accepted sends had no ack before the 4029 (first: {:?}); {} acked, {} refused",
        unanswered.len(),
        unanswered.first(),
        acked.len(),
        refused.len()
    );
    assert!(
        acked.len() >= 500,
        "the burst was accepted: {}",
        acked.len()
    );
}

/// One round of hostile clients: each connects, then half announce a 10 MiB frame and half grow
/// a fragmented message past the limit; every one must be closed with 1009.
async fn oversized_round(addr: &str, token: &str, clients: usize) {
    let tasks = (0..clients).map(|i| {
        let (addr, token) = (addr.to_owned(), token.to_owned());
        tokio::spawn(async move {
            let (status, ws) = RawWs::upgrade(&addr, &bearer(&token)).await;
            assert_eq!(status, 101);
            let mut ws = ws.expect("upgraded");
            if i % 2 == 0 {
                ws.header_claiming(op::TEXT, 10 * 1024 * 1024).await;
            } else {
                let chunk = vec![b'a'; 40 * 1024];
                ws.frame(false, op::TEXT, &chunk).await;
                ws.frame(false, op::CONTINUATION, &chunk).await;
            }
            ws.until_close(Duration::from_secs(20)).await.1
        })
    });
    for code in futures_util::future::join_all(tasks).await {
        assert_eq!(code.expect("client task"), Some(1009));
    }
}

/// Waits until the node holds only the bystander's socket again (its `onlychat_connections`
/// gauge is 1), so RSS is read after a round's sockets are really gone, however slow the
/// machine, and not at an arbitrary moment of their teardown.
async fn only_the_bystander_left(base_url: &str) {
    let url = format!("{base_url}/metrics");
    eventually(
        Duration::from_secs(20),
        "the round's sockets to close",
        || async {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            let open = text
                .lines()
                .find_map(|l| l.strip_prefix("onlychat_connections "))?
                .trim()
                .parse::<f64>()
                .ok()?;
            (open == 1.0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Memory stays flat (baseline: RSS after the warm-up rounds; later rounds add < 5 %) while rounds
/// of clients send oversized frames, and a bystander's ping round trip is measured meanwhile.
/// `ONLYCHAT_HOSTILE_CLIENTS` sets the clients per round (default 200; the figure in the docs
/// used 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_while_rounds_of_clients_send_oversized_frames() {
    let clients: usize = std::env::var("ONLYCHAT_HOSTILE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // glibc's per-thread arenas keep freed memory; two of them (as deploy/ sets) keep RSS flat
    // across rounds. Without it 1000 clients per round grew RSS by ~6% in one of three rounds.
    let cluster = Cluster::start_with(1, env(&[("MALLOC_ARENA_MAX", "2")])).await;
    let pid = cluster.nodes[0].pid().expect("node pid");
    let http = cluster.http();
    let (bystander, attacker) = (
        http.user(&unique("bystander")).await,
        http.user(&unique("attacker")).await,
    );
    // The bystander pings from a process of its own: the attackers' client-side work in this
    // process (masking megabytes of frames) must not delay its timing, only the node may.
    let mut pinger = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinger"))
        .args([&cluster.ws_url(0), &bystander.access_token, "600"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the pinger");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        pinger.stdout.take().expect("stdout"),
    ));
    assert_eq!(
        lines.next_line().await.expect("pinger output").as_deref(),
        Some("ready"),
        "the pinger connected"
    );
    let pinger_start = Instant::now();
    let samples = tokio::spawn(async move {
        let mut rtts = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut fields = line.split(' ').filter_map(|f| f.parse::<u64>().ok());
            if let (Some(at), Some(rtt)) = (fields.next(), fields.next()) {
                rtts.push((Duration::from_micros(at), Duration::from_micros(rtt)));
            }
        }
        rtts
    });
    let addr = cluster.nodes[0].addr.clone();
    // A quiet second first: the bystander's latency with nobody attacking.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attack_from = pinger_start.elapsed();
    // Warm-up: the allocator and actix's buffers reach their working size. Each round's sockets
    // land unevenly on the node's worker threads and their malloc arenas; three rounds let each
    // arena reach its peak (with two, a later round could still add ~4% on a busy machine).
    for _ in 0..3 {
        oversized_round(&addr, &attacker.access_token, clients).await;
    }
    let base_url = cluster.nodes[0].base_url();
    only_the_bystander_left(&base_url).await;
    let baseline = onlychat_e2e::rss_kib(pid);
    let mut peak = baseline;
    let rounds: usize = std::env::var("ONLYCHAT_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 1..=rounds {
        let sampling = tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..100 {
                peak = peak.max(onlychat_e2e::rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        oversized_round(&addr, &attacker.access_token, clients).await;
        peak = peak.max(sampling.await.expect("sampler"));
        only_the_bystander_left(&base_url).await;
        let after = onlychat_e2e::rss_kib(pid);
        eprintln!(
            "round {round}: {clients} oversized clients, node RSS {after} KiB (baseline {baseline} KiB)"
        );
        if std::env::var("ONLYCHAT_HOSTILE_OBSERVE").is_err() {
            assert!(
                after * 100 < baseline * 105,
                "round {round}: RSS {after} KiB is 5% or more over the baseline {baseline} KiB"
            );
        }
    }
    pinger.start_kill().expect("stop the pinger");
    let samples = samples.await.expect("pinger samples");
    let (mut quiet, mut attacked): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (at, rtt) in samples {
        if at < attack_from {
            quiet.push(rtt)
        } else {
            attacked.push(rtt)
        }
    }
    quiet.sort();
    attacked.sort();
    eprintln!(
        "oversized frames: peak node RSS {peak} KiB with {clients} clients per round; bystander ping quiet p50 {:?} p99 {:?} ({} pings), under attack p50 {:?} p99 {:?} max {:?} ({} pings)",
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        quiet.len(),
        percentile(&attacked, 0.5),
        percentile(&attacked, 0.99),
        attacked.last().copied().unwrap_or_default(),
        attacked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_connection_closes_only_that_socket_with_1011() {
    let cluster = Cluster::start_with(1, env(&[("ONLYCHAT_FAULT_INJECTION", "true")])).await;
    let http = cluster.http();
    let (victim, other) = (
        http.user(&unique("victim")).await,
        http.user(&unique("other")).await,
    );
    let mut bystander = Ws::connect(&cluster.ws_url(0), &other.access_token).await;
    bystander.join("crash").await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &victim.access_token).await;
    ws.join("crash").await;
    ws.send(json!({"type": "send", "room": "crash", "body": onlychat_chat_node_panic_body(), "client_id": "boom"}))
        .await;
    let (frames, code) = ws.frames_until_close(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1011), "{frames:?}");
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "error" || f["code"] != "internal")
    );
    // The node is up, the socket left its room, and everyone else goes on.
    let leave = loop {
        let frame = bystander.recv().await;
        if frame["type"] == "presence" && frame["event"] == "leave" {
            break frame;
        }
    };
    assert_eq!(leave["user_id"], victim.user_id.as_str());
    chat_still_works(&mut bystander, "crash").await;
    let (status, _) = onlychat_e2e::Http::new(&cluster.nodes[0].base_url())
        .get("/readyz", None)
        .await;
    assert_eq!(status, 200);
    assert!(
        cluster.nodes[0]
            .log_text()
            .contains("a frame handler panicked")
    );
}

/// The fault-injection body of `onlychat_chat_node::PANIC_BODY` (the tests do not link the node).
fn onlychat_chat_node_panic_body() -> &'static str {
    "onlychat-fault-injection:panic"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start_with(1, env(&[("ONLYCHAT_REQUEST_HEAD_TIMEOUT", "1s")])).await;
    let mut slow = tokio::net::TcpStream::connect(&cluster.nodes[0].addr)
        .await
        .expect("connect");
    let started = Instant::now();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await
        .expect("partial head");
    // Never the blank line that ends the head: the node answers 408 and closes.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the node kept a half-sent request open for 5 s"
    );
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    // The node still serves everyone else.
    let user = cluster.http().user(&unique("after")).await;
    Ws::connect(&cluster.ws_url(0), &user.access_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_with_its_own_code() {
    let cluster = Cluster::start(1).await;
    let user = cluster.http().user(&unique("leaver")).await;
    let mut ws = raw(&cluster, &user.access_token).await;
    ws.frame(true, op::CLOSE, &1000u16.to_be_bytes()).await;
    assert_eq!(ws.until_close(Duration::from_secs(3)).await.1, Some(1000));
}

/// Password hashing needs 19 MiB per login. Waves of concurrent logins (wrong passwords, which
/// hash like right ones) must not leave that much behind per login: the gateway's memory stays
/// bounded by its hashing slots, not by how many logins came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_of_concurrent_logins_do_not_grow_the_gateway() {
    let cluster = Cluster::start(0).await;
    let pid = cluster.gateway.pid().expect("gateway pid");
    let http = cluster.http();
    let wave = || {
        futures_util::future::join_all((0..40).map(|_| {
            let http = cluster.http();
            async move {
                let body = json!({"username": unique("nobody"), "password": "wrong-password"});
                http.post("/v1/auth/login", &body, None).await.0
            }
        }))
    };
    let first = wave().await;
    assert!(first.iter().all(|s| *s == 401), "wrong logins: {first:?}");
    let after_one = onlychat_e2e::rss_kib(pid);
    for _ in 0..3 {
        wave().await;
    }
    let after_four = onlychat_e2e::rss_kib(pid);
    eprintln!("gateway RSS after 40 concurrent logins {after_one} KiB, after 160 {after_four} KiB");
    drop(http);
    assert!(
        after_four < after_one + 40 * 1024,
        "120 more logins grew the gateway from {after_one} KiB to {after_four} KiB"
    );
}
