//! A worker process: opens its slice of the plan's connections, says `ready`, waits for the
//! coordinator's `go <unix ms>` on stdin, runs the measured phase and prints its outcome.
//! Every line it prints on stdout is one JSON [`Line`].

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use onlychat_auth::{JwtKeys, TokenRules};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{Cli, Scenario};
use crate::conn::{self, Fail, Ws};
use crate::exchange::exchange;
use crate::peer::Peer;
use crate::plan::{Plan, Role, Spec};
use crate::stats::{Counters, Line, Outcome, Ready};
use crate::{stamp, storm};

/// What every connection task of a worker shares.
pub struct Ctx {
    pub cli: Cli,
    pub peer: Peer,
    pub prefix: String,
    pub plan: Plan,
    keys: Option<JwtKeys>,
    pub counters: Counters,
    pub connects: Semaphore,
    /// HTTP base URL and one client per source address (login storm only; empty otherwise).
    pub http_base: String,
    pub http: Vec<reqwest::Client>,
    /// When the coordinator said `stop` (publishing ends then; the drain still runs).
    pub stop: watch::Sender<Option<Instant>>,
}

impl Ctx {
    pub fn new(cli: Cli, prefix: String) -> anyhow::Result<Self> {
        let peer = Peer {
            kind: cli.common.peer,
            pusher_key: cli.common.pusher_key.clone(),
            pusher_secret: cli.common.pusher_secret.clone(),
        };
        let keys = match &cli.common.jwt_secret {
            Some(secret) => Some(
                JwtKeys::hs256(
                    secret.as_bytes(),
                    TokenRules {
                        issuer: cli.common.jwt_issuer.clone(),
                        audience: cli.common.jwt_audience.clone(),
                        ttl: cli.common.token_ttl,
                        max_lifetime: cli.common.token_ttl,
                    },
                )
                .context("--jwt-secret")?,
            ),
            None => None,
        };
        let http = match cli.scenario {
            Scenario::LoginStorm { .. } => (0..usize::from(cli.common.source_addrs))
                .map(|n| {
                    reqwest::Client::builder()
                        .local_address(conn::source_addr(n, cli.common.source_addrs))
                        .timeout(cli.common.connect_timeout)
                        .build()
                        .unwrap_or_default()
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Ctx {
            http_base: cli.common.http_base(),
            http,
            plan: Plan::new(&cli.scenario),
            connects: Semaphore::new(cli.common.connect_concurrency.max(1)),
            peer,
            prefix,
            keys,
            counters: Counters::default(),
            stop: watch::Sender::new(None),
            cli,
        })
    }

    /// The HTTP client of connection `index`'s source address (login storm).
    pub fn http_client(&self, index: usize) -> &reqwest::Client {
        &self.http[index % self.http.len()]
    }

    /// A token for connection `index` (user `lg-<index>`, its own session).
    pub fn mint(&self, index: usize) -> Option<String> {
        let keys = self.keys.as_ref()?;
        let user = format!("{}-u{index}", self.prefix);
        let sid = format!("{}-s{index}", self.prefix);
        keys.issue(&user, &user, &sid, &[])
            .ok()
            .map(|(token, _)| token)
    }

    pub fn channels(&self, spec: &Spec) -> Vec<String> {
        match spec.role {
            Role::Holder { join: false } => Vec::new(),
            _ => vec![self.peer.channel(&self.prefix, spec.room)],
        }
    }

    /// Connects, authenticates and subscribes one connection, within --connect-timeout;
    /// returns the socket and onlychat's `joined` frames.
    pub async fn connect(
        &self,
        spec: &Spec,
        token: Option<&str>,
    ) -> Result<(Ws, Vec<String>), Fail> {
        self.connect_to(spec, token, &self.channels(spec)).await
    }

    /// Like [`Ctx::connect`], subscribing to `channels` only (none: authenticate and stop).
    pub async fn connect_to(
        &self,
        spec: &Spec,
        token: Option<&str>,
        channels: &[String],
    ) -> Result<(Ws, Vec<String>), Fail> {
        let _permit = self
            .connects
            .acquire()
            .await
            .map_err(|_| Fail::new("shutdown"))?;
        let urls = &self.cli.common.urls;
        let url = self.peer.url(&urls[spec.index % urls.len()]);
        let source = conn::source_addr(spec.index, self.cli.common.source_addrs);
        let deadline = Instant::now() + self.cli.common.connect_timeout;
        let attempt = async {
            let mut ws = conn::open(&url, source, self.peer.header_token(token)).await?;
            let joined = self
                .peer
                .establish(&mut ws, token, channels, deadline)
                .await?;
            Ok((ws, joined))
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .map_err(|_| Fail::new("timeout"))?
    }
}

pub fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    if let Ok(text) = serde_json::to_string(line) {
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

pub async fn run(cli: Cli, prefix: String, worker: usize, workers: usize) -> anyhow::Result<()> {
    // Held for the whole run: a Ctrl-C reaches the whole process group, and the coordinator
    // turns it into `stop` (see wait_for_stop).
    let _signals = crate::coordinator::ignore_signals()?;
    let ctx = Arc::new(Ctx::new(cli, prefix)?);
    let specs = ctx.plan.slice(worker, workers);
    let (ready, conns) = match &ctx.cli.scenario {
        Scenario::LoginStorm { .. } => (storm::register_users(&ctx, &specs).await, Vec::new()),
        _ => connect_all(&ctx, specs.clone()).await,
    };
    emit(&Line::Ready(ready));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let start = wait_for_go(&mut stdin).await?;
    tokio::spawn(wait_for_stop(ctx.clone(), stdin));
    let progress = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                emit(&Line::Progress(ctx.counters.progress()));
            }
        }
    });
    let outcome = match &ctx.cli.scenario {
        Scenario::ReconnectStorm { .. } => storm::reconnect(&ctx, conns, start).await,
        Scenario::LoginStorm { .. } => storm::login(&ctx, specs, start).await,
        _ => exchange(&ctx, conns, start).await,
    };
    progress.abort();
    emit(&Line::Outcome(outcome));
    Ok(())
}

