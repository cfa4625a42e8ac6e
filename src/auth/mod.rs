//! Authentication: Argon2id passwords, HS256 tokens, the `CurrentUser`
//! extractor and the credentials of REST and sockets, single-use socket
//! tickets, the client-IP rule and the login and registration limiters.

pub mod client_ip;
pub mod credentials;
pub mod jwt;
pub mod limiter;
pub mod password;
pub mod secret;
pub mod tickets;

pub mod current_user;

pub use client_ip::ClientIp;
pub use current_user::CurrentUser;
pub use jwt::JwtKeys;
pub use limiter::{LoginLimiter, RegistrationLimiter};
pub use tickets::Tickets;
