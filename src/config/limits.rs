//! Abuse limits: how much one client, one identity and one creator may ask of the server.
//!
//! Every default is one a person chatting never meets; each bounds what a hostile client can
//! make the server hold or send. Set in the TOML file's `[limits]` table (every key
//! optional); the common ones also have flags.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The resolved limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Messages per second one connection may publish (TCP, UDP, WebSocket), on average;
    /// 0 = unlimited.
    pub connection_rate: f64,
    /// Messages one connection may publish at once before `connection_rate` applies.
    pub connection_burst: f64,
    /// Publishes refused in a row before the connection is cut as a flood.
    pub flood_refusals: u32,
    /// Bytes one client may have waiting to be written (events, replies, replays) before it
    /// is cut as a slow consumer.
    pub queue_bytes: usize,
    /// Largest history reply (`/history`, a resume replay, an HTTP page), in bytes of text;
    /// older messages past it are left out and the reply says so.
    pub reply_bytes: usize,
    /// Time for a request's headers to arrive, counted from when the connection is ready for
    /// one: it is also how long an idle keep-alive connection stays open.
    pub http_header_timeout: Duration,
    /// Time for a request's whole body to arrive.
    pub http_body_timeout: Duration,
    /// HTTP connections at once, in all and from one IP (every request, long-poll, SSE and
    /// WebSocket rides on one).
    pub http_connections: usize,
    /// HTTP connections from one IP address at once.
    pub http_connections_per_ip: usize,
    /// File descriptors kept free so that the listeners can still accept and refuse when
    /// the process is near its limit.
    pub reserved_fds: usize,
    /// Rooms that may exist at once.
    pub max_rooms: usize,
    /// Rooms one creator (a user, or an anonymous client's IP) may have created and still
    /// existing.
    pub max_rooms_per_creator: usize,
    /// Members in one room at once.
    pub max_members: usize,
    /// Rooms one connection may be in at once (an MQTT wildcard joins every room it
    /// matches); a backend signed in with an API key is not held to it.
    pub rooms_per_connection: usize,
    /// Rooms the connections from one address may be in at once, together: what one
    /// address can make the server hold, and tear down when it leaves, is bounded.
    pub memberships_per_ip: usize,
    /// The prefix length IPv6 clients are grouped by for every per-address cap and bucket
    /// (one host usually holds a whole /64).
    pub ipv6_prefix: u8,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// UDP: longest a verification cookie is valid.
    pub udp_cookie_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A fast typist sends a line a second; a bot relaying a burst a few dozen.
            connection_rate: 20.0,
            connection_burst: 50.0,
            flood_refusals: 100,
            // 4 MiB: a full queue of chat-sized messages, or one full history reply, with
            // room to spare (Redis's pub/sub soft limit is 8 MiB; Centrifugo's queue 1 MiB).
            queue_bytes: 4 * 1024 * 1024,
            reply_bytes: 1024 * 1024,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(10),
            http_connections: 100_000,
            http_connections_per_ip: 1_000,
            reserved_fds: 64,
            max_rooms: 100_000,
            max_rooms_per_creator: 100,
            max_members: 100_000,
            // Centrifugo allows 128 channels per client; an MQTT `#` on a busy server
            // would meet that, so ten times as many.
            rooms_per_connection: 1_000,
            // A full house of connections from one address (1,000) in 20 rooms each.
            memberships_per_ip: 20_000,
            ipv6_prefix: 64,
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            udp_cookie_ttl: Duration::from_secs(120),
        }
    }
}

/// The `[limits]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    connection_rate: Option<f64>,
    connection_burst: Option<f64>,
    flood_refusals: Option<u32>,
    queue_bytes: Option<usize>,
    reply_bytes: Option<usize>,
    http_header_timeout_secs: Option<u64>,
    http_body_timeout_secs: Option<u64>,
    http_connections: Option<usize>,
    http_connections_per_ip: Option<usize>,
    reserved_fds: Option<usize>,
    max_rooms: Option<usize>,
    max_rooms_per_creator: Option<usize>,
    max_members: Option<usize>,
    rooms_per_connection: Option<usize>,
    memberships_per_ip: Option<usize>,
    ipv6_prefix: Option<u8>,
    idempotency_window_secs: Option<u64>,
    udp_cookie_ttl_secs: Option<u64>,
}

