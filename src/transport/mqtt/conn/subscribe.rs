//! Subscriptions as room joins: exact topics, wildcards through the hub's topic index,
//! retained messages and `$SYS` for new subscriptions, and a parked session taken up again.

use super::*;

/// The granted-QoS reason for `qos`.
pub(super) fn granted(qos: u8) -> Reason {
    match qos {
        0 => Reason::GrantedQos0,
        1 => Reason::GrantedQos1,
        _ => Reason::GrantedQos2,
    }
}

/// The cursor before a room's first message: joining with it replays all the room holds.
pub(super) fn room_start(ctx: &Context, room: &str) -> Option<MessageId> {
    ctx.hub.existing_room(room).map(|r| MessageId {
        epoch: r.epoch(),
        seq: 0,
    })
}

impl Conn {
    pub(super) fn on_subscribe(&mut self, pkid: u16, filters: Vec<(String, u8, bool)>) {
        let mut reasons = Vec::with_capacity(filters.len());
        let mut accepted = Vec::new();
        for (filter, qos, no_local) in filters {
            let qos = qos.min(2);
            let reason = if self.filters.len() >= MAX_FILTERS && !self.filters.contains_key(&filter)
            {
                Reason::QuotaExceeded
            } else {
                self.subscribe(&filter, qos, no_local, None)
            };
            if reason == granted(qos) {
                accepted.push((filter, qos));
            }
            reasons.push(reason);
        }
        self.write(&Outbound::SubAck {
            pkid,
            reasons: &reasons,
        });
        for (filter, qos) in accepted {
            self.send_retained(&filter, qos);
            if filter.starts_with("$SYS") {
                self.send_sys(Some(&filter));
            }
        }
    }

