//! Each subcommand: build its parts from settings, then serve or do its one job.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use onlychat_auth::session::SessionTtls;
use onlychat_auth::{
    JwtKeys, Limit, MemoryLimiter, MemorySessions, RedisSessions, RevokedSet, SessionStore,
    TokenRules,
};
use onlychat_bus::{Bus, KafkaBus, KafkaSettings, MemoryBus};
use onlychat_chat_node::{Node, NodeDeps, NodeSettings, Presence};
use onlychat_gateway::{Gateway, LoginLimits};
use onlychat_store::Store;
use rand::RngCore;

use crate::ConfigError;
use crate::config::{
    Command, GatewayArgs, HistoryArgs, KafkaArgs, LoginLimitArgs, NodeArgs, ServeArgs, SocketArgs,
    StandaloneArgs, TokenArgs, UserCommand, WriterArgs,
};
use crate::history::{self, StoreJournal};
use crate::serve::{self, Parts};

const GATEWAY_LISTEN: &str = "127.0.0.1:8080";
const NODE_LISTEN: &str = "127.0.0.1:8081";
const HISTORY_LISTEN: &str = "127.0.0.1:8082";

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Standalone(args) => standalone(args).await,
        Command::Gateway(args) => gateway(args).await,
        Command::Node(args) => node(args).await,
        Command::History(args) => history_only(args).await,
        Command::Migrate(args) => {
            connect_store(&args.database_url).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::User {
            command: UserCommand::Promote { name, db },
        } => {
            let store = connect_store(&db.url()).await?;
            store
                .grant_role(&name, "admin")
                .await
                .with_context(|| format!("cannot promote {name}"))?;
            println!("{name} is now an admin (effective at their next login or refresh)");
            Ok(())
        }
    }
}

fn config_error(message: impl Into<String>) -> anyhow::Error {
    ConfigError(message.into()).into()
}

fn node_id(serve: &ServeArgs) -> String {
    serve.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "onlychat".into());
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::rng().next_u32() & 0xffff
        )
    })
}

fn ttls(tokens: &TokenArgs) -> SessionTtls {
    SessionTtls {
        access: tokens.access_ttl,
        refresh: tokens.refresh_ttl,
        reuse_grace: tokens.refresh_reuse_grace,
    }
}

fn login_limits(args: &LoginLimitArgs) -> LoginLimits {
    LoginLimits {
        per_user: Limit {
            rate: args.login_rate_user,
            burst: args.login_burst_user,
        },
        per_ip: Limit {
            rate: args.login_rate_ip,
            burst: args.login_burst_ip,
        },
    }
}

fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| config_error(format!("{flag}: cannot read {}: {e}", path.display())))
}

/// The token keys: HS256 from `secret`, or EdDSA/RS256 from the PEM files.
fn keys(tokens: &TokenArgs, secret: Option<Vec<u8>>) -> anyhow::Result<JwtKeys> {
    let rules = TokenRules {
        issuer: tokens.jwt_issuer.clone(),
        audience: tokens.jwt_audience.clone(),
        ttl: tokens.access_ttl,
        max_lifetime: tokens.jwt_max_lifetime.max(tokens.access_ttl),
    };
    if tokens.jwt_algorithm == "HS256" {
        let secret = secret.ok_or_else(|| {
            config_error(
                "--jwt-secret (ONLYCHAT_JWT_SECRET) is required for HS256 (at least 32 bytes)",
            )
        })?;
        return JwtKeys::hs256(&secret, rules)
            .map_err(|e| config_error(format!("--jwt-secret (ONLYCHAT_JWT_SECRET): {e}")));
    }
    let private = match &tokens.jwt_key {
        Some(path) => Some(read_pem("--jwt-key (ONLYCHAT_JWT_KEY)", path)?),
        None => None,
    };
    let publics = tokens
        .jwt_public_keys
        .iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| read_pem("--jwt-public-keys (ONLYCHAT_JWT_PUBLIC_KEYS)", p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    JwtKeys::asymmetric(&tokens.jwt_algorithm, private.as_deref(), &publics, rules).map_err(|e| {
        config_error(format!(
            "--jwt-algorithm {} with --jwt-key / --jwt-public-keys (ONLYCHAT_JWT_KEY / ONLYCHAT_JWT_PUBLIC_KEYS): {e}",
            tokens.jwt_algorithm
        ))
    })
}

/// The signing keys of a process that issues tokens (gateway, standalone).
fn signing_keys(tokens: &TokenArgs, secret: Option<Vec<u8>>) -> anyhow::Result<JwtKeys> {
    if tokens.jwt_algorithm != "HS256" && tokens.jwt_key.is_none() {
        return Err(config_error(format!(
            "--jwt-key (ONLYCHAT_JWT_KEY) is required to sign {} tokens",
            tokens.jwt_algorithm
        )));
    }
    keys(tokens, secret)
}

fn configured_secret(tokens: &TokenArgs) -> Option<Vec<u8>> {
    tokens.jwt_secret.clone().map(String::into_bytes)
}

async fn connect_store(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url)
        .await
        .context("cannot connect to the database")?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(store)
}

