//! The history store's write path on real PostgreSQL (the bulk insert and in-memory dedupe
//! there differ from SQLite's statement-per-row): idempotent batches and the dedupe window.

use onlychat_e2e::Services;
use onlychat_protocol::ChatMessage;
use onlychat_store::{LoggedMessage, Store};

fn logged(id: &str, position: u64, client_id: &str, ts_ms: i64) -> LoggedMessage {
    LoggedMessage {
        partition: 0,
        ts_ms,
        message: ChatMessage {
            room: "lobby".into(),
            id: id.into(),
            position,
            epoch: "e".into(),
            from: "u1".into(),
            from_name: "alice".into(),
            body: format!("body {id}"),
            ts: "2026-12-04T00:00:00.000Z".into(),
            client_id: client_id.into(),
        },
    }
}

#[tokio::test]
async fn postgres_history_is_idempotent_and_drops_resends_within_the_window() {
    let services = Services::from_env().await;
    let store = Store::connect(&services.create_database().await)
        .await
        .expect("postgres");
    store.migrate().await.expect("migrate");
    let offsets = vec![("e".to_owned(), 0, 4)];
    // A resend inside the batch, and one of a message from an earlier batch.
    let first = vec![logged("a", 1, "c1", 1_000)];
    assert_eq!(
        store
            .append_history(&first, &offsets, 60_000)
            .await
            .expect("append"),
        1
    );
    let batch = vec![
        logged("b", 2, "c1", 2_000),
        logged("c", 3, "c2", 2_000),
        logged("c2", 4, "c2", 3_000),
    ];
    assert_eq!(
        store
            .append_history(&batch, &offsets, 60_000)
            .await
            .expect("append"),
        1
    );
    // The same batches again (a writer restart) store nothing new.
    assert_eq!(
        store
            .append_history(&first, &offsets, 60_000)
            .await
            .expect("append"),
        0
    );
    assert_eq!(
        store
            .append_history(&batch, &offsets, 60_000)
            .await
            .expect("append"),
        0
    );
    // Outside the window the same client_id is a new message.
    let late = vec![logged("d", 5, "c1", 100_000)];
    assert_eq!(
        store
            .append_history(&late, &[("e".into(), 0, 6)], 60_000)
            .await
            .expect("append"),
        1
    );
    assert_eq!(store.history_covered("e", 0).await.expect("covered"), 6);
    let ids: Vec<String> = store
        .history_range("lobby", "e", 0, 10, 100)
        .await
        .expect("range")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["a", "c", "d"]);
}
