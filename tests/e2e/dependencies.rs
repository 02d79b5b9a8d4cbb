//! Sick dependencies: Redis, PostgreSQL and Kafka each stopped and started again under a
//! running cluster (each an instance of the test's own, so no other test sees it). What must
//! keep working keeps working, what cannot answers 503 `unavailable` with `Retry-After` in
//! bounded time, `/readyz` says why, and everything heals without restarting a process.
//! The figures printed here are copied into docs/operations-failures.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use onlychat_e2e::client::Login;
use onlychat_e2e::{
    Cluster, ClusterOptions, OwnKafka, OwnService, Services, Ws, eventually, free_ports, unique,
};
use serde_json::{Value, json};

/// Longest a request may take to be answered while a dependency is down.
const ANSWER_BOUND: Duration = Duration::from_secs(4);
/// Longest `/readyz` may take to answer.
const READYZ_BOUND: Duration = Duration::from_secs(3);

/// Sockets may sit idle through the outage checks without being dropped for missed pongs.
fn options(services: Services, nodes_env: &[(&'static str, &str)]) -> ClusterOptions {
    ClusterOptions {
        services: Some(services),
        env: vec![("ONLYCHAT_HEARTBEAT_INTERVAL", "30s".to_owned())],
        node_env: nodes_env
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect(),
        ..ClusterOptions::default()
    }
}

/// One HTTP answer with what these tests look at.
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
    took: Duration,
}

async fn call(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let response = request
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("an HTTP answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        retry_after,
        took: started.elapsed(),
    }
}

async fn login(base: &str, username: &str) -> Answer {
    let body = json!({"username": username, "password": format!("password-{username}")});
    call(
        reqwest::Client::new()
            .post(format!("{base}/v1/auth/login"))
            .json(&body),
    )
    .await
}

async fn refresh(base: &str, token: &str) -> Answer {
    call(
        reqwest::Client::new()
            .post(format!("{base}/v1/auth/refresh"))
            .json(&json!({"refresh_token": token})),
    )
    .await
}

async fn history(base: &str, token: &str, room: &str) -> Answer {
    call(
        reqwest::Client::new()
            .get(format!("{base}/v1/rooms/{room}/messages?after=0&limit=200"))
            .bearer_auth(token),
    )
    .await
}

async fn readyz(base: &str) -> Answer {
    let answer = call(reqwest::Client::new().get(format!("{base}/readyz"))).await;
    assert!(
        answer.took < READYZ_BOUND,
        "{base}/readyz took {:?}",
        answer.took
    );
    answer
}

/// Asserts a 503 `unavailable` with `Retry-After`, answered within [`ANSWER_BOUND`].
fn assert_unavailable(what: &str, answer: &Answer) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unavailable", "{what}");
    assert!(answer.retry_after.is_some(), "{what}: Retry-After missing");
    assert!(
        answer.took < ANSWER_BOUND,
        "{what} took {:?} to be refused",
        answer.took
    );
}

/// Waits until `/readyz` of `base` answers `status` with a reason containing `reason` (if
/// given); returns how long that took.
async fn wait_readiness(
    base: &str,
    status: u16,
    reason: Option<&str>,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let what = format!("{base}/readyz to answer {status} ({reason:?})");
    let body = eventually(within, &what, || async {
        let answer = readyz(base).await;
        let reasons = answer.body["reasons"].to_string();
        (answer.status == status && reason.is_none_or(|r| reasons.contains(r)))
            .then_some(answer.body)
    })
    .await;
    if status != 200 {
        eprintln!("{base}/readyz: {status} {body}");
    }
    started.elapsed()
}

