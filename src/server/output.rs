//! The bytes on their way to one client while the app runs: queued, pushed to the socket
//! without waiting where it can be, waited for (GIL released) past a bound, and handed
//! back to the connection task to finish writing.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::config::OUTPUT_HIGH_WATER;
use crate::server::gather::Gathered;
use crate::server::outbuf::OutBuf;
use crate::server::sockio;

pub struct Output {
    /// The connection's socket; only the thread holding this `Output` writes to it (and
    /// the flusher, while this output's bytes are held: see `hold`).
    pub fd: RawFd,
    /// Bytes not yet handed to the kernel, oldest first; reused from request to request.
    pub buf: OutBuf,
    /// Set once a write failed: the client is gone and nothing more is sent.
    pub broken: bool,
    /// How long a client that stopped reading may keep a blocked write waiting.
    pub timeout: Duration,
    /// Made at the first `hold` (fast streams only). Boxed: every request moves its
    /// `Output` a few times, and inline this made each move 32 bytes longer.
    gathered: Option<Box<Gathered>>,
}

/// No socket: what a response holds while its output is away (a paused request's output
/// is being sent by the connection).
impl Default for Output {
    fn default() -> Output {
        Output::new(-1, OutBuf::default(), Duration::ZERO)
    }
}

impl Output {
    pub fn new(fd: RawFd, buf: OutBuf, timeout: Duration) -> Output {
        Output {
            fd,
            buf,
            broken: false,
            timeout,
            gathered: None,
        }
    }

    /// Hands what is queued to the flusher's watch instead of the socket, for the app to
    /// add its next block to (see `gather`). False if there is no flusher: then nothing
    /// was held. Until `reclaim`, `buf` is empty.
    pub fn hold(&mut self) -> bool {
        if self.gathered.is_none() {
            self.gathered = Gathered::new(self.fd).map(Box::new);
        }
        let Some(gathered) = &mut self.gathered else {
            return false;
        };
        gathered.hold(std::mem::take(&mut self.buf));
        true
    }

    /// After a push the socket could not take whole (a client reading slowly, under the
    /// high-water mark): hands the rest to the flusher, which goes on sending it as the
    /// client reads while the app works on its next block. PEP 3333: a block is sent
    /// whole, or its transmission continues meanwhile.
    pub fn keep_sending(&mut self) {
        if !self.buf.is_empty() {
            self.hold();
        }
    }

    /// Takes back what `hold` handed over (less what the flusher sent meanwhile). Called
    /// before anything touches the output again; a no-op when nothing is held.
    ///
    /// Inline, with the taking back out of line: every response passes here several
    /// times, nearly always with nothing held, and as one call it cost ~108
    /// instructions of a hello request (callgrind).
    #[inline]
    pub fn reclaim(&mut self) {
        if self.gathered.as_ref().is_some_and(|g| g.holding()) {
            self.take_back();
        }
    }

    #[cold]
    fn take_back(&mut self) {
        let Some(gathered) = &mut self.gathered else {
            return;
        };
        let (buf, failed) = gathered.take();
        self.buf = buf;
        if failed {
            self.lost();
        }
    }

    /// Hands the kernel what it takes now, without waiting.
    pub fn push(&mut self) -> io::Result<()> {
        self.check()?;
        if let Err(e) = self.buf.send_available(self.fd) {
            return Err(self.fail(e));
        }
        if self.buf.is_empty() {
            self.all_sent();
        }
        Ok(())
    }

    fn all_sent(&mut self) {
        if let Some(gathered) = &mut self.gathered {
            gathered.sent();
        }
    }

    /// Whether the buffer holds so much memory that the app must wait for the client
    /// (backpressure). A queued file range holds none.
    pub fn over_high_water(&self) -> bool {
        self.buf.memory_len() > OUTPUT_HIGH_WATER
    }

    /// Sends everything, waiting for the client; call with the GIL released.
    pub fn flush_blocking(&mut self) -> io::Result<()> {
        self.check()?;
        let deadline = Instant::now() + self.timeout;
        while !self.buf.is_empty() {
            match self.buf.send_to(self.fd, false) {
                Ok(0) => {
                    if let Err(e) = sockio::wait(self.fd, true, deadline) {
                        return Err(self.fail(e));
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.all_sent();
        Ok(())
    }

    /// The client is gone (a write from the event loop failed): nothing more is sent.
    pub fn lost(&mut self) {
        self.broken = true;
        self.buf.clear();
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client disconnected",
            ))
        } else {
            Ok(())
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.lost();
        e
    }
}
