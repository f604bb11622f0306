//! What MQTT connections share: the live client ids (for takeover), persistent sessions
//! parked between connections, and retained messages. The last two are kept in
//! `store::Keep`, so they outlast a restart when the server has a data directory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::event::{Disconnect, now_ms};
use crate::hub::{Subscriber, SubscriberId};
use crate::store::{Keep, StoreError, Table};

/// How long a new connection waits for the one it replaces to park its session.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// A persistent session between connections: its subscriptions and, per room, the id of
/// the last message it was given (it resumes after it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Parked {
    /// Filter → granted QoS.
    pub(crate) filters: BTreeMap<String, u8>,
    /// Room → the cursor to resume after (`MessageId` text).
    pub(crate) cursors: BTreeMap<String, String>,
    /// When it is forgotten (ms since the epoch); `None`: never (3.1.1 without clean session).
    pub(crate) expires_ms: Option<u64>,
    /// QoS 2 packet ids received and answered with PUBREC but not yet released: a repeat
    /// after reconnecting is answered again and not published twice.
    #[serde(default)]
    pub(crate) received: Vec<u16>,
}

/// A retained message: what a new subscriber to its topic is given first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Retained {
    pub(crate) text: String,
    pub(crate) qos: u8,
    /// The message's id in its room, when it was published there.
    pub(crate) id: Option<String>,
}

/// One connected client id.
#[derive(Debug)]
struct Live {
    id: SubscriberId,
    sub: Weak<Subscriber>,
    /// Cancelled once the connection has parked its session and let go of the id.
    gone: CancellationToken,
}

/// The MQTT state every connection shares.
#[derive(Debug)]
pub(crate) struct Mqtt {
    keep: Keep,
    live: Mutex<HashMap<String, Live>>,
    started: Instant,
}

impl Mqtt {
    pub(crate) fn new(keep: Keep) -> Self {
        Self {
            keep,
            live: Mutex::default(),
            started: Instant::now(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `client_id` for `sub`. A connection holding it is cut (`Disconnect::Replaced`)
    /// and waited for, so that its session is parked before this one resumes it. Returns the
    /// token to cancel once this connection is done with the id (`release`).
    pub(crate) async fn claim(&self, client_id: &str, sub: &Arc<Subscriber>) -> CancellationToken {
        let gone = CancellationToken::new();
        let old = self.live().insert(
            client_id.to_owned(),
            Live {
                id: sub.id,
                sub: Arc::downgrade(sub),
                gone: gone.clone(),
            },
        );
        if let Some(old) = old {
            if let Some(old_sub) = old.sub.upgrade() {
                tracing::info!(client_id, "mqtt client id taken over by a new connection");
                old_sub.kick(Disconnect::Replaced);
            }
            let _ = tokio::time::timeout(TAKEOVER_WAIT, old.gone.cancelled()).await;
        }
        gone
    }

    /// Lets go of `client_id` if `id` still holds it, and says so to a connection waiting to
    /// take it over.
    pub(crate) fn release(&self, client_id: &str, id: SubscriberId, gone: &CancellationToken) {
        let mut live = self.live();
        if live.get(client_id).is_some_and(|l| l.id == id) {
            live.remove(client_id);
        }
        gone.cancel();
    }

    /// Connected MQTT clients.
    pub(crate) fn connected(&self) -> usize {
        self.live().len()
    }

    /// Seconds since the server started.
    pub(crate) fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The parked session of `client_id`, taken out (a resumed session is parked again when
    /// it ends); `None` if there is none or it has expired.
    pub(crate) fn unpark(&self, client_id: &str) -> Option<Parked> {
        let text = self.keep.get(Table::Sessions, client_id)?;
        let parked: Parked = serde_json::from_str(&text).ok()?;
        if parked.expires_ms.is_some_and(|at| at <= now_ms()) {
            let _ = self.keep.put(Table::Sessions, client_id, None);
            return None;
        }
        Some(parked)
    }

    /// True if `client_id` has a parked session (expired or not).
    pub(crate) fn is_parked(&self, client_id: &str) -> bool {
        self.keep.get(Table::Sessions, client_id).is_some()
    }

    /// True if `topic` holds a retained message.
    pub(crate) fn is_retained(&self, topic: &str) -> bool {
        self.keep.get(Table::Retained, topic).is_some()
    }

    /// Parks (or, with `None`, forgets) the session of `client_id`.
    pub(crate) fn park(&self, client_id: &str, parked: Option<&Parked>) -> Result<(), StoreError> {
        let text = parked.map(|p| serde_json::to_string(p).unwrap_or_default());
        self.keep.put(Table::Sessions, client_id, text)
    }

    /// Parked sessions, for `$SYS`.
    pub(crate) fn parked(&self) -> usize {
        self.keep.count(Table::Sessions)
    }

    /// Forgets parked sessions that have expired; returns how many.
    pub(crate) fn expire(&self) -> usize {
        let now = now_ms();
        let expired: Vec<String> = self
            .keep
            .rows(Table::Sessions, "", |_| true)
            .into_iter()
            .filter(|(_, text)| {
                serde_json::from_str::<Parked>(text)
                    .map_or(true, |p| p.expires_ms.is_some_and(|at| at <= now))
            })
            .map(|(id, _)| id)
            .collect();
        for id in &expired {
            let _ = self.keep.put(Table::Sessions, id, None);
        }
        expired.len()
    }

    /// Sets the retained message of `topic`, or clears it (`None`).
    pub(crate) fn retain(
        &self,
        topic: &str,
        retained: Option<&Retained>,
    ) -> Result<(), StoreError> {
        let text = retained.map(|r| serde_json::to_string(r).unwrap_or_default());
        self.keep.put(Table::Retained, topic, text)
    }

    /// Retained messages under `prefix` whose topic `matches` accepts, by topic.
    pub(crate) fn retained(
        &self,
        prefix: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<(String, Retained)> {
        self.keep
            .rows(Table::Retained, prefix, matches)
            .into_iter()
            .filter_map(|(topic, text)| Some((topic, serde_json::from_str(&text).ok()?)))
            .collect()
    }

    /// How many topics hold a retained message.
    pub(crate) fn retained_count(&self) -> usize {
        self.keep.count(Table::Retained)
    }
}
