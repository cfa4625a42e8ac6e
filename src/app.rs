//! Start-up and shutdown in the order of API.md ("Health and operations"):
//! lock the data dir, migrate, run the start-up sweeps, then listen; on a
//! signal stop accepting, let in-flight requests finish for up to
//! `--shutdown-timeout`, then close the database and exit.

use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, LoginLimiter, secret};
use crate::config::Config;
use crate::db::Db;
use crate::lock::DataDirLock;

/// Shared state of every request: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub db: Db,
    pub jwt: JwtKeys,
    pub limiter: LoginLimiter,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

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
    _lock: DataDirLock,
}

impl App {
    /// Everything before listening. Blocking work runs off the async workers.
    pub async fn build(config: Config) -> Result<App, StartupError> {
        tokio::task::spawn_blocking(move || Self::build_blocking(config))
            .await
            .map_err(|e| StartupError::Runtime(format!("start-up task failed: {e}")))?
    }

    fn build_blocking(config: Config) -> Result<App, StartupError> {
        let dir = &config.data_dir;
        // The data dir holds accounts and the signing secret: owner only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StartupError::Runtime(format!("cannot create the data dir {}: {e}", dir.display()))
            })?;
        let lock = DataDirLock::acquire(dir).map_err(StartupError::Runtime)?;
        let secret = secret::load_or_create(config.jwt_secret.as_ref().map(|s| s.0.as_str()), dir)
            .map_err(StartupError::Config)?;
        let db_path = dir.join("ragd.db");
        let db = Db::open(&db_path, config.sync).map_err(|e| {
            StartupError::Runtime(format!("cannot open the database {}: {e}", db_path.display()))
        })?;
        let jwt = JwtKeys::new(&secret).map_err(StartupError::Config)?;
        // Start-up sweeps (interrupted replies, running jobs) join here.
        let state = AppState(Arc::new(Shared {
            jwt,
            limiter: LoginLimiter::default(),
            db,
            config,
        }));
        Ok(App { state, _lock: lock })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains
    /// in-flight requests for up to `--shutdown-timeout` and closes the
    /// database. The data dir lock is released when this returns.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let router = crate::api::router(self.state.clone());
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let server =
            axum::serve(listener, service).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let timeout = self.state.config.shutdown_timeout;
        let drained = async {
            shutdown.cancelled().await;
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            result = server => result?,
            () = drained => tracing::warn!(?timeout, "in-flight requests did not finish in time; stopping anyway"),
        }
        // Finishing work (interrupted replies, requeued jobs) joins here.
        self.state.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs the server with `config` until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let listen = config.listen;
    let app = App::build(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartupError::Runtime(format!("cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartupError::Runtime(e.to_string()))?;
    tracing::info!(address = %local, data_dir = %app.state.config.data_dir.display(), "ragd listening on http://{local}");

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app.serve(listener, shutdown)
        .await
        .map_err(|e| StartupError::Runtime(format!("server error: {e}")))
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining");
    token.cancel();
}
