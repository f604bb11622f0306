//! The one writer driver: drains a subscriber's queue in batches, encodes each batch in the
//! connection's wire form (`crate::wire`) and hands it to the transport's `Output`.
//!
//! Every transport's writer is this code: the connection driver (`super::link::drive`) waits
//! on `Outbox::wait` beside the link's reads and writes with `Outbox::send` (MQTT takes the
//! batch with `Outbox::take` and paces it against the client's window); SSE's and gRPC's
//! response streams take encoded batches from `Outbox::pull`. So the batch size, the latency
//! samples, the kick and shutdown handling and the goodbye are the same on every transport.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::queue::Receiver;
use crate::hub::{Delivery, Disconnect, Subscriber};
use crate::wire::{self, Emit, Wire};

/// Most queued deliveries taken into one batch (one write, one flush). Large enough that a
/// burst leaves in a few syscalls, small enough that a batch's encoding stays in cache.
pub(crate) const BATCH: usize = 64;
/// How long a goodbye may take to reach a client that may not be reading.
const GOODBYE: Duration = Duration::from_secs(1);

/// A transport's outgoing side: it collects encoded units (`Emit`) and writes them out.
pub(crate) trait Output: Emit + Send {
    /// Writes everything emitted since the last flush.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Forgets units not yet written (before a goodbye, after an abandoned write).
    fn discard(&mut self);

    /// Encodes a batch and writes it with one flush. Outputs that take units one at a time
    /// (WebSocket frames) override this to skip the intermediate buffer.
    fn write(
        &mut self,
        wire: Wire,
        batch: &mut Vec<Delivery>,
    ) -> impl Future<Output = io::Result<()>> + Send
    where
        Self: Sized,
    {
        async move {
            wire::encode(wire, batch, self);
            self.flush().await
        }
    }
}

/// Latency is sampled on one batch in this many per connection (the first included): the
/// histogram takes a lock shared by every connection, which SSE, one event a batch, would
/// otherwise take once per delivery.
const SAMPLE_EVERY: u32 = 8;

/// What `Outbox::wait` woke for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A batch is ready for `Outbox::send`.
    Batch,
    /// The hub dropped the queue's sender: nothing more will come.
    Closed,
    /// The connection must end: kicked by the hub, or the server is stopping.
    End(Disconnect),
}

/// How a batch write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Written and flushed.
    Done,
    /// Abandoned because the client was kicked or the server is stopping; the next `wait`
    /// says which.
    Interrupted,
    /// The write failed: the peer is gone.
    PeerGone,
}

/// A subscriber's queue with what its writer needs to drain it.
#[derive(Debug)]
pub(crate) struct Outbox {
    rx: Receiver<Delivery>,
    batch: Vec<Delivery>,
    sub: Arc<Subscriber>,
    /// This connection's child of the server's shutdown token (see `super::stop_signal`).
    stop: CancellationToken,
    wire: Wire,
    /// Batches sent, for latency sampling.
    batches: u32,
}

impl Outbox {
    pub(crate) fn new(
        rx: Receiver<Delivery>,
        sub: Arc<Subscriber>,
        stop: CancellationToken,
        wire: Wire,
    ) -> Self {
        Self {
            rx,
            batch: Vec::new(),
            sub,
            stop,
            wire,
            batches: 0,
        }
    }

    /// Waits for a batch, a kick or shutdown. Cancel-safe: nothing is lost if another branch
    /// of a `select!` wins.
    pub(crate) async fn wait(&mut self) -> Wake {
        self.wait_for(true).await
    }

    /// `wait`, or with `batches` false only a kick or shutdown: what ends a connection even
    /// while it takes no batch (MQTT with a full window). Cancel-safe.
    pub(crate) async fn wait_for(&mut self, batches: bool) -> Wake {
        tokio::select! {
            biased;
            reason = cut(&self.stop, &self.sub) => Wake::End(reason),
            n = self.rx.recv_many(&mut self.batch, BATCH), if batches => {
                if n == 0 { Wake::Closed } else { Wake::Batch }
            }
        }
    }

