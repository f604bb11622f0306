//! MQTT 3.1.1 and 5.0 packets, through the `mqttbytes` modules of `rumqttc` (the only file
//! naming the crate). Its v4 and v5 codecs read and write every packet type, both roles, on
//! `bytes` buffers with a size cap checked from the fixed header before the body is read.
//!
//! The connection code sees only the version-neutral types here: `Inbound` for what a
//! client sends, and `Outbound` for what the server answers, written into the connection's
//! buffer in the client's version.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes as m3;
use rumqttc::v5::mqttbytes as m5base;
use rumqttc::v5::mqttbytes::v5 as m5;

/// The protocol version a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0.
    V5,
}

/// A will: published for the client when its connection ends without a DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
}

/// CONNECT, version-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connect {
    pub(crate) version: Version,
    pub(crate) client_id: String,
    /// 3.1.1 clean session, 5.0 clean start.
    pub(crate) clean: bool,
    pub(crate) keep_alive: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) will: Option<Will>,
    /// 5.0: how many QoS 1 and 2 messages the client takes unacknowledged.
    pub(crate) receive_maximum: Option<u16>,
    /// 5.0: seconds the session outlives the connection (3.1.1: forever unless clean).
    pub(crate) session_expiry: Option<u32>,
    /// 5.0: the largest packet the client takes.
    pub(crate) max_packet: Option<u32>,
}

/// PUBLISH, version-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    pub(crate) pkid: u16,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Connect(Box<Connect>),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        /// Filter, requested QoS; 5.0's no-local.
        filters: Vec<(String, u8, bool)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// DISCONNECT; true when a 5.0 client asks for its will anyway (reason 0x04).
    Disconnect {
        with_will: bool,
    },
    /// A packet only a server sends (CONNACK, SUBACK…), or 5.0's AUTH, which is not offered.
    Unexpected(&'static str),
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Larger than the server's maximum packet size.
    #[error("packet of {0} bytes is larger than allowed")]
    TooLarge(usize),
    /// A CONNECT for a protocol version other than 3.1.1 and 5.0.
    #[error("unsupported protocol level {0}")]
    Version(u8),
    /// Anything else the codec refused.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Takes one whole packet off the front of `buf`, or `None` when more bytes are needed.
/// Before CONNECT, `version` is `None` and only a CONNECT decodes (its level picks the codec).
pub(crate) fn decode(
    version: Option<Version>,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Inbound>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let version = match version {
        Some(version) => version,
        None => match connect_level(buf) {
            None => return Ok(None),
            Some(4) => Version::V4,
            Some(5) => Version::V5,
            Some(0) => {
                return Err(DecodeError::Malformed(
                    "the first packet must be CONNECT".into(),
                ));
            }
            Some(level) => return Err(DecodeError::Version(level)),
        },
    };
    let framed = m3::check(buf.iter(), max);
    match framed {
        Err(m3::Error::InsufficientBytes(_)) => return Ok(None),
        Err(m3::Error::PayloadSizeLimitExceeded(n)) => return Err(DecodeError::TooLarge(n)),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
        Ok(_) => {}
    }
    // 5.0's DISCONNECT may have no body (reason 0, normal), which the codec refuses.
    if version == Version::V5 && buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
        let _ = buf.split_to(2);
        return Ok(Some(Inbound::Disconnect { with_will: false }));
    }
    let malformed = |e: &dyn std::fmt::Display| DecodeError::Malformed(e.to_string());
    match version {
        Version::V4 => m3::v4::Packet::read(buf, max)
            .map(|p| Some(from_v4(p)))
            .map_err(|e| malformed(&e)),
        Version::V5 => m5::Packet::read(buf, Some(max as u32))
            .map(|p| Some(from_v5(p)))
            .map_err(|e| malformed(&e)),
    }
}

/// The protocol level of the CONNECT at the front of `buf` (`None`: not enough bytes yet).
/// Anything but a CONNECT reads as level 0, which `decode` refuses as malformed.
fn connect_level(buf: &[u8]) -> Option<u8> {
    if buf[0] != 0x10 {
        return Some(0);
    }
    // Fixed header: one byte, then 1–4 bytes of remaining length.
    let mut at = 1;
    while at < buf.len() && at < 5 && buf[at] & 0x80 != 0 {
        at += 1;
    }
    // Then the protocol name (length-prefixed "MQTT") and the level.
    let level = at + 1 + 2 + 4;
    if at >= 5 {
        return Some(0);
    }
    buf.get(level).copied()
}

