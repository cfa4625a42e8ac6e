//! The session over an in-memory transport, against a real database and
//! hub: replay after `since`, live events without gap or duplicate, a
//! socket that falls behind the channel catching up from the log, the lag
//! bound, and the resync answers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

use super::Peer;
use super::{Env, run};
use crate::config::SyncMode;
use crate::db::{self, Db, events::Subject};
use crate::realtime::Hub;
use crate::types::EventType;

/// The client's end: frames the session sent, and a way to talk to it.
struct Client {
    frames: mpsc::Receiver<Message>,
    _inbound: mpsc::UnboundedSender<Result<Message, axum::Error>>,
}

/// The session's end: a bounded outbound queue (a client that does not
/// read makes writes wait, as a full socket would).
struct Transport {
    outbound: PollSender<Message>,
    inbound: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
}

impl Stream for Transport {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx)
    }
}

impl Sink<Message> for Transport {
    type Error = axum::Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.outbound)
            .poll_ready(cx)
            .map_err(axum::Error::new)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), axum::Error> {
        Pin::new(&mut self.outbound)
            .start_send(item)
            .map_err(axum::Error::new)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.outbound)
            .poll_flush(cx)
            .map_err(axum::Error::new)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.outbound)
            .poll_close(cx)
            .map_err(axum::Error::new)
    }
}

fn transport(queue: usize) -> (Transport, Client) {
    let (out_tx, out_rx) = mpsc::channel(queue);
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    (
        Transport {
            outbound: PollSender::new(out_tx),
            inbound: in_rx,
        },
        Client {
            frames: out_rx,
            _inbound: in_tx,
        },
    )
}

/// A migrated database whose commits publish to `hub`, with one user.
struct World {
    _dir: tempfile::TempDir,
    db: Db,
    hub: Hub,
    user: String,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = Hub::default();
    let publisher = hub.clone();
    let path = dir.path().join("ragd.db");
    let db = tokio::task::spawn_blocking(move || {
        Db::open(
            &path,
            SyncMode::Normal,
            Arc::new(move |events| publisher.publish(events)),
        )
    })
    .await
    .expect("open task")
    .expect("open");
    let user = db::new_id();
    let id = user.clone();
    db.write(move |tx| {
        tx.execute(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?1, 'x', 0)",
            [&id],
        )?;
        Ok(())
    })
    .await
    .expect("user");
    World {
        _dir: dir,
        db,
        hub,
        user,
    }
}

impl World {
    /// Commits `n` events of the user, one write each.
    async fn emit(&self, n: usize) {
        for i in 0..n {
            let user = self.user.clone();
            self.db
                .write(move |tx| {
                    let subject = Subject {
                        id: "c",
                        scope: Some("c"),
                    };
                    tx.emit(
                        &user,
                        EventType::ConversationUpdated,
                        subject,
                        &json!({"n": i}),
                        db::now_ms(),
                    )
                })
                .await
                .expect("emit");
        }
    }

    fn env(&self, max_lag: i64) -> Env {
        Env {
            db: self.db.clone(),
            heartbeat: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_lag,
            replay_pause: None,
            stopping: CancellationToken::new(),
            metrics: crate::instruments::Sockets::noop(),
        }
    }

    /// Starts a session with `since`/`epoch`; returns the client's end.
    fn open(&self, queue: usize, max_lag: i64, since: Option<i64>, epoch: Option<&str>) -> Client {
        let (transport, client) = transport(queue);
        let subscription = self.hub.subscribe(&self.user, 16).expect("a slot");
        let peer = Peer {
            user_id: self.user.clone(),
            token_version: 0,
            expires_at: i64::MAX / 2000,
        };
        tokio::spawn(run(
            self.env(max_lag),
            peer,
            transport,
            subscription,
            since,
            epoch.map(str::to_owned),
        ));
        client
    }
}

impl Client {
    /// The next frame, parsed (a close frame as `{"close": code}`).
    async fn next(&mut self) -> Value {
        let frame = tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .expect("a frame within 10 s")
            .expect("the session is still there");
        match frame {
            Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Close(Some(close)) => json!({"close": close.code}),
            other => json!({"other": format!("{other:?}")}),
        }
    }

    /// The ids of the next `n` event frames (control frames skipped).
    async fn ids(&mut self, n: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let frame = self.next().await;
            assert!(frame.get("close").is_none(), "closed early: {frame}");
            if let Some(id) = frame["id"].as_i64() {
                ids.push(id);
            }
        }
        ids
    }
}

#[tokio::test]
async fn a_replay_then_live_events_arrive_each_once_in_order() {
    let w = world().await;
    w.emit(5).await;
    let mut client = w.open(64, 5_000, Some(2), None);
    let hello = client.next().await;
    assert_eq!(hello["type"], json!("hello"));
    assert_eq!(hello["data"]["head"], json!(5));
    assert_eq!(hello["data"]["epoch"], json!(w.db.epoch()));
    w.emit(3).await;
    assert_eq!(client.ids(6).await, [3, 4, 5, 6, 7, 8]);
}

#[tokio::test]
async fn a_socket_that_falls_behind_the_channel_catches_up_from_the_log() {
    let w = world().await;
    // The client reads nothing while 600 events commit: the session's
    // writes wait, the channel (256 frames) overflows.
    let mut client = w.open(1, 5_000, None, None);
    let hello = client.next().await;
    assert_eq!(hello["data"]["head"], json!(0));
    w.emit(600).await;
    let ids = client.ids(600).await;
    assert_eq!(ids, (1..=600).collect::<Vec<_>>(), "every id once, in order");
}

#[tokio::test]
async fn a_socket_further_behind_than_the_lag_bound_is_closed_with_4008() {
    let w = world().await;
    let mut client = w.open(1, 100, None, None);
    assert_eq!(client.next().await["type"], json!("hello"));
    w.emit(600).await;
    let mut closed = None;
    for _ in 0..1_000 {
        let frame = client.next().await;
        if let Some(code) = frame.get("close") {
            closed = Some(code.clone());
            break;
        }
    }
    assert_eq!(closed, Some(json!(4008)));
}

#[tokio::test]
async fn another_epoch_or_a_since_past_head_asks_for_a_resync() {
    let w = world().await;
    w.emit(4).await;
    let mut head = 4;
    for (since, epoch) in [(Some(2), Some("another-database")), (Some(9), None)] {
        let mut client = w.open(64, 5_000, since, epoch);
        assert_eq!(client.next().await["type"], json!("hello"));
        let resync = client.next().await;
        assert_eq!(
            resync,
            json!({"type": "resync_required", "data": {"oldest_id": 1, "head": head}}),
            "since {since:?}, epoch {epoch:?}"
        );
        // Live events follow.
        w.emit(1).await;
        head += 1;
        assert_eq!(client.ids(1).await, [head]);
    }
}
