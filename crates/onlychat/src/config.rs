//! Command line and environment: every flag also reads an `ONLYCHAT_*` variable (flag wins).
//! Parsed once at start-up; a missing or malformed setting is a one-line error and exit 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("not a duration like 2s, 15m or 14d: {e}"))
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err("not a rate in events per second (a number >= 0; 0 turns the limit off)".into()),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "onlychat",
    version,
    about = "A horizontally scalable WebSocket chat server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gateway and chat node in one process, no outside services (SQLite, in-memory bus and sessions).
    Standalone(StandaloneArgs),
    /// The HTTP API (auth, users, history) and the embedded history writer. Needs PostgreSQL, Redis, Kafka.
    Gateway(GatewayArgs),
    /// A WebSocket chat node (/ws). Needs Redis and Kafka (PostgreSQL optional, for old replays).
    Node(NodeArgs),
    /// The history writer alone: Kafka consumer group -> PostgreSQL.
    History(HistoryArgs),
    /// Applies database migrations, then exits.
    Migrate(MigrateArgs),
    /// User administration.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Gives an existing user the `admin` role (effective at their next login or refresh).
    Promote {
        name: String,
        #[command(flatten)]
        db: DataArgs,
    },
}

/// Listener and identity of the process.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or 127.0.0.1:8081 for a node].
    #[arg(long, env = "ONLYCHAT_LISTEN")]
    pub listen: Option<String>,
    /// Unique id of this process [default: hostname-pid-random].
    #[arg(long, env = "ONLYCHAT_NODE_ID")]
    pub node_id: Option<String>,
    /// Hard deadline after SIGTERM: the process exits by then, drained or not. Keep it inside
    /// the pod's terminationGracePeriodSeconds (minus any preStop sleep).
    #[arg(long, env = "ONLYCHAT_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub shutdown_timeout: Duration,
    /// A draining node closes its sockets with 1012 in random order, spread evenly over this
    /// window, so clients do not all reconnect at once; at least 2s shorter than
    /// --shutdown-timeout [default: half of --shutdown-timeout, at most 10s].
    #[arg(long, env = "ONLYCHAT_DRAIN_WINDOW", value_parser = duration)]
    pub drain_window: Option<Duration>,
    /// Time a client has to send a whole request head (slow-header clients get 408 and are
    /// closed); the WebSocket `auth` frame has its own `--auth-timeout`.
    #[arg(long, env = "ONLYCHAT_REQUEST_HEAD_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub request_head_timeout: Duration,
    /// PEM certificate chain (leaf first); with --tls-key, the listener serves HTTPS and WSS.
    #[arg(long, env = "ONLYCHAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "ONLYCHAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Allowed WebSocket Origins and CORS origins (`scheme://host[:port]`), comma separated;
    /// empty allows any.
    #[arg(
        long,
        env = "ONLYCHAT_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,
}

