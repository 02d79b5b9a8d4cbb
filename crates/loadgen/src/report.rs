//! The run's report: merged from the workers' outcomes, printed for people or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{self, Outcome, Ready, Resume};

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct Rss {
    pub pids: Vec<u32>,
    pub before_kib: u64,
    pub after_kib: u64,
    pub per_connection_kib: f64,
}

#[derive(Debug, Serialize)]
pub struct Storm {
    pub clients: u64,
    pub back: u64,
    /// From the common start until 99% of all clients were back; absent if fewer came back.
    pub time_to_99pct_ms: Option<f64>,
}

/// `--reconnect`: how clients came back after losing their socket, and their sends.
#[derive(Debug, Serialize)]
pub struct Reconnect {
    /// Times a client was back (every room joined again) after losing its socket.
    pub reconnects: u64,
    /// From the close (or drop) a client saw until it had joined every room again.
    pub time_ms: Option<Percentiles>,
    /// Connection attempts after a lost socket, in all and in the busiest second.
    pub attempts: u64,
    pub peak_attempts_per_sec: u64,
    /// Sends acknowledged (each once), written again after a lost socket or `unavailable`,
    /// and still unacknowledged at the end (each of those is also expected).
    pub acked: u64,
    pub resent: u64,
    pub unacked: u64,
    /// Deliveries first seen after a later message of their publisher (replays filling gaps).
    pub out_of_order: u64,
    /// Rejoins answered `recovered: false` although `since` was given.
    pub not_recovered: u64,
}

impl Reconnect {
    pub fn of(resume: &Resume) -> Self {
        Reconnect {
            reconnects: resume.reconnects,
            time_ms: percentiles(&resume.time),
            attempts: resume.attempts_by_second.values().sum(),
            peak_attempts_per_sec: resume.peak_attempts_per_sec(),
            acked: resume.acked,
            resent: resume.resent,
            unacked: resume.unacked,
            out_of_order: resume.out_of_order,
            not_recovered: resume.not_recovered,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub scenario: String,
    pub peer: String,
    pub urls: Vec<String>,
    pub workers: usize,
    pub duration_s: f64,
    pub connections: Ready,
    pub connect_per_sec: f64,
    pub server_rss: Option<Rss>,
    pub sent: u64,
    pub refused: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub closed_early: u64,
    pub still_open: u64,
    pub sent_per_sec: f64,
    pub deliveries_per_sec: f64,
    /// Send-to-deliver (broadcast, dm) or time until back (storms), milliseconds.
    pub latency_ms: Option<Percentiles>,
    pub storm: Option<Storm>,
    pub reconnect: Option<Reconnect>,
    pub errors: BTreeMap<String, u64>,
}

pub fn percentiles(pairs: &[(u64, u64)]) -> Option<Percentiles> {
    let mut h = stats::histogram();
    stats::add_pairs(&mut h, pairs);
    if h.is_empty() {
        return None;
    }
    let ms = |micros: u64| micros as f64 / 1_000.0;
    Some(Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1_000.0,
    })
}

/// When 99% of `clients` were back, from the back-times of those that came back.
pub fn time_to_99pct(pairs: &[(u64, u64)], clients: u64) -> Option<f64> {
    let mut h = stats::histogram();
    stats::add_pairs(&mut h, pairs);
    let needed = (clients * 99).div_ceil(100);
    if needed == 0 || h.len() < needed {
        return None;
    }
    let quantile = needed as f64 / h.len() as f64;
    Some(h.value_at_quantile(quantile) as f64 / 1_000.0)
}

impl Report {
    /// Lost deliveries: expected but never counted (a server that over-delivers an `unavailable`
    /// send is not credited).
    pub fn settle(&mut self, outcome: &Outcome) {
        self.lost = outcome.expected.saturating_sub(outcome.delivered);
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} · {} · {} · {} worker(s)",
            self.label, self.scenario, self.peer, self.workers
        );
        let c = &self.connections;
        let _ = writeln!(
            out,
            "connections: {} of {} in {:.2}s ({:.0}/s)",
            c.established, c.attempted, c.connect_secs, self.connect_per_sec
        );
        if let Some(rss) = &self.server_rss {
            let _ = writeln!(
                out,
                "server RSS: {:.1} MiB -> {:.1} MiB, {:.2} KiB per connection",
                rss.before_kib as f64 / 1024.0,
                rss.after_kib as f64 / 1024.0,
                rss.per_connection_kib
            );
        }
        if self.sent > 0 {
            let _ = writeln!(
                out,
                "messages: {} sent ({:.0}/s), {} refused; deliveries {} of {} expected ({:.0}/s), lost {}, duplicated {}",
                self.sent,
                self.sent_per_sec,
                self.refused,
                self.delivered,
                self.expected,
                self.deliveries_per_sec,
                self.lost,
                self.duplicated
            );
        }
        if let Some(storm) = &self.storm {
            let t99 = storm
                .time_to_99pct_ms
                .map_or("not reached".into(), |ms| format!("{ms:.0} ms"));
            let _ = writeln!(
                out,
                "storm: {} of {} back; 99% back after {t99}",
                storm.back, storm.clients
            );
        }
        if let Some(r) = &self.reconnect {
            let _ = writeln!(
                out,
                "reconnect: back {} times after a lost socket ({} attempts, at most {} in one second); sends acked {} of {} (resent {}, unacked {}); out of order {}, not recovered {}",
                r.reconnects,
                r.attempts,
                r.peak_attempts_per_sec,
                r.acked,
                self.sent.saturating_sub(self.refused),
                r.resent,
                r.unacked,
                r.out_of_order,
                r.not_recovered
            );
            if let Some(t) = &r.time_ms {
                let _ = writeln!(
                    out,
                    "close-to-rejoined ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} (n={})",
                    t.p50, t.p90, t.p99, t.max, t.count
                );
            }
        }
        if let Some(l) = &self.latency_ms {
            let what = if self.storm.is_some() {
                "time to back"
            } else {
                "send-to-deliver"
            };
            let _ = writeln!(
                out,
                "{what} ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} (n={})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
        }
        let _ = writeln!(
            out,
            "sockets closed early: {}, open at the end: {}",
            self.closed_early, self.still_open
        );
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let _ = writeln!(out, "errors: {}", list.join(" "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_99pct_needs_99_percent_of_all_clients_back() {
        let pairs: Vec<(u64, u64)> = (1..=100).map(|ms| (ms * 1_000, 1)).collect();
        assert_eq!(time_to_99pct(&pairs, 100).map(|ms| ms.round()), Some(99.0));
        assert_eq!(time_to_99pct(&pairs[..98], 100), None);
        assert_eq!(time_to_99pct(&pairs, 101).map(|ms| ms.round()), Some(100.0));
    }
}
