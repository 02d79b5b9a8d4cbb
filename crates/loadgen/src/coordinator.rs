//! The coordinator: starts the worker processes (this same binary, told its slice through
//! [`WORKER_ENV`]), waits until all are connected, reads the server's RSS, starts everyone on
//! the same clock, shows a live progress line on a terminal, and merges the outcomes.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{Cli, PeerKind, Scenario};
use crate::plan::Plan;
use crate::report::{self, Reconnect, Report, Rss, Storm};
use crate::stamp;
use crate::stats::{Line, Outcome, Progress, Ready};

pub const WORKER_ENV: &str = "ONLYCHAT_LOADGEN_WORKER";
pub const PREFIX_ENV: &str = "ONLYCHAT_LOADGEN_PREFIX";
/// Sockets per worker process when --workers is 0 (a process may hold 20,000 open files).
const SOCKETS_PER_WORKER: usize = 15_000;

fn check(cli: &Cli) -> anyhow::Result<()> {
    let c = &cli.common;
    let login_storm = matches!(cli.scenario, Scenario::LoginStorm { .. });
    if login_storm && c.peer != PeerKind::Onlychat {
        bail!("login-storm needs --peer onlychat (the other servers have no login endpoint)");
    }
    if !login_storm
        && matches!(
            c.peer,
            PeerKind::Onlychat | PeerKind::Centrifugo | PeerKind::Socketio
        )
        && c.jwt_secret.is_none()
    {
        bail!(
            "--jwt-secret (or ONLYCHAT_LOADGEN_JWT_SECRET) is needed to mint access tokens for --peer {:?}",
            c.peer
        );
    }
    if c.urls.is_empty() {
        bail!("--url needs at least one ws:// URL");
    }
    if cli.scenario.reconnect() && c.peer != PeerKind::Onlychat {
        bail!("--reconnect needs --peer onlychat (it resumes with `join` `since` and `ack`)");
    }
    Ok(())
}

/// SIGINT and SIGTERM: the first ends the measured phase early (the report still comes), a
/// second aborts. Workers leave both to the coordinator: a Ctrl-C reaches the whole group.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Workers ignore SIGINT and SIGTERM: the coordinator tells them to stop (or its going away,
/// which closes their stdin, does).
pub fn ignore_signals() -> anyhow::Result<Signals> {
    Signals::new()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn total_rss(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter()
        .map(|&pid| {
            rss_kib(pid).with_context(|| format!("cannot read the RSS of server pid {pid}"))
        })
        .sum()
}

fn spawn_worker(index: usize, workers: usize, prefix: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find this executable to start workers")?;
    Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(WORKER_ENV, format!("{index}/{workers}"))
        .env(PREFIX_ENV, prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a worker process")
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    check(&cli)?;
    let prefix = cli
        .common
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("lg{:04x}", rand::random::<u16>()));
    let plan = Plan::new(&cli.scenario);
    let total = plan.specs.len();
    let workers = match cli.common.workers {
        0 => total.div_ceil(SOCKETS_PER_WORKER).max(1),
        n => n,
    };
    let pids = &cli.common.server_pids;
    let rss_before = total_rss(pids)?;
    let mut signals = Signals::new()?;

    let (lines_tx, mut lines) = mpsc::channel::<(usize, Option<Line>)>(1024);
    let mut children = Vec::new();
    for index in 0..workers {
        let mut child = spawn_worker(index, workers, &prefix)?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(text)) = reader.next_line().await {
                match serde_json::from_str::<Line>(&text) {
                    Ok(line) => {
                        let _ = tx.send((index, Some(line))).await;
                    }
                    Err(e) => eprintln!(
                        "onlychat-loadgen: worker {index} said something unreadable ({e}): {text:.200}"
                    ),
                }
            }
            let _ = tx.send((index, None)).await;
        });
        children.push(child);
    }
    drop(lines_tx);

    let mut live = LiveLine::new(cli.scenario.name());
    let mut ready = Ready::default();
    let mut ready_count = 0;
    while ready_count < workers {
        let line = tokio::select! {
            line = lines.recv() => line,
            () = signals.recv() => bail!("interrupted before the measured phase"),
        };
        match line {
            Some((_, Some(Line::Ready(r)))) => {
                ready.merge(&r);
                ready_count += 1;
            }
            Some((w, Some(Line::Progress(p)))) => live.update(w, p),
            Some((w, None)) => bail!("worker {w} exited before it was ready"),
            Some((_, Some(Line::Outcome(_)))) | None => bail!("the workers stopped unexpectedly"),
        }
    }
    live.phase(&format!(
        "connected {} of {}",
        ready.established, ready.attempted
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = total_rss(pids)?;

    let start_ms = stamp::now_ns() / 1_000_000 + 500;
    let start = Instant::now() + Duration::from_millis(500);
    for child in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            stdin
                .write_all(format!("go {start_ms}\n").as_bytes())
                .await
                .context("telling a worker to go")?;
            stdin.flush().await?;
        }
    }
    live.phase(&format!("{} running", cli.scenario.name()));
    let mut outcome = Outcome::default();
    let mut finished = vec![false; workers];
    let mut stopped_at = None;
    while finished.contains(&false) {
        let line = tokio::select! {
            line = lines.recv() => line,
            () = signals.recv() => {
                if stopped_at.is_some() {
                    bail!("second signal: stopped without a report");
                }
                stopped_at = Some(Instant::now());
                live.phase("stopping: publishing ends, deliveries are counted for --drain");
                for child in &mut children {
                    if let Some(stdin) = child.stdin.as_mut() {
                        let _ = stdin.write_all(b"stop\n").await;
                        let _ = stdin.flush().await;
                    }
                }
                continue;
            }
        };
        match line {
            Some((w, Some(Line::Outcome(o)))) => {
                outcome.merge(&o);
                finished[w] = true;
            }
            Some((w, Some(Line::Progress(p)))) => live.update(w, p),
            Some((w, None)) if !finished[w] => bail!("worker {w} exited without an outcome"),
            Some(_) => {}
            None => bail!("the workers stopped unexpectedly"),
        }
    }
    live.done();
    for mut child in children {
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }

    let established = ready.established.max(1);
    // A login storm's preparation registers users; it opens no socket to weigh.
    let opens_sockets = !matches!(cli.scenario, Scenario::LoginStorm { .. });
    let server_rss = (opens_sockets && !pids.is_empty()).then(|| Rss {
        pids: pids.clone(),
        before_kib: rss_before,
        after_kib: rss_after,
        per_connection_kib: rss_after.saturating_sub(rss_before) as f64 / established as f64,
    });
    // The measured phase is shorter than --duration if a signal stopped it.
    let secs = stopped_at
        .map_or(cli.common.duration, |at| {
            at.saturating_duration_since(start)
        })
        .min(cli.common.duration)
        .as_secs_f64()
        .max(1e-3);
    let storm = matches!(
        cli.scenario,
        Scenario::LoginStorm { .. } | Scenario::ReconnectStorm { .. }
    );
    let mut report = Report {
        label: cli
            .common
            .label
            .clone()
            .unwrap_or_else(|| format!("{:?}", cli.common.peer).to_lowercase()),
        scenario: cli.scenario.name().into(),
        peer: format!("{:?}", cli.common.peer).to_lowercase(),
        urls: cli.common.urls.clone(),
        workers,
        duration_s: secs,
        connect_per_sec: ready.established as f64 / ready.connect_secs.max(1e-9),
        connections: ready,
        server_rss,
        sent: outcome.sent,
        refused: outcome.refused,
        expected: outcome.expected,
        delivered: outcome.delivered,
        lost: 0,
        duplicated: outcome.duplicated,
        closed_early: outcome.closed_early,
        still_open: outcome.still_open,
        sent_per_sec: outcome.sent as f64 / secs,
        deliveries_per_sec: outcome.delivered as f64 / secs,
        latency_ms: report::percentiles(&outcome.latency),
        storm: storm.then(|| Storm {
            clients: total as u64,
            back: outcome.back,
            time_to_99pct_ms: report::time_to_99pct(&outcome.latency, total as u64),
        }),
        reconnect: cli
            .scenario
            .reconnect()
            .then(|| Reconnect::of(&outcome.resume)),
        errors: outcome.errors.clone(),
    };
    report.settle(&outcome);
    if cli.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

