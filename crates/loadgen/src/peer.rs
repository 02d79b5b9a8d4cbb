//! One adapter per wire protocol, so every system runs the same scenario with the same client:
//! where to connect, how to authenticate and subscribe, how to publish, and which incoming
//! frames are pings to answer or errors to count. The frame shapes are in bench/peers/README.md.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::cli::PeerKind;
use crate::conn::{Fail, Ws, next_text, send_text};

/// What an incoming frame means to a connection in its steady state.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An application-level ping: send this reply.
    Ping(&'static str),
    /// The server refused something (counted by this label).
    Error(String),
    Other,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub kind: PeerKind,
    pub pusher_key: String,
    pub pusher_secret: String,
}

impl Peer {
    /// The WebSocket URL under `base` (e.g. `ws://127.0.0.1:8080`).
    pub fn url(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self.kind {
            PeerKind::Onlychat | PeerKind::Raw => format!("{base}/ws"),
            PeerKind::Centrifugo => format!("{base}/connection/websocket"),
            PeerKind::Pusher => format!(
                "{base}/app/{}?protocol=7&client=onlychat-loadgen&version=1",
                self.pusher_key
            ),
            PeerKind::Socketio => format!("{base}/socket.io/?EIO=4&transport=websocket"),
        }
    }

    pub fn channel(&self, prefix: &str, room: usize) -> String {
        match self.kind {
            PeerKind::Pusher => format!("private-{prefix}-{room}"),
            _ => format!("{prefix}-{room}"),
        }
    }

    /// The token in an `Authorization` header (onlychat) rather than in a frame.
    pub fn header_token<'t>(&self, token: Option<&'t str>) -> Option<&'t str> {
        (self.kind == PeerKind::Onlychat).then_some(token).flatten()
    }

    /// Authenticates and subscribes to `channels`, before `deadline`. Returns onlychat's
    /// `joined` frames (a resuming client reads each room's position from them); other peers'
    /// replies are not kept.
    pub async fn establish(
        &self,
        ws: &mut Ws,
        token: Option<&str>,
        channels: &[String],
        deadline: Instant,
    ) -> Result<Vec<String>, Fail> {
        match self.kind {
            PeerKind::Onlychat | PeerKind::Raw => onlychat_establish(ws, channels, deadline).await,
            PeerKind::Centrifugo => {
                centrifugo_establish(ws, token.unwrap_or_default(), channels, deadline).await?;
                Ok(Vec::new())
            }
            PeerKind::Pusher => {
                self.pusher_establish(ws, channels, deadline).await?;
                Ok(Vec::new())
            }
            PeerKind::Socketio => {
                socketio_establish(ws, token.unwrap_or_default(), channels, deadline).await?;
                Ok(Vec::new())
            }
        }
    }

    /// The frame that publishes `body` to `channel`; `seq` numbers it within the connection.
    pub fn publish(&self, channel: &str, body: &str, client_id: &str, seq: u64) -> String {
        match self.kind {
            PeerKind::Onlychat | PeerKind::Raw => {
                json!({"type": "send", "room": channel, "body": body, "client_id": client_id})
                    .to_string()
            }
            PeerKind::Centrifugo => {
                json!({"id": seq + 100, "publish": {"channel": channel, "data": {"body": body}}})
                    .to_string()
            }
            PeerKind::Pusher => {
                json!({"event": "client-msg", "channel": channel, "data": {"body": body}})
                    .to_string()
            }
            PeerKind::Socketio => format!("42{}", json!(["send", {"room": channel, "body": body}])),
        }
    }

    pub fn classify(&self, frame: &str) -> Incoming {
        match self.kind {
            PeerKind::Onlychat | PeerKind::Raw => {
                if frame.contains(r#""type":"error""#) {
                    let code = serde_json::from_str::<Value>(frame)
                        .ok()
                        .and_then(|v| v["code"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "error".into());
                    Incoming::Error(code)
                } else {
                    Incoming::Other
                }
            }
            PeerKind::Centrifugo => {
                if frame.lines().any(|line| line.trim() == "{}") {
                    Incoming::Ping("{}")
                } else if frame.contains(r#""error":{"#) {
                    Incoming::Error("centrifugo_error".into())
                } else {
                    Incoming::Other
                }
            }
            PeerKind::Pusher => {
                if frame.contains("pusher:ping") {
                    Incoming::Ping(r#"{"event":"pusher:pong","data":{}}"#)
                } else if frame.contains("pusher:error") {
                    Incoming::Error("pusher_error".into())
                } else {
                    Incoming::Other
                }
            }
            PeerKind::Socketio => match frame {
                "2" => Incoming::Ping("3"),
                f if f.starts_with("44") => Incoming::Error("socketio_connect_error".into()),
                _ => Incoming::Other,
            },
        }
    }

    async fn pusher_establish(
        &self,
        ws: &mut Ws,
        channels: &[String],
        deadline: Instant,
    ) -> Result<(), Fail> {
        let socket_id = loop {
            let frame = next_text(ws, deadline).await?;
            let value: Value =
                serde_json::from_str(&frame).map_err(|_| Fail::new("bad_handshake"))?;
            match value["event"].as_str() {
                Some("pusher:connection_established") => {
                    // `data` is itself a JSON document in a string.
                    let data: Value = value["data"]
                        .as_str()
                        .and_then(|d| serde_json::from_str(d).ok())
                        .unwrap_or_default();
                    break data["socket_id"]
                        .as_str()
                        .ok_or_else(|| Fail::new("bad_handshake"))?
                        .to_owned();
                }
                Some("pusher:error") => return Err(Fail::new("pusher_error")),
                _ => {}
            }
        };
        for channel in channels {
            let signature = hmac_sha256_hex(
                self.pusher_secret.as_bytes(),
                format!("{socket_id}:{channel}").as_bytes(),
            );
            let auth = format!("{}:{signature}", self.pusher_key);
            send_text(
                ws,
                json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}})
                    .to_string(),
            )
            .await?;
            wait_for(ws, deadline, |f| {
                verdict(
                    f,
                    "pusher_internal:subscription_succeeded",
                    &["pusher:error", "subscription_error"],
                    "subscribe_refused",
                )
            })
            .await?;
        }
        Ok(())
    }
}

