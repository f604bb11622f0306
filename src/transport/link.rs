//! The one connection driver: a `Link` is a transport's side of one connection (what it reads,
//! how it acts on it, how it writes a batch and says goodbye) and `drive` is the loop every
//! transport with a connection of its own runs: TCP chat, each UDP member, WebSocket chat and
//! MQTT over TCP or WebSocket. SSE and gRPC streams have no loop of their own: their framework
//! pulls batches (`Outbox::pull`).
//!
//! So the order of wake-ups, the handling of kicks and shutdown, the flush of answers queued
//! before a client's own goodbye and the bound on a goodbye to a client that does not read are
//! written once.

use std::future::Future;
use std::time::Duration;

use super::writer::{Outbox, Sent, Wake};
use crate::hub::Disconnect;

/// How long a connection ending at its client's word may take to flush what it has queued.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);

/// What acting on an input, or delivering a batch, leaves the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Go on.
    Continue,
    /// The client ended it (`/quit`, end of stream, DISCONNECT): what is queued for it is
    /// written, bounded in time, then the link closes.
    Done,
    /// The peer is gone, or the link has closed the connection itself: nothing more is written.
    Gone,
    /// The server ends it for this reason: the link says why.
    Cut(Disconnect),
}

/// A transport's side of one connection.
pub(crate) trait Link: Send {
    /// What `recv` hands to `act`: the peer's input or a timer of the link's own.
    type Input: Send;

    /// Waits for the next input. Cancel-safe: the driver drops it whenever the queue wakes
    /// first, so it keeps no state across an await that `act` would need.
    fn recv(&mut self) -> impl Future<Output = Self::Input> + Send;

    /// Acts on an input (through the session, mostly). Never cancelled.
    fn act(&mut self, input: Self::Input) -> impl Future<Output = Step> + Send;

    /// Writes the batch the outbox holds (`Outbox::send`, or the link's own encoding).
    fn deliver(&mut self, outbox: &mut Outbox) -> impl Future<Output = Step> + Send;

    /// Closes the connection: `Some(reason)` when the server ends it (the link says why,
    /// bounded in time), `None` after the client's own goodbye.
    fn close(
        &mut self,
        outbox: &Outbox,
        reason: Option<Disconnect>,
    ) -> impl Future<Output = ()> + Send;

    /// Whether the link takes a batch now (MQTT holds the queue while the client's window is
    /// full); kicks and shutdown are heard either way.
    fn ready(&self) -> bool {
        true
    }
}

/// Maps what woke the queue to a step, writing a batch if one is ready.
async fn woke<L: Link>(link: &mut L, outbox: &mut Outbox, wake: Wake) -> Step {
    match wake {
        Wake::Batch => link.deliver(outbox).await,
        Wake::Closed => Step::Gone,
        Wake::End(reason) => Step::Cut(reason),
    }
}

/// Runs a connection until it ends; the reason the server ended it, if it did (for the
/// session's `end`).
pub(crate) async fn drive<L: Link>(link: &mut L, outbox: &mut Outbox) -> Option<Disconnect> {
    let end = loop {
        // Kicks and shutdown first; a link that takes no batch now still hears them.
        let step = tokio::select! {
            biased;
            wake = outbox.wait_for(link.ready()) => woke(link, outbox, wake).await,
            input = link.recv() => link.act(input).await,
        };
        if step != Step::Continue {
            break step;
        }
    };
    match end {
        Step::Continue | Step::Gone => None,
        Step::Done => {
            if outbox.take_queued() {
                let _ = tokio::time::timeout(FLUSH_ON_CLOSE, link.deliver(outbox)).await;
            }
            link.close(outbox, None).await;
            None
        }
        Step::Cut(reason) => {
            link.close(outbox, Some(reason)).await;
            Some(reason)
        }
    }
}

/// `Outbox::send`'s outcome as a step: an interrupted write goes on, and the next turn hears
/// the kick or the shutdown that interrupted it.
pub(crate) fn sent(sent: Sent) -> Step {
    match sent {
        Sent::Done | Sent::Interrupted => Step::Continue,
        Sent::PeerGone => Step::Gone,
    }
}
