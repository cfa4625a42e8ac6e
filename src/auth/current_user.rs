//! `CurrentUser`: the extractor every authenticated route takes. A token
//! counts only if its signature, algorithm and expiry check out AND its
//! user still exists with the same token version (logout, password change
//! and account deletion revoke tokens that way).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::AppState;
use crate::db;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: String,
    pub email: String,
    pub created_at: String,
    pub token_version: i64,
    /// When the presented token expires (Unix seconds).
    pub expires_at: i64,
}

impl CurrentUser {
    /// The account as the API shows it.
    pub fn into_user(self) -> crate::db::users::User {
        crate::db::users::User {
            id: self.id,
            email: self.email,
            created_at: self.created_at,
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Err(ApiError::Unauthorized(
                "missing Authorization: Bearer <token> header",
            ));
        }
        let token = super::credentials::bearer_token(&parts.headers).ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))?;
        authenticate(state, token).await
    }
}

/// Verifies a raw token (also used by `/ws`, which accepts other carriers).
pub async fn authenticate(state: &AppState, token: &str) -> Result<CurrentUser, ApiError> {
    const INVALID: ApiError = ApiError::Unauthorized("the token is invalid, expired or revoked");
    let claims = state.jwt.verify(token).ok_or(INVALID)?;
    let user_id = claims.sub.clone();
    let found = state
        .db
        .read(move |conn| db::users::by_id(conn, &user_id))
        .await?;
    match found {
        Some(c) if c.token_version == claims.ver => Ok(CurrentUser {
            id: c.user.id,
            email: c.user.email,
            created_at: c.user.created_at,
            token_version: c.token_version,
            expires_at: claims.exp,
        }),
        _ => Err(INVALID),
    }
}
