//! `Idempotency-Key` for every keyed route (a chat turn, an upload): a
//! repeat of the same request by the same user within 24 h creates nothing
//! new and answers with what the first one created; the same key with
//! another request is 409. The check and the record happen in the write
//! that creates, so two racing repeats cannot both create.

use sha2::{Digest, Sha256};

use crate::db::idempotency::{self, Recorded};
use crate::db::{self, Tx};

/// A request sent with an `Idempotency-Key`: the key, and what makes two
/// requests "the same" (method, path and the parts of the body that
/// matter, as a fingerprint).
#[derive(Debug, Clone)]
pub struct Keyed {
    key: String,
    method: &'static str,
    path: String,
    fingerprint: String,
}

impl Keyed {
    pub fn new(key: String, method: &'static str, path: String, body: &[u8]) -> Keyed {
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update(b"\n");
        hasher.update(path.as_bytes());
        hasher.update(b"\n");
        hasher.update(body);
        let fingerprint = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Keyed {
            key,
            method,
            path,
            fingerprint,
        }
    }
}

/// What a keyed write found: a new request (and what it created), or a
/// repeat (and what the first one recorded: its status and the JSON naming
/// what it created).
pub enum Once<T> {
    First(T),
    Repeat(Recorded),
}

/// Runs `create` in the caller's write unless `keyed` was seen before for
/// this user; records its answer (`status`, and the JSON `create` returns
/// beside its value) under the key. Without a key, `create` just runs.
pub fn once<T>(
    tx: &mut Tx<'_>,
    user_id: &str,
    keyed: Option<&Keyed>,
    status: u16,
    now: i64,
    create: impl FnOnce(&mut Tx<'_>) -> db::Result<(T, String)>,
) -> db::Result<Once<T>> {
    if let Some(keyed) = keyed
        && let Some(recorded) = idempotency::find(tx, user_id, &keyed.key, &keyed.fingerprint, now)?
    {
        return Ok(Once::Repeat(recorded));
    }
    let (value, response) = create(tx)?;
    if let Some(keyed) = keyed {
        let recorded = Recorded { status, response };
        idempotency::record(
            tx,
            user_id,
            &keyed.key,
            keyed.method,
            &keyed.path,
            &keyed.fingerprint,
            &recorded,
            now,
        )?;
    }
    Ok(Once::First(value))
}
