//! What a `join` with `since` sends before live traffic.
//!
//! Replay reads the node's own buffer of the log first (rebuilt from Kafka at start, exact up to
//! the seam because it is cut under the registry lock). Positions older than the buffer come
//! from the history store, but only where the history writer has recorded that it stored every
//! position up to the buffer's floor; otherwise the join answers `recovered: false` with the
//! latest page, never a replay with a hole in it.

use crate::registry::Frame;

use onlychat_protocol::ServerFrame;

use crate::Node;
use crate::registry::Replay;

/// How many messages a `recovered: false` join gets.
pub const LATEST_PAGE: usize = 50;

/// The frames to send after `joined`, and whether they are a full recovery.
pub struct Resolved {
    pub recovered: bool,
    pub frames: Vec<Frame>,
}

fn frames_of(messages: Vec<onlychat_protocol::ChatMessage>) -> Vec<Frame> {
    messages
        .into_iter()
        .map(|m| Frame::from(ServerFrame::Message(m).to_text()))
        .collect()
}

impl Node {
    /// Turns the registry's replay decision into frames, reading the store where needed.
    pub(crate) async fn resolve_replay(&self, room: &str, replay: Replay) -> Resolved {
        match replay {
            Replay::None => Resolved {
                recovered: false,
                frames: Vec::new(),
            },
            Replay::Buffered(buffered) if buffered.len() <= self.settings.replay_max as usize => {
                Resolved {
                    recovered: true,
                    frames: buffered.into_iter().map(|b| b.frame).collect(),
                }
            }
            Replay::Buffered(buffered) => self.latest(room, 0, 0, buffered).await,
            Replay::FromStore {
                since,
                floor,
                partition,
                then,
            } => match self.read_store(room, since, floor, partition).await {
                Some(mut frames)
                    if frames.len() + then.len() <= self.settings.replay_max as usize =>
                {
                    frames.extend(then.into_iter().map(|b| b.frame));
                    metrics::counter!("onlychat_replays_from_store_total").increment(1);
                    Resolved {
                        recovered: true,
                        frames,
                    }
                }
                _ => self.latest(room, partition, floor, then).await,
            },
            Replay::Stale {
                partition,
                floor,
                buffered,
            } => self.latest(room, partition, floor, buffered).await,
        }
    }

    /// `(since, floor]` from the store, if the store provably holds all of it.
    async fn read_store(
        &self,
        room: &str,
        since: u64,
        floor: u64,
        partition: i32,
    ) -> Option<Vec<Frame>> {
        let store = self.deps.history.as_ref()?;
        let epoch = self.registry.epoch();
        match store.history_covered(epoch, partition).await {
            Ok(next) if next > floor => {}
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "history store unavailable for replay");
                return None;
            }
        }
        let limit = self.settings.replay_max.saturating_add(1);
        match store.history_range(room, epoch, since, floor, limit).await {
            Ok(messages) if messages.len() <= self.settings.replay_max as usize => {
                Some(frames_of(messages))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "history store unavailable for replay");
                None
            }
        }
    }

    /// `recovered: false` and the newest messages: the buffer's, topped up from the store.
    async fn latest(
        &self,
        room: &str,
        partition: i32,
        floor: u64,
        buffered: Vec<crate::recent::Buffered>,
    ) -> Resolved {
        let mut frames: Vec<Frame> = buffered
            .into_iter()
            .rev()
            .take(LATEST_PAGE)
            .map(|b| b.frame)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let missing = LATEST_PAGE - frames.len();
        if missing > 0
            && floor > 0
            && let Some(store) = &self.deps.history
        {
            let epoch = self.registry.epoch();
            let covered = store.history_covered(epoch, partition).await.unwrap_or(0);
            let before = Some((floor + 1).min(covered));
            let want = u32::try_from(missing).unwrap_or(u32::MAX);
            if let Ok(page) = store.history_page(room, epoch, None, before, want).await {
                let mut older = frames_of(page.messages);
                older.append(&mut frames);
                frames = older;
            }
        }
        Resolved {
            recovered: false,
            frames,
        }
    }
}
