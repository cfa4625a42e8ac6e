//! The context every operation takes: the configuration, the database, the
//! hub, the registries of running work (generations, parse jobs), the
//! files, the limiters and the shutdown signal. Cheap to clone (one `Arc`);
//! built once by `app`.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, LoginLimiter, RegistrationLimiter, Tickets};
use crate::chat::Generations;
use crate::config::Config;
use crate::db::{self, Db};
use crate::files::Files;
use crate::instruments::Metrics;
use crate::rag::Answerer;
use crate::realtime::Hub;
use crate::reserve::DiskReserve;

/// Shared state of every request: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub db: Db,
    pub jwt: JwtKeys,
    pub limiter: LoginLimiter,
    pub registrations: RegistrationLimiter,
    pub hub: Hub,
    pub tickets: Tickets,
    pub generations: Generations,
    pub answerer: Arc<dyn Answerer>,
    pub hooks: Hooks,
    pub worker: crate::worker::Control,
    /// The full-text index of every chunk: `<data-dir>/index/`.
    pub search: crate::search::Index,
    /// Uploaded originals: `<data-dir>/files/<document id>`.
    pub files: Files,
    /// Space kept free for deletions on a full disk.
    pub reserve: DiskReserve,
    /// Cancelled when shutdown begins: sockets close with 1012.
    pub stopping: CancellationToken,
    /// This server's metrics (`GET /metrics`); its own, not a global.
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A write that frees space (deleting a document, a conversation, an
    /// account). On a full disk it would fail like any other: then the disk
    /// reserve is released, the WAL checkpointed and truncated, and the write
    /// runs once more.
    pub async fn write_to_free_space<T, F>(&self, f: F) -> db::Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut db::Tx<'_>) -> db::Result<T> + Clone + Send + 'static,
    {
        match self.db.write(f.clone()).await {
            Err(db::Error::DiskFull) => {
                self.reserve.release().await;
                self.db.checkpoint().await;
                self.db.write(f).await
            }
            other => other,
        }
    }
}

/// Seams for tests, reachable from Rust code only: never from the command
/// line or the environment of a release build.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Answers with this provider instead of the configured one.
    pub answerer: Option<Arc<dyn Answerer>>,
    /// Each `/ws` with `since` sleeps this long after subscribing to live
    /// events and before reading the stored ones, so a test can commit
    /// writes in exactly that window.
    pub replay_pause: Option<Duration>,
    /// The binary the worker starts as its parser child (`ragd parse`);
    /// in-process tests point it at the built `ragd`, since their own
    /// executable is the test harness.
    pub parser_exe: Option<PathBuf>,
}