fn qos3(q: m3::QoS) -> u8 {
    q as u8
}

fn qos5(q: m5base::QoS) -> u8 {
    q as u8
}

fn from_v4(packet: m3::v4::Packet) -> Inbound {
    use m3::v4::Packet as P;
    match packet {
        P::Connect(c) => Inbound::Connect(Box::new(Connect {
            version: Version::V4,
            client_id: c.client_id,
            clean: c.clean_session,
            keep_alive: c.keep_alive,
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.map(|l| l.password),
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: qos3(w.qos),
                retain: w.retain,
            }),
            receive_maximum: None,
            session_expiry: None,
            max_packet: None,
        })),
        P::Publish(p) => Inbound::Publish(Publish {
            topic: p.topic,
            payload: p.payload,
            qos: qos3(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
        }),
        P::PubAck(a) => Inbound::PubAck(a.pkid),
        P::PubRec(a) => Inbound::PubRec(a.pkid),
        P::PubRel(a) => Inbound::PubRel(a.pkid),
        P::PubComp(a) => Inbound::PubComp(a.pkid),
        P::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos3(f.qos), false))
                .collect(),
        },
        P::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        P::PingReq => Inbound::PingReq,
        P::Disconnect => Inbound::Disconnect { with_will: false },
        P::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        P::SubAck(_) => Inbound::Unexpected("SUBACK"),
        P::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        P::PingResp => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(packet: m5::Packet) -> Inbound {
    use m5::Packet as P;
    match packet {
        P::Connect(c, will, login) => {
            let props = c.properties.unwrap_or_default();
            Inbound::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: c.client_id,
                clean: c.clean_start,
                keep_alive: c.keep_alive,
                username: login.as_ref().map(|l| l.username.clone()),
                password: login.map(|l| l.password),
                will: will.map(|w| Will {
                    topic: String::from_utf8_lossy(&w.topic).into_owned(),
                    payload: w.message,
                    qos: qos5(w.qos),
                    retain: w.retain,
                }),
                receive_maximum: props.receive_maximum,
                session_expiry: props.session_expiry_interval,
                max_packet: props.max_packet_size,
            }))
        }
        P::Publish(p) => Inbound::Publish(Publish {
            // A topic alias (not offered: Topic Alias Maximum is 0) would leave it empty,
            // which the room name check refuses.
            topic: String::from_utf8(p.topic.to_vec()).unwrap_or_default(),
            payload: p.payload,
            qos: qos5(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
        }),
        P::PubAck(a) => Inbound::PubAck(a.pkid),
        P::PubRec(a) => Inbound::PubRec(a.pkid),
        P::PubRel(a) => Inbound::PubRel(a.pkid),
        P::PubComp(a) => Inbound::PubComp(a.pkid),
        P::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos5(f.qos), f.nolocal))
                .collect(),
        },
        P::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        P::PingReq(_) => Inbound::PingReq,
        P::Disconnect(d) => Inbound::Disconnect {
            with_will: d.reason_code == m5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        P::Auth(_) => Inbound::Unexpected("AUTH"),
        P::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        P::SubAck(_) => Inbound::Unexpected("SUBACK"),
        P::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        P::PingResp(_) => Inbound::Unexpected("PINGRESP"),
    }
}

/// A reason code, as 5.0 numbers them; 3.1.1 answers map from it where they can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reason {
    Success = 0x00,
    GrantedQos1 = 0x01,
    GrantedQos2 = 0x02,
    NoSubscriptionExisted = 0x11,
    Unspecified = 0x80,
    Malformed = 0x81,
    ProtocolError = 0x82,
    UnsupportedVersion = 0x84,
    ClientIdInvalid = 0x85,
    BadCredentials = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ShuttingDown = 0x8B,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    ReceiveMaximumExceeded = 0x93,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    /// Not a 5.0 code: SUBACK's "granted QoS 0" is `Success`.
    GrantedQos0 = 0xFE,
}

