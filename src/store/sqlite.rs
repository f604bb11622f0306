//! The embedded durable backend: SQLite (WAL) under the data directory.
//!
//! Each room keeps its recent messages in a `MemoryHistory` as a read cache, so replays never
//! touch the disk on the publish path. Appends also go to one writer thread, which commits
//! whatever has queued up in one transaction (group commit) and then tells each publisher
//! its message is durable. The queue to the writer is bounded; when it is full a publish is
//! refused with `StoreError::Busy` rather than queued without limit.
//!
//! Live subscribers see a message before it is committed. If the process dies in between,
//! that message is lost, so its sequence number must not be handed out again: a restart after
//! an unclean stop moves every room's sequence past the most messages that can be in flight.
//! Ids therefore increase but may skip after a crash.
//!
//! Durability is against a process crash (`kill -9`): with `synchronous=NORMAL` a committed
//! transaction is in the WAL file. Surviving power loss needs `synchronous=FULL`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Cached, Durability, KEYS_HELD, MemoryHistory, RecentKeys, Retention, RoomInit, StoreError,
    Writer,
};
use crate::event::{Event, EventKind, MessageId, Sender, now_ms};

/// Messages queued for the writer at most; also how far sequences jump after a crash.
pub(crate) const MAX_IN_FLIGHT: usize = 65_536;
/// Most messages committed in one transaction.
const MAX_BATCH: usize = 4_096;
/// How often messages past their age are deleted.
const AGE_SWEEP: Duration = Duration::from_secs(60);
/// The database file inside the data directory.
const FILE: &str = "switchboard.sqlite3";

