//! Access-token verification on structured tokens: the fuzzer chooses the header and payload
//! (claims present, missing, mistyped, duplicated, out of range, relative to now), how the
//! segments are encoded, how the token is signed (our key, another key, truncated, over another
//! message, none) and a final byte-level tamper. Starting from the empty input, which is a valid
//! token, it gets past base64 and JSON at once and explores the claim rules.
//!
//! Checked on every input:
//! - `verify` never panics;
//! - anything accepted passes `check_accepted` (signed by the key, HS256, claims within the
//!   rules: iss, aud, exp, nbf, iat, lifetime);
//! - a well-formed token signed by the key, with claims inside the rules by a margin, is
//!   accepted with exactly the claims it carries (no false refusals, whatever the strings);
//! - the same token with `exp` clearly past is refused as `Expired` (not `Invalid`: clients
//!   tell them apart, PROTOCOL.md's token_expired / close 4002).
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use onlychat_auth::{Claims, JwtKeys, TokenError, TokenRules};
use onlychat_fuzz::{AUDIENCE, ISSUER, LEEWAY, SECRET, check_accepted, hs256, keys, now, rules};

const MAX_LIFETIME: u64 = 3600;
static RULES: LazyLock<TokenRules> = LazyLock::new(|| rules(Duration::from_secs(MAX_LIFETIME)));
static KEYS: LazyLock<JwtKeys> = LazyLock::new(|| keys(RULES.clone()));

/// Every enum's first variant is the well-formed choice, so the empty input is a valid token.
#[derive(Arbitrary, Debug)]
struct Input {
    alg: Alg,
    typ: Text,
    kid: Option<String>,
    header_extra: Vec<(HeaderKey, Json)>,
    sub: Text,
    name: Text,
    sid: Text,
    jti: Text,
    iss: Text,
    aud: Text,
    iat: Time,
    nbf: Time,
    exp: Time,
    roles: Roles,
    payload_extra: Vec<(PayloadKey, Json)>,
    segments: Encoding,
    signature: Signature,
    signature_encoding: Encoding,
    tamper: Tamper,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Alg {
    Hs256,
    Missing,
    None,
    NoneUpper,
    LowerHs256,
    Hs384,
    Hs512,
    Rs256,
    EdDsa,
    Es256,
    Custom(String),
    Number(i64),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Default,
    Custom(String),
    Missing,
    Null,
    Number(i64),
    List(Vec<String>),
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Seconds from this claim's usual value (iat, nbf: now; exp: now + 60).
    Relative(i16),
    Absolute(i64),
    Unsigned(u64),
    Float(f64),
    String(i16),
    Missing,
    Null,
}

#[derive(Arbitrary, Debug)]
enum Roles {
    Empty,
    List(Vec<String>),
    Missing,
    Null,
    NotAList(String),
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    Object(Vec<(String, String)>),
}

#[derive(Arbitrary, Debug)]
enum HeaderKey {
    Alg,
    Kid,
    Typ,
    Crit,
    Jwk,
    Custom(String),
}

#[derive(Arbitrary, Debug)]
enum PayloadKey {
    Custom(String),
    /// A second copy of one of the claims.
    Claim(ClaimName),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ClaimName {
    Sub,
    Name,
    Sid,
    Iat,
    Nbf,
    Exp,
    Jti,
    Iss,
    Aud,
    Roles,
}

const CLAIM_NAMES: &[&str] = &[
    "sub", "name", "sid", "iat", "nbf", "exp", "jti", "iss", "aud", "roles",
];

impl ClaimName {
    fn as_str(self) -> &'static str {
        CLAIM_NAMES[self as usize]
    }
}

#[derive(Arbitrary, Debug, PartialEq, Clone, Copy)]
enum Encoding {
    UrlNoPad,
    UrlPadded,
    Standard,
    StandardNoPad,
}

impl Encoding {
    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::UrlNoPad => URL_SAFE_NO_PAD.encode(bytes),
            Self::UrlPadded => URL_SAFE.encode(bytes),
            Self::Standard => STANDARD.encode(bytes),
            Self::StandardNoPad => STANDARD_NO_PAD.encode(bytes),
        }
    }
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Signature {
    Correct,
    OtherKey(Vec<u8>),
    Empty,
    Raw(Vec<u8>),
    Truncated(u8),
    FlipBit(u8, u8),
    OverHeaderOnly,
    OverPayloadOnly,
    OverDecodedParts,
}

#[derive(Arbitrary, Debug)]
enum Tamper {
    None,
    FlipBit { pos: u16, bit: u8 },
    Insert { pos: u16, ch: char },
    Remove { pos: u16 },
    Truncate(u16),
    Append(String),
    Prepend(String),
    ExtraSegment(String),
    DropSignatureSegment,
    SwapHeaderAndPayload,
}

