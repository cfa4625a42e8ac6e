//! Synthetic documents and queries, deterministic from a seed: pseudo-words
//! drawn from a Zipf distribution (rank r has weight 1/(r+1)), so a corpus
//! has common, mid-frequency and rare terms like natural text, and queries
//! can pick each kind on purpose.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONSONANTS: &[u8] = b"bcdfghjklmnprtvz";
const VOWELS: &[u8] = b"aeiou";

/// Words by frequency rank; which ranks count as common, mid and rare.
pub struct Vocabulary {
    words: Vec<String>,
    /// Cumulative Zipf weights, for sampling by rank.
    cumulative: Vec<f64>,
}

/// A kind of query term by frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Ranks 10..100: in a large share of all chunks.
    Common,
    /// Ranks 1,000..5,000.
    Mid,
    /// Ranks from 60% of the vocabulary to its end: in a handful of chunks.
    Rare,
}

/// The pseudo-word of rank `i`: consonant-vowel syllables (at least two),
/// unique per rank.
fn word(mut i: usize) -> String {
    let base = CONSONANTS.len() * VOWELS.len();
    let mut syllables = Vec::new();
    loop {
        let s = i % base;
        syllables.push(CONSONANTS[s / VOWELS.len()] as char);
        syllables.push(VOWELS[s % VOWELS.len()] as char);
        i /= base;
        if i == 0 && syllables.len() >= 4 {
            break;
        }
        if i == 0 {
            // Pad to two syllables with a fixed one (distinct from a digit).
            syllables.extend(['q', 'u']);
            break;
        }
    }
    syllables.into_iter().collect()
}

impl Vocabulary {
    pub fn new(size: usize) -> Vocabulary {
        let size = size.max(200);
        let words: Vec<String> = (0..size).map(word).collect();
        let mut total = 0.0;
        let cumulative = (0..size)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect();
        Vocabulary { words, cumulative }
    }

    /// A word drawn by Zipf frequency.
    pub fn sample(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = rng.random::<f64>() * total;
        let rank = self
            .cumulative
            .partition_point(|&c| c < u)
            .min(self.words.len() - 1);
        &self.words[rank]
    }

    /// A word of the given kind, uniform over its rank range.
    pub fn term(&self, kind: Term, rng: &mut StdRng) -> &str {
        let n = self.words.len();
        let range = match kind {
            Term::Common => 10..100.min(n),
            Term::Mid => 1_000.min(n / 4)..5_000.min(n / 2),
            Term::Rare => (n * 3 / 5)..n,
        };
        &self.words[rng.random_range(range)]
    }

    /// Text of about `bytes` bytes: sentences of 6 to 18 words in
    /// paragraphs, as Markdown with a heading when `markdown`.
    pub fn document(&self, seed: u64, bytes: usize, markdown: bool) -> String {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut text = String::with_capacity(bytes + 256);
        if markdown {
            text.push_str("# ");
            self.sentence(&mut rng, &mut text, 4);
            text.push_str("\n\n");
        }
        while text.len() < bytes {
            let sentences = rng.random_range(3..8);
            for _ in 0..sentences {
                let words = rng.random_range(6..19);
                self.sentence(&mut rng, &mut text, words);
                text.push(' ');
                if text.len() >= bytes {
                    break;
                }
            }
            text.push_str("\n\n");
        }
        text
    }

    fn sentence(&self, rng: &mut StdRng, out: &mut String, words: usize) {
        for w in 0..words {
            let word = self.sample(rng);
            if w == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push('.');
    }

    /// A query of `n` terms of one kind.
    pub fn query(&self, kind: Term, n: usize, rng: &mut StdRng) -> String {
        (0..n)
            .map(|_| self.term(kind, rng).to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A "typical" question: one common, two mid and one rare term, in
    /// a sentence with stop-words (which the server drops).
    pub fn question(&self, rng: &mut StdRng) -> String {
        format!(
            "What does the {} say about {} and the {} of {}?",
            self.term(Term::Common, rng),
            self.term(Term::Mid, rng),
            self.term(Term::Mid, rng),
            self.term(Term::Rare, rng)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_unique_and_documents_deterministic() {
        let v = Vocabulary::new(20_000);
        let mut words: Vec<&String> = v.words.iter().collect();
        words.sort();
        words.dedup();
        assert_eq!(words.len(), 20_000);
        let a = v.document(7, 5_000, true);
        assert_eq!(a, v.document(7, 5_000, true));
        assert!(a.starts_with("# "));
        assert!(a.len() >= 5_000 && a.len() < 5_400, "{}", a.len());
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(v.query(Term::Rare, 2, &mut rng).split(' ').count(), 2);
    }
}