impl Reason {
    fn is_error(self) -> bool {
        (self as u8) >= 0x80 && self != Reason::GrantedQos0
    }
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outbound<'a> {
    ConnAck {
        session_present: bool,
        reason: Reason,
        /// 5.0 properties: the server's Receive Maximum and Maximum Packet Size, and the
        /// client id assigned when the client sent none.
        receive_maximum: u16,
        max_packet: u32,
        assigned_id: Option<&'a str>,
        /// 5.0: the keep-alive the server sets for a client that asked for none.
        server_keep_alive: Option<u16>,
    },
    SubAck {
        pkid: u16,
        reasons: &'a [Reason],
    },
    UnsubAck {
        pkid: u16,
        reasons: &'a [Reason],
    },
    PubAck(u16, Reason),
    PubRec(u16, Reason),
    PubRel(u16),
    PubComp(u16),
    PingResp,
    /// 5.0 only; 3.1.1 has no server DISCONNECT (the connection is just closed).
    Disconnect(Reason),
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        pkid: u16,
        retain: bool,
        dup: bool,
        /// 5.0: the message's id, as the user property `id`.
        id: Option<String>,
    },
}

fn suback3(r: Reason) -> m3::v4::SubscribeReasonCode {
    use m3::v4::SubscribeReasonCode as C;
    match r {
        Reason::GrantedQos0 | Reason::Success => C::Success(m3::QoS::AtMostOnce),
        Reason::GrantedQos1 => C::Success(m3::QoS::AtLeastOnce),
        Reason::GrantedQos2 => C::Success(m3::QoS::ExactlyOnce),
        _ => C::Failure,
    }
}

fn suback5(r: Reason) -> m5::SubscribeReasonCode {
    use m5::SubscribeReasonCode as C;
    match r {
        Reason::GrantedQos0 | Reason::Success => C::Success(m5base::QoS::AtMostOnce),
        Reason::GrantedQos1 => C::Success(m5base::QoS::AtLeastOnce),
        Reason::GrantedQos2 => C::Success(m5base::QoS::ExactlyOnce),
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::TopicFilterInvalid => C::TopicFilterInvalid,
        Reason::QuotaExceeded => C::QuotaExceeded,
        _ => C::Unspecified,
    }
}

fn connack3(r: Reason) -> m3::v4::ConnectReturnCode {
    use m3::v4::ConnectReturnCode as C;
    match r {
        Reason::Success => C::Success,
        Reason::UnsupportedVersion => C::RefusedProtocolVersion,
        Reason::ClientIdInvalid => C::BadClientId,
        Reason::BadCredentials => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        _ => C::ServiceUnavailable,
    }
}

fn connack5(r: Reason) -> m5::ConnectReturnCode {
    use m5::ConnectReturnCode as C;
    match r {
        Reason::Success => C::Success,
        Reason::UnsupportedVersion => C::UnsupportedProtocolVersion,
        Reason::ClientIdInvalid => C::ClientIdentifierNotValid,
        Reason::BadCredentials => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::Malformed => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::MessageRateTooHigh => C::ConnectionRateExceeded,
        _ => C::ServerUnavailable,
    }
}

fn puback5(r: Reason) -> m5::PubAckReason {
    use m5::PubAckReason as C;
    match r {
        Reason::Success => C::Success,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::PayloadFormatInvalid => C::PayloadFormatInvalid,
        _ => C::UnspecifiedError,
    }
}

fn pubrec5(r: Reason) -> m5::PubRecReason {
    use m5::PubRecReason as C;
    match r {
        Reason::Success => C::Success,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::PayloadFormatInvalid => C::PayloadFormatInvalid,
        _ => C::UnspecifiedError,
    }
}

fn disconnect5(r: Reason) -> m5::DisconnectReasonCode {
    use m5::DisconnectReasonCode as C;
    match r {
        Reason::Malformed => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::ShuttingDown => C::ServerShuttingDown,
        Reason::KeepAliveTimeout => C::KeepAliveTimeout,
        Reason::SessionTakenOver => C::SessionTakenOver,
        Reason::TopicFilterInvalid => C::TopicFilterInvalid,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        Reason::ReceiveMaximumExceeded => C::ReceiveMaximumExceeded,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::MessageRateTooHigh => C::MessageRateTooHigh,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::AdministrativeAction => C::AdministrativeAction,
        Reason::PayloadFormatInvalid => C::PayloadFormatInvalid,
        _ => C::UnspecifiedError,
    }
}

