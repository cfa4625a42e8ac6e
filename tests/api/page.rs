//! docs/API.md "The web page": `GET /` and its assets, compiled into the
//! binary, with ETags and the page's Content-Security-Policy. (What the
//! page does in a browser is tested in `e2e/`, through `tests/web.rs`.)

use reqwest::StatusCode;

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_with_etags_and_a_strict_policy() {
    let app = TestApp::spawn().await;
    let page = app.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK, "no token needed for the page");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "the page's policy has {rule}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page.text.contains("/assets/app.js"), "the page loads its script");
    assert!(!page.text.contains("<script>"), "no inline script");

    let script = app.get("/assets/app.js", None).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let style = app.get("/assets/style.css", None).await;
    assert_eq!(style.header("content-type"), Some("text/css; charset=utf-8"));

    // Revalidation: the same ETag is 304 without a body; another is 200.
    let etag = script.header("etag").expect("an ETag").to_owned();
    let again = app
        .request_with_headers(
            reqwest::Method::GET,
            "/assets/app.js",
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    let other = app
        .request_with_headers(
            reqwest::Method::GET,
            "/assets/app.js",
            None,
            None,
            &[("if-none-match", "\"x\"")],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);

    for missing in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/index.html",
    ] {
        app.get(missing, None)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
}
