//! `ragd user list|create|reset-password|delete`: the real binary, run
//! beside a running server on the same data dir. What it changes the
//! server must honour: a created account logs in (registration closed or
//! not), a reset revokes the old tokens at once and closes the user's
//! sockets within about a second, a delete takes the account, its files
//! and its search index away and leaves everyone else's alone.

use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::cli::{ragd, run};
use crate::doc_helpers::{Api, files_in, id};
use crate::helpers::{PASSWORD, TestApp};
use crate::ws_helpers::{Ending, connect};

/// The longest a revoked user's socket may stay open: the server looks
/// every second (docs/API.md), plus slack for a loaded machine.
const NOTICE: Duration = Duration::from_secs(5);

/// `ragd user <args> --data-dir <app's>`, with `stdin` written to it.
async fn user(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Output {
    let dir = app.data_dir().display().to_string();
    let mut command = ragd();
    command.arg("user").args(args).args(["--data-dir", &dir]);
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("start the ragd binary");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("a stdin pipe");
        pipe.write_all(input.as_bytes()).await.expect("write to stdin");
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ragd user {args:?} did not exit"))
        .expect("ragd user runs")
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}: {stdout}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Asserts the exit code and that stderr is one line mentioning `mentions`.
#[track_caller]
fn failed(output: &Output, code: i32, mentions: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(mentions),
        "stderr should mention {mentions:?}: {stderr}"
    );
    assert!(
        stderr.starts_with("ragd: ") && stderr.trim_end().lines().count() == 1,
        "one clear line: {stderr}"
    );
}

