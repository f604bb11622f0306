//! Webhooks: signed POSTs to a backend when a room becomes occupied or vacated, a member joins
//! or leaves, or a message is published.
//!
//! ```text
//! room lock ──observe──▶ bounded channel ──dispatch──▶ durable queue ──send──▶ POST
//!  (try_send; full = dropped, counted)   (per endpoint, bounded)   (batches, backoff)
//! ```
//!
//! A room never waits for a webhook: the hub's `Observer` call only `try_send`s into a bounded
//! channel. One dispatcher task turns what happened into JSON events once, filters them per
//! endpoint (event names and room patterns) and appends them to that endpoint's queue: SQLite
//! (`webhooks.sqlite3` in the data directory, so that a restart loses nothing) or memory with
//! `--store memory`. Each endpoint has one sender task that POSTs the oldest events in batches,
//! signed with HMAC-SHA256, and on failure retries the same batch with exponential backoff.
//! A queue over its bound drops its oldest events (counted), so a receiver that is down for a
//! day costs bounded disk, not the server.

mod queue;
mod send;

pub use send::signature;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use crate::config::webhooks::{Endpoint, HookKind, WebhookConfig};
use crate::event::{EventKind, now_ms};
use crate::hub::{Observed, Observer};
use crate::metrics::METRICS;
use crate::wire::{self, Wire};

pub use queue::QueueError;

/// Events the observer may have waiting for the dispatcher before it drops (and counts) more.
const CHANNEL: usize = 8_192;

/// The running webhook sender: the hub's observer.
#[derive(Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<Observed>,
}

impl Webhooks {
    /// Opens the queue (`webhooks.sqlite3` in `data_dir`, or memory when `None`) and starts the
    /// dispatcher and one sender per endpoint; they stop when `shutdown` is cancelled.
    pub fn start(
        config: WebhookConfig,
        data_dir: Option<&Path>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, QueueError> {
        let urls: Vec<String> = config.endpoints.iter().map(|e| e.url.to_string()).collect();
        let queue = Arc::new(match data_dir {
            Some(dir) => queue::Queue::sqlite(
                &dir.join("webhooks.sqlite3"),
                &urls,
                config.queue_max,
                config.queue_max_bytes,
            )?,
            None => queue::Queue::memory(urls.len(), config.queue_max, config.queue_max_bytes),
        });
        let config = Arc::new(config);
        let wakers: Arc<[Notify]> = (0..config.endpoints.len()).map(|_| Notify::new()).collect();
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(dispatch(
            rx,
            Arc::clone(&config),
            Arc::clone(&queue),
            Arc::clone(&wakers),
        ));
        let client = send::client(config.timeout);
        for index in 0..config.endpoints.len() {
            tokio::spawn(send::run(
                index,
                Arc::clone(&config),
                Arc::clone(&queue),
                Arc::clone(&wakers),
                client.clone(),
                shutdown.clone(),
            ));
        }
        tracing::info!(
            endpoints = config.endpoints.len(),
            durable = data_dir.is_some(),
            "webhooks on"
        );
        Ok(Arc::new(Self { tx }))
    }
}

impl Observer for Webhooks {
    fn observe(&self, what: Observed) {
        if self.tx.try_send(what).is_err() {
            METRICS.webhook_dropped.inc();
        }
    }
}

/// Ids of events other than messages: this process's random prefix and a counter, so that a
/// receiver can drop a batch it is sent twice (after a lost answer) by id.
static NEXT: AtomicU64 = AtomicU64::new(1);
static PROCESS: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(now_ms()) as u32
});

fn next_id() -> String {
    format!("{:08x}-{}", *PROCESS, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One event's JSON, as it goes in a body's `events` array. A message's `message` is the
/// event's shared JSON envelope (`wire::event`), spliced in as it is, not parsed again.
fn render(kind: HookKind, what: &Observed) -> String {
    let (event, transport) = match what {
        Observed::Joined {
            event, transport, ..
        }
        | Observed::Left {
            event, transport, ..
        } => (event, Some(*transport)),
        Observed::Message(event) => (event, None),
    };
    let mut v = serde_json::json!({
        "name": kind.as_str(),
        "room": &*event.room,
        "time": event.time_ms,
    });
    match kind {
        // A message's id is its room and message id, the same on every node of a cluster.
        HookKind::Message => {
            let id = event.id.map(|id| id.to_string()).unwrap_or_default();
            v["id"] = format!("{}/{id}", event.room).into();
            let mut json = v.to_string();
            let envelope = wire::event(Wire::Json, event);
            json.pop(); // the closing brace
            json.push_str(",\"message\":");
            json.push_str(std::str::from_utf8(envelope).unwrap_or("null"));
            json.push('}');
            return json;
        }
        HookKind::MemberJoined | HookKind::MemberLeft => {
            v["id"] = next_id().into();
            v["nick"] = (&*event.nick).into();
            v["transport"] = transport.map(|t| t.as_str()).into();
            if let EventKind::Leave {
                reason: Some(reason),
            } = event.kind
            {
                v["reason"] = reason.as_str().into();
            }
        }
        HookKind::RoomOccupied | HookKind::RoomVacated => v["id"] = next_id().into(),
    }
    v.to_string()
}

/// The webhook kinds one observation makes, in the order a receiver gets them.
fn kinds(what: &Observed) -> &'static [HookKind] {
    match what {
        Observed::Joined { first: true, .. } => &[HookKind::RoomOccupied, HookKind::MemberJoined],
        Observed::Joined { .. } => &[HookKind::MemberJoined],
        Observed::Left { last: true, .. } => &[HookKind::MemberLeft, HookKind::RoomVacated],
        Observed::Left { .. } => &[HookKind::MemberLeft],
        Observed::Message(_) => &[HookKind::Message],
    }
}

/// Takes what the rooms observed, renders each event once, and queues it for every endpoint
/// that wants it, a batch at a time (one transaction per batch in SQLite).
async fn dispatch(
    mut rx: mpsc::Receiver<Observed>,
    config: Arc<WebhookConfig>,
    queue: Arc<queue::Queue>,
    wakers: Arc<[Notify]>,
) {
    let mut taken = Vec::with_capacity(256);
    while rx.recv_many(&mut taken, 256).await > 0 {
        let mut rows: Vec<(usize, String)> = Vec::new();
        for what in taken.drain(..) {
            let room = match &what {
                Observed::Joined { event, .. }
                | Observed::Left { event, .. }
                | Observed::Message(event) => Arc::clone(&event.room),
            };
            for &kind in kinds(&what) {
                let wanting: Vec<usize> = (0..config.endpoints.len())
                    .filter(|&i| config.endpoints[i].wants(kind, &room))
                    .collect();
                if wanting.is_empty() {
                    continue;
                }
                let json = render(kind, &what);
                for i in wanting {
                    rows.push((i, json.clone()));
                }
            }
        }
        if rows.is_empty() {
            continue;
        }
        let mut touched = vec![false; wakers.len()];
        for (i, _) in &rows {
            touched[*i] = true;
        }
        let q = Arc::clone(&queue);
        match tokio::task::spawn_blocking(move || q.push(rows)).await {
            Ok(Ok(dropped)) => {
                METRICS.webhook_dropped.inc_by(dropped);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "webhook events not queued"),
            Err(e) => tracing::warn!(error = %e, "webhook queue task failed"),
        }
        METRICS.webhook_queued.set(queue.total() as i64);
        for (waker, _) in wakers.iter().zip(touched).filter(|(_, t)| *t) {
            waker.notify_one();
        }
    }
}