fn qos_of3(q: u8) -> m3::QoS {
    match q {
        0 => m3::QoS::AtMostOnce,
        1 => m3::QoS::AtLeastOnce,
        _ => m3::QoS::ExactlyOnce,
    }
}

fn qos_of5(q: u8) -> m5base::QoS {
    match q {
        0 => m5base::QoS::AtMostOnce,
        1 => m5base::QoS::AtLeastOnce,
        _ => m5base::QoS::ExactlyOnce,
    }
}

/// Writes one packet into `buf` in `version`'s form. Nothing is written for what `version`
/// has no packet for (a 3.1.1 DISCONNECT from the server).
pub(crate) fn encode(version: Version, packet: &Outbound<'_>, buf: &mut BytesMut) {
    let written = match version {
        Version::V4 => encode_v4(packet, buf).map_err(|e| e.to_string()),
        Version::V5 => encode_v5(packet, buf).map_err(|e| e.to_string()),
    };
    if let Err(error) = written {
        // Every field comes from the server and fits (topics and payloads were checked
        // against the packet size when they arrived), so this is a bug, not a client's doing.
        tracing::error!(%error, ?packet, "mqtt packet not encoded");
    }
}

fn encode_v4(packet: &Outbound<'_>, buf: &mut BytesMut) -> Result<usize, m3::Error> {
    use m3::v4;
    match packet {
        Outbound::ConnAck {
            session_present,
            reason,
            ..
        } => v4::ConnAck::new(connack3(*reason), *session_present).write(buf),
        Outbound::SubAck { pkid, reasons } => {
            v4::SubAck::new(*pkid, reasons.iter().map(|r| suback3(*r)).collect()).write(buf)
        }
        Outbound::UnsubAck { pkid, .. } => v4::UnsubAck::new(*pkid).write(buf),
        // 3.1.1 cannot refuse a publish in its ack; the connection code closes instead.
        Outbound::PubAck(pkid, _) => v4::PubAck::new(*pkid).write(buf),
        Outbound::PubRec(pkid, _) => v4::PubRec::new(*pkid).write(buf),
        Outbound::PubRel(pkid) => v4::PubRel::new(*pkid).write(buf),
        Outbound::PubComp(pkid) => v4::PubComp::new(*pkid).write(buf),
        Outbound::PingResp => v4::PingResp.write(buf),
        Outbound::Disconnect(_) => Ok(0),
        Outbound::Publish {
            topic,
            payload,
            qos,
            pkid,
            retain,
            dup,
            ..
        } => {
            let mut publish =
                v4::Publish::from_bytes(*topic, qos_of3(*qos), Bytes::copy_from_slice(payload));
            publish.pkid = *pkid;
            publish.retain = *retain;
            publish.dup = *dup;
            publish.write(buf)
        }
    }
}

/// A 5.0 CONNACK with the server's properties (none on a refusal).
fn connack_v5(
    session_present: bool,
    reason: Reason,
    receive_maximum: u16,
    max_packet: u32,
    assigned_id: Option<&str>,
    server_keep_alive: Option<u16>,
) -> m5::ConnAck {
    let properties = (!reason.is_error()).then(|| m5::ConnAckProperties {
        receive_max: Some(receive_maximum),
        max_packet_size: Some(max_packet),
        assigned_client_identifier: assigned_id.map(str::to_owned),
        topic_alias_max: Some(0),
        shared_subscription_available: Some(0),
        subscription_identifiers_available: Some(0),
        session_expiry_interval: None,
        max_qos: None,
        retain_available: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        server_keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    });
    m5::ConnAck {
        session_present,
        code: connack5(reason),
        properties,
    }
}

