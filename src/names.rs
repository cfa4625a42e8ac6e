//! Names people see: file names and conversation titles lose the characters
//! that hide or disguise text (controls, bidi overrides, zero-width marks),
//! so `invoice\u{202E}fdp.exe` cannot pose as `invoiceexe.pdf`.

/// Most characters a stored file name keeps.
const MAX_FILENAME_CHARS: usize = 255;
/// Longest extension kept whole when a long file name is shortened.
const MAX_EXTENSION_CHARS: usize = 16;

/// Characters that change how text around them is shown without showing
/// themselves (Unicode's format characters and line separators): the soft
/// hyphen, bidi marks, embeddings, overrides and isolates, zero-width
/// spaces and joiners, invisible operators, interlinear annotation marks,
/// tag characters, and the byte order mark.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// `raw` without control and invisible characters, trimmed.
pub fn clean_label(raw: &str) -> String {
    raw.chars()
        .filter(|&c| !c.is_control() && !is_invisible(c))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The client's name reduced to its last path component (`/` and `\`
/// both separate), without control or invisible characters; metadata only,
/// never a path. A name longer than 255 characters is shortened in its
/// stem, so it keeps its extension (and with it its type).
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean = clean_label(last);
    if clean.is_empty() || clean == "." || clean == ".." {
        return "upload".to_owned();
    }
    if clean.chars().count() <= MAX_FILENAME_CHARS {
        return clean;
    }
    let extension = clean
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.chars().count() <= MAX_EXTENSION_CHARS);
    match extension {
        Some(ext) => {
            let stem: String = clean
                .chars()
                .take(MAX_FILENAME_CHARS - 1 - ext.chars().count())
                .collect();
            format!("{}.{ext}", stem.trim_end())
        }
        None => clean.chars().take(MAX_FILENAME_CHARS).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_their_paths_and_control_characters() {
        assert_eq!(sanitize_filename("../../etc/passwd.txt"), "passwd.txt");
        assert_eq!(sanitize_filename("..\\..\\x.txt"), "x.txt");
        assert_eq!(sanitize_filename("a\u{0}b\nc.md"), "abc.md");
        assert_eq!(sanitize_filename(".."), "upload");
        assert_eq!(sanitize_filename(""), "upload");
    }

    #[test]
    fn bidi_and_zero_width_characters_are_removed() {
        assert_eq!(sanitize_filename("invoice\u{202E}fdp.txt"), "invoicefdp.txt");
        assert_eq!(sanitize_filename("a\u{200B}b\u{2066}c\u{FEFF}.md"), "abc.md");
        assert_eq!(clean_label(" \u{200F}Plans\u{2069} "), "Plans");
        assert_eq!(clean_label("soft\u{AD}hy\u{2028}phen\u{E0041}"), "softhyphen");
    }

    #[test]
    fn a_long_name_keeps_its_extension() {
        let long = format!("{}.pdf", "é".repeat(300));
        let short = sanitize_filename(&long);
        assert_eq!(short.chars().count(), 255);
        assert!(short.ends_with(".pdf"), "{short}");
        // Without a usable extension the name is just cut.
        let plain = "x".repeat(300);
        assert_eq!(sanitize_filename(&plain), "x".repeat(255));
    }
}
