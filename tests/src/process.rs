//! Finding the services and running `onlychat` processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where the test services listen (from `scripts/services.sh env`).
#[derive(Clone, Debug)]
pub struct Services {
    pub redis_url: String,
    pub pg_admin_url: String,
    pub kafka_brokers: String,
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services with `scripts/services.sh up` and `eval $(scripts/services.sh env)`, or run `scripts/test.sh`")
    })
}

async fn reachable(what: &str, address: &str) {
    let connect = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => {}
        _ => panic!(
            "{what} is not reachable at {address}: run `scripts/services.sh up` (this test needs the real service)"
        ),
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

impl Services {
    /// Reads the service addresses and checks each answers; panics with a clear message if not.
    pub async fn from_env() -> Self {
        let services = Self {
            redis_url: required_env("ONLYCHAT_TEST_REDIS_URL"),
            pg_admin_url: required_env("ONLYCHAT_TEST_DATABASE_URL"),
            kafka_brokers: required_env("ONLYCHAT_TEST_KAFKA_BROKERS"),
        };
        reachable("Redis", &host_port(&services.redis_url)).await;
        reachable("PostgreSQL", &host_port(&services.pg_admin_url)).await;
        reachable(
            "Kafka",
            services.kafka_brokers.split(',').next().unwrap_or_default(),
        )
        .await;
        services
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self) -> String {
        use sqlx::Connection;
        let name = crate::unique("onlychat_t_");
        let mut conn = sqlx::PgConnection::connect(&self.pg_admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot connect to PostgreSQL at {}: {e}", self.pg_admin_url)
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = self
            .pg_admin_url
            .rsplit_once('/')
            .map_or(self.pg_admin_url.as_str(), |(b, _)| b);
        format!("{base}/{name}")
    }
}

/// The `onlychat` binary under test.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("ONLYCHAT_BIN") {
        return PathBuf::from(path);
    }
    // Tests run from target/debug/deps/<test>, tools from target/debug/<tool>; the binary is
    // target/debug/onlychat in both cases.
    let exe = std::env::current_exe().expect("current exe");
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("onlychat"));
    let path = candidates
        .clone()
        .find(|p| p.exists())
        .unwrap_or_else(|| candidates.last().expect("target dir"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p onlychat` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running `onlychat` process, killed when dropped.
pub struct Proc {
    pub name: String,
    pub addr: String,
    pub log: PathBuf,
    child: Child,
}

fn log_dir() -> PathBuf {
    let dir = std::env::var("ONLYCHAT_TEST_LOG_DIR")
        .map_or_else(|_| std::env::temp_dir().join("onlychat-e2e"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

impl Proc {
    /// Starts `onlychat <args>` on 127.0.0.1:0 and waits until `/readyz` answers 200.
    pub async fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let proc = Self::launch(name, args, env).await;
        let url = format!("{}/readyz", proc.base_url());
        proc.wait_ready(&reqwest::Client::new(), &url).await;
        proc
    }

    /// Like [`Proc::spawn`] for a process serving HTTPS (`--tls-cert`/`--tls-key` in `args` or
    /// `env`): waits until `client`, which must trust its certificate, gets 200 from
    /// `https://ADDR/readyz`.
    pub async fn spawn_tls(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        client: &reqwest::Client,
    ) -> Self {
        let proc = Self::launch(name, args, env).await;
        let url = format!("{}/readyz", proc.https_url());
        proc.wait_ready(client, &url).await;
        proc
    }

    /// Starts the process and waits for its "listening on" line.
    async fn launch(name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let log = log_dir().join(format!("{}-{name}.log", crate::unique("")));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("ONLYCHAT_LISTEN", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                "info,onlychat=debug,librdkafka=off,rdkafka=off,actix_server=warn",
            );
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn onlychat");
        let mut proc = Self {
            name: name.to_owned(),
            addr: String::new(),
            log,
            child,
        };
        proc.addr = proc.wait_listening().await;
        proc
    }

    async fn wait_listening(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text
                .lines()
                .find(|l| l.starts_with("onlychat listening on "))
            {
                return line
                    .trim_start_matches("onlychat listening on ")
                    .trim()
                    .to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before listening:\n{text}",
                    self.name
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not start listening:\n{text}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self, client: &reqwest::Client, url: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became ready; log {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The base URL of a process started with [`Proc::spawn_tls`].
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The `/ws` URL of a process started with [`Proc::spawn_tls`].
    pub fn wss_url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGKILL and waits for the process to go.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Proc {
    /// Sends SIGTERM (a graceful drain) and waits, at most `within`, for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal_term();
        self.wait_exit(within).await
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits, at most `within`, for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Proc {
    /// The process id (for reading its CPU time from `/proc`), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A command running `scripts/<name>` with `args` and extra `env`.
pub fn script(name: &str, args: &[&str], env: &[(String, String)]) -> std::process::Command {
    let mut command = std::process::Command::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(name),
    );
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

/// A service of a test's own (scripts/services.sh on its own ports and directory), for a test
/// that stops and starts it or counts its commands; the shared services never see that.
pub struct OwnService {
    /// `host:port` to reach it.
    pub address: String,
    service: &'static str,
    env: Vec<(String, String)>,
}

/// A Kafka broker of a test's own.
pub type OwnKafka = OwnService;

impl OwnService {
    fn run(&self, command: &str) {
        let status = script("services.sh", &[command, self.service], &self.env)
            .status()
            .expect("run scripts/services.sh");
        assert!(
            status.success(),
            "scripts/services.sh {command} {} failed for the test's own instance",
            self.service
        );
    }

    fn start_with(service: &'static str, port: u16, mut env: Vec<(String, String)>) -> Self {
        let dir = std::env::temp_dir().join(crate::unique(&format!("onlychat-own-{service}-")));
        env.push(("ONLYCHAT_SVC_DIR".to_owned(), dir.display().to_string()));
        let own = Self {
            address: format!("127.0.0.1:{port}"),
            service,
            env,
        };
        own.run("up");
        own
    }

    /// Starts a Kafka broker on `port` (controller on `port + 1`).
    pub fn start(port: u16) -> Self {
        Self::start_with(
            "kafka",
            port,
            vec![
                ("ONLYCHAT_SVC_KAFKA_PORT".to_owned(), port.to_string()),
                (
                    "ONLYCHAT_SVC_KAFKA_CONTROLLER_PORT".to_owned(),
                    (port + 1).to_string(),
                ),
            ],
        )
    }

    /// Starts a Redis server on `port`.
    pub fn redis(port: u16) -> Self {
        Self::start_with(
            "redis",
            port,
            vec![("ONLYCHAT_SVC_REDIS_PORT".to_owned(), port.to_string())],
        )
    }

    /// The `redis://` URL of an own Redis.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Starts a PostgreSQL server on `port` (role `onlychat`, as the shared one).
    pub fn postgres(port: u16) -> Self {
        Self::start_with(
            "postgres",
            port,
            vec![("ONLYCHAT_SVC_PG_PORT".to_owned(), port.to_string())],
        )
    }

    /// The admin URL of an own PostgreSQL (its `postgres` database), for [`Services`].
    pub fn pg_admin_url(&self) -> String {
        format!("postgres://onlychat:onlychat@{}/postgres", self.address)
    }

    pub fn stop(&self) {
        self.run("down");
    }

    pub fn restart(&self) {
        self.run("up");
    }
}

impl Drop for OwnService {
    fn drop(&mut self) {
        let _ = script("services.sh", &["down", "--clean", self.service], &self.env)
            .stdout(Stdio::null())
            .status();
    }
}