fn node_settings(serve: &ServeArgs, socket: &SocketArgs) -> NodeSettings {
    NodeSettings {
        node_id: node_id(serve),
        heartbeat: socket.heartbeat_interval,
        auth_timeout: socket.auth_timeout,
        max_frame_bytes: usize::try_from(socket.max_frame_bytes).unwrap_or(65_536),
        max_rooms_per_connection: match socket.max_rooms {
            0 => usize::MAX,
            n => n,
        },
        send_rate: socket.send_rate,
        send_burst: socket.send_burst,
        max_connections: socket.max_connections,
        max_upgrade_headers: socket.max_upgrade_headers,
        max_upgrade_header_bytes: socket.max_upgrade_header_bytes,
        fault_injection: socket.fault_injection,
        outbound_queue: usize::try_from(socket.outbound_queue).unwrap_or(1024),
        allowed_origins: serve::allowed_origins(serve),
        dedupe_window: socket.delivery.dedupe_window,
        replay_per_room: socket.delivery.replay_buffer,
        replay_max: socket.delivery.replay_max,
        ..NodeSettings::default()
    }
}

/// Standalone keeps its JWT secret in the data dir, so restarts keep tokens valid.
fn standalone_secret(data_dir: &Path, tokens: &TokenArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &tokens.jwt_secret {
        return Ok(secret.clone().into_bytes());
    }
    let path = data_dir.join("jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().as_bytes().to_vec());
    }
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    std::fs::write(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    restrict_permissions(&path)?;
    Ok(secret.into_bytes())
}

/// Most stored messages standalone reads back at start to rebuild its dedupe window.
const STANDALONE_WARM_MAX: u32 = 200_000;

/// The epoch of standalone's log, kept in the data dir beside the database.
fn standalone_epoch(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("log-epoch");
    if let Ok(epoch) = std::fs::read_to_string(&path) {
        return Ok(epoch.trim().to_owned());
    }
    let epoch = format!("standalone-{}", uuid::Uuid::now_v7());
    std::fs::write(&path, &epoch).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(epoch)
}

fn restrict_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let listener = serve::Listener::new(&args.serve, GATEWAY_LISTEN)?;
    std::fs::create_dir_all(&args.data.data_dir).with_context(|| {
        format!(
            "cannot create the data dir {}",
            args.data.data_dir.display()
        )
    })?;
    let secret = match args.tokens.jwt_algorithm.as_str() {
        "HS256" => Some(standalone_secret(&args.data.data_dir, &args.tokens)?),
        _ => None,
    };
    let keys = signing_keys(&args.tokens, secret)?;
    let store = connect_store(&args.data.url()).await?;
    let sessions: Arc<dyn SessionStore> = Arc::new(MemorySessions::new(
        ttls(&args.tokens),
        args.tokens.session_policy,
    ));
    // The in-process log is journaled in the database, so positions and the epoch survive
    // restarts; a new data dir (a new log) gets a new epoch.
    let epoch = standalone_epoch(&args.data.data_dir)?;
    let last = store
        .last_position(&epoch)
        .await
        .context("cannot read the message log")?;
    let journal = StoreJournal {
        store: store.clone(),
        epoch: epoch.clone(),
        window: args.socket.delivery.dedupe_window,
    };
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::journaled(last, &epoch, Arc::new(journal)));
    // Resends of messages stored before this start must still be recognised.
    let window =
        i64::try_from(args.socket.delivery.dedupe_window.as_millis()).unwrap_or(i64::MAX / 4);
    let recent = store
        .messages_since(
            &epoch,
            chrono::Utc::now().timestamp_millis() - window,
            STANDALONE_WARM_MAX,
        )
        .await
        .context("cannot read the message log")?;
    let deps = NodeDeps {
        bus,
        sessions: sessions.clone(),
        keys: keys.clone(),
        presence: Presence::Local,
        history: Some(store.clone()),
    };
    // Sessions live in this process's memory: no token issued before this start stands. `iat`
    // is in whole seconds, so start serving only once a new second has begun: every token of
    // an earlier process is then older than `from`, every token of this one is not.
    let from = chrono::Utc::now().timestamp() + 1;
    let wait_ms = (from * 1000 - chrono::Utc::now().timestamp_millis()).max(0);
    tokio::time::sleep(std::time::Duration::from_millis(wait_ms.unsigned_abs())).await;
    let settings = NodeSettings {
        tokens_issued_from: Some(from),
        ..node_settings(&args.serve, &args.socket)
    };
    crate::telemetry::enable_chat_traces(&settings.node_id);
    crate::telemetry::zero_series(crate::telemetry::NODE_SERIES);
    let node = Node::start(settings, deps).await?;
    node.remember(recent);
    // One process, one set of ended sessions: the gateway checks tokens against the node's.
    let gateway = Arc::new(Gateway {
        store,
        sessions,
        keys,
        refresh_ttl: args.tokens.refresh_ttl,
        epoch,
        limiter: Arc::new(MemoryLimiter::default()),
        login_limits: login_limits(&args.limits),
        revoked: node.revoked_sessions(),
    });
    tracing::info!(data_dir = %args.data.data_dir.display(), "standalone: gateway and chat node in one process");
    serve::run(
        listener,
        Parts {
            gateway: Some(gateway),
            node: Some(node),
        },
    )
    .await
}

