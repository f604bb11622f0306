//! MQTT topic filters over room names: which filters are well formed, and which rooms a
//! filter matches.
//!
//! A room name is a topic name: levels split by `/` (`crate::protocol::names::check_room`).
//! A filter's level is a room level, `+` (any one level) or, last, `#` (any number of levels,
//! the parent included). Names starting with `$` are the server's (`$SYS/...`) and are not
//! matched by a filter whose first level is a wildcard.

use super::names::{NameError, check_room};

/// Longest filter in bytes (a room name's limit plus room for wildcards).
pub const MAX_FILTER_BYTES: usize = 256;

/// Why a topic filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Empty, or longer than `MAX_FILTER_BYTES`.
    #[error("topic filter must be 1 to {MAX_FILTER_BYTES} bytes")]
    Length,
    /// `#` somewhere but alone in the last level, or `+` sharing a level.
    #[error("wildcards must fill a level, and # must be the last one")]
    Wildcard,
    /// A literal level that is not a valid room level.
    #[error("{0}")]
    Level(NameError),
}

/// One level of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level<'a> {
    /// Matches exactly this level.
    Exact(&'a str),
    /// `+`: any one level.
    One,
    /// `#`: this level and every one below, or none.
    Rest,
}

/// The levels of a filter, checked. `$SYS/...` filters are accepted as written (the server
/// answers them itself); every other literal level must be a room level.
pub fn parse(filter: &str) -> Result<Vec<Level<'_>>, FilterError> {
    if filter.is_empty() || filter.len() > MAX_FILTER_BYTES {
        return Err(FilterError::Length);
    }
    let system = filter.starts_with("$SYS");
    let count = filter.split('/').count();
    let mut levels = Vec::with_capacity(count);
    for (i, level) in filter.split('/').enumerate() {
        let parsed = match level {
            "+" => Level::One,
            "#" if i + 1 == count => Level::Rest,
            _ if level.contains(['+', '#']) => return Err(FilterError::Wildcard),
            _ if system && i == 0 => Level::Exact(level),
            _ if system => {
                if level.is_empty() {
                    return Err(FilterError::Level(NameError::EmptyLevel));
                }
                Level::Exact(level)
            }
            _ => {
                check_room(level).map_err(FilterError::Level)?;
                Level::Exact(level)
            }
        };
        levels.push(parsed);
    }
    Ok(levels)
}

/// True if the filter holds a wildcard (so it may match rooms made later).
pub fn is_wildcard(filter: &str) -> bool {
    filter.split('/').any(|l| l == "+" || l == "#")
}

/// True if `filter` (already `parse`d) matches the room or `$SYS` topic `name`.
pub fn matches(filter: &[Level<'_>], name: &str) -> bool {
    if name.starts_with('$') && !matches!(filter.first(), Some(Level::Exact(_))) {
        return false;
    }
    let mut names = name.split('/');
    for level in filter {
        match level {
            Level::Rest => return true,
            Level::One => {
                if names.next().is_none() {
                    return false;
                }
            }
            Level::Exact(want) => {
                if names.next() != Some(want) {
                    return false;
                }
            }
        }
    }
    names.next().is_none()
}

/// The literal levels before a filter's first wildcard, without their last `/`: every name
/// the filter matches starts with this (`sensors/#` matches `sensors` itself), so it bounds
/// the range of ordered names to walk instead of all of them.
pub fn prefix(filter: &str) -> &str {
    let literal = match filter.find(['+', '#']) {
        Some(at) => &filter[..at],
        None => filter,
    };
    literal.strip_suffix('/').unwrap_or(literal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, name: &str) -> bool {
        matches(&parse(filter).unwrap(), name)
    }

    #[test]
    fn wildcards_match_levels() {
        assert!(m("sensors/+/temp", "sensors/kitchen/temp"));
        assert!(!m("sensors/+/temp", "sensors/kitchen/hall/temp"));
        assert!(m("sensors/#", "sensors"));
        assert!(m("sensors/#", "sensors/kitchen/temp"));
        assert!(!m("sensors/#", "sensorsx/kitchen"));
        assert!(m("#", "lobby"));
        assert!(m("+", "lobby"));
        assert!(!m("+", "a/b"));
        assert!(m("lobby", "lobby"));
        assert!(!m("lobby", "lobby/x"));
    }

    #[test]
    fn system_topics_need_a_literal_first_level() {
        assert!(!m("#", "$SYS/broker/uptime"));
        assert!(!m("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(m("$SYS/#", "$SYS/broker/uptime"));
        assert!(m("$SYS/broker/+", "$SYS/broker/uptime"));
    }

    #[test]
    fn malformed_filters_are_refused() {
        assert_eq!(parse(""), Err(FilterError::Length));
        assert_eq!(parse("a/#/b"), Err(FilterError::Wildcard));
        assert_eq!(parse("a/b#"), Err(FilterError::Wildcard));
        assert_eq!(parse("a+/b"), Err(FilterError::Wildcard));
        assert!(matches!(parse("a//b"), Err(FilterError::Level(_))));
        assert!(matches!(parse("a/\u{1b}[2J"), Err(FilterError::Level(_))));
        assert!(parse(&"a".repeat(300)).is_err());
    }

    #[test]
    fn prefixes_stop_at_the_first_wildcard() {
        assert_eq!(prefix("sensors/+/temp"), "sensors");
        assert_eq!(prefix("#"), "");
        assert_eq!(prefix("a/b"), "a/b");
        assert!(is_wildcard("a/+"));
        assert!(!is_wildcard("a/b+c"));
    }
}
