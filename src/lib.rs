//! ragd: a self-hosted "chat with your documents" server. This crate is the
//! whole server; `main.rs` only parses the command line and calls [`run`].

pub mod api;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod ingest;
pub mod rag;
pub mod realtime;
pub mod reserve;
pub mod server;
pub mod telemetry;
mod web;
pub mod worker;

mod app;
mod lock;

pub use app::{App, AppState, Hooks, StartupError, run};
pub use config::Config;
