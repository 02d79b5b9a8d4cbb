//! A resuming client's rooms: the last position it saw in each (PROTOCOL.md: `joined.position`
//! is the seam, then every message's `position`), and the `join` frames that resume them
//! (`since` = that position, `epoch` = the one it came from).

use serde_json::json;

use crate::fields::{bool_field, frame_type, str_field, u64_field};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Room {
    name: String,
    /// The highest position seen (from the first `joined`, then from messages).
    position: Option<u64>,
    epoch: Option<String>,
    joined: bool,
    /// Whether the pending join asked for a replay.
    resuming: bool,
}

/// What a `joined` frame meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoined {
    /// Not one of this client's pending joins.
    Ignored,
    /// Joined; the replay (if one was asked for) follows.
    Resumed,
    /// Joined with `recovered: false` although `since` was given: messages may be missing.
    NotRecovered,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rooms(Vec<Room>);

impl Rooms {
    /// The rooms `names`, joined on the first socket with the given `joined` frames.
    pub fn new(names: &[String], joined: &[String]) -> Self {
        let mut rooms = Rooms(
            names
                .iter()
                .map(|name| Room {
                    name: name.clone(),
                    position: None,
                    epoch: None,
                    joined: false,
                    resuming: false,
                })
                .collect(),
        );
        for frame in joined {
            rooms.on_joined(frame);
        }
        rooms
    }

    /// The socket is gone: every room must be joined again.
    pub fn link_lost(&mut self) {
        for room in &mut self.0 {
            room.joined = false;
        }
    }

    /// The `join` frames for a new socket: with `since` and `epoch` where a position is known
    /// (a room whose first `joined` never came is joined afresh).
    pub fn join_frames(&mut self) -> Vec<String> {
        self.0
            .iter_mut()
            .map(|room| {
                room.joined = false;
                room.resuming = room.position.is_some();
                let mut frame = json!({"type": "join", "room": room.name, "ref": "rejoin"});
                if let Some(since) = room.position {
                    frame["since"] = since.into();
                }
                if let Some(epoch) = &room.epoch {
                    frame["epoch"] = epoch.as_str().into();
                }
                frame.to_string()
            })
            .collect()
    }

    /// A `joined` frame arrived.
    pub fn on_joined(&mut self, frame: &str) -> Rejoined {
        let Some(room) = str_field(frame, "room")
            .and_then(|name| self.0.iter_mut().find(|r| r.name == name && !r.joined))
        else {
            return Rejoined::Ignored;
        };
        room.joined = true;
        if let Some(epoch) = str_field(frame, "epoch") {
            room.epoch = Some(epoch.to_owned());
        }
        if !room.resuming {
            // A fresh join: the seam is where this client's view of the room starts.
            room.position = u64_field(frame, "position").or(room.position);
            return Rejoined::Resumed;
        }
        // A resumed join keeps its own position: the replay after `since` is still to come, and
        // if this socket drops during it, the next `since` must not skip what it did not bring.
        match bool_field(frame, "recovered") {
            Some(false) => Rejoined::NotRecovered,
            _ => Rejoined::Resumed,
        }
    }

    /// A `message` frame arrived: its room's position moves on.
    pub fn on_message(&mut self, frame: &str) {
        let (Some(name), Some(position)) = (str_field(frame, "room"), u64_field(frame, "position"))
        else {
            return;
        };
        if let Some(room) = self.0.iter_mut().find(|r| r.name == name) {
            room.position = Some(room.position.map_or(position, |p| p.max(position)));
        }
    }

    /// Whether every room is joined on the current socket.
    pub fn all_joined(&self) -> bool {
        self.0.iter().all(|r| r.joined)
    }

    /// Whether `frame` answers one of this client's joins with an error (`ref` `rejoin`).
    pub fn is_join_error(frame: &str) -> bool {
        frame_type(frame) == Some("error") && str_field(frame, "ref") == Some("rejoin")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn joined(room: &str, position: u64, recovered: bool) -> String {
        format!(
            r#"{{"type":"joined","ref":"rejoin","room":"{room}","epoch":"t-p3","position":{position},"recovered":{recovered},"online":[]}}"#
        )
    }

    fn message(room: &str, position: u64) -> String {
        format!(
            r#"{{"type":"message","room":"{room}","id":"m","position":{position},"epoch":"t-p3","body":"lg|1|1|1|"}}"#
        )
    }

    fn parse(frames: &[String]) -> Vec<Value> {
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_rejoin_asks_for_everything_after_the_last_position_seen() {
        let names = ["a".to_owned(), "b".to_owned()];
        let mut rooms = Rooms::new(&names, &[joined("a", 10, false), joined("b", 0, false)]);
        assert!(rooms.all_joined());
        rooms.on_message(&message("a", 12));
        rooms.on_message(&message("a", 11));
        rooms.link_lost();
        assert!(!rooms.all_joined());
        let frames = parse(&rooms.join_frames());
        assert_eq!(frames[0]["since"], 12);
        assert_eq!(frames[0]["epoch"], "t-p3");
        assert_eq!(frames[1]["since"], 0);
        assert_eq!(rooms.on_joined(&joined("a", 40, true)), Rejoined::Resumed);
        assert!(!rooms.all_joined());
        assert_eq!(
            rooms.on_joined(&joined("b", 5, false)),
            Rejoined::NotRecovered
        );
        assert!(rooms.all_joined());
    }

    #[test]
    fn the_seam_of_a_resumed_join_does_not_move_the_position() {
        let names = ["a".to_owned()];
        let mut rooms = Rooms::new(&names, &[joined("a", 3, false)]);
        rooms.join_frames();
        rooms.on_joined(&joined("a", 50, true));
        // The socket drops before the replay brought anything: resume from 3 again.
        rooms.link_lost();
        assert_eq!(parse(&rooms.join_frames())[0]["since"], 3);
    }

    #[test]
    fn a_room_whose_first_join_never_answered_is_joined_afresh() {
        let names = ["a".to_owned()];
        let mut rooms = Rooms::new(&names, &[]);
        let frames = parse(&rooms.join_frames());
        assert!(frames[0].get("since").is_none());
        assert_eq!(rooms.on_joined(&joined("a", 7, false)), Rejoined::Resumed);
        assert_eq!(rooms.on_joined(&joined("a", 8, false)), Rejoined::Ignored);
        rooms.link_lost();
        assert_eq!(parse(&rooms.join_frames())[0]["since"], 7);
    }
}
