//! Authentication: Argon2id passwords, HS256 tokens, the `CurrentUser`
//! extractor, the client-IP rule and the failed-login limiter.

pub mod client_ip;
pub mod jwt;
pub mod limiter;
pub mod password;
pub mod secret;

pub mod current_user;

pub use client_ip::ClientIp;
pub use current_user::CurrentUser;
pub use jwt::JwtKeys;
pub use limiter::{LoginLimiter, RegistrationLimiter};
