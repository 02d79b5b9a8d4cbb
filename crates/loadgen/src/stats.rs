//! What a worker counts, the lines it reports to the coordinator, and how they merge.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Microseconds, 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Bounds are constants that `new_with_bounds` accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[allow(clippy::unwrap_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

/// A histogram as `(value, count)` pairs, to cross the process boundary.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value, count);
    }
}

/// Live counters of one worker, shared by its connection tasks.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub expected: AtomicU64,
    pub refused: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicated: AtomicU64,
    pub closed_early: AtomicU64,
    pub back: AtomicU64,
    /// `--reconnect`: sends acknowledged (once each), written again, still unacknowledged at
    /// the end; deliveries first seen after a higher seq of their publisher; rejoins that
    /// could not replay (`recovered: false`); clients back after losing their socket.
    pub acked: AtomicU64,
    pub resent: AtomicU64,
    pub unacked: AtomicU64,
    pub out_of_order: AtomicU64,
    pub not_recovered: AtomicU64,
    pub reconnects: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Option<Histogram<u64>>>,
    /// Close seen -> every room joined again, microseconds.
    reconnect_time: Mutex<Option<Histogram<u64>>>,
    /// Reconnection attempts by unix second (merged across workers: one clock).
    attempts: Mutex<BTreeMap<u64, u64>>,
}

impl Counters {
    pub fn error(&self, kind: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind.to_owned()).or_default() += 1;
        }
    }

    pub fn record_latency(&self, micros: u64) {
        if let Ok(mut h) = self.latency.lock() {
            h.get_or_insert_with(histogram)
                .saturating_record(micros.max(1));
        }
    }

    pub fn record_reconnect(&self, micros: u64) {
        self.reconnects.fetch_add(1, Relaxed);
        if let Ok(mut h) = self.reconnect_time.lock() {
            h.get_or_insert_with(histogram)
                .saturating_record(micros.max(1));
        }
    }

    pub fn reconnect_attempt(&self) {
        let second = crate::stamp::now_ns() / 1_000_000_000;
        if let Ok(mut attempts) = self.attempts.lock() {
            *attempts.entry(second).or_default() += 1;
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            connected: self.connected.load(Relaxed),
            sent: self.sent.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            back: self.back.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            errors: self.errors.lock().map(|e| e.values().sum()).unwrap_or(0),
        }
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn latency_pairs(&self) -> Vec<(u64, u64)> {
        pairs_of(&self.latency)
    }

    /// What `--reconnect` counted (all zero without it).
    pub fn resume(&self) -> Resume {
        Resume {
            reconnects: self.reconnects.load(Relaxed),
            acked: self.acked.load(Relaxed),
            resent: self.resent.load(Relaxed),
            unacked: self.unacked.load(Relaxed),
            out_of_order: self.out_of_order.load(Relaxed),
            not_recovered: self.not_recovered.load(Relaxed),
            time: pairs_of(&self.reconnect_time),
            attempts_by_second: self.attempts.lock().map(|a| a.clone()).unwrap_or_default(),
        }
    }
}

fn pairs_of(h: &Mutex<Option<Histogram<u64>>>) -> Vec<(u64, u64)> {
    h.lock()
        .ok()
        .and_then(|h| h.as_ref().map(to_pairs))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub connected: u64,
    pub sent: u64,
    pub delivered: u64,
    pub back: u64,
    #[serde(default)]
    pub reconnects: u64,
    pub errors: u64,
}

/// After the connect (or preparation) phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ready {
    pub attempted: u64,
    pub established: u64,
    pub connect_secs: f64,
    pub errors: BTreeMap<String, u64>,
}

/// After the measured phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub sent: u64,
    pub refused: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub closed_early: u64,
    pub still_open: u64,
    /// Storms: clients back (authenticated and subscribed) before the deadline.
    pub back: u64,
    pub errors: BTreeMap<String, u64>,
    /// Send-to-deliver (broadcast, dm) or time-to-back (storms), microseconds.
    pub latency: Vec<(u64, u64)>,
    #[serde(default)]
    pub resume: Resume,
}

