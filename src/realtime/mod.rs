//! Realtime: the per-user hub (tokio broadcast), the control frames, and
//! one socket's session (hello, replay with `since`, live events,
//! heartbeats, the slow-reader bounds). `api::ws` admits a socket; the
//! session runs it.

pub mod frames;
pub mod hub;
pub mod session;

pub use hub::Hub;

/// Close codes of API.md.
pub mod close {
    pub const SHUTDOWN: u16 = 1012;
    pub const TOO_BIG: u16 = 1009;
    pub const IDLE: u16 = 1001;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const REVOKED: u16 = 4003;
    pub const TOO_SLOW: u16 = 4008;
}
