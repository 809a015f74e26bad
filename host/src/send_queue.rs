//! A session's send queue: packets waiting for its connection to write them, bounded in packets
//! and in bytes.
//!
//! Anyone may push (the connection's own task, component threads pushing and broadcasting);
//! only the connection takes. It is a mutex around a `VecDeque` rather than a channel because
//! an idle connection should cost almost nothing: an empty queue holds no allocation (a tokio
//! channel keeps a 32-slot block and cache-padded counters for every connection), and the
//! connection takes everything waiting in one swap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};

use bytes::Bytes;

use crate::session::SendError;

/// What the connection is asked to write.
#[derive(Debug)]
pub enum Outbound {
    /// Write one encoded packet.
    Packet(Bytes),
    /// Write this (kick) packet, then close the connection.
    Last(Bytes),
}

impl Outbound {
    /// The packet's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Outbound::Packet(packet) | Outbound::Last(packet) => packet.len(),
        }
    }

    /// Whether the packet is empty (never, for a valid packet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sending side of a connection; cloning it gives another handle on the same queue.
#[derive(Debug, Clone)]
pub struct SendQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    max_packets: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    packets: VecDeque<Bytes>,
    /// Bytes queued plus bytes taken by the connection and not yet written: the bound is on
    /// what a client that does not read costs, wherever the bytes wait.
    bytes: usize,
    /// A last packet is queued: nothing after it is accepted.
    last: bool,
    /// The connection has ended.
    closed: bool,
    /// The connection's task, waiting for something to write.
    waker: Option<Waker>,
}

/// What [`SendQueue::take`] handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Nothing is waiting; the task is woken when something is pushed.
    Nothing,
    /// Packets were moved into the caller's queue.
    Packets {
        /// The last of them is the connection's last packet.
        last: bool,
    },
}

impl SendQueue {
    /// An empty queue holding at most `max_packets` packets and `max_bytes` bytes (or one
    /// packet of any size).
    pub fn new(max_packets: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                max_packets: max_packets.max(1),
                max_bytes: max_bytes.max(1),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding it; the queue's
        // fields are updated together, so it stays consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a packet unless that would pass either bound, and wakes the connection.
    pub fn try_push(&self, item: Outbound) -> Result<(), SendError> {
        self.push(item, true)
    }

    /// Like [`try_push`](Self::try_push), for the connection's own task, which takes what
    /// waits before it next sleeps: waking it would only make it run once more for nothing
    /// (and could wake an idle thread of the runtime to do so).
    pub fn try_push_own(&self, item: Outbound) -> Result<(), SendError> {
        self.push(item, false)
    }

    fn push(&self, item: Outbound, wake: bool) -> Result<(), SendError> {
        let waker = {
            let mut state = self.state();
            if state.closed || state.last {
                return Err(SendError::Closed);
            }
            let len = item.len();
            // The byte bound is on a backlog: with nothing waiting, one packet of any size is
            // taken, so a single answer (a large handshake reply, a response under
            // --max-response) never counts as a client that does not read.
            if state.packets.len() >= self.inner.max_packets
                || (state.bytes > 0 && state.bytes.saturating_add(len) > self.inner.max_bytes)
            {
                return Err(SendError::QueueFull);
            }
            state.bytes += len;
            let packet = match item {
                Outbound::Packet(packet) => packet,
                Outbound::Last(packet) => {
                    state.last = true;
                    packet
                }
            };
            state.packets.push_back(packet);
            if wake { state.waker.take() } else { None }
        };
        // Woken outside the lock: the woken task may run at once on another thread.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Moves every waiting packet to the back of `into` (which should be empty: then this is a
    /// swap, not a copy). When nothing waits, remembers `cx`'s waker to wake on the next push.
    pub fn take(&self, into: &mut VecDeque<Bytes>, cx: &mut Context<'_>) -> Taken {
        let mut state = self.state();
        if state.packets.is_empty() {
            match &state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Taken::Nothing;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut state.packets);
        } else {
            into.append(&mut state.packets);
        }
        Taken::Packets { last: state.last }
    }

    /// Gives back the budget of `bytes` written to the socket.
    pub fn release(&self, bytes: usize) {
        let mut state = self.state();
        state.bytes = state.bytes.saturating_sub(bytes);
    }

    /// Ends the queue: pushes fail with [`SendError::Closed`] from now on, and what waits is
    /// dropped.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.packets = VecDeque::new();
        state.waker = None;
    }

