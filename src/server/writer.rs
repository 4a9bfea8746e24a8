//! The stream writer: the thread that keeps a gathered response moving while the
//! application, running on its connection's own thread, produces the next block.
//!
//! A generator that yields many blocks as fast as it can would cost one write per block,
//! and each write wakes a client that had drained its socket; gathered, the blocks go
//! out in a few large writes. PEP 3333 ("Buffering and Streaming") allows holding a block
//! back only if "a different thread" makes sure it continues to be transmitted while the
//! application produces the next one. This is that thread. The connection lends it its
//! transport together with the gathered bytes (`Lent::lend`): both move into a slot the
//! two threads share. While the stream still gathers, the next blocks are added in place
//! (`Lent::add`); the connection's side takes both back (`Lent::take`) before it does
//! anything else with the response. The transport has one owner at any moment, and only
//! the owner writes to it. Once the oldest held byte has waited `HOLD_LIMIT`, the writer
//! sends what the transport takes, whether the application has gone quiet or is still
//! adding to the bytes, so no byte waits more than about twice that.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::server::outbuf::OutBuf;
use crate::server::transport::Transport;

/// Bytes held this long are sent by the writer; it looks once per `HOLD_LIMIT`.
pub(super) const HOLD_LIMIT: Duration = Duration::from_millis(1);

/// One connection's slot with the writer.
pub(super) struct Lent<T> {
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    /// The lent transport: `Some` while the writer holds it.
    transport: Option<T>,
    /// The gathered bytes (what the writer has not sent yet).
    out: OutBuf,
    /// When the oldest byte still held was first held.
    since: Instant,
    /// A write by the writer failed: the client is gone.
    failed: bool,
}

impl<T> Lent<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lends the transport and the gathered bytes, the oldest held since `since`.
    pub(super) fn lend(&self, transport: T, out: OutBuf, since: Instant) {
        let mut slot = self.lock();
        slot.transport = Some(transport);
        slot.out = out;
        slot.since = since;
    }

    /// Adds to the lent bytes where they are, the transport staying with the writer: the
    /// bytes' memory after `add`, or `add` given back unrun if the writer found the client
    /// gone. Bytes added once the writer has sent all before them are held from now.
    pub(super) fn add<F: FnOnce(&mut OutBuf)>(&self, add: F) -> Result<usize, F> {
        let mut slot = self.lock();
        if slot.failed {
            return Err(add);
        }
        if slot.out.is_empty() {
            slot.since = Instant::now();
        }
        add(&mut slot.out);
        Ok(slot.out.memory_len())
    }

    /// Takes the transport and the bytes not sent yet back, with when the oldest of them
    /// was first held; `true` if the writer found the client gone.
    pub(super) fn take(&self) -> (Option<T>, OutBuf, Instant, bool) {
        let mut slot = self.lock();
        let failed = std::mem::take(&mut slot.failed);
        let since = slot.since;
        (
            slot.transport.take(),
            std::mem::take(&mut slot.out),
            since,
            failed,
        )
    }
}

impl<T: Transport> Lent<T> {
    /// A slot watched by this process's writer; `None` if its thread cannot be started
    /// (then nothing is gathered).
    pub(super) fn new() -> Option<Arc<Lent<T>>> {
        let writer = writer()?;
        let lent = Arc::new(Lent::unwatched());
        writer.watch(lent.clone());
        Some(lent)
    }

    fn unwatched() -> Lent<T> {
        Lent {
            slot: Mutex::new(Slot {
                transport: None,
                out: OutBuf::default(),
                since: Instant::now(),
                failed: false,
            }),
        }
    }
}

/// What the writer does with a slot.
trait Watched: Send + Sync {
    /// Sends what has been held for `HOLD_LIMIT`, as much as the transport takes now (the
    /// rest at the next look).
    fn send_if_stale(&self);
}

impl<T: Transport> Watched for Lent<T> {
    fn send_if_stale(&self) {
        let mut slot = self.lock();
        let Slot {
            transport,
            out,
            since,
            failed,
        } = &mut *slot;
        let Some(transport) = transport else { return };
        if *failed || transport.drained(out) || since.elapsed() < HOLD_LIMIT {
            return;
        }
        while !transport.drained(out) {
            match transport.try_write(out, false) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    *failed = true;
                    out.clear();
                }
            }
        }
    }
}

#[derive(Default)]
struct Writer {
    /// The slots that may hold bytes; a slot is dropped from here once only the writer
    /// still has it (its connection closed).
    watched: Mutex<Vec<Arc<dyn Watched>>>,
    wake: Condvar,
}

