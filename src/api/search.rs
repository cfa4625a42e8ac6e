//! `GET /api/search`: plain-text search over the caller's documents.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AppQuery, limit};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::types::{Passage, Source};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/search", get(search))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// Plain text, never query syntax; must not be blank.
    #[param(required = true)]
    q: Option<String>,
    /// 1 to 50 (default 10).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<i64>,
}

/// Search the caller's documents.
///
/// Words of `q` (stop-words dropped) matched with OR and ranked by BM25
/// over the caller's own ready chunks, best first.
#[utoipa::path(get, path = "/api/search", tag = "search", security(("bearer" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "The best passages", body = super::openapi::SearchResults),
        (status = 422, description = "A blank `q`, or `limit` out of range", body = ErrorBody),
    ))]
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