/// A handshake reply's meaning: `accepted` in the frame is success, any of `refused` is the
/// failure `kind`, anything else is not the reply yet.
fn verdict(frame: &str, accepted: &str, refused: &[&str], kind: &str) -> Option<Result<(), Fail>> {
    if frame.contains(accepted) {
        Some(Ok(()))
    } else if refused.iter().any(|r| frame.contains(r)) {
        Some(Err(Fail::new(kind)))
    } else {
        None
    }
}

/// Reads frames until `check` decides.
async fn wait_for(
    ws: &mut Ws,
    deadline: Instant,
    mut check: impl FnMut(&str) -> Option<Result<(), Fail>>,
) -> Result<(), Fail> {
    loop {
        let frame = next_text(ws, deadline).await?;
        if let Some(outcome) = check(&frame) {
            return outcome;
        }
    }
}

async fn onlychat_establish(
    ws: &mut Ws,
    channels: &[String],
    deadline: Instant,
) -> Result<Vec<String>, Fail> {
    wait_for(ws, deadline, |f| {
        f.contains(r#""type":"welcome""#).then_some(Ok(()))
    })
    .await?;
    let mut joined = Vec::with_capacity(channels.len());
    for channel in channels {
        send_text(ws, json!({"type": "join", "room": channel}).to_string()).await?;
        wait_for(ws, deadline, |f| {
            let outcome = verdict(
                f,
                r#""type":"joined""#,
                &[r#""type":"error""#],
                "join_refused",
            );
            if matches!(outcome, Some(Ok(()))) {
                joined.push(f.to_owned());
            }
            outcome
        })
        .await?;
    }
    Ok(joined)
}

async fn centrifugo_establish(
    ws: &mut Ws,
    token: &str,
    channels: &[String],
    deadline: Instant,
) -> Result<(), Fail> {
    send_text(
        ws,
        json!({"id": 1, "connect": {"token": token, "name": "onlychat-loadgen"}}).to_string(),
    )
    .await?;
    let reply = |id: u64| {
        move |f: &str| {
            f.lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["id"].as_u64() == Some(id)).then(|| {
                    if v.get("error").is_some() {
                        Err(Fail::new(format!("centrifugo_{}", v["error"]["code"])))
                    } else {
                        Ok(())
                    }
                })
            })
        }
    };
    wait_for(ws, deadline, reply(1)).await?;
    for (n, channel) in channels.iter().enumerate() {
        let id = 2 + n as u64;
        send_text(
            ws,
            json!({"id": id, "subscribe": {"channel": channel}}).to_string(),
        )
        .await?;
        wait_for(ws, deadline, reply(id)).await?;
    }
    Ok(())
}

