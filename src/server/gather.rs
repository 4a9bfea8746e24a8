//! Gathering a fast stream's blocks into fewer writes, and the thread that guarantees
//! they still move while the app works on its next block.
//!
//! A generator that yields 16 KiB blocks as fast as it can cost one `send(2)` per block,
//! and on loopback each send wakes a client that had drained its socket: on this VM a
//! wake-up costs the sender ~27 µs, and the client, woken for 16 KiB, drains and sleeps
//! again. A 1 MiB response as 64 blocks so took ~2 x the CPU of the same MiB as one
//! `bytes` (bench `big_stream`: 424–912 vs 225 µs per response, 8–23 client sleeps per
//! response). Gathered, it takes about what the single body takes.
//!
//! PEP 3333 ("Buffering and Streaming") forbids holding a block back to wait for the
//! next, unless "a different thread" makes sure the block "continues to be transmitted"
//! while the app produces the next. That thread is the flusher here: a block is held
//! only when the app produced it quickly (`FAST`), so it probably has more coming; the
//! held bytes are handed to the flusher's watch, and once the oldest of them has waited
//! `HOLD_LIMIT` the flusher sends them itself, whether the app has gone quiet or is
//! still adding to them. A slow producer (a server-sent-events app, a generator
//! waiting on a database) has every block sent at once, as before.
//!
//! The held bytes move into a slot the two threads share (`Held`): the app's thread
//! puts them there (`Gathered::hold`) and takes them back before it touches the response
//! again (`Gathered::take`), and the flusher sends only what is in the slot. So at any
//! time exactly one thread may write to the socket, and the flusher can write only
//! while the app is still running for this response, which keeps the socket open.

use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::OUTPUT_HIGH_WATER;
use crate::server::outbuf::OutBuf;

/// Up to this many bytes of a fast stream are gathered into one write: as much as a
/// response may queue for a slow client anyway (`OUTPUT_HIGH_WATER`).
///
/// bench `big_stream` (64 x 16 KiB, wrk on the other core, 4 s runs, cores near):
/// sending each block 1,083–2,123 req/s; gathering 64 KiB 2,833–3,057; 256 KiB
/// 2,875–3,037 (p99 37–49 ms); 512 KiB 3,307–3,913; 1 MiB 3,641–4,299 (p99 20–29 ms),
/// the same as the MiB sent as one `bytes` (3,706–3,880).
pub const GATHER: usize = OUTPUT_HIGH_WATER;

/// A block is held only if the app produced it within this time of being asked: a
/// generator with its data at hand (a 16 KiB block takes a few µs), not one that waits
/// between blocks.
pub const FAST: Duration = Duration::from_micros(100);

/// Bytes held this long are sent by the flusher, whether or not the app is still
/// adding to them; no byte waits more than about twice this (the flusher looks once per
/// `HOLD_LIMIT`).
pub const HOLD_LIMIT: Duration = Duration::from_millis(1);

/// What one response holds back, shared between its app's thread and the flusher.
struct Held {
    slot: Mutex<Slot>,
}

struct Slot {
    fd: RawFd,
    /// The held bytes; `None` while the app's thread has them.
    buf: Option<OutBuf>,
    since: Instant,
    /// A write by the flusher failed: the client is gone.
    failed: bool,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The flusher's part: sends what has been held for `HOLD_LIMIT`, as much as the
    /// socket takes now (the rest at its next look).
    fn flush_if_stale(&self) {
        let mut slot = self.lock();
        let Slot {
            fd,
            buf,
            since,
            failed,
        } = &mut *slot;
        let Some(buf) = buf else { return };
        if *failed || since.elapsed() < HOLD_LIMIT {
            return;
        }
        if buf.send_available(*fd).is_err() {
            *failed = true;
            buf.clear();
        }
    }
}

/// One response's handle on gathering (see `Output::hold`).
pub struct Gathered {
    held: Arc<Held>,
    holding: bool,
    /// When the oldest byte not yet sent was first held: the flusher's clock runs from
    /// there, however often the app adds to the held bytes.
    since: Option<Instant>,
}

impl Gathered {
    /// A handle for the socket `fd`, watched by the flusher; `None` if the flusher
    /// thread could not be started (then nothing is held).
    pub fn new(fd: RawFd) -> Option<Gathered> {
        let flusher = flusher()?;
        let gathered = Gathered::unwatched(fd);
        flusher.watch(gathered.held.clone());
        Some(gathered)
    }

