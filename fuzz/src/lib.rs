//! What the access-token fuzz targets share: the HS256 key and rules under test, a signer that
//! does not go through jsonwebtoken, and the oracle every token that `JwtKeys::verify` accepts
//! must satisfy.

use std::time::Duration;

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use onlychat_auth::jwt::CLOCK_LEEWAY_SECS;
use onlychat_auth::{Claims, JwtKeys, TokenRules};
use sha2::Sha256;

/// The verifier's HS256 secret (the checked-in `jwt_verify` seeds are signed with it).
pub const SECRET: &[u8] = b"onlychat-fuzz-secret-0123456789-abcdefghij";
pub const ISSUER: &str = "onlychat-fuzz-iss";
pub const AUDIENCE: &str = "onlychat-fuzz-aud";
pub const LEEWAY: i64 = CLOCK_LEEWAY_SECS as i64;

/// The rules under test with the given longest token lifetime.
pub fn rules(max_lifetime: Duration) -> TokenRules {
    TokenRules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        ttl: Duration::from_secs(60),
        max_lifetime,
    }
}

/// HS256 keys over [`SECRET`].
pub fn keys(rules: TokenRules) -> JwtKeys {
    JwtKeys::hs256(SECRET, rules).expect("the fuzz secret is long enough")
}

/// Now, in unix seconds, the way `verify` reads the clock.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// HMAC-SHA256 of `message` under `secret`, computed without jsonwebtoken.
pub fn hs256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// base64url without padding, as JWTs are written.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A lenient base64url decoder (padding optional, non-zero trailing bits allowed): whatever
/// spelling `verify` might tolerate, the bytes it stands for must be the HMAC.
fn lenient_b64(text: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(text).ok()
}

/// Asserts what must hold of `token`, which `verify` (with `keys(rules)`) accepted with `claims`,
/// when the clock read `before` just before the call and `after` just after it:
/// - it is `header.payload.signature` with the signature being the HMAC of `header.payload`
///   under [`SECRET`] (so nothing not signed by the key is ever accepted);
/// - its header says HS256 and picks no key id;
/// - the claims returned are the payload's claims;
/// - iss and aud are the configured ones; exp is not past, nbf and iat are not in the future
///   and the lifetime is within the maximum, each with the documented leeway.
pub fn check_accepted(token: &str, claims: &Claims, rules: &TokenRules, before: i64, after: i64) {
    let (message, signature) = token
        .rsplit_once('.')
        .expect("an accepted token has a signature segment");
    let signature = lenient_b64(signature)
        .unwrap_or_else(|| panic!("accepted a token whose signature is not base64: {token:?}"));
    assert_eq!(
        signature,
        hs256(SECRET, message.as_bytes()),
        "accepted a token that is not signed by the key: {token:?}"
    );
    let (header, payload) = message
        .split_once('.')
        .expect("an accepted token has a header and a payload");
    assert!(
        !payload.contains('.'),
        "accepted a token of more than three segments"
    );

    let header: serde_json::Value = lenient_b64(header)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .unwrap_or_else(|| panic!("accepted a token whose header is not JSON: {token:?}"));
    assert_eq!(
        header["alg"], "HS256",
        "accepted a non-HS256 header: {header}"
    );
    assert!(
        header.get("kid").is_none_or(serde_json::Value::is_null),
        "an HS256 key has no kid, yet a token naming one was accepted: {header}"
    );

    let payload: Claims = lenient_b64(payload)
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or_else(|| panic!("accepted a token whose payload is not the claims: {token:?}"));
    assert_eq!(
        &payload, claims,
        "verify returned other claims than the payload's"
    );

    assert_eq!(claims.iss, rules.issuer, "accepted a foreign issuer");
    assert_eq!(claims.aud, rules.audience, "accepted a foreign audience");
    assert!(
        claims.exp >= before - LEEWAY,
        "accepted an expired token: exp {} at {before}",
        claims.exp
    );
    assert!(
        claims.nbf <= after + LEEWAY,
        "accepted a token not valid yet: nbf {} at {after}",
        claims.nbf
    );
    assert!(
        claims.iat <= after + LEEWAY,
        "accepted a token issued in the future: iat {} at {after}",
        claims.iat
    );
    let max = i128::from(rules.max_lifetime.as_secs());
    assert!(
        i128::from(claims.exp) - i128::from(claims.iat) <= max + i128::from(LEEWAY),
        "accepted a token living longer than {max} s: iat {} exp {}",
        claims.iat,
        claims.exp
    );
    assert!(
        claims.exp >= 0 && claims.nbf >= 0,
        "negative exp/nbf accepted"
    );
}
