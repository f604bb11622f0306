//! Abuse limits: how much one client, one identity and one creator may ask of the server.
//!
//! Every default is one a person chatting never meets; each bounds what a hostile client can
//! make the server hold or send. Set in the TOML file's `[limits]` table (every key
//! optional); the common ones also have flags.
//!
//! Each limit is written once, in `limits!` below: its field, type, default, TOML key and the
//! line `docs/CONFIG.md` gives it. The struct, its `Default`, the file's table and the
//! reference rows are made from that one list.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// How a limit's type is written in the file (durations as whole seconds) and shown in the
/// reference.
trait Setting: Sized {
    /// Its form in the TOML file.
    type File: for<'de> Deserialize<'de>;
    fn from_file(file: Self::File) -> Self;
    fn show(&self) -> String;
}

macro_rules! plain_setting {
    ($($ty:ty),*) => {$(
        impl Setting for $ty {
            type File = $ty;
            fn from_file(file: $ty) -> Self {
                file
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
plain_setting!(f64, u32, u8, usize);

impl Setting for Duration {
    type File = u64;
    fn from_file(secs: u64) -> Self {
        Duration::from_secs(secs)
    }
    fn show(&self) -> String {
        self.as_secs().to_string()
    }
}

macro_rules! limits {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty = $default:expr, $key:literal, $meaning:literal;
    )*) => {
        /// The resolved limits.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Limits {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl Default for Limits {
            fn default() -> Self {
                Self { $($name: $default,)* }
            }
        }

        /// The `[limits]` table of the TOML file: every key optional, unknown keys refused.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct FileLimits {
            $(#[serde(rename = $key)] $name: Option<<$ty as Setting>::File>,)*
        }

        impl Limits {
            /// `self` with each key the file gives.
            fn with_file(mut self, file: FileLimits) -> Self {
                $(if let Some(given) = file.$name {
                    self.$name = Setting::from_file(given);
                })*
                self
            }

            /// Every limit for `docs/CONFIG.md`: its key under `[limits]`, its default,
            /// what it does.
            pub fn reference() -> Vec<(&'static str, String, &'static str)> {
                let d = Limits::default();
                vec![$((concat!("limits.", $key), d.$name.show(), $meaning),)*]
            }
        }
    };
}

limits! {
    /// Messages per second one connection may publish (TCP, UDP, WebSocket), on average;
    /// 0 = unlimited.
    // A fast typist sends a line a second; a bot relaying a burst a few dozen.
    connection_rate: f64 = 20.0, "connection_rate",
        "Messages per second one connection may publish, on average; 0 = unlimited.";
    /// Messages one connection may publish at once before `connection_rate` applies.
    connection_burst: f64 = 50.0, "connection_burst",
        "Messages a connection may send at once before `connection_rate` paces it.";
    /// Publishes refused in a row before the connection is cut as a flood.
    flood_refusals: u32 = 100, "flood_refusals",
        "Publishes refused in a row before the connection is cut as a flood.";
    /// Bytes one client may have waiting to be written (events, replies, replays) before it
    /// is cut as a slow consumer. 4 MiB: a full queue of chat-sized messages, or one full
    /// history reply, with room to spare (Redis's pub/sub soft limit is 8 MiB; Centrifugo's
    /// queue 1 MiB).
    queue_bytes: usize = 4 * 1024 * 1024, "queue_bytes",
        "Bytes one client may have waiting to be written before it is cut as a slow consumer.";
    /// Largest history reply (`/history`, a resume replay, an HTTP page), in bytes of text;
    /// older messages past it are left out and the reply says so.
    reply_bytes: usize = 1024 * 1024, "reply_bytes",
        "Largest history reply (a page, a resume replay), in bytes.";
    /// Time for a request's headers to arrive, counted from when the connection is ready for
    /// one: it is also how long an idle keep-alive connection stays open.
    http_header_timeout: Duration = Duration::from_secs(10), "http_header_timeout_secs",
        "Time for a request's headers to arrive; also how long an idle keep-alive connection stays.";
    /// Time for a request's whole body to arrive.
    http_body_timeout: Duration = Duration::from_secs(10), "http_body_timeout_secs",
        "Time for a request's whole body to arrive.";
    /// HTTP connections at once (every request, long-poll, SSE and WebSocket rides on one).
    http_connections: usize = 100_000, "http_connections",
        "HTTP connections at once.";
    /// HTTP connections from one IP address at once.
    http_connections_per_ip: usize = 1_000, "http_connections_per_ip",
        "HTTP connections from one address at once.";
    /// File descriptors kept free so that the listeners can still accept and refuse when
    /// the process is near its limit.
    reserved_fds: usize = 64, "reserved_fds",
        "File descriptors kept free so that listeners can still accept and refuse.";
    /// Rooms that may exist at once.
    max_rooms: usize = 100_000, "max_rooms",
        "Rooms that may exist at once.";
    /// Rooms one creator (a user, or an anonymous client's IP) may have created and still
    /// existing.
    max_rooms_per_creator: usize = 100, "max_rooms_per_creator",
        "Rooms one creator (a user, or an anonymous client's address) may have made and still existing.";
    /// Members in one room at once.
    max_members: usize = 100_000, "max_members",
        "Members in one room at once.";
    /// Rooms one connection may be in at once (an MQTT wildcard joins every room it
    /// matches); a backend signed in with an API key is not held to it. Centrifugo allows
    /// 128 channels per client; an MQTT `#` on a busy server would meet that, so ten times
    /// as many.
    rooms_per_connection: usize = 1_000, "rooms_per_connection",
        "Rooms one connection may be in at once, an MQTT wildcard's included (API keys exempt).";
    /// Rooms the connections from one address may be in at once, together: what one
    /// address can make the server hold, and tear down when it leaves, is bounded. A full
    /// house of connections from one address (1,000) in 20 rooms each.
    memberships_per_ip: usize = 20_000, "memberships_per_ip",
        "Rooms the connections from one address may be in at once, together.";
    /// The prefix length IPv6 clients are grouped by for every per-address cap and bucket
    /// (one host usually holds a whole /64).
    ipv6_prefix: u8 = 64, "ipv6_prefix",
        "Prefix length IPv6 clients are grouped by for every per-address cap and bucket.";
    /// How long an idempotency key is remembered.
    idempotency_window: Duration = Duration::from_secs(24 * 60 * 60), "idempotency_window_secs",
        "How long an idempotency key is remembered.";
    /// UDP: longest a verification cookie is valid.
    udp_cookie_ttl: Duration = Duration::from_secs(120), "udp_cookie_ttl_secs",
        "Longest a UDP verification cookie is valid.";
}

/// The limits with flags: these override the file.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FlagLimits {
    pub(super) connection_rate: Option<f64>,
    pub(super) queue_bytes: Option<usize>,
    pub(super) max_rooms: Option<usize>,
}

impl Limits {
    /// The defaults, then the file's `[limits]`, then the flags; checked.
    pub(super) fn resolve(flags: FlagLimits, file: FileLimits) -> Result<Self, ConfigError> {
        let mut limits = Limits::default().with_file(file);
        if let Some(rate) = flags.connection_rate {
            limits.connection_rate = rate;
        }
        if let Some(bytes) = flags.queue_bytes {
            limits.queue_bytes = bytes;
        }
        if let Some(rooms) = flags.max_rooms {
            limits.max_rooms = rooms;
        }
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
