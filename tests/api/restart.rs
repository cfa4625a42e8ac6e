//! What survives a restart on the same data dir: accounts, conversations,
//! tokens (and their revocation), and the signing secret.

use std::os::unix::fs::PermissionsExt;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, next_millisecond, secret_path};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_tokens_and_secret_survive_a_restart() {
    let app = TestApp::spawn().await;
    let email = "olga@example.com";
    let (token, user) = app.register(email, PASSWORD).await;
    let first = app.create_conversation(&token, Some("first")).await;
    next_millisecond().await;
    let second = app.create_conversation(&token, Some("second")).await;
    let before = app
        .get("/api/conversations", Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(before["items"], json!([second, first]));

    let key_path = secret_path(app.data_dir());
    let secret_before = std::fs::read(&key_path).expect("secret.key exists after the first start");
    let mode = std::fs::metadata(&key_path)
        .expect("stat secret.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "secret.key is created with mode 0600, got {mode:o}");

    let app = app.restart().await;

    // A token issued before the restart still works.
    assert_eq!(
        app.get("/api/auth/me", Some(&token)).await.expect(StatusCode::OK),
        &user
    );
    let after = app
        .get("/api/conversations", Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(after, before, "conversations are unchanged");
    let path = format!("/api/conversations/{}", first["id"].as_str().unwrap());
    assert_eq!(app.get(&path, Some(&token)).await.expect(StatusCode::OK), &first);

    // Logging in works, with the same user.
    let login = app.login(email, PASSWORD).await;
    assert_eq!(login.expect(StatusCode::OK)["user"], user);

    let secret_after = std::fs::read(&key_path).expect("secret.key still exists");
    assert_eq!(
        secret_after, secret_before,
        "the secret is not regenerated on restart"
    );
    let mode = std::fs::metadata(&key_path)
        .expect("stat secret.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "secret.key keeps mode 0600, got {mode:o}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_stay_revoked_after_a_restart() {
    let app = TestApp::spawn().await;
    let email = "pia@example.com";
    let (old, _) = app.register(email, PASSWORD).await;
    app.post_empty("/api/auth/logout", Some(&old))
        .await
        .expect(StatusCode::NO_CONTENT);
    let fresh = app.login_token(email, PASSWORD).await;

    let app = app.restart().await;
    app.get("/api/auth/me", Some(&old))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get("/api/auth/me", Some(&fresh)).await.expect(StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_cannot_open_a_data_dir_in_use() {
    let app = TestApp::spawn().await;
    let config = ragd::Config::from_args([
        "--data-dir".to_owned(),
        app.data_dir().display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ])
    .expect("valid flags");
    let err = match ragd::App::build(config).await {
        Ok(_) => panic!("a second server on the same data dir must not start"),
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(
        message.contains("data dir") || message.contains("lock"),
        "the error names the data dir or its lock: {message}"
    );
    assert_ne!(err.exit_code(), 0);

    // The first server is unaffected.
    app.get("/healthz", None).await.expect(StatusCode::OK);
    app.stop().await;
}
