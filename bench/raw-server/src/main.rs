//! `raw-server`: the benchmark's physical-limit reference.
//!
//! A minimal WebSocket broadcast server that speaks the subset of onlychat's frames a load
//! generator needs (`welcome`, `join`/`joined`, `send`/`ack`/`message`, `leave`/`left`,
//! `ping`/`pong`), with no authentication, no durable log, no Kafka, no presence and no
//! rate limits. Whatever onlychat does on top of this is the cost of its features.
//!
//! It does the cheap things a real server would: each broadcast frame is serialised once and the
//! same buffer (`Utf8Bytes`, reference counted) is handed to every member's writer task over a
//! bounded channel; a writer feeds all the frames already queued and flushes once; read and
//! write buffers are 4 KiB so an idle socket costs little memory. A member whose queue is full is
//! closed with 4008 ("too slow"), as onlychat does.
//!
//! ```text
//! raw-server --listen 127.0.0.1:9000 [--queue 1024]
//! ```
//!
//! Any path is accepted for the upgrade (`/ws` included); headers such as `Authorization` are
//! ignored and `welcome` is sent at once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const BUF_BYTES: usize = 4 * 1024;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most frames fed to a socket before one flush.
const MAX_BATCH: usize = 256;
const CLOSE_TOO_SLOW: u16 = 4008;

struct Conn {
    id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Woken when this socket's queue overflowed: its writer closes it with 4008. The writer holds
    /// only this, not the `Conn`, so dropping the last `Conn` (and `tx`) ends the writer.
    kill: Arc<Notify>,
}

#[derive(Default)]
struct Room {
    position: u64,
    members: HashMap<u64, Arc<Conn>>,
}

#[derive(Default)]
struct State {
    /// Lock order: `rooms`, then one room.
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
    next_conn: AtomicU64,
    next_msg: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    fn join(&self, room: &str, conn: &Arc<Conn>) -> u64 {
        let mut rooms = lock(&self.rooms);
        let r = rooms.entry(room.to_owned()).or_default().clone();
        let mut r = lock(&r);
        r.members.insert(conn.id, conn.clone());
        r.position
    }

    fn leave(&self, room: &str, conn_id: u64) {
        let mut rooms = lock(&self.rooms);
        let Some(r) = rooms.get(room).cloned() else {
            return;
        };
        let mut r = lock(&r);
        r.members.remove(&conn_id);
        if r.members.is_empty() {
            rooms.remove(room);
        }
    }

    /// Assigns the next position in `room`, serialises the `message` frame once and queues it to
    /// every member (the sender included). Returns `(id, position, ts)`, or `None` if the room
    /// does not exist.
    fn broadcast(
        &self,
        room: &str,
        body: &Value,
        client_id: &Value,
    ) -> Option<(String, u64, String)> {
        let r = lock(&self.rooms).get(room).cloned()?;
        let mut slow = Vec::new();
        let result;
        {
            let mut r = lock(&r);
            r.position += 1;
            let position = r.position;
            let id = (self.next_msg.fetch_add(1, Ordering::Relaxed) + 1).to_string();
            let ts = now_rfc3339();
            // Built by hand so `type` comes first, as in onlychat's frames (serde_json's
            // `json!` map sorts keys); `room`, `body` and `client_id` are JSON-escaped values.
            let frame = format!(
                r#"{{"type":"message","room":{},"id":"{id}","position":{position},"epoch":"raw","from":"raw","from_name":"raw","body":{},"ts":"{ts}","client_id":{}}}"#,
                Value::from(room),
                body,
                client_id,
            );
            let frame = Utf8Bytes::from(frame);
            for (conn_id, conn) in &r.members {
                if conn.tx.try_send(frame.clone()).is_err() {
                    slow.push(*conn_id);
                }
            }
            for conn_id in &slow {
                if let Some(conn) = r.members.remove(conn_id) {
                    conn.kill.notify_one();
                }
            }
            result = (id, position, ts);
        }
        Some(result)
    }
}

