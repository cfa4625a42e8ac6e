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
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/me", get(me).delete(delete_account))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/password", post(change_password))
}

#[derive(Deserialize)]
struct EmailPassword {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
struct PasswordOnly {
    password: String,
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<EmailPassword>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let session = accounts::register(&state, ip, &body.email, body.password).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<EmailPassword>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        accounts::login(&state, ip, &body.email, body.password).await?,
    ))
}

async fn me(user: CurrentUser) -> Json<User> {
    Json(user.into_user())
}

async fn refresh(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Session>, ApiError> {
    Ok(Json(accounts::refresh(&state, user)?))
}

async fn logout(State(state): State<AppState>, user: CurrentUser) -> Result<StatusCode, ApiError> {
    accounts::logout(&state, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_password(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    accounts::change_password(&state, &user, ip, body.current_password, body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_account(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<PasswordOnly>,
) -> Result<StatusCode, ApiError> {
    accounts::delete(&state, &user, ip, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
