//! `Hub`: one tokio broadcast sender per connected user. A frame is
//! serialized once and shared by every socket of that user; users without a
//! socket cost nothing (publishing to them is a map miss). The hub also
//! counts each user's sockets, for the per-user limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use crate::db::events::EventFrame;

/// What a socket is told.
#[derive(Debug, Clone)]
pub enum Push {
    /// A committed event: its id and its JSON text.
    Event { id: i64, text: Utf8Bytes },
    /// A control frame (no id, never stored), e.g. `message.delta`.
    Control { text: Utf8Bytes },
    /// Close every socket of the user with this code (4003: revoked).
    Close { code: u16, reason: &'static str },
}

/// Frames a socket may fall behind in memory before it reads the rest from
/// the stored log (it is never silently skipped).
const CHANNEL_CAPACITY: usize = 256;

struct UserEntry {
    sender: broadcast::Sender<Push>,
    sockets: usize,
}

#[derive(Clone)]
pub struct Hub {
    users: Arc<Mutex<HashMap<String, UserEntry>>>,
    /// Counts every published event (`ragd_events_published_total`).
    published: metrics::Counter,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(metrics::Counter::noop())
    }
}

/// A socket's place in the hub; dropping it frees the slot.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Push>,
    _slot: Slot,
}

struct Slot {
    hub: Hub,
    user_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut users = self.hub.lock();
        if let Some(entry) = users.get_mut(&self.user_id) {
            entry.sockets = entry.sockets.saturating_sub(1);
            if entry.sockets == 0 {
                users.remove(&self.user_id);
            }
        }
    }
}

impl Hub {
    /// A hub that counts the events it publishes with `published`.
    pub fn new(published: metrics::Counter) -> Hub {
        Hub {
            users: Arc::default(),
            published,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserEntry>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes a new socket of `user_id`, or `None` when the user already
    /// has `max` sockets.
    pub fn subscribe(&self, user_id: &str, max: usize) -> Option<Subscription> {
        let mut users = self.lock();
        let entry = users.entry(user_id.to_owned()).or_insert_with(|| UserEntry {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            sockets: 0,
        });
        if entry.sockets >= max {
            return None;
        }
        entry.sockets += 1;
        let receiver = entry.sender.subscribe();
        drop(users);
        Some(Subscription {
            receiver,
            _slot: Slot {
                hub: self.clone(),
                user_id: user_id.to_owned(),
            },
        })
    }

    /// Publishes committed events, in order, to their users' sockets.
    pub fn publish(&self, events: Vec<EventFrame>) {
        self.published.increment(events.len() as u64);
        let users = self.lock();
        for event in events {
            if let Some(entry) = users.get(&event.user_id) {
                // No receiver left is fine: the event is in the stored log.
                let _ = entry.sender.send(Push::Event {
                    id: event.id,
                    text: event.text.into(),
                });
            }
        }
    }

    /// Sends a control frame to the user's sockets (lost for sockets that
    /// are not connected: control frames are never replayed).
    pub fn push_control(&self, user_id: &str, text: Utf8Bytes) {
        if let Some(entry) = self.lock().get(user_id) {
            let _ = entry.sender.send(Push::Control { text });
        }
    }

    /// Closes every socket of the user (after logout, password change or
    /// account deletion).
    pub fn close_user(&self, user_id: &str, code: u16, reason: &'static str) {
        if let Some(entry) = self.lock().get(user_id) {
            let _ = entry.sender.send(Push::Close { code, reason });
        }
    }
}
