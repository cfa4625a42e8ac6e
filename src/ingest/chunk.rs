//! Chunking by structure: text-splitter breaks at the largest boundary that
//! fits (blank lines between blocks, then lines, sentences, words) up to
//! `size` characters, with `overlap` characters repeated between chunks.
//! Each chunk keeps its character offsets so citations can point at it.

use text_splitter::{ChunkConfig, TextSplitter};

use crate::db::jobs::ChunkText;

pub fn chunk(text: &str, size: usize, overlap: usize) -> Vec<ChunkText> {
    let size = size.max(1);
    let config = ChunkConfig::new(size)
        .with_overlap(overlap.min(size - 1))
        .unwrap_or_else(|_| ChunkConfig::new(size));
    let splitter = TextSplitter::new(config);
    let mut chunks = Vec::new();
    // Byte offsets to character offsets, walking forward once.
    let (mut byte, mut chars) = (0usize, 0usize);
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
}
