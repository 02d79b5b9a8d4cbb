//! Opening a WebSocket from a chosen loopback source address, and reading text frames with a
//! deadline. Failures are reduced to short stable kinds (`refused`, `timeout`, `http_503`,
//! `closed_4001`, ...) that the report counts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub type Ws = WebSocketStream<TcpStream>;

/// Why a connection or handshake failed, as a report label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail(pub String);

impl Fail {
    pub fn new(kind: impl Into<String>) -> Self {
        Fail(kind.into())
    }
}

/// Jittered exponential backoff before connection attempt `attempt` (0 = the first retry):
/// 25-50 ms, doubling to 1-2 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(6)).min(2_000);
    Duration::from_millis(rand::Rng::random_range(&mut rand::rng(), base / 2..=base))
}

/// The `n`-th source address: 127.0.1.1, 127.0.1.2, ... (wrapping at `count`).
pub fn source_addr(n: usize, count: u16) -> IpAddr {
    let host = (n % usize::from(count)) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, host))
}

fn ws_fail(e: &WsError) -> Fail {
    match e {
        WsError::Http(response) => Fail(format!("http_{}", response.status().as_u16())),
        WsError::Io(io) => Fail(io_kind(io)),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Fail::new("closed"),
        WsError::Protocol(_) => Fail::new("protocol"),
        _ => Fail::new("websocket"),
    }
}

fn io_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused".into(),
        std::io::ErrorKind::ConnectionReset => "reset".into(),
        // Writing to a socket the server already closed (a publisher racing a 1012 close).
        std::io::ErrorKind::BrokenPipe => "broken_pipe".into(),
        std::io::ErrorKind::UnexpectedEof => "eof".into(),
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse => {
            "no_source_port".into()
        }
        _ if e.raw_os_error() == Some(24) => "too_many_open_files".into(),
        _ => "io".into(),
    }
}

/// Connects `url` from `source`, with an optional `Authorization: Bearer` header.
pub async fn open(url: &str, source: IpAddr, bearer: Option<&str>) -> Result<Ws, Fail> {
    let mut request = url
        .into_client_request()
        .map_err(|_| Fail::new("bad_url"))?;
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Fail::new("bad_token"))?;
        request.headers_mut().insert("authorization", value);
    }
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        return Err(Fail::new("only_ws_urls"));
    }
    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let target: SocketAddr = lookup_host((host, port))
        .await
        .map_err(|_| Fail::new("resolve"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| Fail::new("resolve"))?;
    let socket = TcpSocket::new_v4().map_err(|e| Fail(io_kind(&e)))?;
    if target.ip().is_loopback() {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| Fail(io_kind(&e)))?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| Fail(io_kind(&e)))?;
    stream.set_nodelay(true).map_err(|e| Fail(io_kind(&e)))?;
    // Small buffers: the generator holds tens of thousands of sockets.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| ws_fail(&e))?;
    Ok(ws)
}

/// The failure a close frame from the server means: `closed_<code>`, or `closed` without one.
pub fn closed(frame: Option<CloseFrame>) -> Fail {
    Fail(frame.map_or("closed".into(), |f| format!("closed_{}", u16::from(f.code))))
}

/// The next text frame before `deadline` (pings are answered by tungstenite itself).
pub async fn next_text(ws: &mut Ws, deadline: Instant) -> Result<String, Fail> {
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| Fail::new("timeout"))?;
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_fail(&e)),
            None => return Err(Fail::new("closed")),
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: String) -> Result<(), Fail> {
    ws.send(Message::text(text)).await.map_err(|e| ws_fail(&e))
}

/// Sends a close frame and waits briefly for the server's, so the server sees a clean close.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 0..20 {
            let wait = backoff(attempt);
            assert!(wait <= Duration::from_secs(2), "{wait:?}");
            assert!(wait >= Duration::from_millis(25), "{wait:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(50));
    }

    #[test]
    fn source_addresses_cycle_through_the_configured_count() {
        assert_eq!(source_addr(0, 16).to_string(), "127.0.1.1");
        assert_eq!(source_addr(15, 16).to_string(), "127.0.1.16");
        assert_eq!(source_addr(16, 16).to_string(), "127.0.1.1");
    }
}
