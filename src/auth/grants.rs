//! What a client may do in a room: four actions, granted per room pattern by a token's
//! `rooms` claim or by the server's room rules.

use std::fmt;

use serde::Deserialize;

/// Something a client does to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Join it and receive its messages (live and replayed on resume).
    Subscribe,
    /// Send messages to it.
    Publish,
    /// Read its history on demand (`/history`, `GET …/messages`).
    History,
    /// See who is in it (`/who`, `GET …/presence`, `/rooms`).
    Presence,
}

impl Action {
    const ALL: [Action; 4] = [
        Action::Subscribe,
        Action::Publish,
        Action::History,
        Action::Presence,
    ];

    /// The action's name in tokens and in the TOML file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::History => "history",
            Action::Presence => "presence",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown action {s:?}: expected subscribe, publish, history or presence")
            })
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    /// No action at all.
    pub const NONE: Actions = Actions(0);
    /// Every action.
    pub const ALL: Actions = Actions(0b1111);

    /// True if `action` is in the set.
    pub fn allows(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// The set with `action` added.
    pub fn with(self, action: Action) -> Actions {
        Actions(self.0 | action.bit())
    }

    /// Both sets together.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(Actions::NONE, Actions::with)
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| n.parse::<Action>())
            .collect::<Result<Actions, _>>()
            .map_err(serde::de::Error::custom)
    }
}

/// A room name pattern: `*` stands for any run of characters (`chat.*`, `*`, `team-*-ops`);
/// everything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Box<str>);

impl Pattern {
    /// The pattern as written.
    pub fn new(text: &str) -> Pattern {
        Pattern(text.into())
    }

    /// True if `room` matches. Linear in the lengths: each `*` is matched greedily, and only
    /// the last one ever backtracks (the classic wildcard walk), so no token can make a
    /// pattern cost more than `pattern × room` steps.
    pub fn matches(&self, room: &str) -> bool {
        let (p, r) = (self.0.as_bytes(), room.as_bytes());
        let (mut pi, mut ri) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ri < r.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ri));
                pi += 1;
            } else if pi < p.len() && p[pi] == r[ri] {
                pi += 1;
                ri += 1;
            } else if let Some((sp, sr)) = star {
                pi = sp + 1;
                ri = sr + 1;
                star = Some((sp, sr + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Room patterns with their actions, as a token's `rooms` claim carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<(Pattern, Actions)>);

impl Grants {
    /// The actions every matching pattern grants on `room` together, or `None` when no
    /// pattern matches (the server's room rules decide then).
    pub fn on(&self, room: &str) -> Option<Actions> {
        self.0
            .iter()
            .filter(|(p, _)| p.matches(room))
            .map(|(_, a)| *a)
            .reduce(Actions::union)
    }

    /// Adds `actions` on `pattern`.
    pub fn push(&mut self, pattern: Pattern, actions: Actions) {
        self.0.push((pattern, actions));
    }

    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `PATTERN=action,action` as `switchboard token --grant` takes it.
    pub fn parse_one(text: &str) -> Result<(Pattern, Actions), String> {
        let (pattern, actions) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected ROOM_PATTERN=action,action"))?;
        let actions = actions
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Actions, _>>()?;
        Ok((Pattern::new(pattern.trim()), actions))
    }

    /// The grants as the `rooms` claim writes them.
    pub fn to_claim(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (pattern, actions) in &self.0 {
            let names: Vec<&str> = Action::ALL
                .into_iter()
                .filter(|a| actions.allows(*a))
                .map(Action::as_str)
                .collect();
            map.insert(pattern.to_string(), names.into());
        }
        map.into()
    }
}

impl<'de> Deserialize<'de> for Grants {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A map keeps the token's order, so the error for a bad action names its pattern.
        let map = serde_json::Map::deserialize(d)?;
        let mut grants = Grants::default();
        for (pattern, actions) in map {
            let actions: Actions = serde_json::from_value(actions)
                .map_err(|e| serde::de::Error::custom(format!("rooms[{pattern:?}]: {e}")))?;
            grants.push(Pattern::new(&pattern), actions);
        }
        Ok(grants)
    }
}

/// A room rule from the TOML file (`[[rooms]]`): who may do what in the rooms a pattern
/// covers when their token grants nothing there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRule {
    /// Which rooms, e.g. `public.*`.
    #[serde(deserialize_with = "pattern")]
    pub pattern: Pattern,
    /// What clients without a token may do.
    #[serde(default)]
    pub anonymous: Actions,
    /// What clients with a valid token but no grant on the room may do; the same as
    /// `anonymous` when not given.
    #[serde(default)]
    pub users: Option<Actions>,
}

fn pattern<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
    Ok(Pattern::new(&String::deserialize(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_run() {
        let p = Pattern::new("chat.*");
        assert!(p.matches("chat.1") && p.matches("chat."));
        assert!(!p.matches("chat") && !p.matches("xchat.1"));
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("a*b*c").matches("aXXbYYc"));
        assert!(!Pattern::new("a*b*c").matches("aXXbYY"));
        assert!(Pattern::new("news").matches("news") && !Pattern::new("news").matches("news2"));
        // No blow-up on the classic worst case.
        let long = "a".repeat(64);
        assert!(!Pattern::new(&"*a".repeat(30)).matches(&(long + "b")));
    }

    #[test]
    fn grants_union_every_matching_pattern() {
        let grants: Grants = serde_json::from_str(
            r#"{"chat.*":["subscribe","publish"],"chat.ro":["history"],"news":["subscribe"]}"#,
        )
        .unwrap();
        let ro = grants.on("chat.ro").unwrap();
        assert!(ro.allows(Action::Publish) && ro.allows(Action::History));
        assert!(!grants.on("news").unwrap().allows(Action::Publish));
        assert_eq!(grants.on("other"), None);
    }

    #[test]
    fn a_bad_action_is_named() {
        let err = serde_json::from_str::<Grants>(r#"{"x":["write"]}"#).unwrap_err();
        assert!(err.to_string().contains("write"), "{err}");
        let (p, a) = Grants::parse_one("chat.*=subscribe,publish").unwrap();
        assert_eq!(p.to_string(), "chat.*");
        assert!(a.allows(Action::Publish) && !a.allows(Action::History));
        assert!(Grants::parse_one("nothing").is_err());
    }
}