/// Access and refresh tokens.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// HS256 secret, at least 32 bytes (standalone generates one in the data dir).
    #[arg(long, env = "ONLYCHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Signing algorithm; pinned, never read from a token.
    #[arg(long, env = "ONLYCHAT_JWT_ALGORITHM", default_value = "HS256", value_parser = ["HS256", "EdDSA", "RS256"])]
    pub jwt_algorithm: String,
    /// PEM private key that signs tokens (EdDSA, RS256; gateway and standalone).
    #[arg(long, env = "ONLYCHAT_JWT_KEY")]
    pub jwt_key: Option<PathBuf>,
    /// PEM public keys accepted for verification, comma separated (current and previous).
    #[arg(long, env = "ONLYCHAT_JWT_PUBLIC_KEYS", value_delimiter = ',')]
    pub jwt_public_keys: Vec<PathBuf>,
    /// Longest token lifetime (exp - iat) accepted; never shorter than --access-ttl.
    #[arg(long, env = "ONLYCHAT_JWT_MAX_LIFETIME", default_value = "1h", value_parser = duration)]
    pub jwt_max_lifetime: Duration,
    #[arg(long, env = "ONLYCHAT_JWT_ISSUER", default_value = "onlychat")]
    pub jwt_issuer: String,
    #[arg(long, env = "ONLYCHAT_JWT_AUDIENCE", default_value = "onlychat")]
    pub jwt_audience: String,
    #[arg(long, env = "ONLYCHAT_ACCESS_TTL", default_value = "15m", value_parser = duration)]
    pub access_ttl: Duration,
    #[arg(long, env = "ONLYCHAT_REFRESH_TTL", default_value = "14d", value_parser = duration)]
    pub refresh_ttl: Duration,
    /// `replace` (a new login ends the older session), `reject` (409 while one is live) or
    /// `multi:N` (up to N sessions; the oldest beyond N ends).
    #[arg(long, env = "ONLYCHAT_SESSION_POLICY", default_value = "replace")]
    pub session_policy: onlychat_auth::SessionPolicy,
    /// After a refresh, repeating it with the same (now spent) refresh token within this grace
    /// returns the same successor; a spent token presented later revokes the session (4003).
    #[arg(long, env = "ONLYCHAT_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = duration)]
    pub refresh_reuse_grace: Duration,
}

/// Login abuse limits (gateway, standalone): a bucket of `burst` attempts refilled at `rate`
/// per second, per username and per client address; `0` turns a limit off.
#[derive(Debug, Args)]
pub struct LoginLimitArgs {
    /// Login attempts per second per username, sustained.
    #[arg(long, env = "ONLYCHAT_LOGIN_RATE_USER", default_value = "0.1", value_parser = rate)]
    pub login_rate_user: f64,
    /// Login attempts per username back to back.
    #[arg(long, env = "ONLYCHAT_LOGIN_BURST_USER", default_value_t = 10)]
    pub login_burst_user: u32,
    /// Login attempts per second per client address, sustained.
    #[arg(long, env = "ONLYCHAT_LOGIN_RATE_IP", default_value = "2", value_parser = rate)]
    pub login_rate_ip: f64,
    /// Login attempts per client address back to back.
    #[arg(long, env = "ONLYCHAT_LOGIN_BURST_IP", default_value_t = 60)]
    pub login_burst_ip: u32,
}

#[derive(Debug, Args)]
pub struct RedisArgs {
    #[arg(long, env = "ONLYCHAT_REDIS_URL")]
    pub redis_url: String,
    #[arg(long, env = "ONLYCHAT_REDIS_KEY_PREFIX", default_value = "onlychat:")]
    pub redis_key_prefix: String,
}

#[derive(Debug, Args)]
pub struct KafkaArgs {
    #[arg(long, env = "ONLYCHAT_KAFKA_BROKERS")]
    pub kafka_brokers: String,
    #[arg(
        long,
        env = "ONLYCHAT_KAFKA_TOPIC",
        default_value = "onlychat.messages"
    )]
    pub kafka_topic: String,
    /// Partitions when the topic is created.
    #[arg(long, env = "ONLYCHAT_KAFKA_PARTITIONS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,
    /// Longest wait for the broker to acknowledge a `send` before answering `unavailable`.
    #[arg(long, env = "ONLYCHAT_KAFKA_PRODUCE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub kafka_produce_timeout: Duration,
}

