//! Words into index terms, the same way for chunks and for questions:
//! runs of letters and digits, lower-cased, stop-words dropped, common
//! Latin diacritics folded, English-stemmed (Snowball), each prefixed with
//! the owner's key. Stop-words are not indexed because no question ever
//! looks for them: they were a third of a chunk's words, and
//! counting them in a chunk's length ranked SciFact worse (nDCG@10 0.684
//! against 0.687; docs/BENCHMARKS.md, round 9). The
//! prefix gives every user a term space of their own in the one shared
//! index: a question's terms can only match its asker's chunks, and a
//! term's document frequency counts that user's chunks alone.

use std::collections::HashMap;

use tantivy::tokenizer::{
    AsciiFoldingFilter, BoxTokenStream, LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};

use crate::words::{STOP_WORDS, is_stop_word};

/// The tokenizer's name in the index.
pub const TOKENIZER: &str = "ragd";
/// Separates the key from the text of an indexed value.
const KEY_END: char = '\u{1f}';
/// Words this long or longer (hashes, base64, URLs run together), in bytes
/// as written, are not indexed.
const MAX_WORD_BYTES: usize = 64;
/// Words of a question that count, at most.
const MAX_QUERY_WORDS: usize = 32;
/// Stems remembered per analyzer, at most (then it starts over). A text's
/// words repeat: the cache made analyzing the ingest bench's text a
/// quarter faster (docs/BENCHMARKS.md, round 9).
const MAX_CACHED_STEMS: usize = 50_000;

/// The key of a user's terms (`user_indexes.n`, never reused).
pub fn key(user_key: i64) -> String {
    format!("{user_key:x}")
}

/// The value indexed for a chunk: its key, then its context (the document
/// title) and text, which BM25 then scores as one field (as FTS5 did with
/// two equally weighted columns).
pub fn indexed_value(user_key: i64, context: &str, text: &str) -> String {
    let mut value = String::with_capacity(context.len() + text.len() + 24);
    value.push_str(&key(user_key));
    value.push(KEY_END);
    value.push_str(context);
    value.push('\n');
    value.push_str(text);
    value
}

/// The distinct words of plain text that a search uses: lower-cased, no
/// stop-words, none too long to be indexed, at most 32. Nothing in them is
/// query syntax. Snippets highlight these.
pub fn query_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() < MAX_WORD_BYTES)
    {
        // One character at a time, as the index's analyzer does
        // (`str::to_lowercase` would give a word-final sigma another form).
        let word: String = word.chars().flat_map(char::to_lowercase).collect();
        if is_stop_word(&word) || words.contains(&word) {
            continue;
        }
        words.push(word);
        if words.len() == MAX_QUERY_WORDS {
            break;
        }
    }
    words
}

/// The index terms of `words` for the user `user_key`, one per word: two
/// words with one stem ("study", "studies") give the term twice, so it
/// weighs twice in the ranking, as each word of a question did with FTS5.
pub fn query_terms(user_key: i64, words: &[String]) -> Vec<String> {
    let mut analyzer = Keyed::default();
    let value = format!("{}{KEY_END}{}", key(user_key), words.join(" "));
    let mut stream = analyzer.token_stream(&value);
    let mut terms: Vec<String> = Vec::new();
    while let Some(token) = stream.next() {
        terms.push(token.text.clone());
    }
    terms
}

/// The words of a value, stemmed, then the prefix of its key on each.
#[derive(Clone)]
pub struct Keyed {
    words: TextAnalyzer,
    stemmer: frostem::Stemmer,
    /// Word to stem. tantivy clones the analyzer for each segment it
    /// builds, so this lives as long as one segment's indexing; at most
    /// `MAX_CACHED_STEMS` words of under 64 bytes (a few MiB at worst,
    /// beside the writer's memory budget).
    stems: HashMap<String, String, foldhash::fast::RandomState>,
}

impl Default for Keyed {
    fn default() -> Keyed {
        let stop_words = STOP_WORDS.iter().map(|w| (*w).to_owned());
        Keyed {
            words: TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
                .filter(LowerCaser)
                .filter(StopWordFilter::remove(stop_words))
                .filter(AsciiFoldingFilter)
                .build(),
            stemmer: frostem::Stemmer::new(frostem::Algorithm::English),
            stems: HashMap::default(),
        }
    }
}

impl Tokenizer for Keyed {
    type TokenStream<'a> = KeyedStream<'a>;

