//! Fan-out of one message from the log to N local sockets: the registry turns the bus event
//! into a `message` frame once and offers it to each member's bounded queue; each iteration
//! also drains the queues, as the connection tasks would.
//! Run: `cargo bench -p onlychat-chat-node` (results in docs/benchmarks.md).

use divan::{Bencher, black_box};
use onlychat_bus::{Delivered, DeliverySink};
use onlychat_chat_node::RecentLimits;
use onlychat_chat_node::registry::{ConnHandle, Frame, Registry};
use onlychat_protocol::BusEvent;
use tokio::sync::{mpsc, watch};

fn main() {
    divan::main();
}

#[divan::bench(args = [1, 10, 100, 1000])]
fn fan_out_one_message(bencher: Bencher, members: u64) {
    let registry = Registry::new(
        "e-1".into(),
        Box::new(|_| 0),
        RecentLimits {
            dedupe_window_ms: 600_000,
            per_room: 1000,
        },
    );
    let mut queues = Vec::new();
    let mut kills = Vec::new();
    for id in 0..members {
        let (tx, rx) = mpsc::channel::<Frame>(16);
        let (kill, kill_rx) = watch::channel(None);
        let conn = ConnHandle {
            id,
            user_id: format!("user-{id}"),
            sid: format!("sid-{id}"),
            tx,
            kill,
        };
        registry.attach(&conn);
        registry.join("lobby", &conn, None, None);
        queues.push(rx);
        kills.push(kill_rx);
    }
    registry.positioned(0, 0);
    let mut position = 0u64;
    bencher
        .counter(divan::counter::ItemsCount::new(members))
        .bench_local(|| {
            position += 1;
            registry.deliver(Delivered {
                partition: 0,
                position,
                event: BusEvent::Message {
                    id: format!("m-{position}"),
                    room: "lobby".into(),
                    from: "user-sender".into(),
                    from_name: "sender".into(),
                    body: "hello there, this is a chat message of typical size".into(),
                    client_id: format!("c-{position}"),
                    ts: "2026-12-04T08:00:00.000Z".into(),
                },
                headers: Vec::new(),
            });
            for queue in &mut queues {
                black_box(queue.try_recv().is_ok());
            }
        });
    assert!(
        kills.iter().all(|k| k.borrow().is_none()),
        "no member may be closed as slow"
    );
}
