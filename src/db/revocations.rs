//! Revocations made by another process (`ragd user`), for the running
//! server to act on: migration 009 says why they are a table.

use rusqlite::{Connection, params};
use tracing::instrument;

use super::Result;

/// How long a row is kept (a server that starts later needs none).
const KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// What happened to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An administrator set a new password: every token is revoked.
    PasswordReset,
    /// An administrator deleted the account.
    Deleted,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::PasswordReset => "password_reset",
            Reason::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Reason> {
        match text {
            "password_reset" => Some(Reason::PasswordReset),
            "deleted" => Some(Reason::Deleted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: i64,
    pub user_id: String,
    pub reason: Reason,
}

/// Records a revocation (in the transaction that made it) and prunes the
/// rows older than a day.
#[instrument(skip_all)]
pub fn record(conn: &Connection, user_id: &str, reason: Reason, now: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM revocations WHERE created_at < ?1")?
        .execute([now.saturating_sub(KEEP_MS)])?;
    conn.prepare_cached("INSERT INTO revocations (user_id, reason, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![user_id, reason.as_str(), now])?;
    Ok(())
}

/// The newest id so far (0 when there is none): where a starting server
/// begins to watch.
#[instrument(skip_all)]
pub fn last_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM revocations", [], |r| r.get(0))?)
}

/// The revocations after `id`, oldest first.
#[instrument(skip_all)]
pub fn after(conn: &Connection, id: i64) -> Result<Vec<Revocation>> {
    let rows = conn
        .prepare_cached("SELECT id, user_id, reason FROM revocations WHERE id > ?1 ORDER BY id")?
        .query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, user_id, reason)| {
            Some(Revocation {
                id,
                user_id,
                reason: Reason::parse(&reason)?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_rows_are_read_in_order_and_old_ones_pruned() {
        let (_dir, conn) = crate::db::testing::migrated();
        assert_eq!(last_id(&conn).expect("last"), 0);
        record(&conn, "a", Reason::PasswordReset, 1_000).expect("record");
        let start = last_id(&conn).expect("last");
        record(&conn, "b", Reason::Deleted, 2_000).expect("record");
        let seen = after(&conn, start).expect("after");
        assert_eq!(
            seen.iter()
                .map(|r| (r.user_id.as_str(), r.reason))
                .collect::<Vec<_>>(),
            [("b", Reason::Deleted)]
        );
        record(&conn, "c", Reason::Deleted, 1_000 + KEEP_MS + 1).expect("record");
        let left = after(&conn, 0).expect("after");
        assert_eq!(
            left.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            ["b", "c"],
            "the row older than a day is gone"
        );
        assert!(left[1].id > seen[0].id, "ids only grow");
    }
}
