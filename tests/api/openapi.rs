//! docs/API.md "Health and operations": `GET /api/openapi.json` documents
//! every route the router serves (read from the source, so a route added
//! without its `#[utoipa::path]` fails here), its schemas are what real
//! requests answer, and `GET /api/docs` renders from same-origin files.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::doc_helpers::{Api, id};
use crate::helpers::{PASSWORD, TestApp, TestResponse};

/// A method and a path in OpenAPI's syntax (`{id}`).
type Operation = (String, String);

/// The served document.
struct Doc(Value);

impl Doc {
    async fn fetch(app: &TestApp) -> Doc {
        let response = app.get("/api/openapi.json", None).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body["openapi"], "3.1.0", "OpenAPI 3.1");
        Doc(response.body)
    }

    fn operations(&self) -> BTreeSet<Operation> {
        let paths = self.0["paths"].as_object().expect("the document has paths");
        let mut ops = BTreeSet::new();
        for (path, item) in paths {
            for method in item.as_object().expect("a path item").keys() {
                if METHODS.contains(&method.as_str()) {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.0["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not in /api/openapi.json");
        op
    }

    /// The path with each path parameter replaced by its example, or by an
    /// id that exists nowhere.
    fn example_path(&self, method: &str, path: &str) -> String {
        let mut url = path.to_owned();
        let params = self.operation(method, path)["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for param in params.iter().filter(|p| p["in"] == "path") {
            let name = param["name"].as_str().expect("a parameter name");
            let value = param["example"]
                .as_str()
                .unwrap_or("0190a0b0-0000-7000-8000-000000000000");
            url = url.replace(&format!("{{{name}}}"), value);
        }
        url
    }

    /// Asserts that what `method path` answered is documented for its
    /// status, and that a JSON body matches the documented schema exactly
    /// (no field missing, renamed, of another type, or undocumented).
    #[track_caller]
    fn check(&self, method: &str, path: &str, response: &TestResponse) {
        let status = response.status.as_str();
        let documented = &self.operation(method, path)["responses"][status];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which its document does not list; body: {}",
            response.text
        );
        let Some(content) = documented["content"].as_object() else {
            assert!(
                response.text.is_empty(),
                "{method} {path} {status} is documented without a body, got {}",
                response.text
            );
            return;
        };
        let content_type = response.header("content-type").unwrap_or_default();
        let Some(json_type) = content.get("application/json") else {
            assert!(
                !content_type.starts_with("application/json"),
                "{method} {path} {status} answered JSON, documented as {:?}",
                content.keys().collect::<Vec<_>>()
            );
            return;
        };
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path} {status} is documented as JSON, answered {content_type:?}"
        );
        let mut schema = strict(json_type["schema"].clone());
        let mut components = self.0["components"].clone();
        if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
            for s in schemas.values_mut() {
                *s = strict(s.take());
            }
        }
        // OpenAPI 3.1 schemas are JSON Schema 2020-12; their
        // `#/components/...` references resolve inside this root.
        schema["components"] = components;
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("the schema of {method} {path} {status} compiles: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&response.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match its schema: {errors:#?}\nbody: {}",
            response.text
        );
    }
}

const METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// The schema with every object closed (`additionalProperties: false`), so
/// an undocumented field fails too.
fn strict(mut schema: Value) -> Value {
    close_objects(&mut schema);
    schema
}

fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Every `.route("<path>", <methods>)` of the crate's source, as
/// (METHOD, path) with axum's `{*rest}` written as OpenAPI's `{rest}`.
fn routes_in_source() -> BTreeSet<Operation> {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        // Routing this scan cannot read would escape the check.
        for unread in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !text.contains(unread),
                "{}: {unread}...) is not understood by this test; teach routes_in_source",
                file.display()
            );
        }
        routes.extend(routes_in(&text, &file));
    }
    assert!(routes.len() > 20, "the scan found the routes: {routes:?}");
    routes
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn routes_in(text: &str, file: &Path) -> Vec<Operation> {
    let mut routes = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let args = balanced(rest);
        let literal = args.trim_start().strip_prefix('"').unwrap_or_else(|| {
            panic!(
                "{}: a route's path must be a string literal: .route({args})",
                file.display()
            )
        });
        let (path, methods) = literal.split_once('"').expect("a closed string literal");
        let path = path.replace("{*", "{");
        let found = method_calls(methods);
        assert!(
            !found.is_empty(),
            "{}: cannot read the methods of .route(\"{path}\"{methods})",
            file.display()
        );
        routes.extend(found.into_iter().map(|m| (m, path.clone())));
    }
    routes
}

