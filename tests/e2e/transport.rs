//! Transport security on the real binary: HTTPS and WSS with a certificate made at test time,
//! plain HTTP on the TLS port, TLS and origin setting errors, CORS and the WebSocket `Origin`
//! check, and no token or password in the process log. All on standalone (no outside service)
//! except one cluster test of the gateway's CORS, which needs the shared services.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use onlychat_e2e::{Cluster, ClusterOptions, Proc, unique};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

impl TestCert {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("onlychat-tls-"));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let pem = made.cert.pem();
        std::fs::write(&cert, &pem).expect("write cert");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
        Self {
            dir,
            cert,
            key,
            pem,
        }
    }

    /// An HTTPS client trusting only this certificate.
    fn https_client(&self) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("pem");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .build()
            .expect("https client")
    }

    /// A WSS connector trusting only this certificate (ring provider).
    fn wss_connector(&self) -> Connector {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.pem.as_bytes())
            .expect("certificate der");
        roots.add(der).expect("trust the test certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Connector::Rustls(Arc::new(config))
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn data_dir() -> String {
    std::env::temp_dir()
        .join(unique("onlychat-transport-"))
        .display()
        .to_string()
}

/// A standalone serving HTTPS with the certificate given by flags.
async fn tls_standalone(cert: &TestCert, client: &reqwest::Client) -> Proc {
    let dir = data_dir();
    let (c, k) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let args = [
        "standalone",
        "--data-dir",
        &dir,
        "--tls-cert",
        &c,
        "--tls-key",
        &k,
    ];
    Proc::spawn_tls("standalone-tls", &args, &[], client).await
}

/// A plain-HTTP standalone with `env`.
async fn standalone(env: &[(&str, String)]) -> Proc {
    let dir = data_dir();
    Proc::spawn("standalone", &["standalone", "--data-dir", &dir], env).await
}

/// POSTs JSON; status and body (Null if none).
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers and logs in `name` with `password`; the token pair.
async fn user(client: &reqwest::Client, base: &str, name: &str, password: &str) -> Value {
    let body = json!({"username": name, "password": password});
    let (status, reply) = post(client, &format!("{base}/v1/auth/register"), &body).await;
    assert_eq!(status, 201, "register: {reply}");
    let (status, pair) = post(client, &format!("{base}/v1/auth/login"), &body).await;
    assert_eq!(status, 200, "login: {pair}");
    pair
}

fn token<'a>(pair: &'a Value, field: &str) -> &'a str {
    pair[field].as_str().expect("token field")
}

/// Opens `/ws` with optional bearer token and Origin, through `connector` for `wss://`.
async fn open(
    url: &str,
    bearer: Option<&str>,
    origin: Option<&str>,
    connector: Option<Connector>,
) -> Result<Socket, tungstenite::Error> {
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        headers.insert("Authorization", value);
    }
    if let Some(origin) = origin {
        headers.insert("Origin", HeaderValue::from_str(origin).expect("origin"));
    }
    let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
    let (socket, _) = tokio::time::timeout(WAIT, connect)
        .await
        .expect("upgrade answered in time")?;
    Ok(socket)
}

/// The next text frame as JSON, or the close code (`Err`) if the server closed.
async fn next(socket: &mut Socket) -> Result<Value, Option<u16>> {
    loop {
        let item = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame or a close in time");
        match item {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(&text).expect("frames are JSON"));
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return Err(None),
        }
    }
}

