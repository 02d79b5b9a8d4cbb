//! `onlychat-loadgen` against a real two-node cluster (Kafka, Redis, PostgreSQL): its counts
//! must match what the cluster really did, or the benchmark figures mean nothing.

use std::process::Command;

use onlychat_e2e::{Cluster, ClusterOptions, TEST_SECRET};
use serde_json::Value;

/// Runs the load generator (next to the `onlychat` binary) and returns its JSON report.
fn loadgen(args: &[&str]) -> Value {
    let bin = onlychat_e2e::process::binary().with_file_name("onlychat-loadgen");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    let output = Command::new(&bin)
        .args(["--json", "--jwt-secret", TEST_SECRET])
        .args(args)
        .output()
        .expect("run onlychat-loadgen");
    assert!(
        output.status.success(),
        "onlychat-loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("loadgen report is JSON")
}

fn both_nodes(cluster: &Cluster) -> String {
    let base = |i: usize| cluster.ws_url(i).trim_end_matches("/ws").to_owned();
    format!("{},{}", base(0), base(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broadcast_delivery_across_two_nodes_is_counted_once() {
    let cluster = Cluster::start(2).await;
    let pids = format!(
        "{},{}",
        cluster.nodes[0].pid().expect("pid"),
        cluster.nodes[1].pid().expect("pid")
    );
    let report = loadgen(&[
        "--url",
        &both_nodes(&cluster),
        "--workers",
        "2",
        "--server-pid",
        &pids,
        "--duration",
        "3s",
        "--drain",
        "5s",
        "broadcast",
        "--rooms",
        "3",
        "--members",
        "10",
        "--rate",
        "30",
    ]);
    assert_eq!(report["connections"]["established"], 33, "{report:#}");
    let sent = report["sent"].as_u64().expect("sent");
    assert!(
        sent >= 60,
        "about 90 messages in 3 s, got {sent}: {report:#}"
    );
    // Every message reaches the 10 members of its room, half of them on the other node.
    assert_eq!(report["expected"].as_u64(), Some(sent * 10), "{report:#}");
    assert_eq!(report["delivered"], report["expected"], "{report:#}");
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["latency_ms"]["count"], report["delivered"]);
    assert!(
        report["server_rss"]["after_kib"].as_u64() > Some(0),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sends_are_counted_and_not_expected() {
    // One send per 10 s per socket: almost every send of the run is refused in-band (and fewer
    // than the 20 refusals that would close the socket with 4029).
    let options = ClusterOptions {
        node_env: vec![
            ("ONLYCHAT_SEND_RATE", "0.1".into()),
            ("ONLYCHAT_SEND_BURST", "1".into()),
        ],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(1, options).await;
    let report = loadgen(&[
        "--url",
        cluster.ws_url(0).trim_end_matches("/ws"),
        "--duration",
        "2s",
        "broadcast",
        "--rooms",
        "1",
        "--members",
        "3",
        "--rate",
        "5",
    ]);
    let refused = report["refused"].as_u64().expect("refused");
    assert!(refused >= 5, "{report:#}");
    assert_eq!(
        report["errors"]["rate_limited"].as_u64(),
        Some(refused),
        "{report:#}"
    );
    let accepted = report["sent"].as_u64().expect("sent") - refused;
    assert_eq!(
        report["expected"].as_u64(),
        Some(accepted * 3),
        "{report:#}"
    );
    assert_eq!(report["lost"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_bring_every_client_back_and_time_it() {
    let cluster = Cluster::start(2).await;
    let urls = both_nodes(&cluster);
    let report = loadgen(&[
        "--url",
        &urls,
        "--duration",
        "30s",
        "reconnect-storm",
        "--clients",
        "200",
    ]);
    assert_eq!(report["storm"]["back"], 200, "{report:#}");
    assert!(
        report["storm"]["time_to_99pct_ms"].as_f64().is_some(),
        "{report:#}"
    );

    let report = loadgen(&[
        "--url",
        &urls,
        "--http-url",
        &cluster.gateway.base_url(),
        "--duration",
        "60s",
        "login-storm",
        "--clients",
        "20",
    ]);
    assert_eq!(
        report["connections"]["established"], 20,
        "all registered: {report:#}"
    );
    assert_eq!(report["storm"]["back"], 20, "{report:#}");
    assert_eq!(report["still_open"], 20, "{report:#}");
}
