//! Documents, as docs/API.md "Documents" defines them: each user-visible
//! operation (upload, reprocess, delete, read the jobs, open the original)
//! is one function here. An upload's bytes arrive through `files`; its
//! row, its parse job and their events commit together (`Idempotency-Key`
//! through `idempotency`); the worker takes it from there. Searching them
//! is `search`.

mod search;

pub use search::search;

use serde_json::json;

use crate::AppState;
use crate::db::documents::{self, Document, NewDocument};
use crate::db::{self, jobs, jobs::Job};
use crate::error::ApiError;
use crate::files::Incoming;
use crate::idempotency::{self, Keyed, Once};
use crate::ingest::Kind;
use crate::types::DocumentStatus;

/// An upload, received whole and fsynced in a temporary file.
pub struct Received {
    pub incoming: Incoming,
    /// The client's name, cleaned (`names::sanitize_filename`).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// The first bytes, to check the type against.
    pub head: Vec<u8>,
}

/// Stores an upload as a new document with its parse job: checks that it
/// is not empty (422) and of a supported kind whose bytes match (415),
/// moves it into place, commits; a repeat of a keyed upload answers with
/// the document the first one created and keeps nothing.
pub async fn upload(
    state: &AppState,
    user_id: &str,
    key: Option<String>,
    received: Received,
) -> Result<Document, ApiError> {
    if received.size == 0 {
        return Err(ApiError::Validation("the file is empty".into()));
    }
    let kind = Kind::from_filename(&received.filename).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "unsupported file type: upload .txt, .md, .html, .pdf, .docx, .csv or .json".into(),
        )
    })?;
    if !kind.matches(&received.head) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the file's contents are not a valid .{} file",
            kind.as_str()
        )));
    }
    let id = db::new_id();
    let kept = state
        .files
        .keep(received.incoming, &id)
        .await
        .map_err(crate::error::io_error)?;
    // "The same upload" is the same name and the same bytes.
    let print = format!("{}\n{}", received.filename, received.sha256);
    let keyed = key.map(|key| Keyed::new(key, "POST", "/api/documents".into(), print.as_bytes()));
    let new = NewDocument {
        id,
        user_id: user_id.to_owned(),
        filename: received.filename,
        content_type: kind.content_type().to_owned(),
        kind: kind.as_str().to_owned(),
        size_bytes: i64::try_from(received.size).unwrap_or(i64::MAX),
        sha256: received.sha256,
    };
    let (now, retries) = (db::now_ms(), state.config.job_max_retries);
    // In a task of its own: a client that goes away while the write waits
    // for the writer drops the request, and with it the file, while the
    // queued write still commits the row. Here the file is kept exactly
    // when the row commits.
    let task_state = state.clone();
    let stored = tokio::spawn(async move {
        let stored = task_state
            .db
            .write(move |tx| {
                idempotency::once(tx, &new.user_id, keyed.as_ref(), 201, now, |tx| {
                    // The document is the cause of its job: its event first.
                    let doc = documents::insert(tx, &new, now)?;
                    jobs::enqueue(tx, &new.user_id, &new.id, retries, now)?;
                    let response = json!({ "document": doc.id }).to_string();
                    Ok((doc, response))
                })
            })
            .await;
        if let Ok(Once::First(_)) = &stored {
            kept.committed();
            task_state.worker.job_queued();
        }
        stored
    })
    .await
    .map_err(ApiError::internal)??;
    match stored {
        Once::First(doc) => Ok(doc),
        // The first upload's document; this copy of the bytes goes.
        Once::Repeat(recorded) => {
            let first: serde_json::Value =
                serde_json::from_str(&recorded.response).map_err(ApiError::internal)?;
            let (doc_id, user_id) = (
                first["document"].as_str().unwrap_or_default().to_owned(),
                user_id.to_owned(),
            );
            Ok(state
                .db
                .read(move |conn| documents::get(conn, &user_id, &doc_id))
                .await?)
        }
    }
}

/// Queues a new parse job (409 while one is queued or running). The old
/// chunks stay searchable until the new ones replace them.
pub async fn reprocess(state: &AppState, user_id: &str, id: &str) -> Result<Job, ApiError> {
    let (user_id, id) = (user_id.to_owned(), id.to_owned());
    let (now, retries) = (db::now_ms(), state.config.job_max_retries);
    let job = state
        .db
        .write(move |tx| {
            documents::get(tx, &user_id, &id)?;
            if jobs::busy(tx, &id)? {
                return Err(db::Error::Conflict(
                    "the document already has a parse job queued or running",
                ));
            }
            // The new job is the cause of the document's `queued`: its event first.
            let job = jobs::enqueue(tx, &user_id, &id, retries, now)?;
            documents::set_status(tx, &user_id, &id, DocumentStatus::Queued, None, now)?;
            Ok(job)
        })
        .await?;
    state.worker.job_queued();
    Ok(job)
}

/// Deletes a document: its row, jobs and chunks (their events become
/// tombstones), a parser working on it, and its file.
pub async fn delete(state: &AppState, user_id: &str, id: &str) -> Result<(), ApiError> {
    let (user, document_id, now) = (user_id.to_owned(), id.to_owned(), db::now_ms());
    state
        .write_to_free_space(move |tx| documents::delete(tx, &user, &document_id, now))
        .await?;
    state.worker.cancel_document(id);
    state.worker.indexing.changed();
    state.files.remove(id).await;
    Ok(())
}

/// A document's jobs, newest first, with their attempts.
pub async fn jobs(state: &AppState, user_id: &str, id: &str) -> Result<Vec<Job>, ApiError> {
    let (user_id, id) = (user_id.to_owned(), id.to_owned());
    Ok(state
        .db
        .read(move |conn| {
            documents::get(conn, &user_id, &id)?;
            jobs::for_document(conn, &id)
        })
        .await?)
}

/// The document and its original, opened for reading.
pub async fn open(
    state: &AppState,
    user_id: &str,
    id: &str,
) -> Result<(Document, tokio::fs::File), ApiError> {
    let (user, doc_id) = (user_id.to_owned(), id.to_owned());
    let doc = state
        .db
        .read(move |conn| documents::get(conn, &user, &doc_id))
        .await?;
    let file = tokio::fs::File::open(state.files.path(id))
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ApiError::NotFound,
            _ => ApiError::internal(format!("cannot read a stored file: {err}")),
        })?;
    Ok((doc, file))
}
