//! `GET /api/search`: plain-text search over the caller's documents.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AppQuery, limit};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::types::{Passage, Source};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/search", get(search))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<i64>,
}

async fn search(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(query): AppQuery<SearchQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(ApiError::Validation("q must not be blank".into()));
    }
    let limit = limit(query.limit, 10, 50)?;
    let passages = crate::documents::search(&state, &user.id, &q, limit).await?;
    let items: Vec<Source> = passages.iter().map(Passage::source).collect();
    Ok(Json(json!({ "items": items })))
}
