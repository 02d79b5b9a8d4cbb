//! A bystander in a process of its own: connects to a node's `/ws` with a token, sends the
//! `ping` frame every 20 ms for a while and prints one line per round trip,
//! `<microseconds since start> <round trip in microseconds>`. Tests that attack a node run it
//! beside the attack, so the attackers' client-side work (masking megabytes, thousands of tasks)
//! does not delay the bystander's own timing: only the node's answer is measured.
//!
//!   pinger WS_URL TOKEN SECONDS

use std::time::{Duration, Instant};

use onlychat_e2e::Ws;
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token, seconds] = args.as_slice() else {
        eprintln!("usage: pinger WS_URL TOKEN SECONDS");
        std::process::exit(2);
    };
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let mut ws = Ws::connect(url, token).await;
    // The line tests wait for before they start the clock.
    println!("ready");
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let sent = Instant::now();
        ws.send(json!({"type": "ping"})).await;
        ws.expect("pong").await;
        println!(
            "{} {}",
            sent.duration_since(start).as_micros(),
            sent.elapsed().as_micros()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
