//! `login-storm` and `reconnect-storm`: everyone comes back at once; each client retries (with
//! jittered backoff, honouring `Retry-After`) until it is back or the deadline passes. The
//! latency histogram holds each client's time from the common start until it was back.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use crate::cli::Scenario;
use crate::conn::{Fail, Ws, backoff};
use crate::plan::Spec;
use crate::stats::{Outcome, Ready};
use crate::worker::{Ctx, Opened, finish};

fn password(ctx: &Ctx) -> &str {
    match &ctx.cli.scenario {
        Scenario::LoginStorm { password, .. } => password,
        _ => "",
    }
}

fn username(ctx: &Ctx, index: usize) -> String {
    format!("{}u{index}", ctx.prefix)
}

/// Registers the storm's users before the clock starts (argon2 makes this slow, not timed).
pub async fn register_users(ctx: &Arc<Ctx>, specs: &[Spec]) -> Ready {
    let began = Instant::now();
    let mut tasks = JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    for spec in specs {
        let (ctx, permits, index) = (ctx.clone(), permits.clone(), spec.index);
        tasks.spawn(async move {
            let _permit = permits.acquire().await.ok()?;
            let body = json!({"username": username(&ctx, index), "password": password(&ctx)});
            let response = ctx
                .http_client(index)
                .post(format!("{}/v1/auth/register", ctx.http_base))
                .json(&body)
                .send()
                .await;
            match response.map(|r| r.status().as_u16()) {
                Ok(201 | 409) => None,
                Ok(status) => Some(format!("register_http_{status}")),
                Err(_) => Some("register_io".to_owned()),
            }
        });
    }
    let mut ready = Ready::default();
    while let Some(result) = tasks.join_next().await {
        ready.attempted += 1;
        match result {
            Ok(None) => ready.established += 1,
            Ok(Some(kind)) => *ready.errors.entry(kind).or_default() += 1,
            Err(_) => *ready.errors.entry("task_panicked".into()).or_default() += 1,
        }
    }
    ready.connect_secs = began.elapsed().as_secs_f64();
    ready
}

/// A failed attempt: why, and how long the server asked us to wait.
struct Retry(Fail, Option<Duration>);

async fn log_in(ctx: &Ctx, index: usize) -> Result<String, Retry> {
    let body =
        json!({"username": username(ctx, index), "password": password(ctx), "device": "loadgen"});
    let response = ctx
        .http_client(index)
        .post(format!("{}/v1/auth/login", ctx.http_base))
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            Retry(
                Fail::new(if e.is_timeout() {
                    "login_timeout"
                } else {
                    "login_io"
                }),
                None,
            )
        })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(Duration::from_secs);
    if status != 200 {
        return Err(Retry(Fail(format!("login_http_{status}")), retry_after));
    }
    let pair: Value = response
        .json()
        .await
        .map_err(|_| Retry(Fail::new("login_body"), None))?;
    pair["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or(Retry(Fail::new("login_body"), None))
}

/// Retries `attempt` until it succeeds or `deadline`; records the time back.
async fn until_back<F, Fut>(
    ctx: &Ctx,
    start: Instant,
    deadline: Instant,
    mut attempt: F,
) -> Option<Ws>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Ws, Retry>>,
{
    let c = &ctx.counters;
    for n in 0.. {
        if Instant::now() >= deadline {
            c.error("not_back_by_deadline");
            return None;
        }
        match attempt().await {
            Ok(ws) => {
                c.back.fetch_add(1, Relaxed);
                c.record_latency(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                return Some(ws);
            }
            Err(Retry(fail, retry_after)) => {
                c.error(&fail.0);
                let wait = retry_after.unwrap_or_else(|| backoff(n));
                sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
            }
        }
    }
    None
}

/// Once every client is back (or gave up at the deadline), holds the sockets a second longer,
/// so the server still carries them all at once, then closes them.
async fn collect(ctx: &Ctx, mut tasks: JoinSet<Option<Ws>>) -> Outcome {
    let mut open = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(Some(ws)) = result {
            open.push(ws);
        }
    }
    sleep(Duration::from_secs(1)).await;
    let outcome = Outcome {
        still_open: open.len() as u64,
        ..Outcome::default()
    };
    drop(open);
    finish(ctx, outcome)
}

/// Every connected client drops its socket at `start` and reconnects and resubscribes.
pub async fn reconnect(ctx: &Arc<Ctx>, conns: Vec<Opened>, start: Instant) -> Outcome {
    let deadline = start + ctx.cli.common.duration;
    sleep_until(start).await;
    let mut tasks = JoinSet::new();
    for (spec, ws, _) in conns {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            drop(ws);
            let token = ctx.mint(spec.index);
            let ctx2 = ctx.clone();
            until_back(&ctx, start, deadline, move || {
                let (ctx, token) = (ctx2.clone(), token.clone());
                async move {
                    ctx.connect(&spec, token.as_deref())
                        .await
                        .map(|(ws, _)| ws)
                        .map_err(|f| Retry(f, None))
                }
            })
            .await
        });
    }
    collect(ctx, tasks).await
}

/// Every registered user logs in at `start` and opens a socket with the token it got.
pub async fn login(ctx: &Arc<Ctx>, specs: Vec<Spec>, start: Instant) -> Outcome {
    let deadline = start + ctx.cli.common.duration;
    sleep_until(start).await;
    let mut tasks = JoinSet::new();
    for spec in specs {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let ctx2 = ctx.clone();
            until_back(&ctx, start, deadline, move || {
                let ctx = ctx2.clone();
                async move {
                    let token = log_in(&ctx, spec.index).await?;
                    ctx.connect(&spec, Some(&token))
                        .await
                        .map(|(ws, _)| ws)
                        .map_err(|f| Retry(f, None))
                }
            })
            .await
        });
    }
    collect(ctx, tasks).await
}
