//! The chat command language shared by TCP and UDP: a line is either text or a `/command`.
//!
//! A line starting with `//` is text that begins with one `/`, so anything can be said.

use super::names::{NameError, check_nick, check_room};

/// One parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Nothing to do (an empty line).
    Empty,
    /// Text to publish to the current room.
    Text(&'a str),
    /// A command.
    Command(Command),
}

/// A chat command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/nick NAME`: change nick.
    Nick(String),
    /// `/join ROOM`: move to a room, creating it on first use.
    Join(String),
    /// `/who`: list the members of the current room.
    Who,
    /// `/rooms [AFTER]`: list rooms with their member counts, a page at a time, after the
    /// named room when given.
    Rooms(Option<String>),
    /// `/help`: list the commands.
    Help,
    /// `/history [N]`: the last N messages of the room (default 20).
    History(usize),
    /// `/since ID`: every kept message after the id, then a note if some were lost.
    Since(String),
    /// `/msg NICK text`: send text to one user, wherever they are connected.
    Msg {
        /// The recipient's nick.
        to: String,
        /// The message (the rest of the line).
        text: String,
    },
    /// `/auth TOKEN`: sign in, or refresh the token before it expires.
    Auth(String),
    /// `/quit`: say goodbye and close.
    Quit,
}

/// Why a command line was refused; the text becomes an `ERR` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command word is not one we know.
    #[error("unknown command /{0} (try /help)")]
    Unknown(String),
    /// The command needs an argument that was not given.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The argument was not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// The `/help` text, one command per line.
pub const HELP: &[&str] = &[
    "/nick NAME   change your nick",
    "/join ROOM   move to ROOM (created on first use)",
    "/who         list the members of your room",
    "/rooms [R]   list rooms and their member counts (50 at a time, after R)",
    "/history N   show the last N messages (default 20, at most 1000)",
    "/since ID    show every message after ID (ids are shown by /history)",
    "/msg NICK T  send text T to NICK alone",
    "/auth TOKEN  sign in with a token (again before it expires, to refresh)",
    "/help        this list",
    "/quit        leave",
    "//text       send text that starts with /",
];

/// Parses one line of input.
pub fn parse(line: &str) -> Result<Input<'_>, CommandError> {
    if line.trim().is_empty() {
        return Ok(Input::Empty);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Input::Text(line));
    };
    if rest.starts_with('/') {
        return Ok(Input::Text(rest));
    }
    // Words are split on Unicode whitespace; `rest` starts at the first word so that slicing
    // past it (`/msg`) lands on a character boundary whatever spaces came first (U+0085, say).
    let rest = rest.trim_start();
    let mut words = rest.split_whitespace();
    let word = words.next().unwrap_or("");
    let arg = words.next();
    let extra = words.next().is_some();
    let command = match word.to_ascii_lowercase().as_str() {
        "nick" => match (arg, extra) {
            (Some(name), false) => {
                check_nick(name)?;
                Command::Nick(name.to_owned())
            }
            _ => return Err(CommandError::Usage("/nick NAME")),
        },
        "join" => match (arg, extra) {
            (Some(room), false) => {
                check_room(room)?;
                Command::Join(room.to_owned())
            }
            _ => return Err(CommandError::Usage("/join ROOM")),
        },
        "history" => match (arg, extra) {
            (None, _) => Command::History(20),
            (Some(n), false) => match n.parse::<usize>() {
                Ok(n @ 1..=1000) => Command::History(n),
                _ => return Err(CommandError::Usage("/history N (1 to 1000)")),
            },
            _ => return Err(CommandError::Usage("/history N (1 to 1000)")),
        },
        "since" => match (arg, extra) {
            (Some(id), false) => Command::Since(id.to_owned()),
            _ => return Err(CommandError::Usage("/since ID")),
        },
        "msg" => {
            // The text is the rest of the line after the nick, spacing kept.
            let after = rest[word.len()..].trim_start();
            match after.split_once(char::is_whitespace) {
                Some((to, text)) if !text.trim().is_empty() => {
                    check_nick(to)?;
                    Command::Msg {
                        to: to.to_owned(),
                        text: text.trim_start().to_owned(),
                    }
                }
                _ => return Err(CommandError::Usage("/msg NICK TEXT")),
            }
        }
        "auth" => match (arg, extra) {
            (Some(token), false) => Command::Auth(token.to_owned()),
            _ => return Err(CommandError::Usage("/auth TOKEN")),
        },
        "who" => Command::Who,
        "rooms" => match (arg, extra) {
            (None, _) => Command::Rooms(None),
            (Some(after), false) => {
                check_room(after)?;
                Command::Rooms(Some(after.to_owned()))
            }
            _ => return Err(CommandError::Usage("/rooms [AFTER]")),
        },
        "help" => Command::Help,
        "quit" | "exit" => Command::Quit,
        _ => return Err(CommandError::Unknown(word.to_owned())),
    };
    Ok(Input::Command(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_unicode_space_before_a_command_is_skipped_safely() {
        // Found by tests/fuzz.rs: `/` then U+0085 (two bytes) made `/msg` slice mid-character.
        assert_eq!(
            parse("/\u{85}msg bob hi"),
            Ok(Input::Command(Command::Msg {
                to: "bob".into(),
                text: "hi".into()
            }))
        );
    }

    #[test]
    fn text_and_escaped_slash() {
        assert_eq!(parse("hi there"), Ok(Input::Text("hi there")));
        assert_eq!(parse("//etc/passwd"), Ok(Input::Text("/etc/passwd")));
        assert_eq!(parse("   "), Ok(Input::Empty));
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse("/nick bob"),
            Ok(Input::Command(Command::Nick("bob".into())))
        );
        assert_eq!(
            parse("/JOIN dev"),
            Ok(Input::Command(Command::Join("dev".into())))
        );
        assert_eq!(parse("/who"), Ok(Input::Command(Command::Who)));
        assert_eq!(
            parse("/msg bob  hi  there"),
            Ok(Input::Command(Command::Msg {
                to: "bob".into(),
                text: "hi  there".into()
            }))
        );
        assert_eq!(
            parse("/msg bob"),
            Err(CommandError::Usage("/msg NICK TEXT"))
        );
        assert_eq!(
            parse("/msg bob   "),
            Err(CommandError::Usage("/msg NICK TEXT"))
        );
        assert_eq!(parse("/quit"), Ok(Input::Command(Command::Quit)));
        assert_eq!(parse("/history"), Ok(Input::Command(Command::History(20))));
        assert_eq!(parse("/history 5"), Ok(Input::Command(Command::History(5))));
        assert!(parse("/history 0").is_err());
        assert_eq!(
            parse("/since 0000abcd-3"),
            Ok(Input::Command(Command::Since("0000abcd-3".into())))
        );
    }

    #[test]
    fn command_errors() {
        assert_eq!(parse("/frob"), Err(CommandError::Unknown("frob".into())));
        assert_eq!(parse("/nick"), Err(CommandError::Usage("/nick NAME")));
        assert_eq!(parse("/nick a b"), Err(CommandError::Usage("/nick NAME")));
        assert!(matches!(parse("/join a//b"), Err(CommandError::Name(_))));
        assert_eq!(
            parse("/join a/b"),
            Ok(Input::Command(Command::Join("a/b".into())))
        );
    }
}
