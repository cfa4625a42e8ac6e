//! API.md "Conventions" and "Health and operations": the error body on
//! every failure path, body rules, routing before auth, probes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};

const ONE_MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(health.expect(StatusCode::OK), &json!({"status": "ok"}));
    assert!(
        health
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    app.get("/readyz", None).await.expect(StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_missing_fields_are_400() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("ivan@example.com", PASSWORD).await;

    for body in ["{not json", "", "{\"email\": \"a@example.com\",", "[1, 2", "null"] {
        let response = app
            .send_raw(
                Method::POST,
                "/api/auth/login",
                None,
                Some("application/json"),
                body.to_owned(),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "body {body:?}: {}",
            response.text
        );
        response.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let missing = app
        .post_json("/api/auth/login", None, &json!({"email": "ivan@example.com"}))
        .await;
    missing.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let wrong_type = app
        .post_json("/api/auth/register", None, &json!({"email": 1, "password": true}))
        .await;
    wrong_type.expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // The same on an authenticated route.
    let response = app
        .send_raw(
            Method::POST,
            "/api/conversations",
            Some(&token),
            Some("application/json"),
            "{\"title\":",
        )
        .await;
    response.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("jane@example.com", PASSWORD).await;
    let login = json!({"email": "jane@example.com", "password": PASSWORD}).to_string();

    let text = app
        .send_raw(
            Method::POST,
            "/api/auth/login",
            None,
            Some("text/plain"),
            login.clone(),
        )
        .await;
    text.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let none = app
        .send_raw(Method::POST, "/api/auth/login", None, None, login.clone())
        .await;
    none.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let form = app
        .send_raw(
            Method::POST,
            "/api/auth/register",
            None,
            Some("application/x-www-form-urlencoded"),
            "email=a&password=b",
        )
        .await;
    form.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let create = app
        .send_raw(
            Method::POST,
            "/api/conversations",
            Some(&token),
            Some("text/plain"),
            "{\"title\":\"x\"}",
        )
        .await;
    create.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // With the right content type (and a charset parameter) the same body works.
    let ok = app
        .send_raw(
            Method::POST,
            "/api/auth/login",
            None,
            Some("application/json; charset=utf-8"),
            login,
        )
        .await;
    ok.expect(StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_above_one_mib_are_413() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("kim@example.com", PASSWORD).await;

    // A well-formed JSON body one byte over 1 MiB.
    let wrap = |size: usize| {
        let prefix = "{\"title\":\"";
        let suffix = "\"}";
        format!(
            "{prefix}{}{suffix}",
            "a".repeat(size - prefix.len() - suffix.len())
        )
    };
    let too_large = wrap(ONE_MIB + 1);
    assert_eq!(too_large.len(), ONE_MIB + 1);
    let response = app
        .send_refused_early(
            Method::POST,
            "/api/conversations",
            Some(&token),
            "application/json",
            too_large,
        )
        .await;
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let huge = format!(
        "{{\"email\":\"x@example.com\",\"password\":\"{}\"}}",
        "p".repeat(2 * ONE_MIB)
    );
    let response = app
        .send_refused_early(Method::POST, "/api/auth/register", None, "application/json", huge)
        .await;
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Exactly 1 MiB is accepted as a body: the title is then what is wrong.
    let at_limit = wrap(ONE_MIB);
    let response = app
        .send_raw(
            Method::POST,
            "/api/conversations",
            Some(&token),
            Some("application/json"),
            at_limit,
        )
        .await;
    response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    // Nothing was created.
    let list = app.get("/api/conversations", Some(&token)).await;
    assert_eq!(list.expect(StatusCode::OK)["items"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_with_or_without_a_token() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("leo@example.com", PASSWORD).await;

    for path in [
        "/api/nope",
        "/nope",
        "/api/conversations/a/b/c",
        "/api/auth",
        "/api/auth/nope",
    ] {
        for credentials in [None, Some(token.as_str()), Some("garbage")] {
            let response = app.get(path, credentials).await;
            assert_eq!(
                response.status,
                StatusCode::NOT_FOUND,
                "GET {path} with {credentials:?}: {}",
                response.text
            );
            response.expect_error(StatusCode::NOT_FOUND, "not_found");
        }
    }
    let post = app.post_json("/api/nope", None, &json!({})).await;
    post.expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_with_or_without_a_token() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("max@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, None).await;
    let one = format!("/api/conversations/{}", conversation["id"].as_str().unwrap());

    let cases = [
        (Method::PUT, "/api/conversations"),
        (Method::DELETE, "/api/conversations"),
        (Method::PATCH, "/api/conversations"),
        (Method::POST, one.as_str()),
        (Method::PUT, one.as_str()),
        (Method::GET, "/api/auth/login"),
        (Method::GET, "/api/auth/register"),
        (Method::PUT, "/api/auth/me"),
        (Method::GET, "/api/auth/logout"),
        (Method::POST, "/healthz"),
    ];
    for (method, path) in &cases {
        for credentials in [None, Some(token.as_str())] {
            let response = app.request(method.clone(), path, credentials, None).await;
            assert_eq!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} with {credentials:?}: {}",
                response.text
            );
            response.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        }
    }
    // Also with a JSON body attached.
    let with_body = app
        .request(
            Method::PUT,
            "/api/conversations",
            Some(&token),
            Some(&json!({"title": "x"})),
        )
        .await;
    with_body.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("nia@example.com", PASSWORD).await;

    let responses = [
        app.get("/healthz", None).await,
        app.get("/readyz", None).await,
        app.get("/api/auth/me", Some(&token)).await,
        app.get("/api/auth/me", None).await,
        app.get("/api/nope", None).await,
        app.request(Method::PUT, "/api/conversations", None, None).await,
        app.send_raw(
            Method::POST,
            "/api/auth/login",
            None,
            Some("application/json"),
            "{",
        )
        .await,
        app.login("nia@example.com", "wrong password").await,
    ];
    let mut seen = std::collections::HashSet::new();
    for response in &responses {
        let id = response.header("x-request-id").unwrap_or_default();
        assert!(
            !id.is_empty(),
            "x-request-id missing on a {} response",
            response.status
        );
        assert!(
            seen.insert(id.to_owned()),
            "request ids are unique: {id} repeated"
        );
    }
    app.stop().await;
}
