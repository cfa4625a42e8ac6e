//! DOCX: the text of `word/document.xml` (paragraphs, table cells, tabs and
//! breaks), read with a cap on inflated bytes so a ZIP bomb stops early.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::Event;

use super::ParseError;

pub fn to_text(bytes: &[u8], max_bytes: usize) -> Result<String, ParseError> {
    let corrupt =
        |e: &dyn std::fmt::Display| ParseError::Permanent(format!("corrupt: cannot read the DOCX: {e}"));
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(&e))?;
    let file = archive.by_name("word/document.xml").map_err(|_| {
        ParseError::Permanent("corrupt: the file is a ZIP archive but not a Word document".into())
    })?;
    let too_large = || {
        ParseError::Permanent(format!(
            "too_large: the document inflates past {} MB",
            max_bytes / (1 << 20)
        ))
    };
    // The declared size is checked first; `take` below bounds a lying one.
    if file.size() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
        return Err(too_large());
    }
    let mut xml = Vec::new();
    // Read one byte past the cap to know whether the cap was hit.
    let cap = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap).read_to_end(&mut xml).map_err(|e| match e.kind() {
        std::io::ErrorKind::OutOfMemory => too_large(),
        _ => corrupt(&e),
    })?;
    if xml.len() > max_bytes {
        return Err(too_large());
    }
    text_of(&xml).map_err(|e| corrupt(&e))
}

fn text_of(xml: &[u8]) -> Result<String, quick_xml::Error> {
    let mut reader = Reader::from_reader(xml);
    let mut out = String::new();
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) if e.local_name().as_ref() == b"t" => in_text = true,
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => out.push('\n'),
                b"tc" => out.push_str(" | "),
                b"tr" => out.push('\n'),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" => out.push('\t'),
                b"br" | b"cr" => out.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let decoded = t.decode().map_err(quick_xml::Error::from)?;
                let unescaped = quick_xml::escape::unescape(&decoded).map_err(quick_xml::Error::from)?;
                out.push_str(&unescaped);
            }
            Event::GeneralRef(r) if in_text => {
                let name = r.decode().map_err(quick_xml::Error::from)?;
                let entity = format!("&{name};");
                match quick_xml::escape::unescape(&entity) {
                    Ok(text) => out.push_str(&text),
                    Err(_) => out.push_str(&entity),
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn paragraphs_cells_and_entities() {
        let xml = br#"<w:document xmlns:w="x"><w:body>
            <w:p><w:r><w:t>Fish &amp; chips</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>oncall@example.com</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            </w:body></w:document>"#;
        let text = super::text_of(xml).unwrap();
        assert!(text.contains("Fish & chips"), "{text}");
        assert!(text.contains("oncall@example.com"), "{text}");
    }
}
