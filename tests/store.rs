//! One conformance suite for every `History` backend: each backend is one line in
//! `backends!` at the bottom. Backends run for real (SQLite on a temporary directory, Redis as
//! a real `redis-server` on a free port). Durable backends are also read back through a fresh
//! load, so what they kept on disk or in Redis is checked, not just their cache.

#[path = "support/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use switchboard::hub::{Event, MessageId, now_ms};
use switchboard::store::{self, HistoryFactory, Retention, RoomInit};

/// A backend under test; keeps whatever it needs alive (a temporary directory).
struct Backend {
    factory: HistoryFactory,
    /// True when a fresh load sees what was appended before.
    durable: bool,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<redis_server::Redis>,
}

fn memory(retention: Retention) -> Backend {
    Backend {
        factory: store::memory(retention),
        durable: false,
        _dir: None,
        _redis: None,
    }
}

fn sqlite(retention: Retention) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = store::SqliteStore::open(dir.path(), retention).unwrap();
    Backend {
        factory: store.factory(),
        durable: true,
        _dir: Some(dir),
        _redis: None,
    }
}

fn redis(retention: Retention) -> Backend {
    let server = redis_server::Redis::start();
    let store =
        switchboard::broker::RedisCluster::connect(&server.url(), "test", retention).unwrap();
    Backend {
        factory: store.factory(),
        durable: true,
        _dir: None,
        _redis: Some(server),
    }
}

/// The room as a fresh load sees it, for durable backends.
fn reloaded(backend: &Backend, room: &str) -> Option<RoomInit> {
    backend.durable.then(|| (backend.factory)(room))
}

fn event(room: &str, seq: u64, age: Duration) -> Arc<Event> {
    Arc::new(Event::stored(
        room.into(),
        MessageId { epoch: 7, seq },
        "n".into(),
        format!("m{seq}").into(),
        now_ms() - age.as_millis() as u64,
    ))
}

async fn append(init: &mut RoomInit, event: Arc<Event>) {
    init.history
        .append(&event)
        .expect("accepted")
        .wait()
        .await
        .expect("durable");
}

fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id.unwrap().seq).collect()
}

async fn pages_after_a_cursor(make: fn(Retention) -> Backend) {
    let backend = make(Retention::default());
    let mut room = (backend.factory)("r");
    assert_eq!(room.last_seq, 0);
    for seq in 1..=10 {
        append(&mut room, event("r", seq, Duration::ZERO)).await;
    }
    let page = room.history.after(3, 4);
    assert_eq!(seqs(&page.events), [4, 5, 6, 7]);
    assert!(page.more);
    assert!(!page.gap);
    let page = room.history.after(7, 100);
    assert_eq!(seqs(&page.events), [8, 9, 10]);
    assert!(!page.more);
    assert!(room.history.after(10, 100).events.is_empty());
    assert_eq!(seqs(&room.history.last(2)), [9, 10]);
    assert_eq!(room.history.len(), 10);
    if let Some(mut again) = reloaded(&backend, "r") {
        assert_eq!(again.last_seq, 10);
        assert_eq!(seqs(&again.history.after(3, 4).events), [4, 5, 6, 7]);
        assert_eq!(again.history.last(1)[0].text.as_ref(), "m10");
    }
}

async fn count_retention_reports_a_gap(make: fn(Retention) -> Backend) {
    let backend = make(Retention {
        max_messages: 3,
        ..Retention::default()
    });
    let mut room = (backend.factory)("r");
    for seq in 1..=6 {
        append(&mut room, event("r", seq, Duration::ZERO)).await;
    }
    assert_eq!(room.history.len(), 3);
    let page = room.history.after(1, 100);
    assert!(page.gap, "messages 2 and 3 were dropped");
    assert_eq!(seqs(&page.events), [4, 5, 6]);
    assert!(!room.history.after(3, 100).gap);
    if let Some(mut again) = reloaded(&backend, "r") {
        let page = again.history.after(1, 100);
        assert_eq!(seqs(&page.events), [4, 5, 6], "the store itself is trimmed");
        assert!(page.gap);
    }
}

