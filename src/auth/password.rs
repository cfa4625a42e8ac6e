//! Argon2id hashing, on two dedicated threads (about 20 ms of CPU each).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

use unicode_normalization::UnicodeNormalization;

use crate::error::ApiError;

/// The form a password is hashed and checked in: NFC, so that `é` typed as
/// one character on one keyboard and as `e` + accent on another is the same
/// password.
fn normalized(password: &str) -> String {
    password.nfc().collect()
}

/// Hashes `password` (NFC) with Argon2id and a random salt (PHC string).
pub async fn hash(password: String) -> Result<String, ApiError> {
    blocking(move || {
        Argon2::default()
            .hash_password(normalized(&password).as_bytes())
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
}

/// Whether `password` matches the stored PHC hash, in NFC; or as given,
/// for a hash made before passwords were normalized (only tried when the
/// two differ). A malformed hash counts as a mismatch (and is logged),
/// never as a server error the client sees.
pub async fn verify(password: String, stored: String) -> Result<bool, ApiError> {
    blocking(move || {
        let parsed = match PasswordHash::new(&stored) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::error!(error = %err, "stored password hash does not parse");
                return Ok(false);
            }
        };
        let matches = |candidate: &str| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        };
        let nfc = normalized(&password);
        Ok(matches(&nfc) || (nfc != password && matches(&password)))
    })
    .await
}

/// Spends the same work as a real check, so that a login for an unknown
/// email takes as long as one with a wrong password.
pub async fn verify_dummy(password: String) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let _ = blocking(move || {
        // Made once, on the hashing threads like every other hash.
        let stored = DUMMY.get_or_init(|| {
            Argon2::default()
                .hash_password(b"ragd-dummy-password")
                .map(|h| h.to_string())
                .unwrap_or_default()
        });
        if let Ok(parsed) = PasswordHash::new(stored) {
            let _ = Argon2::default().verify_password(password.as_bytes(), &parsed);
        }
        Ok(())
    })
    .await;
}

/// Threads that run Argon2 (19 MiB and about 20 ms of CPU per hash): two
/// bound how many cores and how much memory a login storm can take. That
/// the memory is given back after each hash is `main`'s doing (glibc's mmap
/// threshold).
const HASH_THREADS: usize = 2;

type HashJob = Box<dyn FnOnce() + Send>;

fn pool() -> &'static std::sync::mpsc::SyncSender<HashJob> {
    static POOL: std::sync::OnceLock<std::sync::mpsc::SyncSender<HashJob>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<HashJob>(1024);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        for n in 0..HASH_THREADS {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ragd-hash-{n}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(guard) => guard.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password hashing thread");
            }
        }
        sender
    })
}

/// Runs `f` on the hashing threads (never on an async worker).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = reply.send(span.in_scope(f));
    });
    // The queue is bounded; waiting for room must not block this worker.
    let sender = pool().clone();
    tokio::task::spawn_blocking(move || sender.send(job))
        .await
        .map_err(ApiError::internal)?
        .map_err(|_| ApiError::internal("the password hashing threads are gone"))?;
    answer
        .await
        .map_err(|_| ApiError::internal("password hashing failed"))?
}
