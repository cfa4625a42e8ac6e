//! `/api/auth/*`: register, login, me, refresh, logout, password change and
//! account deletion. The operations are `accounts`'.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::AppJson;
use crate::AppState;
use crate::accounts::{self, Session};
use crate::auth::{ClientIp, CurrentUser};
use crate::db::users::User;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/me", get(me).delete(delete_account))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/password", post(change_password))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct EmailPassword {
    /// Trimmed and lower-cased; at most 254 characters.
    #[schema(examples("ada@example.com"))]
    email: String,
    /// 8 to 256 characters.
    #[schema(examples("correct horse battery"))]
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordOnly {
    password: String,
}

#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = EmailPassword,
    responses(
        (status = 201, description = "Registered and signed in", body = Session),
        (status = 403, description = "`registration_closed`", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
        (status = 422, description = "A bad email or a short password", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address; see `Retry-After`", body = ErrorBody),
    ))]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<EmailPassword>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let session = accounts::register(&state, ip, &body.email, body.password).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = EmailPassword,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "Too many failed logins; see `Retry-After`", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<EmailPassword>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        accounts::login(&state, ip, &body.email, body.password).await?,
    ))
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller's account", body = User)))]
async fn me(user: CurrentUser) -> Json<User> {
    Json(user.into_user())
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "A fresh token; the old one stays valid until it expires", body = Session)))]
async fn refresh(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Session>, ApiError> {
    Ok(Json(accounts::refresh(&state, user)?))
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Every token of the user stops working; their sockets close with 4003")))]
async fn logout(State(state): State<AppState>, user: CurrentUser) -> Result<StatusCode, ApiError> {
    accounts::logout(&state, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every earlier token stops working"),
        (status = 401, description = "`unauthorized`, or `invalid_credentials` for a wrong current password", body = ErrorBody),
        (status = 409, description = "Another change with the same current password won", body = ErrorBody),
        (status = 422, description = "The new password is too short or too long", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords; see `Retry-After`", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    accounts::change_password(&state, &user, ip, body.current_password, body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    request_body = PasswordOnly,
    responses(
        (status = 204, description = "The account and everything it owns are deleted"),
        (status = 401, description = "`unauthorized`, or `invalid_credentials` for a wrong password", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords; see `Retry-After`", body = ErrorBody),
    ))]
async fn delete_account(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<PasswordOnly>,
) -> Result<StatusCode, ApiError> {
    accounts::delete(&state, &user, ip, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
