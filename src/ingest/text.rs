//! Plain text: lenient decoding (UTF-8, a UTF-16 BOM, else the most likely
//! legacy encoding such as Windows-1252) so that every word is searchable.

/// Whether the bytes look like text: no NUL bytes, unless a UTF-16 byte
/// order mark says they are UTF-16.
pub fn looks_like_text(head: &[u8]) -> bool {
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return true;
    }
    !head.contains(&0)
}

/// Decodes bytes to text, never failing: a BOM wins, then valid UTF-8, then
/// the encoding chardetng finds most likely.
pub fn decode(bytes: &[u8]) -> String {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        return text.into_owned();
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    let encoding = detector.guess(None, chardetng::Utf8Detection::Allow);
    let (text, _, _) = encoding.decode(bytes);
    text.into_owned()
}

/// The charset to serve text with, judged from its first bytes (`head`;
/// `whole` when that is all of it): a BOM, else UTF-8 when the bytes are
/// (a character cut at the end of a partial head is allowed), else what
/// chardetng finds most likely, as `decode` reads it.
pub fn charset(head: &[u8], whole: bool) -> &'static str {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(head) {
        return encoding.name();
    }
    match std::str::from_utf8(head) {
        Ok(_) => return encoding_rs::UTF_8.name(),
        // Only the last character of a partial head may be incomplete.
        Err(e) if !whole && e.error_len().is_none() => return encoding_rs::UTF_8.name(),
        Err(_) => {}
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(head, whole);
    detector.guess(None, chardetng::Utf8Detection::Allow).name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets_follow_the_bytes() {
        assert_eq!(charset("déjà vu".as_bytes(), true), "UTF-8");
        assert_eq!(charset(b"Soci\xe9t\xe9 G\xe9n\xe9rale", true), "windows-1252");
        assert_eq!(charset(&[0xFF, 0xFE, b'h', 0], true), "UTF-16LE");
        // A head that cuts `é` in half is still UTF-8; a whole file is not.
        assert_eq!(charset(b"caf\xc3", false), "UTF-8");
        assert_ne!(charset(b"caf\xc3", true), "UTF-8");
    }

    #[test]
    fn windows_1252_and_utf16_decode() {
        assert_eq!(decode(b"Soci\xe9t\xe9 G\xe9n\xe9rale"), "Société Générale");
        assert_eq!(decode(&[0xFF, 0xFE, b'h', 0, b'i', 0]), "hi");
        assert_eq!(decode("déjà vu".as_bytes()), "déjà vu");
    }
}
