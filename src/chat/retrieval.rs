//! The one retrieval step of a chat turn: the best passages of the user's
//! ready documents for the question, which every answer provider receives
//! (the extractive one quotes the first few, a model reads as many as fit
//! its context budget).

use crate::AppState;
use crate::db;
use crate::rag::AnswerError;
use crate::types::Passage;

/// Passages retrieved per question.
pub const PASSAGES: usize = 8;

/// The question's passages, best first.
pub async fn passages(state: &AppState, user_id: &str, question: &str) -> Result<Vec<Passage>, AnswerError> {
    let (user_id, question) = (user_id.to_owned(), question.to_owned());
    state
        .db
        .read(move |conn| db::chunks::search(conn, &user_id, &question, PASSAGES))
        .await
        .map_err(|e| AnswerError(format!("cannot search your documents right now ({e}); retry")))
}
