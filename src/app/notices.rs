//! What `ragd user` (another process, `super::admin`) tells the running
//! server through the database. A password reset or an account deletion
//! commits a `revocations` row with its change; this task reads the rows
//! newer than the last it saw every `POLL` (one indexed read: cheap when
//! nothing changed) and does what the API does in-process for the same
//! change: closes the user's sockets with 4003 and, for a deleted account,
//! wakes the indexer to drop its chunks now. Tokens need nothing: every
//! request reads the user's token version from the database.

use std::time::Duration;

use crate::AppState;
use crate::db::{self, revocations::Reason, revocations::Revocation};
use crate::realtime::close;

/// How often the server looks: the longest a revoked user's socket stays
/// open (docs/API.md).
pub(super) const POLL: Duration = Duration::from_secs(1);

/// Watches for revocations after `seen` (the newest id when the server
/// started: one that starts later has no socket to close) until aborted.
pub(super) async fn watch(state: AppState, mut seen: i64) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let after = seen;
        match state
            .db
            .read(move |conn| db::revocations::after(conn, after))
            .await
        {
            Ok(new) => {
                failing = false;
                for revocation in new {
                    seen = revocation.id;
                    apply(&state, &revocation);
                }
            }
            // Once per outage, not every second.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "cannot read the revocations of ragd user commands");
            }
            Err(_) => {}
        }
    }
}

fn apply(state: &AppState, revocation: &Revocation) {
    let user_id = &revocation.user_id;
    match revocation.reason {
        Reason::PasswordReset => {
            tracing::info!(%user_id, "password reset by an administrator: closing the user's sockets");
            state
                .hub
                .close_user(user_id, close::REVOKED, "password reset by an administrator");
        }
        Reason::Deleted => {
            tracing::info!(%user_id, "account deleted by an administrator: closing the user's sockets");
            state.hub.close_user(user_id, close::REVOKED, "account deleted");
            state.worker.indexing.changed();
        }
    }
}
