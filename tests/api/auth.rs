//! API.md "Auth": accounts, tokens, revocation, rate limiting.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, TestResponse, assert_timestamp, b64url, jwt_claims, now_secs, sign_hs256, sign_with,
};
use crate::ws_helpers::{Cred, connect_with};

const ME: &str = "/api/auth/me";

#[track_caller]
fn assert_session(body: &Value, email: &str) {
    let user = &body["user"];
    let id = user["id"].as_str().expect("user.id is a string");
    assert!(!id.is_empty(), "user.id is not empty");
    assert_eq!(user["email"], json!(email));
    assert_timestamp(&user["created_at"]);
    let token = body["token"].as_str().expect("token is a string");
    assert_eq!(token.split('.').count(), 3, "the token is a JWT: {token}");
    assert_timestamp(&body["expires_at"]);
    assert!(
        body["expires_at"].as_str() > user["created_at"].as_str(),
        "expires_at is after created_at: {body}"
    );
}

async fn me_status(app: &TestApp, token: &str) -> TestResponse {
    app.get(ME, Some(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_me_happy_path() {
    let app = TestApp::spawn().await;

    let response = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": "  Ada@Example.COM ", "password": PASSWORD}),
        )
        .await;
    let registered = response.expect(StatusCode::CREATED).clone();
    assert_session(&registered, "ada@example.com");
    let body_keys: Vec<&String> = registered.as_object().expect("an object").keys().collect();
    assert_eq!(
        body_keys.len(),
        3,
        "register body is {{user, token, expires_at}}: {registered}"
    );
    let user = registered["user"].clone();

    // The default token TTL is 24h, and the token carries the documented claims.
    let claims = jwt_claims(registered["token"].as_str().unwrap());
    assert_eq!(claims["sub"], user["id"], "sub is the user id: {claims}");
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 24 * 3600, "default --token-ttl is 24h: {claims}");
    assert!((iat - now_secs()).abs() < 60, "iat is now: {claims}");

    // me answers with the same user.
    let token = registered["token"].as_str().unwrap();
    let me = me_status(&app, token).await;
    assert_eq!(me.expect(StatusCode::OK), &user);

    // Login, with a differently cased and padded email, gives the same body shape.
    let login = app.login(" ADA@example.com", PASSWORD).await;
    let logged_in = login.expect(StatusCode::OK).clone();
    assert_session(&logged_in, "ada@example.com");
    assert_eq!(logged_in["user"], user, "login returns the same user");
    let me = me_status(&app, logged_in["token"].as_str().unwrap()).await;
    assert_eq!(me.expect(StatusCode::OK), &user);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ttl_sets_exp_and_expires_at() {
    let app = TestApp::spawn_with(&["--token-ttl", "30m"]).await;
    app.register("ttl@example.com", PASSWORD).await;
    let body = app
        .login("ttl@example.com", PASSWORD)
        .await
        .expect(StatusCode::OK)
        .clone();
    let claims = jwt_claims(body["token"].as_str().unwrap());
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 30 * 60, "--token-ttl 30m: {claims}");

    // expires_at is the token's exp, written as an RFC 3339 timestamp.
    let expected = time::OffsetDateTime::from_unix_timestamp(exp)
        .expect("a valid exp")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format exp");
    let expires_at = body["expires_at"].as_str().expect("expires_at");
    assert_eq!(
        &expires_at[..19],
        &expected[..19],
        "expires_at {expires_at} matches exp {exp}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_email_is_409_email_taken_whatever_the_case() {
    let app = TestApp::spawn().await;
    app.register("bob@example.com", PASSWORD).await;

    let again = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": "bob@example.com", "password": "another password"}),
        )
        .await;
    again.expect_error(StatusCode::CONFLICT, "email_taken");

    let cased = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": " BOB@Example.com ", "password": PASSWORD}),
        )
        .await;
    cased.expect_error(StatusCode::CONFLICT, "email_taken");

    // The original password still works: the failed attempts changed nothing.
    app.login_token("bob@example.com", PASSWORD).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_email_or_password_is_422() {
    let app = TestApp::spawn().await;
    let long_email = format!("{}@example.com", "a".repeat(250));
    let bad_emails = [
        "",
        "   ",
        "ada",
        "ada@example",
        "@example.com",
        "ada@@example.com",
        "ada@b@example.com",
        "a da@example.com",
        long_email.as_str(),
    ];
    for email in bad_emails {
        let response = app
            .post_json(
                "/api/auth/register",
                None,
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "email {email:?}: {}",
            response.text
        );
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }

    // 8..=256 characters, counted as Unicode scalar values, not bytes.
    let too_long = "x".repeat(257);
    let seven_accents = "é".repeat(7);
    for password in ["", "1234567", seven_accents.as_str(), too_long.as_str()] {
        let response = app
            .post_json(
                "/api/auth/register",
                None,
                &json!({"email": "carol@example.com", "password": password}),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "password of {} chars: {}",
            password.chars().count(),
            response.text
        );
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    // None of the rejected attempts created the account.
    app.login("carol@example.com", "1234567")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    // The boundaries themselves are accepted.
    app.register("carol@example.com", &"é".repeat(8)).await;
    app.register("dave@example.com", &"y".repeat(256)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_email_are_401_invalid_credentials() {
    let app = TestApp::spawn().await;
    app.register("erin@example.com", PASSWORD).await;

    let wrong = app.login("erin@example.com", "not the password").await;
    wrong.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    unknown.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // Both failures look the same to the client.
    assert_eq!(wrong.body["error"]["message"], unknown.body["error"]["message"]);

    app.login_token("erin@example.com", PASSWORD).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_authorization_is_401() {
    let app = TestApp::spawn().await;

    app.get(ME, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get("/api/conversations", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    for authorization in [
        "Bearer garbage",
        "Bearer ",
        "Bearer a.b.c",
        "Basic dXNlcjpwYXNz",
        "garbage",
    ] {
        let response = app.get_with_authorization(ME, authorization).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "Authorization: {authorization:?}"
        );
        response.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_on_rest_and_on_the_socket() {
    let app = TestApp::spawn().await;
    let (token, user) = app.register("scheme@example.com", PASSWORD).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let authorization = format!("{scheme} {token}");
        let me = app.get_with_authorization(ME, &authorization).await;
        assert_eq!(
            me.expect(StatusCode::OK),
            &user,
            "REST accepts Authorization: {scheme} <token>"
        );
        let ws = connect_with(&app, Cred::Authorization(&authorization), "").await;
        ws.close().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_and_expired_tokens_are_401() {
    let app = TestApp::spawn().await;
    let (token, user) = app.register("frank@example.com", PASSWORD).await;
    let id = user["id"].as_str().unwrap().to_owned();
    let now = now_secs();

    // A token crafted with the server's secret and the documented claims is
    // accepted: the cases below fail for the reason they name.
    let valid = app.sign(&json!({"sub": id, "iat": now, "exp": now + 3600, "ver": 0}));
    assert_eq!(me_status(&app, &valid).await.expect(StatusCode::OK), &user);

    // Expired.
    let expired = app.sign(&json!({"sub": id, "iat": now - 7200, "exp": now - 60, "ver": 0}));
    me_status(&app, &expired)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // No exp.
    let no_exp = app.sign(&json!({"sub": id, "iat": now, "ver": 0}));
    me_status(&app, &no_exp)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Tampered signature (a change in the middle of the signature segment).
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let signature = parts[2].clone();
    let middle = signature.len() / 2;
    let flipped = if &signature[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    parts[2] = format!("{}{}{}", &signature[..middle], flipped, &signature[middle + 1..]);
    me_status(&app, &parts.join("."))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Tampered payload under the original signature (a later expiry).
    let mut claims = jwt_claims(&token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let original: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        original[0],
        b64url(claims.to_string().as_bytes()),
        original[2]
    );
    me_status(&app, &tampered)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // alg: none, with valid claims and no signature.
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(
        json!({"sub": id, "iat": now, "exp": now + 3600, "ver": 0})
            .to_string()
            .as_bytes(),
    );
    me_status(&app, &format!("{header}.{payload}."))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Another HMAC algorithm with the right secret: only HS256 is accepted.
    let hs512 = sign_with(
        jsonwebtoken::Algorithm::HS512,
        &app.secret(),
        &json!({"sub": id, "iat": now, "exp": now + 3600, "ver": 0}),
    );
    me_status(&app, &hs512)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // The right claims signed with another secret.
    let foreign = sign_hs256(
        b"0123456789abcdef0123456789abcdef-not-the-secret",
        &json!({"sub": id, "iat": now, "exp": now + 3600, "ver": 0}),
    );
    me_status(&app, &foreign)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // A valid signature for a user that does not exist.
    let ghost =
        app.sign(&json!({"sub": uuid::Uuid::now_v7().to_string(), "iat": now, "exp": now + 3600, "ver": 0}));
    me_status(&app, &ghost)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // The real token still works after all this.
    me_status(&app, &token).await.expect(StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_is_403_but_existing_accounts_log_in() {
    let app = TestApp::spawn().await;
    app.register("gina@example.com", PASSWORD).await;
    let app = app.restart_with(&["--registration", "closed"]).await;

    let response = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": "henry@example.com", "password": PASSWORD}),
        )
        .await;
    response.expect_error(StatusCode::FORBIDDEN, "registration_closed");
    app.login("henry@example.com", PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    app.login_token("gina@example.com", PASSWORD).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_on_a_fresh_server_is_403() {
    let app = TestApp::spawn_with(&["--registration", "closed"]).await;
    let response = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": "ivy@example.com", "password": PASSWORD}),
        )
        .await;
    response.expect_error(StatusCode::FORBIDDEN, "registration_closed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_revokes_old_tokens() {
    let app = TestApp::spawn().await;
    let email = "jack@example.com";
    let new_password = "a brand new passphrase";
    let (token, user) = app.register(email, PASSWORD).await;

    // Wrong current password: 401 invalid_credentials, nothing changes.
    let wrong = app
        .post_json(
            "/api/auth/password",
            Some(&token),
            &json!({"current_password": "not it at all", "new_password": new_password}),
        )
        .await;
    wrong.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    me_status(&app, &token).await.expect(StatusCode::OK);

    // New password too short: 422, nothing changes.
    let short = app
        .post_json(
            "/api/auth/password",
            Some(&token),
            &json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await;
    short.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    me_status(&app, &token).await.expect(StatusCode::OK);

    // Missing field: 400.
    let missing = app
        .post_json(
            "/api/auth/password",
            Some(&token),
            &json!({"current_password": PASSWORD}),
        )
        .await;
    missing.expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // Without a token: 401.
    let anonymous = app
        .post_json(
            "/api/auth/password",
            None,
            &json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    anonymous.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let second_token = app.login_token(email, PASSWORD).await;
    let changed = app
        .post_json(
            "/api/auth/password",
            Some(&token),
            &json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    changed.expect(StatusCode::NO_CONTENT);
    assert!(changed.text.is_empty(), "204 has no body: {:?}", changed.text);

    // Every token issued before the change stops working.
    me_status(&app, &token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    me_status(&app, &second_token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    app.login(email, PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let fresh = app.login_token(email, new_password).await;
    assert_eq!(me_status(&app, &fresh).await.expect(StatusCode::OK), &user);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_gives_a_working_token_and_keeps_the_old_one() {
    let app = TestApp::spawn().await;
    let (token, user) = app.register("kate@example.com", PASSWORD).await;

    let response = app.post_empty("/api/auth/refresh", Some(&token)).await;
    let body = response.expect(StatusCode::OK).clone();
    assert_session(&body, "kate@example.com");
    assert_eq!(body["user"], user);
    let fresh = body["token"].as_str().unwrap();
    assert_eq!(jwt_claims(fresh)["sub"], user["id"]);

    assert_eq!(me_status(&app, fresh).await.expect(StatusCode::OK), &user);
    me_status(&app, &token).await.expect(StatusCode::OK);

    // Refresh needs a valid token.
    app.post_empty("/api/auth/refresh", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.post_empty("/api/auth/refresh", Some("garbage"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_every_token_of_the_user() {
    let app = TestApp::spawn().await;
    let email = "liam@example.com";
    let (registered, user) = app.register(email, PASSWORD).await;
    let first = app.login_token(email, PASSWORD).await;
    let second = app.login_token(email, PASSWORD).await;
    // Another user's token is not affected.
    let (other, _) = app.register("mia@example.com", PASSWORD).await;

    let response = app.post_empty("/api/auth/logout", Some(&first)).await;
    response.expect(StatusCode::NO_CONTENT);

    for token in [&registered, &first, &second] {
        me_status(&app, token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let list = app.get("/api/conversations", Some(token)).await;
        list.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Logging out again with a revoked token is 401.
    app.post_empty("/api/auth/logout", Some(&first))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    me_status(&app, &other).await.expect(StatusCode::OK);

    let fresh = app.login_token(email, PASSWORD).await;
    assert_eq!(me_status(&app, &fresh).await.expect(StatusCode::OK), &user);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_needs_the_password_and_removes_everything() {
    let app = TestApp::spawn().await;
    let email = "noah@example.com";
    let (token, user) = app.register(email, PASSWORD).await;
    let conversation = app.create_conversation(&token, Some("private notes")).await;
    let conversation_path = format!("/api/conversations/{}", conversation["id"].as_str().unwrap());

    // Wrong password: 401, and the account and its data survive.
    let wrong = app
        .delete_json(ME, Some(&token), &json!({"password": "definitely wrong"}))
        .await;
    wrong.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(me_status(&app, &token).await.expect(StatusCode::OK), &user);
    assert_eq!(
        app.get(&conversation_path, Some(&token))
            .await
            .expect(StatusCode::OK),
        &conversation
    );
    app.login_token(email, PASSWORD).await;

    // No token: 401.
    app.delete_json(ME, None, &json!({"password": PASSWORD}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let deleted = app
        .delete_json(ME, Some(&token), &json!({"password": PASSWORD}))
        .await;
    deleted.expect(StatusCode::NO_CONTENT);

    me_status(&app, &token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get(&conversation_path, Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.login(email, PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    // The email is free again; the new account is a new user with nothing.
    let response = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let body = response.expect(StatusCode::CREATED).clone();
    assert_ne!(body["user"]["id"], user["id"], "a new account gets a new id");
    let new_token = body["token"].as_str().unwrap();
    let list = app.get("/api/conversations", Some(new_token)).await;
    assert_eq!(list.expect(StatusCode::OK)["items"], json!([]));
    app.get(&conversation_path, Some(new_token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // The old token does not come back to life for the new account.
    me_status(&app, &token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[track_caller]
fn assert_rate_limited(response: &TestResponse) {
    response.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after = response.header("retry-after").expect("a 429 carries Retry-After");
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is integer seconds: {retry_after:?}"));
    assert!(
        seconds > 0 && seconds <= 15 * 60,
        "Retry-After within the 15 minute window: {seconds}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failed_logins_lock_the_email_for_that_client_ip_only() {
    let app = TestApp::spawn_with(&["--trusted-proxy", "127.0.0.1"]).await;
    let email = "olivia@example.com";
    app.register(email, PASSWORD).await;

    for attempt in 1..=10 {
        let response = app.login_from(email, "wrong password!", "203.0.113.5").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "failed attempt {attempt}: {}",
            response.text
        );
        response.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // The 11th attempt is refused even with the right password.
    let locked = app.login_from(email, PASSWORD, "203.0.113.5").await;
    assert_rate_limited(&locked);
    // The same email from another client IP logs in.
    let other_ip = app.login_from(email, PASSWORD, "203.0.113.6").await;
    assert_eq!(other_ip.expect(StatusCode::OK)["user"]["email"], json!(email));
    // A spoofed left-most entry does not help: the right-most one counts.
    let spoofed = app.login_from(email, PASSWORD, "203.0.113.99, 203.0.113.5").await;
    assert_rate_limited(&spoofed);
    // Still locked for the original IP.
    assert_rate_limited(&app.login_from(email, PASSWORD, "203.0.113.5").await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let app = TestApp::spawn().await;
    let email = "paul@example.com";
    app.register(email, PASSWORD).await;

    for attempt in 1..=10 {
        let response = app.login_from(email, "wrong password!", "203.0.113.5").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "failed attempt {attempt}: {}",
            response.text
        );
    }
    // The failures counted against the peer 127.0.0.1: changing the header does not help.
    assert_rate_limited(&app.login_from(email, PASSWORD, "203.0.113.6").await);
    assert_rate_limited(&app.login(email, PASSWORD).await);
    // Another email from the same IP is not locked (10 < 50 per-IP failures).
    app.register("quinn@example.com", PASSWORD).await;
    app.login_token("quinn@example.com", PASSWORD).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_clears_earlier_failures() {
    let app = TestApp::spawn().await;
    let email = "rose@example.com";
    app.register(email, PASSWORD).await;

    for _ in 0..9 {
        app.login(email, "wrong password!")
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    app.login_token(email, PASSWORD).await;
    // The count started over: nine more failures still leave the account open.
    for _ in 0..9 {
        app.login(email, "wrong password!")
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    app.login_token(email, PASSWORD).await;
    app.stop().await;
}
