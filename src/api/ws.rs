//! `POST /api/ws-ticket` and `GET /ws`: everything a socket needs before it
//! upgrades, in the order of docs/API.md (Origin, credentials, `since`, the
//! per-user limit, the upgrade itself); then `realtime::session` runs it.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::AppQuery;
use crate::AppState;
use crate::auth::CurrentUser;
use crate::auth::credentials::{self, SocketCredentials};
use crate::auth::tickets::TicketGrant;
use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::realtime::session::{self, Env, MAX_INBOUND, WRITE_BUFFER};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ws-ticket", post(ticket))
        .route("/ws", get(socket))
}

/// A single-use ticket for `/ws?ticket=`, valid `--ws-ticket-ttl`.
///
/// So that a browser never puts its JWT in a URL. The ticket stops working
/// after a logout or a password change.
#[utoipa::path(post, path = "/api/ws-ticket", tag = "realtime", security(("bearer" = [])),
    responses((status = 201, description = "A ticket for one socket", body = super::openapi::WsTicket)))]
async fn ticket(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ttl = state.config.ws_ticket_ttl;
    let grant = TicketGrant {
        user_id: user.id,
        token_version: user.token_version,
        token_expires_at: user.expires_at,
    };
    let ticket = state.tickets.issue(grant, ttl);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let expires_at = db::format_ms(db::now_ms().saturating_add(ttl_ms));
    Ok((
        StatusCode::CREATED,
        Json(json!({"ticket": ticket, "expires_at": expires_at})),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    /// From `POST /api/ws-ticket`: single-use, the browser's way in.
    ticket: Option<String>,
    /// A JWT (kept for older clients; redacted in logs). Prefer a ticket.
    token: Option<String>,
    /// Replay every stored event with a larger id, then go live.
    #[param(value_type = Option<u64>)]
    since: Option<String>,
    /// The `hello.epoch` the client saw `since` in (ignored without `since`).
    epoch: Option<String>,
}

/// The event socket (WebSocket upgrade).
///
/// Credentials, in order of preference: `?ticket=`, `Authorization:
/// Bearer <JWT>`, `Sec-WebSocket-Protocol: bearer, <JWT>` (the server then
/// selects `bearer`), `?token=<JWT>`. Before upgrading: a foreign browser
/// `Origin` is 403, bad credentials 401, a bad `since` 400, a socket above
/// `--max-sockets-per-user` 429; a GET without upgrade headers is 400.
/// After `101`, frames are JSON text: `hello` first, then replayed and live
/// events (`{"id","type","ts","data"}`) and control frames (`heartbeat`,
/// `message.delta`, `resync_required`, `pong`); docs/API.md "WebSocket
/// /ws" describes each.
#[utoipa::path(get, path = "/ws", tag = "realtime",
    security(("ws_ticket" = []), ("bearer" = [])),
    params(
        WsQuery,
        ("Sec-WebSocket-Protocol" = Option<String>, Header, description = "`bearer, <JWT>`: credentials for browsers without a ticket"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the socket is open"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad `since`", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or used credentials", body = ErrorBody),
        (status = 403, description = "A browser page of another origin", body = ErrorBody),
        (status = 429, description = "Too many sockets for this user (`Retry-After: 5`)", body = ErrorBody),
    ))]
async fn socket(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // First, and without side effects: a page of another site must not
    // open a socket with credentials the browser holds for this one.
    check_origin(&headers, &state.config.allowed_origins)?;
    let SocketCredentials {
        peer,
        via_subprotocol,
        ticket,
    } = credentials::for_socket(&state, query.ticket.as_deref(), query.token.as_deref(), &headers).await?;
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
    if let Some(ticket) = &ticket
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
    let env = Env {
        db: state.db.clone(),
        heartbeat: state.config.heartbeat,
        write_timeout: state.config.ws_write_timeout,
        max_lag: i64::from(state.config.ws_max_lag),
        replay_pause: state.hooks.replay_pause,
        stopping: state.stopping.clone(),
        metrics: state.metrics.sockets.clone(),
    };
    Ok(upgrade
        // Small buffers: an idle socket must cost little memory. Outbound
        // frames queued together are written together, and a peer that
        // stops reading is bounded by the write timeout, not by an
        // ever-growing buffer.
        .read_buffer_size(MAX_INBOUND)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(4 << 20)
        .max_message_size(MAX_INBOUND)
        .max_frame_size(MAX_INBOUND)
        .on_upgrade(move |socket| session::run(env, peer, socket, subscription, since, epoch)))
}

/// Refuses a browser `Origin` that is neither this server's own (the
/// request's `Host`) nor one of `--allowed-origin`. Requests without an
/// `Origin` (non-browser clients) pass: the check protects what a browser
/// would send on a page's behalf.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    const FOREIGN: ApiError = ApiError::Forbidden("this origin may not open a socket on this server");
    let Some(origin) = headers.get(header::ORIGIN) else {
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
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or(FOREIGN)?;
    if authority.eq_ignore_ascii_case(host.trim()) {
        Ok(())
    } else {
        Err(FOREIGN)
    }
}
