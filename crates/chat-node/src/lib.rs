//! The WebSocket chat node: `/ws` (authentication, frames, rooms), fan-out of the message log
//! to local sockets, eviction of revoked sessions, and the node's health endpoints.
//!
//! Where things happen:
//! - `upgrade.rs`: the HTTP upgrade request (query-token refusal, header auth, origin check)
//! - `connection/`: one task per socket; `frames.rs` answers each client frame
//! - `registry.rs`: rooms, sessions and the ordered fan-out from the bus
//! - `presence.rs`: the cluster-wide roster behind `joined.online`
//! - `recent.rs`: the dedupe window and per-room replay buffers, rebuilt from the log at start
//! - `replay.rs`: what a `join` with `since` sends before live traffic
#![forbid(unsafe_code)]

mod connection;
mod frame_guard;
mod health;
pub mod presence;
mod recent;
pub use recent::RecentLimits;
pub mod registry;
mod replay;
pub mod trace;
mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::web;
use onlychat_auth::{JwtKeys, RevokedSet, SessionStore};
use onlychat_bus::Bus;
use tokio_util::sync::CancellationToken;

pub use presence::Presence;
use registry::Registry;

/// Node settings (see PROTOCOL.md section 1 for the flags behind them).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub node_id: String,
    /// Server ping interval; a peer silent for two intervals is closed.
    pub heartbeat: Duration,
    /// Time a socket without an `Authorization` header has to send its `auth` frame.
    pub auth_timeout: Duration,
    /// Largest accepted WebSocket frame or message, in bytes.
    pub max_frame_bytes: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Outbound frames queued per connection before it counts as too slow (4008).
    pub outbound_queue: usize,
    /// `send`s of one connection waiting for the log's acknowledgement at once.
    pub max_in_flight_sends: usize,
    /// Allowed `Origin` values; empty allows any.
    pub allowed_origins: Vec<String>,
    /// A resend with the same `client_id` within this window is delivered once.
    pub dedupe_window: Duration,
    /// Recent messages kept per room for `join` with `since`.
    pub replay_per_room: usize,
    /// Most messages one replay sends; a longer gap gets `recovered: false` and the latest page.
    pub replay_max: u32,
    /// How long an ack waits for this node to read its own message back from the log (after
    /// the broker acknowledged it) before answering `unavailable`.
    pub read_back_timeout: Duration,
    /// `send` and `typing` frames per second per connection, sustained; `0` turns it off.
    pub send_rate: f64,
    /// `send` and `typing` frames per connection back to back.
    pub send_burst: u32,
    /// Open sockets this node holds at most; an upgrade beyond gets 503. `0` is no cap.
    pub max_connections: usize,
    /// Most request headers an upgrade may carry (431 beyond).
    pub max_upgrade_headers: usize,
    /// Most bytes of request headers (names and values) an upgrade may carry (431 beyond).
    pub max_upgrade_header_bytes: usize,
    /// Test-only fault injection: a `send` whose body is [`PANIC_BODY`] panics its handler.
    pub fault_injection: bool,
    /// Tokens issued before this (unix seconds) are refused as revoked. Standalone sets it to
    /// its start: its sessions live in memory, so none from before a restart still stands.
    pub tokens_issued_from: Option<i64>,
}

/// The body that makes a `send` handler panic when fault injection is on (tests only).
pub const PANIC_BODY: &str = "onlychat-fault-injection:panic";

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            node_id: "node".into(),
            heartbeat: Duration::from_secs(25),
            auth_timeout: Duration::from_secs(10),
            max_frame_bytes: 65_536,
            max_rooms_per_connection: 100,
            outbound_queue: 1024,
            max_in_flight_sends: 256,
            allowed_origins: Vec::new(),
            dedupe_window: Duration::from_secs(600),
            replay_per_room: 1000,
            replay_max: 10_000,
            read_back_timeout: Duration::from_secs(10),
            send_rate: 10.0,
            send_burst: 500,
            max_connections: 10_000,
            max_upgrade_headers: 64,
            max_upgrade_header_bytes: 8 * 1024,
            fault_injection: false,
            tokens_issued_from: None,
        }
    }
}

/// What a node talks to.
#[derive(Clone)]
pub struct NodeDeps {
    pub bus: Arc<dyn Bus>,
    pub sessions: Arc<dyn SessionStore>,
    pub keys: JwtKeys,
    pub presence: Presence,
    /// Message history, for replays older than the node's buffers (optional).
    pub history: Option<onlychat_store::Store>,
}

/// A running chat node.
pub struct Node {
    settings: NodeSettings,
    deps: NodeDeps,
    registry: Arc<Registry>,
    revoked: Arc<RevokedSet>,
    /// Cancelled when the drain begins: upgrades are refused and `/readyz` answers 503.
    shutdown: CancellationToken,
    /// Cancelled at the end of the drain window: every socket still open closes with 1012.
    closing: CancellationToken,
    next_conn_id: AtomicU64,
    /// Sockets open on this node, authenticated or not (the `--max-connections` cap).
    sockets: Arc<AtomicUsize>,
}

