//! The end of a connection: the reason said, the will, the session parked or forgotten.

use super::*;

impl Conn {
    /// The session as parked: per room, the cursor before the first message not yet
    /// acknowledged (those in flight are sent again on resume).
    pub(super) fn parked(&self, expires_ms: Option<u64>) -> Parked {
        let mut cursors: BTreeMap<String, MessageId> = self
            .rooms
            .iter()
            .filter_map(|(room, joined)| Some((room.to_string(), joined.last?)))
            .collect();
        for event in self.window.unacked() {
            let Some(id) = event.id else { continue };
            let before = MessageId {
                epoch: id.epoch,
                seq: id.seq.saturating_sub(1),
            };
            cursors
                .entry(event.room.to_string())
                .and_modify(|c| {
                    if c.epoch == before.epoch && c.seq > before.seq {
                        *c = before;
                    }
                })
                .or_insert(before);
        }
        Parked {
            filters: self
                .filters
                .iter()
                .map(|(f, (q, _))| (f.clone(), *q))
                .collect(),
            cursors: cursors
                .into_iter()
                .map(|(room, id)| (room, id.to_string()))
                .collect(),
            expires_ms: expires_ms.map(|ms| now_ms().saturating_add(ms)),
            received: self.received.iter().copied().collect(),
        }
    }

    /// Ends the connection: says why (5.0), publishes the will unless the client said
    /// goodbye, parks or forgets the session, and lets go of the client id.
    pub(super) async fn finish<P: Pipe>(mut self, pipe: &mut P, end: End) {
        let reason = match end {
            End::Disconnected(_) | End::Gone => None,
            End::Violation(reason) => Some(reason),
            End::Cut(cut) => Some(match cut {
                Disconnect::Shutdown => Reason::ShuttingDown,
                Disconnect::TimedOut => Reason::KeepAliveTimeout,
                Disconnect::SlowConsumer => Reason::QuotaExceeded,
                Disconnect::Flooding => Reason::MessageRateTooHigh,
                Disconnect::Replaced => Reason::SessionTakenOver,
                Disconnect::Kicked | Disconnect::TokenExpired => Reason::AdministrativeAction,
            }),
        };
        // What is buffered (the CONNACK, say, when the first packets already break the
        // rules) goes out, then 5.0's reason; bounded in time, as the client may not read.
        if let Some(reason) = reason {
            self.write(&Outbound::Disconnect(reason));
        }
        if !self.out.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), pipe.write(&self.out)).await;
        }
        if !matches!(end, End::Disconnected(false))
            && let Some(will) = self.will.take()
        {
            self.publish_will(will);
        }
        self.session.end(match end {
            End::Cut(cut) => Some(cut),
            _ => None,
        });
        for filter in self.filters.keys().filter(|f| topic::is_wildcard(f)) {
            self.ctx.hub.unwatch_topics(filter, self.sub.id);
        }
        // Within `max_rooms` parked sessions in all: each client id may park one.
        let room_for_one = self.ctx.mqtt.is_parked(&self.client_id)
            || self.ctx.mqtt.parked() < self.ctx.config.limits.max_rooms;
        if self.persistent.is_some() && !room_for_one {
            tracing::warn!(
                client_id = self.client_id,
                "mqtt session not parked: too many parked"
            );
        }
        let parked = self
            .persistent
            .filter(|_| room_for_one)
            .map(|expires| self.parked(expires));
        if let Err(error) = self.ctx.mqtt.park(&self.client_id, parked.as_ref()) {
            tracing::warn!(%error, client_id = self.client_id, "mqtt session not parked");
        }
        let Conn {
            ctx,
            client_id,
            session,
            sub,
            gone,
            ..
        } = self;
        drop(session);
        ctx.mqtt.release(&client_id, sub.id, &gone);
    }
}
