//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use axum::{Router, response::IntoResponse};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// 200 while the process serves (it listens only after start-up sweeps).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = super::openapi::Health)))]
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 when the database answers a read and the writer accepts a write.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "A read and a write succeeded within 2 s", body = super::openapi::Ready),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    const DOWN: ApiError = ApiError::Unavailable("the database does not answer");
    let check = async {
        state
            .db
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await?;
        state.db.write(|_| Ok(())).await
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check failed");
            Err(DOWN)
        }
        Err(_) => Err(DOWN),
    }
}
