//! Single-use WebSocket tickets (`POST /api/ws-ticket`), so a browser never
//! puts its JWT in a URL. Kept in memory: they live for seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// Who a ticket was minted for, and how long the minting token lives.
#[derive(Debug, Clone)]
pub struct TicketGrant {
    pub user_id: String,
    pub token_version: i64,
    /// Expiry of the token that minted it (Unix seconds): the socket's life.
    pub token_expires_at: i64,
}

#[derive(Default)]
pub struct Tickets {
    issued: Mutex<HashMap<String, (TicketGrant, Instant)>>,
}

impl Tickets {
    /// Mints a ticket valid for `ttl`.
    pub fn issue(&self, grant: TicketGrant, ttl: Duration) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(ticket.clone(), (grant, now + ttl));
        ticket
    }

    /// The ticket's grant, leaving the ticket in place; `None` when unknown
    /// or expired.
    pub fn peek(&self, ticket: &str) -> Option<TicketGrant> {
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let (grant, expires) = issued.get(ticket)?;
        (*expires > Instant::now()).then(|| grant.clone())
    }

    /// Takes the ticket (it works once); `None` when unknown or expired.
    pub fn redeem(&self, ticket: &str) -> Option<TicketGrant> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let (grant, expires) = issued.remove(ticket)?;
        (expires > Instant::now()).then_some(grant)
    }
}
