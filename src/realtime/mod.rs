//! Realtime: the per-user hub, WebSocket tickets and the `/ws` endpoint
//! (hello, replay with `since`, live events, heartbeats, limits).

pub mod frames;
pub mod hub;
pub mod socket;
pub mod tickets;

pub use hub::Hub;
pub use tickets::Tickets;

/// Close codes of API.md.
pub mod close {
    pub const SHUTDOWN: u16 = 1012;
    pub const TOO_BIG: u16 = 1009;
    pub const IDLE: u16 = 1001;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const REVOKED: u16 = 4003;
    pub const TOO_SLOW: u16 = 4008;
}
