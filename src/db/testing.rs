//! What the storage layer's (and the domain's) unit tests share: a
//! migrated database file, test writes outside the writer, seeded rows.

use rusqlite::{Connection, params};

/// A write on `conn` outside the writer, for tests that run storage
/// functions in a transaction of their own.
pub fn tx(conn: &Connection) -> super::Tx<'_> {
    super::Tx::new(conn)
}

/// The JSON frames a test write emitted.
pub fn frames(tx: &super::Tx<'_>) -> Vec<serde_json::Value> {
    tx.events
        .iter()
        .map(|f| serde_json::from_str(&f.text).expect("frame JSON"))
        .collect()
}

/// The frames a test write emitted, each with its user.
pub fn frames_by_user(tx: &super::Tx<'_>) -> Vec<(String, serde_json::Value)> {
    tx.events
        .iter()
        .map(|f| {
            (
                f.user_id.clone(),
                serde_json::from_str(&f.text).expect("frame JSON"),
            )
        })
        .collect()
}

/// A new user row; returns its id.
pub fn user(conn: &Connection) -> String {
    let id = super::new_id();
    insert_user(conn, &id);
    id
}

/// A job of `user` in `status` with attempt 1 (open when running) and
/// its document (`parsing` while the job runs, else `queued`); returns
/// the job id.
pub fn job_in(conn: &Connection, user: &str, status: &str, retry_count: i64, lease_until: i64) -> String {
    let (doc, job) = (super::new_id(), super::new_id());
    let doc_status = if status == "running" { "parsing" } else { "queued" };
    conn.execute(
        "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256, status, created_at, updated_at)
         VALUES (?1, ?2, 'a.txt', 'text/plain', 'txt', 1, 'x', ?3, 0, 0)",
        params![doc, user, doc_status],
    )
    .expect("document");
    conn.execute(
        "INSERT INTO jobs (id, document_id, user_id, status, attempt, retry_count, max_retries, run_after, lease_until, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, 3, 0, ?6, 0, 0)",
        params![job, doc, user, status, retry_count, lease_until],
    )
    .expect("job");
    conn.execute(
        "INSERT INTO job_attempts (job_id, n, started_at) VALUES (?1, 1, 0)",
        [&job],
    )
    .expect("attempt");
    job
}

/// A database file in a temp dir, migrated, with foreign keys on (as
/// every connection of the server has them).
pub fn migrated() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = Connection::open(dir.path().join("t.db")).expect("open");
    conn.pragma_update(None, "foreign_keys", "ON").expect("pragma");
    super::migrate::run(&mut conn).expect("migrate");
    (dir, conn)
}

/// A user row with id (and email) `id`.
pub fn insert_user(conn: &Connection, id: &str) {
    conn.execute(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?1, 'x', 0)",
        [id],
    )
    .expect("user");
}
