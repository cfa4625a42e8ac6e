//! `POST /api/ws-ticket` and the `/ws` route.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::CurrentUser;
use crate::db;
use crate::error::ApiError;
use crate::realtime::socket;
use crate::realtime::tickets::TicketGrant;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ws-ticket", post(ticket))
        .route("/ws", get(socket::handler))
}

/// A single-use ticket for `/ws?ticket=`, valid `--ws-ticket-ttl`.
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
