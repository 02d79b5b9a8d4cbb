//! A raw WebSocket client over a bare TCP stream, for the input no client library would send:
//! lying length headers, fragments past the limit, invalid UTF-8, reserved opcodes, unmasked
//! frames, never answering pings.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opcodes used by the tests.
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A raw client on an upgraded socket.
pub struct RawWs {
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl RawWs {
    /// Connects to `addr` (`host:port`) and upgrades `/ws` with `headers` (e.g. Authorization).
    /// Returns the HTTP status line's code and, on 101, the client.
    pub async fn upgrade(addr: &str, headers: &[(String, String)]) -> (u16, Option<Self>) {
        let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
        let mut request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
                Ok(Ok(1)) => head.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let client = (status == 101).then(|| Self {
            stream,
            buffered: Vec::new(),
        });
        (status, client)
    }

    /// Writes one frame: `fin`, `opcode`, masked unless `unmasked`, with `payload`.
    pub async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = encode(fin, opcode, payload, true, None);
        let _ = self.stream.write_all(&bytes).await;
    }

    /// Writes a frame without the client mask (a protocol violation).
    pub async fn unmasked_frame(&mut self, opcode: u8, payload: &[u8]) {
        let bytes = encode(true, opcode, payload, false, None);
        let _ = self.stream.write_all(&bytes).await;
    }

    /// Writes only the header of a frame that claims `length` bytes of payload.
    pub async fn header_claiming(&mut self, opcode: u8, length: u64) {
        let bytes = encode(true, opcode, &[], true, Some(length));
        let _ = self.stream.write_all(&bytes).await;
    }

    /// Writes a masked text frame.
    pub async fn text(&mut self, text: &str) {
        self.frame(true, op::TEXT, text.as_bytes()).await;
    }

    /// The next frame, or `None` on EOF or after `within`.
    pub async fn read_frame(&mut self, within: Duration) -> Option<RawFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((frame, used)) = decode(&self.buffered) {
                self.buffered.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.buffered.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads until a close frame (its code) or EOF/timeout (`None`), collecting text payloads.
    pub async fn until_close(&mut self, within: Duration) -> (Vec<String>, Option<u16>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut texts = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Some(frame) if frame.opcode == op::CLOSE => return (texts, frame.close_code()),
                Some(frame) if frame.opcode == op::TEXT => {
                    texts.push(String::from_utf8_lossy(&frame.payload).into_owned());
                }
                Some(_) => {}
                None => return (texts, None),
            }
        }
    }
}

fn encode(fin: bool, opcode: u8, payload: &[u8], masked: bool, claim: Option<u64>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = claim.unwrap_or(payload.len() as u64);
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A server frame (never masked) from the front of `buf`, with the bytes it used.
fn decode(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, start) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let end = start + usize::try_from(len).ok()?;
    let payload = buf.get(start..end)?.to_vec();
    Some((
        RawFrame {
            opcode: b0 & 0x0f,
            payload,
        },
        end,
    ))
}
