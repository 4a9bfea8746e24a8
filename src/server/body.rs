//! Reading a request's body, whole, before the application runs, so that no client can
//! hold an application thread (or, with one thread, the event loop) while it sends: in
//! memory up to `--body-buffer-size`, beyond that into an unnamed temporary file. A body
//! behind `Expect: 100-continue` is read the same way, once the connection has answered
//! `100 Continue` (PEP 3333's first way of supporting it).

use std::time::Instant;

use bytes::{Buf, BytesMut};
use pyo3::Python;

use crate::http::{BodyFraming, Canned, ChunkedDecoder, HttpError, RequestHead};
use crate::metrics::Counter;
use crate::server::conn::{read_by, Connection, ReadEnd, READ_BUFFER};
use crate::server::spool::Spool;
use crate::server::transport::Transport;
use crate::wsgi::bodybuf::{Body, BodyBuf};

/// Bytes read at a time while a large body is spooled: large reads and writes, few
/// syscalls (the read buffer shrinks back once the body is stored, see `shrink`).
const SPOOL_READ: usize = 256 * 1024;

/// Why a request body could not be read.
pub(super) enum BodyError {
    /// Its framing is invalid or it is too large: this status, then close.
    Refused(HttpError),
    /// The client paused longer than `body_timeout`: 408, then close.
    TimedOut,
    /// The client went away.
    Closed,
    /// The body could not be stored: its spool file could not be written (disk full?) or
    /// its memory not allocated. 500, then close.
    Store(std::io::Error),
}

impl From<ReadEnd> for BodyError {
    fn from(end: ReadEnd) -> BodyError {
        match end {
            ReadEnd::TimedOut => BodyError::TimedOut,
            ReadEnd::Closed => BodyError::Closed,
        }
    }
}

impl<T: Transport> Connection<T> {
    /// Reads the body of the request `head` starts.
    pub(super) async fn read_body(&mut self, head: &RequestHead) -> Result<Body, BodyError> {
        let shared = self.shared.clone();
        let settings = &shared.ctx.settings;
        if matches!(head.framing, BodyFraming::Empty | BodyFraming::Length(0)) {
            return Ok(Body::Empty);
        }
        // RFC 9110 §10.1.1: the client waits for the 100 before it sends the body; a
        // body that started to arrive anyway needs none (the server MAY omit it).
        if head.expect_continue && self.rbuf.is_empty() {
            if let Some(sink) = self.sink.as_mut() {
                sink.out.write_with(|v| Canned::Continue.write(false, v));
            }
        }
        let keep = settings.body_buffer_size as u64;
        match head.framing {
            BodyFraming::Length(n) if n <= keep => {
                let n = n as usize;
                if !shared.inline() && self.rbuf.len() >= n {
                    return Ok(Body::Buffered(self.rbuf.split_to(n).freeze()));
                }
                // With one app thread the I/O thread holds the GIL: the body goes straight
                // into the `bytes` object `read()` will hand the app.
                let mut buf = if shared.inline() {
                    Python::attach(|py| BodyBuf::python(py, n))
                        .map_err(|e| BodyError::Store(std::io::Error::other(e.to_string())))?
                } else {
                    BodyBuf::heap(n)
                };
                buf.take_from(&mut self.rbuf);
                while !buf.is_full() {
                    self.read_body_into(&mut buf).await?;
                }
                Ok(buf.into_body())
            }
            // Boxed, these two: they are rarer, and their futures (a spool file, a decoder)
            // would otherwise enlarge every connection's future, which is moved whole.
            BodyFraming::Length(n) => Box::pin(self.spool_body(n)).await,
            BodyFraming::Chunked => {
                let decoder = ChunkedDecoder::new(
                    settings.limit_chunk_ext_size,
                    settings.limit_trailer_size,
                    settings.limits.max_body,
                );
                Box::pin(self.read_chunked(decoder, keep)).await
            }
            BodyFraming::Empty => Ok(Body::Empty),
        }
    }