/// One socket's place under the connection cap; given back when dropped.
pub(crate) struct SocketSlot(Arc<AtomicUsize>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Node {
    /// Starts the node's background work: revocation listener, bus consumer (positioned before
    /// this returns), presence refresher.
    pub async fn start(
        settings: NodeSettings,
        deps: NodeDeps,
    ) -> Result<Arc<Self>, onlychat_bus::BusError> {
        let bus = deps.bus.clone();
        let partition_of = Box::new(move |room: &str| bus.partition_of(room));
        let limits = recent::RecentLimits {
            dedupe_window_ms: i64::try_from(settings.dedupe_window.as_millis())
                .unwrap_or(i64::MAX / 4),
            per_room: settings.replay_per_room,
        };
        let lookback = settings.dedupe_window;
        let registry = Arc::new(Registry::new(
            deps.bus.epoch().to_owned(),
            partition_of,
            limits,
        ));
        let revoked = Arc::new(RevokedSet::issued_from(settings.tokens_issued_from));
        let node = Arc::new(Self {
            settings,
            deps,
            registry: registry.clone(),
            revoked,
            shutdown: CancellationToken::new(),
            closing: CancellationToken::new(),
            next_conn_id: AtomicU64::new(1),
            sockets: Arc::new(AtomicUsize::new(0)),
        });
        tokio::spawn(watch_revocations(node.clone()));
        tokio::spawn(refresh_presence(node.clone()));
        node.deps.bus.start_consuming(registry, lookback).await?;
        Ok(node)
    }

    /// Mounts `/ws` on an actix app.
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()))
            .route("/ws", web::get().to(upgrade::ws));
    }

    /// Begins the drain: new upgrades are refused and `/readyz` turns 503 at once; the open
    /// sockets close with 1012 in random order, evenly spread over `window`, so their clients
    /// do not all reconnect in the same instant. Sockets still open when the window ends
    /// (those that were authenticating when it began) close then. Returns how many sockets the
    /// drain spreads.
    pub fn drain(self: &Arc<Self>, window: Duration) -> usize {
        self.shutdown.cancel();
        let mut conns = self.registry.connections();
        rand::seq::SliceRandom::shuffle(conns.as_mut_slice(), &mut rand::rng());
        let count = conns.len();
        if count == 0 {
            self.closing.cancel();
            return 0;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(DRAIN_TICK);
            let mut closed = 0;
            while closed < count {
                tick.tick().await;
                let elapsed = start.elapsed().as_secs_f64();
                let due = if window.is_zero() {
                    count
                } else {
                    ((elapsed / window.as_secs_f64()) * count as f64).ceil() as usize
                };
                for conn in &conns[closed..due.min(count)] {
                    conn.kill
                        .send_replace(Some(onlychat_protocol::close::GOING_AWAY_RESTART));
                }
                closed = closed.max(due.min(count));
            }
            tokio::time::sleep_until(start + window).await;
            node.closing.cancel();
        });
        count
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Rebuilds the dedupe window from messages stored before this start (standalone).
    pub fn remember(&self, messages: Vec<onlychat_protocol::ChatMessage>) {
        self.registry.remember(messages);
    }

    /// Open sockets on this node.
    pub fn connection_count(&self) -> usize {
        self.registry.connection_count()
    }

    /// Flushes the bus producer within `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), onlychat_bus::BusError> {
        self.deps.bus.flush(timeout).await
    }

    /// The sessions this node knows to have ended (kept up to date by its revocation watcher),
    /// for an API served in the same process.
    pub fn revoked_sessions(&self) -> Arc<RevokedSet> {
        self.revoked.clone()
    }

    /// The close code of a token's session if it no longer stands: revoked (the in-memory set
    /// fed by the session store), or issued before `tokens_issued_from`.
    pub(crate) fn revocation_of(&self, claims: &onlychat_auth::Claims) -> Option<u16> {
        self.revoked.code_for_token(claims)
    }

    /// A place for one more socket, or `None` when the node is full.
    pub(crate) fn claim_socket(&self) -> Option<SocketSlot> {
        let cap = self.settings.max_connections;
        let taken = self.sockets.fetch_add(1, Ordering::AcqRel);
        let slot = SocketSlot(self.sockets.clone());
        (cap == 0 || taken < cap).then_some(slot)
    }

    fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// How often the drain closes the sockets whose turn has come.
const DRAIN_TICK: Duration = Duration::from_millis(20);

/// Applies every revocation: remember it, and close that session's sockets here.
async fn watch_revocations(node: Arc<Node>) {
    let mut feed = node.deps.sessions.revocations();
    loop {
        match feed.recv().await {
            Ok(revocation) => {
                metrics::counter!("onlychat_revocations_total", "code" => revocation.code.to_string())
                    .increment(1);
                node.revoked.insert(&revocation);
                let closed = node
                    .registry
                    .close_session(&revocation.sid, revocation.code);
                if closed > 0 {
                    tracing::info!(
                        code = revocation.code,
                        closed,
                        "closed the sockets of a revoked session"
                    );
                    metrics::counter!("onlychat_evictions_total").increment(closed as u64);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    missed = n,
                    "revocation feed lagged; some sessions may stay open"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keeps this node's presence entries alive while their sockets are.
async fn refresh_presence(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.settings.heartbeat);
    loop {
        tick.tick().await;
        node.deps
            .presence
            .refresh(node.registry.memberships())
            .await;
    }
}
