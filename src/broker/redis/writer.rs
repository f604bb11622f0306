//! The writer: one task sends every queued write in order, pipelined, on one connection;
//! and `RedisWriter`, a room's `History` writes through it.

use std::sync::Arc;

use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::script::{STORE, StoreArgs, parse_stored};
use super::{MAX_BATCH, RedisCluster, TIMEOUT, async_connect, unavailable};
use crate::broker::Stored;
use crate::event::Event;
use crate::store::{Durability, StoreError, Writer};

/// What the writer does with a write's answer; runs on the writer task, so it must not block.
pub(super) type Done = Box<dyn FnOnce(Result<Value, StoreError>) + Send>;

/// One queued write: a command and, if someone cares, what to do with its answer.
pub(super) struct Op {
    cmd: redis::Cmd,
    done: Option<Done>,
}

impl RedisCluster {
    /// Queues a write for the writer task, without waiting; refused when the queue is full.
    pub(super) fn enqueue(&self, cmd: redis::Cmd, done: Option<Done>) -> Result<(), StoreError> {
        self.ops.try_send(Op { cmd, done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })
    }

    /// Queues a `STORE` call; `then` gets its parsed answer on the writer task.
    pub(super) fn enqueue_store(
        &self,
        cmd: redis::Cmd,
        then: impl FnOnce(Result<Stored, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.enqueue(
            cmd,
            Some(Box::new(|answer| then(answer.and_then(parse_stored)))),
        )
    }
}

/// The writer: sends queued operations in order, pipelined, on one connection; connects
/// (and loads the script) when it has none. While Redis is away every operation fails at
/// once, so publishers get an answer instead of a wait.
pub(super) async fn write_loop(store: Arc<RedisCluster>, mut ops: mpsc::Receiver<Op>) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if conn.is_none() {
            match connect_writer(&store).await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    tracing::warn!(%error, dropped = batch.len(), "redis unavailable");
                    for op in batch.drain(..) {
                        if let Some(done) = op.done {
                            done(Err(error.clone()));
                        }
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for op in &batch {
            pipe.add_command(op.cmd.clone());
        }
        let answer = tokio::time::timeout(TIMEOUT, pipe.query_async::<Vec<Value>>(c)).await;
        match answer {
            Ok(Ok(values)) if values.len() == batch.len() => {
                let mut refused = None;
                for (op, value) in batch.drain(..).zip(values) {
                    let result = match value {
                        Value::ServerError(e) => {
                            let said = match e.details() {
                                Some(details) => format!("{} {details}", e.code()),
                                None => e.code().to_owned(),
                            };
                            tracing::warn!(error = %said, "redis refused a write");
                            refused = Some(said.clone());
                            Err(StoreError::Failed(format!(
                                "Redis refused the write: {said}"
                            )))
                        }
                        value => {
                            refused = None;
                            Ok(value)
                        }
                    };
                    if let Some(done) = op.done {
                        done(result);
                    }
                }
                // The batch's last answer says whether Redis takes writes now.
                *store.refusing.lock().unwrap_or_else(|e| e.into_inner()) =
                    refused.map(|said| format!("Redis refuses writes: {said}"));
            }
            failed => {
                // The writes may or may not have happened; a publisher retrying with its
                // idempotency key gets the right answer either way.
                let error = match failed {
                    Ok(Ok(_)) => unavailable("Redis answered a pipeline partly"),
                    Ok(Err(e)) => unavailable(e),
                    Err(_) => unavailable("Redis did not answer in time"),
                };
                tracing::warn!(%error, "redis write failed; reconnecting");
                conn = None;
                for op in batch.drain(..) {
                    if let Some(done) = op.done {
                        done(Err(error.clone()));
                    }
                }
            }
        }
    }
}

pub(super) async fn connect_writer(
    store: &RedisCluster,
) -> Result<redis::aio::MultiplexedConnection, StoreError> {
    let mut conn = async_connect(&store.client).await.map_err(unavailable)?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(STORE)
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    debug_assert_eq!(sha, store.script_sha);
    Ok(conn)
}

/// One room's writes on Redis: appends made through the `History` seam go to the room's
/// stream. `None` for a room restarted by the bus task, which only records what the bus
/// delivers.
#[derive(Debug)]
pub(super) struct RedisWriter(pub(super) Option<(Arc<RedisCluster>, Arc<str>)>);

impl Writer for RedisWriter {
    fn write(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError> {
        let Some((store, room)) = &self.0 else {
            return Ok(Durability::Now);
        };
        let id = event
            .id
            .ok_or_else(|| StoreError::Failed("message without id".into()))?;
        let origin = String::new();
        let sender = event.sender.to_stored().unwrap_or_default();
        let cmd = store.store_cmd(
            room,
            StoreArgs {
                epoch: id.epoch,
                seq: Some(id.seq),
                nick: &event.nick,
                sender: &sender,
                text: &event.text,
                time_ms: event.time_ms,
                origin: &origin,
                key: None,
                bus: false,
                known_seq: id.seq.saturating_sub(1),
            },
        );
        let (tx, rx) = oneshot::channel();
        store.enqueue_store(cmd, move |stored| {
            let _ = tx.send(stored.map(|_| ()));
        })?;
        Ok(Durability::Pending(rx))
    }
}
