//! Process-wide metrics in Prometheus form, served at `GET /metrics`.
//!
//! Hot-path counters are updated once per publish or once per write batch, never once per
//! subscriber, so that fan-out does not bounce one cache line between cores. Gauges that
//! would need per-connection bookkeeping (queue depth, history size) are computed when
//! scraped.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A transport label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// tcp, udp, ws or sse.
    pub transport: &'static str,
}

/// A reason label for refusals.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why something was refused or dropped.
    pub reason: &'static str,
}

/// Every metric switchboard keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Open client connections (hub subscribers), by transport.
    pub connections: Family<TransportLabel, Gauge>,
    /// Messages published into rooms.
    pub published: Counter,
    /// Messages handed to subscriber queues (one publish to N members counts N).
    pub deliveries: Counter,
    /// Subscribers cut because their queue overflowed.
    pub slow_consumers: Counter,
    /// Things refused or dropped, by reason (server_full, rate_limited, storage_busy, …).
    pub refused: Family<ReasonLabel, Counter>,
    /// Seconds from publish to the write of a batch that carried it (one sample per batch).
    pub delivery_latency: Histogram,
    /// 1 while this node receives the Redis bus (cluster mode only).
    pub redis_up: Gauge,
    /// Webhook events delivered (answered 2xx).
    pub webhook_sent: Counter,
    /// Webhook POSTs that failed (each retry counts).
    pub webhook_failed: Counter,
    /// Webhook events dropped: the observer's channel or an endpoint's queue was full.
    pub webhook_dropped: Counter,
    /// Webhook events waiting to be sent, every endpoint together.
    pub webhook_queued: Gauge,
    queued: Gauge,
    history: Gauge,
    rooms: Gauge,
    /// The delivery latency again, in buckets this module can read back (the dashboard's
    /// p50 and p99): bucket `i` counts samples up to `LATENCY_FIRST_MS × 2^i`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    registry: Registry,
}

/// How many latency buckets `Metrics` keeps for itself, and the first one's upper bound.
pub const LATENCY_BUCKETS: usize = 18;
/// Upper bound of the first latency bucket, in milliseconds; each next one doubles it.
pub const LATENCY_FIRST_MS: f64 = 0.25;

/// The figures the dashboard's stream sends, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Open connections by transport.
    pub connections: Vec<(&'static str, i64)>,
    /// Counters since the process started.
    pub published: u64,
    /// Deliveries to subscriber queues.
    pub deliveries: u64,
    /// Slow consumers cut.
    pub slow_consumers: u64,
    /// Refusals by the store (busy, or Redis down).
    pub storage_refusals: u64,
    /// Latency samples per bucket (see `LATENCY_BUCKETS`).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Webhook events waiting.
    pub webhooks_queued: i64,
}

impl Snapshot {
    /// The `q` quantile (0–1) of the latency samples between `earlier` and `self`, in
    /// milliseconds (a bucket's upper bound), or `None` with no sample.
    pub fn latency_ms(&self, earlier: &Snapshot, q: f64) -> Option<f64> {
        let counts: [u64; LATENCY_BUCKETS] =
            std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i]));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_FIRST_MS * f64::from(1u32 << i));
            }
        }
        None
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut metrics = Self {
            connections: Family::default(),
            published: Counter::default(),
            deliveries: Counter::default(),
            slow_consumers: Counter::default(),
            refused: Family::default(),
            delivery_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            redis_up: Gauge::default(),
            webhook_sent: Counter::default(),
            webhook_failed: Counter::default(),
            webhook_dropped: Counter::default(),
            webhook_queued: Gauge::default(),
            queued: Gauge::default(),
            history: Gauge::default(),
            rooms: Gauge::default(),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            registry: Registry::with_prefix("switchboard"),
        };
        metrics.register();
        metrics
    }

    /// Puts every metric in the registry, with its name and help.
    fn register(&mut self) {
        self.registry.register(
            "connections",
            "Open client connections by transport",
            self.connections.clone(),
        );
        self.registry.register(
            "messages_published",
            "Messages published into rooms",
            self.published.clone(),
        );
        self.registry.register(
            "deliveries",
            "Messages handed to subscriber queues",
            self.deliveries.clone(),
        );
        self.registry.register(
            "slow_consumer_disconnects",
            "Clients cut because their queue overflowed",
            self.slow_consumers.clone(),
        );
        self.registry.register(
            "refused",
            "Requests or messages refused, by reason",
            self.refused.clone(),
        );
        self.registry.register(
            "delivery_latency_seconds",
            "Publish-to-write latency, sampled once per write batch",
            self.delivery_latency.clone(),
        );
        self.registry.register(
            "queued_events",
            "Events waiting in subscriber queues",
            self.queued.clone(),
        );
        self.registry.register(
            "history_messages",
            "Messages held in room histories",
            self.history.clone(),
        );
        self.registry
            .register("rooms", "Rooms in memory", self.rooms.clone());
        self.registry.register(
            "redis_up",
            "1 while this node receives the Redis bus (with --redis)",
            self.redis_up.clone(),
        );
        self.registry.register(
            "webhook_events_sent",
            "Webhook events delivered (answered 2xx)",
            self.webhook_sent.clone(),
        );
        self.registry.register(
            "webhook_failures",
            "Webhook POSTs that failed, each retry counted",
            self.webhook_failed.clone(),
        );
        self.registry.register(
            "webhook_events_dropped",
            "Webhook events dropped because a queue was full",
            self.webhook_dropped.clone(),
        );
        self.registry.register(
            "webhook_events_queued",
            "Webhook events waiting to be sent",
            self.webhook_queued.clone(),
        );
    }

    /// The dashboard's figures now.
    pub fn snapshot(&self) -> Snapshot {
        let connections = ["tcp", "udp", "ws", "sse", "mqtt", "grpc"]
            .into_iter()
            .map(|transport| {
                let n = self
                    .connections
                    .get_or_create(&TransportLabel { transport })
                    .get();
                (transport, n)
            })
            .collect();
        Snapshot {
            connections,
            published: self.published.get(),
            deliveries: self.deliveries.get(),
            slow_consumers: self.slow_consumers.get(),
            storage_refusals: self
                .refused
                .get_or_create(&ReasonLabel { reason: "storage" })
                .get(),
            latency: std::array::from_fn(|i| self.latency_buckets[i].load(Ordering::Relaxed)),
            webhooks_queued: self.webhook_queued.get(),
        }
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records the latency of an event written now.
    pub fn observe_delivery(&self, event_time_ms: u64) {
        let age_ms = crate::event::now_ms().saturating_sub(event_time_ms);
        self.delivery_latency.observe(age_ms as f64 / 1000.0);
        // The first bucket whose bound (0.25 ms × 2^i) holds the age; whole milliseconds,
        // so ages under 1 ms land in the bucket of 1 ms.
        let bucket = (age_ms as f64 / LATENCY_FIRST_MS).max(1.0).log2().ceil() as usize;
        self.latency_buckets[bucket.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the scrape-time gauges refreshed from `stats`.
    pub fn render(&self, stats: HubStats) -> String {
        self.queued.set(stats.queued as i64);
        self.history.set(stats.history as i64);
        self.rooms.set(stats.rooms as i64);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Totals reported by `Hub::stats`, for the scrape-time gauges. Defined here so that metrics
/// needs nothing of the hub.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubStats {
    /// Rooms in memory.
    pub rooms: usize,
    /// Messages held in histories.
    pub history: usize,
    /// Events waiting in subscriber queues (a subscriber in several rooms counts once each).
    pub queued: usize,
}
