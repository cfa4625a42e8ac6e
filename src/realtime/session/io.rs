//! A session's reading and writing: the stored log read off the async
//! workers, frames queued and flushed within `--ws-write-timeout` (a peer
//! that cannot take them is closed with 4008), and closing with a code.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream};

use super::{Closed, Session};
use crate::db;
use crate::instruments::CloseReason;
use crate::realtime::close;

impl<S> Session<S>
where
    S: Sink<Message, Error = axum::Error> + Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    // These borrow only the (Sync) environment, never the session, whose
    // socket need not be Sync: the session's future must stay Send.
    pub(super) fn head(&self) -> impl Future<Output = Result<i64, Closed>> + Send + 'static {
        let user_id = self.peer.user_id.clone();
        self.read(move |conn| db::events::head(conn, &user_id))
    }

    pub(super) fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> db::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, Closed>> + Send + 'static {
        let db = self.env.db.clone();
        async move {
            db.read(f).await.map_err(|err| {
                tracing::warn!(error = %err, "socket closed: cannot read events");
                Closed
            })
        }
    }

    /// Writes one frame and flushes it.
    pub(super) async fn send(&mut self, message: Message) -> Result<(), Closed> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues one frame (written out once the buffer fills or on `flush`).
    pub(super) async fn feed(&mut self, message: Message) -> Result<(), Closed> {
        let timeout = self.env.write_timeout;
        let fed = tokio::time::timeout(timeout, self.socket.feed(message)).await;
        self.written(fed).await
    }

    /// Writes out every queued frame.
    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        let timeout = self.env.write_timeout;
        let flushed = tokio::time::timeout(timeout, self.socket.flush()).await;
        self.written(flushed).await
    }

    /// Gives up on a peer that could not take a write in time.
    async fn written(
        &mut self,
        outcome: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>,
    ) -> Result<(), Closed> {
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed),
            Err(_) => {
                tracing::info!(user_id = %self.peer.user_id, "closing a socket that stopped reading");
                let _ = self.close(close::TOO_SLOW, "too slow").await;
                Err(Closed)
            }
        }
    }

    pub(super) async fn close(&mut self, code: u16, reason: &'static str) -> Result<(), Closed> {
        self.ended = close_reason(code);
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        // Best effort, and never longer than a second: the peer may be gone.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.socket.send(Message::Close(Some(frame))),
        )
        .await;
        Err(Closed)
    }
}

/// The metrics label of a close code the server sends.
fn close_reason(code: u16) -> CloseReason {
    match code {
        close::SHUTDOWN => CloseReason::Shutdown,
        close::TOO_BIG => CloseReason::TooBig,
        close::IDLE => CloseReason::Idle,
        close::TOKEN_EXPIRED => CloseReason::TokenExpired,
        close::REVOKED => CloseReason::Revoked,
        close::TOO_SLOW => CloseReason::TooSlow,
        // Every code the session sends is one of the above.
        _ => CloseReason::Client,
    }
}
