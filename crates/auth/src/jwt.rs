//! Access tokens: short-lived JWTs a node verifies locally. The algorithm and keys come from
//! configuration only; the token's own header never chooses them (its `kid` may only pick among
//! the configured verification keys).
//!
//! HS256 uses one shared secret. EdDSA and RS256 sign with a private PEM key (gateway,
//! standalone) and verify with its public half plus any previous public keys (rotation: new
//! tokens carry the new key's `kid`; tokens under a previous key stay valid until they expire).
//! `kid` is the key's RFC 7638 thumbprint, which is also how `/.well-known/jwks.json` names it.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Leeway for `exp`, `nbf` and `iat` against clock skew between processes.
pub const CLOCK_LEEWAY_SECS: u64 = 5;

/// The claims of an onlychat access token (PROTOCOL.md section 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Username.
    pub name: String,
    /// Session id.
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub iss: String,
    pub aud: String,
    pub roles: Vec<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid")]
    Invalid,
}

/// What every token must meet besides its signature.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: String,
    /// Lifetime of the tokens this process issues.
    pub ttl: Duration,
    /// Longest `exp - iat` accepted; a longer-lived token was not issued by us.
    pub max_lifetime: Duration,
}

/// A verification key and the `kid` that selects it.
#[derive(Clone)]
struct Verifier {
    kid: Option<String>,
    key: DecodingKey,
}

/// Signing and verification keys plus the rules every token must meet.
#[derive(Clone)]
pub struct JwtKeys {
    algorithm: Algorithm,
    signer: Option<(EncodingKey, Option<String>)>,
    verifiers: Vec<Verifier>,
    jwks: Vec<Jwk>,
    validation: Validation,
    rules: TokenRules,
}

/// Configuration errors of [`JwtKeys`].
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the JWT secret must be at least 32 bytes (it is {0})")]
    SecretTooShort(usize),
    #[error("the JWT key is unusable: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
    #[error("unsupported JWT algorithm {0} (use HS256, EdDSA or RS256)")]
    Algorithm(String),
    #[error("{0} needs a private key (--jwt-key) or at least one public key (--jwt-public-keys)")]
    NoKeys(&'static str),
}

fn validation(algorithm: Algorithm, rules: &TokenRules) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = CLOCK_LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[&rules.issuer]);
    validation.set_audience(&[&rules.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation
}

/// A public key's JWK with its RFC 7638 thumbprint as `kid`.
fn published(key: &DecodingKey, algorithm: Algorithm) -> Result<(String, Jwk), KeyError> {
    let mut jwk = Jwk::from_decoding_key(key, Some(algorithm))?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match algorithm {
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        _ => KeyAlgorithm::RS256,
    });
    Ok((kid, jwk))
}

