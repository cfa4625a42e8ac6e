//! SQLite access: a read pool (r2d2) and one writer thread that group-commits
//! queued writes. All SQL of ragd lives in this module's files.

mod migrate;
mod writer;

pub mod chunks;
pub mod conversations;
pub mod documents;
pub mod events;
pub mod idempotency;
pub mod jobs;
pub mod maintenance;
pub mod messages;
pub mod revocations;
pub mod users;

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::config::SyncMode;
pub use migrate::{check_current as check_schema, versions as schema_versions};
pub use writer::{Publisher, Writer};

/// How long a connection waits for a lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections; reads are short, so a few serve many requests.
const READ_POOL_SIZE: u32 = 8;
/// Read connections map up to this much of the database file instead of
/// copying its pages into a private cache with a system call each: search
/// reads many pages of the full-text index, and the mapping is shared by
/// every connection (and is page cache the kernel can reclaim).
const READ_MMAP_BYTES: i64 = 1 << 30;

/// Failures of the storage layer, classified for the HTTP mapping.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("row not found")]
    NotFound,
    #[error("database is busy")]
    Busy,
    #[error("disk is full")]
    DiskFull,
    #[error("database is closed")]
    Closed,
    /// The row's state does not allow the change (HTTP 409).
    #[error("{0}")]
    Conflict(&'static str),
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("{0}")]
    Other(String),
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            _ if matches!(err, rusqlite::Error::QueryReturnedNoRows) => Error::NotFound,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy,
            Some(ErrorCode::DiskFull) => Error::DiskFull,
            _ => Error::Sqlite(err),
        }
    }
}

impl Error {
    /// The same failure for another caller of a failed batch (errors don't clone).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::NotFound => Error::NotFound,
            Error::Busy => Error::Busy,
            Error::DiskFull => Error::DiskFull,
            Error::Closed => Error::Closed,
            Error::Conflict(why) => Error::Conflict(why),
            other => Error::Other(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Handle to the database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: Writer,
    epoch: Arc<str>,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    /// Blocking: call before serving or from a blocking thread.
    pub fn open(path: &Path, sync: SyncMode, publish: Publisher) -> Result<Db> {
        Self::open_measured(path, sync, publish, metrics::Histogram::noop())
    }

    /// `open`, with the writer timing each batch from `BEGIN` to `COMMIT`
    /// into `commits`.
    pub fn open_measured(
        path: &Path,
        sync: SyncMode,
        publish: Publisher,
        commits: metrics::Histogram,
    ) -> Result<Db> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Other(format!(
                "cannot enable WAL mode (journal_mode is {mode})"
            )));
        }
        configure(&conn, sync)?;
        migrate::run(&mut conn)?;
        Self::finish(path, conn, sync, |conn| Writer::start(conn, publish, commits))
    }

    /// Opens an existing database beside the server that may be running on
    /// it (`ragd user`): never creates or migrates it, and fails unless it
    /// is at this ragd's schema version. Its writes wait for the server's
    /// (SQLite serializes the two writers; `BUSY_TIMEOUT`).
    pub fn open_beside_server(path: &Path, publish: Publisher) -> Result<Db> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn, SyncMode::Full)?;
        migrate::check_current(&conn)?;
        Self::finish(path, conn, SyncMode::Full, |conn| {
            Writer::start_beside(conn, publish)
        })
    }

    /// The read pool, and the writer `start`s on `conn` (migrated).
    fn finish(
        path: &Path,
        conn: Connection,
        sync: SyncMode,
        start: impl FnOnce(Connection) -> Result<Writer>,
    ) -> Result<Db> {
        let epoch: String = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0))?;

        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| {
                configure(c, sync)?;
                c.pragma_update(None, "mmap_size", READ_MMAP_BYTES)
            });
        let pool = r2d2::Pool::builder()
            .max_size(READ_POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(BUSY_TIMEOUT)
            .build(manager)?;
        let writer = start(conn)?;
        Ok(Db {
            pool,
            writer,
            epoch: epoch.into(),
        })
    }

    /// Identifies this database; a restored or recreated one has another.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Runs `f` on a pooled read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Other(format!("read task failed: {e}")))?
    }

    /// Runs `f` inside the writer's current transaction; resolves once the
    /// transaction holding its changes has committed (or with its error,
    /// in which case none of its changes were kept). Events emitted through
    /// the `Tx` are published after the commit, never before.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// Checkpoints the WAL (between write batches) when it has grown past
    /// `max_bytes`, so it does not grow without bound under steady reads.
    pub async fn checkpoint_if_larger(&self, wal: &Path, max_bytes: u64) {
        let size = tokio::fs::metadata(wal).await.map(|m| m.len()).unwrap_or(0);
        if size > max_bytes {
            // Not waiting for readers: a long one (a backup) would hold up
            // every write for the busy timeout, at each sweep.
            self.writer.checkpoint(writer::Readers::Skip).await;
        }
    }

    /// Checkpoints the WAL and truncates it, after the writes queued so far,
    /// waiting up to the busy timeout for readers (to free disk space).
    pub async fn checkpoint(&self) {
        self.writer.checkpoint(writer::Readers::Wait).await;
    }

    /// Writes waiting for the writer thread (the write queue's depth).
    pub fn queued_writes(&self) -> usize {
        self.writer.queued()
    }

    /// Stops the writer after the writes already queued, and waits for it.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

