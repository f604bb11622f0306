//! Each endpoint's queue of rendered events, oldest first and bounded: in SQLite (so that a
//! restart loses nothing) or in memory. Calls block (SQLite), so callers use `spawn_blocking`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, params};

/// Why the queue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The SQLite file could not be opened or set up.
    #[error("webhook queue {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The data directory could not be made.
    #[error("webhook queue directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A read or write failed.
    #[error("webhook queue: {0}")]
    Sql(#[from] rusqlite::Error),
}

enum Backing {
    Memory(Vec<VecDeque<(i64, String)>>, i64),
    /// The connection and each endpoint's URL, which rows are kept under.
    Sqlite(Connection, Vec<String>),
}

/// The queues of every endpoint, by index.
pub(super) struct Queue {
    inner: Mutex<Backing>,
    max: usize,
    /// Each endpoint's length, readable without the lock (metrics, tests).
    lens: Vec<AtomicUsize>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Queues in memory for `endpoints` endpoints, at most `max` events each.
    pub(super) fn memory(endpoints: usize, max: usize) -> Self {
        Self {
            inner: Mutex::new(Backing::Memory(vec![VecDeque::new(); endpoints], 0)),
            max,
            lens: (0..endpoints).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Queues in the SQLite file at `path`, keeping what earlier runs left for these URLs
    /// and dropping what they left for URLs no longer configured.
    pub(super) fn sqlite(path: &Path, urls: &[String], max: usize) -> Result<Self, QueueError> {
        let open = |source| QueueError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS events (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 url TEXT NOT NULL,
                 event TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_url ON events (url, seq);",
        )
        .map_err(open)?;
        let mut stale = 0;
        {
            let mut known = conn
                .prepare("SELECT DISTINCT url FROM events")
                .map_err(open)?;
            let left: Vec<String> = known
                .query_map([], |r| r.get(0))
                .map_err(open)?
                .collect::<Result<_, _>>()
                .map_err(open)?;
            for url in left.iter().filter(|u| !urls.contains(u)) {
                stale += conn
                    .execute("DELETE FROM events WHERE url = ?1", [url])
                    .map_err(open)?;
            }
        }
        if stale > 0 {
            tracing::warn!(
                events = stale,
                "dropped queued webhook events of endpoints no longer configured"
            );
        }
        let lens = urls
            .iter()
            .map(|url| {
                conn.query_row("SELECT COUNT(*) FROM events WHERE url = ?1", [url], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| AtomicUsize::new(n as usize))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(open)?;
        let left: usize = lens.iter().map(|l| l.load(Ordering::Relaxed)).sum();
        if left > 0 {
            tracing::info!(
                events = left,
                "webhook events left from the last run will be sent"
            );
        }
        Ok(Self {
            inner: Mutex::new(Backing::Sqlite(conn, urls.to_vec())),
            max,
            lens,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backing> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `(endpoint, event)` rows in order; returns how many old events were dropped
    /// to keep each queue within its bound.
    pub(super) fn push(&self, rows: Vec<(usize, String)>) -> Result<u64, QueueError> {
        let mut dropped = 0u64;
        match &mut *self.lock() {
            Backing::Memory(queues, next) => {
                for (i, event) in rows {
                    *next += 1;
                    queues[i].push_back((*next, event));
                    while queues[i].len() > self.max {
                        queues[i].pop_front();
                        dropped += 1;
                    }
                    self.lens[i].store(queues[i].len(), Ordering::Relaxed);
                }
            }
            Backing::Sqlite(conn, urls) => {
                let tx = conn.transaction()?;
                let mut added = vec![0usize; urls.len()];
                {
                    let mut insert =
                        tx.prepare_cached("INSERT INTO events (url, event) VALUES (?1, ?2)")?;
                    for (i, event) in &rows {
                        insert.execute(params![urls[*i], event])?;
                        added[*i] += 1;
                    }
                }
                for (i, n) in added.iter().enumerate().filter(|(_, n)| **n > 0) {
                    let len = self.lens[i].load(Ordering::Relaxed) + n;
                    let excess = len.saturating_sub(self.max);
                    if excess > 0 {
                        tx.execute(
                            "DELETE FROM events WHERE seq IN
                             (SELECT seq FROM events WHERE url = ?1 ORDER BY seq LIMIT ?2)",
                            params![urls[i], excess as i64],
                        )?;
                        dropped += excess as u64;
                    }
                }
                tx.commit()?;
                for (i, n) in added.iter().enumerate() {
                    let len = self.lens[i].load(Ordering::Relaxed) + n;
                    self.lens[i].store(len.min(self.max), Ordering::Relaxed);
                }
            }
        }
        Ok(dropped)
    }

    /// The oldest `n` events of endpoint `i`, with their sequence numbers.
    pub(super) fn peek(&self, i: usize, n: usize) -> Result<Vec<(i64, String)>, QueueError> {
        match &mut *self.lock() {
            Backing::Memory(queues, _) => Ok(queues[i].iter().take(n).cloned().collect()),
            Backing::Sqlite(conn, urls) => {
                let mut select = conn.prepare_cached(
                    "SELECT seq, event FROM events WHERE url = ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows =
                    select.query_map(params![urls[i], n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
        }
    }

    /// Forgets endpoint `i`'s events up to and including `seq` (they were delivered).
    pub(super) fn remove_through(&self, i: usize, seq: i64) -> Result<(), QueueError> {
        match &mut *self.lock() {
            Backing::Memory(queues, _) => {
                while queues[i].front().is_some_and(|(s, _)| *s <= seq) {
                    queues[i].pop_front();
                }
                self.lens[i].store(queues[i].len(), Ordering::Relaxed);
            }
            Backing::Sqlite(conn, urls) => {
                let gone = conn.execute(
                    "DELETE FROM events WHERE url = ?1 AND seq <= ?2",
                    params![urls[i], seq],
                )?;
                let len = self.lens[i].load(Ordering::Relaxed);
                self.lens[i].store(len.saturating_sub(gone), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Events queued for every endpoint together.
    pub(super) fn total(&self) -> usize {
        self.lens.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }
}
