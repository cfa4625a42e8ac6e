//! Snippets of search hits: the window of a chunk's text that shows the
//! most query terms. Computed from the chunk text in microseconds; FTS5's
//! `snippet()` took about a millisecond per hit, since every call starts
//! the whole query again for one row.

/// Words a snippet shows (as FTS5's `snippet(..., 24)` did).
const WINDOW: usize = 24;
/// Marks text cut off before or after the snippet.
const ELLIPSIS: &str = "…";

/// The `WINDOW` consecutive words of `text` that hold the most distinct
/// `terms` (then the most matches; the earliest on a tie), with an
/// ellipsis where text was cut off. `terms` are lower-case words.
pub fn snippet(text: &str, terms: &[String]) -> String {
    let terms: Vec<Vec<char>> = terms.iter().map(|t| fold(t)).collect();
    let words: Vec<(usize, usize, Option<usize>)> = words(text)
        .map(|(start, end)| {
            let word = fold(&text[start..end]);
            (start, end, terms.iter().position(|t| same_stem(&word, t)))
        })
        .collect();
    if words.is_empty() {
        return String::new();
    }
    let window = WINDOW.min(words.len());
    // Best: most distinct terms, then most matches, then the matches most
    // in the middle (as much context before as after them).
    let mut best = (0, (0, 0, std::cmp::Reverse(usize::MAX)));
    for first in 0..=words.len() - window {
        let shown = &words[first..first + window];
        let mut matched: Vec<usize> = shown.iter().filter_map(|w| w.2).collect();
        let count = matched.len();
        matched.sort_unstable();
        matched.dedup();
        let positions: Vec<usize> = (0..window).filter(|&i| shown[i].2.is_some()).collect();
        let balance = match (positions.first(), positions.last()) {
            (Some(&a), Some(&b)) => a.abs_diff(window - 1 - b),
            _ => usize::MAX,
        };
        let score = (matched.len(), count, std::cmp::Reverse(balance));
        if score > best.1 {
            best = (first, score);
        }
    }
    let (first, last) = (best.0, best.0 + window - 1);
    let mut out = String::new();
    if first > 0 {
        out.push_str(ELLIPSIS);
    }
    out.push_str(&text[words[first].0..words[last].1]);
    if last + 1 < words.len() {
        out.push_str(ELLIPSIS);
    }
    out
}

/// Byte ranges of the words (runs of alphanumerics) of `text`.
fn words(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = None;
    let mut chars = text.char_indices().chain(std::iter::once((text.len(), ' ')));
    std::iter::from_fn(move || {
        for (i, c) in chars.by_ref() {
            match (start, c.is_alphanumeric()) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    start = None;
                    return Some((s, i));
                }
                _ => {}
            }
        }
        None
    })
}

/// Lower case without the common Latin diacritics, as the index folds them.
fn fold(word: &str) -> Vec<char> {
    word.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
            'ç' | 'ć' | 'č' => 'c',
            'ď' => 'd',
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' => 'i',
            'ł' => 'l',
            'ñ' | 'ń' | 'ň' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
            'ř' => 'r',
            'ś' | 'š' => 's',
            'ť' => 't',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => 'u',
            'ý' | 'ÿ' => 'y',
            'ź' | 'ż' | 'ž' => 'z',
            other => other,
        })
        .collect()
}

/// Whether two folded words look like forms of one word (what the index's
/// Porter stemmer conflates, roughly): equal, or sharing a prefix of at
/// least three letters that leaves at most two of the shorter one
/// ("run"/"running", "study"/"studies").
fn same_stem(a: &[char], b: &[char]) -> bool {
    if a == b {
        return true;
    }
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    common >= 3 && common + 2 >= a.len().min(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn shows_the_window_with_the_most_query_terms() {
        let filler = "lorem ipsum dolor sit amet ".repeat(20);
        let text = format!("{filler}the quarterly Report is in the blue folder. {filler}");
        let s = snippet(&text, &terms(&["report", "folder"]));
        assert!(s.contains("Report is in the blue folder"), "{s}");
        assert!(s.starts_with(ELLIPSIS) && s.ends_with(ELLIPSIS), "{s}");
        assert_eq!(s.replace(ELLIPSIS, "").split_whitespace().count(), WINDOW);
        assert!(text.contains(s.trim_matches('…')), "{s}");
    }

    #[test]
    fn matches_forms_of_a_word_and_folded_diacritics() {
        let filler = "alpha beta gamma delta ".repeat(10);
        for (text, term) in [
            (format!("{filler}she was Running late {filler}"), "run"),
            (format!("{filler}several studies found {filler}"), "study"),
            (format!("{filler}the office in Zürich opened {filler}"), "zurich"),
        ] {
            let s = snippet(&text, &terms(&[term]));
            let shown = s.to_lowercase();
            assert!(
                shown.contains("running") || shown.contains("studies") || shown.contains("zürich"),
                "{term}: {s}"
            );
        }
    }

    #[test]
    fn short_texts_are_shown_whole_and_empty_ones_give_nothing() {
        assert_eq!(snippet("A short note.", &terms(&["note"])), "A short note");
        assert_eq!(snippet("  ", &terms(&["x"])), "");
        // No term found: the start of the text.
        let s = snippet(&"word ".repeat(40), &terms(&["absent"]));
        assert!(s.starts_with("word") && s.ends_with(ELLIPSIS), "{s}");
    }
}
