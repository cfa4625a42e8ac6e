//! Fault injection for tests, compiled only with the `test-hooks` feature:
//! a file whose first line is `RAGD-TEST:<directive>` makes the parser
//! child misbehave on purpose. Release builds have none of this.
//!
//! Directives: `fail-transient-until:<n>` (attempts before n fail
//! transiently), `fail-transient`, `fail-permanent`, `sleep:<ms>` (then
//! parse the rest), `panic`, `abort`, `loop`, `alloc`.
//!
//! `RAGD_TEST_INDEX=stall-before-commit|stall-after-commit` makes the
//! indexer stop for good at that point of its first step that holds
//! chunks, so that a crash test can kill the process there.

use crate::ingest::ParseError;

pub fn apply(bytes: Vec<u8>, attempt: i64) -> Result<Vec<u8>, ParseError> {
    let Some(rest) = bytes.strip_prefix(b"RAGD-TEST:") else {
        return Ok(bytes);
    };
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let directive = String::from_utf8_lossy(&rest[..end]).trim().to_owned();
    let body = rest.get(end + 1..).unwrap_or_default().to_vec();
    let (name, arg) = directive.split_once(':').unwrap_or((directive.as_str(), ""));
    match name {
        "fail-transient-until" if attempt < arg.parse().unwrap_or(i64::MAX) => Err(ParseError::Transient(
            format!("test: transient failure on attempt {attempt}"),
        )),
        "fail-transient" => Err(ParseError::Transient("test: transient failure".into())),
        "fail-permanent" => Err(ParseError::Permanent("corrupt: test: permanent failure".into())),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(arg.parse().unwrap_or(1000)));
            Ok(body)
        }
        "panic" => panic!("test: parser panic"),
        "abort" => std::process::abort(),
        "loop" => loop {
            std::hint::spin_loop();
        },
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => Ok(body),
    }
}

/// Where the indexer may be told to stall (`RAGD_TEST_INDEX`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IndexPoint {
    /// The chunks are staged in SQLite; the index has not committed them.
    BeforeCommit,
    /// The index committed them; their documents are not `ready` yet.
    AfterCommit,
}

/// Never returns when `RAGD_TEST_INDEX` names `point`.
pub async fn index_stall(point: IndexPoint) {
    let wanted = match std::env::var("RAGD_TEST_INDEX").as_deref() {
        Ok("stall-before-commit") => IndexPoint::BeforeCommit,
        Ok("stall-after-commit") => IndexPoint::AfterCommit,
        _ => return,
    };
    if wanted == point {
        tracing::warn!(?point, "test hook: the indexer stalls");
        std::future::pending::<()>().await;
    }
}
