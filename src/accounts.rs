//! Accounts, as docs/API.md "Auth" defines them: register, log in, refresh,
//! log out, change the password, delete the account, each one function the
//! handlers call. Their rules (email and password shape, the login and
//! registration limits, revocation by token version) live here.

use std::net::IpAddr;

use serde::Serialize;

use crate::AppState;
use crate::auth::jwt::Claims;
use crate::auth::{CurrentUser, password};
use crate::config::Registration;
use crate::db::{self, users::User};
use crate::error::ApiError;
use crate::names;
use crate::realtime::close;

/// What register, login and refresh answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub user: User,
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: String,
}

/// Creates an account (403 while registration is closed, 409 for a taken
/// email, 429 past the per-address limit) and signs it in.
pub async fn register(
    state: &AppState,
    ip: IpAddr,
    email: &str,
    password: String,
) -> Result<Session, ApiError> {
    if state.config.registration == Registration::Closed {
        return Err(ApiError::RegistrationClosed);
    }
    let email = valid_email(email)?;
    valid_password(&password)?;
    // Counted once the input is well-formed: what follows costs a hash, and
    // its answer (created, or `email_taken`) tells whether an email exists.
    if let Err(retry_after_secs) = state.registrations.attempt(ip) {
        return Err(ApiError::RateLimited {
            message: "too many accounts created from this address; retry later",
            retry_after_secs,
        });
    }
    let hash = password::hash(password).await?;
    let now = db::now_ms();
    let created = state
        .db
        .write(move |tx| db::users::create(tx, &email, &hash, now))
        .await?;
    let account = created.ok_or(ApiError::EmailTaken)?;
    session(state, account.user, account.token_version)
}

/// Signs in with email and password (limited per email and address).
pub async fn login(state: &AppState, ip: IpAddr, email: &str, password: String) -> Result<Session, ApiError> {
    let email = normalize_email(email);
    if let Err(retry_after_secs) = state.limiter.check(&email, ip) {
        return Err(ApiError::RateLimited {
            message: "too many failed logins; retry later",
            retry_after_secs,
        });
    }
    let lookup = email.clone();
    let found = state
        .db
        .read(move |conn| db::users::by_email(conn, &lookup))
        .await?;
    let verified = match found {
        Some(account) => {
            let ok = password::verify(password, account.password_hash.clone()).await?;
            ok.then_some(account)
        }
        None => {
            password::verify_dummy(password).await;
            None
        }
    };
    let Some(account) = verified else {
        state.limiter.record_failure(&email, ip);
        return Err(ApiError::InvalidCredentials);
    };
    state.limiter.record_success(&email, ip);
    session(state, account.user, account.token_version)
}

/// A fresh token for the bearer of a valid one.
pub fn refresh(state: &AppState, user: CurrentUser) -> Result<Session, ApiError> {
    let version = user.token_version;
    session(state, user.into_user(), version)
}

/// Revokes every token of the user; their sockets close with 4003.
pub async fn logout(state: &AppState, user: &CurrentUser) -> Result<(), ApiError> {
    let (id, hub) = (user.id.clone(), state.hub.clone());
    state
        .db
        .write(move |tx| {
            db::users::bump_token_version(tx, &id)?;
            // After the commit, even if this client has gone meanwhile.
            tx.after_commit(move || hub.close_user(&id, close::REVOKED, "logged out"));
            Ok(())
        })
        .await?;
    Ok(())
}

/// Changes the password (the current one checked like a login), revoking
/// every older token; two racing changes: the first wins, the other is 409.
pub async fn change_password(
    state: &AppState,
    user: &CurrentUser,
    ip: IpAddr,
    current: String,
    new: String,
) -> Result<(), ApiError> {
    valid_password(&new)?;
    let old_hash = check_password(state, user, ip, current).await?;
    let new_hash = password::hash(new).await?;
    let (id, hub) = (user.id.clone(), state.hub.clone());
    state
        .db
        .write(move |tx| {
            db::users::set_password(tx, &id, &old_hash, &new_hash)?;
            tx.after_commit(move || hub.close_user(&id, close::REVOKED, "password changed"));
            Ok(())
        })
        .await
        .map_err(|err| match err {
            // The hash changed since we verified it: another change won.
            db::Error::NotFound => {
                ApiError::Conflict("the password was changed meanwhile; log in again".into())
            }
            other => other.into(),
        })
}

