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

use text_splitter::{Characters, ChunkConfig, TextSplitter};

use crate::types::ChunkText;

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

/// text-splitter looks ahead to the next boundary of every level for each
/// chunk it makes, so a long stretch without blank lines (text extracted
/// from a PDF, a log, a file that is one line) took time quadratic in its
/// length: 1.6 MB without a line break took 16 s, a 50 MB upload would have
/// taken hours. A longer text is therefore chunked in sections of at most
/// this many chunks' worth of bytes (the last one up to twice that), each
/// cut at the strongest boundary near its end (see `section_end`). A chunk
/// never spans two sections, and the first chunk of a section does not
/// overlap the last of the one before.
const SECTION_CHUNKS: usize = 16;

/// `text` split into chunks, offsets counted from `first_char`.
fn split(text: &str, first_char: usize, size: usize, overlap: usize) -> Vec<ChunkText> {
    let config = ChunkConfig::new(size)
        .with_overlap(overlap.min(size - 1))
        .unwrap_or_else(|_| ChunkConfig::new(size));
    let splitter = TextSplitter::new(config);
    let max_section = size.saturating_mul(SECTION_CHUNKS).max(1);
    let mut chunks = Vec::new();
    let (mut start, mut start_char) = (0, first_char);
    while start < text.len() {
        let end = section_end(text, start, max_section);
        let section = &text[start..end];
        split_section(&splitter, section, start_char, &mut chunks);
        start_char += section.chars().count();
        start = end;
    }
    chunks
}

/// The end (a byte offset) of the section of `text` that starts at `start`:
/// the end of the text when at most `2 * max` bytes are left (so a text
/// just above the limit is not cut into a full section and a scrap, and one
/// up to twice the limit is chunked exactly as a whole), otherwise the last
/// blank line, else line break, else sentence end (also CJK), else space,
/// in the second half of the next `max` bytes (a hard cut when there is
/// none).
fn section_end(text: &str, start: usize, max: usize) -> usize {
    if text.len() - start <= max.saturating_mul(2) {
        return text.len();
    }
    let limit = text.floor_char_boundary(start + max);
    let half = text.floor_char_boundary(start + max / 2);
    let window = &text[half..limit];
    let found = ["\n\n", "\n\r\n", "\n", ". ", "? ", "! ", "。", "？", "！", " "]
        .iter()
        .find_map(|boundary| window.rfind(boundary).map(|at| at + boundary.len()));
    match found {
        Some(at) => half + at,
        // A run of max / 2 bytes without a space: cut anywhere.
        None if limit > start => limit,
        None => start + text[start..].chars().next().map_or(1, char::len_utf8),
    }
}

/// Chunks one section, its offsets counted from `first_char`.
fn split_section(
    splitter: &TextSplitter<Characters>,
    text: &str,
    first_char: usize,
    chunks: &mut Vec<ChunkText>,
) {
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

    #[test]
    fn a_long_text_without_line_breaks_is_chunked_whole_in_sections() {
        // 150 chunks' worth of words and no newline: several sections.
        let words: Vec<String> = (0..30_000).map(|n| format!("w{n}")).collect();
        let text = words.join(" ");
        let chunks = super::chunk(&text, 1000, 150);
        let mut next = 0;
        for c in &chunks {
            assert!(c.text.chars().count() <= 1000);
            assert_eq!(slice(&text, c.start, c.end), c.text);
            // In order, overlapping at most, never skipping a word.
            let first: usize = c
                .text
                .split(' ')
                .next()
                .and_then(|w| w[1..].parse().ok())
                .expect("a word");
            assert!(first <= next, "chunk at {} skips words {next}..{first}", c.start);
            next = c
                .text
                .rsplit(' ')
                .next()
                .and_then(|w| w[1..].parse::<usize>().ok())
                .expect("a word")
                + 1;
        }
        assert_eq!(next, words.len(), "the last word is in the last chunk");
    }

    #[test]
    fn sections_cut_where_the_splitter_breaks_anyway() {
        // Paragraphs of about 0.7 chunk: every chunk is one paragraph,
        // whether the text is chunked whole or in sections.
        let paragraphs: Vec<String> = (0..200)
            .map(|n| format!("Paragraph {n} says {}", "something plain. ".repeat(40)))
            .collect();
        let text = paragraphs.join("\n\n");
        assert!(text.len() > 4 * super::SECTION_CHUNKS * 1000, "several sections");
        let sectioned = super::chunk(&text, 1000, 150);
        let config = text_splitter::ChunkConfig::new(1000)
            .with_overlap(150)
            .expect("config");
        let whole: Vec<(usize, &str)> = text_splitter::TextSplitter::new(config)
            .chunk_indices(&text)
            .collect();
        assert_eq!(sectioned.len(), whole.len());
        for (ours, (offset, theirs)) in sectioned.iter().zip(&whole) {
            assert_eq!(ours.text, *theirs);
            assert_eq!(ours.start as usize, text[..*offset].chars().count());
        }
    }

    #[test]
    fn sections_end_after_a_crlf_blank_line_or_a_cjk_sentence() {
        // Lines of a paragraph follow the blank line inside the window.
        let crlf = format!("{}\r\n\r\n{}", "a b c d. ".repeat(33), "e f g h.\r\n".repeat(120));
        let end = super::section_end(&crlf, 0, 400);
        assert_eq!(
            &crlf[end - 4..end],
            "\r\n\r\n",
            "after the blank line, not a later line break"
        );
        // No spaces at all: the cut follows a full stop, on a char boundary.
        let cjk = "这是一个句子。".repeat(200);
        let end = super::section_end(&cjk, 0, 1000);
        assert!(cjk[..end].ends_with('。'), "{end}");
    }
}
