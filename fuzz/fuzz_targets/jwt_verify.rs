//! Access-token verification (`onlychat_auth::JwtKeys::verify`, HS256) on arbitrary text.
//!
//! It must never panic, and any token it accepts must pass `check_accepted`: signed by the key
//! (checked with an HMAC independent of jsonwebtoken), HS256 header, claims within the rules.
//! The verifier allows a 200-year lifetime so that the checked-in seeds (fuzz/seeds/jwt_verify,
//! valid tokens signed with the fuzz secret, issued in the past and expiring far in the future)
//! stay valid and the fuzzer mutates from the accepting path too; jwt_structured covers the
//! real lifetime rule.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use onlychat_auth::{JwtKeys, TokenRules};
use onlychat_fuzz::{check_accepted, keys, now, rules};

const YEAR: u64 = 365 * 24 * 3600;
static RULES: LazyLock<TokenRules> = LazyLock::new(|| rules(Duration::from_secs(200 * YEAR)));
static KEYS: LazyLock<JwtKeys> = LazyLock::new(|| keys(RULES.clone()));

fuzz_target!(|data: &[u8]| {
    // Tokens arrive as UTF-8 (JSON strings, HTTP headers); other bytes are used lossily.
    let token = match std::str::from_utf8(data) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(data),
    };
    let before = now();
    let result = KEYS.verify(&token);
    let after = now();
    if let Ok(claims) = result {
        check_accepted(&token, &claims, &RULES, before, after);
    }
});
