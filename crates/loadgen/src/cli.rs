//! Command line. Every run is bounded: it stops by itself after `--duration` (plus `--drain`).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("not a duration like 2s or 1m: {e}"))
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "onlychat-loadgen",
    version,
    about = "Load generator for onlychat and comparable chat servers (Centrifugo, Pusher/Sockudo, Socket.IO, raw)"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The wire protocol spoken to the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// onlychat (PROTOCOL.md): Bearer header auth, `join`, `send`, `message`.
    Onlychat,
    /// The raw reference server in bench/raw-server (onlychat frames, no auth).
    Raw,
    /// Centrifugo v6, bidirectional JSON protocol, connection JWT, client-side publish.
    Centrifugo,
    /// Pusher protocol 7 (Sockudo): private channels, client events.
    Pusher,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket) with bench/peers/socketio/server.js.
    Socketio,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// WebSocket base URL of the server; repeat for several nodes (connections are spread
    /// round-robin). The peer's path (/ws, /connection/websocket, ...) is added.
    #[arg(
        long = "url",
        env = "ONLYCHAT_LOADGEN_URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,
    /// HTTP base URL for login and register (onlychat); default: the first --url over http.
    #[arg(long, env = "ONLYCHAT_LOADGEN_HTTP_URL")]
    pub http_url: Option<String>,
    #[arg(long, value_enum, default_value = "onlychat")]
    pub peer: PeerKind,
    /// HS256 secret to mint access tokens with (no logins needed). Required except for
    /// `raw`, `pusher` and `login-storm`.
    #[arg(long, env = "ONLYCHAT_LOADGEN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[arg(long, default_value = "onlychat")]
    pub jwt_issuer: String,
    #[arg(long, default_value = "onlychat")]
    pub jwt_audience: String,
    /// Lifetime of minted tokens (onlychat refuses more than its --jwt-max-lifetime, 1h).
    #[arg(long, default_value = "30m", value_parser = duration)]
    pub token_ttl: Duration,
    /// Pusher application key and secret (private-channel signatures).
    #[arg(long, default_value = "bench-key")]
    pub pusher_key: String,
    #[arg(long, default_value = "bench-secret", hide_default_value = true)]
    pub pusher_secret: String,
    /// Worker processes (0: one per 15,000 sockets; a process may hold 20,000 open files).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Source addresses to spread connections over: 127.0.1.1, 127.0.1.2, ...
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=250))]
    pub source_addrs: u16,
    /// Connection attempts in flight per worker.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Time allowed for one connect + auth + subscribe.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// How long the measured phase runs (hold, publish, or the storm's deadline).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// After publishing stops, how long receivers keep counting late deliveries.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub drain: Duration,
    /// Server process ids whose RSS is read before and after connecting (repeatable).
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Room name prefix (default: `lg` and a random suffix, so runs do not mix).
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// Print the report as JSON on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Label written into the report (e.g. "onlychat-standalone").
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// N authenticated connections held for --duration: connect rate, server RSS per socket.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
    },
    /// R rooms x M members, P publishers at a total target rate.
    Broadcast {
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Publishing connections (each joins one room; default one per room).
        #[arg(long)]
        publishers: Option<usize>,
        /// Messages per second in, over all publishers.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Message body size in bytes (at least the ~40-byte stamp).
        #[arg(long, default_value_t = 64)]
        body_bytes: usize,
        /// Come back after a lost socket (1012 drain, drop): reconnect through the same URL,
        /// rejoin with `since`, resend unacknowledged sends with the same `client_id`
        /// (onlychat only).
        #[arg(long)]
        reconnect: bool,
    },
    /// K 1:1 pairs, each side publishing to the other, at a total target rate.
    Dm {
        #[arg(long, default_value_t = 500)]
        pairs: usize,
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 64)]
        body_bytes: usize,
        /// As for broadcast.
        #[arg(long)]
        reconnect: bool,
    },
    /// K users (registered first, untimed) log in and connect at once (onlychat only).
    LoginStorm {
        #[arg(long, default_value_t = 500)]
        clients: usize,
        #[arg(long, default_value = "loadgen-password-1")]
        password: String,
    },
    /// K connected, joined clients drop and reconnect + rejoin at once.
    ReconnectStorm {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
    },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Idle { .. } => "idle",
            Scenario::Broadcast { .. } => "broadcast",
            Scenario::Dm { .. } => "dm",
            Scenario::LoginStorm { .. } => "login-storm",
            Scenario::ReconnectStorm { .. } => "reconnect-storm",
        }
    }

    /// Whether clients come back after losing their socket (`--reconnect`).
    pub fn reconnect(&self) -> bool {
        matches!(
            self,
            Scenario::Broadcast {
                reconnect: true,
                ..
            } | Scenario::Dm {
                reconnect: true,
                ..
            }
        )
    }
}

impl Common {
    pub fn http_base(&self) -> String {
        if let Some(url) = &self.http_url {
            return url.trim_end_matches('/').to_owned();
        }
        let first = self
            .urls
            .first()
            .map(String::as_str)
            .unwrap_or("ws://127.0.0.1:8080");
        let http = if let Some(rest) = first.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = first.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            first.to_owned()
        };
        http.trim_end_matches('/').to_owned()
    }
}