/// RFC 3339 UTC with milliseconds, like onlychat's `ts` (`2026-05-01T12:00:00.123Z`).
fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// Serialises `fields` in order (so `type` comes first, as in onlychat's frames), then `ref`
/// when the client frame had one.
fn frame(fields: &[(&str, Value)], r: Option<&Value>) -> Utf8Bytes {
    let mut out = String::with_capacity(128);
    out.push('{');
    let refs = r.map(|r| ("ref", r.clone()));
    for (i, (k, v)) in fields.iter().chain(refs.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    Utf8Bytes::from(out)
}

fn error(code: &str, message: &str, r: Option<&Value>) -> Utf8Bytes {
    frame(
        &[
            ("type", "error".into()),
            ("code", code.into()),
            ("message", message.into()),
        ],
        r,
    )
}

/// Handles one client frame; returns the reply to queue to the sender, if any.
fn handle_frame(
    state: &State,
    conn: &Arc<Conn>,
    joined: &mut HashSet<String>,
    text: &str,
) -> Option<Utf8Bytes> {
    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
        return Some(error("bad_frame", "not a JSON object", None));
    };
    let r = msg.get("ref");
    let room = msg.get("room").and_then(Value::as_str);
    match msg.get("type").and_then(Value::as_str) {
        Some("ping") => Some(frame(&[("type", "pong".into())], r)),
        Some("join") => {
            let Some(room) = room.filter(|s| !s.is_empty()) else {
                return Some(error("invalid_room", "missing room", r));
            };
            let position = state.join(room, conn);
            joined.insert(room.to_owned());
            Some(frame(
                &[
                    ("type", "joined".into()),
                    ("room", room.into()),
                    ("epoch", "raw".into()),
                    ("position", position.into()),
                    ("recovered", false.into()),
                    ("online", json!([])),
                ],
                r,
            ))
        }
        Some("leave") => {
            let Some(room) = room else {
                return Some(error("invalid_room", "missing room", r));
            };
            if joined.remove(room) {
                state.leave(room, conn.id);
            }
            Some(frame(&[("type", "left".into()), ("room", room.into())], r))
        }
        Some("send") => {
            let (Some(room), Some(body), Some(client_id)) =
                (room, msg.get("body"), msg.get("client_id"))
            else {
                return Some(error("bad_frame", "send needs room, body and client_id", r));
            };
            let not_joined = || {
                frame(
                    &[
                        ("type", "error".into()),
                        ("code", "not_joined".into()),
                        ("message", "join the room first".into()),
                        ("room", room.into()),
                        ("client_id", client_id.clone()),
                    ],
                    r,
                )
            };
            if !joined.contains(room) {
                return Some(not_joined());
            }
            let Some((id, position, ts)) = state.broadcast(room, body, client_id) else {
                return Some(not_joined());
            };
            Some(frame(
                &[
                    ("type", "ack".into()),
                    ("room", room.into()),
                    ("client_id", client_id.clone()),
                    ("id", id.into()),
                    ("position", position.into()),
                    ("ts", ts.into()),
                ],
                r,
            ))
        }
        Some("typing") => None,
        _ => Some(error("bad_frame", "unknown or missing type", r)),
    }
}

async fn serve(state: Arc<State>, stream: TcpStream, queue: usize) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(BUF_BYTES)
        .write_buffer_size(BUF_BYTES)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(queue);
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let kill = Arc::new(Notify::new());
    let conn = Arc::new(Conn {
        id,
        tx,
        kill: kill.clone(),
    });

    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                () = kill.notified() => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(CLOSE_TOO_SLOW),
                            reason: "too slow".into(),
                        })))
                        .await;
                    break;
                }
                next = rx.recv() => {
                    let Some(frame) = next else {
                        break;
                    };
                    if sink.feed(Message::Text(frame)).await.is_err() {
                        break;
                    }
                    let mut fed = 1;
                    while fed < MAX_BATCH {
                        let Ok(frame) = rx.try_recv() else {
                            break;
                        };
                        if sink.feed(Message::Text(frame)).await.is_err() {
                            return;
                        }
                        fed += 1;
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });

    let welcome = frame(
        &[
            ("type", "welcome".into()),
            ("user_id", format!("raw-{id}").into()),
            ("session_id", format!("raw-{id}").into()),
            ("node", "raw".into()),
            ("heartbeat_s", 30.into()),
            ("max_frame_bytes", MAX_MESSAGE_BYTES.into()),
            ("expires_at", "9999-12-31T23:59:59.000Z".into()),
        ],
        None,
    );
    let mut joined = HashSet::new();
    if conn.tx.send(welcome).await.is_ok() {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Text(text) => {
                    if let Some(reply) = handle_frame(&state, &conn, &mut joined, text.as_str())
                        && conn.tx.send(reply).await.is_err()
                    {
                        break;
                    }
                }
                Message::Binary(_) => {
                    if conn
                        .tx
                        .send(error("bad_frame", "binary frames are not accepted", None))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
    for room in &joined {
        state.leave(room, conn.id);
    }
    // Dropping the last sender ends the writer once it has drained its queue.
    drop(conn);
    let _ = writer.await;
}

fn usage() -> ! {
    eprintln!("usage: raw-server --listen 127.0.0.1:PORT [--queue FRAMES]");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut queue: usize = 1024;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--queue" => {
                queue = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|q| *q > 0)
                    .unwrap_or_else(|| usage());
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let Some(listen) = listen else { usage() };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("raw-server: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("raw-server listening on {listen}");
    let state = Arc::new(State::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(state.clone(), stream, queue));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("raw-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
