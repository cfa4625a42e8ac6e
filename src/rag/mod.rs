//! Answer providers: the `Answerer` trait, the built-in offline
//! `extractive` provider and the `openai` one. A provider is handed the
//! question, the passages of the chat's one retrieval step
//! (`chat::retrieval`) and the earlier turns; it searches nothing itself.

mod extractive;
mod openai;
mod prompt;
mod sse;

use std::future::Future;
use std::pin::Pin;

pub use extractive::Extractive;
pub use openai::OpenAi;

pub use crate::types::Source;
use crate::types::{Passage, Turn};

/// Where a streaming provider sends its text as it is produced. The pieces
/// must concatenate exactly to the final answer's content.
#[derive(Debug, Clone, Default)]
pub struct TokenSink(Option<tokio::sync::mpsc::UnboundedSender<String>>);

impl TokenSink {
    pub fn new(sender: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        TokenSink(Some(sender))
    }

    /// Sends a piece of the answer (ignored when nobody listens).
    pub fn push(&self, delta: &str) {
        if let Some(sender) = &self.0
            && !delta.is_empty()
        {
            let _ = sender.send(delta.to_owned());
        }
    }
}

/// What an answer provider is asked.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    /// The user's question (the content of the user message it answers).
    pub question: String,
    /// Recent finished turns before the question, oldest first (empty for
    /// providers that do not use them).
    pub history: Vec<Turn>,
    /// The question's passages, best first.
    pub passages: Vec<Passage>,
    /// Streaming providers push their text here as it comes.
    pub stream: TokenSink,
}

/// A finished answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub content: String,
    pub sources: Vec<Source>,
}

/// Why an answer could not be produced; the text is shown to the user as
/// the reply's `error`, so it must be actionable and leak no secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AnswerError(pub String);

pub type AnswerFuture = Pin<Box<dyn Future<Output = Result<Answer, AnswerError>> + Send + 'static>>;

/// An answer provider. A generation runs as its own task and is dropped when
/// the reply is cancelled, so implementations stop at their next `.await`.
pub trait Answerer: Send + Sync + 'static {
    fn answer(&self, request: AnswerRequest) -> AnswerFuture;

    /// Whether `answer` reads `AnswerRequest::history`: loading it is a
    /// read per turn, skipped for providers that answer from the question
    /// alone.
    fn uses_history(&self) -> bool {
        true
    }

    /// How many passages `answer` can use, best first: the retrieval step
    /// fetches no more (each costs a snippet, and a smaller top-k lets the
    /// search prove its result sooner).
    fn passages(&self) -> usize {
        8
    }
}

/// An answerer that never answers: the `test-hooks` build uses it to leave
/// a reply pending while a test kills the server.
#[cfg(feature = "test-hooks")]
pub struct Hang;

#[cfg(feature = "test-hooks")]
impl Answerer for Hang {
    fn answer(&self, _request: AnswerRequest) -> AnswerFuture {
        Box::pin(std::future::pending())
    }
}
