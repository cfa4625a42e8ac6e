//! `ragd parse`: the child process that parses untrusted files. It starts
//! a thread that watches for the server's death, limits itself (address
//! space, CPU time, no core dumps) before it reads anything, then answers
//! requests from stdin until stdin closes, so it never outlives the server.
//! A panic in a parser is caught and reported as a corrupt file; an abort,
//! an allocation failure or a CPU-limit signal kills only this process.

use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use rlimit::Resource;

use super::protocol::{ParseRequest, ParseResponse};
use crate::ingest::{self, Kind, ParseError};

/// Limits the child applies to itself.
#[derive(Debug, Clone, Copy)]
pub struct ChildLimits {
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
    /// The server that started this process (it passes its pid: by the
    /// time the child looks, the server may already be gone).
    pub parent_pid: Option<u32>,
}

pub fn run(limits: ChildLimits) -> ExitCode {
    // The watcher first: its thread needs a stack, which a tight
    // RLIMIT_AS could refuse.
    watch_parent(limits.parent_pid);
    if let Err(err) = apply(limits) {
        eprintln!("ragd parse: cannot set resource limits: {err}");
        return ExitCode::FAILURE;
    }
    // The parent logs what matters; a parser's panic message would only be
    // noise on the server's stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let response = match serde_json::from_str::<ParseRequest>(&line) {
            Ok(request) => handle(&request),
            Err(err) => ParseResponse::Failed(ParseError::Permanent(format!("bad parse request: {err}"))),
        };
        let written = serde_json::to_writer(&mut stdout, &response)
            .map_err(std::io::Error::other)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Exits when the server that started this process is gone, even in the
/// middle of a file: a parser stuck in a loop never reads stdin again, so
/// stdin closing alone cannot stop it.
fn watch_parent(expected: Option<u32>) {
    let parent = expected.unwrap_or_else(std::os::unix::process::parent_id);
    let _ = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(3);
                }
            }
        });
}

fn apply(limits: ChildLimits) -> std::io::Result<()> {
    rlimit::setrlimit(Resource::AS, limits.memory_bytes, limits.memory_bytes)?;
    rlimit::setrlimit(
        Resource::CPU,
        limits.cpu_seconds,
        limits.cpu_seconds.saturating_add(5),
    )?;
    rlimit::setrlimit(Resource::CORE, 0, 0)?;
    Ok(())
}

fn handle(request: &ParseRequest) -> ParseResponse {
    let Some(kind) = Kind::parse(&request.kind) else {
        return ParseResponse::Failed(ParseError::Permanent(format!(
            "unsupported kind {}",
            request.kind
        )));
    };
    let bytes = match std::fs::read(&request.path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return ParseResponse::Failed(ParseError::Permanent("missing: the stored file is gone".into()));
        }
        Err(err) => {
            return ParseResponse::Failed(ParseError::Transient(format!(
                "cannot read the stored file: {err}"
            )));
        }
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        #[cfg(feature = "test-hooks")]
        let bytes = super::test_hooks::apply(bytes, request.attempt)?;
        ingest::extract(kind, &bytes, request.max_text_bytes)
            .map(|text| ingest::chunk(&text, request.chunk_size, request.chunk_overlap))
    }));
    match parsed {
        Ok(Ok(chunks)) => ParseResponse::Chunks(chunks),
        Ok(Err(failure)) => ParseResponse::Failed(failure),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            ParseResponse::Failed(ParseError::Permanent(format!(
                "corrupt: the parser failed on this file ({detail})"
            )))
        }
    }
}
