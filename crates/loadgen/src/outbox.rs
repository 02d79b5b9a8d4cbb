//! A resuming publisher's sends until each is acknowledged. PROTOCOL.md: `ack` means durable,
//! `error` `unavailable` means "not acknowledged, resend with the same `client_id`", and a
//! resend (any socket, any node) is delivered at most once. So every send stays here, with its
//! body, until its `ack`; a lost socket or an `unavailable` marks it to be written again with
//! the same `client_id`; nothing is given up except what the server refuses outright.

use std::collections::BTreeMap;

/// The `client_id` of a publisher's `seq`-th message: `<connection index>-<seq>`.
pub fn client_id(index: usize, seq: u64) -> String {
    format!("{index}-{seq}")
}

/// The seq of one of this publisher's `client_id`s (`None` for anyone else's).
pub fn seq_of(client_id: &str, index: usize) -> Option<u64> {
    let (who, seq) = client_id.split_once('-')?;
    (who.parse::<usize>().ok()? == index).then(|| seq.parse().ok())?
}

/// What the publisher does about an `error` that answers one of its sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not acknowledged (`unavailable`) or not taken yet (`rate_limited`): write it again.
    Retry,
    /// Refused for good (a bad frame, say): it will never be acknowledged.
    Final,
}

impl Refusal {
    pub fn of(code: &str) -> Self {
        match code {
            "unavailable" | "rate_limited" => Refusal::Retry,
            _ => Refusal::Final,
        }
    }
}

#[derive(Debug)]
struct Pending {
    body: String,
    /// Written on the current socket and not answered with a retryable error since.
    written: bool,
    /// Written at least once before (so the next write is a resend).
    ever_written: bool,
}

#[derive(Debug, Default)]
pub struct Outbox {
    pending: BTreeMap<u64, Pending>,
}

impl Outbox {
    /// A new message, not yet written.
    pub fn create(&mut self, seq: u64, body: String) {
        self.pending.insert(
            seq,
            Pending {
                body,
                written: false,
                ever_written: false,
            },
        );
    }

    /// The `ack` for `seq`: true the first time (a resend's ack repeats the original).
    pub fn ack(&mut self, seq: u64) -> bool {
        self.pending.remove(&seq).is_some()
    }

    /// An `error` for `seq`: true if it was pending (and is now retried or dropped).
    pub fn refuse(&mut self, seq: u64, refusal: Refusal) -> bool {
        match refusal {
            Refusal::Final => self.pending.remove(&seq).is_some(),
            Refusal::Retry => match self.pending.get_mut(&seq) {
                Some(p) => {
                    p.written = false;
                    true
                }
                None => false,
            },
        }
    }

    /// The socket is gone: whatever was written on it and not acknowledged is written again on
    /// the next one (the server may or may not have taken it; the resend is safe either way).
    pub fn link_lost(&mut self) {
        for p in self.pending.values_mut() {
            p.written = false;
        }
    }

    /// The sends to write now, oldest first, marked written; and how many of them are resends.
    pub fn take_unwritten(&mut self) -> (Vec<(u64, String)>, u64) {
        let mut resends = 0;
        let frames = self
            .pending
            .iter_mut()
            .filter(|(_, p)| !p.written)
            .map(|(&seq, p)| {
                resends += u64::from(p.ever_written);
                p.written = true;
                p.ever_written = true;
                (seq, p.body.clone())
            })
            .collect();
        (frames, resends)
    }

    /// Whether some send waits to be written.
    pub fn has_unwritten(&self) -> bool {
        self.pending.values().any(|p| !p.written)
    }

    /// Sends not acknowledged (yet).
    pub fn unacked(&self) -> u64 {
        self.pending.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(frames: &[(u64, String)]) -> Vec<u64> {
        frames.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn client_ids_name_the_publisher_and_the_seq() {
        assert_eq!(client_id(12, 7), "12-7");
        assert_eq!(seq_of("12-7", 12), Some(7));
        assert_eq!(seq_of("12-7", 1), None);
        assert_eq!(seq_of("12-x", 12), None);
        assert_eq!(seq_of("nonsense", 12), None);
    }

    #[test]
    fn unacked_sends_are_written_again_after_the_link_is_lost_and_acked_ones_are_not() {
        let mut out = Outbox::default();
        for seq in 1..=4 {
            out.create(seq, format!("b{seq}"));
        }
        let (first, resends) = out.take_unwritten();
        assert_eq!((seqs(&first), resends), (vec![1, 2, 3, 4], 0));
        assert!(out.ack(1) && out.ack(3));
        out.link_lost();
        out.create(5, "b5".into());
        let (again, resends) = out.take_unwritten();
        assert_eq!(seqs(&again), [2, 4, 5]);
        assert_eq!(again[0].1, "b2", "a resend keeps its body");
        assert_eq!(resends, 2);
        assert_eq!(out.unacked(), 3);
        assert!(!out.has_unwritten());
    }

    #[test]
    fn the_ack_of_a_resend_counts_once() {
        let mut out = Outbox::default();
        out.create(1, "b".into());
        out.take_unwritten();
        assert!(out.ack(1));
        assert!(!out.ack(1));
        assert_eq!(out.unacked(), 0);
    }

    #[test]
    fn unavailable_is_retried_and_a_final_refusal_is_dropped() {
        let mut out = Outbox::default();
        out.create(1, "a".into());
        out.create(2, "b".into());
        out.take_unwritten();
        assert!(out.refuse(1, Refusal::of("unavailable")));
        assert!(out.refuse(2, Refusal::of("invalid_body")));
        assert!(!out.refuse(2, Refusal::of("invalid_body")));
        let (again, resends) = out.take_unwritten();
        assert_eq!((seqs(&again), resends), (vec![1], 1));
        assert_eq!(out.unacked(), 1);
    }
}