impl Writer {
    fn watch(&self, lent: Arc<dyn Watched>) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.push(lent);
        if watched.len() == 1 {
            // It was waiting with nothing to watch; otherwise it looks at its next tick.
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if watched.is_empty() {
                watched = self
                    .wake
                    .wait(watched)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            watched = self
                .wake
                .wait_timeout(watched, HOLD_LIMIT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            watched.retain(|lent| Arc::strong_count(lent) > 1);
            for lent in watched.iter() {
                lent.send_if_stale();
            }
        }
    }
}

/// This process's writer, started at first use. A process forked from one that had
/// started it (the thread does not survive a fork) starts its own.
fn writer() -> Option<&'static Writer> {
    static STARTED: Mutex<Option<(u32, &'static Writer)>> = Mutex::new(None);
    let mut started = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, writer)) = *started {
        if owner == pid {
            return Some(writer);
        }
    }
    // One per process (a fork starts another): a small, deliberate leak.
    let writer: &'static Writer = Box::leak(Box::default());
    std::thread::Builder::new()
        .name("qiao-writer".into())
        .spawn(move || writer.run())
        .ok()?;
    *started = Some((pid, writer));
    Some(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::transport::tests::pair;
    use std::io::Read;

    /// The clock runs from the oldest held byte: bytes the app keeps adding to are still
    /// sent once that byte has waited `HOLD_LIMIT`; a fresh byte is not.
    #[test]
    fn the_oldest_held_byte_sets_the_clock() {
        let (tx, mut rx) = pair();
        rx.set_nonblocking(true).unwrap();
        // Unwatched: the test plays the writer's part itself.
        let lent = Lent::unwatched();
        let oldest = Instant::now();
        let mut out = OutBuf::default();
        out.extend(b"a");
        lent.lend(tx, out, oldest);
        std::thread::sleep(HOLD_LIMIT * 2);
        let (tx, mut out, _, failed) = lent.take();
        assert!(!failed);
        out.extend(b"b");
        lent.lend(tx.unwrap(), out, oldest);
        lent.send_if_stale();
        let mut got = [0u8; 2];
        rx.read_exact(&mut got)
            .expect("the held bytes were sent at the look");
        assert_eq!(&got, b"ab");
        let (tx, out, _, _) = lent.take();
        assert!(out.is_empty());
        let mut out = out;
        out.extend(b"c");
        lent.lend(tx.unwrap(), out, Instant::now());
        lent.send_if_stale();
        assert!(rx.read(&mut got).is_err(), "a fresh byte was sent at once");
    }

    /// Bytes added in place are held from when they were added if the writer had sent all
    /// before them, and from the oldest held byte otherwise; once the writer finds the
    /// client gone, nothing more is added.
    #[test]
    fn bytes_added_in_place_keep_the_clock_of_the_oldest() {
        let (tx, mut rx) = pair();
        rx.set_nonblocking(true).unwrap();
        let lent = Lent::unwatched();
        let mut out = OutBuf::default();
        out.extend(b"a");
        lent.lend(tx, out, Instant::now());
        std::thread::sleep(HOLD_LIMIT * 2);
        assert_eq!(lent.add(|out| out.extend(b"b")).ok(), Some(2));
        lent.send_if_stale();
        let mut got = [0u8; 2];
        rx.read_exact(&mut got)
            .expect("the oldest byte's clock sent both");
        assert_eq!(&got, b"ab");
        std::thread::sleep(HOLD_LIMIT * 2);
        assert!(lent.add(|out| out.extend(b"c")).is_ok());
        lent.send_if_stale();
        assert!(
            rx.read(&mut got).is_err(),
            "a byte added to an emptied slot was sent at once"
        );
        drop(rx);
        std::thread::sleep(HOLD_LIMIT * 2);
        lent.send_if_stale();
        assert!(
            lent.add(|out| out.extend(b"d")).is_err(),
            "added after the client went"
        );
        let (_, _, _, failed) = lent.take();
        assert!(failed);
    }

    /// Bytes held when the app goes quiet are sent by the writer thread, all of them, and
    /// the transport comes back.
    #[test]
    fn held_bytes_go_out_when_the_app_goes_quiet() {
        let (tx, mut rx) = pair();
        let lent = Lent::new().expect("the writer starts");
        let mut out = OutBuf::default();
        out.extend(b"held block");
        lent.lend(tx, out, Instant::now());
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 10];
        rx.read_exact(&mut got)
            .expect("the writer sent the held bytes");
        assert_eq!(&got, b"held block");
        let (tx, back, _, failed) = lent.take();
        assert!(tx.is_some() && back.is_empty() && !failed);
    }
}