/// WebSocket behaviour of a node.
#[derive(Debug, Args)]
pub struct SocketArgs {
    #[arg(long, env = "ONLYCHAT_HEARTBEAT_INTERVAL", default_value = "25s", value_parser = duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, env = "ONLYCHAT_AUTH_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub auth_timeout: Duration,
    /// Largest WebSocket frame or reassembled message, in bytes (at least 65536).
    #[arg(long, env = "ONLYCHAT_MAX_FRAME_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(65_536..=16_777_216))]
    pub max_frame_bytes: u64,
    /// Rooms one connection may be in at once (0 = no cap).
    #[arg(long, env = "ONLYCHAT_MAX_ROOMS", default_value_t = 100)]
    pub max_rooms: usize,
    /// `send`/`typing` frames per second per connection, sustained (0 = off).
    #[arg(long, env = "ONLYCHAT_SEND_RATE", default_value = "10", value_parser = rate)]
    pub send_rate: f64,
    /// `send`/`typing` frames per connection back to back before `rate_limited`.
    #[arg(long, env = "ONLYCHAT_SEND_BURST", default_value_t = 500)]
    pub send_burst: u32,
    /// Open sockets per node; more upgrades get 503 (0 = no cap).
    #[arg(long, env = "ONLYCHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most request headers on an upgrade (431 beyond).
    #[arg(long, env = "ONLYCHAT_MAX_UPGRADE_HEADERS", default_value_t = 64)]
    pub max_upgrade_headers: usize,
    /// Most bytes of request headers on an upgrade (431 beyond).
    #[arg(
        long,
        env = "ONLYCHAT_MAX_UPGRADE_HEADER_BYTES",
        default_value_t = 8192
    )]
    pub max_upgrade_header_bytes: usize,
    /// Tests only: a `send` with the fault-injection body panics its handler.
    #[arg(long, env = "ONLYCHAT_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,
    /// Frames queued for one connection before it is closed as too slow (4008).
    #[arg(long, env = "ONLYCHAT_OUTBOUND_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..))]
    pub outbound_queue: u64,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

/// Exactly-once delivery and resume.
#[derive(Debug, Args)]
pub struct DeliveryArgs {
    /// A resend with the same client_id (same user and room) within this window is delivered once.
    #[arg(long, env = "ONLYCHAT_DEDUPE_WINDOW", default_value = "10m", value_parser = duration)]
    pub dedupe_window: Duration,
    /// Recent messages each node keeps per room for `join` with `since`.
    #[arg(long, env = "ONLYCHAT_REPLAY_BUFFER", default_value_t = 1000)]
    pub replay_buffer: usize,
    /// Most messages one replay sends; a longer gap gets `recovered: false` and the latest page.
    #[arg(long, env = "ONLYCHAT_REPLAY_MAX", default_value_t = 10_000)]
    pub replay_max: u32,
}

/// Where durable data lives.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Standalone's SQLite file and generated JWT secret live here.
    #[arg(long, env = "ONLYCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// [default: sqlite://<data-dir>/onlychat.db]
    #[arg(long, env = "ONLYCHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DataArgs {
    /// The database URL, defaulting to SQLite in the data dir.
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("onlychat.db").display()))
    }
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub limits: LoginLimitArgs,
    #[command(flatten)]
    pub socket: SocketArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub limits: LoginLimitArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[arg(long, env = "ONLYCHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// `embedded` runs the history writer in this process; `off` leaves it to `onlychat history`.
    #[arg(long, env = "ONLYCHAT_HISTORY_WRITER", default_value = "embedded", value_parser = ["embedded", "off"])]
    pub history_writer: String,
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// The history writer's consumer group and batching.
#[derive(Debug, Args)]
pub struct WriterArgs {
    /// Kafka consumer group of the history writers.
    #[arg(
        long,
        env = "ONLYCHAT_HISTORY_GROUP",
        default_value = "onlychat-history"
    )]
    pub history_group: String,
    /// Messages per database transaction, at most.
    #[arg(long, env = "ONLYCHAT_HISTORY_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub history_batch: u64,
    /// Same window as the nodes' (a resend within it is stored once).
    #[arg(long, env = "ONLYCHAT_DEDUPE_WINDOW", default_value = "10m", value_parser = duration)]
    pub dedupe_window: Duration,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[arg(long, env = "ONLYCHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub writer: WriterArgs,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// PostgreSQL with the message history, for replays older than the node's buffer (optional).
    #[arg(long, env = "ONLYCHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[arg(long, env = "ONLYCHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}