async fn listed(app: &TestApp) -> Vec<Value> {
    let output = user(app, &["list", "--json"], None).await;
    let list: Value = serde_json::from_str(&succeeded(&output)).expect("list --json prints JSON");
    list.as_array().expect("a JSON array").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_makes_accounts_that_log_in_even_with_registration_closed() {
    let app = TestApp::spawn_with(&["--registration", "closed"]).await;
    app.post_json(
        "/api/auth/register",
        None,
        &json!({"email": "public@example.com", "password": PASSWORD}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "registration_closed");

    let chosen = user(
        &app,
        &["create", "--email", " Ada@Example.COM ", "--password-stdin"],
        Some("an admin's passphrase\n"),
    )
    .await;
    let stdout = succeeded(&chosen);
    assert!(stdout.contains("created ada@example.com"), "{stdout}");
    assert!(
        !stdout.contains("password:"),
        "a chosen password is not echoed: {stdout}"
    );
    app.login("ada@example.com", "an admin's passphrase")
        .await
        .expect(StatusCode::OK);

    let generated = user(&app, &["create", "--email", "bob@example.com"], None).await;
    let stdout = succeeded(&generated);
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("the generated password is printed once: {stdout}"));
    assert!(password.len() >= 20, "a strong password: {password:?}");
    let token = app.login_token("bob@example.com", password).await;
    app.get("/api/auth/me", Some(&token)).await.expect(StatusCode::OK);

    // The API's rules, with an exit code instead of a status.
    let taken = user(&app, &["create", "--email", "ADA@example.com"], None).await;
    failed(&taken, 1, "already exists");
    let bad_email = user(&app, &["create", "--email", "ada-at-example"], None).await;
    failed(&bad_email, 2, "email");
    let short = user(
        &app,
        &["create", "--email", "carol@example.com", "--password-stdin"],
        Some("short\n"),
    )
    .await;
    failed(&short, 2, "8 to 256 characters");
    let empty = user(
        &app,
        &["create", "--email", "carol@example.com", "--password-stdin"],
        Some(""),
    )
    .await;
    failed(&empty, 2, "stdin is empty");

    let emails: Vec<Value> = listed(&app).await.iter().map(|u| u["email"].clone()).collect();
    assert_eq!(emails, [json!("ada@example.com"), json!("bob@example.com")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_revokes_tokens_and_closes_sockets_of_the_running_server() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("reset@example.com", PASSWORD).await;
    let (other, _) = app.register("bystander@example.com", PASSWORD).await;
    let mut socket = connect(&app, &token).await;
    let mut bystander = connect(&app, &other).await;

    let output = user(
        &app,
        &[
            "reset-password",
            "--email",
            "reset@example.com",
            "--password-stdin",
        ],
        Some("a brand new passphrase\r\n"),
    )
    .await;
    succeeded(&output);

    // At once for requests: each one reads the token version.
    app.get("/api/auth/me", Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        socket.expect_close_within(NOTICE).await,
        Ending::Close(Some(4003)),
        "the server closes the user's socket once it notices"
    );
    bystander.ping_pong().await;
    app.get("/api/auth/me", Some(&other)).await.expect(StatusCode::OK);

    app.login("reset@example.com", PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let fresh = app
        .login_token("reset@example.com", "a brand new passphrase")
        .await;
    let mut again = connect(&app, &fresh).await;
    again.ping_pong().await;

    let unknown = user(&app, &["reset-password", "--email", "nobody@example.com"], None).await;
    failed(&unknown, 1, "no account with the email nobody@example.com");
    let short = user(
        &app,
        &[
            "reset-password",
            "--email",
            "reset@example.com",
            "--password-stdin",
        ],
        Some("1234567\n"),
    )
    .await;
    failed(&short, 2, "8 to 256 characters");
    app.get("/api/auth/me", Some(&fresh)).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_takes_the_account_its_files_and_index_and_leaves_others_alone() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("leaving@example.com").await;
    let other = api.register("staying@example.com").await;
    let gone = api
        .upload_ready(&token, "mine.txt", b"The lighthouse keeper logs every storm.")
        .await;
    let kept = api
        .upload_ready(&other, "theirs.txt", b"Another lighthouse keeper, another storm.")
        .await;
    app.create_conversation(&token, Some("mine")).await;
    app.create_conversation(&other, Some("theirs")).await;
    let mut socket = connect(&app, &token).await;

    let table = succeeded(&user(&app, &["list"], None).await);
    let leaving = table
        .lines()
        .find(|l| l.starts_with("leaving@example.com"))
        .unwrap_or_else(|| panic!("the table lists the account: {table}"));
    let cells: Vec<&str> = leaving.split_whitespace().collect();
    assert_eq!(cells[3..], ["1", "1"], "one document, one conversation: {table}");

    // Without a terminal to ask on, only --yes deletes.
    let refused = user(&app, &["delete", "--email", "leaving@example.com"], None).await;
    failed(&refused, 2, "--yes");
    app.get("/api/auth/me", Some(&token)).await.expect(StatusCode::OK);

    let output = user(&app, &["delete", "--email", "leaving@example.com", "--yes"], None).await;
    let stdout = succeeded(&output);
    assert!(
        stdout.contains("1 documents (1 files removed), 1 conversations"),
        "{stdout}"
    );

    app.get("/api/auth/me", Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        socket.expect_close_within(NOTICE).await,
        Ending::Close(Some(4003))
    );
    app.login("leaving@example.com", PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        files_in(app.data_dir()),
        [id(&kept).to_owned()],
        "only the other user's file is left"
    );
    assert_ne!(id(&gone), id(&kept));

    // The other user keeps everything, search included.
    let hits = api.search(&other, "lighthouse storm").await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["document_id"], kept["id"]);
    let list = listed(&app).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["email"], json!("staying@example.com"));
    assert_eq!(list[0]["documents"], json!(1));
    assert_eq!(list[0]["conversations"], json!(1));

    let again = user(&app, &["delete", "--email", "leaving@example.com", "--yes"], None).await;
    failed(&again, 1, "no account with the email leaving@example.com");
}

#[tokio::test]
async fn user_commands_need_an_existing_database() {
    let empty = tempfile::tempdir().expect("a temp dir");
    let dir = empty.path().display().to_string();
    let output = run(&["user", "list", "--data-dir", &dir], &[]).await;
    failed(&output, 2, "no ragd database");
    assert!(
        std::fs::read_dir(empty.path())
            .expect("readable")
            .next()
            .is_none(),
        "nothing is created in the wrong dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_while_the_server_is_stopped_is_finished_when_it_starts() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("offline@example.com").await;
    let other = api.register("online@example.com").await;
    api.upload_ready(&token, "mine.txt", b"Tide tables for the northern harbour.")
        .await;
    let kept = api
        .upload_ready(&other, "theirs.txt", b"Tide tables for the southern harbour.")
        .await;
    let (dir, args) = app.stop().await;

    let path = dir.path().display().to_string();
    let output = run(
        &[
            "user",
            "delete",
            "--email",
            "offline@example.com",
            "--yes",
            "--data-dir",
            &path,
        ],
        &[],
    )
    .await;
    succeeded(&output);
    assert_eq!(files_in(dir.path()), [id(&kept).to_owned()]);

    let app = TestApp::spawn_in(dir, args).await;
    let api = Api::of(&app);
    app.get("/api/auth/me", Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let hits = api.search(&other, "tide harbour").await;
    assert_eq!(hits.len(), 1, "only the other user's chunk: {hits:?}");
    assert_eq!(hits[0]["document_id"], kept["id"]);
    // The same email can be registered again, with nothing of the old account.
    let fresh = api.register("offline@example.com").await;
    assert!(api.search(&fresh, "tide harbour").await.is_empty());
}
