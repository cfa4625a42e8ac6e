//! The full-text index of every chunk (tantivy), under
//! `<data-dir>/index/`. It is derived: SQLite's `chunks` table is the truth,
//! and the index can always be rebuilt from it (at start-up when it is
//! missing, damaged, of another format or of another database, and with
//! `ragd reindex`).
//!
//! One index serves every user. Each term carries its owner's key
//! (`analyzer`), so a question only meets its asker's chunks, and BM25's
//! statistics are the asker's alone: document frequencies count the
//! prefixed terms, and the chunk count and average length come from the
//! asker's chunks (`stats`). The index holds no text: a hit is a chunk's
//! rowid, and its text comes from SQLite, which also drops hits whose
//! chunk is gone or not yet live (`documents::search`).
//!
//! What the index has taken in is one number, `through`: every chunk with
//! a rowid up to it was read (rowids only grow), and it is stored in each
//! commit. Deletes reach it through a queue table that a trigger fills
//! (`db::chunks`). `apply` adds a batch, deletes, commits, and only then
//! shows the new state to searches.

pub mod analyzer;
pub mod inspect;
mod stats;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, InvertedIndexRangeQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index as Tantivy, IndexReader, IndexWriter, ReloadPolicy, Searcher, Term, doc};

use stats::{Counts, SegmentCounts};

use crate::types::IndexChunk;

/// The index's layout version; another one is rebuilt. 2: stop-words
/// are no longer indexed (nor counted in a chunk's length).
const FORMAT: u32 = 2;
/// The indexing thread's memory budget: a segment is flushed when its
/// buffers reach it.
const WRITER_MEMORY: usize = 64 << 20;

/// What went wrong with the index (an I/O error, a damaged file).
#[derive(Debug, Clone, thiserror::Error)]
#[error("search index: {0}")]
pub struct Error(pub String);

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Error {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One step of keeping the index in step with `chunks`.
#[derive(Debug, Default)]
pub struct Batch {
    /// The chunks with rowids above `Index::through`, up to `through`.
    pub chunks: Vec<IndexChunk>,
    /// Rowids of deleted chunks (ascending).
    pub deleted: Vec<i64>,
    /// Every chunk up to this rowid has been read into `chunks` (or was
    /// gone by then).
    pub through: i64,
}

/// Why `open` built a new, empty index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    /// There was none.
    Missing,
    /// The one there could not be opened or read.
    Damaged(String),
    /// It was written by another format or for another database.
    Stale(String),
}

/// What each commit records (its payload).
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    format: u32,
    /// The database it was built from (`Db::epoch`).
    epoch: String,
    through: i64,
}

#[derive(Clone, Copy)]
struct Fields {
    /// The chunk's terms (`analyzer`): frequencies and lengths, no
    /// positions, nothing stored.
    terms: Field,
    rowid: Field,
    user: Field,
}

/// What searches see: one searcher and the per-user statistics of exactly
/// its segments.
struct Snapshot {
    searcher: Searcher,
    counts: Counts,
}

#[derive(Default)]
struct WriterSlot {
    open: Option<IndexWriter>,
    used: Option<Instant>,
}

/// The shared handle (cheap to clone).
#[derive(Clone)]
pub struct Index(Arc<Inner>);

