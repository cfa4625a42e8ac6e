//! Integration tests of the HTTP contract (API.md), over real HTTP against a
//! real server: in-process (`helpers::TestApp`) or the built binary (`cli`).

mod helpers;

mod auth;
mod cli;
mod conversations;
mod errors;
mod restart;
