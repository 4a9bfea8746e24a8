//! The bytes on their way to one client: a buffer the response is built in, pushed to the
//! socket without waiting where it can be, and flushed by the connection task otherwise.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use std::time::Duration;

use crate::config::OUTPUT_HIGH_WATER;
use crate::server::sockio;

pub struct Output {
    /// The connection's socket; only the thread holding this `Output` writes to it.
    pub fd: RawFd,
    /// Bytes not yet handed to the kernel, oldest first; reused from request to request.
    pub buf: Vec<u8>,
    /// Set once a write failed: the client is gone and nothing more is sent.
    pub broken: bool,
    /// How long a client that stopped reading may keep a blocked write waiting.
    pub timeout: Duration,
}

impl Output {
    pub fn new(fd: RawFd, buf: Vec<u8>, timeout: Duration) -> Output {
        Output {
            fd,
            buf,
            broken: false,
            timeout,
        }
    }

    /// Hands the kernel what it takes now, without waiting.
    pub fn push(&mut self) -> io::Result<()> {
        self.check()?;
        let mut sent = 0;
        while sent < self.buf.len() {
            match sockio::send_now(self.fd, &self.buf[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.buf.drain(..sent);
        Ok(())
    }

    /// Whether the buffer holds so much that the app must wait for the client (backpressure).
    pub fn over_high_water(&self) -> bool {
        self.buf.len() > OUTPUT_HIGH_WATER
    }

    /// Sends everything, waiting for the client; call with the GIL released.
    pub fn flush_blocking(&mut self) -> io::Result<()> {
        self.check()?;
        let deadline = Instant::now() + self.timeout;
        let mut sent = 0;
        while sent < self.buf.len() {
            match sockio::send_now(self.fd, &self.buf[sent..]) {
                Ok(0) => {
                    if let Err(e) = sockio::wait(self.fd, true, deadline) {
                        self.buf.drain(..sent);
                        return Err(self.fail(e));
                    }
                }
                Ok(n) => sent += n,
                Err(e) => {
                    self.buf.drain(..sent);
                    return Err(self.fail(e));
                }
            }
        }
        self.buf.clear();
        Ok(())
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
        self.broken = true;
        self.buf.clear();
        e
    }
}
