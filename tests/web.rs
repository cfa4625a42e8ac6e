//! The web page's end-to-end tests (`e2e/web.test.mjs`, headless Chromium
//! driven by playwright-core) as part of `cargo test`, against the ragd
//! binary of this very build. Screenshots land in `target/tmp/e2e/`.
//!
//! They need Node.js, `e2e/node_modules` (`npm ci --prefix e2e`) and
//! Debian's Chromium at `/usr/bin/chromium` (or `$CHROMIUM`). Without them
//! the test says what is missing and passes, so `cargo test` works on any
//! machine; with `RAGD_E2E=required` (as `.ci/run` sets, after installing
//! them) it fails instead.

use std::path::Path;
use std::process::Command;

#[test]
fn the_web_page_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let node = Command::new("node").arg("--version").output();
    let mut missing = Vec::new();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("Node.js (`node`)".to_owned());
    }
    if !e2e.join("node_modules/playwright-core").is_dir() {
        missing.push("e2e/node_modules (run `npm ci --prefix e2e`)".to_owned());
    }
    if !Path::new(&chromium).exists() {
        missing.push(format!(
            "Chromium at {chromium} (Debian: `apt-get install chromium`)"
        ));
    }
    if !missing.is_empty() {
        let what = missing.join(", ");
        assert!(
            std::env::var("RAGD_E2E").as_deref() != Ok("required"),
            "the browser tests are required (RAGD_E2E=required) but need: {what}"
        );
        eprintln!("skipping the browser tests; they need: {what}");
        return;
    }
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    let status = Command::new("node")
        .args(["--test", "--test-concurrency=1", "web.test.mjs"])
        .current_dir(&e2e)
        .env("RAGD_BIN", env!("CARGO_BIN_EXE_ragd"))
        .env("E2E_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "the browser tests failed (their output is above; screenshots in {})",
        artifacts.display()
    );
}
