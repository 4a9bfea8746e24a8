//! The hand-over of a pooled response: the bytes an application thread gives its
//! connection's task, and the two wake-ups between them (the task is woken when bytes
//! arrive, the application's thread when the task has caught up).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::server::budget::Budget;
use crate::server::outbuf::OutBuf;
use crate::wsgi::sink::{Flow, Gone};

/// Bytes a response may have queued for its connection before the application waits:
/// enough that a fast client never makes it wait, small enough that a slow one costs
/// little.
pub(super) const HIGH_WATER: usize = 1 << 20;

/// A waiting application goes on once its queue is down to this.
const LOW_WATER: usize = HIGH_WATER / 2;

/// One connection's hand-over, reused from request to request.
pub(super) struct Channel {
    state: Mutex<Handed>,
    /// The application's thread waits here for the connection to catch up.
    caught_up: Condvar,
    /// The connection's task waits here for bytes to write.
    ready: Notify,
    /// The worker's output budget, shared by all its connections.
    budget: Arc<Budget>,
}

struct Handed {
    queue: OutBuf,
    /// Bytes of memory handed over and not yet written by the connection.
    pending: usize,
    /// The connection was told about bytes it has not taken yet.
    told: bool,
    /// The client is gone (a write failed or timed out).
    gone: bool,
}

impl Channel {
    pub(super) fn new(budget: Arc<Budget>) -> Channel {
        Channel {
            state: Mutex::new(Handed {
                queue: OutBuf::default(),
                pending: 0,
                told: false,
                gone: false,
            }),
            caught_up: Condvar::new(),
            ready: Notify::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Handed> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Readies the channel for the connection's next request.
    pub(super) fn reset(&self) {
        let mut s = self.lock();
        s.queue.clear();
        self.budget.release(std::mem::take(&mut s.pending));
        s.told = false;
        s.gone = false;
    }

    /// The application's side: hands over what `out` holds.
    pub(super) fn put(&self, out: &mut OutBuf) -> Result<Flow, Gone> {
        let mut s = self.lock();
        if s.gone {
            return Err(Gone);
        }
        let memory = out.memory_len();
        s.queue.append(out);
        s.pending += memory;
        self.budget.charge(memory);
        if !s.told {
            s.told = true;
            self.ready.notify_one();
        }
        Ok(if s.pending > HIGH_WATER || self.budget.over() {
            Flow::Wait
        } else {
            Flow::Go
        })
    }

    /// The application's side: blocks until the connection caught up (or the client is
    /// gone). Polls the worker's budget, which other connections' writes free.
    pub(super) fn wait(&self) -> Result<(), Gone> {
        let mut s = self.lock();
        loop {
            if s.gone {
                return Err(Gone);
            }
            if s.pending <= LOW_WATER && !self.budget.over() {
                return Ok(());
            }
            s = self
                .caught_up
                .wait_timeout(s, Duration::from_millis(10))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The connection's side: waits until the application handed over bytes.
    pub(super) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The connection's side: moves what was handed over to the back of `out`.
    pub(super) fn take(&self, out: &mut OutBuf) {
        let mut s = self.lock();
        out.append(&mut s.queue);
        s.told = false;
    }

    /// The connection's side: `memory` bytes of what was handed over were written.
    pub(super) fn written(&self, memory: usize) {
        let mut s = self.lock();
        let freed = memory.min(s.pending);
        s.pending -= freed;
        self.budget.release(freed);
        if s.pending <= LOW_WATER {
            self.caught_up.notify_all();
        }
    }

    /// Whether the connection found the client gone.
    pub(super) fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// The connection's side: the client is gone; the application learns it at its next
    /// push or wait.
    pub(super) fn lost(&self) {
        let mut s = self.lock();
        s.gone = true;
        s.queue.clear();
        self.budget.release(std::mem::take(&mut s.pending));
        self.caught_up.notify_all();
    }
}