impl JwtKeys {
    /// HS256 keys from a shared secret of at least 32 bytes.
    pub fn hs256(secret: &[u8], rules: TokenRules) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::SecretTooShort(secret.len()));
        }
        Ok(Self {
            algorithm: Algorithm::HS256,
            signer: Some((EncodingKey::from_secret(secret)?, None)),
            verifiers: vec![Verifier {
                kid: None,
                key: DecodingKey::from_secret(secret)?,
            }],
            jwks: Vec::new(),
            validation: validation(Algorithm::HS256, &rules),
            rules,
        })
    }

    /// EdDSA or RS256 keys: an optional private signing key (PEM; its public half verifies
    /// too) and further public keys (PEM) accepted for verification.
    pub fn asymmetric(
        algorithm: &str,
        private_pem: Option<&[u8]>,
        public_pems: &[Vec<u8>],
        rules: TokenRules,
    ) -> Result<Self, KeyError> {
        let algorithm = match algorithm {
            "EdDSA" => Algorithm::EdDSA,
            "RS256" => Algorithm::RS256,
            other => return Err(KeyError::Algorithm(other.to_owned())),
        };
        let decode = |pem: &[u8]| match algorithm {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => DecodingKey::from_rsa_pem(pem),
        };
        let mut verifiers = Vec::new();
        let mut jwks = Vec::new();
        let mut add = |key: DecodingKey| -> Result<String, KeyError> {
            let (kid, jwk) = published(&key, algorithm)?;
            if !verifiers
                .iter()
                .any(|v: &Verifier| v.kid.as_deref() == Some(&kid))
            {
                verifiers.push(Verifier {
                    kid: Some(kid.clone()),
                    key,
                });
                jwks.push(jwk);
            }
            Ok(kid)
        };
        let signer = match private_pem {
            Some(pem) => {
                let encoding = match algorithm {
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(pem)?,
                    _ => EncodingKey::from_rsa_pem(pem)?,
                };
                let public = DecodingKey::from_jwk(&Jwk::from_encoding_key(&encoding, algorithm)?)?;
                Some((encoding, Some(add(public)?)))
            }
            None => None,
        };
        for pem in public_pems {
            add(decode(pem)?)?;
        }
        if verifiers.is_empty() {
            return Err(KeyError::NoKeys(if algorithm == Algorithm::EdDSA {
                "EdDSA"
            } else {
                "RS256"
            }));
        }
        Ok(Self {
            algorithm,
            signer,
            verifiers,
            jwks,
            validation: validation(algorithm, &rules),
            rules,
        })
    }

    /// How long a freshly issued access token lives.
    pub fn ttl(&self) -> Duration {
        self.rules.ttl
    }

    /// The public keys as a JWK set (`/.well-known/jwks.json`); empty for HS256.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.jwks })
    }

    /// Issues an access token; returns it with its claims. Fails without a signing key.
    pub fn issue(
        &self,
        user_id: &str,
        username: &str,
        sid: &str,
        roles: &[String],
    ) -> Result<(String, Claims), TokenError> {
        let (encoding, kid) = self.signer.as_ref().ok_or(TokenError::Invalid)?;
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            name: username.to_owned(),
            sid: sid.to_owned(),
            iat: now,
            nbf: now,
            exp: now
                .saturating_add(i64::try_from(self.rules.ttl.as_secs()).unwrap_or(i64::MAX / 2)),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.rules.issuer.clone(),
            aud: self.rules.audience.clone(),
            roles: roles.to_vec(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(kid);
        let token =
            jsonwebtoken::encode(&header, &claims, encoding).map_err(|_| TokenError::Invalid)?;
        Ok((token, claims))
    }

    /// Verifies signature (pinned algorithm, configured keys), issuer, audience and time
    /// claims: `exp` required, `nbf` and `iat` not in the future, lifetime at most the maximum,
    /// each with [`CLOCK_LEEWAY_SECS`] of leeway.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != self.algorithm {
            return Err(TokenError::Invalid);
        }
        let candidates = self
            .verifiers
            .iter()
            .filter(|v| header.kid.is_none() || v.kid == header.kid);
        let mut outcome = Err(TokenError::Invalid);
        for verifier in candidates {
            outcome = jsonwebtoken::decode::<Claims>(token, &verifier.key, &self.validation)
                .map(|data| data.claims)
                .map_err(|e| match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                });
            if !matches!(outcome, Err(TokenError::Invalid)) {
                break;
            }
        }
        let claims = outcome?;
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(CLOCK_LEEWAY_SECS).unwrap_or(0);
        let max = i64::try_from(self.rules.max_lifetime.as_secs()).unwrap_or(i64::MAX / 4);
        if claims.iat > now + leeway
            || claims.exp.saturating_sub(claims.iat) > max.saturating_add(leeway)
        {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn rules() -> TokenRules {
        TokenRules {
            issuer: "onlychat".into(),
            audience: "onlychat".into(),
            ttl: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
        }
    }

    fn keys(secret: &[u8]) -> JwtKeys {
        JwtKeys::hs256(secret, rules()).expect("keys")
    }

    #[test]
    fn an_issued_token_verifies() {
        let keys = keys(&[7u8; 32]);
        let (token, claims) = keys.issue("u1", "alice", "s1", &[]).expect("issue");
        assert_eq!(keys.verify(&token).expect("valid"), claims);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let (token, _) = keys(&[7u8; 32])
            .issue("u1", "alice", "s1", &[])
            .expect("issue");
        assert_eq!(keys(&[8u8; 32]).verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn an_unsigned_alg_none_token_is_invalid() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = chrono::Utc::now().timestamp();
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(
            r#"{{"sub":"u","name":"n","sid":"s","iat":{now},"nbf":{now},"exp":{},"jti":"j","iss":"onlychat","aud":"onlychat","roles":[]}}"#,
            now + 60
        ));
        assert_eq!(
            keys(&[7u8; 32]).verify(&format!("{header}.{body}.")),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(JwtKeys::hs256(b"short", rules()).is_err());
    }
}

#[cfg(test)]
mod asymmetric_tests {
    use super::tests::rules;
    use super::*;

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).expect("test key")
    }

    #[test]
    fn eddsa_tokens_carry_the_thumbprint_kid_and_verify_with_the_public_key_alone() {
        let gateway =
            JwtKeys::asymmetric("EdDSA", Some(&pem("ed-a.pem")), &[], rules()).expect("keys");
        let node =
            JwtKeys::asymmetric("EdDSA", None, &[pem("ed-a.pub.pem")], rules()).expect("keys");
        let (token, claims) = gateway.issue("u1", "alice", "s1", &[]).expect("issue");
        let kid = jsonwebtoken::decode_header(&token)
            .expect("header")
            .kid
            .expect("kid");
        assert_eq!(gateway.jwks()["keys"][0]["kid"], kid.as_str());
        assert_eq!(
            node.jwks()["keys"][0]["kid"],
            kid.as_str(),
            "the same key has the same thumbprint"
        );
        assert_eq!(node.verify(&token), Ok(claims));
        assert_eq!(
            node.issue("u", "n", "s", &[]).map(|_| ()),
            Err(TokenError::Invalid),
            "no signing key"
        );
    }

    #[test]
    fn after_rotation_tokens_of_the_previous_key_still_verify_and_new_ones_use_the_new_key() {
        let old = JwtKeys::asymmetric("EdDSA", Some(&pem("ed-a.pem")), &[], rules()).expect("keys");
        let new = JwtKeys::asymmetric(
            "EdDSA",
            Some(&pem("ed-b.pem")),
            &[pem("ed-a.pub.pem")],
            rules(),
        )
        .expect("keys");
        let (before, _) = old.issue("u1", "alice", "s1", &[]).expect("issue");
        let (after, _) = new.issue("u1", "alice", "s1", &[]).expect("issue");
        assert!(new.verify(&before).is_ok(), "previous key still accepted");
        assert!(new.verify(&after).is_ok());
        assert_eq!(
            old.verify(&after),
            Err(TokenError::Invalid),
            "the old set does not know the new key"
        );
        assert_eq!(new.jwks()["keys"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn rs256_works_and_an_hs256_token_signed_with_the_public_key_bytes_is_refused() {
        let keys = JwtKeys::asymmetric("RS256", Some(&pem("rsa.pem")), &[], rules()).expect("keys");
        let (token, _) = keys.issue("u1", "alice", "s1", &[]).expect("issue");
        assert!(keys.verify(&token).is_ok());
        assert_eq!(keys.jwks()["keys"][0]["kty"], "RSA");
        // The classic confusion attack: HS256 with the public key as the HMAC secret.
        let forger = JwtKeys::hs256(&pem("rsa.pub.pem"), rules()).expect("hs256");
        let (forged, _) = forger
            .issue("u1", "alice", "s1", &["admin".into()])
            .expect("issue");
        assert_eq!(keys.verify(&forged), Err(TokenError::Invalid));
    }

    #[test]
    fn over_long_lifetimes_and_future_iat_are_refused() {
        let short = TokenRules {
            max_lifetime: Duration::from_secs(30),
            ..rules()
        };
        let issuer = JwtKeys::hs256(&[9u8; 32], rules()).expect("keys");
        let verifier = JwtKeys::hs256(&[9u8; 32], short).expect("keys");
        let (token, _) = issuer.issue("u1", "alice", "s1", &[]).expect("issue");
        assert_eq!(
            verifier.verify(&token),
            Err(TokenError::Invalid),
            "a 60 s token over a 30 s maximum"
        );
    }
}
