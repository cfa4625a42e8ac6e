//! Chunking by structure: text-splitter breaks at the largest boundary that
//! fits (blank lines between blocks, then lines, sentences, words) up to
//! `size` characters, with `overlap` characters repeated between chunks.
//! Each chunk keeps its character offsets so citations can point at it.
//!
//! A document's title is not a chunk of its own: split off, a title line
//! would be a tiny chunk that matches only title words, while the chunks
//! of the body would not match them at all. So when a document takes more
//! than one chunk and opens with a title, the body is split alone and each
//! of its chunks carries the title as its `context`, which is indexed with
//! it (see `db::chunks`) but is not part of its text.

use text_splitter::{ChunkConfig, TextSplitter};

use crate::db::jobs::ChunkText;

/// The longest first line that counts as a title, in characters.
const TITLE_MAX_CHARS: usize = 200;

pub fn chunk(text: &str, size: usize, overlap: usize) -> Vec<ChunkText> {
    let size = size.max(1);
    // A document that fits in one chunk keeps its title in its text.
    let fits = text.trim().chars().count() <= size;
    match title(text).filter(|_| !fits) {
        Some((title, body)) => {
            let mut chunks = split(&text[body..], text[..body].chars().count(), size, overlap);
            for chunk in &mut chunks {
                chunk.context = title.to_owned();
            }
            chunks
        }
        None => split(text, 0, size, overlap),
    }
}

/// The document's title and the byte offset where its body starts: a first
/// block that is one short line (a heading; parsers end blocks with a blank
/// line) followed by more text.
fn title(text: &str) -> Option<(&str, usize)> {
    let start = text.len() - text.trim_start().len();
    let rest = &text[start..];
    let line_end = rest.find('\n')?;
    let line = rest[..line_end].trim();
    let after = &rest[line_end + 1..];
    let next_line = after.split('\n').next().unwrap_or("");
    let is_heading = next_line.trim().is_empty()
        && !after.trim().is_empty()
        && line.chars().count() <= TITLE_MAX_CHARS
        && line.chars().any(char::is_alphanumeric);
    is_heading.then_some((line, start + line_end + 1))
}

/// `text` split into chunks, offsets counted from `first_char`.
fn split(text: &str, first_char: usize, size: usize, overlap: usize) -> Vec<ChunkText> {
    let config = ChunkConfig::new(size)
        .with_overlap(overlap.min(size - 1))
        .unwrap_or_else(|_| ChunkConfig::new(size));
    let splitter = TextSplitter::new(config);
    let mut chunks = Vec::new();
    // Byte offsets to character offsets, walking forward once.
    let (mut byte, mut chars) = (0usize, first_char);
    for (offset, piece) in splitter.chunk_indices(text) {
        if offset >= byte {
            chars += text[byte..offset].chars().count();
        } else {
            chars -= text[offset..byte].chars().count();
        }
        byte = offset;
        let len = piece.chars().count();
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        chunks.push(ChunkText {
            text: piece.to_owned(),
            start: to_i64(chars),
            end: to_i64(chars + len),
            context: String::new(),
        });
    }
    chunks
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_point_back_into_the_text() {
        let text = "Première partie. ".repeat(40) + "\n\n" + &"Second block here. ".repeat(40);
        let chunks = super::chunk(&text, 200, 40);
        assert!(chunks.len() > 3);
        let chars: Vec<char> = text.chars().collect();
        for c in &chunks {
            let slice: String = chars[c.start as usize..c.end as usize].iter().collect();
            assert_eq!(slice, c.text);
            assert!(c.text.chars().count() <= 200);
        }
    }

    /// Character `start..end` of `text`.
    fn slice(text: &str, start: i64, end: i64) -> String {
        text.chars()
            .skip(start as usize)
            .take((end - start) as usize)
            .collect()
    }

    #[test]
    fn a_title_is_the_context_of_every_chunk_not_a_chunk() {
        let title = "Efficient targeting of silent genes";
        let body = "Stem cells divide. ".repeat(30) + "\n\n" + &"Targeting works well. ".repeat(30);
        let text = format!("\n{title}\n\n{body}");
        let chunks = super::chunk(&text, 300, 40);
        assert!(chunks.len() > 2, "{chunks:?}");
        for c in &chunks {
            assert_eq!(c.context, title);
            assert!(
                !c.text.contains("Efficient"),
                "the title is no chunk's text: {c:?}"
            );
            assert_eq!(slice(&text, c.start, c.end), c.text, "offsets count the title");
        }
        assert!(chunks[0].text.starts_with("Stem cells"));
    }

    #[test]
    fn short_documents_and_untitled_ones_have_no_context() {
        // Fits in one chunk: the title stays in its text.
        let short = super::chunk("A title\n\nA short body.", 300, 40);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].text, "A title\n\nA short body.");
        assert_eq!(short[0].context, "");
        // The first block is a paragraph of several lines, or a long line.
        let paragraph =
            "First line of a paragraph\nsecond line.\n\n".to_owned() + &"More text here. ".repeat(40);
        let long_line = "Word ".repeat(60) + "\n\n" + &"More text here. ".repeat(40);
        for text in [paragraph, long_line] {
            let chunks = super::chunk(&text, 300, 40);
            assert!(chunks.len() > 1);
            assert!(chunks.iter().all(|c| c.context.is_empty()), "{chunks:?}");
            assert_eq!(chunks[0].start, 0);
        }
    }

    #[test]
    fn a_title_with_crlf_and_accents_keeps_the_offsets_right() {
        let title = "Über die Böden Islands";
        let body = "Drainage entscheidet. ".repeat(30) + "\r\n\r\n" + &"Gerste wächst. ".repeat(30);
        let text = format!("{title}\r\n\r\n{body}");
        let chunks = super::chunk(&text, 300, 40);
        assert!(chunks.len() > 1, "{chunks:?}");
        for c in &chunks {
            assert_eq!(c.context, title, "no carriage return in the title");
            assert_eq!(slice(&text, c.start, c.end), c.text);
        }
        // Only blank lines after the first line: no body, no title.
        let lone = super::chunk(&format!("{}\n\n  \n", "Word ".repeat(100)), 300, 40);
        assert!(lone.iter().all(|c| c.context.is_empty()), "{lone:?}");
    }
}
