//! The topic index: wildcard subscriptions (MQTT's `+` and `#`) kept in a trie of filter
//! levels, so that a new room finds the subscribers it concerns by walking its own levels.
//!
//! A wildcard subscriber joins every matching room, so a publish costs nothing extra: it
//! reaches the subscriber through the room's own fan-out, in the room's order, with the
//! room's resume cursor. What the index adds is the rooms made later: `Hub::room` tells each
//! matching watcher the new room's name (a bounded queue; a watcher that lets it fill is cut
//! as a slow consumer), and the watcher joins it from the room's start.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::{Disconnect, Hub, Subscriber, SubscriberId};
use crate::protocol::topic::{self, Level};

/// Where a watcher hears of new rooms matching its filters.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The subscriber to cut if it does not keep up.
    pub sub: Weak<Subscriber>,
    /// New rooms' names.
    pub rooms: mpsc::Sender<Arc<str>>,
}

/// One level of the trie.
#[derive(Debug, Default)]
pub(super) struct Node {
    exact: HashMap<Box<str>, Node>,
    one: Option<Box<Node>>,
    /// Filters ending here with `#`.
    rest: HashMap<SubscriberId, Watcher>,
    /// Filters ending here.
    end: HashMap<SubscriberId, Watcher>,
}

impl Node {
    fn insert(&mut self, levels: &[Level<'_>], id: SubscriberId, watcher: Watcher) {
        match levels.split_first() {
            None => {
                self.end.insert(id, watcher);
            }
            Some((Level::Rest, _)) => {
                self.rest.insert(id, watcher);
            }
            Some((Level::One, more)) => self.one.get_or_insert_default().insert(more, id, watcher),
            Some((Level::Exact(name), more)) => self
                .exact
                .entry((*name).into())
                .or_default()
                .insert(more, id, watcher),
        }
    }

    /// Removes one filter's watcher; true if this node is then empty.
    fn remove(&mut self, levels: &[Level<'_>], id: SubscriberId) -> bool {
        match levels.split_first() {
            None => {
                self.end.remove(&id);
            }
            Some((Level::Rest, _)) => {
                self.rest.remove(&id);
            }
            Some((Level::One, more)) => {
                if let Some(one) = &mut self.one
                    && one.remove(more, id)
                {
                    self.one = None;
                }
            }
            Some((Level::Exact(name), more)) => {
                if let Some(child) = self.exact.get_mut(*name)
                    && child.remove(more, id)
                {
                    self.exact.remove(*name);
                }
            }
        }
        self.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.one.is_none() && self.rest.is_empty() && self.end.is_empty()
    }

    /// Every watcher whose filter matches the name whose remaining levels are `levels`.
    fn matching<'a>(&'a self, levels: &[&str], out: &mut HashMap<SubscriberId, &'a Watcher>) {
        out.extend(self.rest.iter().map(|(id, w)| (*id, w)));
        let Some((first, more)) = levels.split_first() else {
            out.extend(self.end.iter().map(|(id, w)| (*id, w)));
            return;
        };
        if let Some(child) = self.exact.get(*first) {
            child.matching(more, out);
        }
        if let Some(one) = &self.one {
            one.matching(more, out);
        }
    }
}

impl Hub {
    /// Registers a wildcard filter: `watcher` hears of every room made from now on that the
    /// filter matches. Returns the rooms that exist now and match, to join at once.
    pub fn watch_topics(&self, filter: &str, id: SubscriberId, watcher: Watcher) -> Vec<Arc<str>> {
        let Ok(levels) = topic::parse(filter) else {
            return Vec::new();
        };
        self.topics().insert(&levels, id, watcher);
        self.rooms_matching(filter)
    }

    /// Drops one wildcard filter of a watcher.
    pub fn unwatch_topics(&self, filter: &str, id: SubscriberId) {
        if let Ok(levels) = topic::parse(filter) {
            self.topics().remove(&levels, id);
        }
    }

    /// The rooms existing now that `filter` matches: a walk of the ordered names under the
    /// filter's literal prefix, not of every room.
    pub fn rooms_matching(&self, filter: &str) -> Vec<Arc<str>> {
        use std::ops::Bound;
        let Ok(levels) = topic::parse(filter) else {
            return Vec::new();
        };
        let start = topic::prefix(filter);
        self.names()
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|name| name.starts_with(start))
            .filter(|name| topic::matches(&levels, name))
            .cloned()
            .collect()
    }

    /// Tells every watcher whose filter matches the new room `name`.
    pub(super) fn announce_room(&self, name: &Arc<str>) {
        let topics = self.topics();
        // Most servers have no wildcard subscriber: a new room then costs only this look.
        if topics.is_empty() {
            return;
        }
        let levels: Vec<&str> = name.split('/').collect();
        let mut found = HashMap::new();
        topics.matching(&levels, &mut found);
        for watcher in found.values() {
            if watcher.rooms.try_send(Arc::clone(name)).is_err()
                && let Some(sub) = watcher.sub.upgrade()
            {
                sub.kick(Disconnect::SlowConsumer);
            }
        }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, Node> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HubConfig, Transport};

    #[tokio::test]
    async fn new_rooms_reach_matching_watchers_only() {
        let hub = Hub::new(HubConfig::default());
        hub.room("sensors/kitchen/temp");
        hub.room("sensors");
        hub.room("lobby");
        let (sub, _rx) = hub.subscribe(Transport::Mqtt, false, None);
        let (tx, mut rx) = mpsc::channel(8);
        let watcher = Watcher {
            sub: Arc::downgrade(&sub),
            rooms: tx,
        };
        let now = hub.watch_topics("sensors/#", sub.id, watcher.clone());
        let now: Vec<&str> = now.iter().map(|n| &**n).collect();
        assert_eq!(now, ["sensors", "sensors/kitchen/temp"]);
        hub.watch_topics("+/hall/+", sub.id, watcher);
        hub.room("sensors/hall/temp");
        hub.room("other/hall/temp");
        hub.room("other/hall");
        assert_eq!(&*rx.recv().await.unwrap(), "sensors/hall/temp");
        assert_eq!(&*rx.recv().await.unwrap(), "other/hall/temp");
        assert!(rx.try_recv().is_err());
        hub.unwatch_topics("sensors/#", sub.id);
        hub.room("sensors/attic");
        assert!(rx.try_recv().is_err());
        assert!(hub.topics().exact.is_empty());
    }
}
