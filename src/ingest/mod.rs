//! Turning uploaded files into searchable text: the supported kinds and
//! their detection, one parser module per format, and chunking. Parsing
//! runs in the worker's child process (`ragd parse`), never in the server.

mod chunk;
mod csv;
mod docx;
mod html;
mod json;
mod markdown;
mod pdf;
pub mod text;

pub use chunk::chunk;

/// A supported document kind; the parser that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Txt,
    Md,
    Html,
    Pdf,
    Docx,
    Csv,
    Json,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Txt,
        Kind::Md,
        Kind::Html,
        Kind::Pdf,
        Kind::Docx,
        Kind::Csv,
        Kind::Json,
    ];

    /// The kind for a file name's extension (case-insensitive).
    pub fn from_filename(name: &str) -> Option<Kind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" => Kind::Txt,
            "md" | "markdown" => Kind::Md,
            "html" | "htm" => Kind::Html,
            "pdf" => Kind::Pdf,
            "docx" => Kind::Docx,
            "csv" => Kind::Csv,
            "json" => Kind::Json,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Txt => "txt",
            Kind::Md => "md",
            Kind::Html => "html",
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Csv => "csv",
            Kind::Json => "json",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The content type the server reports, decided by kind, never by the
    /// client's part header.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Txt => "text/plain",
            Kind::Md => "text/markdown",
            Kind::Html => "text/html",
            Kind::Pdf => "application/pdf",
            Kind::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind::Csv => "text/csv",
            Kind::Json => "application/json",
        }
    }

    /// The kind whose `content_type` this is.
    pub fn parse_content_type(content_type: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.content_type() == content_type)
    }

    /// Whether the first bytes of a file can be of this kind (a `.pdf` must
    /// start with `%PDF-`, a `.docx` is a ZIP, text kinds are not binary).
    pub fn matches(self, head: &[u8]) -> bool {
        match self {
            Kind::Pdf => head.starts_with(b"%PDF-"),
            Kind::Docx => head.starts_with(b"PK\x03\x04"),
            Kind::Txt | Kind::Md | Kind::Html | Kind::Csv | Kind::Json => text::looks_like_text(head),
        }
    }
}

/// Why a file could not be parsed. The message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ParseError {
    /// Can never succeed (corrupt, encrypted, no text, too large).
    Permanent(String),
    /// May succeed on a later attempt.
    Transient(String),
}

/// Extracts the plain text of a file of `kind`. `max_bytes` bounds the
/// extracted text (and, for ZIP-based kinds, what is inflated).
pub fn extract(kind: Kind, bytes: &[u8], max_bytes: usize) -> Result<String, ParseError> {
    let text = match kind {
        Kind::Txt => text::decode(bytes),
        Kind::Md => markdown::to_text(&text::decode(bytes)),
        Kind::Html => html::to_text(bytes)?,
        Kind::Pdf => pdf::to_text(bytes)?,
        Kind::Docx => docx::to_text(bytes, max_bytes)?,
        Kind::Csv => csv::to_text(&text::decode(bytes))?,
        Kind::Json => json::to_text(&text::decode(bytes))?,
    };
    if text.len() > max_bytes {
        return Err(ParseError::Permanent(format!(
            "too_large: the extracted text exceeds {} MB",
            max_bytes / (1 << 20)
        )));
    }
    if text.trim().is_empty() {
        return Err(ParseError::Permanent(
            "no_text: the file contains no text to index".into(),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_extensions_and_bytes() {
        assert_eq!(Kind::from_filename("Report.PDF"), Some(Kind::Pdf));
        assert_eq!(Kind::from_filename("notes.md"), Some(Kind::Md));
        assert_eq!(Kind::from_filename("archive.tar.gz"), None);
        assert_eq!(Kind::from_filename("noextension"), None);
        assert!(Kind::Pdf.matches(b"%PDF-1.7\n"));
        assert!(!Kind::Pdf.matches(b"hello"));
        assert!(Kind::Docx.matches(b"PK\x03\x04rest"));
        assert!(!Kind::Txt.matches(b"\x7fELF\x02\x01\x01\x00\x00\x00"));
        for kind in ["txt", "md", "html", "pdf", "docx", "csv", "json"] {
            assert_eq!(Kind::parse(kind).map(Kind::as_str), Some(kind));
        }
    }
}