fn encode_v5(packet: &Outbound<'_>, buf: &mut BytesMut) -> Result<usize, m5base::Error> {
    match packet {
        Outbound::ConnAck {
            session_present,
            reason,
            receive_maximum,
            max_packet,
            assigned_id,
            server_keep_alive,
        } => connack_v5(
            *session_present,
            *reason,
            *receive_maximum,
            *max_packet,
            *assigned_id,
            *server_keep_alive,
        )
        .write(buf),
        Outbound::SubAck { pkid, reasons } => m5::SubAck {
            pkid: *pkid,
            return_codes: reasons.iter().map(|r| suback5(*r)).collect(),
            properties: None,
        }
        .write(buf),
        Outbound::UnsubAck { pkid, reasons } => m5::UnsubAck {
            pkid: *pkid,
            reasons: reasons
                .iter()
                .map(|r| match r {
                    Reason::NoSubscriptionExisted => m5::UnsubAckReason::NoSubscriptionExisted,
                    Reason::TopicFilterInvalid => m5::UnsubAckReason::TopicFilterInvalid,
                    _ => m5::UnsubAckReason::Success,
                })
                .collect(),
            properties: None,
        }
        .write(buf),
        Outbound::PubAck(pkid, reason) => {
            let mut ack = m5::PubAck::new(*pkid, None);
            ack.reason = puback5(*reason);
            ack.write(buf)
        }
        Outbound::PubRec(pkid, reason) => {
            let mut rec = m5::PubRec::new(*pkid, None);
            rec.reason = pubrec5(*reason);
            rec.write(buf)
        }
        Outbound::PubRel(pkid) => m5::PubRel::new(*pkid, None).write(buf),
        Outbound::PubComp(pkid) => m5::PubComp::new(*pkid, None).write(buf),
        Outbound::PingResp => m5::PingResp::write(buf),
        Outbound::Disconnect(reason) => m5::Disconnect::new(disconnect5(*reason)).write(buf),
        Outbound::Publish {
            topic,
            payload,
            qos,
            pkid,
            retain,
            dup,
            id,
        } => {
            let properties = id.as_ref().map(|id| m5::PublishProperties {
                user_properties: vec![("id".to_owned(), id.clone())],
                ..m5::PublishProperties::default()
            });
            let mut publish = m5::Publish::new(
                *topic,
                qos_of5(*qos),
                Bytes::copy_from_slice(payload),
                properties,
            );
            publish.pkid = *pkid;
            publish.retain = *retain;
            publish.dup = *dup;
            publish.write(buf)
        }
    }
}

/// Writes `shared`, a QoS 0 PUBLISH this module encoded, as the same message at `qos` with
/// packet id `pkid`: the first byte takes the QoS, the remaining length grows by the two
/// bytes of the id, which goes after the topic; the topic, properties and payload are copied
/// as they are. So a QoS 1 or 2 delivery costs one copy of the shared packet, not an encode
/// (and its allocations) per subscriber; the codec tests check it against the crate's own
/// encoding.
pub(crate) fn with_packet_id(shared: &[u8], qos: u8, pkid: u16, out: &mut BytesMut) {
    let Some((remaining, header)) = remaining_length(shared) else {
        tracing::error!("not a PUBLISH this codec encoded");
        return;
    };
    let body = &shared[header..];
    let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
    out.reserve(shared.len() + 3);
    out.extend_from_slice(&[(shared[0] & !0b0110) | (qos << 1)]);
    let mut left = remaining + 2;
    loop {
        let byte = (left % 128) as u8;
        left /= 128;
        if left == 0 {
            out.extend_from_slice(&[byte]);
            break;
        }
        out.extend_from_slice(&[byte | 0x80]);
    }
    out.extend_from_slice(&body[..topic_end]);
    out.extend_from_slice(&pkid.to_be_bytes());
    out.extend_from_slice(&body[topic_end..]);
}

