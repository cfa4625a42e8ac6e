//! `GET /ws`: authenticate before the upgrade (ticket, Bearer header,
//! `bearer` subprotocol, `token` query), then run one task per socket that
//! sends `hello`, replays stored events after `since`, and forwards live
//! events with no gap and no duplicate, reading from the stored log
//! whenever the in-memory channel cannot serve it.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::close;
use super::hub::{Push, Subscription};
use crate::AppState;
use crate::api::extract::AppQuery;
use crate::auth::current_user::{authenticate, bearer_token};
use crate::db;
use crate::error::ApiError;

/// Inbound frames above this close the socket with 1009.
const MAX_INBOUND: usize = 4 * 1024;
/// Stored events read per query while replaying or catching up.
const REPLAY_PAGE: usize = 500;
/// Frames already queued for a socket are written together, up to this
/// many, then flushed with one system call.
const BURST: usize = 64;
/// Bytes of frames the socket collects before it writes them out even
/// without a flush; also the most a burst keeps allocated afterwards.
const WRITE_BUFFER: usize = 8 * 1024;

#[derive(Deserialize)]
pub struct WsQuery {
    ticket: Option<String>,
    token: Option<String>,
    since: Option<String>,
    epoch: Option<String>,
}

/// Who the socket belongs to and until when.
struct Peer {
    user_id: String,
    /// The token version the credential was issued under.
    token_version: i64,
    /// Unix seconds at which the credential expires (close 4001).
    expires_at: i64,
}

pub async fn handler(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // First, and without side effects: a page of another site must not
    // open a socket with credentials the browser holds for this one.
    check_origin(&headers, &state.config.allowed_origins)?;
    let (peer, via_subprotocol) = credentials(&state, &query, &headers).await?;
    let since = match query.since.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<u64>()
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("since must be a non-negative integer event id".into())
                })?,
        ),
    };
    let max = usize::try_from(state.config.max_sockets_per_user).unwrap_or(usize::MAX);
    let subscription = state
        .hub
        .subscribe(&peer.user_id, max)
        .ok_or(ApiError::RateLimited {
            message: "too many open sockets for this user",
            retry_after_secs: 5,
        })?;
    // A logout or password change that committed between the credential
    // check and the subscription would have missed this socket: check again
    // now that it would be told.
    let user_id = peer.user_id.clone();
    let current = state
        .db
        .read(move |conn| db::users::by_id(conn, &user_id))
        .await?;
    if current.is_none_or(|a| a.token_version != peer.token_version) {
        return Err(ApiError::Unauthorized(
            "missing, invalid, expired or used credentials",
        ));
    }
    let upgrade = upgrade.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    // Only a request that upgrades uses up its ticket (and of two racing
    // with the same ticket, only one).
    if let Some(ticket) = &query.ticket
        && state.tickets.redeem(ticket).is_none()
    {
        return Err(ApiError::Unauthorized(
            "missing, invalid, expired or used credentials",
        ));
    }
    let upgrade = if via_subprotocol {
        upgrade.protocols(["bearer"])
    } else {
        upgrade
    };
    let epoch = query.epoch.filter(|_| since.is_some());
    Ok(upgrade
        // Small buffers: an idle socket must cost little memory. Outbound
        // frames queued together are written together (see `forward`), and
        // a peer that stops reading is bounded by the write timeout, not by
        // an ever-growing buffer.
        .read_buffer_size(MAX_INBOUND)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(4 << 20)
        .max_message_size(MAX_INBOUND)
        .max_frame_size(MAX_INBOUND)
        .on_upgrade(move |socket| async move {
            let session = Session {
                state,
                peer,
                socket,
                last_sent: 0,
                subscription,
            };
            session.run(since, epoch).await;
        }))
}

/// Credentials in the order of preference of API.md. Returns whether the
/// `bearer` subprotocol carried them (the server must then select it).
async fn credentials(
    state: &AppState,
    query: &WsQuery,
    headers: &HeaderMap,
) -> Result<(Peer, bool), ApiError> {
    const INVALID: ApiError = ApiError::Unauthorized("missing, invalid, expired or used credentials");
    let peer = |user: crate::auth::CurrentUser| Peer {
        user_id: user.id,
        token_version: user.token_version,
        expires_at: user.expires_at,
    };
    if let Some(ticket) = &query.ticket {
        // Looked at, not taken: the upgrade takes it.
        let grant = state.tickets.peek(ticket).ok_or(INVALID)?;
        let user_id = grant.user_id.clone();
        let account = state
            .db
            .read(move |conn| db::users::by_id(conn, &user_id))
            .await?;
        return match account {
            Some(a) if a.token_version == grant.token_version => Ok((
                Peer {
                    user_id: grant.user_id,
                    token_version: grant.token_version,
                    expires_at: grant.token_expires_at,
                },
                false,
            )),
            _ => Err(INVALID),
        };
    }
    // Another scheme (e.g. Basic from a proxy in front) is not ours: fall
    // through to the other carriers.
    if let Some(token) = bearer_token(headers) {
        return Ok((peer(authenticate(state, token).await?), false));
    }
    if let Some(value) = headers.get(axum::http::header::SEC_WEBSOCKET_PROTOCOL) {
        let mut parts = value.to_str().map_err(|_| INVALID)?.split(',').map(str::trim);
        if parts.next() == Some("bearer") {
            let token = parts.next().ok_or(INVALID)?;
            return Ok((peer(authenticate(state, token).await?), true));
        }
    }
    if let Some(token) = &query.token {
        return Ok((peer(authenticate(state, token).await?), false));
    }
    Err(INVALID)
}

