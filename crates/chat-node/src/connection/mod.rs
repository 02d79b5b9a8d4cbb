//! One task per socket. It selects over: client frames, its bounded outbound queue, the kill
//! switch (eviction, slow consumer, drain), the heartbeat tick and the token's expiry.
//! `frames.rs` holds what each client frame does; this file is the socket adapter around it.

mod flood;
mod frames;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use onlychat_auth::Claims;
use onlychat_protocol::{ClientFrame, ServerFrame, close, parse_client_frame};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::Node;
use crate::frame_guard::is_overflow;
use crate::registry::{ConnHandle, Frame};
use crate::upgrade::admit;
pub(crate) use frames::Conn;

/// Closes a socket at once with `code`; a peer that does not even take the close frame within
/// [`CLOSE_WRITE_LIMIT`] is just dropped.
pub async fn refuse(session: Session, code: u16, reason: &str) {
    let close = session.close(Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(reason.to_owned()),
    }));
    let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, close).await;
}

/// Most queued frames written in one turn of the socket loop.
const OUTBOUND_BATCH: usize = 64;

/// How long a close frame may wait for a full socket.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// Writes one frame. A peer that does not take it within `limit` (its socket and the session's
/// buffer stay full: it stopped reading) is too slow: `Err(Some(4008))`. `Err(None)`: gone.
async fn write(session: &mut Session, text: Frame, limit: Duration) -> Result<(), Option<u16>> {
    match tokio::time::timeout(limit, session.text(text)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(close::TOO_SLOW)),
    }
}

