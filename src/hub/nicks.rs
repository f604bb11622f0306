//! Who holds which name. Names are compared by their UTS #39 skeleton of the lowercased name,
//! so `alice`, `Alice`, `аlice` (Cyrillic а) and `ａｌｉｃｅ` (fullwidth) are one name. A verified
//! user's name is theirs on every connection they open and is kept from anonymous clients
//! for the life of the process; reserved names are nobody's.

use std::sync::{Arc, Weak};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use unicode_security::confusable_detection::skeleton;

use super::{HubError, Subscriber, SubscriberId};

/// Names nobody may take: they would pass for the server or an operator.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "anonymous",
    "mod",
    "moderator",
    "operator",
    "root",
    "server",
    "switchboard",
    "system",
    "you",
];

/// Verified names remembered at most; past it, older names are still protected while their
/// users are connected.
const MAX_VERIFIED: usize = 100_000;

/// The key two names collide on.
pub(super) fn fold(nick: &str) -> String {
    skeleton(&nick.to_lowercase()).collect::<String>()
}

/// One name's holders: every connection of one verified user, or one anonymous client.
#[derive(Debug)]
struct Holders {
    /// The name as its holder spelled it.
    nick: Arc<str>,
    /// The verified subject, or `None` for an anonymous holder.
    user: Option<Arc<str>>,
    subs: Vec<(SubscriberId, Weak<Subscriber>)>,
}

/// One connection holding a name, as operators see it.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The connection.
    pub sub: Arc<Subscriber>,
    /// The name it holds.
    pub nick: Arc<str>,
    /// Its verified subject, if signed in.
    pub user: Option<Arc<str>>,
}

/// The registry.
pub(super) struct Nicks {
    held: DashMap<String, Holders>,
    /// Names verified users have signed in with, by fold, with their subject.
    verified: DashMap<String, Arc<str>>,
    reserved: Vec<String>,
    /// Signs nick keys (`key_for`); made fresh by each process.
    secret: [u8; 32],
}

impl std::fmt::Debug for Nicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nicks")
            .field("held", &self.held.len())
            .field("verified", &self.verified.len())
            .finish_non_exhaustive()
    }
}

impl Default for Nicks {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        if getrandom::fill(&mut secret).is_err() {
            // No OS randomness: fall back to the hasher's per-process random keys.
            use std::hash::BuildHasher;
            let state = std::collections::hash_map::RandomState::new();
            for (i, chunk) in secret.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&state.hash_one(i).to_le_bytes());
            }
        }
        Nicks {
            held: DashMap::new(),
            verified: DashMap::new(),
            reserved: RESERVED.iter().map(|r| fold(r)).collect(),
            secret,
        }
    }
}

