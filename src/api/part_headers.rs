//! Control bytes in the part headers of an upload. Some clients send a
//! file name with raw control bytes (`re\x01port.txt`); the multipart parser
//! (multer, through httparse) refuses such a header line, so the whole
//! upload would fail. API.md asks for the name to be kept with its control
//! characters removed, so the request body passes through this filter
//! first: it removes them from part headers, and leaves every byte of the
//! parts' contents as it is.
//!
//! The filter finds the parts the way multer does: the first `--boundary`
//! anywhere, later ones as `\r\n--boundary`; the boundary's line ends at its
//! first `\r\n`, and the part's headers at the first `\r\n\r\n` after that.
//! Its headers end where multer's do, so no byte of a file is ever touched.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use futures_util::TryStreamExt;

/// Layer function for the upload route: filters a multipart body.
pub async fn clean(request: Request) -> Request {
    let boundary = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        // Not multipart: the handler answers 415.
        return request;
    };
    let (parts, body) = request.into_parts();
    let mut filter = PartHeaders::new(&boundary);
    let body = Body::from_stream(body.into_data_stream().map_ok(move |chunk| filter.clean(chunk)));
    Request::from_parts(parts, body)
}

/// Bytes a header line may not hold (httparse's rule): controls other than
/// tab, and DEL. CR and LF end lines and are kept.
fn forbidden(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f
}

/// Where the filter is in the body.
enum Stage {
    /// Before the first boundary.
    Preamble,
    /// After a boundary, up to the end of its line; whether a `\r` was
    /// just seen.
    BoundaryLine(bool),
    /// In a part's headers; how much of `\r\n\r\n` was just seen.
    Headers(usize),
    /// In a part's contents.
    Contents,
}

/// The streaming filter over one multipart body.
pub struct PartHeaders {
    first: Pattern,
    next: Pattern,
    stage: Stage,
}

impl PartHeaders {
    pub fn new(boundary: &str) -> PartHeaders {
        PartHeaders {
            first: Pattern::new(format!("--{boundary}").into_bytes()),
            next: Pattern::new(format!("\r\n--{boundary}").into_bytes()),
            stage: Stage::Preamble,
        }
    }

    /// The chunk without control bytes in part headers (the same bytes,
    /// uncopied, when it has none).
    pub fn clean(&mut self, chunk: Bytes) -> Bytes {
        let mut kept: Option<Vec<u8>> = None;
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match &mut self.stage {
                Stage::Preamble | Stage::Contents => {
                    let pattern = match self.stage {
                        Stage::Preamble => &mut self.first,
                        _ => &mut self.next,
                    };
                    // Nothing matched yet: skip to where a match can begin.
                    if pattern.matched == 0 {
                        match memchr::memchr(pattern.bytes[0], &chunk[i..]) {
                            Some(at) => {
                                if let Some(kept) = &mut kept {
                                    kept.extend_from_slice(&chunk[i..i + at]);
                                }
                                i += at;
                            }
                            None => {
                                if let Some(kept) = &mut kept {
                                    kept.extend_from_slice(&chunk[i..]);
                                }
                                break;
                            }
                        }
                    }
                    let b = chunk[i];
                    if let Some(kept) = &mut kept {
                        kept.push(b);
                    }
                    if pattern.step(b) {
                        self.stage = Stage::BoundaryLine(false);
                    }
                }
                Stage::BoundaryLine(cr) => {
                    if let Some(kept) = &mut kept {
                        kept.push(b);
                    }
                    if *cr && b == b'\n' {
                        self.stage = Stage::Headers(0);
                    } else {
                        *cr = b == b'\r';
                    }
                }
                Stage::Headers(seen) => {
                    if forbidden(b) {
                        kept.get_or_insert_with(|| chunk[..i].to_vec());
                    } else {
                        if let Some(kept) = &mut kept {
                            kept.push(b);
                        }
                        *seen = match (b, *seen) {
                            (b'\r', 0 | 2) | (b'\n', 1 | 3) => *seen + 1,
                            (b'\r', _) => 1,
                            _ => 0,
                        };
                        if *seen == 4 {
                            self.stage = Stage::Contents;
                        }
                    }
                }
            }
            i += 1;
        }
        kept.map_or(chunk, Bytes::from)
    }
}

