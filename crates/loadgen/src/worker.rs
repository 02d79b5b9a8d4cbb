//! A worker process: opens its slice of the plan's connections, says `ready`, waits for the
//! coordinator's `go <unix ms>` on stdin, runs the measured phase and prints its outcome.
//! Every line it prints on stdout is one JSON [`Line`].

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use onlychat_auth::{JwtKeys, TokenRules};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{Cli, Scenario};
use crate::conn::{self, Fail, Ws, send_text};
use crate::peer::{Incoming, Peer};
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

    fn channels(&self, spec: &Spec) -> Vec<String> {
        match spec.role {
            Role::Holder { join: false } => Vec::new(),
            _ => vec![self.peer.channel(&self.prefix, spec.room)],
        }
    }

    /// Connects, authenticates and subscribes one connection, within --connect-timeout.
    pub async fn connect(&self, spec: &Spec, token: Option<&str>) -> Result<Ws, Fail> {
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
            self.peer
                .establish(&mut ws, token, &self.channels(spec), deadline)
                .await?;
            Ok(ws)
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
    let ctx = Arc::new(Ctx::new(cli, prefix)?);
    let specs = ctx.plan.slice(worker, workers);
    let (ready, conns) = match &ctx.cli.scenario {
        Scenario::LoginStorm { .. } => (storm::register_users(&ctx, &specs).await, Vec::new()),
        _ => connect_all(&ctx, specs.clone()).await,
    };
    emit(&Line::Ready(ready));
    let start = wait_for_go().await?;
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

async fn wait_for_go() -> anyhow::Result<Instant> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
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

/// Opens every connection of the slice, at most --connect-concurrency at a time.
async fn connect_all(ctx: &Arc<Ctx>, specs: Vec<Spec>) -> (Ready, Vec<(Spec, Ws)>) {
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
            Ok((spec, Ok(ws))) => {
                ready.established += 1;
                ctx.counters.connected.fetch_add(1, Relaxed);
                conns.push((spec, ws));
            }
            Ok((_, Err(fail))) => *ready.errors.entry(fail.0).or_default() += 1,
            Err(_) => *ready.errors.entry("task_panicked".into()).or_default() += 1,
        }
    }
    ready.connect_secs = began.elapsed().as_secs_f64();
    (ready, conns)
}

/// The measured phase of `idle`, `broadcast` and `dm`: publishers publish for --duration,
/// everyone counts deliveries until --drain after that.
async fn exchange(ctx: &Arc<Ctx>, conns: Vec<(Spec, Ws)>, start: Instant) -> Outcome {
    let publish_until = start + ctx.cli.common.duration;
    let end = publish_until + ctx.cli.common.drain;
    let mut tasks = JoinSet::new();
    for (spec, ws) in conns {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let ws = drive(&ctx, spec, ws, start, publish_until, end).await?;
            conn::close(ws).await;
            Some(())
        });
    }
    let mut outcome = Outcome::default();
    while let Some(still_open) = tasks.join_next().await {
        if let Ok(Some(())) = still_open {
            outcome.still_open += 1;
        }
    }
    finish(ctx, outcome)
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
    outcome
}

