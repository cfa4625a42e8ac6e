//! Reading credentials, for REST and `/ws` alike: the `Authorization:
//! Bearer` header (one parser, case-insensitive scheme), and the carriers a
//! socket may use instead, in the order of preference of docs/API.md: a
//! ticket, the Bearer header, the `bearer` subprotocol, `?token=`.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};

use super::current_user::authenticate;
use crate::AppState;
use crate::db;
use crate::error::ApiError;
use crate::realtime::session::Peer;

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 9110 11.1), so `bearer` and `BEARER` count too;
/// `None` without the header, for another scheme, or without a token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim_start();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a socket's credentials were.
pub struct SocketCredentials {
    pub peer: Peer,
    /// The `bearer` subprotocol carried them: the server must select it.
    pub via_subprotocol: bool,
    /// A ticket to use up once the request upgrades (only then).
    pub ticket: Option<String>,
}

/// The socket's credentials, checked (a ticket is looked at, not used up).
pub async fn for_socket(
    state: &AppState,
    ticket: Option<&str>,
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<SocketCredentials, ApiError> {
    const INVALID: ApiError = ApiError::Unauthorized("missing, invalid, expired or used credentials");
    let peer = |user: super::CurrentUser| Peer {
        user_id: user.id,
        token_version: user.token_version,
        expires_at: user.expires_at,
    };
    let found = |peer, via_subprotocol| SocketCredentials {
        peer,
        via_subprotocol,
        ticket: None,
    };
    if let Some(ticket) = ticket {
        let grant = state.tickets.peek(ticket).ok_or(INVALID)?;
        let user_id = grant.user_id.clone();
        let account = state
            .db
            .read(move |conn| db::users::by_id(conn, &user_id))
            .await?;
        return match account {
            Some(a) if a.token_version == grant.token_version => Ok(SocketCredentials {
                peer: Peer {
                    user_id: grant.user_id,
                    token_version: grant.token_version,
                    expires_at: grant.token_expires_at,
                },
                via_subprotocol: false,
                ticket: Some(ticket.to_owned()),
            }),
            _ => Err(INVALID),
        };
    }
    // Another scheme (e.g. Basic from a proxy in front) is not ours: fall
    // through to the other carriers.
    if let Some(token) = bearer_token(headers) {
        return Ok(found(peer(authenticate(state, token).await?), false));
    }
    if let Some(value) = headers.get(SEC_WEBSOCKET_PROTOCOL) {
        let mut parts = value.to_str().map_err(|_| INVALID)?.split(',').map(str::trim);
        if parts.next() == Some("bearer") {
            let token = parts.next().ok_or(INVALID)?;
            return Ok(found(peer(authenticate(state, token).await?), true));
        }
    }
    if let Some(token) = token {
        return Ok(found(peer(authenticate(state, token).await?), false));
    }
    Err(INVALID)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "bEaReR   abc ",
            "Bearer\tabc",
        ] {
            assert_eq!(bearer_token(&with(value)), Some("abc"), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_not_bearer_tokens() {
        for value in ["Basic abc", "Bearer", "Bearer  ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(&with(value)), None, "{value:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
