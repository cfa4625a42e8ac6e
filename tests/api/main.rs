//! Integration tests of the HTTP and WebSocket contract (API.md), over real
//! HTTP and real WebSockets against a real server: in-process
//! (`helpers::TestApp`) or the built binary (`cli`, `crash`).

mod answerers;
mod chat;
mod helpers;
mod ws_helpers;

mod auth;
mod cli;
mod conversations;
#[cfg(feature = "test-hooks")]
mod crash;
mod errors;
mod messages;
mod realtime;
mod replay;
mod restart;
