//! Deliveries: the queue's batches into PUBLISH packets within the client's window.

use super::*;
use crate::wire;

impl Conn {
    /// Moves a batch from the queue: messages of joined rooms to `pending`, answers (acks
    /// from the ack task) straight into the write buffer.
    pub(super) fn take(&mut self, outbox: &mut Outbox) {
        let own = self.sub.id;
        let Conn {
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
                // An MQTT session answers nothing of its own (`Dialect::Quiet`).
                Delivery::Reply(_) => {}
                Delivery::Replay(replay) => replay.events.iter().for_each(&mut keep),
            }
        }
    }

    /// Encodes pending messages while the client's window has room: a QoS 0 message is the
    /// event's shared packet (made once for every subscriber of its version); QoS 1 and 2
    /// are that packet with a packet id written in (`codec::with_packet_id`), and wait in
    /// `inflight` for their ack.
    pub(super) fn pump(&mut self) {
        while let Some(event) = self.pending.front() {
            let Some(joined) = self.rooms.get(&event.room).copied() else {
                self.pending.pop_front();
                continue;
            };
            let size = wire::mqtt_event(event, self.version).len();
            if size + if joined.qos > 0 { 2 } else { 0 } > self.client_max_packet {
                tracing::debug!(
                    client_id = self.client_id,
                    "message larger than the client takes; skipped"
                );
                self.pending.pop_front();
                continue;
            }
            // QoS 1 and 2 wait in the window for their ack; a full window sends nothing more.
            let pkid = match joined.qos {
                0 => 0,
                _ => match self.window.send(Arc::clone(event)) {
                    Some(pkid) => pkid,
                    None => return,
                },
            };
            let Some(event) = self.pending.pop_front() else {
                return;
            };
            let packet = wire::mqtt_event(&event, self.version);
            if pkid == 0 {
                self.out.extend_from_slice(packet);
            } else {
                codec::with_packet_id(packet, joined.qos, pkid, &mut self.out);
            }
            if let Some(joined) = self.rooms.get_mut(&event.room) {
                joined.last = event.id.or(joined.last);
            }
        }
    }
}
