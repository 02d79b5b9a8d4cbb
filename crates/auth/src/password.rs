//! Password hashing with argon2id (PHC strings, the crate's default parameters: 19 MiB, 2
//! passes). Hashing costs tens of milliseconds of CPU, so it runs on tokio's blocking pool,
//! never on the async executor, and at most one hash per core at a time.
//!
//! Each hash needs 19 MiB of working memory. Allocated and freed per login, glibc's malloc kept
//! nearly all of it (its mmap threshold rises to the first freed size, and the aligned blocks
//! were not reused): a gateway grew by ~20 MiB per login to over 1 GiB. So the working memory is
//! a pool: one buffer per hashing slot, allocated once and reused.

use std::sync::{LazyLock, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

/// A hash of a password nobody has, verified when the user does not exist so that an unknown
/// username costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_now(b"onlychat-timing-equaliser").ok());

/// Hashes running at once: one per core.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
});

/// Working memory of finished hashes, for the next ones (at most one per hashing slot).
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Salt length in bytes (the PHC recommendation).
const SALT_LEN: usize = 16;

/// Hashing failed (the blocking pool is gone, the RNG failed, or the parameters are invalid).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hash_error(e: impl std::fmt::Display) -> HashError {
    HashError(e.to_string())
}

/// Runs one argon2 computation on the blocking pool once a hashing slot is free.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let _slot = HASHING.acquire().await;
    tokio::task::spawn_blocking(work).await
}

/// Computes argon2 of `password` and `salt` into `out` with pooled working memory.
fn compute(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let mut memory = MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
        .unwrap_or_default();
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let result = argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks]);
    MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(memory);
    result
}

/// Hashes on the calling thread (argon2id, default parameters, a random salt).
fn hash_now(password: &[u8]) -> Result<String, HashError> {
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    compute(&argon, &params, password, &salt, &mut out).map_err(hash_error)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hash_error)?,
        salt: Some(Salt::new(&salt).map_err(hash_error)?),
        hash: Some(Output::new(&out).map_err(hash_error)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored` (any argon2 variant and parameters).
fn verify_now(password: &[u8], stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        hash.version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    compute(&argon, &params, password, salt, &mut out).is_ok()
        // `Output`'s equality is constant-time.
        && Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Hashes a password into a PHC string (argon2id, random salt).
pub async fn hash(password: String) -> Result<String, HashError> {
    hashing(move || hash_now(password.as_bytes()))
        .await
        .map_err(hash_error)?
}

/// Checks a password against a stored PHC string; with `None` it checks against a dummy hash
/// and returns false, taking the same time.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    hashing(move || {
        let known = stored.is_some();
        let Some(hash) = stored.or_else(|| DUMMY_HASH.clone()) else {
            return false;
        };
        verify_now(password.as_bytes(), &hash) && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let stored = hash("correct horse".into()).await.expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), Some(stored.clone())).await);
        assert!(!verify("wrong horse".into(), Some(stored)).await);
        assert!(!verify("onlychat-timing-equaliser".into(), None).await);
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own_hasher() {
        // Stored by earlier versions (the crate's `hash_password`), verified here...
        let theirs = Argon2::default()
            .hash_password(b"old password")
            .expect("hash")
            .to_string();
        assert!(verify_now(b"old password", &theirs));
        assert!(!verify_now(b"other password", &theirs));
        // ...and ours verified by the crate.
        let ours = hash_now(b"new password").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"new password", &parsed)
                .is_ok()
        );
        assert!(!verify_now(b"new password", "not a phc string"));
    }
}
