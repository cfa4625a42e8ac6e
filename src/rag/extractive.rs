//! The built-in offline answerer: composes the answer from the best passages
//! of the user's documents, with numbered citations. Documents arrive with
//! the ingest worker; until then it says that nothing relevant was found.

use super::{Answer, AnswerFuture, AnswerRequest, Answerer};

/// Deterministic, offline, no model needed.
#[derive(Debug, Default, Clone)]
pub struct Extractive;

/// The reply when no passage matches the question.
pub const NO_MATCH: &str = "I could not find anything about this in your documents. Upload documents that cover it, or rephrase the question.";

impl Answerer for Extractive {
    fn answer(&self, _request: AnswerRequest) -> AnswerFuture {
        Box::pin(async {
            Ok(Answer {
                content: NO_MATCH.to_owned(),
                sources: Vec::new(),
            })
        })
    }
}
