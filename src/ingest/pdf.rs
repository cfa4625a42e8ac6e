//! PDF: text through pdf-extract. It is known to panic and to run long on
//! hostile files, which is why parsing runs in a child process with limits.

use super::ParseError;

pub fn to_text(bytes: &[u8]) -> Result<String, ParseError> {
    if is_encrypted(bytes) {
        return Err(ParseError::Permanent(
            "encrypted: the PDF is password-protected; upload an unprotected copy".into(),
        ));
    }
    pdf_extract::extract_text_from_mem(bytes).map_err(|e| {
        let message = e.to_string();
        if message.to_ascii_lowercase().contains("encrypt") {
            ParseError::Permanent(
                "encrypted: the PDF is password-protected; upload an unprotected copy".into(),
            )
        } else {
            ParseError::Permanent(format!("corrupt: cannot read the PDF: {message}"))
        }
    })
}

/// An encrypted PDF names an `/Encrypt` dictionary in its trailer.
fn is_encrypted(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64 * 1024)..];
    tail.windows(8).any(|w| w == b"/Encrypt")
}
