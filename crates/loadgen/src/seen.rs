//! Which stamps a receiver has already counted, exactly: a message is identified by its stamp
//! (publisher, seq), which a resend keeps (same body, same `client_id`), so a replayed copy and
//! a second copy in the log are both duplicates, and a message first seen late (after a higher
//! seq from the same publisher, as a replay after a rejoin can bring it) is still a delivery.

use std::collections::{BTreeSet, HashMap};

/// What one received stamp means for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First sight, in order.
    New,
    /// First sight, but after a higher seq of the same publisher.
    Late,
    /// Seen before.
    Duplicate,
}

/// Seqs above a gap kept per publisher before the oldest gap is given up (counted as seen), so
/// a server that loses messages cannot make a receiver's memory grow without bound. A copy of
/// a given-up seq arriving later counts as a duplicate instead of a late delivery.
const MAX_ABOVE_GAP: usize = 65_536;

/// One publisher's seqs as seen by one receiver: all of `1..=through`, plus `above`.
#[derive(Debug, Default)]
struct Window {
    through: u64,
    above: BTreeSet<u64>,
}

impl Window {
    fn record(&mut self, seq: u64) -> Delivery {
        if seq <= self.through || self.above.contains(&seq) {
            return Delivery::Duplicate;
        }
        let late = self.above.last().is_some_and(|&max| seq < max);
        if seq == self.through + 1 {
            self.through = seq;
        } else {
            self.above.insert(seq);
            if self.above.len() > MAX_ABOVE_GAP
                && let Some(first) = self.above.pop_first()
            {
                self.through = first;
            }
        }
        while self.above.first() == Some(&(self.through + 1)) {
            self.above.pop_first();
            self.through += 1;
        }
        if late { Delivery::Late } else { Delivery::New }
    }
}

/// The stamps one receiver has counted, by publisher.
#[derive(Debug, Default)]
pub struct Seen {
    by_publisher: HashMap<u32, Window>,
}

impl Seen {
    pub fn record(&mut self, publisher: u32, seq: u64) -> Delivery {
        self.by_publisher.entry(publisher).or_default().record(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Delivery::*;

    fn record_all(seen: &mut Seen, stamps: &[(u32, u64)]) -> Vec<Delivery> {
        stamps.iter().map(|&(p, s)| seen.record(p, s)).collect()
    }

    #[test]
    fn in_order_stamps_are_new_and_repeats_are_duplicates() {
        let mut seen = Seen::default();
        let got = record_all(&mut seen, &[(1, 1), (1, 2), (1, 2), (2, 1), (1, 1), (1, 3)]);
        assert_eq!(got, [New, New, Duplicate, New, Duplicate, New]);
    }

    #[test]
    fn a_gap_filled_later_by_a_replay_counts_as_delivered_not_duplicate() {
        let mut seen = Seen::default();
        // 3 and 4 arrive live on the new socket before the replay brings 2.
        let got = record_all(&mut seen, &[(1, 1), (1, 3), (1, 4), (1, 2), (1, 2), (1, 3)]);
        assert_eq!(got, [New, New, New, Late, Duplicate, Duplicate]);
        assert_eq!(seen.by_publisher[&1].through, 4);
        assert!(seen.by_publisher[&1].above.is_empty());
    }

    #[test]
    fn a_replay_overlapping_what_was_seen_counts_only_the_missed_ones() {
        let mut seen = Seen::default();
        record_all(&mut seen, &[(7, 1), (7, 2), (7, 3)]);
        // The rejoin's replay starts too early: 2 and 3 again, then 4 and 5.
        let got = record_all(&mut seen, &[(7, 2), (7, 3), (7, 4), (7, 5)]);
        assert_eq!(got, [Duplicate, Duplicate, New, New]);
    }

    #[test]
    fn a_gap_never_filled_is_given_up_once_too_much_lies_above_it() {
        let mut window = Window::default();
        window.record(1);
        for seq in 3..(3 + MAX_ABOVE_GAP as u64 + 1) {
            window.record(seq);
        }
        assert!(window.above.is_empty());
        assert_eq!(window.through, 3 + MAX_ABOVE_GAP as u64);
        assert_eq!(window.record(2), Duplicate);
    }
}
