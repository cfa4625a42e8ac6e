//! The real binary: flag errors, `--help`, the data dir lock, SIGTERM,
//! log redaction and the JWT secret from the environment.

use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::doc_helpers::Api;
use crate::helpers::PASSWORD;
use crate::ws_helpers::{Cred, connect_at};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ragd");
/// Longest wait for a process to start, answer or exit.
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// `ragd` with a clean environment: no `RAGD_*` from the caller, no colours,
/// default log level.
pub(crate) fn ragd() -> Command {
    without_caller_settings(Command::new(BIN))
}

/// `command` (ragd, or a program that execs it) with the environment of
/// [`ragd`].
pub(crate) fn without_caller_settings(mut command: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAGD_") {
            command.env_remove(key);
        }
    }
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `ragd` to completion (killed if it outlives `TIMEOUT`).
pub(crate) async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = ragd();
    command.args(args).envs(env.iter().copied());
    tokio::time::timeout(TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("ragd {args:?} did not exit within {TIMEOUT:?}"))
        .expect("run the ragd binary")
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[track_caller]
fn assert_one_line_usage_error(output: &Output, what: &str, mentions: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what}: exit code 2 expected, got {:?}; stderr: {stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.trim_end_matches('\n').split('\n').collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: exactly one line on stderr, got {}: {stderr:?}",
        lines.len()
    );
    assert!(
        !lines[0].trim().is_empty(),
        "{what}: the line is not empty: {stderr:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: no panic: {stderr}"
    );
    assert!(
        lines[0].contains(mentions),
        "{what}: the message mentions {mentions:?}: {stderr:?}"
    );
}

/// A ragd process started on a data dir, its stderr collected as it comes.
pub(crate) struct Server {
    pub(crate) child: Child,
    log: Arc<Mutex<String>>,
    pub(crate) address: String,
    _reader: JoinHandle<()>,
}