    /// Adds one subscription, joining the rooms it matches; `resume` holds a parked
    /// session's cursors (rooms without one are replayed from their start: they were made
    /// while it was away). Returns the SUBACK reason.
    pub(super) fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        no_local: bool,
        resume: Option<&BTreeMap<String, String>>,
    ) -> Reason {
        if topic::parse(filter).is_err() {
            return Reason::TopicFilterInvalid;
        }
        if filter.starts_with('$') {
            if !filter.starts_with("$SYS") {
                return Reason::TopicFilterInvalid;
            }
        } else if topic::is_wildcard(filter) {
            let watcher = self.watcher();
            let rooms = self.ctx.hub.watch_topics(filter, self.sub.id, watcher);
            // A filter matching more rooms than this connection may still join is refused
            // whole, so that a granted wildcard means every matching room is followed.
            let new = rooms
                .iter()
                .filter(|room| !self.rooms.contains_key(&***room))
                .count();
            if new > self.session.rooms_left() && !self.filters.contains_key(filter) {
                self.ctx.hub.unwatch_topics(filter, self.sub.id);
                tracing::info!(
                    client_id = self.client_id,
                    filter,
                    rooms = new,
                    "mqtt subscription refused: matches more rooms than one connection may join"
                );
                return Reason::QuotaExceeded;
            }
            for room in rooms {
                if self.session.may(&room, Action::Subscribe) {
                    let since = match resume {
                        Some(cursors) => {
                            cursor_in(cursors, &room).or_else(|| room_start(&self.ctx, &room))
                        }
                        None => None,
                    };
                    if let Err(error) = self.join(&room, qos, no_local, since) {
                        tracing::info!(client_id = self.client_id, %error, %room, "mqtt wildcard room not joined");
                        break;
                    }
                }
            }
        } else {
            if !self.session.may(filter, Action::Subscribe) {
                return Reason::NotAuthorized;
            }
            let since = resume.and_then(|c| cursor_in(c, filter));
            if let Err(error) = self.join(filter, qos, no_local, since) {
                tracing::debug!(client_id = self.client_id, %error, "mqtt subscribe refused");
                return Reason::QuotaExceeded;
            }
        }
        self.filters.insert(filter.to_owned(), (qos, no_local));
        granted(qos)
    }

    /// Joins `room` (or raises its QoS if in it already).
    pub(super) fn join(
        &mut self,
        room: &str,
        qos: u8,
        no_local: bool,
        since: Option<MessageId>,
    ) -> Result<(), crate::hub::RoomError> {
        if let Some(joined) = self.rooms.get_mut(room) {
            joined.qos = joined.qos.max(qos);
            return Ok(());
        }
        let cursor = self.session.join(room, since)?;
        self.rooms.insert(
            room.into(),
            Joined {
                qos,
                no_local,
                last: Some(since.unwrap_or(cursor)),
            },
        );
        Ok(())
    }

    /// A room made after a wildcard subscription that matches it: joined from its start.
    pub(super) fn join_new(&mut self, room: Arc<str>) {
        let Some(qos) = self.qos_for(&room) else {
            return;
        };
        if self.session.may(&room, Action::Subscribe) {
            let since = room_start(&self.ctx, &room);
            if let Err(error) = self.join(&room, qos.0, qos.1, since) {
                tracing::debug!(client_id = self.client_id, %error, %room, "mqtt new room not joined");
            }
        }
    }

    /// The highest QoS among this connection's filters matching `room`, and no-local.
    pub(super) fn qos_for(&self, room: &str) -> Option<(u8, bool)> {
        self.filters
            .iter()
            .filter(|(f, _)| topic::parse(f).is_ok_and(|l| topic::matches(&l, room)))
            .map(|(_, q)| *q)
            .max()
    }

    pub(super) fn on_unsubscribe(&mut self, pkid: u16, filters: &[String]) {
        let mut reasons = Vec::with_capacity(filters.len());
        for filter in filters {
            if self.filters.remove(filter).is_none() {
                reasons.push(Reason::NoSubscriptionExisted);
                continue;
            }
            if topic::is_wildcard(filter) {
                self.ctx.hub.unwatch_topics(filter, self.sub.id);
            }
            reasons.push(Reason::Success);
        }
        let left: Vec<Arc<str>> = self
            .rooms
            .keys()
            .filter(|room| self.qos_for(room).is_none())
            .cloned()
            .collect();
        for room in left {
            self.rooms.remove(&room);
            self.session.part(&room);
        }
        self.write(&Outbound::UnsubAck {
            pkid,
            reasons: &reasons,
        });
    }

    /// Retained messages for a new subscription, marked as retained, at most at its QoS.
    pub(super) fn send_retained(&mut self, filter: &str, qos: u8) {
        let Ok(levels) = topic::parse(filter) else {
            return;
        };
        let retained = self
            .ctx
            .mqtt
            .retained(topic::prefix(filter), |t| topic::matches(&levels, t));
        for (topic, message) in retained {
            let mut qos = message.qos.min(qos);
            let sent = if qos > 0 && self.window.has_room() {
                let event = Arc::new(Event::new(
                    EventKind::Message,
                    topic.as_str().into(),
                    message.id.as_deref().and_then(|id| id.parse().ok()),
                    "".into(),
                    message.text.as_str().into(),
                    None,
                ));
                self.window.send(event)
            } else {
                None
            };
            // Past the window, a retained message goes at QoS 0.
            let pkid = sent.unwrap_or_else(|| {
                qos = 0;
                0
            });
            let id = (self.version == Version::V5)
                .then(|| message.id.clone())
                .flatten();
            self.write(&Outbound::Publish {
                topic: &topic,
                payload: message.text.as_bytes(),
                qos,
                pkid,
                retain: true,
                dup: false,
                id,
            });
        }
    }

    pub(super) fn has_sys(&self) -> bool {
        self.filters
            .range::<str, _>((
                std::ops::Bound::Included("$SYS"),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(f, _)| f.starts_with("$SYS"))
    }

    /// The `$SYS` figures matching `only`, or every `$SYS` filter held.
    pub(super) fn send_sys(&mut self, only: Option<&str>) {
        let filters: Vec<String> = match only {
            Some(filter) => vec![filter.to_owned()],
            None => self
                .filters
                .keys()
                .filter(|f| f.starts_with("$SYS"))
                .cloned()
                .collect(),
        };
        for (topic, value) in sys::figures(&self.ctx) {
            let wanted = filters
                .iter()
                .any(|f| topic::parse(f).is_ok_and(|l| topic::matches(&l, topic)));
            if wanted {
                self.write(&Outbound::Publish {
                    topic,
                    payload: value.as_bytes(),
                    qos: 0,
                    pkid: 0,
                    retain: true,
                    dup: false,
                    id: None,
                });
            }
        }
    }
}

/// The cursor a parked session holds for `room`.
pub(super) fn cursor_in(cursors: &BTreeMap<String, String>, room: &str) -> Option<MessageId> {
    cursors.get(room).and_then(|c| c.parse().ok())
}

impl Conn {
    /// Takes up a parked session: its subscriptions, each room resumed after its cursor.
    pub(super) fn resume(&mut self, parked: Parked) {
        self.received.extend(parked.received.iter().copied());
        for (filter, qos) in &parked.filters {
            let _ = self.subscribe(filter, *qos, false, Some(&parked.cursors));
        }
        tracing::debug!(
            client_id = self.client_id,
            filters = parked.filters.len(),
            "mqtt session resumed"
        );
    }
}
