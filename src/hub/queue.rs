//! A subscriber's outbound queue: many producers (rooms, each under its own lock), one
//! consumer (the connection's writer driver), bounded in deliveries. Generic over what it
//! holds (`Delivery`), so that it imports nothing of the hub.
//!
//! It replaces tokio's bounded `mpsc` channel, which `bench/profile.sh ws` put at about a
//! quarter of the server's samples in a broadcast (a semaphore permit, a slot and a ready bit
//! per delivery on the way in; a pop and a permit released under the semaphore's lock per
//! delivery on the way out). Here a delivery in is one uncontended lock and a push, and the
//! writer takes a whole batch under one lock. The queue allocates nothing until used and gives
//! its slots back when it empties after a burst, so a quiet member holds no queue memory.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// Slots kept after the queue empties; above this the memory goes back to the allocator.
const KEEP_SLOTS: usize = 64;

/// The state both ends share.
#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    /// The writer's waker, woken once per batch however many deliveries arrive.
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Set when the receiver is dropped: the connection is gone.
    closed: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic under this lock leaves the queue itself consistent (VecDeque operations
        // do not unwind halfway), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new queue holding at most `capacity` deliveries.
pub fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `capacity` deliveries: the client is not keeping up.
    Full,
    /// The receiver is gone.
    Closed,
}

/// The producing end, held by the `Subscriber`.
#[derive(Debug)]
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues a delivery without waiting.
    pub fn try_send(&self, delivery: T) -> Result<(), Refused> {
        let was_empty = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(Refused::Closed);
            }
            if state.items.len() >= self.shared.capacity {
                return Err(Refused::Full);
            }
            let was_empty = state.items.is_empty();
            state.items.push_back(delivery);
            was_empty
        };
        // Only the first delivery into an empty queue wakes the writer: a writer never
        // sleeps while anything is queued (`recv_many` looks again after registering), so
        // the rest of a burst rides on that one wake.
        if was_empty {
            self.shared.waker.wake();
        }
        Ok(())
    }

    /// True once the receiver is dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Deliveries waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The consuming end, held by the connection's writer.
#[derive(Debug)]
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// Waits until something is queued, then moves up to `limit` deliveries into `out`
    /// (oldest first) and returns how many. Cancel-safe: deliveries leave the queue only in
    /// the poll that returns them.
    pub async fn recv_many(&mut self, out: &mut Vec<T>, limit: usize) -> usize {
        poll_fn(|cx| {
            let taken = self.take(out, limit);
            if taken > 0 {
                return Poll::Ready(taken);
            }
            self.shared.waker.register(cx.waker());
            // A delivery queued between the first look and the registration woke nobody.
            match self.take(out, limit) {
                0 => Poll::Pending,
                taken => Poll::Ready(taken),
            }
        })
        .await
    }

    /// The oldest delivery, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = self.shared.lock();
        let delivery = state.items.pop_front();
        shrink_if_drained(&mut state);
        delivery
    }

    fn take(&self, out: &mut Vec<T>, limit: usize) -> usize {
        let mut state = self.shared.lock();
        let taken = state.items.len().min(limit);
        out.extend(state.items.drain(..taken));
        shrink_if_drained(&mut state);
        taken
    }
}

/// Gives a burst's slots back once the queue is empty again.
fn shrink_if_drained<T>(state: &mut State<T>) {
    if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
        state.items = VecDeque::new();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        // What was queued for a connection that is gone is freed now, not with the
        // subscriber (which a room may still hold for a moment).
        state.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    /// Sends `item` from another task once this one has had a turn to go to sleep.
    fn send_later(
        tx: Sender<String>,
        item: &'static str,
    ) -> tokio::task::JoinHandle<Sender<String>> {
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.try_send(item.to_owned()).unwrap();
            tx
        })
    }

    #[tokio::test]
    async fn deliveries_come_out_in_order_in_batches_of_at_most_the_limit() {
        let (tx, mut rx) = queue(10);
        for i in 0..5 {
            tx.try_send(i.to_string()).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 3).await, 3);
        assert_eq!(rx.recv_many(&mut batch, 3).await, 2);
        assert_eq!(batch, ["0", "1", "2", "3", "4"]);
        assert!(rx.try_recv().is_none());
        assert!(tx.is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_dropped_receiver_closes_it() {
        let (tx, rx) = queue(2);
        tx.try_send("a".to_owned()).unwrap();
        tx.try_send("b".to_owned()).unwrap();
        assert_eq!(tx.try_send("c".to_owned()), Err(Refused::Full));
        assert_eq!(tx.len(), 2);
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.len(), 0, "what waited is freed with the receiver");
        assert_eq!(tx.try_send("d".to_owned()), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_delivery_from_another_task() {
        let (tx, mut rx) = queue(4);
        let sender = send_later(tx, "late");
        let mut batch = Vec::new();
        let taken = tokio::time::timeout(WAIT, rx.recv_many(&mut batch, 8))
            .await
            .expect("woken");
        assert_eq!((taken, batch[0].as_str()), (1, "late"));
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn a_writer_that_left_deliveries_behind_finds_them_without_a_new_wake() {
        let (tx, mut rx) = queue(100);
        for i in 0..10 {
            tx.try_send(i.to_string()).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 4).await, 4);
        // Pushed into a queue that is not empty: no wake, and none is needed.
        tx.try_send("10".to_owned()).unwrap();
        let rest = tokio::time::timeout(WAIT, async {
            while batch.len() < 11 {
                rx.recv_many(&mut batch, 4).await;
            }
        })
        .await;
        assert!(rest.is_ok(), "took {} of 11", batch.len());
        assert_eq!(batch[10], "10");
        // Empty again, the writer sleeps; the next delivery wakes it.
        let sender = send_later(tx, "11");
        let woke = tokio::time::timeout(WAIT, rx.recv_many(&mut batch, 4)).await;
        assert_eq!(woke, Ok(1));
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn a_burst_gives_its_slots_back_once_drained() {
        let (tx, mut rx) = queue(1_000);
        for i in 0..500 {
            tx.try_send(i.to_string()).unwrap();
        }
        assert!(tx.shared.lock().items.capacity() >= 500);
        let mut batch = Vec::new();
        while rx.try_recv().is_some() {}
        assert_eq!(tx.shared.lock().items.capacity(), 0);
        // A small queue keeps its few slots between batches.
        for _ in 0..2 {
            tx.try_send("x".to_owned()).unwrap();
            rx.recv_many(&mut batch, 8).await;
        }
        assert!(tx.shared.lock().items.capacity() > 0);
    }
}