/// One connection's measured phase; returns the socket if it was still open at `end`.
async fn drive(
    ctx: &Ctx,
    spec: Spec,
    mut ws: Ws,
    start: Instant,
    publish_until: Instant,
    end: Instant,
) -> Option<Ws> {
    let (rate, recipients) = match spec.role {
        Role::Publisher { rate, recipients } => (rate, recipients),
        Role::Pair { rate } => (rate, 1),
        _ => (0.0, 0),
    };
    let mut receiver = Receiver {
        counts: matches!(spec.role, Role::Member | Role::Pair { .. }),
        me: spec.index as u32,
        recipients,
        last_seq: HashMap::new(),
    };
    let channel = ctx.peer.channel(&ctx.prefix, spec.room);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    // Spread publishers over one interval so they do not fire in lockstep.
    let first = start
        + interval
            .map(|i| i.mul_f64((spec.index % 97) as f64 / 97.0))
            .unwrap_or_default();
    // Both timers live across iterations: a receiver handles thousands of frames a second.
    let (stop, next) = (sleep_until(end), sleep_until(first));
    tokio::pin!(stop, next);
    let mut seq = 0u64;
    let c = &ctx.counters;
    loop {
        let publishing = interval.is_some() && next.deadline() < publish_until;
        tokio::select! {
            () = &mut stop => return Some(ws),
            () = &mut next, if publishing => {
                seq += 1;
                let body = stamp::body(spec.index as u32, seq, ctx.plan.body_bytes);
                let frame = ctx.peer.publish(&channel, &body, &format!("{}-{seq}", spec.index), seq);
                if let Err(fail) = send_text(&mut ws, frame).await {
                    return lost(ctx, &fail);
                }
                c.sent.fetch_add(1, Relaxed);
                c.expected.fetch_add(recipients, Relaxed);
                let due = next.deadline() + interval.unwrap_or_default();
                next.as_mut().reset(due);
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => return lost(ctx, &conn::closed(close)),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return lost(ctx, &Fail::new("closed")),
                };
                if let Err(fail) = receiver.on_text(ctx, &mut ws, &text).await {
                    return lost(ctx, &fail);
                }
            }
        }
    }
}

/// What a connection does with the text frames it receives.
struct Receiver {
    /// Whether deliveries to this connection are counted (members and pairs).
    counts: bool,
    me: u32,
    /// Deliveries one of this connection's sends should make (0: it does not publish).
    recipients: u64,
    last_seq: HashMap<u32, u64>,
}

impl Receiver {
    async fn on_text(&mut self, ctx: &Ctx, ws: &mut Ws, text: &str) -> Result<(), Fail> {
        let c = &ctx.counters;
        match ctx.peer.classify(text) {
            Incoming::Ping(reply) => send_text(ws, reply.to_owned()).await?,
            Incoming::Error(code) => {
                c.error(&code);
                if self.recipients > 0 {
                    c.refused.fetch_add(1, Relaxed);
                    c.expected.fetch_sub(self.recipients, Relaxed);
                }
            }
            Incoming::Other => {}
        }
        if self.counts {
            count_deliveries(c, text, self.me, &mut self.last_seq);
        }
        Ok(())
    }
}

fn lost(ctx: &Ctx, fail: &Fail) -> Option<Ws> {
    ctx.counters.closed_early.fetch_add(1, Relaxed);
    ctx.counters.error(&fail.0);
    None
}

/// Counts each stamp from another publisher once: a sequence number at or below the last one
/// seen from that publisher is a duplicate (every system here keeps one publisher's order).
fn count_deliveries(c: &Counters, text: &str, me: u32, last_seq: &mut HashMap<u32, u64>) {
    let now = stamp::now_ns();
    stamp::find_all(text, |s| {
        if s.publisher == me {
            return;
        }
        let last = last_seq.entry(s.publisher).or_default();
        if s.seq <= *last {
            c.duplicated.fetch_add(1, Relaxed);
        } else {
            *last = s.seq;
            c.delivered.fetch_add(1, Relaxed);
            c.record_latency(now.saturating_sub(s.sent_ns) / 1_000);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_count_as_duplicates_and_own_messages_are_ignored() {
        let c = Counters::default();
        let mut last = HashMap::new();
        for (publisher, seq) in [(1, 1), (1, 2), (1, 2), (2, 1), (9, 1), (1, 1)] {
            count_deliveries(&c, &stamp::body(publisher, seq, 0), 9, &mut last);
        }
        assert_eq!(c.delivered.load(Relaxed), 3);
        assert_eq!(c.duplicated.load(Relaxed), 2);
    }
}
