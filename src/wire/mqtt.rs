//! MQTT's wire form: a room message as a PUBLISH packet, QoS 0, encoded once per protocol
//! version and shared by every subscriber of that version (`Form::Mqtt`, `Form::Mqtt5`); a
//! QoS 1 or 2 delivery writes its packet id into a copy (`protocol::mqtt::with_packet_id`).

use bytes::{Bytes, BytesMut};

use crate::event::{Event, Form};
use crate::protocol::mqtt::{Outbound, Version, encode};

/// The event's QoS 0 PUBLISH in `version`, made on first use.
pub(crate) fn event(event: &Event, version: Version) -> &Bytes {
    let form = match version {
        Version::V4 => Form::Mqtt,
        Version::V5 => Form::Mqtt5,
    };
    event.encoded(form, |e| publish(e, version))
}

/// The PUBLISH packet; 5.0 carries the message id as the user property `id`.
fn publish(event: &Event, version: Version) -> Bytes {
    let packet = Outbound::Publish {
        topic: &event.room,
        payload: event.text.as_bytes(),
        qos: 0,
        pkid: 0,
        retain: false,
        dup: false,
        id: match version {
            Version::V5 => event.id.map(|id| id.to_string()),
            Version::V4 => None,
        },
    };
    let mut out = BytesMut::new();
    encode(version, &packet, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, MessageId};

    #[test]
    fn a_message_is_one_publish_per_version_with_its_id_in_5() {
        let ev = Event::new(
            EventKind::Message,
            "a/b".into(),
            Some(MessageId { epoch: 1, seq: 2 }),
            "ann".into(),
            "hi".into(),
            None,
        );
        // 3.1.1: fixed header 0x30, length, topic "a/b", payload "hi"; no packet id at QoS 0.
        assert_eq!(&event(&ev, Version::V4)[..], b"\x30\x07\x00\x03a/bhi");
        let v5 = event(&ev, Version::V5);
        assert_eq!(v5[0], 0x30);
        assert!(v5.windows(10).any(|w| w == b"00000001-2"));
        // Shared: asking again gives the same bytes, not a new encoding.
        assert_eq!(event(&ev, Version::V5).as_ptr(), v5.as_ptr());
    }
}