struct Inner {
    dir: PathBuf,
    epoch: String,
    fields: Fields,
    index: Tantivy,
    reader: IndexReader,
    /// Opened by the first `apply` and closed once idle (`close_idle`): an
    /// open writer holds a few MiB and three threads.
    writer: Mutex<WriterSlot>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Per-segment counts, kept across reloads (segments never change
    /// their documents; merges make new segments).
    segment_counts: Mutex<SegmentCounts>,
    /// `Payload::through` of the last commit.
    through: Mutex<i64>,
}

impl Index {
    /// Opens the index in `dir` (created when missing), built from the
    /// database `epoch`. When it cannot be used as it is, it is replaced by
    /// an empty one and the reason returned: every chunk must then be
    /// indexed again (`through` is 0).
    pub fn open(dir: &Path, epoch: &str) -> Result<(Index, Option<Fresh>)> {
        match Self::open_existing(dir, epoch) {
            Ok(index) => Ok((index, None)),
            Err(fresh) => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .map_err(|e| Error(format!("cannot remove {}: {e}", dir.display())))?;
                }
                Ok((Self::create(dir, epoch)?, Some(fresh)))
            }
        }
    }

    fn open_existing(dir: &Path, epoch: &str) -> std::result::Result<Index, Fresh> {
        let (index, payload) = open_current(dir)?;
        if payload.epoch != epoch {
            return Err(Fresh::Stale("it was built from another database".into()));
        }
        Self::start(index, dir, epoch, payload.through).map_err(|e| Fresh::Damaged(e.0))
    }

    fn create(dir: &Path, epoch: &str) -> Result<Index> {
        std::fs::create_dir_all(dir).map_err(|e| Error(format!("cannot create {}: {e}", dir.display())))?;
        let index = Tantivy::create_in_dir(dir, schema().0)?;
        let created = Self::start(index, dir, epoch, 0)?;
        // The first commit writes the payload, so that an index without
        // one is known as not ragd's.
        created.apply(Batch::default())?;
        created.close_idle(Duration::ZERO)?;
        Ok(created)
    }

    fn start(index: Tantivy, dir: &Path, epoch: &str, through: i64) -> Result<Index> {
        index
            .tokenizers()
            .register(analyzer::TOKENIZER, analyzer::Keyed::default());
        let fields = schema().1;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .num_warming_threads(0)
            .try_into()?;
        let mut segment_counts = SegmentCounts::default();
        let searcher = reader.searcher();
        let counts = segment_counts.refresh(&searcher, fields.terms)?;
        Ok(Index(Arc::new(Inner {
            dir: dir.to_owned(),
            epoch: epoch.to_owned(),
            fields,
            index,
            reader,
            writer: Mutex::new(WriterSlot::default()),
            snapshot: RwLock::new(Arc::new(Snapshot { searcher, counts })),
            segment_counts: Mutex::new(segment_counts),
            through: Mutex::new(through),
        })))
    }

    /// The directory it lives in.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// Every chunk up to this rowid is searchable (or was deleted).
    pub fn through(&self) -> i64 {
        *lock(&self.0.through)
    }

    /// Adds the batch's chunks, applies its deletes, commits, and shows
    /// the result to searches: when this returns, every chunk of the batch
    /// is searchable, and no deleted one is. Blocking (call it off the
    /// async workers); one at a time.
    pub fn apply(&self, batch: Batch) -> Result<()> {
        let inner = &*self.0;
        let f = inner.fields;
        let mut slot = lock(&inner.writer);
        // Taken out while in use: a failed step drops it, and the next one
        // opens a fresh writer.
        let mut writer = match slot.open.take() {
            Some(writer) => writer,
            None => open_writer(&inner.index)?,
        };
        for chunk in &batch.chunks {
            let value = analyzer::indexed_value(chunk.user_key, &chunk.context, &chunk.text);
            writer.add_document(doc!(
                f.terms => value,
                f.rowid => as_u64(chunk.rowid),
                f.user => as_u64(chunk.user_key),
            ))?;
        }
        // After the adds: a delete also removes a document added before it
        // in the same commit.
        for (first, last) in runs(&batch.deleted) {
            if first == last {
                writer.delete_term(Term::from_field_u64(f.rowid, as_u64(first)));
            } else {
                writer.delete_query(Box::new(InvertedIndexRangeQuery::new(
                    Bound::Included(Term::from_field_u64(f.rowid, as_u64(first))),
                    Bound::Included(Term::from_field_u64(f.rowid, as_u64(last))),
                )))?;
            }
        }
        let through = batch.through.max(*lock(&inner.through));
        let payload = serde_json::to_string(&Payload {
            format: FORMAT,
            epoch: inner.epoch.clone(),
            through,
        })
        .map_err(|e| Error(e.to_string()))?;
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&payload);
        commit.commit()?;
        slot.open = Some(writer);
        slot.used = Some(Instant::now());
        drop(slot);
        *lock(&inner.through) = through;
        self.refresh()
    }

    /// Closes the writer when no batch came for `idle`, once its
    /// background merges are done (their segments then show in searches).
    /// Blocking; `true` when it closed one.
    pub fn close_idle(&self, idle: Duration) -> Result<bool> {
        let mut slot = lock(&self.0.writer);
        if slot.used.is_none_or(|used| used.elapsed() < idle) {
            return Ok(false);
        }
        slot.used = None;
        let Some(writer) = slot.open.take() else {
            return Ok(false);
        };
        // Under the lock: an `apply` meanwhile would need a second writer.
        writer.wait_merging_threads()?;
        drop(slot);
        self.refresh()?;
        Ok(true)
    }

    /// Shows searches the index as last committed, with the segments that
    /// background merges have produced since.
    pub fn refresh(&self) -> Result<()> {
        let inner = &*self.0;
        // Held from the reload to the swap: two refreshes (an apply's and
        // the sweep's) cannot install an older searcher over a newer one,
        // which would hide a batch whose documents are already `ready`.
        let mut segment_counts = lock(&inner.segment_counts);
        inner.reader.reload()?;
        let searcher = inner.reader.searcher();
        let counts = segment_counts.refresh(&searcher, inner.fields.terms)?;
        *inner.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot { searcher, counts });
        Ok(())
    }

    /// The best `limit` (rowid, score) of the user's chunks for the index
    /// terms `terms` (`analyzer::query_terms`), best first. BM25 over the
    /// user's own chunks, pruned with block-max WAND.
    pub fn search(&self, user_key: i64, terms: &[String], limit: usize) -> Result<Vec<(i64, f32)>> {
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let snapshot = Arc::clone(&self.0.snapshot.read().unwrap_or_else(|p| p.into_inner()));
        let Some(user) = snapshot.counts.get(as_u64(user_key)) else {
            return Ok(Vec::new());
        };
        let f = self.0.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let query = TermQuery::new(Term::from_field_text(f.terms, t), IndexRecordOption::WithFreqs);
                (Occur::Should, Box::new(query) as Box<dyn Query>)
            })
            .collect();
        let query: Box<dyn Query> = match clauses.len() {
            1 => clauses.remove(0).1,
            _ => Box::new(BooleanQuery::new(clauses)),
        };
        let statistics = stats::UserStatistics {
            searcher: &snapshot.searcher,
            user,
        };
        let top = snapshot.searcher.search_with_statistics_provider(
            &*query,
            &TopDocs::with_limit(limit).order_by_score(),
            &statistics,
        )?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let segment = snapshot.searcher.segment_reader(address.segment_ord);
            let rowid = segment
                .fast_fields()
                .u64("rowid")?
                .first(address.doc_id)
                .ok_or_else(|| Error("a hit without a rowid".into()))?;
            hits.push((i64::try_from(rowid).unwrap_or(i64::MAX), score));
        }
        Ok(hits)
    }

    /// How many live chunks the searches see (deleted ones are not
    /// counted, even before a merge drops them), for logs and tests.
    pub fn len(&self) -> u64 {
        let snapshot = self.0.snapshot.read().unwrap_or_else(|p| p.into_inner());
        snapshot.searcher.num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens the index in `dir` and reads its last commit's payload, when both
/// are this version's (for the server and for `ragd check`).
fn open_current(dir: &Path) -> std::result::Result<(Tantivy, Payload), Fresh> {
    if !dir.join("meta.json").exists() {
        return Err(Fresh::Missing);
    }
    let damaged = |e: tantivy::TantivyError| Fresh::Damaged(e.to_string());
    let index = Tantivy::open_in_dir(dir).map_err(damaged)?;
    if index.schema() != schema().0 {
        return Err(Fresh::Stale("its schema is not this version's".into()));
    }
    let payload = index.load_metas().map_err(damaged)?.payload;
    let payload: Payload = match payload.as_deref().map(serde_json::from_str) {
        Some(Ok(payload)) => payload,
        Some(Err(e)) => return Err(Fresh::Damaged(format!("unreadable commit payload: {e}"))),
        None => return Err(Fresh::Stale("no commit payload".into())),
    };
    if payload.format != FORMAT {
        return Err(Fresh::Stale(format!(
            "format {} (this version: {FORMAT})",
            payload.format
        )));
    }
    Ok((index, payload))
}

/// A writer with one indexing and one merging thread.
fn open_writer(index: &Tantivy) -> Result<IndexWriter> {
    let options = tantivy::indexer::IndexWriterOptions::builder()
        .memory_budget_per_thread(WRITER_MEMORY)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build();
    Ok(index.writer_with_options(options)?)
}

/// The schema and its fields.
fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(analyzer::TOKENIZER)
        .set_index_option(IndexRecordOption::WithFreqs)
        .set_fieldnorms(true);
    let terms = builder.add_text_field("terms", TextOptions::default().set_indexing_options(indexing));
    let rowid = builder.add_u64_field("rowid", NumericOptions::from(INDEXED).set_fast());
    let user = builder.add_u64_field("user", NumericOptions::default().set_fast());
    (builder.build(), Fields { terms, rowid, user })
}

/// Ascending rowids as runs of consecutive ones (first, last).
fn runs(rowids: &[i64]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &r in rowids {
        match runs.last_mut() {
            Some((_, last)) if r == *last + 1 => *last = r,
            Some((_, last)) if r == *last => {}
            _ => runs.push((r, r)),
        }
    }
    runs
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