    fn token_stream<'a>(&'a mut self, value: &'a str) -> KeyedStream<'a> {
        // A value without a key (never written by ragd) indexes nothing.
        let (key, text) = value.split_once(KEY_END).unwrap_or(("", ""));
        KeyedStream {
            key,
            words: self.words.token_stream(text),
            stemmer: &self.stemmer,
            stems: &mut self.stems,
            token: Token::default(),
        }
    }
}

pub struct KeyedStream<'a> {
    key: &'a str,
    words: BoxTokenStream<'a>,
    stemmer: &'a frostem::Stemmer,
    stems: &'a mut HashMap<String, String, foldhash::fast::RandomState>,
    token: Token,
}

impl TokenStream for KeyedStream<'_> {
    fn advance(&mut self) -> bool {
        if self.key.is_empty() || !self.words.advance() {
            return false;
        }
        let word = self.words.token();
        self.token.text.clear();
        self.token.text.push_str(self.key);
        self.token.text.push(':');
        match self.stems.get(&word.text) {
            Some(stem) => self.token.text.push_str(stem),
            None => {
                // A word-final sigma is the same letter as 'σ': "ΟΔΟΣ"
                // lower-cases to "οδοσ", and must find "οδος" too.
                let stem = if word.text.contains('ς') {
                    self.stemmer.stem(&word.text.replace('ς', "σ")).into_owned()
                } else {
                    self.stemmer.stem(&word.text).into_owned()
                };
                self.token.text.push_str(&stem);
                if self.stems.len() >= MAX_CACHED_STEMS {
                    self.stems.clear();
                }
                self.stems.insert(word.text.clone(), stem);
            }
        }
        self.token.offset_from = word.offset_from;
        self.token.offset_to = word.offset_to;
        self.token.position = word.position;
        self.token.position_length = word.position_length;
        true
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(value: &str) -> Vec<String> {
        let mut analyzer = Keyed::default();
        let mut stream = analyzer.token_stream(value);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            out.push(token.text.clone());
        }
        out
    }

    #[test]
    fn terms_are_stemmed_folded_and_prefixed_with_the_key() {
        let value = indexed_value(26, "Notes", "Running studies in Zürich, running");
        assert_eq!(
            tokens(&value),
            ["1a:note", "1a:run", "1a:studi", "1a:zurich", "1a:run"]
        );
    }

    #[test]
    fn a_question_becomes_the_terms_its_chunks_were_indexed_with() {
        let words = query_words("What did the studies in ZÜRICH find? Studies! A study.");
        assert_eq!(words, ["studies", "zürich", "find", "study"]);
        assert_eq!(
            query_terms(7, &words),
            ["7:studi", "7:zurich", "7:find", "7:studi"]
        );
        // Another user's terms never meet these.
        assert_eq!(query_terms(8, &words)[0], "8:studi");
    }

    #[test]
    fn a_word_final_sigma_matches_in_either_case() {
        // Lower-cased one character at a time, "ΟΔΟΣ" is "οδοσ";
        // `str::to_lowercase` and people typing give "οδος".
        let indexed = tokens(&indexed_value(1, "", "ΟΔΟΣ οδος"));
        assert_eq!(indexed[0], indexed[1]);
        for question in ["ΟΔΟΣ", "οδος", "Οδος"] {
            let words = query_words(question);
            assert_eq!(query_terms(1, &words), indexed[..1], "{question}");
        }
    }

    #[test]
    fn long_words_and_values_without_a_key_index_nothing() {
        let long = "x".repeat(MAX_WORD_BYTES);
        assert_eq!(tokens(&indexed_value(1, "", &long)), Vec::<String>::new());
        let kept = "x".repeat(MAX_WORD_BYTES - 1);
        assert_eq!(tokens(&indexed_value(1, "", &kept)).len(), 1);
        assert_eq!(tokens("no key here"), Vec::<String>::new());
    }

    #[test]
    fn words_too_long_to_be_indexed_do_not_take_a_questions_places() {
        let long = (0..MAX_QUERY_WORDS).map(|i| format!("{i}{}", "x".repeat(MAX_WORD_BYTES)));
        let text = long.collect::<Vec<_>>().join(" ") + " harbour";
        assert_eq!(query_words(&text), ["harbour"]);
    }

    #[test]
    fn query_words_stop_at_thirty_two_and_skip_stop_words() {
        let text = (0..40).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" the ");
        let words = query_words(&text);
        assert_eq!(words.len(), MAX_QUERY_WORDS);
        assert!(!words.iter().any(|w| w == "the"));
    }
}
