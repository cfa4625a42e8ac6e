//! HTML: the visible text only (scripts and styles dropped), without
//! decorations.

use super::ParseError;

/// Wide enough that html2text does not wrap lines.
const WIDTH: usize = 10_000;

pub fn to_text(bytes: &[u8]) -> Result<String, ParseError> {
    let source = super::text::decode(bytes);
    html2text::config::plain_no_decorate()
        .string_from_read(source.as_bytes(), WIDTH)
        .map_err(|e| ParseError::Permanent(format!("corrupt: cannot read the HTML: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_and_styles_are_not_text() {
        let text = super::to_text(
            b"<html><head><style>.x{}</style><script>var s='SECRET';</script></head>\
              <body><p>Fixes the <b>timezone bug</b> &amp; more</p></body></html>",
        )
        .unwrap();
        assert!(text.contains("timezone bug & more"), "{text}");
        assert!(!text.contains("SECRET"));
        assert!(!text.contains(".x{}"));
    }
}
