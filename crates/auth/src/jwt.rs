//! Access tokens: short-lived JWTs a node verifies locally. The algorithm and key come from
//! configuration only; the token's own header never chooses them.

use std::time::Duration;

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

/// Signing and verification keys plus the rules every token must meet.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// Configuration errors of [`JwtKeys`].
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the JWT secret must be at least 32 bytes (it is {0})")]
    SecretTooShort(usize),
    #[error("the JWT key is unusable: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
}

impl JwtKeys {
    /// HS256 keys from a shared secret of at least 32 bytes.
    pub fn hs256(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::SecretTooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        })
    }

    /// How long a freshly issued access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues an access token; returns it with its claims.
    pub fn issue(
        &self,
        user_id: &str,
        username: &str,
        sid: &str,
        roles: &[String],
    ) -> Result<(String, Claims), TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            name: username.to_owned(),
            sid: sid.to_owned(),
            iat: now,
            nbf: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            roles: roles.to_vec(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(self.validation.algorithms[0]),
            &claims,
            &self.encoding,
        )
        .map_err(|_| TokenError::Invalid)?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, issuer, audience and time claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(CLOCK_LEEWAY_SECS).unwrap_or(0);
        if claims.iat > now + leeway {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &[u8]) -> JwtKeys {
        JwtKeys::hs256(secret, "onlychat", "onlychat", Duration::from_secs(60)).expect("keys")
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
        assert!(JwtKeys::hs256(b"short", "i", "a", Duration::from_secs(1)).is_err());
    }
}
