//! Who connects, to which room, and who publishes: one deterministic plan shared by the
//! coordinator and every worker, so each worker takes its slice (`index % workers`) and the
//! coordinator knows how many deliveries every message should make.

use crate::cli::Scenario;

/// What one connection does in the measured phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    /// Joins its room and counts what arrives.
    Member,
    /// Joins its room and publishes at `rate` per second; ignores what arrives.
    Publisher { rate: f64, recipients: u64 },
    /// One side of a 1:1 room: publishes at `rate` and counts what its partner sends.
    Pair { rate: f64 },
    /// Authenticates (joins `room` if any) and holds.
    Holder { join: bool },
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub index: usize,
    pub room: usize,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub specs: Vec<Spec>,
    pub body_bytes: usize,
}

/// Rooms of the storm scenarios: 100 members each.
const STORM_ROOM_SIZE: usize = 100;

impl Plan {
    pub fn new(scenario: &Scenario) -> Self {
        match *scenario {
            Scenario::Idle { connections } => Self::holders(connections, false),
            Scenario::LoginStorm { clients, .. } => Self::holders(clients, false),
            Scenario::ReconnectStorm { clients } => Self::holders(clients, true),
            Scenario::Broadcast {
                rooms,
                members,
                publishers,
                rate,
                body_bytes,
                ..
            } => Self::broadcast(
                rooms.max(1),
                members,
                publishers.unwrap_or(rooms).max(1),
                rate,
                body_bytes,
            ),
            Scenario::Dm {
                pairs,
                rate,
                body_bytes,
                ..
            } => {
                let sockets = pairs * 2;
                let per_socket = rate / sockets.max(1) as f64;
                let specs = (0..sockets)
                    .map(|index| Spec {
                        index,
                        room: index / 2,
                        role: Role::Pair { rate: per_socket },
                    })
                    .collect();
                Plan { specs, body_bytes }
            }
        }
    }

    fn holders(count: usize, join: bool) -> Self {
        let rooms = count.div_ceil(STORM_ROOM_SIZE).max(1);
        let specs = (0..count)
            .map(|index| Spec {
                index,
                room: index % rooms,
                role: Role::Holder { join },
            })
            .collect();
        Plan {
            specs,
            body_bytes: 0,
        }
    }

    fn broadcast(
        rooms: usize,
        members: usize,
        publishers: usize,
        rate: f64,
        body_bytes: usize,
    ) -> Self {
        let member_count = rooms * members;
        let mut specs: Vec<Spec> = (0..member_count)
            .map(|index| Spec {
                index,
                room: index % rooms,
                role: Role::Member,
            })
            .collect();
        let per_publisher = rate / publishers as f64;
        specs.extend((0..publishers).map(|p| Spec {
            index: member_count + p,
            room: p % rooms,
            role: Role::Publisher {
                rate: per_publisher,
                recipients: members as u64,
            },
        }));
        Plan { specs, body_bytes }
    }

    /// This worker's share.
    pub fn slice(&self, worker: usize, workers: usize) -> Vec<Spec> {
        self.specs
            .iter()
            .filter(|s| s.index % workers == worker)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_plans_members_then_publishers_spread_over_rooms() {
        let plan = Plan::new(&Scenario::Broadcast {
            rooms: 3,
            members: 2,
            publishers: None,
            rate: 30.0,
            body_bytes: 64,
            reconnect: false,
        });
        assert_eq!(plan.specs.len(), 9);
        let publishers: Vec<_> = plan
            .specs
            .iter()
            .filter(|s| matches!(s.role, Role::Publisher { .. }))
            .collect();
        assert_eq!(publishers.len(), 3);
        assert_eq!(
            publishers.iter().map(|s| s.room).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(
            matches!(publishers[0].role, Role::Publisher { rate, recipients: 2 } if (rate - 10.0).abs() < 1e-9)
        );
    }

    #[test]
    fn slices_of_all_workers_cover_every_connection_once() {
        let plan = Plan::new(&Scenario::Dm {
            pairs: 7,
            rate: 10.0,
            body_bytes: 64,
            reconnect: false,
        });
        let mut seen: Vec<usize> = (0..3)
            .flat_map(|w| plan.slice(w, 3))
            .map(|s| s.index)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..14).collect::<Vec<_>>());
        assert_eq!(plan.specs[5].room, 2);
    }
}
