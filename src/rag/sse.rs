//! A small server-sent events reader: lines split on LF, CRLF or CR,
//! `data:` lines of one event joined with `\n`, comments (`:`) and other
//! fields ignored, an event dispatched at a blank line. Bytes may arrive
//! split anywhere, even inside a UTF-8 character.

#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
    /// The previous byte was a CR (a following LF belongs to it).
    after_cr: bool,
}

impl SseReader {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr && byte == b'\n' {
                self.after_cr = false;
                continue;
            }
            self.after_cr = byte == b'\r';
            if byte == b'\n' || byte == b'\r' {
                let line = std::mem::take(&mut self.line);
                self.end_line(&String::from_utf8_lossy(&line), &mut events);
            } else {
                self.line.push(byte);
            }
        }
        events
    }

    fn end_line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment, e.g. a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            self.data.push(value.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SseReader;

    #[test]
    fn events_split_anywhere_and_multiline_data() {
        let mut reader = SseReader::default();
        let stream = ": keep-alive\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: x\ndata:[DONE]\n\n".as_bytes();
        let mut events = Vec::new();
        for piece in stream.chunks(3) {
            events.extend(reader.feed(piece));
        }
        assert_eq!(events, vec!["{\"a\":\n1}".to_owned(), "[DONE]".to_owned()]);
    }

    #[test]
    fn utf8_split_across_chunks_survives() {
        let mut reader = SseReader::default();
        let bytes = "data: Zürich\n\n".as_bytes();
        let (a, b) = bytes.split_at(8); // inside "ü"
        let mut events = reader.feed(a);
        events.extend(reader.feed(b));
        assert_eq!(events, vec!["Zürich".to_owned()]);
    }
}