/// Refuses a browser `Origin` that is neither this server's own (the
/// request's `Host`) nor one of `--allowed-origin`. Requests without an
/// `Origin` (non-browser clients) pass: the check protects what a browser
/// would send on a page's behalf.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    const FOREIGN: ApiError = ApiError::Forbidden("this origin may not open a socket on this server");
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    // Schemes and hosts compare case-insensitively.
    let origin = origin.to_str().map_err(|_| FOREIGN)?.trim().to_ascii_lowercase();
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    // `null` (a sandboxed or file page) has no authority and never matches.
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or(FOREIGN)?;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or(FOREIGN)?;
    if authority.eq_ignore_ascii_case(host.trim()) {
        Ok(())
    } else {
        Err(FOREIGN)
    }
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

struct Session {
    state: AppState,
    peer: Peer,
    socket: WebSocket,
    /// The id of the last event this socket has sent; nothing at or below
    /// it is ever sent again, nothing above it is skipped.
    last_sent: i64,
    subscription: Subscription,
}

impl Session {
    async fn run(mut self, since: Option<i64>, epoch: Option<String>) {
        if self.start(since, epoch).await.is_ok() {
            let _ = self.forward().await;
        }
    }

    async fn start(&mut self, since: Option<i64>, epoch: Option<String>) -> Result<(), Closed> {
        let head = self.head().await?;
        let hello = json!({"type": "hello", "data": {
            "user_id": self.peer.user_id,
            "epoch": self.state.db.epoch(),
            "head": head,
            "heartbeat_ms": u64::try_from(self.state.config.heartbeat.as_millis()).unwrap_or(u64::MAX),
        }});
        self.send_json(&hello).await?;
        self.last_sent = head;
        let Some(since) = since else { return Ok(()) };
        if let Some(pause) = self.state.hooks.replay_pause {
            // Test seam: lets writes land between subscribing and replaying.
            tokio::time::sleep(pause).await;
        }
        let user_id = self.peer.user_id.clone();
        let oldest = self.read(move |conn| db::events::oldest(conn, &user_id)).await?;
        let epoch_differs = epoch.is_some_and(|e| e != self.state.db.epoch());
        // Events after `since` are all retained when the oldest kept one is
        // at most since + 1 (or nothing was due after `since`).
        let retained = since >= head || oldest.is_some_and(|o| o <= since + 1);
        if epoch_differs || since > head || !retained {
            let frame = json!({"type": "resync_required", "data": {"oldest_id": oldest, "head": head}});
            return self.send_json(&frame).await;
        }
        self.last_sent = since;
        let now_head = self.head().await?;
        // A reconnecting client may be far behind: its replay is not bounded
        // by the live lag limit (retention bounds it).
        self.catch_up(now_head, Lag::Unbounded).await
    }

    /// Forwards live events and control frames until the socket ends.
    async fn forward(&mut self) -> Result<(), Closed> {
        let heartbeat = self.state.config.heartbeat;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let mut last_heard = Instant::now();
        let expiry = expiry_instant(self.peer.expires_at);
        let stopping = self.state.stopping.clone();
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
                inbound = self.socket.recv() => {
                    last_heard = Instant::now();
                    match inbound {
                        Some(Ok(Message::Text(text))) => {
                            if is_ping(&text) {
                                self.send(Message::Text(Utf8Bytes::from_static(r#"{"type":"pong"}"#))).await?;
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
                    let frame = json!({"type": "heartbeat", "data": {"head": self.last_sent}});
                    self.send_json(&frame).await?;
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
        self.last_sent = id;
        Ok(())
    }

    /// Sends every stored event after `last_sent` up to `upto`, in pages.
    async fn catch_up(&mut self, upto: i64, lag: Lag) -> Result<(), Closed> {
        let max_lag = i64::from(self.state.config.ws_max_lag);
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
                let frame = json!({"type": "resync_required", "data": {"oldest_id": null, "head": upto}});
                self.send_json(&frame).await?;
                self.last_sent = upto;
                return Ok(());
            };
            for event in page {
                self.feed(Message::Text(event.text.into())).await?;
            }
            self.flush().await?;
            self.last_sent = last;
        }
        Ok(())
    }

    // These borrow only the (Sync) state, never the session, whose socket
    // is not Sync: the session's future must stay Send.
    fn head(&self) -> impl Future<Output = Result<i64, Closed>> + Send + 'static {
        let user_id = self.peer.user_id.clone();
        self.read(move |conn| db::events::head(conn, &user_id))
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> db::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, Closed>> + Send + 'static {
        let state = self.state.clone();
        async move {
            state.db.read(f).await.map_err(|err| {
                tracing::warn!(error = %err, "socket closed: cannot read events");
                Closed
            })
        }
    }

    async fn send_json(&mut self, value: &serde_json::Value) -> Result<(), Closed> {
        self.send(Message::Text(value.to_string().into())).await
    }

    /// Writes one frame and flushes it.
    async fn send(&mut self, message: Message) -> Result<(), Closed> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues one frame (written out once the buffer fills or on `flush`).
    async fn feed(&mut self, message: Message) -> Result<(), Closed> {
        let timeout = self.state.config.ws_write_timeout;
        let fed = tokio::time::timeout(timeout, self.socket.feed(message)).await;
        self.written(fed).await
    }

    /// Writes out every queued frame.
    async fn flush(&mut self) -> Result<(), Closed> {
        let timeout = self.state.config.ws_write_timeout;
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

    async fn close(&mut self, code: u16, reason: &'static str) -> Result<(), Closed> {
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