/// JSON text of a string claim and the string it stands for, if it is one. `None`: left out.
fn text(t: &Text, default: &str) -> Option<(String, Option<String>)> {
    let s = |v: &str| serde_json::to_string(v).expect("a string serialises");
    match t {
        Text::Default => Some((s(default), Some(default.to_owned()))),
        Text::Custom(v) => Some((s(v), Some(v.clone()))),
        Text::Missing => None,
        Text::Null => Some(("null".into(), None)),
        Text::Number(n) => Some((n.to_string(), None)),
        Text::List(items) => Some((serde_json::json!(items).to_string(), None)),
    }
}

/// JSON text of a time claim and the i64 it stands for, if it is one. `None`: left out.
fn time(t: &Time, base: i64) -> Option<(String, Option<i64>)> {
    match *t {
        Time::Relative(d) => Some(((base + i64::from(d)).to_string(), Some(base + i64::from(d)))),
        Time::Absolute(v) => Some((v.to_string(), Some(v))),
        Time::Unsigned(v) => Some((v.to_string(), i64::try_from(v).ok())),
        Time::Float(f) => Some((serde_json::json!(f).to_string(), None)),
        Time::String(d) => Some((format!("\"{}\"", base + i64::from(d)), None)),
        Time::Missing => None,
        Time::Null => Some(("null".into(), None)),
    }
}

fn json(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Int(n) => n.to_string(),
        Json::Str(s) => serde_json::json!(s).to_string(),
        Json::List(items) => serde_json::json!(items).to_string(),
        Json::Object(pairs) => {
            let map: serde_json::Map<_, _> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            serde_json::Value::Object(map).to_string()
        }
    }
}

