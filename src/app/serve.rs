//! Serving until a signal, then shutting down in the order of docs/API.md:
//! stop accepting, close sockets with 1012, let in-flight requests and
//! generations finish for up to `--shutdown-timeout`, stop the workers,
//! mark unfinished replies interrupted and requeue running jobs, close the
//! database.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{App, notices, sweep};
use crate::db;

impl App {
    /// Serves on `listener` until `shutdown` is cancelled, then shuts down
    /// in the order of API.md. The data dir lock is released when this
    /// returns.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = self.state.clone();
        let router = crate::api::router(state.clone());
        let stopping = state.stopping.clone();
        let sweeper = tokio::spawn(sweep::periodically(state.clone()));
        let notices = tokio::spawn(notices::watch(state.clone(), self.revoked_through));
        tokio::spawn(state.metrics.clone().upkeep(stopping.clone()));
        let workers = crate::worker::spawn(&state);
        let config = &state.config;
        let limits = crate::server::Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            body_timeout: config.body_timeout,
            min_body_rate: config.min_body_rate,
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
        };
        let abort = CancellationToken::new();
        let stop = crate::server::Stop {
            stopping: stopping.clone(),
            abort: abort.clone(),
        };
        let server = crate::server::serve(listener, router, limits, config.trusted_proxies.clone(), stop);
        let timeout = state.config.shutdown_timeout;

        tokio::pin!(server);
        let result: std::io::Result<()> = tokio::select! {
            () = &mut server => Ok(()),
            () = shutdown.cancelled() => {
                stopping.cancel();
                let deadline = tokio::time::Instant::now() + timeout;
                if tokio::time::timeout_at(deadline, &mut server).await.is_err() {
                    tracing::warn!(?timeout, "in-flight requests did not finish in time; stopping anyway");
                    // Their connections go now, not after the database closes.
                    abort.cancel();
                    (&mut server).await;
                }
                state.generations.tracker.close();
                if tokio::time::timeout_at(deadline, state.generations.tracker.wait()).await.is_err() {
                    tracing::warn!("generations did not finish in time; their replies are marked interrupted");
                    state.generations.cancel_all();
                }
                Ok(())
            }
        };
        stopping.cancel();
        sweeper.abort();
        notices.abort();
        // Workers stop at once (their parser children are killed); the jobs
        // they held go back to the queue without using up a retry.
        for worker in workers {
            // They stop at their next await; a bounded wait all the same.
            if tokio::time::timeout(std::time::Duration::from_secs(10), worker)
                .await
                .is_err()
            {
                tracing::warn!("a worker did not stop in time");
            }
        }
        let now = db::now_ms();
        let finished = state
            .db
            .write(move |tx| {
                let replies = db::messages::interrupt_unfinished(tx, now)?;
                let jobs = crate::worker::transitions::rescue(tx, db::jobs::Rescue::Shutdown, now)?;
                Ok((replies, jobs))
            })
            .await;
        match finished {
            Ok((replies, jobs)) => {
                state.metrics.replies.interrupted(replies);
                state.metrics.jobs.rescued(jobs);
            }
            Err(err) => tracing::error!(error = %err, "cannot mark unfinished work interrupted"),
        }
        state.db.close().await;
        tracing::info!("stopped");
        result
    }
}
