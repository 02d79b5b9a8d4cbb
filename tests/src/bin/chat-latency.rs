//! Measures send-to-deliver latency and throughput across two real nodes (Kafka between them).
//! Not a test: it prints figures. Needs the services (`scripts/services.sh up`, then
//! `eval "$(scripts/services.sh env)"`) and a built `onlychat` binary.
//!
//!   cargo run -p onlychat-e2e --bin chat-latency -- [messages=5000] [receivers=4] [rate/s=0: unpaced]

use std::collections::HashMap;
use std::time::Instant;

use onlychat_e2e::{Cluster, Ws, unique};
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(5000);
    let receivers = args.get(1).copied().unwrap_or(4);
    let rate = args.get(2).copied().unwrap_or(0);
    // A benchmark sender outruns the per-connection send limit on purpose.
    let options = onlychat_e2e::ClusterOptions {
        env: vec![("ONLYCHAT_SEND_RATE", "0".to_owned())],
        ..onlychat_e2e::ClusterOptions::default()
    };
    let cluster = Cluster::start_with(2, options).await;
    let http = cluster.http();
    let sender = http.user(&unique("sender")).await;
    let mut tx = Ws::connect(&cluster.ws_url(0), &sender.access_token).await;
    tx.join("bench").await;
    let mut rx = Vec::new();
    for _ in 0..receivers {
        let login = http.user(&unique("recv")).await;
        let mut ws = Ws::connect(&cluster.ws_url(1), &login.access_token).await;
        ws.join("bench").await;
        rx.push(ws);
    }
    let started = Instant::now();
    let readers: Vec<_> = rx
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut arrivals = HashMap::new();
                while arrivals.len() < messages {
                    let frame = ws.recv().await;
                    if frame["type"] == "message" {
                        let id = frame["client_id"].as_str().unwrap_or_default().to_owned();
                        arrivals.insert(id, Instant::now());
                    }
                }
                arrivals
            })
        })
        .collect();
    let mut sent = HashMap::new();
    let mut acks = 0;
    let mut pace = (rate > 0)
        .then(|| tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / rate as f64)));
    for i in 0..messages {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let id = format!("m{i}");
        sent.insert(id.clone(), Instant::now());
        tx.send(json!({"type": "send", "room": "bench", "body": "x".repeat(64), "client_id": id}))
            .await;
    }
    while acks < messages {
        if tx.recv().await["type"] == "ack" {
            acks += 1;
        }
    }
    let mut latencies = Vec::new();
    for reader in readers {
        let arrivals = reader.await.expect("reader");
        for (id, at) in arrivals {
            latencies.push((at - sent[&id]).as_secs_f64() * 1000.0);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "messages={messages} receivers={receivers} rate={rate} delivered={} elapsed={elapsed:.2}s delivered/s={:.0} sent/s={:.0} \
         p50={:.1}ms p99={:.1}ms max={:.1}ms",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        messages as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
}
