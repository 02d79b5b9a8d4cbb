//! The end-to-end harness: real `onlychat` processes on port 0 against the real Redis, Kafka
//! and PostgreSQL that `scripts/services.sh up` started. Every test gets its own Redis key
//! prefix, Kafka topic and database, so tests run in parallel without seeing each other.
//! A missing service fails the test with a message saying how to start it; nothing skips.

pub mod client;
pub mod process;

use std::time::Duration;

pub use client::{Http, Ws};
pub use process::{Proc, Services};

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
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique short name for per-test resources.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A gateway and `n` chat nodes sharing one test's Redis prefix, topic and database.
pub struct Cluster {
    pub gateway: Proc,
    pub nodes: Vec<Proc>,
    pub services: Services,
    pub prefix: String,
    pub topic: String,
    pub database_url: String,
}

impl Cluster {
    /// Starts a cluster and waits until every process is ready.
    pub async fn start(nodes: usize) -> Self {
        let services = Services::from_env().await;
        let prefix = format!("{}:", unique("t"));
        let topic = unique("onlychat-test-");
        let database_url = services.create_database().await;
        let common = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
            let mut env = vec![
                ("ONLYCHAT_JWT_SECRET", TEST_SECRET.to_owned()),
                ("ONLYCHAT_REDIS_URL", services.redis_url.clone()),
                ("ONLYCHAT_REDIS_KEY_PREFIX", prefix.clone()),
                ("ONLYCHAT_HEARTBEAT_INTERVAL", "2s".to_owned()),
                ("ONLYCHAT_AUTH_TIMEOUT", "2s".to_owned()),
            ];
            env.extend(extra.iter().cloned());
            env
        };
        let gateway =
            Proc::spawn("gateway", &["gateway"], &common(&[("ONLYCHAT_DATABASE_URL", database_url.clone())])).await;
        let node_env = common(&[
            ("ONLYCHAT_KAFKA_BROKERS", services.kafka_brokers.clone()),
            ("ONLYCHAT_KAFKA_TOPIC", topic.clone()),
            ("ONLYCHAT_KAFKA_PARTITIONS", "3".to_owned()),
        ]);
        let mut started = Vec::new();
        for i in 0..nodes {
            let env: Vec<(&str, String)> =
                node_env.iter().cloned().chain([("ONLYCHAT_NODE_ID", format!("node{}", i + 1))]).collect();
            started.push(Proc::spawn(&format!("node{}", i + 1), &["node"], &env).await);
        }
        Self { gateway, nodes: started, services, prefix, topic, database_url }
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
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("token")
}
