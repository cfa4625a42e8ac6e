//! The built-in offline answerer: composes the answer from the most
//! relevant sentences of the best passages, each with its numbered
//! citation. Deterministic; no model.

use super::{Answer, AnswerFuture, AnswerRequest, Answerer};
use crate::types::Passage;
use crate::words::is_stop_word;

/// Passages quoted per question (the best of those retrieved); each
/// becomes at most one citation.
const PASSAGES: usize = 4;
/// Sentences quoted per passage.
const SENTENCES: usize = 2;

/// The reply when no passage matches the question.
pub const NO_MATCH: &str = "I could not find anything about this in your documents. \
Upload documents that cover it, or rephrase the question.";

#[derive(Clone, Default)]
pub struct Extractive;

impl Answerer for Extractive {
    fn answer(&self, mut request: AnswerRequest) -> AnswerFuture {
        request.passages.truncate(PASSAGES);
        Box::pin(async move { Ok(compose(&request.question, request.passages)) })
    }

    /// Quotes answer the question alone.
    fn uses_history(&self) -> bool {
        false
    }

    fn passages(&self) -> usize {
        PASSAGES
    }
}

/// Builds the answer: for each passage, its sentences that share the most
/// words with the question, followed by `[n]`.
pub fn compose(question: &str, hits: Vec<Passage>) -> Answer {
    if hits.is_empty() {
        return Answer {
            content: NO_MATCH.to_owned(),
            sources: Vec::new(),
        };
    }
    let terms = words(question);
    let mut lines = Vec::with_capacity(hits.len());
    let mut sources = Vec::with_capacity(hits.len());
    for hit in hits {
        let n = sources.len() + 1;
        let quote = best_sentences(&hit.text, &terms);
        lines.push(format!("- {quote} [{n}]"));
        sources.push(hit.source());
    }
    let content = format!("From your documents:\n\n{}", lines.join("\n"));
    Answer { content, sources }
}

/// The meaningful lower-cased words of a text.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !is_stop_word(w))
        .collect()
}

/// The passage's sentences that match the question best, in text order.
fn best_sentences(text: &str, terms: &[String]) -> String {
    let lines = unwrapped(text);
    let sentences: Vec<&str> = lines
        .iter()
        .flat_map(|line| line.split_inclusive(['.', '!', '?']))
        .map(str::trim)
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .collect();
    let mut scored: Vec<(usize, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let own = words(s);
            (i, terms.iter().filter(|t| own.contains(t)).count())
        })
        .collect();
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // The best sentence always; the next ones only when they match too.
    let mut chosen: Vec<usize> = scored
        .iter()
        .enumerate()
        .filter(|(rank, (_, score))| *rank == 0 || *score > 0)
        .take(SENTENCES)
        .map(|(_, (i, _))| *i)
        .collect();
    chosen.sort_unstable();
    let quote = chosen.iter().map(|&i| sentences[i]).collect::<Vec<_>>().join(" ");
    shorten(&quote, 400)
}

/// The text's lines with hard wraps undone: a line joins the one before it
/// unless a blank line, a heading, a list item or a table row starts it, so
/// that a sentence wrapped over two lines is quoted whole.
fn unwrapped(text: &str) -> Vec<String> {
    let starts_block = |line: &str| {
        let line = line.trim_start();
        let numbered = line
            .split_once(['.', ')'])
            .is_some_and(|(n, _)| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()));
        line.starts_with(['#', '-', '*', '+', '|', '>']) || numbered
    };
    let mut lines: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            open = false;
            continue;
        }
        match lines.last_mut() {
            Some(last) if open && !starts_block(line) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => lines.push(line.trim().to_owned()),
        }
        open = true;
    }
    lines
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max_chars).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(text: &str) -> Passage {
        Passage {
            document_id: "d".into(),
            filename: "f.txt".into(),
            chunk_id: "1".into(),
            snippet: text.into(),
            score: 1.0,
            text: text.into(),
            context: String::new(),
        }
    }

    #[test]
    fn cites_each_passage_with_its_number() {
        let answer = compose(
            "How fast is the cache?",
            vec![
                hit("Intro. The cache answers in 120 ms. Other things."),
                hit("Cache misses cost 840 ms."),
            ],
        );
        assert!(
            answer.content.contains("The cache answers in 120 ms. [1]"),
            "{}",
            answer.content
        );
        assert!(answer.content.contains("840 ms. [2]"), "{}", answer.content);
        assert_eq!(answer.sources.len(), 2);
    }

    #[test]
    fn a_sentence_wrapped_over_lines_is_quoted_whole() {
        let answer = compose(
            "What does the stampede guard do?",
            vec![hit(
                "# Notes\n\nThe stampede guard keeps a cold cache from being hit at once:\nthe first \
                 request recomputes the value.\n\n- a list item\n- another",
            )],
        );
        assert!(
            answer
                .content
                .contains("hit at once: the first request recomputes the value. [1]"),
            "{}",
            answer.content
        );
    }

    #[test]
    fn no_passages_means_no_match() {
        let answer = compose("anything", Vec::new());
        assert_eq!(answer.content, NO_MATCH);
        assert!(answer.sources.is_empty());
    }
}