/// Sends one message from `tx`; waits for its ack there and its delivery at `rx`.
async fn chat(tx: &mut Ws, rx: &mut Ws, room: &str, client_id: &str) -> Value {
    tx.send(
        json!({"type": "send", "room": room, "body": format!("body {client_id}"),
                   "client_id": client_id, "ref": client_id}),
    )
    .await;
    let ack = loop {
        let frame = tx
            .try_recv(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("no ack for {client_id}"));
        if frame["client_id"] != client_id {
            continue;
        }
        match frame["type"].as_str() {
            Some("ack") => break frame,
            Some("error") => panic!("{client_id} refused: {frame}"),
            _ => {}
        }
    };
    loop {
        let frame = rx
            .try_recv(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{client_id} not delivered on the other node"));
        if frame["type"] == "message" && frame["client_id"] == client_id {
            assert_eq!(frame["id"], ack["id"], "the acked copy is delivered");
            return ack;
        }
    }
}

/// Whether the socket still answers a `ping` (it was not closed).
async fn answers_ping(ws: &mut Ws) {
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
}

/// Reads a socket until the server closes it, in the background (so pings are answered);
/// yields the close code and when it came.
fn close_watch(mut ws: Ws) -> tokio::task::JoinHandle<(Option<u16>, Instant)> {
    tokio::spawn(async move {
        let code = ws.expect_close(Duration::from_secs(120)).await;
        (code, Instant::now())
    })
}

/// Makes an own Redis save its data on shutdown, as a production Redis holding sessions must
/// (scripts/services.sh starts it without persistence).
async fn persist(redis_url: &str) {
    let mut conn = redis_conn(redis_url).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("3600 1")
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET save");
}

async fn redis_conn(redis_url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// Makes Redis hold every client command for `ms` (a hung server rather than a dead one).
async fn pause_redis(redis_url: &str, ms: u64) {
    let mut conn = redis_conn(redis_url).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .expect("CLIENT PAUSE");
}

/// Ends `user`'s session in Redis the way the store does (record in `revoked`, session gone)
/// but without publishing it: exactly what a node misses while it is not subscribed.
async fn revoke_unpublished(redis_url: &str, prefix: &str, user: &Login, code: u16) {
    let mut conn = redis_conn(redis_url).await;
    let until = chrono::Utc::now().timestamp() + 900;
    let revocation =
        json!({"sid": user.session_id, "user_id": user.user_id, "code": code, "until": until});
    let _: () = redis::pipe()
        .zadd(format!("{prefix}revoked"), revocation.to_string(), until)
        .ignore()
        .del(format!("{prefix}session:{}", user.session_id))
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("record a revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_sockets_chatting_refuses_logins_with_503_and_heals_by_itself() {
    let redis = OwnService::redis(free_ports(1));
    persist(&redis.redis_url()).await;
    let services = Services {
        redis_url: redis.redis_url(),
        ..Services::from_env().await
    };
    let cluster = Cluster::start_with(2, options(services, &[])).await;
    let (http, base) = (cluster.http(), cluster.gateway.base_url());
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.base_url()).collect();
    let carol_name = unique("carol");
    let alice = http.user(&unique("alice")).await;
    let bob = http.user(&unique("bob")).await;
    let carol = http.user(&carol_name).await;
    let dave = http.user(&unique("dave")).await;
    let mut a = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    let mut b = Ws::connect(&cluster.ws_url(1), &bob.access_token).await;
    a.join("deps").await;
    b.join("deps").await;
    chat(&mut a, &mut b, "deps", "before").await;
    let carol_sockets = [
        close_watch(Ws::connect(&cluster.ws_url(0), &carol.access_token).await),
        close_watch(Ws::connect(&cluster.ws_url(1), &carol.access_token).await),
    ];
    let dave_sockets = [
        close_watch(Ws::connect(&cluster.ws_url(0), &dave.access_token).await),
        close_watch(Ws::connect(&cluster.ws_url(1), &dave.access_token).await),
    ];
    // Dave's session ends while no node hears of it: only reloading `revoked` when the feed
    // resubscribes (after the outage) can close his sockets.
    revoke_unpublished(&redis.redis_url(), &cluster.prefix, &dave, 4003).await;

    redis.stop();
    let down = Instant::now();
    let mut noticed = Vec::new();
    for base in std::iter::once(&base).chain(&nodes) {
        wait_readiness(base, 503, Some("session store"), Duration::from_secs(5)).await;
        noticed.push(down.elapsed());
    }
    // Sockets keep chatting across the nodes, joins still answer, and a new socket is admitted
    // (its token is checked without Redis).
    chat(&mut a, &mut b, "deps", "during-1").await;
    chat(&mut b, &mut a, "deps", "during-2").await;
    // (The roster in Redis is best effort: each join waits at most 1 s for it.)
    let mut join_took = Duration::ZERO;
    for room in ["deps-2", "deps-3", "deps-4"] {
        let joining = Instant::now();
        a.join(room).await;
        join_took = join_took.max(joining.elapsed());
    }
    assert!(
        join_took < Duration::from_secs(3),
        "a join took {join_took:?}"
    );
    let mut a2 = Ws::connect(&cluster.ws_url(1), &alice.access_token).await;
    a2.join("deps").await;
    chat(&mut b, &mut a2, "deps", "during-3").await;
    // What needs only PostgreSQL and the token still works: registering, reading history.
    http.register(&unique("newcomer")).await;
    let answer = history(&base, &alice.access_token, "deps").await;
    assert_eq!(answer.status, 200, "history without Redis: {}", answer.body);
    // Login and refresh: 503 `unavailable` with Retry-After, quickly, never 401.
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let answer = login(&base, &carol_name).await;
        assert_unavailable("login while Redis is down", &answer);
        slowest = slowest.max(answer.took);
        let answer = refresh(&base, &alice.refresh_token).await;
        assert_unavailable("refresh while Redis is down", &answer);
        slowest = slowest.max(answer.took);
    }
    eprintln!(
        "redis down: /readyz 503 (gateway, node1, node2) after {noticed:?}; login/refresh \
         refused with 503 in at most {slowest:?}; joins took at most {join_took:?}"
    );
    // The outage lasts at least 10 s (long enough for every reconnect backoff to reach its
    // cap), with messages going both ways all along.
    let mut n = 0;
    while down.elapsed() < Duration::from_secs(10) {
        n += 1;
        chat(&mut a, &mut b, "deps", &format!("long-{n}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outage = down.elapsed();

    redis.restart();
    let up = Instant::now();
    let mut ready = Vec::new();
    for base in std::iter::once(&base).chain(&nodes) {
        wait_readiness(base, 200, None, Duration::from_secs(10)).await;
        ready.push(up.elapsed());
    }
    // Logins work again, and a new login evicts the older session's sockets on every node.
    let relogged = eventually(
        Duration::from_secs(10),
        "a login after Redis returned",
        || {
            let (base, name) = (base.clone(), carol_name.clone());
            async move {
                let answer = login(&base, &name).await;
                (answer.status == 200).then(|| up.elapsed())
            }
        },
    )
    .await;
    let mut evicted = Duration::ZERO;
    for socket in carol_sockets {
        let (code, at) = socket.await.expect("carol's socket");
        assert_eq!(
            code,
            Some(4001),
            "the older session's sockets close with 4001"
        );
        evicted = evicted.max(at.saturating_duration_since(up));
    }
    assert!(
        evicted < Duration::from_secs(10),
        "eviction took {evicted:?}"
    );
    // The revocation the nodes missed is found when their feed resubscribes.
    for socket in dave_sockets {
        let (code, at) = socket.await.expect("dave's socket");
        assert_eq!(
            code,
            Some(4003),
            "a revocation recorded while unsubscribed closes"
        );
        assert!(
            at > up,
            "closed only once the feed resubscribed after the restart"
        );
        eprintln!(
            "redis back: dave's socket closed by the reloaded revoked set {:?} after the restart",
            at.saturating_duration_since(up)
        );
    }
    // Nobody was logged out by the outage: the sockets chat, the refresh token still works.
    chat(&mut a, &mut b, "deps", "after").await;
    answers_ping(&mut a2).await;
    let answer = refresh(&base, &alice.refresh_token).await;
    assert_eq!(
        answer.status, 200,
        "alice's session survived: {}",
        answer.body
    );
    eprintln!(
        "redis back after a {outage:?} outage: /readyz 200 (gateway, node1, node2) {ready:?}, \
         first login {relogged:?}, eviction on both nodes {evicted:?} after the restart"
    );

    // A Redis that hangs (every command paused) instead of refusing: answers stay bounded,
    // chat goes on, and it all recovers when the pause ends.
    let erin = unique("erin");
    http.register(&erin).await;
    pause_redis(&redis.redis_url(), 6000).await;
    let hung = Instant::now();
    let (answer, gateway, node) =
        tokio::join!(login(&base, &erin), readyz(&base), readyz(&nodes[0]));
    assert_unavailable("login while Redis hangs", &answer);
    assert_eq!(
        (gateway.status, node.status),
        (503, 503),
        "/readyz while Redis hangs"
    );
    chat(&mut a, &mut b, "deps", "hung").await;
    eprintln!(
        "redis hung: login refused with 503 in {:?}, /readyz 503 in {:?} (gateway) and {:?} (node)",
        answer.took, gateway.took, node.took
    );
    wait_readiness(&base, 200, None, Duration::from_secs(15)).await;
    eprintln!(
        "redis hung: gateway ready again {:?} after the 6 s pause began",
        hung.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_keeps_chat_going_refuses_login_and_history_and_the_writer_catches_up() {
    let pg = OwnService::postgres(free_ports(1));
    let services = Services {
        pg_admin_url: pg.pg_admin_url(),
        ..Services::from_env().await
    };
    let cluster = Cluster::start_with(2, options(services, &[])).await;
    let (http, base) = (cluster.http(), cluster.gateway.base_url());
    let alice_name = unique("alice");
    let alice = http.user(&alice_name).await;
    let bob = http.user(&unique("bob")).await;
    let mut a = Ws::connect(&cluster.ws_url(0), &alice.access_token).await;
    let mut b = Ws::connect(&cluster.ws_url(1), &bob.access_token).await;
    a.join("pg").await;
    b.join("pg").await;
    let mut acked = vec![chat(&mut a, &mut b, "pg", "before").await];

    pg.stop();
    let down = Instant::now();
    let noticed = wait_readiness(&base, 503, Some("database"), Duration::from_secs(5)).await;
    // A node does not need the database to chat: it stays ready.
    for node in &cluster.nodes {
        assert_eq!(
            readyz(&node.base_url()).await.status,
            200,
            "{} ready",
            node.name
        );
    }
    let answer = login(&base, &alice_name).await;
    assert_eq!(answer.status, 503, "login: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unavailable");
    assert!(answer.retry_after.is_some(), "login: Retry-After");
    // The pool waits out its acquire timeout (5 s) before giving up on the database.
    assert!(
        answer.took < Duration::from_secs(8),
        "login took {:?}",
        answer.took
    );
    let login_took = answer.took;
    let answer = history(&base, &alice.access_token, "pg").await;
    assert_eq!(answer.status, 503, "history: {}", answer.body);
    assert!(answer.retry_after.is_some(), "history: Retry-After");
    let history_took = answer.took;
    // A refresh is refused too, but does not spend the token (the user is read first).
    let answer = refresh(&base, &bob.refresh_token).await;
    assert_eq!(answer.status, 503, "refresh: {}", answer.body);
    // Chat goes on in both directions while the database is away.
    for i in 0..15 {
        acked.push(chat(&mut a, &mut b, "pg", &format!("a{i}")).await);
        acked.push(chat(&mut b, &mut a, "pg", &format!("b{i}")).await);
    }
    // The writer is stuck on its batch; its lag gauge says how much is waiting.
    let metrics = format!("{base}/metrics");
    let waiting = eventually(
        Duration::from_secs(15),
        "the history writer's lag to show the messages waiting",
        || async {
            let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
            let lag: f64 = text
                .lines()
                .filter(|l| l.starts_with("onlychat_consumer_lag_messages{consumer=\"history\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (lag >= 20.0).then_some(lag)
        },
    )
    .await;
    let outage = down.elapsed();
    eprintln!(
        "postgres down: history lag {waiting} records; gateway /readyz 503 after {noticed:?}; login refused with 503 in \
         {login_took:?}, history in {history_took:?}; 30 messages acked and delivered meanwhile"
    );

    pg.restart();
    let up = Instant::now();
    wait_readiness(&base, 200, None, Duration::from_secs(30)).await;
    let ready = up.elapsed();
    let relogged = eventually(
        Duration::from_secs(30),
        "a login after PostgreSQL returned",
        || {
            let (base, name) = (base.clone(), alice_name.clone());
            async move { (login(&base, &name).await.status == 200).then(|| up.elapsed()) }
        },
    )
    .await;
    let answer = refresh(&base, &bob.refresh_token).await;
    assert_eq!(
        answer.status, 200,
        "the refresh token refused during the outage still works: {}",
        answer.body
    );
    let token = http.login(&alice_name).await.access_token;
    // The writer catches up: every acked message is in history exactly once.
    let wanted: HashMap<String, String> = acked
        .iter()
        .map(|ack| {
            (
                ack["id"].as_str().expect("id").to_owned(),
                ack["client_id"].to_string(),
            )
        })
        .collect();
    let caught_up = eventually(
        Duration::from_secs(30),
        "history to hold every acked message",
        || {
            let (base, token, wanted) = (base.clone(), token.clone(), &wanted);
            async move {
                let answer = history(&base, &token, "pg").await;
                let messages = answer.body["messages"].as_array()?.clone();
                let mut seen: HashMap<String, usize> = HashMap::new();
                for m in &messages {
                    *seen.entry(m["id"].as_str()?.to_owned()).or_default() += 1;
                }
                wanted
                    .keys()
                    .all(|id| seen.contains_key(id))
                    .then_some((up.elapsed(), messages))
            }
        },
    )
    .await;
    let (caught_up, messages) = caught_up;
    let mut per_client_id: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        *per_client_id.entry(m["client_id"].to_string()).or_default() += 1;
    }
    assert_eq!(
        messages.len(),
        wanted.len(),
        "history holds each message once"
    );
    assert!(
        per_client_id.values().all(|n| *n == 1),
        "no client_id stored twice"
    );
    eprintln!(
        "postgres back after a {outage:?} outage: gateway /readyz 200 {ready:?}, first login \
         {relogged:?}, history complete ({} messages) {caught_up:?} after the restart",
        messages.len()
    );
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start with the state (field 3);
    // utime and stime are fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields[10] + fields[11];
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_turns_node_readiness_503_without_spinning_and_back_to_200() {
    let kafka = OwnKafka::start(free_ports(2));
    let services = Services {
        kafka_brokers: kafka.address.clone(),
        ..Services::from_env().await
    };
    let cluster = Cluster::start_with(1, options(services, &[])).await;
    let (node, base) = (cluster.nodes[0].base_url(), cluster.gateway.base_url());
    let user = cluster.http().user(&unique("kim")).await;
    let other = unique("lee");
    cluster.http().register(&other).await;
    let mut ws = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    ws.join("kafka").await;

    kafka.stop();
    let down = Instant::now();
    let noticed = wait_readiness(
        &node,
        503,
        Some("message log unreachable"),
        Duration::from_secs(15),
    )
    .await;
    // The gateway serves logins and history without Kafka: it stays ready.
    assert_eq!(
        readyz(&base).await.status,
        200,
        "gateway ready without Kafka"
    );
    let relogin = cluster.http().login(&other).await;
    let answer = history(&base, &relogin.access_token, "kafka").await;
    assert_eq!(answer.status, 200, "history without Kafka: {}", answer.body);
    // Ten seconds of outage, polled like a load balancer would: CPU stays near idle.
    let pids = [
        ("node", cluster.nodes[0].pid().expect("node pid")),
        ("gateway", cluster.gateway.pid().expect("gateway pid")),
    ];
    let before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            readyz(&node).await.status,
            503,
            "not ready while the broker is away"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = window.elapsed();
    for ((name, pid), before) in pids.iter().zip(before) {
        let used = cpu_time(*pid) - before;
        let share = used.as_secs_f64() / elapsed.as_secs_f64();
        eprintln!(
            "kafka down: {name} used {used:?} of CPU in {elapsed:?} ({:.1}% of one core)",
            share * 100.0
        );
        assert!(
            share < 0.25,
            "{name} spins while the broker is away: {:.1}%",
            share * 100.0
        );
    }
    answers_ping(&mut ws).await;
    // A new socket is admitted and joins while the broker is away.
    let mut peer = Ws::connect(&cluster.ws_url(0), &user.access_token).await;
    peer.join("kafka").await;
    let outage = down.elapsed();

    kafka.restart();
    let ready = wait_readiness(&node, 200, None, Duration::from_secs(30)).await;
    let resumed = Instant::now();
    chat(&mut ws, &mut peer, "kafka", "after").await;
    eprintln!(
        "kafka down: node /readyz 503 after {noticed:?}; broker back after a {outage:?} outage: \
         node ready {ready:?} after the restart, a send acked and delivered {:?} later",
        resumed.elapsed()
    );
}
