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
///
/// The idf is FTS5's, ragd's ranking before tantivy: `ln((N - n + 0.5) /
/// (n + 0.5))`, floored near 0 for a word in half the chunks or more.
/// tantivy computes `ln(1 + (N - n + 0.5) / (n + 0.5))`, which weighs
/// common words more and ranked SciFact worse (nDCG@10 0.682 against 0.683
/// with FTS5's; docs/BENCHMARKS.md, round 8). tantivy takes only the counts, so the
/// counts given are scaled (`SCALE`) and each word's count chosen so that
/// tantivy's formula yields FTS5's idf; the average length, the other use
/// of the counts, is unchanged by the scaling.
pub struct UserStatistics<'a> {
    pub searcher: &'a Searcher,
    pub user: UserCount,
}

/// How much finer than one chunk the counts given to tantivy are, so that
/// rounding a word's scaled count moves its idf by under 0.1%.
const SCALE: u64 = 1024;

impl UserStatistics<'_> {
    /// The chunks holding `term` among the user's live chunks.
    fn live_doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
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

/// The count for which tantivy's idf over `SCALE * chunks` chunks equals
/// FTS5's idf of a word in `n` of `chunks` chunks.
pub(super) fn scaled_doc_freq(n: u64, chunks: u64) -> u64 {
    let total = chunks.saturating_mul(SCALE);
    if n == 0 {
        return 0;
    }
    // FTS5: idf = ln(r); tantivy: idf = ln((N' + 1) / (n' + 0.5)).
    let r = (chunks as f64 - n as f64 + 0.5) / (n as f64 + 0.5);
    if r <= 1.0 {
        // FTS5's floor (1e-6); tantivy's idf at n' = N' is as small.
        return total;
    }
    let scaled = (total as f64 + 1.0) / r - 0.5;
    (scaled.round().max(1.0) as u64).min(total)
}

impl Bm25StatisticsProvider for UserStatistics<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.user.terms.saturating_mul(SCALE))
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.user.chunks.saturating_mul(SCALE))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let n = self.live_doc_freq(term)?.min(self.user.chunks);
        Ok(scaled_doc_freq(n, self.user.chunks))
    }
}

#[cfg(test)]
mod idf_tests {
    use super::*;

    fn tantivy_idf(n: u64, total: u64) -> f64 {
        (1.0 + ((total - n) as f64 + 0.5) / (n as f64 + 0.5)).ln()
    }

    #[test]
    fn the_scaled_counts_give_fts5s_idf() {
        for chunks in [1u64, 7, 100, 5_183, 106_000, 1_000_000] {
            for n in [1u64, 2, 3, 10, 99, 1_000, 40_000, 499_999] {
                if n > chunks {
                    continue;
                }
                let fts5 = ((chunks as f64 - n as f64 + 0.5) / (n as f64 + 0.5))
                    .ln()
                    .max(1e-6);
                let got = tantivy_idf(scaled_doc_freq(n, chunks), chunks * SCALE);
                assert!(
                    (got - fts5).abs() <= 1e-3 * fts5.max(1.0) + 1e-3,
                    "{n} of {chunks}: {got} against FTS5's {fts5}"
                );
            }
        }
    }

    #[test]
    fn rarer_words_weigh_more_and_counts_stay_in_range() {
        let chunks = 10_000;
        let mut last = f64::INFINITY;
        for n in 1..=chunks {
            let scaled = scaled_doc_freq(n, chunks);
            assert!(scaled <= chunks * SCALE, "tantivy asserts n <= N");
            let idf = tantivy_idf(scaled, chunks * SCALE);
            assert!(idf <= last + 1e-9, "idf grows at {n}");
            last = idf;
        }
        assert_eq!(scaled_doc_freq(0, chunks), 0);
    }
}
