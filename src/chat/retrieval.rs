//! The one retrieval step of a chat turn: the best passages of the user's
//! ready documents for the question, as many as the answer provider can
//! use (the extractive one quotes 4, a model reads up to 8, as many as fit
//! its context budget).

use crate::AppState;
use crate::rag::AnswerError;
use crate::types::Passage;

/// The question's best `count` passages, best first (`count` is what the
/// answer provider can use: `Answerer::passages`).
pub async fn passages(
    state: &AppState,
    user_id: &str,
    question: &str,
    count: usize,
) -> Result<Vec<Passage>, AnswerError> {
    crate::documents::search(state, user_id, question, count)
        .await
        .map_err(|e| AnswerError(format!("cannot search your documents right now ({e}); retry")))
}