/// `{"k":v,...}` from keys and JSON texts, keeping duplicates (a map would drop them).
fn object(fields: &[(String, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::json!(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn tamper(token: &str, how: &Tamper) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = |pos: u16, len: usize| usize::from(pos) % (len + 1);
    match how {
        Tamper::None => {}
        Tamper::FlipBit { pos, bit } => {
            if !bytes.is_empty() {
                let i = usize::from(*pos) % bytes.len();
                bytes[i] ^= 1 << (bit % 8);
            }
        }
        Tamper::Insert { pos, ch } => {
            let i = at(*pos, bytes.len());
            let mut buf = [0u8; 4];
            bytes.splice(i..i, ch.encode_utf8(&mut buf).bytes());
        }
        Tamper::Remove { pos } => {
            if !bytes.is_empty() {
                bytes.remove(usize::from(*pos) % bytes.len());
            }
        }
        Tamper::Truncate(len) => bytes.truncate(at(*len, bytes.len())),
        Tamper::Append(s) => bytes.extend_from_slice(s.as_bytes()),
        Tamper::Prepend(s) => {
            bytes.splice(0..0, s.bytes());
        }
        Tamper::ExtraSegment(s) => {
            bytes.push(b'.');
            bytes.extend_from_slice(s.as_bytes());
        }
        Tamper::DropSignatureSegment => {
            if let Some(i) = bytes.iter().rposition(|&b| b == b'.') {
                bytes.truncate(i);
            }
        }
        Tamper::SwapHeaderAndPayload => {
            let parts: Vec<&str> = token.split('.').collect();
            if let [h, p, s] = parts[..] {
                bytes = format!("{p}.{h}.{s}").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fuzz_target!(|input: Input| {
    let before = now();

    // Header.
    let mut header: Vec<(String, String)> = Vec::new();
    let alg = match &input.alg {
        Alg::Hs256 => Some("\"HS256\"".to_owned()),
        Alg::Missing => None,
        Alg::None => Some("\"none\"".into()),
        Alg::NoneUpper => Some("\"None\"".into()),
        Alg::LowerHs256 => Some("\"hs256\"".into()),
        Alg::Hs384 => Some("\"HS384\"".into()),
        Alg::Hs512 => Some("\"HS512\"".into()),
        Alg::Rs256 => Some("\"RS256\"".into()),
        Alg::EdDsa => Some("\"EdDSA\"".into()),
        Alg::Es256 => Some("\"ES256\"".into()),
        Alg::Custom(s) => Some(serde_json::json!(s).to_string()),
        Alg::Number(n) => Some(n.to_string()),
    };
    if let Some(alg) = alg {
        header.push(("alg".into(), alg));
    }
    let typ = text(&input.typ, "JWT");
    let typ_ok = matches!(&typ, None | Some((_, Some(_)))) || matches!(input.typ, Text::Null);
    if let Some((typ, _)) = typ {
        header.push(("typ".into(), typ));
    }
    if let Some(kid) = &input.kid {
        header.push(("kid".into(), serde_json::json!(kid).to_string()));
    }
    for (key, value) in &input.header_extra {
        let key = match key {
            HeaderKey::Alg => "alg".to_owned(),
            HeaderKey::Kid => "kid".into(),
            HeaderKey::Typ => "typ".into(),
            HeaderKey::Crit => "crit".into(),
            HeaderKey::Jwk => "jwk".into(),
            HeaderKey::Custom(k) => k.clone(),
        };
        header.push((key, json(value)));
    }

    // Payload.
    let mut payload: Vec<(String, String)> = Vec::new();
    let mut add_text = |name: &str, t: &Text, default: &str| {
        let field = text(t, default);
        if let Some((json, _)) = &field {
            payload.push((name.to_owned(), json.clone()));
        }
        field.and_then(|(_, v)| v)
    };
    let sub = add_text("sub", &input.sub, "user-1");
    let name = add_text("name", &input.name, "alice");
    let sid = add_text("sid", &input.sid, "session-1");
    let jti = add_text("jti", &input.jti, "token-1");
    let iss = add_text("iss", &input.iss, ISSUER);
    let aud = add_text("aud", &input.aud, AUDIENCE);
    let mut add_time = |name: &str, t: &Time, base: i64| {
        let field = time(t, base);
        if let Some((json, _)) = &field {
            payload.push((name.to_owned(), json.clone()));
        }
        field.and_then(|(_, v)| v)
    };
    let iat = add_time("iat", &input.iat, before);
    let nbf = add_time("nbf", &input.nbf, before);
    let exp = add_time("exp", &input.exp, before + 60);
    let roles = match &input.roles {
        Roles::Empty => {
            payload.push(("roles".into(), "[]".into()));
            Some(Vec::new())
        }
        Roles::List(items) => {
            payload.push(("roles".into(), serde_json::json!(items).to_string()));
            Some(items.clone())
        }
        Roles::Missing => None,
        Roles::Null => {
            payload.push(("roles".into(), "null".into()));
            None
        }
        Roles::NotAList(s) => {
            payload.push(("roles".into(), serde_json::json!(s).to_string()));
            None
        }
    };
    let mut duplicates = false;
    for (key, value) in &input.payload_extra {
        let key = match key {
            PayloadKey::Custom(k) => k.clone(),
            PayloadKey::Claim(c) => c.as_str().to_owned(),
        };
        duplicates |= CLAIM_NAMES.contains(&key.as_str());
        payload.push((key, json(value)));
    }

    // Token.
    let header_json = object(&header);
    let payload_json = object(&payload);
    let h = input.segments.encode(header_json.as_bytes());
    let p = input.segments.encode(payload_json.as_bytes());
    let message = format!("{h}.{p}");
    let signature: Vec<u8> = match &input.signature {
        Signature::Correct => hs256(SECRET, message.as_bytes()),
        Signature::OtherKey(key) => hs256(key, message.as_bytes()),
        Signature::Empty => Vec::new(),
        Signature::Raw(bytes) => bytes.clone(),
        Signature::Truncated(n) => {
            let mut sig = hs256(SECRET, message.as_bytes());
            sig.truncate(usize::from(*n) % sig.len());
            sig
        }
        Signature::FlipBit(i, bit) => {
            let mut sig = hs256(SECRET, message.as_bytes());
            let i = usize::from(*i) % sig.len();
            sig[i] ^= 1 << (bit % 8);
            sig
        }
        Signature::OverHeaderOnly => hs256(SECRET, h.as_bytes()),
        Signature::OverPayloadOnly => hs256(SECRET, p.as_bytes()),
        Signature::OverDecodedParts => {
            hs256(SECRET, format!("{header_json}.{payload_json}").as_bytes())
        }
    };
    let untampered = format!("{message}.{}", input.signature_encoding.encode(&signature));
    let token = tamper(&untampered, &input.tamper);

    let result = KEYS.verify(&token);
    let after = now();

    if let Ok(claims) = &result {
        check_accepted(&token, claims, &RULES, before, after);
    }

    // A well-formed token signed by our key: verify must decide on the claims' times alone.
    let well_formed = input.alg == Alg::Hs256
        && typ_ok
        && input.kid.is_none()
        && input.header_extra.is_empty()
        && input.segments == Encoding::UrlNoPad
        && input.signature == Signature::Correct
        && input.signature_encoding == Encoding::UrlNoPad
        && token == untampered
        && !duplicates;
    let claims = (|| {
        Some(Claims {
            sub: sub?,
            name: name?,
            sid: sid?,
            iat: iat?,
            nbf: nbf?,
            exp: exp?,
            jti: jti?,
            iss: iss?,
            aud: aud?,
            roles: roles?,
        })
    })();
    let Some(claims) = claims.filter(|_| well_formed) else {
        return;
    };
    if claims.iss != ISSUER || claims.aud != AUDIENCE || claims.nbf < 0 || claims.exp < 0 {
        return;
    }
    let max = MAX_LIFETIME as i64;
    if claims.exp < before - LEEWAY {
        assert_eq!(
            result,
            Err(TokenError::Expired),
            "an expired, otherwise well-formed token must be refused as expired: {token}"
        );
    } else if claims.iat <= before
        && claims.nbf <= before
        && claims.exp >= after
        && i128::from(claims.exp) - i128::from(claims.iat) <= i128::from(max)
    {
        assert_eq!(
            result,
            Ok(claims),
            "a valid token signed by the key was refused: {token}"
        );
    }
});
