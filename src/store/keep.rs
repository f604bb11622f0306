//! What MQTT keeps beyond room history: retained messages (one per topic) and persistent
//! sessions (subscriptions and cursors per client id).
//!
//! Reads are from memory, always. With a data directory, every change is also written, in
//! order, by one thread to `mqtt.sqlite3` beside the history, and the tables are read back at
//! start; without one (the memory store, a Redis cluster) they last as long as the process.
//! Writes are few (a retained publish, a session parked or subscribed), so a bounded queue
//! and a thread of their own keep them off the room locks and off the history writer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use rusqlite::Connection;

use super::StoreError;

const FILE: &str = "mqtt.sqlite3";
/// Changes waiting for the writer thread; past this, a change is refused (`Busy`).
const QUEUE: usize = 4096;

/// The two things kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// Topic → the retained message (JSON).
    Retained,
    /// Client id → the parked session (JSON).
    Sessions,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Retained => "retained",
            Table::Sessions => "sessions",
        }
    }
}

/// One change for the writer thread: `None` deletes.
type Change = (Table, String, Option<String>);

/// Retained messages and parked sessions, in memory and (with a data directory) on disk.
#[derive(Debug, Default)]
pub struct Keep {
    rows: Mutex<BTreeMap<(Table, String), String>>,
    /// Rows per table, so that counting is not a walk.
    counts: Mutex<[usize; 2]>,
    writer: Option<SyncSender<Change>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keep {
    /// Waits for the writer to write what is queued, so that a clean stop loses nothing.
    fn drop(&mut self) {
        self.writer = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Keep {
    /// A keep that lasts as long as the process.
    pub fn memory() -> Self {
        Self::default()
    }

    /// Opens (creating if needed) `mqtt.sqlite3` in `dir`, reads it, and starts its writer.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let failed = |e: rusqlite::Error| StoreError::Failed(e.to_string());
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Failed(e.to_string()))?;
        let conn = Connection::open(dir.join(FILE)).map_err(failed)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
        let mut rows = BTreeMap::new();
        for table in [Table::Retained, Table::Sessions] {
            let name = table.name();
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            ))
            .map_err(failed)?;
            let mut select = conn
                .prepare(&format!("SELECT key, value FROM {name}"))
                .map_err(failed)?;
            let read = select
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(failed)?;
            for row in read {
                let (key, value) = row.map_err(failed)?;
                rows.insert((table, key), value);
            }
        }
        let (tx, rx) = sync_channel::<Change>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("mqtt-keep".into())
            .spawn(move || {
                for (table, key, value) in rx {
                    let name = table.name();
                    let done = match value {
                        Some(value) => conn.execute(
                            &format!(
                                "INSERT INTO {name} (key, value) VALUES (?1, ?2)
                                 ON CONFLICT(key) DO UPDATE SET value = ?2"
                            ),
                            [&key, &value],
                        ),
                        None => conn.execute(&format!("DELETE FROM {name} WHERE key = ?1"), [&key]),
                    };
                    if let Err(error) = done {
                        tracing::warn!(%error, table = name, "mqtt state not written");
                    }
                }
            })
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        let mut counts = [0; 2];
        for (table, _) in rows.keys() {
            counts[*table as usize] += 1;
        }
        Ok(Self {
            counts: Mutex::new(counts),
            rows: Mutex::new(rows),
            writer: Some(tx),
            thread: Some(thread),
        })
    }

    /// Sets (`Some`) or deletes (`None`) one row. Memory changes at once; the disk follows
    /// in order. Refused only when the writer is that far behind or gone.
    /// Deleting a row that is not there writes nothing. The disk change is queued under the
    /// same lock as the memory change, so both see changes in one order.
    pub fn put(&self, table: Table, key: &str, value: Option<String>) -> Result<(), StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let row = (table, key.to_owned());
        if value.is_none() && !rows.contains_key(&row) {
            return Ok(());
        }
        if let Some(writer) = &self.writer {
            writer
                .try_send((table, key.to_owned(), value.clone()))
                .map_err(|e| match e {
                    TrySendError::Full(_) => StoreError::Busy,
                    TrySendError::Disconnected(_) => StoreError::Closed,
                })?;
        }
        let has = value.is_some();
        let had = match value {
            Some(value) => rows.insert(row, value).is_some(),
            None => rows.remove(&row).is_some(),
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match (had, has) {
            (false, true) => counts[table as usize] += 1,
            (true, false) => counts[table as usize] -= 1,
            _ => {}
        }
        Ok(())
    }

    /// One row.
    pub fn get(&self, table: Table, key: &str) -> Option<String> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.get(&(table, key.to_owned())).cloned()
    }

    /// Every row of `table` whose key starts with `prefix` and that `keep` accepts, in key
    /// order: a walk of that range only.
    pub fn rows(
        &self,
        table: Table,
        prefix: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.range((table, prefix.to_owned())..)
            .take_while(|((t, key), _)| *t == table && key.starts_with(prefix))
            .filter(|((_, key), _)| keep(key))
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect()
    }

    /// How many rows `table` holds.
    pub fn count(&self, table: Table) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())[table as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let keep = Keep::open(dir.path()).unwrap();
            keep.put(Table::Retained, "a/b", Some("1".into())).unwrap();
            keep.put(Table::Retained, "a/c", Some("2".into())).unwrap();
            keep.put(Table::Retained, "a/c", None).unwrap();
            keep.put(Table::Sessions, "dev", Some("{}".into())).unwrap();
            assert_eq!(keep.get(Table::Retained, "a/b").as_deref(), Some("1"));
            // Dropping the keep waits for the writer to write everything queued.
        }
        let keep = Keep::open(dir.path()).unwrap();
        assert_eq!(
            keep.rows(Table::Retained, "", |_| true),
            [("a/b".to_owned(), "1".to_owned())]
        );
        assert_eq!(keep.count(Table::Sessions), 1);
        assert_eq!(keep.count(Table::Retained), 1);
        keep.put(Table::Retained, "a/b", None).unwrap();
        assert_eq!(keep.count(Table::Retained), 0);
    }
}