async fn redis_sessions(
    args: &crate::config::RedisArgs,
    tokens: &TokenArgs,
) -> anyhow::Result<Arc<RedisSessions>> {
    RedisSessions::connect(
        &args.redis_url,
        &args.redis_key_prefix,
        ttls(tokens),
        tokens.session_policy,
    )
    .await
    .with_context(|| "cannot connect to Redis (--redis-url)")
}

async fn kafka(args: &KafkaArgs, node_id: String) -> anyhow::Result<Arc<KafkaBus>> {
    // Setting up waits for the brokers (up to a minute); say so, or a pod's log stays empty.
    tracing::info!(brokers = %args.kafka_brokers, topic = %args.kafka_topic, "connecting to Kafka");
    let bus = KafkaBus::connect(KafkaSettings {
        brokers: args.kafka_brokers.clone(),
        topic: args.kafka_topic.clone(),
        partitions: args.kafka_partitions,
        produce_timeout: args.kafka_produce_timeout,
        node_id,
    })
    .await
    .context("cannot set up Kafka (--kafka-brokers)")?;
    Ok(Arc::new(bus))
}

/// Starts the history writer in the background.
fn spawn_history_writer(
    bus: Arc<KafkaBus>,
    store: Store,
    writer: &WriterArgs,
) -> anyhow::Result<()> {
    crate::telemetry::zero_series(crate::telemetry::WRITER_SERIES);
    let reader = bus
        .group_reader(&writer.history_group)
        .context("cannot join the history consumer group")?;
    let batch = usize::try_from(writer.history_batch).unwrap_or(500);
    tokio::spawn(history::run(
        bus,
        reader,
        store,
        batch,
        writer.dedupe_window,
    ));
    Ok(())
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let listener = serve::Listener::new(&args.serve, GATEWAY_LISTEN)?;
    let keys = signing_keys(&args.tokens, configured_secret(&args.tokens))?;
    let store = connect_store(&args.database_url).await?;
    let sessions = redis_sessions(&args.redis, &args.tokens).await?;
    let bus = kafka(&args.kafka, node_id(&args.serve)).await?;
    if args.history_writer == "embedded" {
        spawn_history_writer(bus.clone(), store.clone(), &args.writer)?;
    }
    let epoch = bus.epoch().to_owned();
    let gateway = Arc::new(Gateway {
        store,
        limiter: Arc::new(sessions.limiter()),
        sessions,
        keys,
        refresh_ttl: args.tokens.refresh_ttl,
        epoch,
        login_limits: login_limits(&args.limits),
        revoked: Arc::new(RevokedSet::default()),
    });
    gateway.watch_revocations();
    serve::run(
        listener,
        Parts {
            gateway: Some(gateway),
            node: None,
        },
    )
    .await
}

async fn history_only(args: HistoryArgs) -> anyhow::Result<()> {
    let listener = serve::Listener::new(&args.serve, HISTORY_LISTEN)?;
    let store = connect_store(&args.database_url).await?;
    let bus = kafka(&args.kafka, node_id(&args.serve)).await?;
    spawn_history_writer(bus, store, &args.writer)?;
    serve::run(listener, Parts::default()).await
}

async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let listener = serve::Listener::new(&args.serve, NODE_LISTEN)?;
    // A send is answered within twice the produce timeout: the broker's ack, then reading it back.
    let keys = keys(&args.tokens, configured_secret(&args.tokens))?;
    let settings = NodeSettings {
        read_back_timeout: args.kafka.kafka_produce_timeout,
        ..node_settings(&args.serve, &args.socket)
    };
    let sessions = redis_sessions(&args.redis, &args.tokens).await?;
    let bus = kafka(&args.kafka, settings.node_id.clone()).await?;
    let history = match &args.database_url {
        Some(url) => Some(
            Store::connect(url)
                .await
                .context("cannot connect to the history database (--database-url)")?,
        ),
        None => None,
    };
    // Presence shares the session store's connection: its short timeouts and keepalive make a
    // join during a Redis outage fail fast instead of waiting out the crate's retries.
    let presence = Presence::Redis {
        conn: sessions.connection(),
        prefix: args.redis.redis_key_prefix.clone(),
        node_id: settings.node_id.clone(),
        ttl: settings.heartbeat * 3,
    };
    tracing::info!(node_id = %settings.node_id, partitions = bus.partitions(), "chat node starting");
    let deps = NodeDeps {
        bus,
        sessions,
        keys,
        presence,
        history,
    };
    crate::telemetry::enable_chat_traces(&settings.node_id);
    crate::telemetry::zero_series(crate::telemetry::NODE_SERIES);
    let node = Node::start(settings, deps).await?;
    serve::run(
        listener,
        Parts {
            gateway: None,
            node: Some(node),
        },
    )
    .await
}
