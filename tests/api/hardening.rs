//! docs/API.md "Connections" and "Security headers": slow and idle
//! connections are closed while other clients are served, trickled bodies
//! end as 408, a foreign `Origin` cannot open `/ws`, uploads are served back
//! inert, and the smaller rules on names, passwords and registrations.
//! Raw TCP where the point is what a misbehaving client does.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::doc_helpers::{Api, BOUNDARY, assert_files_are, fixture, id, multipart_head};
use crate::helpers::{PASSWORD, TestApp};
use crate::ws_helpers::{Cred, connect_with, ticket, try_connect_with_headers};

/// Far longer than any timeout the tests set: a connection still open
/// after it was not closed by ragd.
const BOUND: Duration = Duration::from_secs(10);

async fn raw(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect")
}

/// Reads until the server closes the connection; `None` if it is still
/// open after `BOUND`.
async fn until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + BOUND;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status and JSON body of a raw HTTP/1.1 response.
fn parse_response(bytes: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(bytes);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn healthy(app: &TestApp) {
    let response = app.get("/healthz", None).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "other clients are served meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_header_connections_are_closed_while_others_are_served() {
    // The idle timeout is far off: only the header timeout can close them
    // within `BOUND`.
    let app = TestApp::spawn_with(&["--header-timeout", "1s", "--idle-timeout", "60s"]).await;

    let mut silent = raw(&app).await;
    // A head that never ends: one more header line every 300 ms.
    let mut slow = raw(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: ragd\r\n")
        .await
        .expect("write");
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow_write
                .write_all(format!("X-Slow-{n}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });

    healthy(&app).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(BOUND, slow_read.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a head trickled line by line is cut off");
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "the trickled request was never served: {rest:?}"
    );
    trickle.abort();
    healthy(&app).await;
    let silent_saw = until_closed(&mut silent).await;
    assert_eq!(
        silent_saw.as_deref(),
        Some(&b""[..]),
        "a connection that sends nothing is closed, without an answer"
    );
    healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_that_idles_is_closed() {
    let app = TestApp::spawn_with(&["--idle-timeout", "1s", "--header-timeout", "60s"]).await;
    let mut idle = raw(&app).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: ragd\r\n\r\n")
        .await
        .expect("write");
    let idle_saw = until_closed(&mut idle)
        .await
        .expect("an idle keep-alive connection is closed");
    assert_eq!(parse_response(&idle_saw).0, 200, "its request was answered first");
}

/// A socket whose receive buffer is small, so that the server's writes
/// block as soon as the client stops reading.
async fn small_window(app: &TestApp) -> TcpStream {
    let address = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(address).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_a_slow_reader_is_not() {
    let app =
        TestApp::spawn_with(&["--write-timeout", "2s", "--idle-timeout", "60s", "--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("reader@example.com").await;
    let size = 16 << 20;
    let doc = api.upload_ok(&token, "big.txt", &vec![b'x'; size]).await;
    let request = format!(
        "GET /api/documents/{}/file HTTP/1.1\r\nHost: ragd\r\nAuthorization: Bearer {token}\r\n\r\n",
        id(&doc)
    );

    // Reads a little, then nothing for three write timeouts. (2 s, not
    // 1 s: the slow reader below must never pause that long, even on a
    // loaded machine.)
    let mut stalled = small_window(&app).await;
    stalled.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 64 * 1024];
    let _ = stalled.read(&mut buf).await.expect("the response starts");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut rest = Vec::new();
    let drained = tokio::time::timeout(BOUND, stalled.read_to_end(&mut rest)).await;
    let got = rest.len();
    assert!(
        matches!(drained, Ok(Ok(_) | Err(_))) && got < size,
        "the connection was closed: the client got {got} of {size} bytes"
    );

    // Reads steadily but slowly: served whole.
    let mut slow = small_window(&app).await;
    slow.write_all(request.as_bytes()).await.expect("write");
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match slow.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        if total > size {
            break;
        }
        assert!(Instant::now() < deadline, "the slow download finished");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(total > size, "the whole file (and its head) arrived: {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_in_all_and_per_client_address() {
    // Per address: the third connection is closed at once.
    let app = TestApp::spawn_with(&["--max-connections-per-ip", "2", "--header-timeout", "60s"]).await;
    let held = [raw(&app).await, raw(&app).await];
    let mut third = raw(&app).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ragd\r\n\r\n")
        .await
        .ok();
    let saw = until_closed(&mut third).await;
    assert_eq!(saw.as_deref(), Some(&b""[..]), "closed without an answer");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    healthy(&app).await;

    // In all: the third waits until one of two closes.
    let app = TestApp::spawn_with(&["--max-connections", "2", "--header-timeout", "60s"]).await;
    let first = raw(&app).await;
    let _second = raw(&app).await;
    let mut waiting = raw(&app).await;
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ragd\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "not served while two connections are open");
    drop(first);
    let answer = until_closed(&mut waiting).await.expect("then served");
    assert_eq!(parse_response(&answer).0, 200);
}

/// Sends `head`, then `body` one byte every `every`, while reading the
/// answer; returns the answer once the server closes the connection.
async fn trickle_body(app: &TestApp, head: String, body: Vec<u8>, every: Duration) -> Vec<u8> {
    let stream = raw(app).await;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for byte in body {
            tokio::time::sleep(every).await;
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
        }
        // Then nothing more: a stalled body.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(BOUND, read.read_to_end(&mut answer)).await;
    writer.abort();
    assert!(closed.is_ok(), "the server ended the slow request");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_or_stalled_body_is_408_and_an_upload_leaves_no_file() {
    let app = TestApp::spawn_with(&["--body-timeout", "1s", "--min-body-rate", "1024"]).await;
    let api = Api::of(&app);
    let token = api.register("slow-body@example.com").await;

    // One byte every 200 ms: below the rate once the first second is over.
    let login = json!({"email": "slow-body@example.com", "password": PASSWORD}).to_string();
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: ragd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        login.len()
    );
    let answer = trickle_body(&app, head, login.into_bytes(), Duration::from_millis(200)).await;
    let (status, body) = parse_response(&answer);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(body["error"]["code"], json!("request_timeout"), "{body}");

    // An upload whose body stops half-way: 408, and its temp file is gone.
    let mut form = multipart_head("half.txt", "text/plain");
    form.extend_from_slice(b"only the start of the file");
    let head = format!(
        "POST /api/documents HTTP/1.1\r\nHost: ragd\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n",
    );
    let answer = trickle_body(&app, head, form, Duration::from_millis(1)).await;
    let (status, body) = parse_response(&answer);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(body["error"]["code"], json!("request_timeout"), "{body}");
    assert_files_are(app.data_dir(), &[]);
    let listed = api.get("/api/documents", &token).await;
    assert_eq!(
        listed.expect(StatusCode::OK)["items"],
        json!([]),
        "nothing was stored"
    );
    healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_declared_too_large_is_413_before_it_is_sent() {
    let app = TestApp::spawn().await;
    let mut stream = raw(&app).await;
    stream
        .write_all(
            b"POST /api/auth/login HTTP/1.1\r\nHost: ragd\r\nContent-Type: application/json\r\n\
              Content-Length: 2000000\r\n\r\n",
        )
        .await
        .expect("write");
    let answer = until_closed(&mut stream)
        .await
        .expect("answered and closed without waiting for the body");
    let (status, body) = parse_response(&answer);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(body["error"]["code"], json!("payload_too_large"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_servers_own_or_an_allowed_origin_may_open_the_socket() {
    let app = TestApp::spawn_with(&["--allowed-origin", "https://chat.example.com"]).await;
    let (token, _) = app.register("origin@example.com", PASSWORD).await;
    let own = app.address.clone();
    let host = own.trim_start_matches("http://").to_owned();
    let bearer = Cred::Bearer(&token);

    for foreign in [
        "https://evil.example",
        "null",
        "http://127.0.0.1:1",
        "https://chat.example.com.evil",
    ] {
        let refused = try_connect_with_headers(&app.address, bearer, "", &[("origin", foreign)])
            .await
            .err()
            .unwrap_or_else(|| panic!("Origin {foreign} opened a socket"));
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "Origin {foreign}: {}",
            refused.text
        );
        assert_eq!(
            refused.body["error"]["code"],
            json!("forbidden"),
            "{}",
            refused.text
        );
    }
    // A ticket shown with a foreign Origin is not used up by the refusal.
    let t = ticket(&app, &token).await;
    let query = format!("ticket={t}");
    let refused = try_connect_with_headers(
        &app.address,
        Cred::None,
        &query,
        &[("origin", "https://evil.example")],
    )
    .await;
    let Err(refused) = refused else {
        panic!("a foreign Origin with a ticket opened a socket")
    };
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    for origin in [
        own.as_str(),
        &own.to_uppercase(),
        "https://chat.example.com",
        "https://chat.example.com/",
    ] {
        let cred = if origin == own { Cred::Ticket(&t) } else { bearer };
        let opened =
            try_connect_with_headers(&app.address, cred, "", &[("origin", origin), ("host", &host)]).await;
        assert!(
            opened.is_ok(),
            "Origin {origin} may open a socket: {:?}",
            opened.err().map(|r| r.text)
        );
    }
    // No Origin at all: not a browser, allowed.
    connect_with(&app, bearer, "").await.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_used_up_only_by_a_request_that_upgrades() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("ticket-once@example.com", PASSWORD).await;
    let t = ticket(&app, &token).await;
    // A plain GET is refused (400) and leaves the ticket usable.
    let plain = app.get(&format!("/ws?ticket={t}"), None).await;
    plain.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let ws = connect_with(&app, Cred::Ticket(&t), "").await;
    ws.close().await;
    // Used once, it is gone.
    let again = try_connect_with_headers(&app.address, Cred::Ticket(&t), "", &[]).await;
    let Err(again) = again else {
        panic!("a used ticket opened a socket")
    };
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_security_headers() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("headers@example.com", PASSWORD).await;
    for response in [
        app.get("/api/auth/me", Some(&token)).await,
        app.get("/api/nothing-here", None).await,
        app.get("/healthz", None).await,
    ] {
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        let csp = response.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_served_back_inert_and_text_with_its_charset() {
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("inert@example.com").await;
    let cases = [
        ("page.html", "application/octet-stream"),
        ("latin1.txt", "text/plain; charset=windows-1252"),
        ("notes.md", "text/markdown; charset=utf-8"),
        ("inventory.csv", "text/csv; charset=utf-8"),
        ("report.pdf", "application/pdf"),
    ];
    for (name, served_as) in cases {
        let bytes = fixture(name);
        let doc = api.upload_ok(&token, name, &bytes).await;
        let file = api
            .get(&format!("/api/documents/{}/file", id(&doc)), &token)
            .await;
        assert_eq!(file.status, StatusCode::OK);
        assert_eq!(file.header("content-type"), Some(served_as), "{name}");
        assert_eq!(file.header("x-content-type-options"), Some("nosniff"), "{name}");
        assert_eq!(
            file.header("content-security-policy"),
            Some("sandbox; default-src 'none'"),
            "{name}"
        );
        let disposition = file.header("content-disposition").unwrap_or_default();
        assert!(disposition.starts_with("attachment"), "{name}: {disposition}");
        let received = api
            .get_bytes(&format!("/api/documents/{}/file", id(&doc)), &token)
            .await;
        assert_eq!(received, bytes, "{name}: the original bytes, whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_lose_bidi_and_zero_width_characters_and_long_ones_keep_their_extension() {
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("names2@example.com").await;

    let disguised = api
        .upload_ok(&token, "invoice\u{202E}fdp.txt", b"an invoice")
        .await;
    assert_eq!(disguised["filename"], json!("invoicefdp.txt"));
    let hidden = api
        .upload_ok(&token, "zero\u{200B}width\u{FEFF}.md", b"# notes")
        .await;
    assert_eq!(hidden["filename"], json!("zerowidth.md"));
    // 300 characters: shortened, and still a .txt (else it would be 415).
    let long = format!("{}.txt", "long name ".repeat(30));
    let shortened = api.upload_ok(&token, &long, b"a long name").await;
    let name = shortened["filename"].as_str().unwrap_or_default();
    assert_eq!(name.chars().count(), 255, "{name}");
    assert!(name.ends_with(".txt"), "{name}");

    let conversation = app
        .create_conversation(&token, Some("\u{2067}Plans\u{2069}\u{200D}"))
        .await;
    assert_eq!(conversation["title"], json!("Plans"));
    let blank = app
        .post_json(
            "/api/conversations",
            Some(&token),
            &json!({"title": "\u{202E}\u{200B}"}),
        )
        .await;
    blank.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    for email in ["ada\u{202E}@example.com", "a\u{200B}da@example.com"] {
        let response = app
            .post_json(
                "/api/auth/register",
                None,
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_the_same_in_composed_and_decomposed_form() {
    let app = TestApp::spawn().await;
    let composed = "caf\u{e9} au lait";
    let decomposed = "cafe\u{301} au lait";
    app.register("nfc@example.com", composed).await;
    app.login_token("nfc@example.com", decomposed).await;
    app.login_token("nfc@example.com", composed).await;
    app.login("nfc@example.com", "cafe au lait")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_client_ip() {
    let app = TestApp::spawn_with(&["--registrations-per-hour", "2"]).await;
    app.register("first@example.com", PASSWORD).await;
    // A taken email counts too: the answer tells whether the email exists.
    app.post_json(
        "/api/auth/register",
        None,
        &json!({"email": "first@example.com", "password": PASSWORD}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "email_taken");
    let refused = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": "third@example.com", "password": PASSWORD}),
        )
        .await;
    refused.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(wait > 0 && wait <= 3600, "{wait}");
    // Logging in is not affected.
    app.login_token("first@example.com", PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_or_uri_is_431_from_the_http_layer() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: ragd\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70_000)
            ),
            431,
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: ragd\r\n\r\n", "a".repeat(70_000)),
            431,
        ),
        // Just under the limit: served.
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: ragd\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(60_000)
            ),
            200,
        ),
    ];
    for (request, expected) in cases {
        let mut stream = raw(&app).await;
        stream.write_all(request.as_bytes()).await.expect("write");
        let answer = until_closed(&mut stream).await.expect("answered and closed");
        assert_eq!(
            parse_response(&answer).0,
            expected,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    healthy(&app).await;
}
