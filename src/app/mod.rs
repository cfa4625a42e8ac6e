//! The application: start-up in the order of
//! docs/API.md ("Health and operations"): lock the data dir, migrate, run
//! the start-up sweeps (`sweep`), then listen and serve until a signal
//! (`serve`, which also shuts down in order).

pub mod admin;
mod backup;
mod check;
mod notices;
mod reindex;
mod restore;
mod serve;
mod sweep;

pub use backup::{BackedUp, backup};
pub use check::{Report, check};
pub use reindex::{Reindexed, reindex};
pub use restore::{Restored, restore};

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, LoginLimiter, RegistrationLimiter, Tickets, secret};
use crate::chat::Generations;
use crate::config::Config;
use crate::config::LlmProvider;
use crate::db::{self, Db};
use crate::files::Files;
use crate::instruments::Metrics;
use crate::lock::DataDirLock;
use crate::rag::{Answerer, Extractive, OpenAi};
use crate::realtime::Hub;
use crate::reserve::DiskReserve;
use crate::state::{AppState, Hooks, Shared};

/// Why the server could not start; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration (exit 2, like a bad flag).
    #[error("{0}")]
    Config(String),
    /// The data dir, its lock, the database or the listener (exit 1).
    #[error("{0}")]
    Runtime(String),
}

impl StartupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config(_) => 2,
            StartupError::Runtime(_) => 1,
        }
    }
}

/// A server that has locked its data dir, migrated and swept, and is ready
/// to listen.
pub struct App {
    state: AppState,
    /// The newest revocation by `ragd user` at start-up (`notices`).
    revoked_through: i64,
    _lock: DataDirLock,
}

impl App {
    /// Everything before listening.
    pub async fn build(config: Config) -> Result<App, StartupError> {
        Self::build_with(config, Hooks::default()).await
    }

