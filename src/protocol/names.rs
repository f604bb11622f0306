//! Rules for nick and room names, shared by every transport.
//!
//! Room names appear in URL paths and nicks in every other line, so both are kept to printable
//! text with no whitespace and a bounded length.

/// Longest nick in characters.
pub const MAX_NICK_CHARS: usize = 32;
/// Longest room name in characters.
pub const MAX_ROOM_CHARS: usize = 64;

/// Why a proposed name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("{what} must not be empty")]
    Empty {
        /// "nick" or "room".
        what: &'static str,
    },
    /// The name was longer than allowed.
    #[error("{what} longer than {max} characters")]
    TooLong {
        /// "nick" or "room".
        what: &'static str,
        /// The maximum in characters.
        max: usize,
    },
    /// A room (or one of its levels) called `.` or `..`.
    #[error("room must not be . or .. (nor have such a level)")]
    Dots,
    /// A room name with an empty level: `a//b`, `/a` or `a/`.
    #[error("room levels split by / must not be empty")]
    EmptyLevel,
    /// The name held a character outside the allowed set.
    #[error(
        "{what} may contain only letters, digits and - _ . (and / between room levels; got {ch:?})"
    )]
    BadChar {
        /// "nick" or "room".
        what: &'static str,
        /// The first refused character.
        ch: char,
    },
}

/// Checks a nick: 1–32 letters, digits, `-`, `_` or `.`.
pub fn check_nick(name: &str) -> Result<(), NameError> {
    check("nick", name, MAX_NICK_CHARS)
}

/// Checks a room name: 1–64 characters in levels split by `/` (as MQTT topics are:
/// `sensors/kitchen/temp`), each level one or more letters, digits, `-`, `_` or `.` and not
/// `.` or `..` (which a URL path or a file name would read as a directory).
pub fn check_room(name: &str) -> Result<(), NameError> {
    if name.chars().count() > MAX_ROOM_CHARS {
        return Err(NameError::TooLong {
            what: "room",
            max: MAX_ROOM_CHARS,
        });
    }
    for level in name.split('/') {
        if level == "." || level == ".." {
            return Err(NameError::Dots);
        }
        if level.is_empty() && name.contains('/') {
            return Err(NameError::EmptyLevel);
        }
        check("room", level, MAX_ROOM_CHARS)?;
    }
    Ok(())
}

fn check(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.chars().count() > max {
        return Err(NameError::TooLong { what, max });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(NameError::BadChar { what, ch });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_unicode_names() {
        assert!(check_nick("alice_1").is_ok());
        assert!(check_room("кімната-2").is_ok());
    }

    #[test]
    fn room_names_have_topic_levels() {
        assert!(check_room("sensors/kitchen/temp").is_ok());
        assert_eq!(check_room("a//b"), Err(NameError::EmptyLevel));
        assert_eq!(check_room("/a"), Err(NameError::EmptyLevel));
        assert_eq!(check_room("a/"), Err(NameError::EmptyLevel));
        assert_eq!(check_room("a/../b"), Err(NameError::Dots));
        assert!(check_room("a/+").is_err());
        assert!(check_room("$SYS/x").is_err());
        assert!(check_nick("a/b").is_err());
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(check_nick(""), Err(NameError::Empty { what: "nick" }));
        assert!(matches!(
            check_nick("a b"),
            Err(NameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            check_room(&"x".repeat(65)),
            Err(NameError::TooLong { max: 64, .. })
        ));
        assert_eq!(check_room(".."), Err(NameError::Dots));
        assert_eq!(check_room("."), Err(NameError::Dots));
        assert!(check_room("a.b").is_ok() && check_room("...").is_ok());
        assert!(matches!(
            check_room("a\\b"),
            Err(NameError::BadChar { ch: '\\', .. })
        ));
    }
}