/// Waits for the first frame to be a valid `auth` (browser flow); its claims and its `ref`,
/// which `welcome` echoes.
async fn authenticate(
    node: &Node,
    stream: &mut AggregatedMessageStream,
) -> Result<(Claims, Option<String>), u16> {
    let first = tokio::time::timeout(node.settings.auth_timeout, stream.recv()).await;
    let Ok(Some(Ok(AggregatedMessage::Text(text)))) = first else {
        return Err(close::NOT_AUTHENTICATED);
    };
    match parse_client_frame(&text) {
        Ok(inbound) => match inbound.frame {
            ClientFrame::Auth { token } => admit(node, &token)
                .map(|claims| (claims, inbound.r#ref))
                .map_err(|(_, code)| code),
            _ => Err(close::NOT_AUTHENTICATED),
        },
        Err(_) => Err(close::NOT_AUTHENTICATED),
    }
}

/// Runs one socket from authentication to close.
///
/// Sub-futures that run once (authentication, the drain, the close, leaving the rooms) are
/// boxed, so an idle socket's task does not carry their state.
pub async fn run(
    node: Arc<Node>,
    session: Session,
    mut stream: AggregatedMessageStream,
    claims: Option<Claims>,
) {
    let (claims, auth_ref) = match claims {
        Some(claims) => (claims, None),
        None => match Box::pin(authenticate(&node, &mut stream)).await {
            Ok(answered) => answered,
            Err(code) => return Box::pin(refuse(session, code, "authentication failed")).await,
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
    if let Some(code) = node.revocation_of(&claims) {
        node.registry.detach(&handle);
        return Box::pin(refuse(session, code, "session revoked")).await;
    }
    metrics::gauge!("onlychat_connections").increment(1);
    let mut conn = Conn::new(node.clone(), handle, claims);
    let code = serve(&mut conn, auth_ref, session, stream, rx, kill_rx).await;
    metrics::gauge!("onlychat_connections").decrement(1);
    if let Some(code) = code {
        metrics::counter!("onlychat_ws_closes_total", "code" => code.to_string()).increment(1);
    }
    Box::pin(conn.finish()).await;
}

/// The select loop; returns the close code the server sent, if any.
async fn serve(
    conn: &mut Conn,
    auth_ref: Option<String>,
    mut session: Session,
    mut stream: AggregatedMessageStream,
    mut outbound: mpsc::Receiver<Frame>,
    mut kill: watch::Receiver<Option<u16>>,
) -> Option<u16> {
    let node = conn.node.clone();
    let heartbeat = node.settings.heartbeat;
    let welcome = conn.welcome(auth_ref).to_text();
    if session.text(welcome).await.is_err() {
        return None;
    }
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    // Both timers live across iterations and are reset only when their deadline moves: a
    // fresh `sleep_until` per iteration would add and remove a timer entry for every frame
    // written, which showed in the fan-out profile.
    let mut armed_exp = conn.expiry_unix();
    let expiry = sleep_until(conn.expires_at());
    let silence = sleep_until(Instant::now() + heartbeat * 2);
    let shutdown = node.closing.cancelled();
    tokio::pin!(expiry, silence, shutdown);
    let code = 'serve: loop {
        if armed_exp != conn.expiry_unix() {
            armed_exp = conn.expiry_unix();
            expiry.as_mut().reset(conn.expires_at());
        }
        tokio::select! {
            biased;
            _ = kill.changed() => break (*kill.borrow()).unwrap_or(close::INTERNAL),
            () = &mut shutdown => break close::GOING_AWAY_RESTART,
            () = &mut expiry => break close::TOKEN_EXPIRED,
            // Nothing heard (not even a pong) for two intervals: the peer is gone.
            () = &mut silence => {
                tracing::debug!("peer silent for two heartbeats; dropping it");
                metrics::counter!("onlychat_dead_peers_total").increment(1);
                return None;
            }
            Some(text) = outbound.recv() => {
                // Whatever else is already queued goes out in the same turn (up to a bound,
                // so kills and pings are still looked at), saving a select round per frame.
                let mut next = Some(text);
                let mut written = 0;
                while let Some(text) = next.take() {
                    match write(&mut session, text, heartbeat).await {
                        Ok(()) => {}
                        Err(Some(code)) => break 'serve code,
                        Err(None) => return None,
                    }
                    written += 1;
                    if written < OUTBOUND_BATCH {
                        next = outbound.try_recv().ok();
                    }
                }
            }
            msg = stream.recv() => {
                silence.as_mut().reset(Instant::now() + heartbeat * 2);
                match msg {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        // A bug in one frame's handling ends this socket (1011), never the node,
                        // and the socket still leaves its rooms through `finish`.
                        let handled = AssertUnwindSafe(conn.on_text(&text)).catch_unwind().await;
                        if handled.is_err() {
                            tracing::error!("a frame handler panicked; closing that socket with 1011");
                            metrics::counter!("onlychat_connection_panics_total").increment(1);
                            break close::INTERNAL;
                        }
                        let mut stalled = None;
                        for frame in std::mem::take(&mut conn.direct) {
                            match write(&mut session, frame, heartbeat).await {
                                Ok(()) => {}
                                Err(Some(code)) => stalled = Some(code),
                                Err(None) => return None,
                            }
                        }
                        if let Some(code) = stalled.or_else(|| conn.close_with.take()) {
                            break code;
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
                    // The peer closes: echo its code (RFC 6455 5.5.1), so the close frame it
                    // gets back is never an empty one (read as 1005).
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        let echo = reason.map(|r| CloseReason { code: r.code, description: None });
                        let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, session.close(echo)).await;
                        return None;
                    }
                    None => return None,
                    // Both raised before the rest of the frame or message is buffered: a frame
                    // header over the limit, or a fragment that takes the message over it.
                    Some(Err(actix_ws::ProtocolError::Overflow)) => break close::TOO_BIG,
                    Some(Err(actix_ws::ProtocolError::Io(e))) if is_overflow(&e) => break close::TOO_BIG,
                    // A text frame (or reassembled message) that is not UTF-8: nothing of it
                    // reached `on_text`. (Reserved bits are InvalidData too, but a 1002.)
                    Some(Err(actix_ws::ProtocolError::Io(e))) if is_bad_utf8(&e) => break close::INVALID_UTF8,
                    Some(Err(_)) => break close::PROTOCOL_ERROR,
                }
            }
            _ = tick.tick() => {
                if session.ping(b"").await.is_err() {
                    return None;
                }
            }
        }
    };
    if matches!(code, close::GOING_AWAY_RESTART | close::RATE_LIMITED) {
        // Drain, or a flooder cut off: read nothing more, but answer the sends already
        // accepted before closing, so the client knows which of them were stored.
        Box::pin(finish_in_flight(conn, &mut session, &mut outbound)).await;
    }
    Box::pin(refuse(session, code, reason_for(code))).await;
    Some(code)
}

/// Whether the codec refused a text frame or message for not being UTF-8 (its error message is
/// the `Utf8Error`'s: "invalid utf-8 sequence ..." or "incomplete utf-8 byte sequence ...").
fn is_bad_utf8(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData
        && e.to_string().to_ascii_lowercase().contains("utf-8")
}

/// Longest a draining socket waits for the answers to its in-flight sends.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// Writes queued frames until every in-flight send of the connection has its ack or error.
/// A peer that stops taking them is given up on like any slow one (each write is bounded).
async fn finish_in_flight(
    conn: &Conn,
    session: &mut Session,
    outbound: &mut mpsc::Receiver<Frame>,
) {
    let settled = conn.settled();
    let grace = tokio::time::sleep(IN_FLIGHT_GRACE);
    tokio::pin!(settled, grace);
    loop {
        tokio::select! {
            biased;
            Some(text) = outbound.recv() => {
                if write(session, text, CLOSE_WRITE_LIMIT).await.is_err() {
                    return;
                }
            }
            () = &mut settled => break,
            () = &mut grace => break,
        }
    }
    while let Ok(text) = outbound.try_recv() {
        if write(session, text, CLOSE_WRITE_LIMIT).await.is_err() {
            return;
        }
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        close::LOGGED_OUT => "logged out",
        close::REPLACED => "session replaced by a newer login",
        close::TOKEN_EXPIRED => "access token expired",
        close::RATE_LIMITED => "rate limit exceeded repeatedly",
        close::INVALID_UTF8 => "text frame is not valid UTF-8",
        close::INTERNAL => "internal error",
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