/// Deletes the account and everything it owns (its search index, rows,
/// events and files); its sockets close with 4003.
pub async fn delete(
    state: &AppState,
    user: &CurrentUser,
    ip: IpAddr,
    password: String,
) -> Result<(), ApiError> {
    check_password(state, user, ip, password).await?;
    let id = user.id.clone();
    let documents = state
        .db
        .read(move |conn| db::documents::ids_of_user(conn, &id))
        .await?;
    let (id, hub) = (user.id.clone(), state.hub.clone());
    state
        .write_to_free_space(move |tx| {
            db::chunks::forget_user(tx, &id)?;
            db::users::delete(tx, &id)?;
            let (hub, id) = (hub.clone(), id.clone());
            tx.after_commit(move || hub.close_user(&id, close::REVOKED, "account deleted"));
            Ok(())
        })
        .await?;
    state.worker.indexing.changed();
    for document_id in &documents {
        state.worker.cancel_document(document_id);
        state.files.remove(document_id).await;
    }
    tracing::info!(user_id = %user.id, "account deleted");
    Ok(())
}

/// Verifies the signed-in user's password (limited like logins); returns
/// the stored hash it matched.
async fn check_password(
    state: &AppState,
    user: &CurrentUser,
    ip: IpAddr,
    given: String,
) -> Result<String, ApiError> {
    if let Err(retry_after_secs) = state.limiter.check(&user.email, ip) {
        return Err(ApiError::RateLimited {
            message: "too many failed attempts; retry later",
            retry_after_secs,
        });
    }
    let id = user.id.clone();
    let account = state
        .db
        .read(move |conn| db::users::by_id(conn, &id))
        .await?
        .ok_or(ApiError::NotFound)?;
    if !password::verify(given, account.password_hash.clone()).await? {
        state.limiter.record_failure(&user.email, ip);
        return Err(ApiError::InvalidCredentials);
    }
    Ok(account.password_hash)
}

fn session(state: &AppState, user: User, token_version: i64) -> Result<Session, ApiError> {
    let iat = db::now_ms() / 1000;
    let ttl = i64::try_from(state.config.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let exp = iat.saturating_add(ttl);
    let claims = Claims {
        sub: user.id.clone(),
        exp,
        iat,
        ver: token_version,
    };
    let token = state.jwt.issue(&claims).map_err(ApiError::internal)?;
    Ok(Session {
        user,
        token,
        expires_at: db::format_ms(exp.saturating_mul(1000)),
    })
}

fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The email rule of docs/API.md: trimmed, lower-cased, at most 254
/// characters, no whitespace, control or invisible character inside, one
/// `@` with a non-empty local part and a domain containing a dot.
pub fn valid_email(raw: &str) -> Result<String, ApiError> {
    let email = normalize_email(raw);
    let invalid = || ApiError::Validation("email must look like name@example.com".into());
    if email.chars().count() > 254 {
        return Err(ApiError::Validation(
            "email must be at most 254 characters".into(),
        ));
    }
    let hidden = |c: char| c.is_whitespace() || c.is_control() || names::is_invisible(c);
    if email.chars().any(hidden) {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    if local.is_empty() || domain.contains('@') || !domain_ok {
        return Err(invalid());
    }
    Ok(email)
}

/// 8..=256 characters (Unicode scalar values).
pub fn valid_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(8..=256).contains(&n) {
        return Err(ApiError::Validation(
            "password must be 8 to 256 characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_follow_the_contract() {
        assert_eq!(
            valid_email("  Ada@Example.COM ").ok().as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@.com",
            "ada@example.",
            "ada\u{202E}@example.com",
            "a\u{200B}da@example.com",
        ] {
            assert!(valid_email(bad).is_err(), "{bad:?} must be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(valid_email(&long).is_err());
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(valid_password("1234567").is_err());
        assert!(valid_password("12345678").is_ok());
        assert!(valid_password(&"é".repeat(256)).is_ok());
        assert!(valid_password(&"é".repeat(257)).is_err());
    }
}
