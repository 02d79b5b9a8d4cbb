//! A real Prometheus server and a real Jaeger (OTLP receiver and query API) for the tests that
//! check what operators see. `scripts/observability.sh install` puts them on the machine
//! (`scripts/test.sh` runs it); a test that cannot find them fails and says how to get them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::process::script;
use crate::{eventually, free_ports, unique};

fn tool(env: &str, fallback: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(fallback), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found ({env} unset or wrong): install it with `scripts/observability.sh install` \
         and `eval \"$(scripts/observability.sh env)\"`, or run `scripts/test.sh`",
        path.display()
    );
    path
}

async fn spawn(program: PathBuf, args: &[String], dir: &std::path::Path, name: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("create a log file");
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// A Prometheus server scraping some `host:port` targets' `/metrics` every second.
pub struct Prometheus {
    _child: Child,
    pub url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port and waits until it is ready.
    pub async fn start(targets: &[String]) -> Self {
        let binary = tool("ONLYCHAT_PROMETHEUS_BIN", "/usr/bin/prometheus");
        let dir = std::env::temp_dir().join(unique("onlychat-prometheus-"));
        std::fs::create_dir_all(&dir).expect("create the Prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: onlychat\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let port = free_ports(1);
        let args = vec![
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        let child = spawn(binary, &args, &dir, "prometheus").await;
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        eventually(Duration::from_secs(30), "Prometheus to be ready", || {
            let ready = ready.clone();
            async move {
                let answer = reqwest::get(&ready).await.ok()?;
                answer.status().is_success().then_some(())
            }
        })
        .await;
        Self {
            _child: child,
            url,
            dir,
        }
    }

    /// The instant vector of `expr`: each series' labels and value.
    pub async fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query Prometheus")
            .json()
            .await
            .expect("Prometheus answers JSON");
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect()
    }

    /// `sum(expr)`, or `None` when no series matches.
    pub async fn sum(&self, expr: &str) -> Option<f64> {
        self.query(&format!("sum({expr})"))
            .await
            .first()
            .map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An in-memory Jaeger on free loopback ports, started and stopped through
/// `scripts/observability.sh` in a directory of its own.
pub struct Jaeger {
    env: Vec<(String, String)>,
    /// The OTLP/HTTP base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_http: String,
    query: String,
}

impl Jaeger {
    fn run(&self, command: &str) -> std::process::ExitStatus {
        script("observability.sh", &[command], &self.env)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/observability.sh")
    }

    /// Starts Jaeger and waits until it takes spans and answers queries.
    pub async fn start() -> Self {
        let base = free_ports(5);
        let dir = std::env::temp_dir().join(unique("onlychat-jaeger-"));
        let env: Vec<(String, String)> = [
            ("ONLYCHAT_OBS_DIR", dir.display().to_string()),
            ("ONLYCHAT_JAEGER_OTLP_PORT", base.to_string()),
            ("ONLYCHAT_JAEGER_GRPC_PORT", (base + 1).to_string()),
            ("ONLYCHAT_JAEGER_QUERY_PORT", (base + 2).to_string()),
            ("ONLYCHAT_JAEGER_QUERY_GRPC_PORT", (base + 3).to_string()),
            ("ONLYCHAT_JAEGER_METRICS_PORT", (base + 4).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let jaeger = Self {
            env,
            otlp_http: format!("http://127.0.0.1:{base}"),
            query: format!("http://127.0.0.1:{}", base + 2),
        };
        let started = tokio::task::block_in_place(|| jaeger.run("start-jaeger"));
        assert!(
            started.success(),
            "scripts/observability.sh start-jaeger failed (was `scripts/observability.sh install` run?)"
        );
        jaeger
    }

    /// Traces of `service` that contain `operation` (Jaeger's query API, last 10 minutes).
    pub async fn traces(&self, service: &str, operation: &str) -> Vec<Value> {
        let answer = reqwest::Client::new()
            .get(format!("{}/api/traces", self.query))
            .query(&[
                ("service", service),
                ("operation", operation),
                ("lookback", "10m"),
                ("limit", "20"),
            ])
            .send()
            .await;
        let Ok(answer) = answer else {
            return Vec::new();
        };
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// The service names of a trace's processes.
    pub fn services_of(trace: &Value) -> Vec<String> {
        trace["processes"]
            .as_object()
            .map(|p| {
                p.values()
                    .filter_map(|p| p["serviceName"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each span of a trace as (service, operation).
    pub fn spans_of(trace: &Value) -> Vec<(String, String)> {
        let processes = &trace["processes"];
        trace["spans"]
            .as_array()
            .map(|spans| {
                spans
                    .iter()
                    .map(|s| {
                        let process = s["processID"].as_str().unwrap_or_default();
                        (
                            processes[process]["serviceName"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            s["operationName"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = script("observability.sh", &["down", "--clean"], &self.env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