    /// Frees the queue's buffer if it is empty, so an idle connection holds no allocation.
    pub fn shrink_if_empty(&self) {
        let mut state = self.state();
        if state.packets.is_empty() && state.packets.capacity() > 0 {
            state.packets = VecDeque::new();
        }
    }

    /// Whether under half the queue's room, in packets and in bytes, is taken.
    pub fn half_empty(&self) -> bool {
        let state = self.state();
        state.packets.len() * 2 < self.inner.max_packets && state.bytes * 2 < self.inner.max_bytes
    }

    /// Packets waiting (not yet taken by the connection).
    pub fn len(&self) -> usize {
        self.state().packets.len()
    }

    /// Whether no packet waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn packet(n: usize) -> Outbound {
        Outbound::Packet(Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn bounds_in_packets_and_bytes() {
        let queue = SendQueue::new(2, 10);
        queue.try_push(packet(4)).unwrap();
        assert_eq!(queue.try_push(packet(7)), Err(SendError::QueueFull));
        queue.try_push(packet(6)).unwrap();
        assert_eq!(queue.try_push(packet(0)), Err(SendError::QueueFull));
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn an_empty_queue_takes_one_packet_over_the_byte_bound() {
        let queue = SendQueue::new(10, 10);
        queue.try_push(packet(25)).unwrap();
        assert_eq!(queue.try_push(packet(1)), Err(SendError::QueueFull));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn half_empty_in_packets_and_in_bytes() {
        let queue = SendQueue::new(4, 100);
        assert!(queue.half_empty());
        queue.try_push(packet(10)).unwrap();
        assert!(queue.half_empty());
        queue.try_push(packet(10)).unwrap();
        assert!(!queue.half_empty(), "2 of 4 packets");
        let queue = SendQueue::new(100, 100);
        queue.try_push(packet(49)).unwrap();
        assert!(queue.half_empty());
        queue.try_push(packet(1)).unwrap();
        assert!(!queue.half_empty(), "50 of 100 bytes");
    }

    #[test]
    fn taken_bytes_count_until_released() {
        let queue = SendQueue::new(100, 10);
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        queue.try_push(packet(8)).unwrap();
        let mut local = VecDeque::new();
        assert_eq!(
            queue.take(&mut local, &mut cx),
            Taken::Packets { last: false }
        );
        assert_eq!(local.len(), 1);
        // Taken but not written: still counts against the bound.
        assert_eq!(queue.try_push(packet(4)), Err(SendError::QueueFull));
        queue.release(8);
        queue.try_push(packet(4)).unwrap();
    }

    #[test]
    fn a_push_wakes_the_waiting_connection_once() {
        let queue = SendQueue::new(100, 100);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut local = VecDeque::new();
        assert_eq!(queue.take(&mut local, &mut cx), Taken::Nothing);
        queue.try_push(packet(1)).unwrap();
        queue.try_push(packet(1)).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            queue.take(&mut local, &mut cx),
            Taken::Packets { last: false }
        );
        assert_eq!(local.len(), 2);
    }

    #[test]
    fn nothing_after_the_last_packet_or_the_close() {
        let queue = SendQueue::new(100, 100);
        queue
            .try_push(Outbound::Last(Bytes::from_static(b"kick")))
            .unwrap();
        assert_eq!(queue.try_push(packet(1)), Err(SendError::Closed));
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut local = VecDeque::new();
        assert_eq!(
            queue.take(&mut local, &mut Context::from_waker(&waker)),
            Taken::Packets { last: true }
        );
        let other = SendQueue::new(100, 100);
        other.try_push(packet(1)).unwrap();
        other.close();
        assert!(other.is_empty());
        assert_eq!(other.try_push(packet(1)), Err(SendError::Closed));
    }
}
