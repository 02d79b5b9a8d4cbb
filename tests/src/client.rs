//! Typed clients for the HTTP API and the WebSocket protocol.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP API.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Login {
    pub user_id: String,
    pub access_token: String,
    pub refresh_token: String,
    pub session_id: String,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// POSTs JSON; returns status and body (Null if empty).
    pub async fn post(&self, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GETs; returns status and body.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers `username` (password "password-<username>"); panics unless 201.
    pub async fn register(&self, username: &str) {
        let (status, body) = self
            .post(
                "/v1/auth/register",
                &json!({"username": username, "password": format!("password-{username}")}),
                None,
            )
            .await;
        assert_eq!(status, 201, "register {username}: {body}");
    }

    /// Logs in; panics unless 200.
    pub async fn login(&self, username: &str) -> Login {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                &json!({"username": username, "password": format!("password-{username}")}),
                None,
            )
            .await;
        assert_eq!(status, 200, "login {username}: {body}");
        Login {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            access_token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
            session_id: body["session_id"].as_str().expect("session_id").to_owned(),
        }
    }

    /// Registers and logs in.
    pub async fn user(&self, username: &str) -> Login {
        self.register(username).await;
        self.login(username).await
    }
}

/// A WebSocket chat client.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl Ws {
    /// Connects with `Authorization: Bearer`; expects `welcome`.
    pub async fn connect(url: &str, token: &str) -> Self {
        let mut ws = Self::open(url, Some(token))
            .await
            .expect("upgrade accepted");
        ws.welcome = ws.expect("welcome").await;
        ws
    }

    /// Opens a socket (optionally with a bearer header) without waiting for anything.
    pub async fn open(url: &str, token: Option<&str>) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| tungstenite::Error::Utf8(String::new()))?;
            request.headers_mut().insert("Authorization", value);
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self {
            stream,
            welcome: Value::Null,
        })
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .expect("send frame");
    }

    /// Sends a JSON frame, ignoring a failure (the server may already have closed).
    pub async fn send_lossy(&mut self, frame: Value) {
        let _ = self.stream.send(Message::text(frame.to_string())).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("send text");
    }

    /// The next JSON frame (skipping pings); panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_event(FRAME_TIMEOUT).await {
            Event::Frame(value) => value,
            Event::Closed(code) => panic!("socket closed with {code:?} while a frame was expected"),
            Event::Timeout => panic!("no frame within {FRAME_TIMEOUT:?}"),
        }
    }

    /// The next frame of `kind`, skipping others (presence, typing...).
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(
                !(frame["type"] == "error" && kind != "error"),
                "expected `{kind}` but got an error frame: {frame}"
            );
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn expect_close(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Frame(_) => {}
                Event::Closed(code) => return code,
                Event::Timeout => panic!("socket still open after {within:?}"),
            }
        }
    }

    /// Every frame until the server closes the socket, and the close code.
    pub async fn frames_until_close(&mut self, within: Duration) -> (Vec<Value>, Option<u16>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Frame(frame) => frames.push(frame),
                Event::Closed(code) => return (frames, code),
                Event::Timeout => panic!("socket still open after {within:?}"),
            }
        }
    }

    /// The next frame within `within`, or `None` if none came.
    pub async fn try_recv(&mut self, within: Duration) -> Option<Value> {
        match self.next_event(within).await {
            Event::Frame(frame) => Some(frame),
            Event::Closed(code) => panic!("socket closed with {code:?} while a frame was expected"),
            Event::Timeout => None,
        }
    }

    /// Joins a room; returns the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "ref": format!("join-{room}")}))
            .await;
        self.expect("joined").await
    }

    async fn next_event(&mut self, within: Duration) -> Event {
        // One deadline for the whole wait: server pings must not keep extending it.
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match next {
                Err(_) => return Event::Timeout,
                Ok(None) => return Event::Closed(None),
                Ok(Some(Err(_))) => return Event::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("server frames are JSON");
                    check_server_frame(&frame);
                    return Event::Frame(frame);
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

enum Event {
    Frame(Value),
    Closed(Option<u16>),
    Timeout,
}

/// Panics unless `frame` follows the server frame schema: every frame any test receives is
/// checked, so the schema and the node cannot drift apart.
fn check_server_frame(frame: &Value) {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let text = include_str!("../../crates/protocol/schema/server-frames.schema.json");
        let schema: Value = serde_json::from_str(text).expect("the server frame schema is JSON");
        jsonschema::validator_for(&schema).expect("the server frame schema is a JSON Schema")
    });
    let errors: Vec<String> = schema.iter_errors(frame).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "a server frame breaks crates/protocol/schema/server-frames.schema.json: {errors:?}\n{frame}"
    );
}
