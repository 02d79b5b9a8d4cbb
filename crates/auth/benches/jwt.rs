//! The check every WebSocket upgrade makes: verifying an access token locally, per algorithm.
//! Run: `cargo bench -p onlychat-auth` (results in docs/benchmarks.md).

use std::time::Duration;

use divan::{Bencher, black_box};
use onlychat_auth::{JwtKeys, TokenRules};

fn main() {
    divan::main();
}

fn rules() -> TokenRules {
    TokenRules {
        issuer: "onlychat".into(),
        audience: "onlychat".into(),
        ttl: Duration::from_secs(900),
        max_lifetime: Duration::from_secs(3600),
    }
}

fn testdata(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(algorithm: &str) -> JwtKeys {
    let result = match algorithm {
        "HS256" => JwtKeys::hs256(&[7u8; 32], rules()),
        "EdDSA" => JwtKeys::asymmetric("EdDSA", Some(&testdata("ed-a.pem")), &[], rules()),
        other => panic!("no bench keys for {other}"),
    };
    result.unwrap_or_else(|e| panic!("{algorithm} keys: {e}"))
}

#[divan::bench(args = ["HS256", "EdDSA"])]
fn verify_access_token(bencher: Bencher, algorithm: &str) {
    let keys = keys(algorithm);
    let (token, _) = keys
        .issue(
            "0193f7a2-0000-7000-8000-000000000001",
            "alice",
            "sid-1",
            &[],
        )
        .unwrap_or_else(|e| panic!("issue: {e}"));
    bencher.bench_local(|| keys.verify(black_box(&token)).is_ok());
}

#[divan::bench]
fn refuse_badly_signed_token(bencher: Bencher) {
    let keys = keys("HS256");
    let other = JwtKeys::hs256(&[8u8; 32], rules()).unwrap_or_else(|e| panic!("{e}"));
    let (token, _) = other
        .issue("u", "alice", "sid", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    bencher.bench_local(|| keys.verify(black_box(&token)).is_err());
}