enum Op {
    Append {
        event: Arc<Event>,
        /// The publish's idempotency key, stored in the same transaction.
        key: Option<Box<str>>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Close(oneshot::Sender<()>),
}

/// An open SQLite store, shared by every room's history.
pub struct SqliteStore {
    path: PathBuf,
    retention: Retention,
    writer: mpsc::Sender<Op>,
    /// For loading a room when it is created; writes go through the writer thread only.
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<Arc<Self>, StoreError> {
        super::make_dir(dir)?;
        let path = dir.join(FILE);
        let conn =
            connect(&path).map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 room TEXT NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL,
                 nick TEXT NOT NULL, text TEXT NOT NULL, time_ms INTEGER NOT NULL,
                 PRIMARY KEY (room, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS rooms (
                 room TEXT PRIMARY KEY, epoch INTEGER NOT NULL, last_seq INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS idempotency (
                 room TEXT NOT NULL, key TEXT NOT NULL, epoch INTEGER NOT NULL,
                 seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,
                 PRIMARY KEY (room, key)) WITHOUT ROWID;",
        )
        .map_err(failed)?;
        add_sender_column(&conn).map_err(failed)?;
        let clean: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'clean'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(failed)?;
        if clean.as_deref() == Some("0") {
            // The last run did not stop cleanly: messages it delivered but had not committed
            // may have been seen, so their sequence numbers must not be reused.
            let moved = conn
                .execute(
                    "UPDATE rooms SET last_seq = last_seq + ?1",
                    [MAX_IN_FLIGHT as i64],
                )
                .map_err(failed)?;
            tracing::warn!(
                rooms = moved,
                "previous run did not stop cleanly; room sequences moved past any lost in-flight ids"
            );
        }
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('clean', '0')
             ON CONFLICT(key) DO UPDATE SET value = '0'",
            [],
        )
        .map_err(failed)?;

        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        let writer_conn = connect(&path).map_err(failed)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer_conn, rx, retention))
            .map_err(failed)?;
        tracing::info!(path = %path.display(), "sqlite store open");
        Ok(Arc::new(Self {
            path,
            retention,
            writer: tx,
            reader: Mutex::new(conn),
        }))
    }

    /// A factory making each room's history from this store.
    pub fn factory(self: &Arc<Self>) -> super::HistoryFactory {
        let store = Arc::clone(self);
        Arc::new(move |room| store.room(room))
    }

    /// Loads a room: its epoch, last sequence and the messages retention still keeps.
    fn room(self: &Arc<Self>, room: &str) -> RoomInit {
        let mut cache = MemoryHistory::new(self.retention);
        let mut epoch = None;
        let mut last_seq = 0;
        if let Err(error) = self.load(room, &mut cache, &mut epoch, &mut last_seq) {
            // The room starts empty in a new epoch, which tells clients their gap is unknown.
            tracing::error!(room, %error, "cannot load room history");
        }
        let keys = self.load_keys(room).unwrap_or_else(|error| {
            tracing::error!(room, %error, "cannot load idempotency keys; asking the store for each");
            RecentKeys {
                keys: Vec::new(),
                partial: true,
            }
        });
        RoomInit {
            history: Box::new(Cached {
                cache,
                writer: SqliteWriter {
                    store: Arc::clone(self),
                    room: room.into(),
                },
            }),
            epoch,
            last_seq,
            keys,
        }
    }

    /// The room's newest idempotency keys within the key window, oldest first.
    fn load_keys(&self, room: &str) -> rusqlite::Result<RecentKeys> {
        let oldest = now_ms().saturating_sub(self.retention.key_window.as_millis() as u64);
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT key, epoch, seq FROM idempotency WHERE room = ?1 AND time_ms >= ?2
             ORDER BY time_ms DESC, seq DESC LIMIT ?3",
        )?;
        let mut keys: Vec<(Box<str>, MessageId)> = stmt
            .query_map(params![room, oldest as i64, KEYS_HELD as i64 + 1], |r| {
                let key: String = r.get(0)?;
                let id = MessageId {
                    epoch: r.get::<_, i64>(1)? as u32,
                    seq: r.get::<_, i64>(2)? as u64,
                };
                Ok((key.into_boxed_str(), id))
            })?
            .collect::<rusqlite::Result<_>>()?;
        // One more than the room holds was asked for: if it came, the rest are in the store.
        let partial = keys.len() > KEYS_HELD;
        keys.truncate(KEYS_HELD);
        keys.reverse();
        Ok(RecentKeys { keys, partial })
    }

    fn load(
        &self,
        room: &str,
        cache: &mut MemoryHistory,
        epoch: &mut Option<u32>,
        last_seq: &mut u64,
    ) -> rusqlite::Result<()> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let row: Option<(i64, i64)> = conn
            .query_row(
                "SELECT epoch, last_seq FROM rooms WHERE room = ?1",
                [room],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((e, seq)) = row else { return Ok(()) };
        *epoch = Some(e as u32);
        *last_seq = seq as u64;
        let oldest = now_ms().saturating_sub(self.retention.max_age.as_millis() as u64);
        let mut stmt = conn.prepare(
            "SELECT seq, epoch, nick, text, time_ms, sender FROM messages
             WHERE room = ?1 AND time_ms >= ?2 ORDER BY seq DESC LIMIT ?3",
        )?;
        let name: Arc<str> = room.into();
        let mut rows: Vec<Arc<Event>> = stmt
            .query_map(
                params![room, oldest as i64, self.retention.max_messages as i64],
                |r| {
                    let id = MessageId {
                        seq: r.get::<_, i64>(0)? as u64,
                        epoch: r.get::<_, i64>(1)? as u32,
                    };
                    let nick: String = r.get(2)?;
                    let text: String = r.get(3)?;
                    let time_ms = r.get::<_, i64>(4)? as u64;
                    let sender: Option<String> = r.get(5)?;
                    Ok(Arc::new(
                        Event::stored(Arc::clone(&name), id, nick.into(), text.into(), time_ms)
                            .with_sender(Sender::from_stored(sender.as_deref())),
                    ))
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        cache.preload(rows);
        Ok(())
    }

    /// Rooms that have stored messages, so the server can load them at start.
    pub fn rooms_with_history(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn
            .prepare("SELECT DISTINCT room FROM messages")
            .map_err(failed)?;
        let rooms = stmt
            .query_map([], |r| r.get(0))
            .map_err(failed)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(failed)?;
        Ok(rooms)
    }

    /// Waits for every queued write, marks the store cleanly closed and stops the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Op::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A room's writes on SQLite: the writer thread's queue.
#[derive(Debug)]
struct SqliteWriter {
    store: Arc<SqliteStore>,
    room: Arc<str>,
}

impl SqliteWriter {
    fn queue(&mut self, event: &Arc<Event>, key: Option<&str>) -> Result<Durability, StoreError> {
        let permit = self.store.writer.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(()) => StoreError::Closed,
        })?;
        let (done, rx) = oneshot::channel();
        permit.send(Op::Append {
            event: Arc::clone(event),
            key: key.map(Into::into),
            done,
        });
        Ok(Durability::Pending(rx))
    }
}