/// The limits with flags: these override the file.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FlagLimits {
    pub(super) connection_rate: Option<f64>,
    pub(super) queue_bytes: Option<usize>,
    pub(super) max_rooms: Option<usize>,
}

impl Limits {
    pub(super) fn resolve(flags: FlagLimits, file: FileLimits) -> Result<Self, ConfigError> {
        let d = Limits::default();
        let secs = Duration::from_secs;
        let limits = Limits {
            connection_rate: flags
                .connection_rate
                .or(file.connection_rate)
                .unwrap_or(d.connection_rate),
            connection_burst: file.connection_burst.unwrap_or(d.connection_burst),
            flood_refusals: file.flood_refusals.unwrap_or(d.flood_refusals),
            queue_bytes: flags
                .queue_bytes
                .or(file.queue_bytes)
                .unwrap_or(d.queue_bytes),
            reply_bytes: file.reply_bytes.unwrap_or(d.reply_bytes),
            http_header_timeout: file
                .http_header_timeout_secs
                .map_or(d.http_header_timeout, secs),
            http_body_timeout: file
                .http_body_timeout_secs
                .map_or(d.http_body_timeout, secs),
            http_connections: file.http_connections.unwrap_or(d.http_connections),
            http_connections_per_ip: file
                .http_connections_per_ip
                .unwrap_or(d.http_connections_per_ip),
            reserved_fds: file.reserved_fds.unwrap_or(d.reserved_fds),
            max_rooms: flags.max_rooms.or(file.max_rooms).unwrap_or(d.max_rooms),
            max_rooms_per_creator: file
                .max_rooms_per_creator
                .unwrap_or(d.max_rooms_per_creator),
            max_members: file.max_members.unwrap_or(d.max_members),
            rooms_per_connection: file.rooms_per_connection.unwrap_or(d.rooms_per_connection),
            memberships_per_ip: file.memberships_per_ip.unwrap_or(d.memberships_per_ip),
            ipv6_prefix: file.ipv6_prefix.unwrap_or(d.ipv6_prefix),
            idempotency_window: file
                .idempotency_window_secs
                .map_or(d.idempotency_window, secs),
            udp_cookie_ttl: file.udp_cookie_ttl_secs.map_or(d.udp_cookie_ttl, secs),
        };
        limits.validate()?;
        Ok(limits)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("limits.flood_refusals", self.flood_refusals as usize),
            ("limits.queue_bytes", self.queue_bytes),
            ("limits.reply_bytes", self.reply_bytes),
            ("limits.http_connections", self.http_connections),
            (
                "limits.http_connections_per_ip",
                self.http_connections_per_ip,
            ),
            ("limits.max_rooms", self.max_rooms),
            ("limits.max_rooms_per_creator", self.max_rooms_per_creator),
            ("limits.max_members", self.max_members),
            ("limits.rooms_per_connection", self.rooms_per_connection),
            ("limits.memberships_per_ip", self.memberships_per_ip),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        let durations = [
            ("limits.http_header_timeout_secs", self.http_header_timeout),
            ("limits.http_body_timeout_secs", self.http_body_timeout),
            ("limits.udp_cookie_ttl_secs", self.udp_cookie_ttl),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1 second".into(),
                });
            }
        }
        if !(self.connection_rate >= 0.0 && self.connection_burst >= 1.0) {
            return Err(ConfigError::Invalid {
                key: "limits.connection_rate/connection_burst",
                message: "rate must be 0 or more and burst at least 1".into(),
            });
        }
        if !(16..=128).contains(&self.ipv6_prefix) {
            return Err(ConfigError::Invalid {
                key: "limits.ipv6_prefix",
                message: format!("{} is not a prefix length from 16 to 128", self.ipv6_prefix),
            });
        }
        if self.reply_bytes > self.queue_bytes {
            return Err(ConfigError::Invalid {
                key: "limits.reply_bytes",
                message: format!(
                    "{} is more than limits.queue_bytes ({}): a full reply would cut its \
                     reader",
                    self.reply_bytes, self.queue_bytes
                ),
            });
        }
        Ok(())
    }

    /// No limit a test or benchmark flood would meet (rates off, caps high).
    pub fn unlimited() -> Self {
        Self {
            connection_rate: 0.0,
            max_rooms_per_creator: usize::MAX / 2,
            memberships_per_ip: usize::MAX / 2,
            ..Self::default()
        }
    }
}
