//! WebSocket frames written whole (RFC 6455 section 5.2), for connections without
//! compression: a server's frames are unmasked, so one encoded frame serves every receiver
//! of the same payload, and a room event's frame is made once (`Form::PlainFrame`,
//! `Form::JsonFrame`). The library still writes control frames and everything compressed.

use bytes::{BufMut, Bytes, BytesMut};

/// A final, unmasked text frame carrying `payload`.
pub(super) fn text_frame(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut frame = BytesMut::with_capacity(header_len(len) + len);
    frame.put_u8(0x80 | 0x1);
    if len < 126 {
        frame.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        frame.put_u8(126);
        frame.put_u16(short);
    } else {
        frame.put_u8(127);
        frame.put_u64(len as u64);
    }
    frame.put_slice(payload);
    frame.freeze()
}

/// The header's length for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..126 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a frame back the way a client does; returns (fin, opcode, masked, payload).
    fn parse(frame: &[u8]) -> (bool, u8, bool, &[u8]) {
        let (len, at) = match frame[1] & 0x7F {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert_eq!(
            frame.len(),
            at + len,
            "the frame is exactly its header and payload"
        );
        (
            frame[0] & 0x80 != 0,
            frame[0] & 0x0F,
            frame[1] & 0x80 != 0,
            &frame[at..],
        )
    }

    #[test]
    fn each_length_form_round_trips_at_its_edges() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let frame = text_frame(&payload);
            assert_eq!(frame.len(), header_len(len) + len, "len {len}");
            let (fin, opcode, masked, body) = parse(&frame);
            assert!(fin && !masked, "len {len}");
            assert_eq!(opcode, 1, "len {len}");
            assert_eq!(body, &payload[..], "len {len}");
        }
    }
}
