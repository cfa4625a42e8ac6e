//! ragd: a self-hosted "chat with your documents" server. This crate is the
//! whole server; `main.rs` only parses the command line and calls [`run`].
//!
//! Layers, top to bottom (docs/ARCHITECTURE.md): the transport (`api`, the
//! HTTP routes, and `server`, the connections), the domain (`accounts`,
//! `chat`, `documents`, `worker`), then what the domain uses (`db`, the
//! storage; `realtime`, the fan-out; `rag`, the answer providers; `ingest`,
//! the parsers; `files`, `idempotency`), and at the bottom the words of the
//! contract (`types`). A module calls only modules below it.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod db;
pub mod documents;
pub mod error;
pub mod files;
pub mod idempotency;
pub mod ingest;
pub mod instruments;
pub mod names;
pub mod rag;
pub mod realtime;
pub mod reserve;
pub mod search;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod types;
mod web;
pub mod words;
pub mod worker;

mod app;
mod lock;

pub use app::{App, Reindexed, StartupError, admin, reindex, run};
/// The operator's commands on a data dir: `ragd backup`, `restore`, `check`.
pub mod ops {
    pub use crate::app::{BackedUp, Report, Restored, backup, check, restore};
}
pub use config::Config;
pub use state::{AppState, Hooks};