/// What clients with `--reconnect` counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resume {
    pub reconnects: u64,
    pub acked: u64,
    pub resent: u64,
    pub unacked: u64,
    pub out_of_order: u64,
    pub not_recovered: u64,
    /// Close seen -> joined again, microseconds.
    pub time: Vec<(u64, u64)>,
    /// Connection attempts after a lost socket, by unix second.
    pub attempts_by_second: BTreeMap<u64, u64>,
}

impl Resume {
    pub fn merge(&mut self, other: &Resume) {
        self.reconnects += other.reconnects;
        self.acked += other.acked;
        self.resent += other.resent;
        self.unacked += other.unacked;
        self.out_of_order += other.out_of_order;
        self.not_recovered += other.not_recovered;
        self.time.extend_from_slice(&other.time);
        for (second, n) in &other.attempts_by_second {
            *self.attempts_by_second.entry(*second).or_default() += n;
        }
    }

    /// The most reconnection attempts in any one second, over all workers.
    pub fn peak_attempts_per_sec(&self) -> u64 {
        self.attempts_by_second.values().copied().max().unwrap_or(0)
    }
}

/// One line a worker writes on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Ready(Ready),
    Progress(Progress),
    Outcome(Outcome),
}

impl Ready {
    pub fn merge(&mut self, other: &Ready) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.connect_secs = self.connect_secs.max(other.connect_secs);
        merge_errors(&mut self.errors, &other.errors);
    }
}

impl Outcome {
    pub fn merge(&mut self, other: &Outcome) {
        self.sent += other.sent;
        self.refused += other.refused;
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.closed_early += other.closed_early;
        self.still_open += other.still_open;
        self.back += other.back;
        merge_errors(&mut self.errors, &other.errors);
        self.latency.extend_from_slice(&other.latency);
        self.resume.merge(&other.resume);
    }
}

pub fn merge_errors(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind.clone()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut a = histogram();
        for v in [10, 20, 30, 1_000, 50_000] {
            a.record(v).unwrap_or_default();
        }
        let mut b = histogram();
        add_pairs(&mut b, &to_pairs(&a));
        assert_eq!(b.len(), 5);
        assert_eq!(b.value_at_quantile(0.5), a.value_at_quantile(0.5));
        assert_eq!(b.max(), a.max());
    }

    #[test]
    fn outcomes_add_up_and_errors_merge_by_kind() {
        let mut total = Outcome {
            sent: 1,
            errors: BTreeMap::from([("timeout".into(), 2)]),
            ..Default::default()
        };
        total.merge(&Outcome {
            sent: 2,
            errors: BTreeMap::from([("timeout".into(), 1), ("refused".into(), 1)]),
            ..Default::default()
        });
        assert_eq!(total.sent, 3);
        assert_eq!(total.errors["timeout"], 3);
        assert_eq!(total.errors["refused"], 1);
    }

    #[test]
    fn resume_counts_of_workers_add_up_and_attempts_merge_by_second() {
        let worker = |acked, second, attempts| Outcome {
            resume: Resume {
                reconnects: 2,
                acked,
                time: vec![(1_000, 2)],
                attempts_by_second: BTreeMap::from([(second, attempts)]),
                ..Resume::default()
            },
            ..Outcome::default()
        };
        let mut total = worker(5, 100, 3);
        total.merge(&worker(7, 100, 4));
        total.merge(&worker(1, 101, 6));
        let r = &total.resume;
        assert_eq!((r.reconnects, r.acked, r.time.len()), (6, 13, 3));
        assert_eq!(r.attempts_by_second[&100], 7);
        assert_eq!(r.peak_attempts_per_sec(), 7);
    }
}
