//! The end-to-end harness: real `onlychat` processes on port 0 against the real Redis, Kafka
//! and PostgreSQL that `scripts/services.sh up` started. Every test gets its own Redis key
//! prefix, Kafka topic and database, so tests run in parallel without seeing each other.
//! A missing service fails the test with a message saying how to start it; nothing skips.

pub mod client;
pub mod observe;
pub mod process;
pub mod raw;

use std::time::Duration;

pub use client::{Http, Ws};
pub use process::{OwnKafka, OwnService, Proc, Services};
pub use raw::RawWs;

/// A shared secret every process of one test cluster uses.
pub const TEST_SECRET: &str = "e2e-secret-that-is-at-least-32-bytes-long!";

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique short name for per-test resources.
/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The first of `n` free loopback ports in a row (for a service of a test's own).
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 20_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if (port..port + n).all(free) {
            return port;
        }
    }
    panic!("no {n} free ports in a row on 127.0.0.1");
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// How a test cluster differs from the default.
#[derive(Clone)]
pub struct ClusterOptions {
    /// `embedded` (default) or `off` (the test runs `onlychat history` itself).
    pub history_writer: &'static str,
    /// Extra environment for every process (gateway and nodes), after the defaults.
    pub env: Vec<(&'static str, String)>,
    /// Extra environment for the gateway only.
    pub gateway_env: Vec<(&'static str, String)>,
    /// Extra environment for every node.
    pub node_env: Vec<(&'static str, String)>,
    /// Services other than the shared ones (a chaos test's own Kafka).
    pub services: Option<Services>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            history_writer: "embedded",
            env: Vec::new(),
            gateway_env: Vec::new(),
            node_env: Vec::new(),
            services: None,
        }
    }
}

/// A gateway and `n` chat nodes sharing one test's Redis prefix, topic and database.
pub struct Cluster {
    pub gateway: Proc,
    pub nodes: Vec<Proc>,
    pub services: Services,
    pub prefix: String,
    pub topic: String,
    pub database_url: String,
    /// The environment nodes were started with (for starting more).
    pub node_env: Vec<(&'static str, String)>,
    /// The environment of the gateway, which `onlychat history` shares.
    pub writer_env: Vec<(&'static str, String)>,
}

impl Cluster {
    /// Starts a cluster and waits until every process is ready.
    pub async fn start(nodes: usize) -> Self {
        Self::start_with(nodes, ClusterOptions::default()).await
    }

    /// Starts a cluster with `options`.
    pub async fn start_with(nodes: usize, options: ClusterOptions) -> Self {
        let services = match options.services.clone() {
            Some(services) => services,
            None => Services::from_env().await,
        };
        let prefix = format!("{}:", unique("t"));
        let topic = unique("onlychat-test-");
        let database_url = services.create_database().await;
        let common = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
            let mut env = vec![
                ("ONLYCHAT_JWT_SECRET", TEST_SECRET.to_owned()),
                ("ONLYCHAT_REDIS_URL", services.redis_url.clone()),
                ("ONLYCHAT_REDIS_KEY_PREFIX", prefix.clone()),
                // Short enough for tests about presence, long enough that a test client busy
                // elsewhere for a few seconds (not reading, so not answering pings) stays.
                ("ONLYCHAT_HEARTBEAT_INTERVAL", "5s".to_owned()),
                ("ONLYCHAT_AUTH_TIMEOUT", "2s".to_owned()),
                // Tests log in many users from one address; the limit tests turn them on.
                ("ONLYCHAT_LOGIN_RATE_USER", "0".to_owned()),
                ("ONLYCHAT_LOGIN_RATE_IP", "0".to_owned()),
            ];
            env.extend(extra.iter().cloned());
            env.extend(options.env.iter().cloned());
            env
        };
        let kafka = [
            ("ONLYCHAT_KAFKA_BROKERS", services.kafka_brokers.clone()),
            ("ONLYCHAT_KAFKA_TOPIC", topic.clone()),
            ("ONLYCHAT_KAFKA_PARTITIONS", "3".to_owned()),
            ("ONLYCHAT_KAFKA_PRODUCE_TIMEOUT", "5s".to_owned()),
            ("ONLYCHAT_HISTORY_GROUP", format!("{topic}-history")),
        ];
        let mut gateway_env = common(&kafka);
        gateway_env.push(("ONLYCHAT_DATABASE_URL", database_url.clone()));
        gateway_env.push(("ONLYCHAT_HISTORY_WRITER", options.history_writer.to_owned()));
        gateway_env.extend(options.gateway_env.iter().cloned());
        let gateway = Proc::spawn("gateway", &["gateway"], &gateway_env).await;
        let mut node_env = common(&kafka);
        node_env.push(("ONLYCHAT_DATABASE_URL", database_url.clone()));
        node_env.extend(options.node_env.iter().cloned());
        let mut started = Vec::new();
        for i in 0..nodes {
            let env: Vec<(&str, String)> = node_env
                .iter()
                .cloned()
                .chain([("ONLYCHAT_NODE_ID", format!("node{}", i + 1))])
                .collect();
            started.push(Proc::spawn(&format!("node{}", i + 1), &["node"], &env).await);
        }
        let writer_env = gateway_env;
        Self {
            gateway,
            nodes: started,
            services,
            prefix,
            topic,
            database_url,
            node_env,
            writer_env,
        }
    }

    /// Starts one more node named `name`.
    pub async fn spawn_node(&self, name: &str) -> Proc {
        self.spawn_node_with(name, &[]).await
    }

    /// Starts one more node named `name`, with `extra` environment.
    pub async fn spawn_node_with(&self, name: &str, extra: &[(&'static str, String)]) -> Proc {
        let env: Vec<(&str, String)> = self
            .node_env
            .iter()
            .cloned()
            .chain([("ONLYCHAT_NODE_ID", name.to_owned())])
            .chain(extra.iter().cloned())
            .collect();
        Proc::spawn(name, &["node"], &env).await
    }

    /// Starts a stand-alone history writer (`onlychat history`) on this cluster's topic and group.
    pub async fn spawn_history_writer(&self) -> Proc {
        Proc::spawn("history", &["history"], &self.writer_env).await
    }

    /// The HTTP API client.
    pub fn http(&self) -> Http {
        Http::new(&self.gateway.base_url())
    }

    /// The `/ws` URL of node `i`.
    pub fn ws_url(&self, i: usize) -> String {
        self.nodes[i].ws_url()
    }
}

/// Mints an HS256 access token with the given secret and claim overrides (for refusal tests).
pub fn mint_token(secret: &str, overrides: serde_json::Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "sub": uuid::Uuid::now_v7().to_string(), "name": "mallory", "sid": uuid::Uuid::now_v7().to_string(),
        "iat": now, "nbf": now, "exp": now + 600, "jti": "j", "iss": "onlychat", "aud": "onlychat", "roles": [],
    });
    if let (Some(claims), Some(overrides)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in overrides {
            claims.insert(k.clone(), v.clone());
        }
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .expect("token")
}