async fn send(socket: &mut Socket, frame: &str) {
    socket
        .send(Message::text(frame.to_owned()))
        .await
        .expect("send frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_serve_the_api_and_the_socket_with_a_pem_certificate() {
    let cert = TestCert::new();
    let client = cert.https_client();
    let server = tls_standalone(&cert, &client).await;
    let base = server.https_url();
    let pair = user(&client, &base, "alice", "password-alice").await;
    let access = token(&pair, "access_token");
    let me = client
        .get(format!("{base}/v1/auth/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("me over https");
    assert_eq!(me.status(), 200);

    let mut socket = open(
        &server.wss_url(),
        Some(access),
        None,
        Some(cert.wss_connector()),
    )
    .await
    .expect("wss upgrade accepted");
    let welcome = next(&mut socket).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["user_id"], pair["user_id"]);
    send(&mut socket, r#"{"type":"ping","ref":"p1"}"#).await;
    let pong = next(&mut socket).await.expect("pong");
    assert_eq!(
        (pong["type"].as_str(), pong["ref"].as_str()),
        (Some("pong"), Some("p1"))
    );
    // A client that does not trust the certificate is refused at the handshake.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");
    assert!(
        untrusting
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_fails_cleanly_and_the_server_stays_up() {
    let cert = TestCert::new();
    let client = cert.https_client();
    let dir = data_dir();
    // The files given through the environment this time.
    let env = [
        ("ONLYCHAT_TLS_CERT", cert.cert.display().to_string()),
        ("ONLYCHAT_TLS_KEY", cert.key.display().to_string()),
    ];
    let args = ["standalone", "--data-dir", &dir];
    let mut server = Proc::spawn_tls("standalone-tls", &args, &env, &client).await;

    let plain = reqwest::Client::new();
    let attempt = tokio::time::timeout(
        WAIT,
        plain.get(format!("{}/healthz", server.base_url())).send(),
    )
    .await
    .expect("plain HTTP is answered or dropped at once, not left hanging");
    assert!(attempt.is_err(), "plain HTTP got a response: {attempt:?}");
    let upgrade = open(&server.ws_url(), None, None, None).await;
    assert!(
        upgrade.is_err(),
        "a ws:// upgrade on the TLS port succeeded"
    );

    // Raw bytes: the server drops the connection (at most a TLS alert), never an HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut reply))
        .await
        .expect("the server closes the connection");
    assert!(
        read.is_err() || !reply.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP reply: {:?}",
        String::from_utf8_lossy(&reply)
    );

    assert!(
        server.is_running(),
        "the process exited:\n{}",
        server.log_text()
    );
    let health = client
        .get(format!("{}/healthz", server.https_url()))
        .send()
        .await
        .expect("https after the plain attempts");
    assert_eq!(health.status(), 200);
}

/// Runs `onlychat <args>` expecting it to exit at once; its exit code and stderr.
async fn exits(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(onlychat_e2e::process::binary());
    command
        .args(args)
        .env("ONLYCHAT_LISTEN", "127.0.0.1:0")
        .env_remove("ONLYCHAT_TLS_CERT")
        .env_remove("ONLYCHAT_TLS_KEY")
        .env_remove("ONLYCHAT_ALLOWED_ORIGINS")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("onlychat {args:?} kept running instead of exiting"))
        .expect("run onlychat");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `onlychat standalone` with `args`/`env` expecting it to refuse to start, before it
/// touches its data dir.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = data_dir();
    let all: Vec<&str> = ["standalone", "--data-dir", &dir]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let result = exits(&all, env).await;
    assert!(
        !Path::new(&dir).exists(),
        "the data dir was created before the setting was checked"
    );
    result
}

/// Exit code 2 and exactly one line on stderr, containing every one of `names`.
fn assert_config_error((code, stderr): (Option<i32>, String), names: &[&str]) {
    assert_eq!(code, Some(2), "exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    for name in names {
        assert!(
            lines[0].contains(name),
            "{name:?} missing from: {}",
            lines[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_or_origin_settings_exit_2_with_one_line_naming_the_flag() {
    let cert = TestCert::new();
    let (c, k) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );

    let half = refused(&["--tls-cert", &c], &[]).await;
    assert_config_error(half, &["--tls-key", "ONLYCHAT_TLS_KEY"]);
    let half = refused(&[], &[("ONLYCHAT_TLS_KEY", &k)]).await;
    assert_config_error(half, &["--tls-cert", "ONLYCHAT_TLS_CERT"]);

    let missing = cert.dir.join("no-such-cert.pem").display().to_string();
    let gone = refused(&["--tls-cert", &missing, "--tls-key", &k], &[]).await;
    assert_config_error(gone, &["--tls-cert", "ONLYCHAT_TLS_CERT", &missing]);
    let missing_key = cert.dir.join("no-such-key.pem").display().to_string();
    let gone = refused(&["--tls-cert", &c, "--tls-key", &missing_key], &[]).await;
    assert_config_error(gone, &["--tls-key", "ONLYCHAT_TLS_KEY", &missing_key]);

    let garbage = cert.dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .expect("write");
    let garbage = garbage.display().to_string();
    let bad = refused(&["--tls-cert", &garbage, "--tls-key", &k], &[]).await;
    assert_config_error(bad, &["--tls-cert", "ONLYCHAT_TLS_CERT"]);
    // A key file holding the certificate (no private key in it).
    let bad = refused(&["--tls-cert", &c, "--tls-key", &c], &[]).await;
    assert_config_error(bad, &["--tls-key", "ONLYCHAT_TLS_KEY"]);
    // A well-formed key that is not the certificate's.
    let other = TestCert::new();
    let other_key = other.key.display().to_string();
    let mismatch = refused(&["--tls-cert", &c, "--tls-key", &other_key], &[]).await;
    assert_config_error(mismatch, &["--tls-cert", "--tls-key"]);

    let origin = refused(
        &[],
        &[("ONLYCHAT_ALLOWED_ORIGINS", "https://chat.example/app")],
    )
    .await;
    assert_config_error(origin, &["--allowed-origins", "ONLYCHAT_ALLOWED_ORIGINS"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_node_check_the_same_settings_before_connecting_to_anything() {
    // Unreachable services: the settings are refused before any connection is tried.
    let services = [
        "--database-url",
        "postgres://127.0.0.1:1/none",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--kafka-brokers",
        "127.0.0.1:1",
        "--jwt-secret",
        "a-secret-that-is-at-least-32-bytes-long",
    ];
    for role in ["gateway", "node"] {
        let args: Vec<&str> = [role].into_iter().chain(services).collect();
        let origin = exits(&args, &[("ONLYCHAT_ALLOWED_ORIGINS", "*")]).await;
        assert_config_error(origin, &["--allowed-origins", "ONLYCHAT_ALLOWED_ORIGINS"]);
        let half = exits(&args, &[("ONLYCHAT_TLS_CERT", "/nonexistent/cert.pem")]).await;
        assert_config_error(half, &["--tls-key", "ONLYCHAT_TLS_KEY"]);
        let help = std::process::Command::new(onlychat_e2e::process::binary())
            .args([role, "--help"])
            .output()
            .expect("run onlychat --help");
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in ["--tls-cert", "--tls-key", "--allowed-origins"] {
            assert!(help.contains(flag), "{role} --help lacks {flag}:\n{help}");
        }
    }
}

/// A CORS preflight for `POST /v1/auth/login` from `origin`: status and headers.
async fn preflight(server: &Proc, origin: &str) -> (u16, HeaderMap) {
    let response = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/auth/login", server.base_url()),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    (response.status().as_u16(), response.headers().clone())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_and_the_socket_refuses_others_with_403() {
    const GOOD: &str = "https://chat.example";
    const EVIL: &str = "https://evil.example";
    let server = standalone(&[(
        "ONLYCHAT_ALLOWED_ORIGINS",
        format!("{GOOD},http://127.0.0.1:3000"),
    )])
    .await;

    let (status, headers) = preflight(&server, GOOD).await;
    assert!((200..300).contains(&status), "preflight status {status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(GOOD));
    let methods = header(&headers, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "allow-methods: {methods}");
    let allowed = header(&headers, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "allow-headers: {allowed}"
    );
    let (_, headers) = preflight(&server, EVIL).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // Actual requests: the allowed origin is echoed; another origin gets no CORS header.
    let client = reqwest::Client::new();
    let base = server.base_url();
    let body = json!({"username": "carol", "password": "password-carol"});
    let register = client
        .post(format!("{base}/v1/auth/register"))
        .header("Origin", GOOD)
        .json(&body)
        .send()
        .await
        .expect("register");
    assert_eq!(register.status(), 201);
    assert_eq!(
        header(register.headers(), "access-control-allow-origin"),
        Some(GOOD)
    );
    let login = client
        .post(format!("{base}/v1/auth/login"))
        .header("Origin", EVIL)
        .json(&body)
        .send()
        .await
        .expect("login");
    assert_eq!(header(login.headers(), "access-control-allow-origin"), None);
    let pair: Value = login.json().await.expect("token pair");
    let access = token(&pair, "access_token");

    match open(&server.ws_url(), Some(access), Some(EVIL), None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("an upgrade from a disallowed origin was accepted"),
    }
    let mut socket = open(&server.ws_url(), Some(access), Some(GOOD), None)
        .await
        .expect("an upgrade from an allowed origin");
    assert_eq!(next(&mut socket).await.expect("welcome")["type"], "welcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_gateway_answers_cors_and_nodes_check_the_origin() {
    // Needs the shared services (scripts/services.sh up), like every cluster test.
    const GOOD: &str = "https://chat.example";
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            env: vec![("ONLYCHAT_ALLOWED_ORIGINS", GOOD.to_owned())],
            ..ClusterOptions::default()
        },
    )
    .await;
    let (status, headers) = preflight(&cluster.gateway, GOOD).await;
    assert!((200..300).contains(&status), "preflight status {status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(GOOD));
    let (_, headers) = preflight(&cluster.gateway, "https://evil.example").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    let login = cluster.http().user("erin").await;
    let ws = cluster.ws_url(0);
    let evil = open(
        &ws,
        Some(&login.access_token),
        Some("https://evil.example"),
        None,
    )
    .await;
    assert!(
        matches!(&evil, Err(tungstenite::Error::Http(r)) if r.status() == 403),
        "expected 403, got {:?}",
        evil.map(|_| "an upgrade")
    );
    let mut socket = open(&ws, Some(&login.access_token), Some(GOOD), None)
        .await
        .expect("an upgrade from an allowed origin");
    assert_eq!(next(&mut socket).await.expect("welcome")["type"], "welcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allowed_origins_any_origin_is_echoed() {
    let server = standalone(&[]).await;
    let (status, headers) = preflight(&server, "https://anywhere.example").await;
    assert!((200..300).contains(&status), "preflight status {status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://anywhere.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_appear_in_the_log() {
    // Every onlychat target at trace, everything else at debug: stricter than any default.
    let env = [
        (
            "RUST_LOG",
            "debug,onlychat=trace,librdkafka=off,rdkafka=off".to_owned(),
        ),
        ("ONLYCHAT_SHUTDOWN_TIMEOUT", "2s".to_owned()),
    ];
    let mut server = standalone(&env).await;
    let client = reqwest::Client::new();
    let base = server.base_url();
    let name = unique("dave");
    let password = format!("pw-{}", unique("secret-"));
    let wrong = format!("pw-{}", unique("wrong-"));
    let first = user(&client, &base, &name, &password).await;
    let (status, _) = post(
        &client,
        &format!("{base}/v1/auth/login"),
        &json!({"username": name, "password": wrong}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, pair) = post(
        &client,
        &format!("{base}/v1/auth/refresh"),
        &json!({"refresh_token": token(&first, "refresh_token")}),
    )
    .await;
    assert_eq!(status, 200, "refresh: {pair}");
    let access = token(&pair, "access_token");
    let ws = server.ws_url();

    // Header auth, then a second `auth` frame (bad_frame).
    let mut socket = open(&ws, Some(access), None, None).await.expect("upgrade");
    assert_eq!(next(&mut socket).await.expect("welcome")["type"], "welcome");
    send(
        &mut socket,
        &json!({"type": "auth", "token": access}).to_string(),
    )
    .await;
    assert_eq!(next(&mut socket).await.expect("error")["type"], "error");
    drop(socket);
    // First-frame auth.
    let mut socket = open(&ws, None, None, None).await.expect("upgrade");
    send(
        &mut socket,
        &json!({"type": "auth", "token": access}).to_string(),
    )
    .await;
    assert_eq!(next(&mut socket).await.expect("welcome")["type"], "welcome");
    drop(socket);
    // A tampered token in an `auth` frame: 4004.
    let tampered = format!("{}x", &access[..access.len() - 1]);
    let mut socket = open(&ws, None, None, None).await.expect("upgrade");
    send(
        &mut socket,
        &json!({"type": "auth", "token": tampered}).to_string(),
    )
    .await;
    assert_eq!(next(&mut socket).await, Err(Some(4004)));
    // An unparsable first frame carrying the token and the password.
    let mut socket = open(&ws, None, None, None).await.expect("upgrade");
    send(
        &mut socket,
        &format!(r#"{{"type":"auth","token":"{access}","pw":"{password}""#),
    )
    .await;
    assert!(next(&mut socket).await.is_err(), "the socket is closed");
    // A token in the query string: upgraded, then closed with 1008.
    let query = format!("{ws}?token={access}");
    let mut socket = open(&query, None, None, None).await.expect("upgrade");
    assert_eq!(next(&mut socket).await, Err(Some(1008)));
    // A bad bearer header: 401 before the upgrade.
    assert!(open(&ws, Some(&tampered), None, None).await.is_err());

    // Stopped and drained, the log is complete.
    assert!(
        server.terminate(WAIT).await.is_some(),
        "no exit after SIGTERM"
    );
    let log = server.log_text();
    assert!(log.contains("stopped"), "the whole log read:\n{log}");
    let secrets = [
        ("the password", password.as_str()),
        ("the wrong password", wrong.as_str()),
        ("the first access token", token(&first, "access_token")),
        ("the first refresh token", token(&first, "refresh_token")),
        ("the access token", access),
        ("the refresh token", token(&pair, "refresh_token")),
        ("the tampered token", tampered.as_str()),
        ("a JWT", "eyJ"),
    ];
    for (what, secret) in secrets {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{what} is in the log {}:\n{}",
            server.log.display(),
            leaks.join("\n")
        );
    }
}