async fn socketio_establish(
    ws: &mut Ws,
    token: &str,
    channels: &[String],
    deadline: Instant,
) -> Result<(), Fail> {
    wait_for(ws, deadline, |f| f.starts_with('0').then_some(Ok(()))).await?;
    send_text(ws, format!("40{}", json!({"token": token}))).await?;
    wait_for(ws, deadline, |f| {
        if f.starts_with("40") {
            Some(Ok(()))
        } else if f.starts_with("44") {
            Some(Err(Fail::new("socketio_auth_refused")))
        } else {
            None
        }
    })
    .await?;
    for (n, channel) in channels.iter().enumerate() {
        send_text(ws, format!("42{n}{}", json!(["join", channel]))).await?;
        let ack = format!("43{n}");
        wait_for(ws, deadline, |f| f.starts_with(&ack).then_some(Ok(()))).await?;
    }
    Ok(())
}

/// HMAC-SHA256 (RFC 2104) as lowercase hex: the Pusher private-channel signature.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(kind: PeerKind) -> Peer {
        Peer {
            kind,
            pusher_key: "278d425bdf160c739803".into(),
            pusher_secret: "7ad3773142a6692b25b8".into(),
        }
    }

    #[test]
    fn the_pusher_signature_matches_the_pusher_documentation_example() {
        // https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
        let signature = hmac_sha256_hex(b"7ad3773142a6692b25b8", b"1234.1234:private-foobar");
        assert_eq!(
            signature,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn pings_of_each_protocol_get_their_reply() {
        assert_eq!(peer(PeerKind::Socketio).classify("2"), Incoming::Ping("3"));
        assert_eq!(
            peer(PeerKind::Centrifugo).classify("{}"),
            Incoming::Ping("{}")
        );
        assert!(matches!(
            peer(PeerKind::Pusher).classify(r#"{"event":"pusher:ping","data":{}}"#),
            Incoming::Ping(_)
        ));
        assert_eq!(
            peer(PeerKind::Onlychat)
                .classify(r#"{"type":"error","code":"rate_limited","message":"x"}"#),
            Incoming::Error("rate_limited".into())
        );
        assert_eq!(
            peer(PeerKind::Onlychat).classify(r#"{"type":"message","body":"lg|1|2|3|"}"#),
            Incoming::Other
        );
    }

    #[test]
    fn publish_frames_name_the_channel_and_carry_the_body() {
        for kind in [
            PeerKind::Onlychat,
            PeerKind::Centrifugo,
            PeerKind::Pusher,
            PeerKind::Socketio,
        ] {
            let frame = peer(kind).publish("room-1", "lg|1|2|3|", "c-1", 1);
            assert!(
                frame.contains("room-1") && frame.contains("lg|1|2|3|"),
                "{frame}"
            );
        }
    }
}