/// A write in progress: the connection (through `Deref`) plus the events
/// it emits, which the writer publishes once the transaction commits.
pub struct Tx<'c> {
    conn: &'c Connection,
    events: Vec<events::EventFrame>,
    after_commit: Vec<AfterCommit>,
    /// Whether the events are kept for publishing (see `store_only`).
    publish: bool,
}

/// Work that may only happen once a write has committed (e.g. closing the
/// sockets of a user whose tokens were just revoked). It runs on the writer
/// thread, so it must be quick and must not block.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'c> Tx<'c> {
    /// A write on `conn`, whose events are published once it commits.
    fn new(conn: &'c Connection) -> Tx<'c> {
        Tx {
            conn,
            events: Vec::new(),
            after_commit: Vec::new(),
            publish: true,
        }
    }

    /// Runs `action` right after this write commits (never if it does not),
    /// whether or not the caller is still waiting.
    pub fn after_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(action));
    }

    /// From now on, events are stored but not kept for publishing (those
    /// emitted before are still published): for a write made before anyone
    /// can listen (the start-up sweep), whose hundreds of thousands of
    /// frames would otherwise be held until the commit only to reach
    /// nobody. Clients replay them from the log.
    pub fn store_only(&mut self) {
        self.publish = false;
    }

    /// Appends an event to the user's log in this transaction.
    pub fn emit(
        &mut self,
        user_id: &str,
        kind: crate::types::EventType,
        subject: events::Subject<'_>,
        data: &impl serde::Serialize,
        now: i64,
    ) -> Result<()> {
        let event = events::NewEvent::new(user_id, kind, subject, data)?;
        self.emit_all(vec![event], now)
    }

    /// Appends many events, in order, to their users' logs in this
    /// transaction (one statement per user for the ids: for bulk changes).
    pub fn emit_all(&mut self, events: Vec<events::NewEvent<'_>>, now: i64) -> Result<()> {
        let frames = events::append_all(self.conn, events, now, self.publish)?;
        self.events.extend(frames);
        Ok(())
    }
}

/// Pragmas every connection needs (ARCHITECTURE.md: WAL, FKs, busy timeout,
/// configurable synchronous).
fn configure(conn: &Connection, sync: SyncMode) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Search statements name the user's own index table, so with several
    // active users there are more distinct statements than rusqlite's
    // default 16 keeps prepared.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let synchronous = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(())
}

/// Where an item is in a list's order (a timestamp and its id, which breaks
/// ties), for cursors: the next page starts strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKey {
    pub at: i64,
    pub id: String,
}

/// One page of an owner's list ordered by (timestamp, id), strictly after
/// `before`: `sql` takes the owner as ?1, the key as ?2 and ?3 (NULL for the
/// first page) and how many rows to fetch as ?4.
pub(crate) fn list_page<T>(
    conn: &Connection,
    sql: &str,
    owner: &str,
    before: Option<&ListKey>,
    limit: usize,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<(T, ListKey)>,
) -> Result<(Vec<T>, Option<ListKey>)> {
    let rows = conn
        .prepare_cached(sql)?
        .query_map(
            rusqlite::params![
                owner,
                before.map(|k| k.at),
                before.map(|k| k.id.as_str()),
                fetch_for(limit)
            ],
            row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(page(rows, limit))
}

/// How many rows to ask for a page of `limit`: one more shows whether
/// more follow.
pub(crate) fn fetch_for(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

/// A page of `rows` (asked for with `fetch_for(limit)`): its first `limit`
/// items, and the key of the last of them when more follow.
pub(crate) fn page<T>(rows: Vec<(T, ListKey)>, limit: usize) -> (Vec<T>, Option<ListKey>) {
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for (item, key) in rows.into_iter().take(limit) {
        items.push(item);
        last = Some(key);
    }
    (items, last.filter(|_| more))
}

/// Milliseconds since the Unix epoch: how timestamps are stored.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T20:01:21.123Z`.
pub fn format_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// A new opaque, time-ordered id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sweeps_checkpoint_does_not_hold_writes_up_for_a_long_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ragd.db");
        let wal = dir.path().join("ragd.db-wal");
        let db = Db::open(&path, SyncMode::Normal, Arc::new(|_| {})).expect("open");
        let insert = |n: i64| {
            db.write(move |tx| {
                tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                Ok(())
            })
        };
        db.write(|tx| Ok(tx.execute_batch("CREATE TABLE t (n INTEGER)")?))
            .await
            .expect("table");
        insert(1).await.expect("insert");
        // A reader holds its snapshot, as a backup's long read does, while
        // the WAL grows past it.
        let reader = Connection::open(&path).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        insert(2).await.expect("insert");

        db.checkpoint_if_larger(&wal, 0).await;
        let started = std::time::Instant::now();
        insert(3).await.expect("insert");
        // Waiting for the reader would take the whole busy timeout.
        assert!(
            started.elapsed() < BUSY_TIMEOUT / 2,
            "the write waited {:?} behind the checkpoint",
            started.elapsed()
        );
        assert_eq!(seen, 1);

        // Once the reader is done, a checkpoint that waits truncates it.
        reader.execute_batch("COMMIT").expect("commit");
        db.checkpoint().await;
        insert(4).await.expect("insert");
        db.close().await;
        let count: i64 = Connection::open(&path)
            .expect("open")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 4);
    }

    #[test]
    fn timestamps_are_rfc3339_with_millis() {
        assert_eq!(format_ms(1_795_896_081_123), "2026-11-28T20:01:21.123Z");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