impl Nicks {
    /// A key proving that a request comes from the client holding `nick` as subscriber `id`:
    /// an SSE client gets it and sends it with its HTTP publishes, which may then use the
    /// nick its stream holds. HMAC-SHA256 of the id and nick, so nothing is stored.
    pub(super) fn key_for(&self, id: SubscriberId, nick: &str) -> String {
        use std::fmt::Write as _;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("{id}:{}", fold(nick)).as_bytes());
        let mut hex = String::with_capacity(64);
        for b in mac.finalize().into_bytes() {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// True if `key` is the key of a live holder of `nick` (compared in constant time).
    pub(super) fn holds_key(&self, nick: &str, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.holders(nick)
            .iter()
            .any(|sub| bool::from(self.key_for(sub.id, nick).as_bytes().ct_eq(key.as_bytes())))
    }

    /// Names no anonymous client may use: reserved ones and verified users'.
    fn check_anonymous(&self, key: &str, nick: &str) -> Result<(), HubError> {
        if self.reserved.iter().any(|r| r == key) {
            return Err(HubError::NickReserved(nick.to_owned()));
        }
        if self.verified.contains_key(key) {
            return Err(HubError::NickVerified(nick.to_owned()));
        }
        Ok(())
    }

    /// Claims `nick` for `sub`, anonymous when `user` is `None`. Claiming a name one already
    /// holds succeeds; a verified user's other connections share it.
    pub(super) fn claim(
        &self,
        sub: &Arc<Subscriber>,
        nick: &str,
        user: Option<&Arc<str>>,
    ) -> Result<(), HubError> {
        let key = fold(nick);
        let Some(user) = user else {
            return self.claim_anonymous(sub, nick, key);
        };
        if self.verified.len() < MAX_VERIFIED || self.verified.contains_key(&key) {
            self.verified.insert(key.clone(), Arc::clone(user));
        }
        let me = (sub.id, Arc::downgrade(sub));
        match self.held.entry(key) {
            Entry::Occupied(mut held) => {
                let holders = held.get_mut();
                match &holders.user {
                    Some(owner) if owner == user => {
                        if !holders.subs.iter().any(|(id, _)| *id == sub.id) {
                            holders.subs.push(me);
                        }
                        Ok(())
                    }
                    Some(_) => Err(HubError::NickTaken(nick.to_owned())),
                    // A verified user takes their name back from an anonymous holder, who
                    // stays marked as anonymous wherever its name is shown.
                    None => {
                        *holders = Holders {
                            nick: nick.into(),
                            user: Some(Arc::clone(user)),
                            subs: vec![me],
                        };
                        Ok(())
                    }
                }
            }
            Entry::Vacant(free) => {
                free.insert(Holders {
                    nick: nick.into(),
                    user: Some(Arc::clone(user)),
                    subs: vec![me],
                });
                Ok(())
            }
        }
    }

    fn claim_anonymous(
        &self,
        sub: &Arc<Subscriber>,
        nick: &str,
        key: String,
    ) -> Result<(), HubError> {
        self.check_anonymous(&key, nick)?;
        match self.held.entry(key) {
            Entry::Occupied(held) if held.get().subs.iter().any(|(id, _)| *id == sub.id) => Ok(()),
            Entry::Occupied(_) => Err(HubError::NickTaken(nick.to_owned())),
            Entry::Vacant(free) => {
                free.insert(Holders {
                    nick: nick.into(),
                    user: None,
                    subs: vec![(sub.id, Arc::downgrade(sub))],
                });
                Ok(())
            }
        }
    }

    /// Whether an anonymous sender may use `nick` without holding it (an HTTP publish): not
    /// while someone holds it, and never a reserved or verified name.
    pub(super) fn check_free(&self, nick: &str) -> Result<(), HubError> {
        let key = fold(nick);
        self.check_anonymous(&key, nick)?;
        let live = self.held.get(&key).is_some_and(|h| {
            h.subs
                .iter()
                .any(|(_, w)| w.upgrade().is_some_and(|s| !s.is_gone()))
        });
        if live {
            return Err(HubError::NickTaken(nick.to_owned()));
        }
        Ok(())
    }

    /// Releases `nick` as held by `id`.
    pub(super) fn release(&self, id: SubscriberId, nick: &str) {
        let key = fold(nick);
        if let Entry::Occupied(mut held) = self.held.entry(key) {
            held.get_mut().subs.retain(|(holder, _)| *holder != id);
            if held.get().subs.is_empty() {
                held.remove();
            }
        }
    }

    /// Every live holder with its nick's verified subject, for operators.
    pub(super) fn all(&self) -> Vec<Holder> {
        self.held
            .iter()
            .flat_map(|h| {
                h.subs
                    .iter()
                    .filter_map(|(_, w)| w.upgrade())
                    .map(|sub| Holder {
                        sub,
                        nick: Arc::clone(&h.nick),
                        user: h.user.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The live connections holding `nick`.
    pub(super) fn holders(&self, nick: &str) -> Vec<Arc<Subscriber>> {
        self.held
            .get(&fold(nick))
            .map(|h| {
                h.subs
                    .iter()
                    .filter_map(|(_, w)| w.upgrade())
                    .filter(|s| !s.is_gone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_fold_together() {
        assert_eq!(fold("alice"), fold("ALICE"));
        assert_eq!(fold("alice"), fold("\u{430}lice"));
        assert_eq!(
            fold("alice"),
            fold("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}")
        );
        assert_ne!(fold("alice"), fold("alicia"));
    }
}