impl Server {
    pub(crate) async fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = ragd();
        command
            .args([
                "--data-dir",
                &dir.display().to_string(),
                "--listen",
                "127.0.0.1:0",
            ])
            .envs(env.iter().copied());
        Server::spawn(command).await
    }

    /// Starts `command`, which runs ragd listening on 127.0.0.1:0, and
    /// waits until it listens.
    pub(crate) async fn spawn(mut command: Command) -> Server {
        command.stdout(Stdio::null());
        let mut child = command.spawn().expect("start the ragd binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&strip_ansi(&line));
                log.push('\n');
            }
        });
        let mut server = Server {
            child,
            log,
            address: String::new(),
            _reader: reader,
        };
        if !server.wait_for_log("listening").await {
            panic!(
                "ragd did not log \"listening\" within {TIMEOUT:?}; stderr:\n{}",
                server.log()
            );
        }
        server.address = server.parse_address();
        server
    }

    /// SIGKILL: no shutdown code runs (the crash tests, feature `test-hooks`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) async fn kill(&mut self) {
        self.child.start_kill().expect("send SIGKILL");
        let status = tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("the killed server exits")
            .expect("wait for ragd");
        assert!(!status.success(), "killed, not exited: {status}");
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn parse_address(&self) -> String {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("listening"))
            .expect("a listening line");
        let start = line
            .find("http://")
            .unwrap_or_else(|| panic!("the listening line names its URL: {line}"));
        line[start..]
            .split_whitespace()
            .next()
            .expect("a URL")
            .trim_end_matches([',', '"', '/'])
            .to_owned()
    }

    pub(crate) async fn wait_for_log(&mut self, needle: &str) -> bool {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Exited: give the reader a moment to drain, then check once more.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.log().contains(needle) {
                    return true;
                }
                panic!(
                    "ragd exited ({status}) before logging {needle:?}; stderr:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("the server is still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "ragd did not exit within {TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.log()
                )
            })
            .expect("wait for ragd")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flag_values_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["--token-ttl", "5x"], "5x"),
        (&["--body-timeout", "0s"], "more than zero"),
        (&["--listen", "nope"], "nope"),
        (&["--registration", "maybe"], "maybe"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (flags, mentions) in cases {
        let mut args = vec!["--data-dir", data_dir.as_str()];
        if !flags.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(flags);
        let output = run(&args, &[]).await;
        assert_one_line_usage_error(&output, &format!("{flags:?}"), mentions);
    }
    assert!(
        !Path::new(&data_dir).exists(),
        "a usage error touches nothing on disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_env_values_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().display().to_string();
    let output = run(
        &["--data-dir", &data_dir, "--listen", "127.0.0.1:0"],
        &[("RAGD_TOKEN_TTL", "5x")],
    )
    .await;
    assert_one_line_usage_error(&output, "RAGD_TOKEN_TTL=5x", "5x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_main_flags() {
    let output = run(&["--help"], &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "--help succeeds; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for flag in [
        "--data-dir",
        "--listen",
        "--registration",
        "--token-ttl",
        "--log-format",
    ] {
        assert!(stdout.contains(flag), "--help mentions {flag}:\n{stdout}");
    }
    assert!(!stdout.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_dir_fails_while_the_first_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = Server::start(dir.path(), &[]).await;

    let data_dir = dir.path().display().to_string();
    let second = run(&["--data-dir", &data_dir, "--listen", "127.0.0.1:0"], &[]).await;
    let stderr = strip_ansi(&String::from_utf8_lossy(&second.stderr));
    assert!(
        !second.status.success(),
        "the second process must fail; stderr: {stderr}"
    );
    assert!(
        stderr.contains("data dir") || stderr.contains("lock"),
        "the error names the data dir or its lock: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");

    // The first one still serves, and stops cleanly.
    let health = reqwest::get(first.url("/healthz"))
        .await
        .expect("reach the first server");
    assert_eq!(health.status(), StatusCode::OK);
    let status = first.terminate().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", first.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_with_exit_code_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]).await;
    let health = reqwest::get(server.url("/healthz"))
        .await
        .expect("reach the server");
    assert_eq!(health.status(), StatusCode::OK);

    let status = server.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exits 0; stderr:\n{}",
        server.log()
    );

    // The lock is released: a new process can start on the same data dir.
    let mut again = Server::start(dir.path(), &[]).await;
    assert_eq!(again.terminate().await.code(), Some(0));
}

/// Reads ragd's log through a pipe and sends SIGTERM with the shell's
/// builtin `kill` the moment "listening" appears (the shortest delay a
/// supervisor could have), then prints ragd's exit status.
const SIGTERM_ON_LISTENING: &str = r#"
set -eu
dir=$1; bin=$2
mkfifo "$dir/log"
"$bin" --data-dir "$dir/data" --listen 127.0.0.1:0 >/dev/null 2>"$dir/log" &
pid=$!
while IFS= read -r line; do
    printf '%s\n' "$line" >&2
    case "$line" in *listening*) kill -TERM "$pid" ;; esac
done <"$dir/log"
set +e
wait "$pid"
echo "exit=$?"
"#;

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_sent_the_moment_listening_is_logged_drains_and_exits_0() {
    // Before the handlers were installed ahead of the log line, most such
    // signals killed the process (24 of 30 in a measurement).
    for attempt in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        // The same environment as `ragd()`, and a process group of its
        // own, so that a timeout can stop the script and ragd together.
        let mut script = Command::new("sh");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RAGD_") {
                script.env_remove(key);
            }
        }
        let child = script
            .args(["-c", SIGTERM_ON_LISTENING, "sh"])
            .arg(dir.path())
            .arg(BIN)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run sh");
        let group = child.id().expect("the script runs");
        let Ok(output) = tokio::time::timeout(TIMEOUT, child.wait_with_output()).await else {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            panic!("attempt {attempt}: the script did not end within {TIMEOUT:?}");
        };
        let output = output.expect("wait for sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout.trim(),
            "exit=0",
            "attempt {attempt}: ragd's exit after an immediate SIGTERM; its log: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_query_strings_are_redacted_from_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let api = Api::at(&server.address);
    let token = api.register("logs@example.com").await;

    let response = client
        .get(server.url("/nope?token=SECRETVALUE123&x=1&limit=5"))
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client
        .get(server.url("/api/auth/me?ticket=TICKETVALUE456"))
        .bearer_auth("BEARERVALUE789")
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // `tok%65n` is `token` once decoded: the socket opens with it, and the
    // real JWT must not reach the log under that spelling either.
    let ws = connect_at(&server.address, Cred::None, &format!("tok%65n={token}&since=0")).await;
    ws.close().await;
    let response = client
        .get(server.url("/api/search?q=SEARCHTEXT%20plans&limit=3"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::OK);

    for logged in [
        "token=REDACTED",
        "ticket=REDACTED",
        "q=REDACTED&limit=3",
        "REDACTED&since=0",
    ] {
        assert!(
            server.wait_for_log(logged).await,
            "the request is logged with {logged}; stderr:\n{}",
            server.log()
        );
    }
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0));
    let log = server.log();
    assert!(
        log.contains("x=REDACTED&limit=5"),
        "only ids, cursors and numbers keep their values: {log}"
    );
    for secret in [
        "SECRETVALUE123",
        "TICKETVALUE456",
        "BEARERVALUE789",
        "SEARCHTEXT",
        token.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "{secret} must never be logged; stderr:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_jwt_secret_stops_the_server_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().display().to_string();
    let output = run(
        &["--data-dir", &data_dir, "--listen", "127.0.0.1:0"],
        &[("RAGD_JWT_SECRET", "short")],
    )
    .await;
    assert_one_line_usage_error(&output, "RAGD_JWT_SECRET=short", "RAGD_JWT_SECRET");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("short\n") && !stderr.contains("\"short\""),
        "the secret itself is not echoed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_secret_from_the_environment_signs_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "an-environment-secret-of-more-than-32-bytes";
    let mut server = Server::start(dir.path(), &[("RAGD_JWT_SECRET", secret)]).await;
    let response = reqwest::Client::new()
        .post(server.url("/api/auth/register"))
        .json(&json!({"email": "env@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    let token = body["token"].as_str().expect("a token");

    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()).expect("an HMAC key");
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("the token verifies with RAGD_JWT_SECRET");
    assert_eq!(decoded.claims["sub"], body["user"]["id"]);
    assert!(!server.log().contains(secret), "the secret is never logged");
    assert_eq!(server.terminate().await.code(), Some(0));
}

/// Server memory after a burst of registrations: each Argon2 hash takes
/// 19 MiB, and glibc used to keep it (about 16 MiB per concurrent login,
/// for good) until the server fixed its mmap threshold at start-up.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_registrations_does_not_keep_the_hashing_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let registrations = (0..16).map(|n| {
        let response = client
            .post(server.url("/api/auth/register"))
            .json(&json!({"email": format!("burst{n}@example.com"), "password": PASSWORD}))
            .send();
        async move { response.await.expect("register").status() }
    });
    for status in futures_util::future::join_all(registrations).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    let pid = server.child.id().expect("the server runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    // 16 hashes x 19 MiB kept would be about 270 MiB.
    assert!(
        rss_kib < 96 * 1024,
        "server RSS after 16 registrations: {rss_kib} KiB"
    );
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]).await;
    assert_eq!(server.terminate().await.code(), Some(0));

    // stderr is a pipe here, as under systemd, docker or `2> file`; and
    // NO_COLOR is not set (the other tests set it).
    let data_dir = dir.path().display().to_string();
    let mut command = ragd();
    command
        .env_remove("NO_COLOR")
        .args(["reindex", "--data-dir", &data_dir]);
    let output = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("reindex exits in time")
        .expect("run the ragd binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "reindex: {stderr}");
    assert!(
        stderr.contains("rebuilding the search index"),
        "reindex logs its work: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape codes in a piped log: {stderr:?}"
    );
}
