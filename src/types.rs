//! The words of the contract, as types: roles, statuses and event types
//! (serialized and stored as the strings docs/API.md names), and the
//! values that several layers pass around (a cited source, an earlier
//! turn). Every other module may use this one; it uses none of them.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// An enum stored and serialized as one of a fixed set of strings.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The contract's string for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {}: {text:?}", stringify!($name)).into())
                })
            }
        }
    };
}

text_enum! {
    /// Who wrote a message.
    Role {
        User = "user",
        Assistant = "assistant",
    }
}

text_enum! {
    /// Where a message is. User messages are always `done`.
    MessageStatus {
        Pending = "pending",
        Streaming = "streaming",
        Done = "done",
        Error = "error",
        Cancelled = "cancelled",
    }
}

impl MessageStatus {
    /// Still being generated (a spinner for the user).
    pub fn is_running(self) -> bool {
        matches!(self, MessageStatus::Pending | MessageStatus::Streaming)
    }
}

text_enum! {
    /// Where a document is; it follows its parse job.
    DocumentStatus {
        Queued = "queued",
        Parsing = "parsing",
        Ingesting = "ingesting",
        Ready = "ready",
        Failed = "failed",
    }
}

text_enum! {
    /// Where a parse job is. `Cancelled` is in the contract, but ragd never
    /// sets it (a deleted document takes its jobs with it).
    JobStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// The type of an event frame.
    EventType {
        ConversationCreated = "conversation.created",
        ConversationUpdated = "conversation.updated",
        ConversationDeleted = "conversation.deleted",
        MessageCreated = "message.created",
        MessageStatusUpdated = "message.status_updated",
        DocumentCreated = "document.created",
        DocumentStatusUpdated = "document.status_updated",
        DocumentDeleted = "document.deleted",
        JobStatusUpdated = "job.status_updated",
    }
}

/// A passage an answer cites: `[n]` in the content refers to `sources[n-1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    pub document_id: String,
    pub filename: String,
    /// Opaque.
    pub chunk_id: String,
    /// Plain text around the query's words, with `…` where it was cut.
    pub snippet: String,
    /// Higher is better; comparable within one query only.
    pub score: f64,
}

/// A passage retrieved for a question: a chunk of one of the user's
/// documents, as search ranked it (`score`: higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub document_id: String,
    pub filename: String,
    pub chunk_id: String,
    /// Plain text around the query's words.
    pub snippet: String,
    pub score: f64,
    /// The whole chunk.
    pub text: String,
    /// The title the chunk falls under, or empty.
    pub context: String,
}

impl Passage {
    /// The passage as an answer or a search result cites it.
    pub fn source(&self) -> Source {
        Source {
            document_id: self.document_id.clone(),
            filename: self.filename.clone(),
            chunk_id: self.chunk_id.clone(),
            snippet: self.snippet.clone(),
            score: self.score,
        }
    }
}

/// One chunk of a document's extracted text, as the parser hands it over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkText {
    pub text: String,
    /// Character offsets in the extracted text.
    pub start: i64,
    pub end: i64,
    /// Indexed with the text but not part of it: the document's title
    /// (`ingest::chunk`), or empty.
    #[serde(default)]
    pub context: String,
}

/// A stored chunk on its way into the full-text index (`search`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChunk {
    pub rowid: i64,
    /// The owner's key in the index (`user_indexes.n`).
    pub user_key: i64,
    pub context: String,
    pub text: String,
}

/// An earlier message of a conversation, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_round_trips_through_its_string() {
        for status in DocumentStatus::ALL {
            assert_eq!(DocumentStatus::parse(status.as_str()), Some(*status));
            let json = serde_json::to_string(status).expect("serializes");
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(EventType::JobStatusUpdated.as_str(), "job.status_updated");
        assert_eq!(
            serde_json::from_str::<MessageStatus>("\"streaming\"").ok(),
            Some(MessageStatus::Streaming)
        );
        assert_eq!(MessageStatus::parse("spinning"), None);
    }

    #[test]
    fn they_are_stored_as_their_strings() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        let text: String = conn
            .query_row("SELECT ?1", [JobStatus::Succeeded], |r| r.get(0))
            .expect("select");
        assert_eq!(text, "succeeded");
        let back: Role = conn
            .query_row("SELECT 'assistant'", [], |r| r.get(0))
            .expect("select");
        assert_eq!(back, Role::Assistant);
        let bad = conn.query_row("SELECT 'robot'", [], |r| r.get::<_, Role>(0));
        assert!(bad.is_err());
    }
}
