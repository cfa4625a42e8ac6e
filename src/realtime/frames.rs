//! Control frames (docs/API.md "Frames"): no `id`, never stored or
//! replayed, `{"type","data"}` (`pong` is exactly `{"type":"pong"}`).
//! Event frames are built once by the outbox (`db::events`).

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum Control<'a> {
    /// Always the first frame of a socket.
    #[serde(rename = "hello")]
    Hello {
        user_id: &'a str,
        epoch: &'a str,
        head: i64,
        heartbeat_ms: u64,
    },
    /// The client must refetch over HTTP; live events follow after `head`.
    #[serde(rename = "resync_required")]
    ResyncRequired { oldest_id: Option<i64>, head: i64 },
    /// Every `--heartbeat`, with the id of the last event sent.
    #[serde(rename = "heartbeat")]
    Heartbeat { head: i64 },
    /// Streamed text of a reply; `offset` is the length in Unicode
    /// characters of the content before it.
    #[serde(rename = "message.delta")]
    Delta {
        message_id: &'a str,
        seq: u64,
        offset: usize,
        delta: &'a str,
    },
    /// The answer to a client's `{"type":"ping"}`.
    #[serde(rename = "pong")]
    Pong,
}

impl Control<'_> {
    /// The frame's JSON text.
    pub fn text(&self) -> Utf8Bytes {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

/// A `message.delta` frame's text.
pub fn delta(message_id: &str, seq: u64, offset: usize, delta: &str) -> Utf8Bytes {
    Control::Delta {
        message_id,
        seq,
        offset,
        delta,
    }
    .text()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parsed(control: &Control<'_>) -> Value {
        serde_json::from_str(control.text().as_str()).expect("JSON")
    }

    #[test]
    fn frames_have_the_contracts_shape() {
        assert_eq!(control_text(&Control::Pong), r#"{"type":"pong"}"#);
        assert_eq!(
            parsed(&Control::Hello {
                user_id: "u",
                epoch: "e",
                head: 4,
                heartbeat_ms: 25_000
            }),
            json!({"type": "hello", "data": {"user_id": "u", "epoch": "e", "head": 4, "heartbeat_ms": 25000}})
        );
        assert_eq!(
            parsed(&Control::ResyncRequired {
                oldest_id: None,
                head: 9
            }),
            json!({"type": "resync_required", "data": {"oldest_id": null, "head": 9}})
        );
        assert_eq!(
            serde_json::from_str::<Value>(delta("m", 2, 7, "é!").as_str()).expect("JSON"),
            json!({"type": "message.delta", "data": {"message_id": "m", "seq": 2, "offset": 7, "delta": "é!"}})
        );
    }

    fn control_text(control: &Control<'_>) -> String {
        control.text().as_str().to_owned()
    }
}
