//! Each endpoint's queue of rendered events, oldest first and bounded: in SQLite (so that a
//! restart loses nothing) or in memory. Calls block (SQLite), so callers use `spawn_blocking`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

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
    /// A read or write failed.
    #[error("webhook queue: {0}")]
    Sql(#[from] rusqlite::Error),
}

enum Backing {
    Memory(Vec<VecDeque<(i64, String)>>, i64),
    /// The connection and each endpoint's URL, which rows are kept under.
    Sqlite(Connection, Vec<String>),
}

/// The queues of every endpoint, by index, each bounded in events and in bytes.
pub(super) struct Queue {
    inner: Mutex<Backing>,
    max: usize,
    max_bytes: usize,
    /// Each endpoint's length, readable without the lock (metrics, tests).
    lens: Vec<AtomicUsize>,
    /// Each endpoint's bytes of rendered events.
    bytes: Vec<AtomicUsize>,
    /// Per endpoint, the last sequence number of the batch being sent (0: none). An event the
    /// bounds push out while its batch is in flight is not counted as dropped: whether it
    /// was lost is known only when the POST is answered (`lost_from`).
    sending: Vec<AtomicI64>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Queues in memory for `endpoints` endpoints, at most `max` events and `max_bytes`
    /// bytes each.
    pub(super) fn memory(endpoints: usize, max: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Backing::Memory(vec![VecDeque::new(); endpoints], 0)),
            max,
            max_bytes,
            lens: (0..endpoints).map(|_| AtomicUsize::new(0)).collect(),
            bytes: (0..endpoints).map(|_| AtomicUsize::new(0)).collect(),
            sending: (0..endpoints).map(|_| AtomicI64::new(0)).collect(),
        }
    }

    /// Queues in the SQLite file at `path`, keeping what earlier runs left for these URLs
    /// and dropping what they left for URLs no longer configured.
    pub(super) fn sqlite(
        path: &Path,
        urls: &[String],
        max: usize,
        max_bytes: usize,
    ) -> Result<Self, QueueError> {
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
        let mut lens = Vec::with_capacity(urls.len());
        let mut bytes = Vec::with_capacity(urls.len());
        for url in urls {
            let (n, b) = conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(event)), 0) FROM events WHERE url = ?1",
                    [url],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .map_err(open)?;
            lens.push(AtomicUsize::new(n as usize));
            bytes.push(AtomicUsize::new(b as usize));
        }
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
            max_bytes,
            sending: (0..lens.len()).map(|_| AtomicI64::new(0)).collect(),
            lens,
            bytes,
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
                    let mut bytes = self.bytes[i].load(Ordering::Relaxed) + event.len();
                    queues[i].push_back((*next, event));
                    while queues[i].len() > self.max || bytes > self.max_bytes {
                        let Some((seq, old)) = queues[i].pop_front() else {
                            break;
                        };
                        bytes -= old.len();
                        dropped += u64::from(seq > self.sending[i].load(Ordering::Relaxed));
                    }
                    self.lens[i].store(queues[i].len(), Ordering::Relaxed);
                    self.bytes[i].store(bytes, Ordering::Relaxed);
                }
            }
            Backing::Sqlite(conn, urls) => {
                let tx = conn.transaction()?;
                let mut added = vec![(0usize, 0usize); urls.len()];
                {
                    let mut insert =
                        tx.prepare_cached("INSERT INTO events (url, event) VALUES (?1, ?2)")?;
                    for (i, event) in &rows {
                        insert.execute(params![urls[*i], event])?;
                        added[*i].0 += 1;
                        added[*i].1 += event.len();
                    }
                }
                let mut after = Vec::with_capacity(urls.len());
                for (i, (n, b)) in added.iter().enumerate() {
                    let mut len = self.lens[i].load(Ordering::Relaxed) + n;
                    let mut bytes = self.bytes[i].load(Ordering::Relaxed) + b;
                    if *n > 0 && (len > self.max || bytes > self.max_bytes) {
                        // Walk the oldest rows until both bounds hold, then drop through there.
                        let mut cut = None;
                        let mut oldest = tx.prepare_cached(
                            "SELECT seq, LENGTH(event) FROM events WHERE url = ?1 ORDER BY seq",
                        )?;
                        let mut found = oldest.query([&urls[i]])?;
                        while len > self.max || bytes > self.max_bytes {
                            let Some(row) = found.next()? else {
                                break;
                            };
                            let seq = row.get::<_, i64>(0)?;
                            cut = Some(seq);
                            len -= 1;
                            bytes = bytes.saturating_sub(row.get::<_, i64>(1)? as usize);
                            dropped += u64::from(seq > self.sending[i].load(Ordering::Relaxed));
                        }
                        drop(found);
                        drop(oldest);
                        if let Some(cut) = cut {
                            tx.execute(
                                "DELETE FROM events WHERE url = ?1 AND seq <= ?2",
                                params![urls[i], cut],
                            )?;
                        }
                    }
                    after.push((len, bytes));
                }
                tx.commit()?;
                for (i, (len, bytes)) in after.into_iter().enumerate() {
                    self.lens[i].store(len, Ordering::Relaxed);
                    self.bytes[i].store(bytes, Ordering::Relaxed);
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
                let mut bytes = self.bytes[i].load(Ordering::Relaxed);
                while queues[i].front().is_some_and(|(s, _)| *s <= seq) {
                    if let Some((_, old)) = queues[i].pop_front() {
                        bytes -= old.len();
                    }
                }
                self.lens[i].store(queues[i].len(), Ordering::Relaxed);
                self.bytes[i].store(bytes, Ordering::Relaxed);
            }
            Backing::Sqlite(conn, urls) => {
                let tx = conn.transaction()?;
                let (n, b): (i64, i64) = tx.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(event)), 0) FROM events
                     WHERE url = ?1 AND seq <= ?2",
                    params![urls[i], seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                tx.execute(
                    "DELETE FROM events WHERE url = ?1 AND seq <= ?2",
                    params![urls[i], seq],
                )?;
                tx.commit()?;
                let len = self.lens[i].load(Ordering::Relaxed);
                self.lens[i].store(len.saturating_sub(n as usize), Ordering::Relaxed);
                let bytes = self.bytes[i].load(Ordering::Relaxed);
                self.bytes[i].store(bytes.saturating_sub(b as usize), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Marks endpoint `i`'s batch through `last` as being sent (0 when it is answered).
    pub(super) fn sending(&self, i: usize, last: i64) {
        self.sending[i].store(last, Ordering::Relaxed);
    }

    /// After a failed POST of `batch`: how many of its events the bounds pushed out meanwhile,
    /// which are now lost. Clears the in-flight mark.
    pub(super) fn lost_from(&self, i: usize, batch: &[(i64, String)]) -> Result<u64, QueueError> {
        let front: Option<i64> = match &mut *self.lock() {
            Backing::Memory(queues, _) => queues[i].front().map(|(s, _)| *s),
            Backing::Sqlite(conn, urls) => conn.query_row(
                "SELECT MIN(seq) FROM events WHERE url = ?1",
                [&urls[i]],
                |r| r.get(0),
            )?,
        };
        self.sending[i].store(0, Ordering::Relaxed);
        Ok(batch
            .iter()
            .filter(|(seq, _)| front.is_none_or(|f| *seq < f))
            .count() as u64)
    }

    /// Events queued for every endpoint together.
    pub(super) fn total(&self) -> usize {
        self.lens.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(q: &Queue, i: usize) -> Vec<String> {
        q.peek(i, 100)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Both backings keep each endpoint's newest events within both bounds, forget what was
    /// delivered, and SQLite finds the same after a reopen.
    #[test]
    fn each_queue_keeps_its_newest_within_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        let urls = ["http://a/".to_owned(), "http://b/".to_owned()];
        let ten = |c: char| c.to_string().repeat(10);
        for q in [
            Queue::memory(2, 4, 35),
            Queue::sqlite(&path, &urls, 4, 35).unwrap(),
        ] {
            // a: 5 of 10 bytes each; the bytes (35) keep 3. b: untouched by a's drops.
            let rows = ['1', '2', '3', '4', '5'].map(|c| (0, ten(c))).to_vec();
            assert_eq!(q.push(rows).unwrap(), 2);
            q.push(vec![(1, "b1".into())]).unwrap();
            assert_eq!(texts(&q, 0), [ten('3'), ten('4'), ten('5')]);
            assert_eq!(texts(&q, 1), ["b1"]);
            assert_eq!(q.total(), 4);
            let (seq, _) = q.peek(0, 1).unwrap()[0].clone();
            q.remove_through(0, seq).unwrap();
            assert_eq!(texts(&q, 0), [ten('4'), ten('5')]);
            // Room for one more of 10 bytes (25 + 10 = 35), not two.
            assert_eq!(q.push(vec![(0, ten('6')), (0, ten('7'))]).unwrap(), 1);
            assert_eq!(texts(&q, 0), [ten('5'), ten('6'), ten('7')]);
            // An event pushed out while its batch is being sent is not counted as dropped
            // then; if the POST fails, it is counted as lost.
            let batch = q.peek(0, 1).unwrap();
            q.sending(0, batch[0].0);
            assert_eq!(
                q.push(vec![(0, ten('8'))]).unwrap(),
                0,
                "in flight: not counted yet"
            );
            assert_eq!(texts(&q, 0), [ten('6'), ten('7'), ten('8')]);
            assert_eq!(q.lost_from(0, &batch).unwrap(), 1);
            assert_eq!(
                q.push(vec![(0, ten('9'))]).unwrap(),
                1,
                "no longer in flight"
            );
        }
        let again = Queue::sqlite(&path, &urls, 4, 35).unwrap();
        assert_eq!(again.total(), 4);
        assert_eq!(
            again.push(vec![(0, ten('a'))]).unwrap(),
            1,
            "bytes counted after a reopen"
        );
        assert_eq!(texts(&again, 0), [ten('8'), ten('9'), ten('a')]);
        // An endpoint no longer configured loses what it had queued.
        let fewer = Queue::sqlite(&path, &urls[..1], 4, 35).unwrap();
        assert_eq!(fewer.total(), 3);
    }
}
