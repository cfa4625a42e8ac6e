//! BM25's statistics per user: how many chunks a user has in the index and
//! how many terms they hold, so that the average length a chunk is
//! compared with, and the idf of a word, come from the asker's chunks only.
//! (Document frequencies are per user already: terms carry their owner's
//! key.) Deleted chunks never count: tantivy's own statistics would count
//! them until a merge drops them, so a user's deleted document would go on
//! weighing on their scores; here a segment with deletes is counted over
//! its live chunks, and a term's frequency there by walking its postings
//! (a user's postings: short).

use std::collections::HashMap;

use tantivy::DocSet;
use tantivy::index::SegmentId;
use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::{Error, Result};

/// One user's chunks in the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserCount {
    pub chunks: u64,
    /// The sum of their lengths in terms (as stored for BM25).
    pub terms: u64,
}

/// Every user's counts over one searcher's segments.
#[derive(Debug, Default)]
pub struct Counts(HashMap<u64, UserCount>);

impl Counts {
    pub fn get(&self, user: u64) -> Option<UserCount> {
        self.0.get(&user).copied().filter(|c| c.chunks > 0)
    }
}

/// Counts per segment, computed once per segment and number of deletes
/// (a segment's documents never change; merges make new segments).
#[derive(Default)]
pub struct SegmentCounts(HashMap<(SegmentId, u32), HashMap<u64, UserCount>>);

impl SegmentCounts {
    /// The counts of `searcher`'s segments, reading only the new ones and
    /// forgetting those gone.
    pub fn refresh(&mut self, searcher: &Searcher, terms: Field) -> Result<Counts> {
        let mut kept = HashMap::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            let id = (segment.segment_id(), segment.num_deleted_docs());
            let counts = match self.0.remove(&id) {
                Some(counts) => counts,
                None => count_segment(segment, terms)?,
            };
            kept.insert(id, counts);
        }
        self.0 = kept;
        let mut total: HashMap<u64, UserCount> = HashMap::new();
        for counts in self.0.values() {
            for (&u, c) in counts {
                let t = total.entry(u).or_default();
                t.chunks += c.chunks;
                t.terms += c.terms;
            }
        }
        Ok(Counts(total))
    }
}

fn count_segment(segment: &tantivy::SegmentReader, terms: Field) -> Result<HashMap<u64, UserCount>> {
    let users = segment.fast_fields().u64("user")?;
    let lengths = segment.get_fieldnorms_reader(terms)?;
    let mut counts: HashMap<u64, UserCount> = HashMap::new();
    for doc in segment.doc_ids_alive() {
        let u = users
            .first(doc)
            .ok_or_else(|| Error("an indexed chunk without an owner".into()))?;
        let c = counts.entry(u).or_default();
        c.chunks += 1;
        c.terms += u64::from(lengths.fieldnorm(doc));
    }
    Ok(counts)
}

/// BM25's statistics for one user's search.
pub struct UserStatistics<'a> {
    pub searcher: &'a Searcher,
    pub user: UserCount,
}

impl Bm25StatisticsProvider for UserStatistics<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.user.terms)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.user.chunks)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let mut total = 0u64;
        for segment in self.searcher.segment_readers() {
            let index = segment.inverted_index(term.field())?;
            let count = match segment.alive_bitset() {
                None => index.doc_freq(term)?,
                Some(alive) => match index.read_postings(term, IndexRecordOption::Basic)? {
                    Some(mut postings) => postings.count(alive),
                    None => 0,
                },
            };
            total += u64::from(count);
        }
        Ok(total)
    }
}