/// A byte pattern found across chunks (Knuth-Morris-Pratt: a boundary may
/// overlap itself, as in `\r\n\r\n--b`).
struct Pattern {
    bytes: Vec<u8>,
    /// For each prefix, the length of its longest proper border.
    border: Vec<usize>,
    matched: usize,
}

impl Pattern {
    fn new(bytes: Vec<u8>) -> Pattern {
        let mut border = vec![0; bytes.len()];
        let mut k = 0;
        for i in 1..bytes.len() {
            while k > 0 && bytes[i] != bytes[k] {
                k = border[k - 1];
            }
            if bytes[i] == bytes[k] {
                k += 1;
            }
            border[i] = k;
        }
        Pattern {
            bytes,
            border,
            matched: 0,
        }
    }

    /// Feeds one byte; `true` when it completes the pattern.
    fn step(&mut self, b: u8) -> bool {
        while self.matched > 0 && self.bytes[self.matched] != b {
            self.matched = self.border[self.matched - 1];
        }
        if self.bytes[self.matched] == b {
            self.matched += 1;
        }
        if self.matched == self.bytes.len() {
            self.matched = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "XyZ";

    fn body(name: &[u8], contents: &[u8]) -> Vec<u8> {
        body_with(name, contents, b"n\x02")
    }

    fn body_with(name: &[u8], contents: &[u8], field: &[u8]) -> Vec<u8> {
        let mut body =
            b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".to_vec();
        body.extend_from_slice(name);
        body.extend_from_slice(b"\"\r\nContent-Type: text/plain\r\n\r\n");
        body.extend_from_slice(contents);
        body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(field);
        body.extend_from_slice(b"\"\r\n\r\nv\x03\r\n--XyZ--\r\n");
        body
    }

    /// The body filtered in chunks of `size` bytes.
    fn filtered(input: &[u8], size: usize) -> Vec<u8> {
        let mut filter = PartHeaders::new(BOUNDARY);
        input
            .chunks(size)
            .flat_map(|c| filter.clean(Bytes::copy_from_slice(c)).to_vec())
            .collect()
    }

    #[test]
    fn control_bytes_leave_headers_and_stay_in_contents_in_any_chunking() {
        // A boundary counts only after a line break, as for multer.
        let contents = b"line\x01one\r\n\r\nnot headers\x02 --XyZ not a boundary\x7f";
        let input = body(b"re\x01port\x7f.txt", contents);
        let mut want = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"report.txt\"\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        want.extend_from_slice(contents);
        want.extend_from_slice(
            b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nv\x03\r\n--XyZ--\r\n",
        );
        for size in [1, 2, 3, 5, 7, 64, input.len()] {
            assert_eq!(
                String::from_utf8_lossy(&filtered(&input, size)),
                String::from_utf8_lossy(&want),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_part_without_headers_ends_its_headers_where_multer_does() {
        // multer reads the empty part's "headers" up to the blank line
        // after `X`; what follows is contents, control bytes included.
        let input = b"--XyZ\r\n\r\nX\r\n\r\n--XyZ\r\nname=\"n\x01x\"\r\n\r\n";
        let out = filtered(input, 3);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(b"--XyZ\r\n\r\nX\r\n\r\n--XyZ\r\nname=\"n\x01x\"\r\n\r\n")
        );
    }

    #[test]
    fn a_body_without_control_bytes_passes_uncopied() {
        let input = Bytes::from(body_with(b"report.txt", b"plain \x01 text", b"n"));
        let mut filter = PartHeaders::new(BOUNDARY);
        let out = filter.clean(input.clone());
        assert_eq!(out.as_ptr(), input.as_ptr(), "the same bytes, not a copy");
    }

    #[test]
    fn a_boundary_that_overlaps_itself_is_still_found() {
        let mut p = Pattern::new(b"\r\n\r\n--b".to_vec());
        let found: Vec<bool> = b"\r\n\r\n\r\n--b".iter().map(|&b| p.step(b)).collect();
        assert_eq!(found.iter().filter(|&&f| f).count(), 1);
        assert!(found[found.len() - 1]);
    }
}