/// The text up to the parenthesis that closes the one just opened.
fn balanced(text: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &text[..i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    panic!("an unclosed .route(")
}

/// `get(list).post(create).layer(...)` -> GET, POST.
fn method_calls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.char_indices() {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let word: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !text[i + word.len()..].starts_with('(') {
            continue;
        }
        assert!(
            word != "any",
            "a route for any method cannot be documented per method: {text}"
        );
        if METHODS.contains(&word.as_str()) {
            found.push(word.to_uppercase());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let routes = routes_in_source();
    let app = TestApp::spawn().await;
    let doc = Doc::fetch(&app).await;
    let documented = doc.operations();

    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but missing from /api/openapi.json (add #[utoipa::path] and list it in api/openapi.rs): \
         {undocumented:?}"
    );
    for (method, path) in &documented {
        assert!(
            routes.contains(&(method.clone(), path.clone())),
            "{method} {path} is documented but no .route(...) serves it"
        );
        // Without a token: a served route answers (401 for a secured one,
        // routing comes before auth); an unknown one would be 404.
        let url = doc.example_path(method, path);
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let response = app.request(method.clone(), &url, None, None).await;
        assert!(
            response.status != StatusCode::NOT_FOUND && response.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url} (documented as {path}) answered {}: {}",
            response.status,
            response.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_the_documented_schemas() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let doc = Doc::fetch(&app).await;
    let check = |method: &str, path: &str, response: &TestResponse| doc.check(method, path, response);

    check("GET", "/healthz", &app.get("/healthz", None).await);
    check("GET", "/readyz", &app.get("/readyz", None).await);

    // Auth.
    let account = json!({"email": "ada@example.com", "password": PASSWORD});
    let registered = app.post_json("/api/auth/register", None, &account).await;
    registered.expect(StatusCode::CREATED);
    check("POST", "/api/auth/register", &registered);
    let token = registered.body["token"].as_str().expect("a token").to_owned();
    let token = token.as_str();
    let taken = app.post_json("/api/auth/register", None, &account).await;
    taken.expect_error(StatusCode::CONFLICT, "email_taken");
    check("POST", "/api/auth/register", &taken);
    let bad_email = app
        .post_json(
            "/api/auth/register",
            None,
            &json!({"email": "nobody", "password": PASSWORD}),
        )
        .await;
    bad_email.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    check("POST", "/api/auth/register", &bad_email);
    let missing_field = app
        .post_json("/api/auth/login", None, &json!({"email": "ada@example.com"}))
        .await;
    missing_field.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    check("POST", "/api/auth/login", &missing_field);
    let not_json = app
        .send_raw(Method::POST, "/api/auth/login", None, Some("text/plain"), "{}")
        .await;
    not_json.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    check("POST", "/api/auth/login", &not_json);
    let login = app.login("ada@example.com", PASSWORD).await;
    login.expect(StatusCode::OK);
    check("POST", "/api/auth/login", &login);
    let wrong = app.login("ada@example.com", "not the password").await;
    wrong.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    check("POST", "/api/auth/login", &wrong);
    let me = app.get("/api/auth/me", Some(token)).await;
    me.expect(StatusCode::OK);
    check("GET", "/api/auth/me", &me);
    let anonymous = app.get("/api/auth/me", None).await;
    anonymous.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    check("GET", "/api/auth/me", &anonymous);
    let refreshed = app.post_empty("/api/auth/refresh", Some(token)).await;
    refreshed.expect(StatusCode::OK);
    check("POST", "/api/auth/refresh", &refreshed);

    // Documents, first, so that answers cite them.
    let text = b"Quarterly report\n\nLatency fell from 840 ms to 120 ms after the cache was added.\n";
    let uploaded = api.upload(token, "report.txt", text).await;
    uploaded.expect(StatusCode::CREATED);
    check("POST", "/api/documents", &uploaded);
    let doc_id = id(&uploaded.body).to_owned();
    let empty = api.upload(token, "empty.txt", b"").await;
    empty.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    check("POST", "/api/documents", &empty);
    let unknown_type = api.upload(token, "tool.exe", b"MZ").await;
    unknown_type.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    check("POST", "/api/documents", &unknown_type);
    api.wait_for_status(token, &doc_id, "ready").await;
    let fetched = api.get(&format!("/api/documents/{doc_id}"), token).await;
    fetched.expect(StatusCode::OK);
    check("GET", "/api/documents/{id}", &fetched);
    let listed = api.get("/api/documents", token).await;
    assert_eq!(
        listed.expect(StatusCode::OK)["items"].as_array().map(Vec::len),
        Some(1)
    );
    check("GET", "/api/documents", &listed);
    let jobs = api.get(&format!("/api/documents/{doc_id}/jobs"), token).await;
    let first_job = &jobs.expect(StatusCode::OK)["items"][0];
    assert!(
        first_job["attempts"][0].is_object(),
        "a finished job with its attempt: {first_job}"
    );
    check("GET", "/api/documents/{id}/jobs", &jobs);
    let file = api.get(&format!("/api/documents/{doc_id}/file"), token).await;
    assert_eq!(file.status, StatusCode::OK);
    check("GET", "/api/documents/{id}/file", &file);
    let missing = api
        .get("/api/documents/0190a0b0-0000-7000-8000-000000000000", token)
        .await;
    missing.expect_error(StatusCode::NOT_FOUND, "not_found");
    check("GET", "/api/documents/{id}", &missing);
    let bad_cursor = api.get("/api/documents?before=nonsense", token).await;
    bad_cursor.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    check("GET", "/api/documents", &bad_cursor);

    // Search.
    let found = api.get("/api/search?q=latency", token).await;
    assert!(
        found.expect(StatusCode::OK)["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "a hit to check: {}",
        found.text
    );
    check("GET", "/api/search", &found);
    let blank = api.get("/api/search?q=%20", token).await;
    blank.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    check("GET", "/api/search", &blank);

    // Conversations.
    let created = app.post_json("/api/conversations", Some(token), &json!({})).await;
    created.expect(StatusCode::CREATED);
    check("POST", "/api/conversations", &created);
    let conv = id(&created.body).to_owned();
    let conv_path = format!("/api/conversations/{conv}");
    let renamed = app
        .patch_json(&conv_path, Some(token), &json!({"title": "Latency"}))
        .await;
    renamed.expect(StatusCode::OK);
    check("PATCH", "/api/conversations/{id}", &renamed);
    let null_title = app
        .patch_json(&conv_path, Some(token), &json!({"title": null}))
        .await;
    null_title.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    check("PATCH", "/api/conversations/{id}", &null_title);
    let one = app.get(&conv_path, Some(token)).await;
    one.expect(StatusCode::OK);
    check("GET", "/api/conversations/{id}", &one);
    let conversations = app.get("/api/conversations", Some(token)).await;
    assert_eq!(
        conversations.expect(StatusCode::OK)["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    check("GET", "/api/conversations", &conversations);
    let bad_limit = app.get("/api/conversations?limit=0", Some(token)).await;
    bad_limit.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    check("GET", "/api/conversations", &bad_limit);

    // Messages: sync, async, list, cancel, retry.
    let messages_path = format!("{conv_path}/messages");
    let question = json!({"content": "How much did latency fall?"});
    let answered = app.post_json(&messages_path, Some(token), &question).await;
    let reply = answered.expect(StatusCode::OK).clone();
    assert!(
        reply["sources"].as_array().is_some_and(|s| !s.is_empty()),
        "an answer with sources to check: {reply}"
    );
    check("POST", "/api/conversations/{id}/messages", &answered);
    let accepted = app
        .request_with_headers(
            Method::POST,
            &messages_path,
            Some(token),
            Some(&question),
            &[("prefer", "respond-async"), ("idempotency-key", "k-1")],
        )
        .await;
    accepted.expect(StatusCode::ACCEPTED);
    check("POST", "/api/conversations/{id}/messages", &accepted);
    let reused_key = app
        .request_with_headers(
            Method::POST,
            &messages_path,
            Some(token),
            Some(&json!({"content": "Another question"})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    reused_key.expect_error(StatusCode::CONFLICT, "conflict");
    check("POST", "/api/conversations/{id}/messages", &reused_key);
    let blank_question = app
        .post_json(&messages_path, Some(token), &json!({"content": " "}))
        .await;
    blank_question.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    check("POST", "/api/conversations/{id}/messages", &blank_question);
    let reply_id = id(&reply).to_owned();
    let cancel_done = app
        .post_empty(&format!("/api/messages/{reply_id}/cancel"), Some(token))
        .await;
    cancel_done.expect_error(StatusCode::CONFLICT, "conflict");
    check("POST", "/api/messages/{id}/cancel", &cancel_done);
    let retried = app
        .post_empty(&format!("/api/messages/{reply_id}/retry"), Some(token))
        .await;
    retried.expect(StatusCode::OK);
    check("POST", "/api/messages/{id}/retry", &retried);
    let retried_async = app
        .request_with_headers(
            Method::POST,
            &format!("/api/messages/{reply_id}/retry"),
            Some(token),
            None,
            &[("prefer", "respond-async")],
        )
        .await;
    retried_async.expect(StatusCode::ACCEPTED);
    check("POST", "/api/messages/{id}/retry", &retried_async);
    // The reply may still be running (200, cancelled) or done (409).
    let cancelled = app
        .post_empty(&format!("/api/messages/{reply_id}/cancel"), Some(token))
        .await;
    check("POST", "/api/messages/{id}/cancel", &cancelled);
    let page = app.get(&messages_path, Some(token)).await;
    assert!(
        page.expect(StatusCode::OK)["items"]
            .as_array()
            .is_some_and(|i| i.len() >= 4)
    );
    check("GET", "/api/conversations/{id}/messages", &page);
    let both_cursors = app
        .get(&format!("{messages_path}?before=a&after=b"), Some(token))
        .await;
    both_cursors.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    check("GET", "/api/conversations/{id}/messages", &both_cursors);

    // The socket's ticket, and the socket refusing without credentials.
    let ticket = app.post_empty("/api/ws-ticket", Some(token)).await;
    ticket.expect(StatusCode::CREATED);
    check("POST", "/api/ws-ticket", &ticket);
    let no_credentials = app.get("/ws", None).await;
    no_credentials.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    check("GET", "/ws", &no_credentials);

    // Reprocess, then deletions.
    let reprocessed = api
        .post_empty(&format!("/api/documents/{doc_id}/reprocess"), token)
        .await;
    reprocessed.expect(StatusCode::ACCEPTED);
    check("POST", "/api/documents/{id}/reprocess", &reprocessed);
    let deleted_doc = api.delete(&format!("/api/documents/{doc_id}"), token).await;
    deleted_doc.expect(StatusCode::NO_CONTENT);
    check("DELETE", "/api/documents/{id}", &deleted_doc);
    let deleted_conv = app.delete(&conv_path, Some(token)).await;
    deleted_conv.expect(StatusCode::NO_CONTENT);
    check("DELETE", "/api/conversations/{id}", &deleted_conv);
    let gone = app.get(&conv_path, Some(token)).await;
    gone.expect_error(StatusCode::NOT_FOUND, "not_found");
    check("GET", "/api/conversations/{id}", &gone);

    // Password change, logout, account deletion.
    let changed = app
        .post_json(
            "/api/auth/password",
            Some(token),
            &json!({"current_password": PASSWORD, "new_password": "a new long password"}),
        )
        .await;
    changed.expect(StatusCode::NO_CONTENT);
    check("POST", "/api/auth/password", &changed);
    let token = app.login_token("ada@example.com", "a new long password").await;
    let logged_out = app.post_empty("/api/auth/logout", Some(&token)).await;
    logged_out.expect(StatusCode::NO_CONTENT);
    check("POST", "/api/auth/logout", &logged_out);
    let token = app.login_token("ada@example.com", "a new long password").await;
    let wrong_password = app
        .delete_json("/api/auth/me", Some(&token), &json!({"password": PASSWORD}))
        .await;
    wrong_password.expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    check("DELETE", "/api/auth/me", &wrong_password);
    let deleted = app
        .delete_json(
            "/api/auth/me",
            Some(&token),
            &json!({"password": "a new long password"}),
        )
        .await;
    deleted.expect(StatusCode::NO_CONTENT);
    check("DELETE", "/api/auth/me", &deleted);

    // The page and these docs.
    check("GET", "/", &app.get("/", None).await);
    check("GET", "/assets/{path}", &app.get("/assets/app.js", None).await);
    check(
        "GET",
        "/api/openapi.json",
        &app.get("/api/openapi.json", None).await,
    );
    check("GET", "/api/docs", &app.get("/api/docs", None).await);
    let no_file = app.get("/api/docs/nope.js", None).await;
    no_file.expect_error(StatusCode::NOT_FOUND, "not_found");
    check("GET", "/api/docs/{file}", &no_file);
}

#[tokio::test]
async fn a_schema_check_fails_for_a_renamed_or_missing_field() {
    // The check above must be able to fail: a Conversation with a renamed
    // field, or without one, does not pass.
    let app = TestApp::spawn().await;
    let doc = Doc::fetch(&app).await;
    let (token, _) = app.register("bo@example.com", PASSWORD).await;
    let created = app
        .post_json("/api/conversations", Some(&token), &json!({}))
        .await;
    doc.check("POST", "/api/conversations", &created);
    let tamperings: [fn(&mut Value); 3] = [
        |v: &mut Value| {
            let title = v["title"].take();
            v.as_object_mut().map(|o| o.remove("title"));
            v["name"] = title;
        },
        |v: &mut Value| {
            v.as_object_mut().map(|o| o.remove("updated_at"));
        },
        |v: &mut Value| v["created_at"] = json!(17),
    ];
    for tampered in tamperings {
        let mut body = created.body.clone();
        tampered(&mut body);
        let response = TestResponse {
            status: created.status,
            headers: created.headers.clone(),
            text: body.to_string(),
            body,
        };
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.check("POST", "/api/conversations", &response)
        }));
        assert!(failed.is_err(), "a tampered body passed: {}", response.text);
    }
}

#[tokio::test]
async fn the_docs_page_loads_only_its_own_files_under_a_strict_policy() {
    let app = TestApp::spawn().await;
    let page = app.get("/api/docs", None).await;
    assert_eq!(page.status, StatusCode::OK, "no token needed");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "the docs page's policy has {rule}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-"),
        "no inline script or style, no eval: {csp}"
    );

    // Every file the page names is on this origin, and is served.
    let urls = attribute_values(&page.text, "src=\"")
        .chain(attribute_values(&page.text, "href=\""))
        .collect::<Vec<_>>();
    assert!(urls.len() >= 4, "the page loads Swagger UI: {}", page.text);
    assert!(urls.contains(&"/api/docs/initializer.js"), "{urls:?}");
    for url in &urls {
        assert!(
            url.starts_with('/') && !url.starts_with("//"),
            "{url} is not on this origin"
        );
        let file = app.get(url, None).await;
        assert_eq!(file.status, StatusCode::OK, "{url}");
        assert!(!file.text.is_empty(), "{url} has content");
    }
    // No inline script: every <script> has a src.
    assert_eq!(
        page.text.matches("<script").count(),
        page.text.matches("<script src=").count(),
        "{}",
        page.text
    );
    assert!(!page.text.contains("style="), "no inline style");
    let initializer = app.get("/api/docs/initializer.js", None).await;
    assert!(
        initializer.text.contains("\"/api/openapi.json\""),
        "it loads this document"
    );

    // A file's ETag revalidates.
    let etag = initializer.header("etag").expect("an ETag").to_owned();
    let again = app
        .request_with_headers(
            Method::GET,
            "/api/docs/initializer.js",
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    // The API keeps its own policy.
    for path in ["/api/openapi.json", "/healthz", "/api/docs/swagger-ui.css"] {
        let response = app.get(path, None).await;
        assert_eq!(
            response.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(response.header("x-frame-options"), Some("DENY"), "{path}");
    }
}

/// The values of `name"..."` attributes in `html`.
fn attribute_values<'a>(html: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    html.split(name).skip(1).filter_map(|rest| rest.split('"').next())
}
