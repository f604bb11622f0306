//! Line framing for the TCP chat: `\n`-terminated UTF-8 lines with a length limit.
//!
//! The decoder works on a `BytesMut` the transport reads into. "Need more bytes" is
//! `Ok(None)`, not an error. A line over the limit is reported once and then skipped up to its
//! newline, so one oversized paste costs the client one `ERR` and the connection stays usable.

use bytes::{Buf, BytesMut};

/// What went wrong with one line; the connection itself stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line grew past the limit before its newline arrived; the rest of it is discarded.
    #[error("line longer than {limit} bytes")]
    TooLong {
        /// The configured maximum line length in bytes.
        limit: usize,
    },
    /// The line was not valid UTF-8; it is dropped.
    #[error("invalid UTF-8")]
    InvalidUtf8,
}

/// Splits a byte stream into lines. Holds only the "discarding an oversized line" state; the
/// bytes live in the caller's buffer.
#[derive(Debug)]
pub struct LineDecoder {
    /// Longest accepted line in bytes, not counting the `\n` (and an optional `\r`).
    max_len: usize,
    /// True while skipping the remainder of a line already reported as too long.
    discarding: bool,
    /// How far `buf` has already been searched for `\n`, so a slow trickle is not rescanned.
    scanned: usize,
}

impl LineDecoder {
    /// A decoder accepting lines up to `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            discarding: false,
            scanned: 0,
        }
    }

    /// Takes the next complete line out of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. A `TooLong` error is returned once per oversized
    /// line; its bytes are consumed as they arrive so the buffer never grows past the limit.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, LineError> {
        loop {
            let newline = buf[self.scanned..].iter().position(|&b| b == b'\n');
            match newline {
                Some(offset) => {
                    let end = self.scanned + offset;
                    self.scanned = 0;
                    if self.discarding {
                        buf.advance(end + 1);
                        self.discarding = false;
                        continue;
                    }
                    let line = buf.split_to(end + 1);
                    let mut body = &line[..end];
                    if body.last() == Some(&b'\r') {
                        body = &body[..body.len() - 1];
                    }
                    if body.len() > self.max_len {
                        return Err(LineError::TooLong {
                            limit: self.max_len,
                        });
                    }
                    return to_string(body).map(Some);
                }
                None => {
                    if self.discarding {
                        buf.clear();
                        self.scanned = 0;
                        return Ok(None);
                    }
                    // One extra byte of slack for a `\r` that may precede the newline.
                    if buf.len() > self.max_len + 1 {
                        buf.clear();
                        self.scanned = 0;
                        self.discarding = true;
                        return Err(LineError::TooLong {
                            limit: self.max_len,
                        });
                    }
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    /// Takes whatever partial line is buffered as a complete line.
    ///
    /// Called when the peer paused after sending text without a newline: the seed's Python
    /// client sends each message exactly like that.
    pub fn flush(&mut self, buf: &mut BytesMut) -> Result<Option<String>, LineError> {
        self.scanned = 0;
        if self.discarding {
            buf.clear();
            self.discarding = false;
            return Ok(None);
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let line = buf.split();
        let mut body = &line[..];
        if body.last() == Some(&b'\r') {
            body = &body[..body.len() - 1];
        }
        if body.len() > self.max_len {
            return Err(LineError::TooLong {
                limit: self.max_len,
            });
        }
        to_string(body).map(Some)
    }

    /// True when a partial line is waiting for its newline (or for a pause).
    pub fn has_partial(&self, buf: &BytesMut) -> bool {
        !self.discarding && !buf.is_empty()
    }
}

fn to_string(body: &[u8]) -> Result<String, LineError> {
    std::str::from_utf8(body)
        .map(str::to_owned)
        .map_err(|_| LineError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn splits_lines_and_strips_crlf() {
        let mut d = LineDecoder::new(100);
        let mut b = buf(b"hello\r\nworld\npart");
        assert_eq!(d.decode(&mut b), Ok(Some("hello".into())));
        assert_eq!(d.decode(&mut b), Ok(Some("world".into())));
        assert_eq!(d.decode(&mut b), Ok(None));
        assert!(d.has_partial(&b));
        assert_eq!(d.flush(&mut b), Ok(Some("part".into())));
        assert!(b.is_empty());
    }

    #[test]
    fn line_exactly_at_limit_is_accepted() {
        let mut d = LineDecoder::new(5);
        let mut b = buf(b"12345\r\n");
        assert_eq!(d.decode(&mut b), Ok(Some("12345".into())));
    }

    #[test]
    fn too_long_line_is_reported_once_and_skipped() {
        let mut d = LineDecoder::new(4);
        let mut b = buf(b"abcdefgh");
        assert_eq!(d.decode(&mut b), Err(LineError::TooLong { limit: 4 }));
        assert_eq!(d.decode(&mut b), Ok(None));
        b.extend_from_slice(b"ijk\nok\n");
        assert_eq!(d.decode(&mut b), Ok(Some("ok".into())));
    }

    #[test]
    fn too_long_complete_line_is_reported() {
        let mut d = LineDecoder::new(2);
        let mut b = buf(b"abc\nx\n");
        assert_eq!(d.decode(&mut b), Err(LineError::TooLong { limit: 2 }));
        assert_eq!(d.decode(&mut b), Ok(Some("x".into())));
    }

    #[test]
    fn invalid_utf8_drops_only_that_line() {
        let mut d = LineDecoder::new(100);
        let mut b = buf(b"\xff\xfe\nfine\n");
        assert_eq!(d.decode(&mut b), Err(LineError::InvalidUtf8));
        assert_eq!(d.decode(&mut b), Ok(Some("fine".into())));
    }

    #[test]
    fn trickled_bytes_form_one_line() {
        let mut d = LineDecoder::new(100);
        let mut b = BytesMut::new();
        for chunk in [&b"he"[..], b"ll", b"o\n"] {
            b.extend_from_slice(chunk);
            let got = d.decode(&mut b).unwrap();
            if chunk == b"o\n" {
                assert_eq!(got, Some("hello".into()));
            } else {
                assert_eq!(got, None);
            }
        }
    }

    #[test]
    fn multibyte_utf8_split_across_reads() {
        let mut d = LineDecoder::new(100);
        let text = "привіт\n".as_bytes();
        let mut b = buf(&text[..3]);
        assert_eq!(d.decode(&mut b), Ok(None));
        b.extend_from_slice(&text[3..]);
        assert_eq!(d.decode(&mut b), Ok(Some("привіт".into())));
    }
}
