//! One socket's session, after the upgrade: `hello`, the replay a client
//! asked for with `since`, then live events with no gap and no duplicate,
//! reading from the stored log whenever the in-memory channel cannot serve
//! it; heartbeats, token expiry, the slow-reader bounds and shutdown.
//! Generic over the transport (a `Sink` and `Stream` of frames), so replay
//! and lag handling are unit-tested without a network.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{Sink, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::close;
use super::frames::Control;
use super::hub::{Push, Subscription};
use crate::db::{self, Db};
use crate::instruments::{CloseReason, Sockets};

/// Inbound frames above this close the socket with 1009.
pub const MAX_INBOUND: usize = 4 * 1024;
/// Bytes of frames the socket collects before it writes them out even
/// without a flush; also the most a burst keeps allocated afterwards.
pub const WRITE_BUFFER: usize = 8 * 1024;
/// Stored events read per query while replaying or catching up.
const REPLAY_PAGE: usize = 500;
/// Frames already queued for a socket are written together, up to this
/// many, then flushed with one system call.
const BURST: usize = 64;

/// Who a socket belongs to and until when.
#[derive(Debug, Clone)]
pub struct Peer {
    pub user_id: String,
    /// The token version the credential was issued under.
    pub token_version: i64,
    /// Unix seconds at which the credential expires (close 4001).
    pub expires_at: i64,
}

/// What a session needs of the server.
#[derive(Clone)]
pub struct Env {
    pub db: Db,
    pub heartbeat: Duration,
    pub write_timeout: Duration,
    /// Events a live socket may fall behind before it is closed (4008).
    pub max_lag: i64,
    /// Test seam: a pause between subscribing and replaying.
    pub replay_pause: Option<Duration>,
    pub stopping: CancellationToken,
    /// Open sockets, events delivered, closes by reason.
    pub metrics: Sockets,
}

/// Runs the session until the socket ends.
pub async fn run<S>(
    env: Env,
    peer: Peer,
    socket: S,
    subscription: Subscription,
    since: Option<i64>,
    epoch: Option<String>,
) where
    S: Sink<Message, Error = axum::Error> + Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let metrics = env.metrics.clone();
    let _open = metrics.opened();
    let mut session = Session {
        env,
        peer,
        socket,
        last_sent: 0,
        subscription,
        ended: CloseReason::Client,
    };
    if session.start(since, epoch).await.is_ok() {
        let _ = session.forward().await;
    }
    metrics.closed(session.ended);
}

/// Why a session ended early.
struct Closed;

/// Whether falling behind by more than `--ws-max-lag` closes the socket
/// (live sockets) or not (the replay a client asked for with `since`).
#[derive(PartialEq, Eq, Clone, Copy)]
enum Lag {
    Bounded,
    Unbounded,
}

struct Session<S> {
    env: Env,
    peer: Peer,
    socket: S,
    /// The id of the last event this socket has sent; nothing at or below
    /// it is ever sent again, nothing above it is skipped.
    last_sent: i64,
    subscription: Subscription,
    /// Why it ended: the close code it sent, else the client's doing.
    ended: CloseReason,
}

