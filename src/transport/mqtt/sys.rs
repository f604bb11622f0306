//! `$SYS/broker/...`: a few live figures, sent as retained messages to a client that
//! subscribes to them, and again every `EVERY` while it stays subscribed.

use std::time::Duration;

use crate::transport::context::Context;

/// How often a `$SYS` subscriber is sent the figures again.
pub(super) const EVERY: Duration = Duration::from_secs(10);

/// Each `$SYS` topic with its value now.
pub(super) fn figures(ctx: &Context) -> Vec<(&'static str, String)> {
    vec![
        (
            "$SYS/broker/version",
            format!("switchboard {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", ctx.mqtt.uptime().to_string()),
        (
            "$SYS/broker/clients/connected",
            ctx.mqtt.connected().to_string(),
        ),
        ("$SYS/broker/sessions/parked", ctx.mqtt.parked().to_string()),
        (
            "$SYS/broker/retained/count",
            ctx.mqtt.retained_count().to_string(),
        ),
        ("$SYS/broker/rooms", ctx.hub.room_count().to_string()),
    ]
}
