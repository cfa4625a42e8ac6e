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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_and_utf16_decode() {
        assert_eq!(decode(b"Soci\xe9t\xe9 G\xe9n\xe9rale"), "Société Générale");
        assert_eq!(decode(&[0xFF, 0xFE, b'h', 0, b'i', 0]), "hi");
        assert_eq!(decode("déjà vu".as_bytes()), "déjà vu");
    }
}