impl Writer for SqliteWriter {
    fn write(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError> {
        self.queue(event, None)
    }

    fn write_keyed(&mut self, event: &Arc<Event>, key: &str) -> Result<Durability, StoreError> {
        self.queue(event, Some(key))
    }

    /// One indexed read on the reader connection. A room asks only while its memory of keys
    /// is partial (more than `KEYS_HELD` in the window), for a key memory does not hold.
    fn find_key(&mut self, key: &str) -> Option<MessageId> {
        let oldest = now_ms().saturating_sub(self.store.retention.key_window.as_millis() as u64);
        let conn = self.store.reader.lock().unwrap_or_else(|e| e.into_inner());
        let found = conn
            .prepare_cached(
                "SELECT epoch, seq FROM idempotency WHERE room = ?1 AND key = ?2 AND time_ms >= ?3",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![&*self.room, key, oldest as i64], |r| {
                    Ok(MessageId {
                        epoch: r.get::<_, i64>(0)? as u32,
                        seq: r.get::<_, i64>(1)? as u64,
                    })
                })
                .optional()
            });
        match found {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, room = %self.room, "cannot look up an idempotency key");
                None
            }
        }
    }
}

fn write_loop(mut conn: Connection, mut rx: mpsc::Receiver<Op>, retention: Retention) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_age_sweep = Instant::now();
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut waiting = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                Op::Append { event, key, done } => {
                    events.push((event, key));
                    waiting.push(done);
                }
                Op::Close(done) => closing = Some(done),
            }
        }
        let result = commit(&mut conn, &events, retention).map_err(failed);
        if let Err(error) = &result {
            tracing::error!(%error, messages = events.len(), "sqlite commit failed");
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
        if last_age_sweep.elapsed() >= AGE_SWEEP {
            last_age_sweep = Instant::now();
            let oldest = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
            if let Err(error) =
                conn.execute("DELETE FROM messages WHERE time_ms < ?1", [oldest as i64])
            {
                tracing::error!(%error, "sqlite age sweep failed");
            }
            let oldest_key = now_ms().saturating_sub(retention.key_window.as_millis() as u64);
            if let Err(error) = conn.execute(
                "DELETE FROM idempotency WHERE time_ms < ?1",
                [oldest_key as i64],
            ) {
                tracing::error!(%error, "sqlite idempotency sweep failed");
            }
        }
    }
    if let Err(error) = conn.execute("UPDATE meta SET value = '1' WHERE key = 'clean'", []) {
        tracing::error!(%error, "cannot mark the store cleanly closed");
    }
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Writes one batch: the messages with their idempotency keys, each room's epoch and last
/// sequence, and the count limit.
fn commit(
    conn: &mut Connection,
    events: &[(Arc<Event>, Option<Box<str>>)],
    retention: Retention,
) -> rusqlite::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    let mut rooms: HashMap<&str, MessageId> = HashMap::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO messages (room, seq, epoch, nick, text, time_ms, sender)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut keep_key = tx.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (room, key, epoch, seq, time_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (event, key) in events {
            let (Some(id), EventKind::Message) = (event.id, &event.kind) else {
                continue;
            };
            if let Some(key) = key {
                keep_key.execute(params![
                    &*event.room,
                    &**key,
                    id.epoch as i64,
                    id.seq as i64,
                    event.time_ms as i64
                ])?;
            }
            insert.execute(params![
                &*event.room,
                id.seq as i64,
                id.epoch as i64,
                &*event.nick,
                &*event.text,
                event.time_ms as i64,
                event.sender.to_stored()
            ])?;
            rooms.insert(&event.room, id);
        }
        let mut room_row = tx.prepare_cached(
            "INSERT INTO rooms (room, epoch, last_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT(room) DO UPDATE SET epoch = excluded.epoch,
                 last_seq = max(last_seq, excluded.last_seq)",
        )?;
        let mut trim = tx.prepare_cached(
            "DELETE FROM messages WHERE room = ?1 AND seq < (
                 SELECT seq FROM messages WHERE room = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?;
        for (room, id) in &rooms {
            room_row.execute(params![room, id.epoch as i64, id.seq as i64])?;
            trim.execute(params![
                room,
                retention.max_messages.saturating_sub(1) as i64
            ])?;
        }
    }
    tx.commit()
}

/// Stores made before senders were recorded get the column (`Sender::to_stored`; NULL reads
/// back as an open server's name).
fn add_sender_column(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'sender'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN sender TEXT")?;
    }
    Ok(())
}
