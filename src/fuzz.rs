//! Fuzz targets: every parser that reads bytes from the network, with the properties each
//! must keep whatever it is given. Run by `fuzz/` (cargo-fuzz, nightly) and by the stable
//! harness in `tests/fuzz.rs`, which replays the committed corpus and mutations of it.
//! A target panics only when a property breaks; bad input must come back as an error.

use bytes::BytesMut;

use crate::protocol::{command, envelope, line::LineDecoder};
use crate::session::Request;

/// The TCP line decoder, fed in chunks whose sizes the first bytes pick: no line longer than
/// the limit comes out, and the buffer never holds much more than the limit.
pub fn line_decoder(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max_len = usize::from(limit % 64) + 1;
    let mut decoder = LineDecoder::new(max_len);
    let mut buf = BytesMut::new();
    let mut input = rest;
    while !input.is_empty() {
        let take = (usize::from(input[0]) % 17 + 1).min(input.len());
        buf.extend_from_slice(&input[..take]);
        input = &input[take..];
        // As the TCP reader does: errors (too long, bad UTF-8) are reported and reading goes
        // on. Each turn consumes bytes, so this ends.
        for _ in 0..=buf.len() {
            match decoder.decode(&mut buf) {
                Ok(Some(line)) => {
                    assert!(
                        line.len() <= max_len + 1,
                        "line of {} > {max_len}",
                        line.len()
                    );
                }
                Ok(None) => break,
                Err(_) => continue,
            }
        }
        assert!(buf.len() <= max_len + 18, "buffer grew to {}", buf.len());
    }
    let _ = decoder.flush(&mut buf);
}

/// The chat command parser and the request built from it; what a line client would be
/// shown of the text never carries an escape.
pub fn chat_command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let input = command::parse(text);
    let _ = Request::from_line(&input);
    let _ = Request::from_plain(&input);
    let shown = crate::wire::terminal_safe(text);
    assert!(!shown.contains('\u{1b}'), "an escape reached a terminal");
}

/// The structured protocol's client frames.
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = envelope::parse(text);
    let _ = Request::from_frame(&frame);
}

/// The HTTP query strings every endpoint takes, and what is read out of them.
pub fn http_query(data: &[u8]) {
    crate::http::fuzz_query(data);
}

/// MQTT packets, after a first byte that picks what the connection knows (nothing yet: only
/// CONNECT decodes; or 3.1.1; or 5.0), fed in chunks: decoding never panics, takes no more
/// than the size limit, and a decoded PUBLISH encodes back to the same topic and payload.
pub fn mqtt_packets(data: &[u8]) {
    crate::transport::mqtt::fuzz_packets(data);
}

/// gRPC: a `ClientFrame` (and the other requests) from any bytes, lowered into a request,
/// re-encoding to itself; any bytes as a `grpc-timeout`.
pub fn grpc_frames(data: &[u8]) {
    crate::grpc::fuzz_frames(data);
}