/// The progress line, redrawn once a second on a terminal (stderr); silent otherwise.
struct LiveLine {
    on: bool,
    phase: String,
    began: Instant,
    last_draw: Instant,
    by_worker: HashMap<usize, Progress>,
}

impl LiveLine {
    fn new(scenario: &str) -> Self {
        let now = Instant::now();
        LiveLine {
            on: std::io::stderr().is_terminal(),
            phase: format!("{scenario}: connecting"),
            began: now,
            last_draw: now,
            by_worker: HashMap::new(),
        }
    }

    /// A new phase: redrawn on a terminal; otherwise one plain line on stderr, so a script
    /// driving the generator can tell when the measured phase began.
    fn phase(&mut self, phase: &str) {
        self.phase = phase.to_owned();
        if !self.on {
            eprintln!(
                "onlychat-loadgen: [{:.1}s] {phase}",
                self.began.elapsed().as_secs_f64()
            );
        }
        self.draw();
    }

    fn update(&mut self, worker: usize, progress: Progress) {
        self.by_worker.insert(worker, progress);
        if self.last_draw.elapsed() >= Duration::from_millis(900) {
            self.draw();
        }
    }

    fn draw(&mut self) {
        self.last_draw = Instant::now();
        if !self.on {
            return;
        }
        let reconnects = self.by_worker.values().map(|p| p.reconnects).sum::<u64>();
        let reconnects = if reconnects > 0 {
            format!(" reconnects {reconnects}")
        } else {
            String::new()
        };
        let sum = |f: fn(&Progress) -> u64| self.by_worker.values().map(f).sum::<u64>();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{:>5.1}s] {}: connected {} sent {} delivered {} back {} errors {}{reconnects}",
            self.began.elapsed().as_secs_f64(),
            self.phase,
            sum(|p| p.connected),
            sum(|p| p.sent),
            sum(|p| p.delivered),
            sum(|p| p.back),
            sum(|p| p.errors),
        );
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.on {
            let _ = writeln!(std::io::stderr());
        }
    }
}
