//! Conversations: create (titled "New chat" by default), rename, delete
//! (which cancels a reply being generated in it). Titles lose the
//! characters that hide text (`names`) and must then be 1..=200 long.

use crate::AppState;
use crate::db::{self, conversations::Conversation};
use crate::error::ApiError;
use crate::names;

const DEFAULT_TITLE: &str = "New chat";
const MAX_TITLE_CHARS: usize = 200;

fn valid_title(title: Option<&str>) -> Result<String, ApiError> {
    let title = names::clean_label(title.unwrap_or_default());
    let n = title.chars().count();
    if n == 0 || n > MAX_TITLE_CHARS {
        return Err(ApiError::Validation(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(title)
}

/// A new conversation; without a title, "New chat".
pub async fn create(
    state: &AppState,
    user_id: &str,
    title: Option<String>,
) -> Result<Conversation, ApiError> {
    let title = match title {
        None => DEFAULT_TITLE.to_owned(),
        Some(title) => valid_title(Some(&title))?,
    };
    let (user_id, now) = (user_id.to_owned(), db::now_ms());
    Ok(state
        .db
        .write(move |tx| db::conversations::create(tx, &user_id, &title, now))
        .await?)
}

/// Renames a conversation (a null or blank title is 422).
pub async fn rename(
    state: &AppState,
    user_id: &str,
    id: &str,
    title: Option<String>,
) -> Result<Conversation, ApiError> {
    let title = valid_title(title.as_deref())?;
    let (user_id, id, now) = (user_id.to_owned(), id.to_owned(), db::now_ms());
    Ok(state
        .db
        .write(move |tx| db::conversations::rename(tx, &user_id, &id, &title, now))
        .await?)
}

/// Deletes a conversation with its messages (their events become
/// tombstones); a reply being generated in it is cancelled.
pub async fn delete(state: &AppState, user_id: &str, id: &str) -> Result<(), ApiError> {
    let (user_id, conversation_id, now) = (user_id.to_owned(), id.to_owned(), db::now_ms());
    state
        .write_to_free_space(move |tx| db::conversations::delete(tx, &user_id, &conversation_id, now))
        .await?;
    // Its row is gone already: the generation can store nothing.
    state.generations.cancel_conversation(id);
    Ok(())
}
