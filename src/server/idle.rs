//! The connections waiting for their next request, so that a graceful stop can end those
//! waits, and the loop's ticker those past their keep-alive deadline.
//!
//! A stop gives an idle keep-alive connection `STOP_LINGER` to bring a request already on
//! its way, then ends its wait. A wait does not race a `watch` on the stop flag: that
//! registers and removes a waiter (two mutex round trips) on every request. Instead a
//! wait writes its socket into the connection's slot here and clears it after, which
//! takes no lock, and the stop ends the waits still in progress with
//! `shutdown(SHUT_RD)`: the read then sees the end of the stream and the connection
//! closes, as it would have at its shortened deadline.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::time::Instant;

/// A wait in progress: its socket and its deadline.
#[derive(Clone, Copy)]
struct Wait {
    fd: RawFd,
    deadline: Instant,
}

#[derive(Default)]
pub(crate) struct Idle {
    /// Per connection slot: the wait in progress, if any.
    slots: RefCell<Vec<Cell<Option<Wait>>>>,
    free: RefCell<Vec<usize>>,
}

impl Idle {
    /// A slot for a new connection, until `release`.
    pub(crate) fn slot(&self) -> usize {
        if let Some(slot) = self.free.borrow_mut().pop() {
            return slot;
        }
        let mut slots = self.slots.borrow_mut();
        slots.push(Cell::new(None));
        slots.len() - 1
    }

    /// Gives a connection's slot back (before its socket closes).
    pub(crate) fn release(&self, slot: usize) {
        self.slots.borrow()[slot].set(None);
        self.free.borrow_mut().push(slot);
    }

    /// Marks the connection in `slot` as waiting for a request on `fd`, until `deadline`
    /// at most, until the guard goes.
    pub(crate) fn waiting(&self, slot: usize, fd: RawFd, deadline: Instant) -> Waiting<'_> {
        self.slots.borrow()[slot].set(Some(Wait { fd, deadline }));
        Waiting { idle: self, slot }
    }

    /// Ends every wait in progress: each one's read returns the end of the stream.
    pub(crate) fn end_waits(&self) {
        self.end(|_| true);
    }

    /// Ends the waits whose deadline is `now` or earlier.
    pub(crate) fn end_expired(&self, now: Instant) {
        self.end(|wait| wait.deadline <= now);
    }

    fn end(&self, which: impl Fn(&Wait) -> bool) {
        for slot in self.slots.borrow().iter() {
            if let Some(wait) = slot.get().filter(&which) {
                // A slot holds a descriptor only while its connection, which owns the open
                // socket, waits on it (cleared before the socket closes), so this never
                // reaches another file that took the number.
                crate::sys::shutdown_raw(wait.fd, crate::sys::Side::Read);
                slot.set(None);
            }
        }
    }
}

/// A wait in progress (see `Idle::waiting`).
pub(crate) struct Waiting<'a> {
    idle: &'a Idle,
    slot: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.idle.slots.borrow()[self.slot].set(None);
    }
}
