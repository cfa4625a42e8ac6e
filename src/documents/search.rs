//! Search over a user's documents, the one retrieval step of chat and
//! `GET /api/search`: the index ranks the user's chunks (`crate::search`),
//! SQLite turns the hits into passages and drops any that are not live
//! (`db::chunks::passages`).

use crate::AppState;
use crate::db;
use crate::search::analyzer;
use crate::types::Passage;

/// Extra hits asked of the index beyond `limit`, for those that turn out
/// not live (replaced or deleted chunks whose index entries are not gone
/// yet: rare, and only for moments).
const SLACK: usize = 8;
/// Hits asked of the index at most, when many are not live.
const MAX_HITS: usize = 1_000;

/// The user's best `limit` passages for plain text `text`, best first.
pub async fn search(state: &AppState, user_id: &str, text: &str, limit: usize) -> db::Result<Vec<Passage>> {
    let words = analyzer::query_words(text);
    if words.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let (index, user_id) = (state.search.clone(), user_id.to_owned());
    state
        .db
        .read(move |conn| {
            let Some(key) = db::chunks::user_key(conn, &user_id)? else {
                return Ok(Vec::new());
            };
            let terms = analyzer::query_terms(key, &words);
            let mut asked = limit + SLACK;
            loop {
                let hits = index
                    .search(key, &terms, asked)
                    .map_err(|e| db::Error::Other(e.to_string()))?;
                let passages = db::chunks::passages(conn, &user_id, &hits, &words, limit)?;
                if passages.len() == limit || hits.len() < asked || asked >= MAX_HITS {
                    return Ok(passages);
                }
                asked = (asked * 4).min(MAX_HITS);
            }
        })
        .await
}