async fn wait_for_go(lines: &mut Lines<BufReader<Stdin>>) -> anyhow::Result<Instant> {
    while let Some(line) = lines.next_line().await? {
        if let Some(ms) = line
            .strip_prefix("go ")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
        {
            let now_ms = stamp::now_ns() / 1_000_000;
            return Ok(Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms)));
        }
    }
    anyhow::bail!("the coordinator went away before `go`")
}

/// The coordinator's `stop` (it got SIGINT or SIGTERM), or its going away, ends publishing now.
async fn wait_for_stop(ctx: Arc<Ctx>, mut lines: Lines<BufReader<Stdin>>) {
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim() != "stop" => continue,
            _ => break,
        }
    }
    ctx.stop.send_replace(Some(Instant::now()));
}

/// A connection of the measured phase: its plan entry, socket and `joined` frames.
pub type Opened = (Spec, Ws, Vec<String>);

/// Opens every connection of the slice, at most --connect-concurrency at a time.
async fn connect_all(ctx: &Arc<Ctx>, specs: Vec<Spec>) -> (Ready, Vec<Opened>) {
    let began = Instant::now();
    let mut tasks = JoinSet::new();
    for spec in specs {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let token = ctx.mint(spec.index);
            (spec, ctx.connect(&spec, token.as_deref()).await)
        });
    }
    let mut ready = Ready::default();
    let mut conns = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        ready.attempted += 1;
        match joined {
            Ok((spec, Ok((ws, joined)))) => {
                ready.established += 1;
                ctx.counters.connected.fetch_add(1, Relaxed);
                conns.push((spec, ws, joined));
            }
            Ok((_, Err(fail))) => *ready.errors.entry(fail.0).or_default() += 1,
            Err(_) => *ready.errors.entry("task_panicked".into()).or_default() += 1,
        }
    }
    ready.connect_secs = began.elapsed().as_secs_f64();
    (ready, conns)
}

pub fn finish(ctx: &Ctx, mut outcome: Outcome) -> Outcome {
    let c = &ctx.counters;
    outcome.sent = c.sent.load(Relaxed);
    outcome.refused = c.refused.load(Relaxed);
    outcome.expected = c.expected.load(Relaxed);
    outcome.delivered = c.delivered.load(Relaxed);
    outcome.duplicated = c.duplicated.load(Relaxed);
    outcome.closed_early = c.closed_early.load(Relaxed);
    outcome.back = c.back.load(Relaxed);
    outcome.errors = c.errors();
    outcome.latency = c.latency_pairs();
    outcome.resume = c.resume();
    outcome
}
