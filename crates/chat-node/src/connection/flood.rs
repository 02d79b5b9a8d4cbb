//! Per-connection flood control for the frames that fan out (`send`, `typing`): a token bucket
//! of `burst` frames refilled at `rate` per second. A frame over the limit is answered in-band
//! with `rate_limited` and dropped; [`STRIKES_TO_CLOSE`] of those within [`STRIKE_WINDOW`] close
//! the socket with 4029 (a client that keeps hammering after being told is not a chat client).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// `rate_limited` answers within [`STRIKE_WINDOW`] that close the socket with 4029.
pub const STRIKES_TO_CLOSE: usize = 20;
/// The window [`STRIKES_TO_CLOSE`] is counted in.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Limited,
    Close,
}

/// One connection's bucket and recent strikes.
pub(crate) struct Flood {
    /// Tokens per second; `0` turns the limit off.
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    strikes: VecDeque<Instant>,
}

impl Flood {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            refilled: Instant::now(),
            strikes: VecDeque::new(),
        }
    }

    /// Takes one token for a frame arriving `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Pass;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Pass;
        }
        while self
            .strikes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > STRIKE_WINDOW)
        {
            self.strikes.pop_front();
        }
        self.strikes.push_back(now);
        if self.strikes.len() >= STRIKES_TO_CLOSE {
            Verdict::Close
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_back_to_back_then_frames_are_limited_then_the_socket_closes() {
        let now = Instant::now();
        let mut flood = Flood::new(10.0, 500);
        for _ in 0..500 {
            assert_eq!(flood.check(now), Verdict::Pass);
        }
        for _ in 1..STRIKES_TO_CLOSE {
            assert_eq!(flood.check(now), Verdict::Limited);
        }
        assert_eq!(flood.check(now), Verdict::Close);
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_old_strikes_are_forgotten() {
        let start = Instant::now();
        let mut flood = Flood::new(2.0, 1);
        assert_eq!(flood.check(start), Verdict::Pass);
        assert_eq!(flood.check(start), Verdict::Limited);
        assert_eq!(
            flood.check(start + Duration::from_millis(500)),
            Verdict::Pass
        );
        let mut slow = Flood::new(0.01, 1);
        assert_eq!(slow.check(start), Verdict::Pass);
        for i in 1..=STRIKES_TO_CLOSE * 3 {
            // One strike every 600 ms: at most 17 within any 10 s, never 20.
            let at = start + Duration::from_millis(600) * u32::try_from(i).expect("small");
            assert_eq!(slow.check(at), Verdict::Limited);
        }
    }

    #[test]
    fn a_zero_rate_is_off() {
        let mut flood = Flood::new(0.0, 0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| flood.check(now) == Verdict::Pass));
    }
}