    /// A Content-Length body larger than `body_buffer_size`, into a temporary file.
    async fn spool_body(&mut self, n: u64) -> Result<Body, BodyError> {
        let mut spool = Spool::new().map_err(BodyError::Store)?;
        self.shared.ctx.count(Counter::BodiesSpooled, 1);
        loop {
            let take = (n - spool.len()).min(self.rbuf.len() as u64) as usize;
            spool.write(&self.rbuf[..take]).map_err(BodyError::Store)?;
            self.rbuf.advance(take);
            if spool.len() == n {
                self.shrink_read_buffer();
                return Ok(Body::Source(Box::new(spool.into_source())));
            }
            self.rbuf.reserve(SPOOL_READ);
            self.read_body_bytes().await?;
        }
    }

    /// A chunked body, in memory while it stays within `keep` bytes, else spooled. The
    /// decoder refuses a body past the limit (413).
    async fn read_chunked(
        &mut self,
        mut dec: ChunkedDecoder,
        keep: u64,
    ) -> Result<Body, BodyError> {
        let mut decoded = Vec::new();
        let mut spool: Option<Spool> = None;
        // The body's bytes as sent (sizes, extensions, trailers and all), for the metrics'
        // bytes received: a Content-Length body is counted with its head, at the end.
        let mut wire = 0u64;
        loop {
            let used = dec
                .decode(&self.rbuf, &mut decoded)
                .map_err(BodyError::Refused)?;
            self.rbuf.advance(used);
            wire += used as u64;
            if spool.is_some() || decoded.len() as u64 > keep {
                let file = match spool.as_mut() {
                    Some(file) => file,
                    None => {
                        self.shared.ctx.count(Counter::BodiesSpooled, 1);
                        spool.insert(Spool::new().map_err(BodyError::Store)?)
                    }
                };
                file.write(&decoded).map_err(BodyError::Store)?;
                decoded.clear();
            }
            if dec.is_done() {
                self.shared.ctx.count(Counter::BytesReceived, wire);
                self.shrink_read_buffer();
                return Ok(match spool {
                    Some(s) => Body::Source(Box::new(s.into_source())),
                    None if decoded.is_empty() => Body::Empty,
                    None => Body::Buffered(decoded.into()),
                });
            }
            self.rbuf.reserve(SPOOL_READ);
            self.read_body_bytes().await?;
        }
    }

    /// Gives back the memory a spooled body's reads grew the read buffer to, keeping what
    /// it holds (the next request, perhaps): a connection that uploaded once does not
    /// keep a large buffer while it idles.
    fn shrink_read_buffer(&mut self) {
        if self.rbuf.capacity() > 4 * READ_BUFFER {
            let mut small = BytesMut::with_capacity(READ_BUFFER.max(self.rbuf.len()));
            small.extend_from_slice(&self.rbuf);
            self.rbuf = small;
        }
    }

    /// Reads more of a body: the client may pause at most `body_timeout` between reads.
    async fn read_body_bytes(&mut self) -> Result<(), BodyError> {
        let deadline = Instant::now() + self.shared.ctx.settings.body_timeout;
        Ok(self.read_more(deadline, false).await?)
    }

    /// Reads more of a body straight into `buf`.
    async fn read_body_into(&mut self, buf: &mut BodyBuf) -> Result<(), BodyError> {
        if !self.flush_before_read().await {
            return Err(BodyError::Closed);
        }
        let deadline = Instant::now() + self.shared.ctx.settings.body_timeout;
        let transport = self
            .transport
            .as_ref()
            .expect("the transport is back between application calls");
        let n = read_by(
            &mut self.timer,
            deadline,
            transport.read_uninit(buf.unfilled()),
        )
        .await?;
        // SAFETY: the read initialised the first `n` bytes of `unfilled()`.
        unsafe { buf.filled(n) };
        Ok(())
    }
}
