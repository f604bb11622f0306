//! Deliveries: the queue's batches into PUBLISH packets within the client's window.

use super::*;

impl Conn {
    /// A free packet id for an outgoing QoS 1 or 2 message.
    pub(super) fn next_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            let id = self.next_pkid;
            if !self.inflight.contains_key(&id) && !self.released.contains(&id) {
                return id;
            }
        }
    }

    /// Moves a batch from the queue: messages of joined rooms to `pending`, answers (acks
    /// from the ack task) straight into the write buffer.
    pub(super) fn take(&mut self) {
        let own = self.sub.id;
        let Conn {
            outbox,
            pending,
            out,
            rooms,
            ..
        } = self;
        let mut keep = |event: &Arc<Event>| {
            let wanted = matches!(event.kind, EventKind::Message)
                && rooms
                    .get(&event.room)
                    .is_some_and(|j| !(j.no_local && event.origin == Some(own)));
            if wanted {
                pending.push_back(Arc::clone(event));
            }
        };
        for delivery in outbox.take() {
            match delivery {
                Delivery::Event(event) => keep(&event),
                Delivery::Direct(bytes) => out.extend_from_slice(&bytes),
                Delivery::Replay(replay) => replay.events.iter().for_each(&mut keep),
            }
        }
    }

    /// Encodes pending messages while the client's window has room: a QoS 0 message is the
    /// event's shared packet (made once for every subscriber of its version); QoS 1 and 2
    /// take a packet id and wait in `inflight` for their ack.
    pub(super) fn pump(&mut self) {
        while let Some(event) = self.pending.front() {
            let Some(joined) = self.rooms.get(&event.room).copied() else {
                self.pending.pop_front();
                continue;
            };
            if event.text.len() + event.room.len() + 64 > self.client_max_packet {
                tracing::debug!(
                    client_id = self.client_id,
                    "message larger than the client takes; skipped"
                );
                self.pending.pop_front();
                continue;
            }
            let pkid = match joined.qos {
                0 => 0,
                _ if self.inflight.len() + self.released.len() >= self.window => return,
                _ => self.next_pkid(),
            };
            let Some(event) = self.pending.pop_front() else {
                return;
            };
            if pkid == 0 {
                let form = match self.version {
                    Version::V4 => (Form::Mqtt, shared_v4 as fn(&Event) -> Bytes),
                    Version::V5 => (Form::Mqtt5, shared_v5 as fn(&Event) -> Bytes),
                };
                self.out.extend_from_slice(event.encoded(form.0, form.1));
            } else {
                codec::encode(
                    self.version,
                    &publish_of(&event, joined.qos, pkid, self.version),
                    &mut self.out,
                );
                self.inflight.insert(pkid, Arc::clone(&event));
            }
            if let Some(joined) = self.rooms.get_mut(&event.room) {
                joined.last = event.id.or(joined.last);
            }
        }
    }
}

/// PUBLISH for `event`; 5.0 carries its id as the user property `id`.
pub(super) fn publish_of(event: &Event, qos: u8, pkid: u16, version: Version) -> Outbound<'_> {
    Outbound::Publish {
        topic: &event.room,
        payload: event.text.as_bytes(),
        qos,
        pkid,
        retain: false,
        dup: false,
        id: match version {
            Version::V5 => event.id.map(|id| id.to_string()),
            Version::V4 => None,
        },
    }
}

/// An event's QoS 0 PUBLISH for 3.1.1, shared by every such subscriber.
pub(super) fn shared_v4(event: &Event) -> Bytes {
    let mut out = BytesMut::new();
    codec::encode(Version::V4, &publish_of(event, 0, 0, Version::V4), &mut out);
    out.freeze()
}

/// An event's QoS 0 PUBLISH for 5.0, shared by every such subscriber.
pub(super) fn shared_v5(event: &Event) -> Bytes {
    let mut out = BytesMut::new();
    codec::encode(Version::V5, &publish_of(event, 0, 0, Version::V5), &mut out);
    out.freeze()
}
