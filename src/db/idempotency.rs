//! `Idempotency-Key` records: (user, key) -> the request's fingerprint and
//! what it created, so a repeat answers with the same objects.

use rusqlite::{Connection, OptionalExtension, params};
use tracing::instrument;

use super::{Error, Result};

/// How long a key is remembered (API.md: 24 h).
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// A stored first answer.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub status: u16,
    /// JSON naming what the first request created.
    pub response: String,
}

/// The recorded answer for this key, `Err(Conflict)` when the key was used
/// for another request (method, path or body differ), `None` when new.
#[instrument(skip_all)]
pub fn find(
    conn: &Connection,
    user_id: &str,
    key: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Option<Recorded>> {
    let row: Option<(String, u16, String)> = conn
        .prepare_cached(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE user_id = ?1 AND key = ?2 AND created_at > ?3",
        )?
        .query_row(params![user_id, key, now - KEEP_MS], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match row {
        None => Ok(None),
        Some((hash, _, _)) if hash != fingerprint => Err(Error::Conflict(
            "this Idempotency-Key was used for a different request",
        )),
        Some((_, status, response)) => Ok(Some(Recorded { status, response })),
    }
}

/// Records the first answer for a key (replacing an expired record).
#[instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub fn record(
    conn: &Connection,
    user_id: &str,
    key: &str,
    method: &str,
    path: &str,
    fingerprint: &str,
    recorded: &Recorded,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys
         (user_id, key, method, path, request_hash, status, response, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        user_id,
        key,
        method,
        path,
        fingerprint,
        recorded.status,
        recorded.response,
        now
    ])?;
    Ok(())
}

/// Forgets keys older than 24 h.
#[instrument(skip_all)]
pub fn prune(conn: &Connection, now: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at <= ?1",
        [now - KEEP_MS],
    )?)
}
