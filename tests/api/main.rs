//! Integration tests of the HTTP and WebSocket contract (API.md), over real
//! HTTP and real WebSockets against a real server: in-process
//! (`helpers::TestApp`) or the built binary (`cli`, `crash`).

mod answerers;
mod chat;
mod doc_helpers;
mod helpers;
mod ws_helpers;

mod auth;
mod backup;
mod cli;
mod config_doc;
mod conversations;
#[cfg(feature = "test-hooks")]
mod crash;
mod disk_full;
mod documents;
mod errors;
mod hardening;
#[cfg(feature = "test-hooks")]
mod index_crash;
mod ingest;
mod llm;
mod messages;
mod metrics;
mod openapi;
mod page;
#[cfg(feature = "test-hooks")]
mod parse_crash;
mod poison;
mod realtime;
mod reindex;
mod replay;
mod restart;
mod search;
mod users;
#[cfg(feature = "test-hooks")]
mod worker;
