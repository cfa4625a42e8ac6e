//! Accounts: email, Argon2id hash and the token version that revokes tokens.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::{Result, format_ms};

/// An account as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub created_at: String,
}

/// What authentication needs to know about an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
    pub token_version: i64,
}

fn credentials(row: &Row<'_>) -> rusqlite::Result<Credentials> {
    Ok(Credentials {
        user: User {
            id: row.get(0)?,
            email: row.get(1)?,
            created_at: format_ms(row.get(2)?),
        },
        password_hash: row.get(3)?,
        token_version: row.get(4)?,
    })
}

const SELECT: &str = "SELECT id, email, created_at, password_hash, token_version FROM users";

/// Inserts an account; `None` when the email is already registered.
#[instrument(skip_all)]
pub fn create(conn: &Connection, email: &str, password_hash: &str, now: i64) -> Result<Option<Credentials>> {
    let id = super::new_id();
    let inserted = conn.execute(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (email) DO NOTHING",
        params![id, email, password_hash, now],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    Ok(Some(Credentials {
        user: User {
            id,
            email: email.to_owned(),
            created_at: format_ms(now),
        },
        password_hash: password_hash.to_owned(),
        token_version: 0,
    }))
}

#[instrument(skip_all)]
pub fn by_email(conn: &Connection, email: &str) -> Result<Option<Credentials>> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE email = ?1"))?
        .query_row([email], credentials)
        .optional()?)
}

#[instrument(skip_all)]
pub fn by_id(conn: &Connection, id: &str) -> Result<Option<Credentials>> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE id = ?1"))?
        .query_row([id], credentials)
        .optional()?)
}

/// Revokes every token issued so far; returns the new version.
#[instrument(skip_all)]
pub fn bump_token_version(conn: &Connection, id: &str) -> Result<i64> {
    Ok(conn.query_row(
        "UPDATE users SET token_version = token_version + 1 WHERE id = ?1 RETURNING token_version",
        [id],
        |r| r.get(0),
    )?)
}

/// Replaces the password hash and revokes older tokens, only if the hash
/// is still the one that was verified (a concurrent change wins otherwise).
#[instrument(skip_all)]
pub fn set_password(conn: &Connection, id: &str, old_hash: &str, new_hash: &str) -> Result<i64> {
    Ok(conn.query_row(
        "UPDATE users SET password_hash = ?3, token_version = token_version + 1
         WHERE id = ?1 AND password_hash = ?2 RETURNING token_version",
        params![id, old_hash, new_hash],
        |r| r.get(0),
    )?)
}

/// Sets a new password hash whatever the old one was (an administrator's
/// reset) and revokes every token; returns the new version.
#[instrument(skip_all)]
pub fn reset_password(conn: &Connection, id: &str, new_hash: &str) -> Result<i64> {
    Ok(conn.query_row(
        "UPDATE users SET password_hash = ?2, token_version = token_version + 1
         WHERE id = ?1 RETURNING token_version",
        params![id, new_hash],
        |r| r.get(0),
    )?)
}

/// An account with what it owns, as `ragd user list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub email: String,
    pub created_at: String,
    pub documents: i64,
    pub conversations: i64,
}

const SUMMARY: &str = "SELECT u.id, u.email, u.created_at,
        (SELECT count(*) FROM documents d WHERE d.user_id = u.id),
        (SELECT count(*) FROM conversations c WHERE c.user_id = u.id)
    FROM users u";

fn summary(row: &Row<'_>) -> rusqlite::Result<Summary> {
    Ok(Summary {
        id: row.get(0)?,
        email: row.get(1)?,
        created_at: format_ms(row.get(2)?),
        documents: row.get(3)?,
        conversations: row.get(4)?,
    })
}

/// Every account, oldest first, with its document and conversation counts.
#[instrument(skip_all)]
pub fn summaries(conn: &Connection) -> Result<Vec<Summary>> {
    let rows = conn
        .prepare(&format!("{SUMMARY} ORDER BY u.created_at, u.id"))?
        .query_map([], summary)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One account with its counts, by (normalized) email.
#[instrument(skip_all)]
pub fn summary_by_email(conn: &Connection, email: &str) -> Result<Option<Summary>> {
    Ok(conn
        .prepare(&format!("{SUMMARY} WHERE u.email = ?1"))?
        .query_row([email], summary)
        .optional()?)
}

/// Deletes the account; everything it owns goes with it (ON DELETE
/// CASCADE). Its search index is the caller's to drop first
/// (`chunks::drop_user_index`), so that the chunks' deletes need not queue
/// their text for it.
#[instrument(skip_all)]
pub fn delete(conn: &Connection, id: &str) -> Result<()> {
    let deleted = conn.execute("DELETE FROM users WHERE id = ?1", [id])?;
    if deleted == 0 {
        return Err(super::Error::NotFound);
    }
    Ok(())
}
