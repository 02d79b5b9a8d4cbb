//! Login timing: an unknown user and a wrong password must not be told apart by the clock.
//! Its own test binary, so no other test's clusters compete for the CPU while it measures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use onlychat_e2e::{Cluster, unique};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_wrong_passwords_take_the_same_time() {
    let cluster = Cluster::start(1).await;
    let http = cluster.http();
    let known = unique("timed");
    http.register(&known).await;
    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut timings: HashMap<&str, Vec<Duration>> = HashMap::new();
    // Interleaved, so load on the machine hits both alike.
    for _ in 0..50 {
        for (kind, name) in [
            ("wrong_password", known.as_str()),
            ("unknown_user", "nobody-by-this-name"),
        ] {
            let started = Instant::now();
            let (status, body) = http
                .post(
                    "/v1/auth/login",
                    &json!({"username": name, "password": "not-the-password"}),
                    None,
                )
                .await;
            timings.entry(kind).or_default().push(started.elapsed());
            assert_eq!(
                (status, &body),
                (
                    401,
                    &json!({"error": {"code": "invalid_credentials", "message": "wrong username or password"}})
                )
            );
        }
    }
    let wrong = median(timings.get_mut("wrong_password").expect("samples"));
    let unknown = median(timings.get_mut("unknown_user").expect("samples"));
    let ratio = wrong.as_secs_f64() / unknown.as_secs_f64();
    eprintln!(
        "login failure medians: wrong password {wrong:?}, unknown user {unknown:?} (ratio {ratio:.2})"
    );
    assert!(
        (0.8..=1.25).contains(&ratio),
        "medians within 20%: {wrong:?} vs {unknown:?}"
    );
}