    /// A handle no flusher watches yet.
    fn unwatched(fd: RawFd) -> Gathered {
        Gathered {
            held: Arc::new(Held {
                slot: Mutex::new(Slot {
                    fd,
                    buf: None,
                    since: Instant::now(),
                    failed: false,
                }),
            }),
            holding: false,
            since: None,
        }
    }

    #[inline]
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Hands `buf` to the flusher's watch.
    pub fn hold(&mut self, buf: OutBuf) {
        let since = *self.since.get_or_insert_with(Instant::now);
        let mut slot = self.held.lock();
        slot.buf = Some(buf);
        slot.since = since;
        self.holding = true;
    }

    /// Takes the held bytes back (what the flusher has not sent), and whether the
    /// flusher found the client gone.
    pub fn take(&mut self) -> (OutBuf, bool) {
        let mut slot = self.held.lock();
        self.holding = false;
        let buf = slot.buf.take().unwrap_or_default();
        if buf.is_empty() {
            self.since = None;
        }
        (buf, std::mem::take(&mut slot.failed))
    }

    /// Everything queued was sent: the next byte held starts the flusher's clock anew.
    pub fn sent(&mut self) {
        self.since = None;
    }
}

impl Drop for Gathered {
    /// Never leaves bytes for a socket the response no longer owns.
    fn drop(&mut self) {
        if self.holding {
            self.held.lock().buf = None;
        }
    }
}

#[derive(Default)]
struct Flusher {
    /// The responses that may hold bytes; each is dropped from here once only the
    /// flusher still has it (its response ended).
    watched: Mutex<Vec<Arc<Held>>>,
    wake: Condvar,
}

impl Flusher {
    fn watch(&self, held: Arc<Held>) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.push(held);
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
            watched.retain(|held| Arc::strong_count(held) > 1);
            for held in watched.iter() {
                held.flush_if_stale();
            }
        }
    }
}

/// This process's flusher, started at first use. A process forked from one that had
/// started it (the thread does not survive a fork) starts its own.
fn flusher() -> Option<&'static Flusher> {
    static STARTED: Mutex<Option<(u32, &'static Flusher)>> = Mutex::new(None);
    let mut started = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, flusher)) = *started {
        if owner == pid {
            return Some(flusher);
        }
    }
    // One per process (a fork starts another): a small, deliberate leak.
    let flusher: &'static Flusher = Box::leak(Box::default());
    std::thread::Builder::new()
        .name("qiao-flusher".into())
        .spawn(move || flusher.run())
        .ok()?;
    *started = Some((pid, flusher));
    Some(flusher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// The flusher's clock runs from the oldest held byte: bytes the app keeps adding to
    /// are still sent once that byte has waited `HOLD_LIMIT`.
    #[test]
    fn the_oldest_held_byte_sets_the_clock() {
        let (tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        rx.set_nonblocking(true).unwrap();
        // Unwatched: the test plays the flusher's part itself.
        let mut gathered = Gathered::unwatched(tx.as_raw_fd());
        let mut buf = OutBuf::default();
        buf.extend(b"a");
        gathered.hold(buf);
        std::thread::sleep(HOLD_LIMIT * 2);
        let (mut buf, failed) = gathered.take();
        assert!(!failed);
        buf.extend(b"b");
        gathered.hold(buf);
        gathered.held.flush_if_stale();
        let mut got = [0u8; 2];
        rx.read_exact(&mut got)
            .expect("the held bytes were sent at the flusher's look");
        assert_eq!(&got, b"ab");
        let (back, _) = gathered.take();
        assert!(back.is_empty());
        // Emptied, the clock starts again with the next byte held.
        let mut buf = back;
        buf.extend(b"c");
        gathered.hold(buf);
        gathered.held.flush_if_stale();
        assert!(rx.read(&mut got).is_err(), "a fresh byte was sent at once");
    }

    /// Bytes held when the app goes quiet are sent by the flusher, all of them.
    #[test]
    fn held_bytes_go_out_when_the_app_goes_quiet() {
        let (tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        let mut gathered = Gathered::new(tx.as_raw_fd()).expect("the flusher starts");
        let mut buf = OutBuf::default();
        buf.extend(b"held block");
        gathered.hold(buf);
        rx.set_read_timeout(Some(HOLD_LIMIT * 5000)).unwrap();
        let mut got = [0u8; 10];
        rx.read_exact(&mut got)
            .expect("the flusher sent the held bytes");
        assert_eq!(&got, b"held block");
        let (back, failed) = gathered.take();
        assert!(back.is_empty() && !failed);
    }
}