    /// `build` with test seams.
    pub async fn build_with(config: Config, hooks: Hooks) -> Result<App, StartupError> {
        check_metrics_token(&config)?;
        let metrics = Metrics::new();
        let hub = Hub::new(metrics.events_published.clone());
        let publisher_hub = hub.clone();
        let publish: db::Publisher = Arc::new(move |events| publisher_hub.publish(events));
        let dir = config.data_dir.clone();
        let (sync, jwt_secret) = (config.sync, config.jwt_secret.clone());
        let commits = metrics.commit_seconds.clone();
        let (lock, secret, db) = tokio::task::spawn_blocking(move || {
            let secret = jwt_secret.as_ref().map(|s| s.0.as_str());
            open_data_dir(&dir, sync, secret, publish, commits)
        })
        .await
        .map_err(|e| StartupError::Runtime(format!("start-up task failed: {e}")))??;
        let jwt = JwtKeys::new(&secret).map_err(StartupError::Config)?;

        let files = Files::new(&config.data_dir);
        sweep::at_start_up(&db, &files, &metrics).await?;
        // Read before listening: no socket can predate it.
        let revoked_through = db
            .read(db::revocations::last_id)
            .await
            .map_err(|e| StartupError::Runtime(format!("cannot read the revocations: {e}")))?;
        let search = open_index(&config.data_dir, db.epoch()).await?;
        let reserve = DiskReserve::new(&config.data_dir, config.disk_reserve_mb.saturating_mul(1 << 20));
        if !reserve.ensure().await {
            tracing::warn!(
                mib = config.disk_reserve_mb,
                "no room for the disk reserve: uploads are refused (507) until there is"
            );
        }

        let answerer: Arc<dyn Answerer> = match (&hooks.answerer, config.llm_provider) {
            (Some(answerer), _) => answerer.clone(),
            (None, LlmProvider::Extractive) => Arc::new(Extractive),
            (None, LlmProvider::Openai) => {
                let provider = OpenAi::from_config(&config).map_err(StartupError::Config)?;
                // Only a warning when it is down: the model server may come up later.
                let check = provider.clone();
                tokio::spawn(async move { check.check().await });
                Arc::new(provider)
            }
        };
        let state = AppState::new(Shared {
            jwt,
            limiter: LoginLimiter::default(),
            registrations: RegistrationLimiter::new(config.registrations_per_hour),
            hub,
            tickets: Tickets::default(),
            generations: Generations::default(),
            answerer,
            hooks,
            worker: crate::worker::Control::default(),
            files,
            reserve,
            stopping: CancellationToken::new(),
            search,
            db,
            config,
            metrics,
        });
        // Every `ready` document is searchable before the server listens:
        // after a migration or a rebuild this indexes every chunk.
        crate::worker::indexer::catch_up(&state)
            .await
            .map_err(|e| StartupError::Runtime(format!("cannot build the search index: {e}")))?;
        Ok(App {
            state,
            revoked_through,
            _lock: lock,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }
}

fn open_data_dir(
    dir: &std::path::Path,
    sync: crate::config::SyncMode,
    jwt_secret: Option<&str>,
    publish: db::Publisher,
    commits: metrics::Histogram,
) -> Result<(DataDirLock, Vec<u8>, Db), StartupError> {
    // The data dir holds accounts and the signing secret: owner only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartupError::Runtime(format!("cannot create the data dir {}: {e}", dir.display())))?;
    let lock = DataDirLock::acquire(dir).map_err(StartupError::Runtime)?;
    let secret = secret::load_or_create(jwt_secret, dir).map_err(StartupError::Config)?;
    let db_path = dir.join("ragd.db");
    let db = Db::open_measured(&db_path, sync, publish, commits)
        .map_err(|e| StartupError::Runtime(format!("cannot open the database {}: {e}", db_path.display())))?;
    Ok((lock, secret, db))
}

/// A `--metrics-token` must be worth guarding `/metrics` with.
fn check_metrics_token(config: &Config) -> Result<(), StartupError> {
    match &config.metrics_token {
        Some(token) if token.0.trim().chars().count() < MIN_METRICS_TOKEN => Err(StartupError::Config(
            format!("--metrics-token (RAGD_METRICS_TOKEN) must have at least {MIN_METRICS_TOKEN} characters"),
        )),
        _ => Ok(()),
    }
}

/// Fewest characters of a `--metrics-token`.
const MIN_METRICS_TOKEN: usize = 16;

/// Opens the search index (`<data-dir>/index/`), replacing one that cannot
/// be used as it is (it is rebuilt from the database before serving).
async fn open_index(data_dir: &std::path::Path, epoch: &str) -> Result<crate::search::Index, StartupError> {
    let (dir, epoch) = (data_dir.join("index"), epoch.to_owned());
    let (index, fresh) = tokio::task::spawn_blocking(move || crate::search::Index::open(&dir, &epoch))
        .await
        .map_err(|e| StartupError::Runtime(format!("start-up task failed: {e}")))?
        .map_err(|e| StartupError::Runtime(format!("cannot open the search index: {e}")))?;
    match fresh {
        None | Some(crate::search::Fresh::Missing) => {}
        Some(crate::search::Fresh::Damaged(why)) => {
            tracing::warn!(reason = %why, "the search index was damaged; rebuilding it from the database");
        }
        Some(crate::search::Fresh::Stale(why)) => {
            tracing::info!(reason = %why, "the search index is out of date; rebuilding it from the database");
        }
    }
    Ok(index)
}

/// Runs the server with `config` until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let listen = config.listen;
    let app = App::build_with(config, Hooks::from_env()).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartupError::Runtime(format!("cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartupError::Runtime(e.to_string()))?;
    // The handlers are installed before "listening" is logged: a SIGTERM
    // sent the moment a supervisor sees that line must drain, not kill.
    let signals = ShutdownSignals::install();
    tracing::info!(address = %local, data_dir = %app.state.config.data_dir.display(), "ragd listening on http://{local}");

    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_on_first(shutdown.clone()));
    app.serve(listener, shutdown)
        .await
        .map_err(|e| StartupError::Runtime(format!("server error: {e}")))
}

impl Hooks {
    /// The binary's hooks: none, unless built with the `test-hooks`
    /// feature, where `RAGD_TEST_ANSWERER=hang` makes every reply wait
    /// forever (for crash tests that kill the server mid-reply).
    fn from_env() -> Hooks {
        #[cfg(feature = "test-hooks")]
        if std::env::var("RAGD_TEST_ANSWERER").as_deref() == Ok("hang") {
            tracing::warn!("test hook: every reply hangs (RAGD_TEST_ANSWERER=hang)");
            return Hooks {
                answerer: Some(Arc::new(crate::rag::Hang)),
                ..Hooks::default()
            };
        }
        Hooks::default()
    }
}

/// SIGTERM and SIGINT, registered with the OS when created (tokio's
/// `ctrl_c()` would register only when first polled).
struct ShutdownSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> ShutdownSignals {
        use tokio::signal::unix::{SignalKind, signal};
        let register = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for {name}");
                None
            }
        };
        ShutdownSignals {
            terminate: register(SignalKind::terminate(), "SIGTERM"),
            interrupt: register(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn cancel_on_first(self, token: CancellationToken) {
        async fn received(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = received(self.terminate) => {},
            () = received(self.interrupt) => {},
        }
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    }
}

/// The database of `data_dir`, for the commands that work on an existing
/// one (`reindex`, `backup`, `check`, `user`); the error names what is
/// missing.
fn existing_database(data_dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let path = data_dir.join("ragd.db");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no ragd database in {} (expected {})",
            data_dir.display(),
            path.display()
        ))
    }
}