    /// Encodes the batch and writes it with one flush, giving up if the client is kicked or
    /// the server stops while the write waits on a client that does not read.
    pub(crate) async fn send<O: Output>(&mut self, out: &mut O) -> Sent {
        self.sample();
        let weight = self.weight();
        let flushed = tokio::select! {
            biased;
            _ = cut(&self.stop, &self.sub) => None,
            flushed = out.write(self.wire, &mut self.batch) => Some(flushed),
        };
        let Some(flushed) = flushed else {
            // An output may have borrowed the batch rather than drained it.
            self.batch.clear();
            return Sent::Interrupted;
        };
        // Counted until written, so a client whose socket is full is bounded in bytes too.
        self.sub.written(weight);
        match flushed {
            Ok(()) => Sent::Done,
            Err(error) => {
                tracing::debug!(id = self.sub.id, %error, "write failed");
                Sent::PeerGone
            }
        }
    }

    /// The next batch encoded into `out`, for a stream its framework writes (an SSE body, a
    /// gRPC response): `Some(Ok)` with a batch, `Some(Err(reason))` once when the server ends
    /// the connection (told to the session, for its rooms), `None` when the queue is closed.
    /// Cancel-safe like `wait`.
    pub(crate) async fn pull(
        &mut self,
        session: &mut crate::session::Session,
        out: &mut impl Emit,
    ) -> Option<Result<(), Disconnect>> {
        match self.wait().await {
            Wake::Batch => {
                self.encode(out);
                Some(Ok(()))
            }
            Wake::Closed => None,
            Wake::End(reason) => {
                tracing::debug!(
                    id = self.sub.id,
                    reason = reason.as_str(),
                    "stream ended by the server"
                );
                session.end(Some(reason));
                Some(Err(reason))
            }
        }
    }

    /// Encodes the batch into `out` without writing it.
    pub(crate) fn encode(&mut self, out: &mut impl Emit) {
        self.sample();
        self.sub.written(self.weight());
        wire::encode(self.wire, &mut self.batch, out);
    }

    /// Takes the batch out, counted as written, for a transport that encodes deliveries
    /// itself and paces them against the client's window (MQTT).
    pub(crate) fn take(&mut self) -> std::vec::Drain<'_, Delivery> {
        self.sample();
        self.sub.written(self.weight());
        self.batch.drain(..)
    }

    /// The batch's weight in the subscriber's byte bound (`Subscriber::offer`).
    fn weight(&self) -> usize {
        self.batch.iter().map(Delivery::weight).sum()
    }

    /// Records the delivery latency of the batch's first event, on one in `SAMPLE_EVERY` of
    /// the batches that start with one (so a connection's first event is always sampled,
    /// whatever answers came before it).
    fn sample(&mut self) {
        let Some(Delivery::Event(event)) = self.batch.first() else {
            return;
        };
        if self.batches.is_multiple_of(SAMPLE_EVERY) {
            crate::metrics::METRICS.observe_delivery(event.time_ms);
        }
        self.batches = self.batches.wrapping_add(1);
    }

    /// Moves what is queued now into the batch, without waiting; true if there is any.
    pub(crate) fn take_queued(&mut self) -> bool {
        while let Some(delivery) = self.rx.try_recv() {
            self.batch.push(delivery);
        }
        !self.batch.is_empty()
    }

    /// Tells the client why its connection ends, in its wire form, bounded in time.
    pub(crate) async fn goodbye<O: Output>(&self, out: &mut O, reason: Disconnect) {
        out.discard();
        if let Some(bytes) = wire::goodbye(self.wire, reason) {
            out.emit(&bytes, None);
            let _ = tokio::time::timeout(GOODBYE, out.flush()).await;
        }
    }
}

/// Resolves when the connection must end: the server stops, or the hub kicked the client
/// (for the reason it gave). Cancel-safe.
async fn cut(stop: &CancellationToken, sub: &Subscriber) -> Disconnect {
    tokio::select! {
        biased;
        _ = stop.cancelled() => Disconnect::Shutdown,
        _ = sub.kicked() => sub.kick_reason().unwrap_or(Disconnect::SlowConsumer),
    }
}
