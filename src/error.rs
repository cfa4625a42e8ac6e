//! `ApiError`: the one place where failures become HTTP responses with the
//! contract's body `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db;

/// The body of every error answer (the OpenAPI document's `ErrorBody`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and snake_case (docs/API.md lists them): what a client
    /// branches on.
    #[schema(examples("not_found", "validation_failed"))]
    pub code: &'static str,
    /// For humans; may change between versions.
    pub message: String,
}

/// Every error a route or extractor can answer with (API.md, "Conventions").
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// The request's origin may not do this (a browser page of another site).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The request body stalled or trickled (`--body-timeout`,
    /// `--min-body-rate`).
    #[error("the request body arrived too slowly")]
    RequestTimeout,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Validation(String),
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after_secs: u64,
    },
    #[error("the disk is full: nothing was stored, retry later")]
    InsufficientStorage,
    #[error("{0}")]
    Unavailable(&'static str),
    /// A bug or an unexpected failure. The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::RegistrationClosed | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::EmailTaken => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RegistrationClosed => "registration_closed",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::EmailTaken => "email_taken",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::InsufficientStorage => "insufficient_storage",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            Self::InsufficientStorage => Some(60),
            Self::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::Internal(detail) => {
                // Logged inside the request span; the client gets no detail.
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Self::PayloadTooLarge(_) | Self::RequestTimeout) {
            // The rest of the body was not read: the connection cannot carry
            // another request, and a client must not pool it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<db::Error> for ApiError {
    fn from(err: db::Error) -> Self {
        match err {
            db::Error::NotFound => Self::NotFound,
            db::Error::Busy => Self::Unavailable("the database is busy, retry shortly"),
            db::Error::DiskFull => Self::InsufficientStorage,
            db::Error::Closed => Self::Unavailable("the server is shutting down"),
            db::Error::Conflict(why) => Self::Conflict(why.to_owned()),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A failure to write an upload or other file: a full disk (or quota) is
/// 507, anything else a 500.
pub fn io_error(err: std::io::Error) -> ApiError {
    match err.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ApiError::InsufficientStorage,
        _ => ApiError::internal(format!("cannot store the upload: {err}")),
    }
}
