//! The line forms: `nick: text\n` for TCP and UDP, `nick: text` for the seed's WebSocket chat,
//! and `* ...` notices for presence and gaps.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{Event, EventKind, Sender};
use crate::hub::{Gap, Replay};

/// Marks a name nobody vouched for on a server that verifies names: `~bob`.
pub(super) const ANONYMOUS_MARK: &str = "~";

/// The sender's name as lines show it: `~nick` when anonymous on a server that verifies.
fn shown(ev: &Event) -> std::borrow::Cow<'_, str> {
    match ev.sender {
        Sender::Anonymous => format!("{ANONYMOUS_MARK}{}", ev.nick).into(),
        _ => std::borrow::Cow::Borrowed(&ev.nick),
    }
}

/// The event as newline-terminated text lines, the TCP and UDP wire form.
///
/// A message with several lines of text becomes one `nick: line` per line, so a line-oriented
/// client never sees an unattributed line; a direct message shows as `from -> you: line`.
pub(super) fn event(ev: &Event) -> Bytes {
    let mut out = BytesMut::with_capacity(ev.nick.len() + ev.text.len() + 32);
    let notice = match &ev.kind {
        EventKind::Message => {
            attributed(&mut out, shown(ev).as_bytes(), b": ", &ev.text);
            return out.freeze();
        }
        EventKind::Direct { .. } => {
            attributed(&mut out, shown(ev).as_bytes(), b" -> you: ", &ev.text);
            return out.freeze();
        }
        EventKind::Join => format!("* {} joined {}\n", ev.nick, ev.room),
        EventKind::Leave { reason: None } => format!("* {} left {}\n", ev.nick, ev.room),
        EventKind::Leave {
            reason: Some(reason),
        } => format!("* {} left {} ({})\n", ev.nick, ev.room, reason.as_str()),
        EventKind::Nick { old } => format!("* {old} is now known as {}\n", ev.nick),
        EventKind::Crowd { joined, left } => {
            let counts = match (joined, left) {
                (0, left) => format!("{left} left"),
                (joined, 0) => format!("{joined} joined"),
                (joined, left) => format!("{joined} joined and {left} left"),
            };
            format!(
                "* {counts} {} (too many to list; /who for members)\n",
                ev.room
            )
        }
    };
    out.put_slice(notice.as_bytes());
    out.freeze()
}

/// One `PREFIX SEP line\n` per line of `text`, each made safe for a terminal.
fn attributed(out: &mut BytesMut, prefix: &[u8], sep: &[u8], text: &str) {
    for part in text.split('\n') {
        let part = part.strip_suffix('\r').unwrap_or(part);
        out.put_slice(prefix);
        out.put_slice(sep);
        out.put_slice(terminal_safe(part).as_bytes());
        out.put_u8(b'\n');
    }
}

/// The text with everything a terminal would act on, or that hides or reorders text,
/// replaced by a visible stand-in: C0 controls (tab aside) by their Control Pictures
/// (`ESC` → `␛`, so OSC 52 clipboard writes, title changes, cursor moves, `CR` and backspace
/// overwrites all show as text), `DEL` by `␡`, and C1 controls, bidirectional overrides and
/// isolates, and invisible format characters by `�`. Joiners (ZWJ, ZWNJ) stay: emoji and
/// several scripts need them. Text that needs nothing is borrowed, not copied.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_standin) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(text.chars().map(standin).collect())
}

fn needs_standin(c: char) -> bool {
    standin(c) != c
}

fn standin(c: char) -> char {
    match c {
        '\t' => c,
        '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
        '\u{7f}' => '\u{2421}',
        '\u{80}'..='\u{9f}'
        | '\u{061c}'
        | '\u{200b}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}'
        | '\u{feff}' => '\u{fffd}',
        _ => c,
    }
}

/// The payload of a plain WebSocket text frame: `nick: text` as the seed's chat sends it
/// (the text unchanged, newlines included), and the line form without its newline otherwise.
pub(super) fn plain(ev: &Event) -> Bytes {
    let sep: &[u8] = match ev.kind {
        EventKind::Message => b": ",
        EventKind::Direct { .. } => b" -> you: ",
        _ => {
            let line = event(ev);
            return line.slice(..line.len() - 1);
        }
    };
    let mut out = BytesMut::with_capacity(ev.nick.len() + sep.len() + ev.text.len() + 1);
    out.put_slice(shown(ev).as_bytes());
    out.put_slice(sep);
    out.put_slice(ev.text.as_bytes());
    out.freeze()
}

/// The line prefixed with the message id, `[EPOCH-SEQ] nick: text\n`, as shown in replays so
/// that a line client can resume with `/since`. Not cached: replays are per client, not the
/// broadcast path.
pub(super) fn with_id(ev: &Event) -> Bytes {
    let line = super::event(super::Wire::Line, ev);
    match ev.id {
        Some(id) => {
            let mut out = BytesMut::with_capacity(line.len() + 24);
            for part in line.split_inclusive(|&b| b == b'\n') {
                out.put_slice(format!("[{id}] ").as_bytes());
                out.put_slice(part);
            }
            out.freeze()
        }
        None => line.clone(),
    }
}

/// The notice a line-oriented client gets for a gap, without newline.
pub fn gap(replay: &Replay) -> Option<String> {
    let first = replay
        .events
        .first()
        .and_then(|e| e.id)
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    replay.gap.map(|gap| match gap {
        Gap::Expired => format!(
            "* gap in {}: older messages expired; history resumes at {first}",
            replay.room
        ),
        Gap::Reset => format!(
            "* gap in {}: its history was reset; replaying all {} kept messages",
            replay.room,
            replay.events.len()
        ),
        Gap::Truncated => format!(
            "* gap in {}: reply size limit reached; older messages left out, history resumes \
             at {first} (GET /rooms/{}/messages pages back)",
            replay.room, replay.room
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_terminal_acts_on_gets_through() {
        let attack = "\u{1b}]52;c;ZXZpbA==\u{7}hi\u{1b}[2J\rX\u{8}\u{9b}31m\u{202e}txt.exe";
        let safe = terminal_safe(attack);
        assert!(
            !safe.chars().any(|c| c.is_control() && c != '\t'),
            "{safe:?}"
        );
        assert!(safe.starts_with('\u{241b}'), "ESC shows as ␛: {safe:?}");
        assert!(!safe.contains('\u{202e}'));
        // Ordinary text, tabs, emoji with joiners and other scripts are left alone.
        for fine in [
            "plain\ttext",
            "👨\u{200d}👩\u{200d}👧",
            "привіт",
            "می\u{200c}خواهم",
        ] {
            assert!(
                matches!(terminal_safe(fine), std::borrow::Cow::Borrowed(_)),
                "{fine}"
            );
        }
    }
}