impl<S> Session<S>
where
    S: Sink<Message, Error = axum::Error> + Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    async fn start(&mut self, since: Option<i64>, epoch: Option<String>) -> Result<(), Closed> {
        let head = self.head().await?;
        let hello = Control::Hello {
            user_id: &self.peer.user_id,
            epoch: self.env.db.epoch(),
            head,
            heartbeat_ms: u64::try_from(self.env.heartbeat.as_millis()).unwrap_or(u64::MAX),
        }
        .text();
        self.send(Message::Text(hello)).await?;
        self.last_sent = head;
        let Some(since) = since else { return Ok(()) };
        if let Some(pause) = self.env.replay_pause {
            // Test seam: lets writes land between subscribing and replaying.
            tokio::time::sleep(pause).await;
        }
        let user_id = self.peer.user_id.clone();
        let oldest = self.read(move |conn| db::events::oldest(conn, &user_id)).await?;
        let epoch_differs = epoch.is_some_and(|e| e != self.env.db.epoch());
        // Events after `since` are all retained when the oldest kept one is
        // at most since + 1 (or nothing was due after `since`).
        let retained = since >= head || oldest.is_some_and(|o| o <= since + 1);
        if epoch_differs || since > head || !retained {
            let frame = Control::ResyncRequired {
                oldest_id: oldest,
                head,
            }
            .text();
            return self.send(Message::Text(frame)).await;
        }
        self.last_sent = since;
        let now_head = self.head().await?;
        // A reconnecting client may be far behind: its replay is not bounded
        // by the live lag limit (retention bounds it).
        self.catch_up(now_head, Lag::Unbounded).await
    }

    /// Forwards live events and control frames until the socket ends.
    async fn forward(&mut self) -> Result<(), Closed> {
        let heartbeat = self.env.heartbeat;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let mut last_heard = Instant::now();
        let expiry = expiry_instant(self.peer.expires_at);
        let stopping = self.env.stopping.clone();
        loop {
            tokio::select! {
                pushed = self.subscription.receiver.recv() => {
                    // Whatever else is queued already goes out with it: one
                    // flush (one system call) for a burst, not one per frame.
                    let mut pushed = pushed;
                    for written in 1.. {
                        match pushed {
                            Ok(Push::Event { id, text }) => self.deliver(id, text).await?,
                            Ok(Push::Control { text }) => self.feed(Message::Text(text)).await?,
                            Ok(Push::Close { code, reason }) => return self.close(code, reason).await,
                            Err(RecvError::Lagged(_)) => {
                                // Fell behind the in-memory channel: read the rest from the log.
                                let head = self.head().await?;
                                self.catch_up(head, Lag::Bounded).await?;
                            }
                            Err(RecvError::Closed) => {
                                return self.close(close::SHUTDOWN, "server restart").await;
                            }
                        }
                        if written == BURST {
                            // The rest waits for the next turn of the loop.
                            break;
                        }
                        pushed = match self.subscription.receiver.try_recv() {
                            Ok(push) => Ok(push),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                            Err(TryRecvError::Closed) => Err(RecvError::Closed),
                        };
                    }
                    self.flush().await?;
                }
                inbound = self.socket.next() => {
                    last_heard = Instant::now();
                    match inbound {
                        Some(Ok(Message::Text(text))) => {
                            if is_ping(&text) {
                                self.send(Message::Text(Control::Pong.text())).await?;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => return Err(Closed),
                        Some(Ok(_)) => {}
                        Some(Err(err)) => {
                            return if is_too_big(err) {
                                self.close(close::TOO_BIG, "frame too large").await
                            } else {
                                Err(Closed)
                            };
                        }
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > heartbeat * 2 {
                        return self.close(close::IDLE, "no frames from the client").await;
                    }
                    self.send(Message::Ping(axum::body::Bytes::new())).await?;
                    let frame = Control::Heartbeat { head: self.last_sent }.text();
                    self.send(Message::Text(frame)).await?;
                }
                () = tokio::time::sleep_until(expiry) => {
                    return self.close(close::TOKEN_EXPIRED, "token expired").await;
                }
                () = stopping.cancelled() => {
                    return self.close(close::SHUTDOWN, "server restart").await;
                }
            }
        }
    }

    /// Queues a live event in order: skips what was sent, fills any gap
    /// from the stored log first.
    async fn deliver(&mut self, id: i64, text: Utf8Bytes) -> Result<(), Closed> {
        if id <= self.last_sent {
            return Ok(());
        }
        if id > self.last_sent + 1 {
            self.catch_up(id - 1, Lag::Bounded).await?;
        }
        self.feed(Message::Text(text)).await?;
        self.env.metrics.delivered(1);
        self.last_sent = id;
        Ok(())
    }

    /// Sends every stored event after `last_sent` up to `upto`, in pages.
    async fn catch_up(&mut self, upto: i64, lag: Lag) -> Result<(), Closed> {
        let max_lag = self.env.max_lag;
        while self.last_sent < upto {
            if lag == Lag::Bounded && upto - self.last_sent > max_lag {
                return self
                    .close(close::TOO_SLOW, "too far behind; reconnect with since")
                    .await;
            }
            let (user_id, after) = (self.peer.user_id.clone(), self.last_sent);
            let page = self
                .read(move |conn| db::events::range(conn, &user_id, after, upto, REPLAY_PAGE))
                .await?;
            let first = page.first().map(|e| e.id);
            let Some(last) = page.last().map(|e| e.id).filter(|_| first == Some(after + 1)) else {
                // Pruned meanwhile (all or the start of the range): the
                // client must refetch.
                let frame = Control::ResyncRequired {
                    oldest_id: None,
                    head: upto,
                }
                .text();
                self.send(Message::Text(frame)).await?;
                self.last_sent = upto;
                return Ok(());
            };
            let count = page.len() as u64;
            for event in page {
                self.feed(Message::Text(event.text.into())).await?;
            }
            self.env.metrics.delivered(count);
            self.flush().await?;
            self.last_sent = last;
        }
        Ok(())
    }
}

fn is_ping(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    serde_json::from_str::<Typed<'_>>(text).is_ok_and(|t| t.kind == "ping")
}

fn is_too_big(err: axum::Error) -> bool {
    err.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// When a token that expires at `exp` (Unix seconds) runs out, as a timer.
fn expiry_instant(exp: i64) -> tokio::time::Instant {
    let left_ms = exp.saturating_mul(1000).saturating_sub(db::now_ms()).max(0);
    tokio::time::Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
}

mod io;
#[cfg(test)]
mod tests;
