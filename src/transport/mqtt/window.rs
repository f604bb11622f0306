//! The outgoing QoS 1/2 window of one MQTT connection, sans IO: which packet ids are in use,
//! what each carries until it is acknowledged, and whether another may be sent. The
//! connection writes the packets; this type only keeps the books, so its rules (ids skip the
//! ones in use and never 0, a QoS 2 id stays taken from PUBREC to PUBCOMP, an ack for an id
//! not in flight changes nothing) are tested here without a socket.

use std::collections::{HashMap, HashSet};

/// Messages sent at QoS 1 or 2 and not yet acknowledged, within the client's Receive Maximum.
#[derive(Debug)]
pub(crate) struct Window<T> {
    /// At most this many ids in use at once (inflight and released together).
    size: usize,
    /// The last id handed out.
    last: u16,
    /// Sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    inflight: HashMap<u16, T>,
    /// QoS 2 past PUBREC, waiting for PUBCOMP: the id is still taken.
    released: HashSet<u16>,
}

impl<T> Window<T> {
    /// An empty window of `size` (the client's Receive Maximum, capped by the server's).
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            last: 0,
            inflight: HashMap::new(),
            released: HashSet::new(),
        }
    }

    /// True if another message may be sent now.
    pub(crate) fn has_room(&self) -> bool {
        self.inflight.len() + self.released.len() < self.size
    }

    /// Takes a free packet id for `item`, or `None` when the window is full.
    pub(crate) fn send(&mut self, item: T) -> Option<u16> {
        if !self.has_room() {
            return None;
        }
        // A free id exists: fewer than 65,535 are in use (the window is at most that).
        loop {
            self.last = self.last.wrapping_add(1).max(1);
            let id = self.last;
            if !self.inflight.contains_key(&id) && !self.released.contains(&id) {
                self.inflight.insert(id, item);
                return Some(id);
            }
        }
    }

    /// PUBACK: the QoS 1 message `id` is delivered; its place is free.
    pub(crate) fn acked(&mut self, id: u16) -> Option<T> {
        self.inflight.remove(&id)
    }

    /// PUBREC: the QoS 2 message `id` arrived; its id stays taken until PUBCOMP. True if
    /// it was in flight (a PUBREL is then owed).
    pub(crate) fn received(&mut self, id: u16) -> bool {
        let known = self.inflight.remove(&id).is_some();
        if known {
            self.released.insert(id);
        }
        known
    }

    /// PUBCOMP: the QoS 2 exchange `id` is over; its place is free.
    pub(crate) fn completed(&mut self, id: u16) {
        self.released.remove(&id);
    }

    /// What is still in flight (to be sent again after a reconnect).
    pub(crate) fn unacked(&self) -> impl Iterator<Item = &T> {
        self.inflight.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_1_and_a_full_window_sends_nothing() {
        let mut w = Window::new(2);
        assert_eq!(w.send("a"), Some(1));
        assert_eq!(w.send("b"), Some(2));
        assert!(!w.has_room());
        assert_eq!(w.send("c"), None);
        assert_eq!(w.acked(1), Some("a"));
        assert_eq!(w.send("c"), Some(3));
    }

    #[test]
    fn a_qos2_id_is_taken_from_pubrec_to_pubcomp() {
        let mut w = Window::new(1);
        let id = w.send("m").unwrap();
        assert!(w.received(id), "PUBREC for a message in flight");
        assert!(!w.has_room(), "released, not yet complete");
        assert_eq!(w.unacked().count(), 0, "nothing to send again");
        w.completed(id);
        assert!(w.has_room());
    }

    #[test]
    fn acks_for_unknown_ids_change_nothing() {
        let mut w: Window<&str> = Window::new(4);
        assert_eq!(w.acked(9), None);
        assert!(!w.received(9), "no PUBREL owed for an id never sent");
        w.completed(9);
        assert!(w.has_room());
        assert_eq!(w.send("x"), Some(1));
    }

    #[test]
    fn ids_wrap_past_65535_and_skip_those_in_use_and_0() {
        let mut w = Window::new(3);
        w.last = u16::MAX - 1;
        assert_eq!(w.send("a"), Some(u16::MAX));
        assert_eq!(w.send("b"), Some(1), "0 is never an id");
        w.last = 0;
        assert_eq!(w.send("c"), Some(2), "1 is in use");
    }
}
