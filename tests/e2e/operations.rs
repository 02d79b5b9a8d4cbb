//! What an operator relies on when rolling, watching and tracing a cluster: the drain on
//! SIGTERM (readiness first, 1012 spread over the window, exit before the deadline, a second
//! signal exits at once), the metrics every process exports as scraped by a real Prometheus,
//! and one message's trace across two nodes in a real Jaeger.

use std::time::{Duration, Instant};

use onlychat_e2e::observe::{Jaeger, Prometheus};
use onlychat_e2e::{
    Cluster, ClusterOptions, OwnService, Services, Ws, eventually, free_ports, unique,
};
use serde_json::{Value, json};

fn send(room: &str, client_id: &str) -> Value {
    json!({"type": "send", "room": room, "body": format!("body {client_id}"), "client_id": client_id, "ref": client_id})
}

/// Status of a plain GET.
async fn status_of(url: &str) -> u16 {
    reqwest::get(url).await.map_or(0, |r| r.status().as_u16())
}

/// A cluster whose nodes drain over `window` within `deadline`.
async fn draining_cluster(nodes: usize, window: &str, deadline: &str) -> Cluster {
    Cluster::start_with(
        nodes,
        ClusterOptions {
            node_env: vec![
                ("ONLYCHAT_DRAIN_WINDOW", window.to_owned()),
                ("ONLYCHAT_SHUTDOWN_TIMEOUT", deadline.to_owned()),
            ],
            ..ClusterOptions::default()
        },
    )
    .await
}

