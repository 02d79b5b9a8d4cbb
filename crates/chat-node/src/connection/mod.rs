//! One task per socket. It selects over: client frames, its bounded outbound queue, the kill
//! switch (eviction, slow consumer, drain), the heartbeat tick and the token's expiry.
//! `frames.rs` holds what each client frame does; this file is the socket adapter around it.

mod frames;

use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use onlychat_auth::Claims;
use onlychat_protocol::{ClientFrame, ServerFrame, close, parse_client_frame};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::Node;
use crate::registry::ConnHandle;
use crate::upgrade::admit;
pub(crate) use frames::Conn;

/// Closes a socket at once with `code`.
pub async fn refuse(session: Session, code: u16, reason: &str) {
    let _ = session
        .close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        }))
        .await;
}

/// Waits for the first frame to be a valid `auth` (browser flow).
async fn authenticate(node: &Node, stream: &mut AggregatedMessageStream) -> Result<Claims, u16> {
    let first = tokio::time::timeout(node.settings.auth_timeout, stream.recv()).await;
    let Ok(Some(Ok(AggregatedMessage::Text(text)))) = first else {
        return Err(close::NOT_AUTHENTICATED);
    };
    match parse_client_frame(&text) {
        Ok(inbound) => match inbound.frame {
            ClientFrame::Auth { token } => admit(node, &token).map_err(|(_, code)| code),
            _ => Err(close::NOT_AUTHENTICATED),
        },
        Err(_) => Err(close::NOT_AUTHENTICATED),
    }
}

/// Runs one socket from authentication to close.
pub async fn run(
    node: Arc<Node>,
    session: Session,
    mut stream: AggregatedMessageStream,
    claims: Option<Claims>,
) {
    let claims = match claims {
        Some(claims) => claims,
        None => match authenticate(&node, &mut stream).await {
            Ok(claims) => claims,
            Err(code) => return refuse(session, code, "authentication failed").await,
        },
    };
    let (tx, rx) = mpsc::channel(node.settings.outbound_queue);
    let (kill, kill_rx) = watch::channel(None);
    let handle = ConnHandle {
        id: node.next_conn_id(),
        user_id: claims.sub.clone(),
        sid: claims.sid.clone(),
        tx,
        kill,
    };
    node.registry.attach(&handle);
    // A revocation may have landed between admission and attach; check again now that the
    // registry would deliver any later one.
    if let Some(code) = node.revoked.code_for(&claims.sid) {
        node.registry.detach(&handle);
        return refuse(session, code, "session revoked").await;
    }
    metrics::gauge!("onlychat_connections").increment(1);
    let mut conn = Conn::new(node.clone(), handle, claims);
    let code = serve(&mut conn, session, stream, rx, kill_rx).await;
    metrics::gauge!("onlychat_connections").decrement(1);
    if let Some(code) = code {
        metrics::counter!("onlychat_ws_closes_total", "code" => code.to_string()).increment(1);
    }
    conn.finish().await;
}

/// The select loop; returns the close code the server sent, if any.
async fn serve(
    conn: &mut Conn,
    mut session: Session,
    mut stream: AggregatedMessageStream,
    mut outbound: mpsc::Receiver<Arc<str>>,
    mut kill: watch::Receiver<Option<u16>>,
) -> Option<u16> {
    let node = conn.node.clone();
    let heartbeat = node.settings.heartbeat;
    let welcome = conn.welcome().to_text();
    if session.text(welcome).await.is_err() {
        return None;
    }
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let code = loop {
        let expiry = conn.expires_at();
        tokio::select! {
            biased;
            _ = kill.changed() => break (*kill.borrow()).unwrap_or(close::INTERNAL),
            () = node.shutdown.cancelled() => break close::GOING_AWAY_RESTART,
            () = sleep_until(expiry) => break close::TOKEN_EXPIRED,
            Some(text) = outbound.recv() => {
                if session.text(text.to_string()).await.is_err() {
                    return None;
                }
            }
            msg = stream.recv() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        conn.on_text(&text).await;
                        for frame in std::mem::take(&mut conn.direct) {
                            if session.text(frame.to_string()).await.is_err() {
                                return None;
                            }
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => conn.reply(ServerFrame::Error {
                        code: onlychat_protocol::ErrorCode::BadFrame,
                        message: "frames are JSON text, not binary".into(),
                        r#ref: None,
                        room: None,
                        client_id: None,
                    }),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) | None => {
                        let _ = session.close(None).await;
                        return None;
                    }
                    Some(Err(actix_ws::ProtocolError::Overflow)) => break close::TOO_BIG,
                    Some(Err(_)) => break close::PROTOCOL_ERROR,
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > heartbeat * 2 {
                    tracing::debug!("peer missed two heartbeats; closing");
                    return None;
                }
                if session.ping(b"").await.is_err() {
                    return None;
                }
            }
        }
    };
    if code == close::GOING_AWAY_RESTART {
        // Drain: read nothing more, but answer the sends already accepted before closing.
        finish_in_flight(conn, &mut session, &mut outbound).await;
    }
    refuse(session, code, reason_for(code)).await;
    Some(code)
}

/// Longest a draining socket waits for the answers to its in-flight sends.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// Writes queued frames until every in-flight send of the connection has its ack or error.
async fn finish_in_flight(
    conn: &Conn,
    session: &mut Session,
    outbound: &mut mpsc::Receiver<Arc<str>>,
) {
    let settled = conn.settled();
    let grace = tokio::time::sleep(IN_FLIGHT_GRACE);
    tokio::pin!(settled, grace);
    loop {
        tokio::select! {
            biased;
            Some(text) = outbound.recv() => {
                if session.text(text.to_string()).await.is_err() {
                    return;
                }
            }
            () = &mut settled => break,
            () = &mut grace => break,
        }
    }
    while let Ok(text) = outbound.try_recv() {
        if session.text(text.to_string()).await.is_err() {
            return;
        }
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        close::LOGGED_OUT => "logged out",
        close::REPLACED => "session replaced by a newer login",
        close::TOKEN_EXPIRED => "access token expired",
        close::REVOKED => "session revoked",
        close::TOO_SLOW => "too slow: outbound queue overflowed",
        close::GOING_AWAY_RESTART => "node shutting down",
        close::TOO_BIG => "frame or message too large",
        close::PROTOCOL_ERROR => "websocket protocol violation",
        _ => "closing",
    }
}

/// Deadline helper for `expires_at` in unix seconds.
pub(crate) fn instant_at(unix_secs: i64) -> Instant {
    let now = chrono::Utc::now().timestamp();
    let secs = u64::try_from(unix_secs.saturating_sub(now)).unwrap_or(0);
    Instant::now() + Duration::from_secs(secs)
}
