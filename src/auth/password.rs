//! Argon2id hashing, always on the blocking pool (about 20 ms of CPU each).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

use crate::error::ApiError;

/// Hashes `password` with Argon2id and a random salt (PHC string).
pub async fn hash(password: String) -> Result<String, ApiError> {
    blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
}

/// Whether `password` matches the stored PHC hash. A malformed hash counts
/// as a mismatch (and is logged), never as a server error the client sees.
pub async fn verify(password: String, stored: String) -> Result<bool, ApiError> {
    blocking(move || {
        let parsed = match PasswordHash::new(&stored) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::error!(error = %err, "stored password hash does not parse");
                return Ok(false);
            }
        };
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

/// Spends the same work as a real check, so that a login for an unknown
/// email takes as long as one with a wrong password.
pub async fn verify_dummy(password: String) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY
        .get_or_init(|| {
            Argon2::default()
                .hash_password(b"ragd-dummy-password")
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone();
    let _ = verify(password, stored).await;
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(ApiError::internal)?
}
