//! Extractors that answer rejections with the contract's error body instead
//! of axum's plain-text defaults, plus list paging helpers.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` whose rejections are 400/413/415 with our error body.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A declared length above the limit is refused before a byte of the
        // body is read.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > super::MAX_JSON_BODY as u64) {
            return Err(too_large());
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge("the request body is larger than 1 MiB".into())
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if crate::server::body_too_slow(&rejection) {
        return ApiError::RequestTimeout;
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        JsonRejection::JsonDataError(err) => {
            ApiError::BadRequest(format!("invalid JSON body: {}", err.body_text()))
        }
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::BadRequest(format!("malformed JSON body: {}", err.body_text()))
        }
        other => ApiError::BadRequest(format!("cannot read the request body: {}", other.body_text())),
    }
}

/// `Query<T>` whose rejections (wrong types, bad numbers) are 400.
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(AppQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
}

/// Default and bounds of `?limit=` on list routes.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// Validates a `limit` (422 outside `1..=max`).
pub fn limit(value: Option<i64>, default: i64, max: i64) -> Result<usize, ApiError> {
    let value = value.unwrap_or(default);
    if !(1..=max).contains(&value) {
        return Err(ApiError::Validation(format!("limit must be between 1 and {max}")));
    }
    usize::try_from(value).map_err(|_| ApiError::Validation("limit is out of range".into()))
}

/// Encodes a list position as an opaque cursor.
pub fn encode_cursor(parts: &[&str]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(parts.join("\n"))
}

/// A cursor for lists ordered by (timestamp, id).
pub fn encode_time_cursor(at: i64, id: &str) -> String {
    encode_cursor(&[&at.to_string(), id])
}

/// Decodes `encode_time_cursor` (400 otherwise).
pub fn decode_time_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    let mut parts = decode_cursor(cursor, 2)?;
    let at = parts[0]
        .parse()
        .map_err(|_| ApiError::BadRequest("the cursor is not valid".into()))?;
    Ok((at, parts.swap_remove(1)))
}

/// Decodes a cursor made by `encode_cursor` with `n` parts (400 otherwise).
pub fn decode_cursor(cursor: &str, n: usize) -> Result<Vec<String>, ApiError> {
    const BAD: &str = "the cursor is not valid: pass back a next_* value unchanged";
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::BadRequest(BAD.into()))?;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::BadRequest(BAD.into()))?;
    let parts: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if parts.len() != n {
        return Err(ApiError::BadRequest(BAD.into()));
    }
    Ok(parts)
}

/// Longest `Idempotency-Key` accepted.
const MAX_KEY_CHARS: usize = 128;

/// The `Idempotency-Key` header: 1..=128 characters, else 400.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    let n = key.chars().count();
    if n == 0 || n > MAX_KEY_CHARS {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}