/// A packet's remaining length and the length of its fixed header.
fn remaining_length(packet: &[u8]) -> Option<(usize, usize)> {
    let mut length = 0usize;
    for (i, byte) in packet.iter().enumerate().skip(1).take(4) {
        length |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let header = i + 1;
            return (packet.len() == header + length).then_some((length, header));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(version: Version) -> BytesMut {
        let mut buf = BytesMut::new();
        match version {
            Version::V4 => {
                let mut c = m3::v4::Connect::new("dev1");
                c.set_login("u", "token");
                c.write(&mut buf).unwrap();
            }
            Version::V5 => {
                let c = m5::Connect {
                    keep_alive: 30,
                    client_id: "dev5".into(),
                    clean_start: false,
                    properties: Some(m5::ConnectProperties {
                        receive_maximum: Some(7),
                        session_expiry_interval: Some(60),
                        ..m5::ConnectProperties::new()
                    }),
                };
                c.write(&None, &None, &mut buf).unwrap();
            }
        }
        buf
    }

    #[test]
    fn connect_picks_the_version() {
        let mut buf = connect(Version::V4);
        let half = buf.split_to(5);
        let mut partial = half.clone();
        assert_eq!(decode(None, &mut partial, 1024), Ok(None));
        let mut whole = half;
        whole.extend_from_slice(&buf);
        let Some(Inbound::Connect(c)) = decode(None, &mut whole, 1024).unwrap() else {
            panic!("not a connect");
        };
        assert_eq!((c.version, &*c.client_id), (Version::V4, "dev1"));
        assert_eq!(c.password.as_deref(), Some("token"));
        assert!(whole.is_empty());

        let mut buf = connect(Version::V5);
        let Some(Inbound::Connect(c)) = decode(None, &mut buf, 1024).unwrap() else {
            panic!("not a connect");
        };
        assert_eq!(c.version, Version::V5);
        assert_eq!((c.receive_maximum, c.session_expiry), (Some(7), Some(60)));
    }

    #[test]
    fn refusals_decode_as_errors() {
        let mut level3 = BytesMut::from(&b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x3c"[..]);
        assert!(decode(None, &mut level3, 1024).is_err());
        let mut not_connect = BytesMut::from(&b"\x30\x03\x00\x01a"[..]);
        assert!(decode(None, &mut not_connect, 1024).is_err());
        let mut huge = BytesMut::from(&b"\x30\xff\xff\x03"[..]);
        assert_eq!(
            decode(Some(Version::V4), &mut huge, 1024),
            Err(DecodeError::TooLarge(65535))
        );
        let mut empty_disconnect = BytesMut::from(&b"\xe0\x00"[..]);
        assert_eq!(
            decode(Some(Version::V5), &mut empty_disconnect, 1024),
            Ok(Some(Inbound::Disconnect { with_will: false }))
        );
    }

    #[test]
    fn a_packet_id_added_to_a_shared_publish_is_the_crates_own_encoding() {
        for version in [Version::V4, Version::V5] {
            // Payloads whose remaining length crosses the one- and two-byte boundaries.
            for size in [1, 100, 125, 126, 127, 128, 16_370, 16_380, 20_000] {
                let payload = vec![b'x'; size];
                let publish = |qos, pkid| Outbound::Publish {
                    topic: "sensors/t",
                    payload: &payload,
                    qos,
                    pkid,
                    retain: false,
                    dup: false,
                    id: (version == Version::V5).then(|| "0000abcd-3".to_owned()),
                };
                let mut shared = BytesMut::new();
                encode(version, &publish(0, 0), &mut shared);
                for qos in [1, 2] {
                    let mut want = BytesMut::new();
                    encode(version, &publish(qos, 513), &mut want);
                    let mut got = BytesMut::new();
                    with_packet_id(&shared, qos, 513, &mut got);
                    assert_eq!(got, want, "{version:?} size {size} qos {qos}");
                }
            }
        }
    }

    #[test]
    fn publishes_round_trip_in_both_versions() {
        for version in [Version::V4, Version::V5] {
            let mut buf = BytesMut::new();
            let packet = Outbound::Publish {
                topic: "sensors/t",
                payload: b"21.5",
                qos: 1,
                pkid: 9,
                retain: true,
                dup: false,
                id: Some("0000abcd-3".into()),
            };
            encode(version, &packet, &mut buf);
            let Some(Inbound::Publish(p)) = decode(Some(version), &mut buf, 1024).unwrap() else {
                panic!("not a publish");
            };
            assert_eq!(
                (&*p.topic, &p.payload[..], p.qos),
                ("sensors/t", &b"21.5"[..], 1)
            );
            assert_eq!((p.pkid, p.retain), (9, true));
        }
    }
}