/// The status of a login with the right password.
async fn login_status(http: &onlychat_e2e::Http, username: &str) -> u16 {
    let body = json!({"username": username, "password": format!("password-{username}")});
    http.post("/v1/auth/login", &body, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_turns_unready_at_once_spreads_1012_over_its_window_and_exits_in_time() {
    const SOCKETS: usize = 40;
    let window = Duration::from_secs(3);
    let deadline = Duration::from_secs(8);
    let mut cluster = draining_cluster(2, "3s", "8s").await;
    let http = cluster.http();
    let mut clients = Vec::new();
    for _ in 0..SOCKETS {
        let login = http.user(&unique("drainee")).await;
        clients.push(Ws::connect(&cluster.ws_url(0), &login.access_token).await);
    }
    let base = cluster.nodes[0].base_url();
    let ws_url = cluster.ws_url(0);
    let late = http.user(&unique("late")).await;
    assert_eq!(status_of(&format!("{base}/readyz")).await, 200);

    let signalled = Instant::now();
    cluster.nodes[0].signal_term();
    // Readiness flips before any socket is closed: a load balancer stops sending new clients.
    let readyz = eventually(Duration::from_secs(1), "/readyz to answer 503", || {
        let url = format!("{base}/readyz");
        async move {
            let answer = reqwest::get(&url).await.ok()?;
            (answer.status().as_u16() == 503).then_some(answer)
        }
    })
    .await;
    let unready_after = signalled.elapsed();
    let reasons: Value = readyz.json().await.expect("a JSON reason");
    assert!(
        reasons.to_string().contains("draining"),
        "readyz says why: {reasons}"
    );
    let refused = reqwest::Client::new()
        .get(format!("{base}/ws"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .bearer_auth(&late.access_token)
        .send()
        .await
        .expect("an answer to the upgrade");
    assert_eq!(
        (
            refused.status().as_u16(),
            refused.headers().get("retry-after").map(|v| v.as_bytes())
        ),
        (503, Some(&b"2"[..])),
        "a draining node refuses new upgrades with 503 and Retry-After"
    );
    assert!(Ws::open(&ws_url, Some(&late.access_token)).await.is_err());

    // Each client notes when its 1012 arrived.
    let closes = futures_util::future::join_all(clients.into_iter().map(|mut ws| async move {
        let code = ws.expect_close(Duration::from_secs(10)).await;
        (code, signalled.elapsed())
    }))
    .await;
    let status = cluster.nodes[0]
        .wait_exit(deadline + Duration::from_secs(2))
        .await
        .expect("the node exits after SIGTERM");
    let exited_after = signalled.elapsed();
    assert!(status.success(), "a graceful exit: {status}");
    assert!(
        exited_after < deadline,
        "the node exits before its deadline {deadline:?}: took {exited_after:?}"
    );
    assert!(
        closes.iter().all(|(code, _)| *code == Some(1012)),
        "every socket closes with 1012: {:?}",
        closes.iter().map(|(c, _)| *c).collect::<Vec<_>>()
    );
    let mut at: Vec<Duration> = closes.iter().map(|(_, t)| *t).collect();
    at.sort();
    let (first, last) = (at[0], at[SOCKETS - 1]);
    let in_first_half = at.iter().filter(|t| **t < window / 2).count();
    eprintln!(
        "drain: unready after {unready_after:?}; {SOCKETS} sockets closed from {first:?} to \
         {last:?} ({in_first_half} in the first half of the {window:?} window); exit after \
         {exited_after:?}"
    );
    assert!(
        last - first >= window / 2,
        "closes are spread over the window, not all at once: {first:?}..{last:?}"
    );
    assert!(
        last <= window + Duration::from_secs(1),
        "every socket is closed by the end of the window: last at {last:?}"
    );
    assert!(
        (SOCKETS / 5..=SOCKETS * 4 / 5).contains(&in_first_half),
        "about half the sockets close in the first half of the window: {in_first_half}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once() {
    let mut cluster = draining_cluster(1, "20s", "30s").await;
    let http = cluster.http();
    // Two sockets: the second one's turn comes only halfway through the 20 s window.
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let login = http.user(&unique("stuck")).await;
        sockets.push(Ws::connect(&cluster.ws_url(0), &login.access_token).await);
    }
    let node = &mut cluster.nodes[0];
    node.signal_term();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node.is_running(), "still draining after 0.5 s");
    let second = Instant::now();
    let status = node
        .terminate(Duration::from_secs(3))
        .await
        .expect("a second SIGTERM exits at once");
    eprintln!("second signal: exit after {:?}, {status}", second.elapsed());
    assert_eq!(status.code(), Some(130), "the second signal's exit code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_finishes_the_requests_in_flight_before_it_exits() {
    let mut cluster = Cluster::start(1).await;
    let http = cluster.http();
    let mut names = Vec::new();
    for _ in 0..20 {
        let name = unique("inflight");
        http.register(&name).await;
        names.push(name);
    }
    // Twenty logins at once: each hashes a password on the blocking pool, so most are still
    // running when the signal comes.
    let logins = names.iter().map(|name| {
        let http = cluster.http();
        let name = name.clone();
        async move { login_status(&http, &name).await }
    });
    let logins = tokio::spawn(futures_util::future::join_all(logins));
    // Long enough for every request to be sent, short of the ~1 s the hashing takes.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let signalled = Instant::now();
    cluster.gateway.signal_term();
    let statuses = logins.await.expect("logins");
    let status = cluster
        .gateway
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the gateway exits");
    eprintln!(
        "gateway drain: {} logins answered {:?}, exit after {:?}",
        statuses.len(),
        statuses,
        signalled.elapsed()
    );
    assert!(status.success(), "a graceful exit: {status}");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every login in flight at SIGTERM is answered 200: {statuses:?}"
    );
    assert_eq!(
        status_of(&format!("{}/healthz", cluster.gateway.base_url())).await,
        0,
        "the listener is closed after the exit"
    );
}

/// The metrics the issue names, each with the value it must reach (`sum` over its series).
async fn metric_moves(prometheus: &Prometheus, expr: &str, before: f64) -> f64 {
    eventually(
        Duration::from_secs(20),
        &format!("{expr} to be scraped and to move past {before}"),
        || async move {
            let value = prometheus.sum(expr).await?;
            (value > before).then_some(value)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_process_and_each_operator_metric_moves() {
    let redis = OwnService::redis(free_ports(1));
    let pg = OwnService::postgres(free_ports(1));
    let services = Services {
        redis_url: redis.redis_url(),
        pg_admin_url: pg.pg_admin_url(),
        ..Services::from_env().await
    };
    let cluster = Cluster::start_with(
        2,
        ClusterOptions {
            services: Some(services),
            ..ClusterOptions::default()
        },
    )
    .await;
    let targets: Vec<String> = std::iter::once(&cluster.gateway)
        .chain(&cluster.nodes)
        .map(|p| p.base_url().trim_start_matches("http://").to_owned())
        .collect();
    let prometheus = Prometheus::start(&targets).await;
    eventually(Duration::from_secs(20), "all three targets up", || async {
        let up = prometheus.sum("up").await?;
        (up == 3.0).then_some(())
    })
    .await;
    let http = cluster.http();
    let room = unique("room");

    // Chat across the nodes: connections, joins, messages in and out, produce and delivery.
    let alice_name = unique("alice");
    let alice = http.user(&alice_name).await;
    let bob = http.user(&unique("bob")).await;
    let mut a = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    let mut b = Ws::connect(&cluster.ws_url(1), &bob.access_token).await;
    metric_moves(&prometheus, "onlychat_connections", 1.0).await;
    a.join(&room).await;
    b.join(&room).await;
    for i in 0..5 {
        a.send(send(&room, &format!("m{i}"))).await;
        a.expect("ack").await;
        b.expect("message").await;
    }
    for (expr, at_least) in [
        ("onlychat_joins_total", 1.0),
        ("onlychat_messages_in_total", 4.0),
        ("onlychat_messages_out_total", 9.0),
        ("onlychat_produce_seconds_count", 4.0),
        ("onlychat_deliver_latency_seconds_count", 9.0),
        ("onlychat_deliver_latency_seconds_bucket{le=\"+Inf\"}", 9.0),
        ("onlychat_history_stored_total", 4.0),
    ] {
        metric_moves(&prometheus, expr, at_least).await;
    }
    let lag = prometheus
        .query("onlychat_consumer_lag_messages{consumer=\"fanout\"}")
        .await;
    assert!(
        lag.len() >= 6,
        "consumer lag per partition of both nodes (3 partitions each): {lag:?}"
    );
    assert!(
        lag.iter().all(|(_, v)| *v >= 0.0 && *v < 100.0),
        "lag is read and small: {lag:?}"
    );

    // Auth failures by reason: a wrong password at the gateway, a forged token at a node.
    let (status, _) = http
        .post(
            "/v1/auth/login",
            &json!({"username": alice_name, "password": "wrong-password"}),
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        Ws::open(&cluster.ws_url(1), Some("not.a.token"))
            .await
            .is_err()
    );
    metric_moves(
        &prometheus,
        "onlychat_auth_failures_total{reason=\"invalid_credentials\"}",
        0.0,
    )
    .await;
    metric_moves(
        &prometheus,
        "onlychat_auth_failures_total{reason=\"invalid_token\"}",
        0.0,
    )
    .await;

    // A second login evicts the first session: revocation on every node, a 4001 close.
    http.login(&alice_name).await;
    assert_eq!(a.expect_close(Duration::from_secs(10)).await, Some(4001));
    metric_moves(&prometheus, "onlychat_revocations_total", 1.0).await;
    metric_moves(&prometheus, "onlychat_evictions_total", 0.0).await;
    metric_moves(&prometheus, "onlychat_ws_closes_total{code=\"4001\"}", 0.0).await;

    // Redis and the database away: logins answer 503 and the errors are counted.
    for (service, errors) in [
        (&redis, "onlychat_redis_errors_total"),
        (&pg, "onlychat_db_errors_total"),
    ] {
        service.stop();
        assert_eq!(
            login_status(&http, &alice_name).await,
            503,
            "login without {}",
            service.address
        );
        metric_moves(&prometheus, errors, 0.0).await;
        service.restart();
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_from_the_sending_node_through_kafka_to_the_other_node() {
    let jaeger = Jaeger::start().await;
    let otel = |service: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http.clone()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ]
    };
    let cluster = Cluster::start(0).await;
    let suffix = unique("");
    let (service_a, service_b) = (format!("node-a{suffix}"), format!("node-b{suffix}"));
    let node_a = cluster.spawn_node_with("node-a", &otel(&service_a)).await;
    let node_b = cluster.spawn_node_with("node-b", &otel(&service_b)).await;
    let http = cluster.http();
    let room = unique("traced");
    let alice = http.user(&unique("alice")).await;
    let bob = http.user(&unique("bob")).await;
    let mut a = Ws::connect(&node_a.ws_url(), &alice.access_token).await;
    let mut b = Ws::connect(&node_b.ws_url(), &bob.access_token).await;
    a.join(&room).await;
    b.join(&room).await;
    a.send(send(&room, "traced-1")).await;
    a.expect("ack").await;
    b.expect("message").await;

    // The sender's node has the trace root; the same trace holds node B's delivery.
    let trace = eventually(
        Duration::from_secs(30),
        "a chat.send trace in Jaeger with spans from both nodes",
        || {
            let (jaeger, service_a, service_b) = (&jaeger, &service_a, &service_b);
            async move {
                let traces = jaeger.traces(service_a, "chat.send").await;
                traces.into_iter().find(|trace| {
                    let services = Jaeger::services_of(trace);
                    services.contains(service_a) && services.contains(service_b)
                })
            }
        },
    )
    .await;
    let spans = Jaeger::spans_of(&trace);
    eprintln!("trace {}: {spans:?}", trace["traceID"]);
    for (service, operation) in [
        (&service_a, "chat.send"),
        (&service_a, "kafka.produce"),
        (&service_a, "chat.deliver"),
        (&service_b, "chat.deliver"),
    ] {
        assert!(
            spans.contains(&(service.clone(), operation.to_owned())),
            "the trace has {operation} on {service}: {spans:?}"
        );
    }
    // Node B's delivery is a child of node A's produce span: the context came in the record.
    let span_id = |operation: &str| {
        trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["operationName"] == operation)
            .map(|s| s["spanID"].clone())
            .expect("span")
    };
    let produce = span_id("kafka.produce");
    let processes = &trace["processes"];
    let delivered_on_b = trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| {
            s["operationName"] == "chat.deliver"
                && processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                    == service_b.as_str()
        })
        .expect("node B's chat.deliver");
    assert!(
        delivered_on_b["references"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["refType"] == "CHILD_OF" && r["spanID"] == produce),
        "node B's chat.deliver is a child of kafka.produce: {delivered_on_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswering_trace_collector_changes_nothing_for_clients_and_shutdown_stays_in_time() {
    // A collector that accepts connections and never answers: exports hang until they time out.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", blackhole.local_addr().expect("addr"));
    let mut cluster = Cluster::start_with(
        2,
        ClusterOptions {
            node_env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
                ("ONLYCHAT_SHUTDOWN_TIMEOUT", "6s".to_owned()),
            ],
            ..ClusterOptions::default()
        },
    )
    .await;
    let http = cluster.http();
    let room = unique("room");
    let alice = http.user(&unique("alice")).await;
    let bob = http.user(&unique("bob")).await;
    let mut a = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    let mut b = Ws::connect(&cluster.ws_url(1), &bob.access_token).await;
    a.join(&room).await;
    b.join(&room).await;
    for i in 0..200 {
        a.send(send(&room, &format!("m{i}"))).await;
    }
    for _ in 0..200 {
        a.expect("ack").await;
        b.expect("message").await;
    }
    let started = Instant::now();
    let status = cluster.nodes[0]
        .terminate(Duration::from_secs(10))
        .await
        .expect("the node exits");
    let took = started.elapsed();
    eprintln!("shutdown with a silent collector: {took:?}, {status}");
    assert!(status.success(), "a graceful exit: {status}");
    assert!(
        took < Duration::from_secs(6),
        "exits before its 6 s deadline: {took:?}"
    );
    drop(blackhole);
}