async fn age_retention_drops_old_messages(make: fn(Retention) -> Backend) {
    let backend = make(Retention {
        max_age: Duration::from_secs(60),
        ..Retention::default()
    });
    let mut room = (backend.factory)("r");
    append(&mut room, event("r", 1, Duration::from_secs(120))).await;
    append(&mut room, event("r", 2, Duration::ZERO)).await;
    assert_eq!(seqs(&room.history.last(10)), [2]);
    assert!(room.history.after(0, 10).gap);
    if let Some(mut again) = reloaded(&backend, "r") {
        assert_eq!(seqs(&again.history.last(10)), [2]);
    }
}

async fn rooms_are_separate(make: fn(Retention) -> Backend) {
    let backend = make(Retention::default());
    let mut a = (backend.factory)("a");
    let mut b = (backend.factory)("b");
    append(&mut a, event("a", 1, Duration::ZERO)).await;
    append(&mut b, event("b", 1, Duration::ZERO)).await;
    append(&mut b, event("b", 2, Duration::ZERO)).await;
    assert_eq!(a.history.len(), 1);
    assert_eq!(b.history.len(), 2);
}

macro_rules! backends {
    ($($backend:ident),*) => {
        $(
            mod $backend {
                #[tokio::test]
                async fn pages_after_a_cursor() { super::pages_after_a_cursor(super::$backend).await }
                #[tokio::test]
                async fn count_retention_reports_a_gap() { super::count_retention_reports_a_gap(super::$backend).await }
                #[tokio::test]
                async fn age_retention_drops_old_messages() { super::age_retention_drops_old_messages(super::$backend).await }
                #[tokio::test]
                async fn rooms_are_separate() { super::rooms_are_separate(super::$backend).await }
            }
        )*
    };
}

backends!(memory, sqlite, redis);

#[tokio::test]
async fn sqlite_reopens_with_history_epoch_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store::SqliteStore::open(dir.path(), Retention::default()).unwrap();
        let mut room = (store.factory())("r");
        for seq in 1..=3 {
            append(&mut room, event("r", seq, Duration::ZERO)).await;
        }
        store.close().await;
    }
    let store = store::SqliteStore::open(dir.path(), Retention::default()).unwrap();
    let room = (store.factory())("r");
    assert_eq!(room.epoch, Some(7));
    assert_eq!(room.last_seq, 3, "a clean stop keeps the sequence exact");
    let mut history = room.history;
    assert_eq!(seqs(&history.last(10)), [1, 2, 3]);
    assert_eq!(history.last(1)[0].text.as_ref(), "m3");
}

#[tokio::test]
async fn sqlite_reloads_recent_keys_and_says_when_it_holds_more() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::SqliteStore::open(dir.path(), Retention::default()).unwrap();
    let mut room = (store.factory())("r");
    let held = store::KEYS_HELD as u64;
    for seq in 1..=held + 1 {
        room.history
            .append_keyed(&event("r", seq, Duration::ZERO), &format!("k{seq}"))
            .expect("accepted")
            .wait()
            .await
            .expect("durable");
    }
    let mut again = (store.factory())("r");
    // The newest KEYS_HELD come back; the oldest is only in the store, and it says so.
    assert_eq!(again.keys.keys.len(), store::KEYS_HELD);
    assert!(again.keys.partial);
    let newest = format!("k{}", held + 1);
    assert_eq!(again.keys.keys.last().map(|(k, _)| &**k), Some(&*newest));
    assert!(again.keys.keys.iter().all(|(k, _)| &**k != "k1"));
    assert_eq!(again.history.find_key("k1").map(|id| id.seq), Some(1));
    assert_eq!(again.history.find_key("never"), None);
    // A room with fewer keys holds them all: nothing is asked of the store.
    let mut other = (store.factory())("s");
    other
        .history
        .append_keyed(&event("s", 1, Duration::ZERO), "only")
        .unwrap()
        .wait()
        .await
        .unwrap();
    let other = (store.factory())("s");
    assert!(!other.keys.partial);
    assert_eq!(other.keys.keys.len(), 1);
}
