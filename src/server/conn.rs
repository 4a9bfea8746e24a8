//! One client connection: read a request head, read or hand over its body, run the app,
//! write the response, and again while the connection is kept alive (RFC 9112 §9).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use pyo3::Python;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant as TokioInstant, Sleep};

use crate::http::{error_response, parse_head, BodyFraming, ChunkedDecoder, HttpError};
use crate::server::bodybuf::BodyBuf;
use crate::server::listener::Conn;
use crate::server::outbuf::OutBuf;
use crate::server::output::Output;
use crate::server::spool::Spool;
use crate::server::Shared;
use crate::wsgi::environ::Peer;
use crate::wsgi::handler::{resume, Body, Exchange, Step};
use crate::wsgi::input::{Framing, Stream};

/// How long an idle keep-alive connection may still bring a request once a graceful stop
/// began: enough for a request already on its way.
pub const STOP_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// Output held back for pipelined requests before it is written anyway.
const PIPELINE_FLUSH: usize = 64 * 1024;

/// Bytes read from the socket at a time while a large body is spooled.
const SPOOL_READ: usize = 64 * 1024;

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const SPOOL_FAILED: &[u8] =
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Why a request body could not be read.
enum BodyError {
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

/// How a read for more request bytes ended, when it did not bring any.
enum ReadEnd {
    /// The client closed or the socket failed.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// One client connection, from accept to close.
pub struct Connection {
    conn: Conn,
    shared: Rc<Shared>,
    peer: Arc<Peer>,
    /// Bytes received and not yet parsed.
    rbuf: BytesMut,
    /// Response bytes not yet written (pipelined responses wait here together).
    out: OutBuf,
    /// The deadline of the read in progress. One timer per connection, moved on by each
    /// read: moving a registered timer later costs one atomic, where a new timer per read
    /// took the timer driver's lock to register and again to cancel. Made by the first
    /// read (see `timer_at`).
    timer: Option<Pin<Box<Sleep>>>,
    /// This connection's slot in `Shared::idle`.
    slot: usize,
    /// Its place under `worker_connections` (none for `handle_request()`'s one connection),
    /// given back as it closes.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.idle.release(self.slot);
        self.shared.spare.give(
            std::mem::take(&mut self.rbuf),
            std::mem::take(&mut self.out),
        );
        self.shared.tracker.closed(self.shared.stopping.get());
    }
}

/// How many closed connections' buffers are kept for new ones.
const SPARE_BUFFERS: usize = 16;

/// The read buffer's size for a new connection (a request head fits, most bodies do not).
const READ_BUFFER: usize = 8 * 1024;

/// The buffers of closed connections, handed to new ones: a connection then allocates no
/// 8 KiB read buffer (a large allocation for glibc, which first consolidates its fast
/// bins) and no output queue.
#[derive(Default)]
pub struct Spare {
    buffers: RefCell<Vec<(BytesMut, OutBuf)>>,
}

impl Spare {
    fn take(&self) -> (BytesMut, OutBuf) {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| (BytesMut::with_capacity(READ_BUFFER), OutBuf::default()))
    }

    /// Keeps a closed connection's buffers, unless they grew large or are still shared.
    fn give(&self, mut rbuf: BytesMut, mut out: OutBuf) {
        let mut buffers = self.buffers.borrow_mut();
        if buffers.len() >= SPARE_BUFFERS {
            return;
        }
        rbuf.clear();
        if rbuf.capacity() > 4 * READ_BUFFER || !rbuf.try_reclaim(READ_BUFFER) {
            return;
        }
        out.clear();
        buffers.push((rbuf, out));
    }
}

/// Sends all of `out` on `conn`, waiting in the event loop while the socket is full; false
/// (and `out` emptied) if the client is gone or read nothing for `limit`. `last`: a
/// `shutdown(2)` follows (see `OutBuf::send_to`).
async fn send_all(conn: &Conn, out: &mut OutBuf, limit: std::time::Duration, last: bool) -> bool {
    let fd = conn.fd();
    // Most responses fit the socket's buffer: one write, and no timer to arm.
    match out.send_to(fd, last) {
        Ok(_) if out.is_empty() => return true,
        Ok(_) => {}
        Err(_) => {
            out.clear();
            return false;
        }
    }
    // A client that stops reading is dropped after `limit`, not waited on forever.
    let write = async {
        while !out.is_empty() {
            let step = conn.write_with(|| match out.send_to(fd, last) {
                Ok(0) => Err(std::io::ErrorKind::WouldBlock.into()),
                other => other,
            });
            if step.await.is_err() {
                return false;
            }
        }
        true
    };
    // Boxed: this wait is the rare case, and its timer and write future would otherwise
    // make every future that awaits `send_all` (each request's read) that much larger.
    let ok = matches!(Box::pin(tokio::time::timeout(limit, write)).await, Ok(true));
    out.clear();
    ok
}

/// The connection's timer, set to `deadline`; made here at the first read. tokio puts a
/// timer in its wheel when it is first polled or reset, so a first read that completes at
/// once (the request is usually there by the time the connection is accepted) never
/// registers one: a `Connection: close` request saves registering and removing it, ~300
/// instructions (callgrind).
fn timer_at(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) -> Pin<&mut Sleep> {
    let deadline = TokioInstant::from_std(deadline);
    match timer {
        Some(timer) => {
            timer.as_mut().reset(deadline);
            timer.as_mut()
        }
        None => timer
            .insert(Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut(),
    }
}

/// Runs `read` (a read of the connection's socket) until `deadline`, on the connection's
/// one timer: the bytes read, or why there were none.
async fn read_by(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    read: impl Future<Output = std::io::Result<usize>>,
) -> Result<usize, ReadEnd> {
    let timer = timer_at(timer, deadline);
    tokio::select! {
        biased;
        read = read => match read {
            Ok(0) | Err(_) => Err(ReadEnd::Closed),
            Ok(n) => Ok(n),
        },
        () = timer => Err(ReadEnd::TimedOut),
    }
}

impl From<ReadEnd> for BodyError {
    fn from(end: ReadEnd) -> BodyError {
        match end {
            ReadEnd::TimedOut => BodyError::TimedOut,
            ReadEnd::Closed => BodyError::Closed,
        }
    }
}

impl Connection {
    /// A connection just accepted, counted open until it is dropped.
    pub fn new(
        shared: Rc<Shared>,
        conn: Conn,
        peer: Peer,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Connection {
        shared.tracker.opened();
        let slot = shared.idle.slot();
        let (rbuf, out) = shared.spare.take();
        Connection {
            conn,
            shared,
            peer: Arc::new(peer),
            rbuf,
            out,
            timer: None,
            slot,
            _permit: permit,
        }
    }

    /// Serves the connection to its end: the future a connection's task runs. It owns the
    /// connection, so that it is no larger than the connection and `run`'s state
    /// (~1.8 KiB): a wrapper holding the accept's results beside them was twice that,
    /// copied whole into the task's allocation, new memory for every connection.
    pub async fn serve(mut self) {
        self.run().await;
    }

    async fn flush(&mut self) -> bool {
        send_all(
            &self.conn,
            &mut self.out,
            self.shared.ctx.settings.write_timeout,
            false,
        )
        .await
    }

    /// Sends the rest of the output and shuts our side: the client reads the end of the
    /// stream after the last response, which shares its final segment with the FIN.
    async fn finish(&mut self) {
        let limit = self.shared.ctx.settings.write_timeout;
        send_all(&self.conn, &mut self.out, limit, true).await;
        self.conn.shutdown();
    }

    /// Writes any pending output before the connection waits for the client; false if the
    /// client is gone.
    async fn flush_before_read(&mut self) -> bool {
        if !self.out.is_empty() && self.shared.tracker.open.get() > 1 {
            // Let the other connections with a request ready run first, so that the
            // responses of one loop turn go out back to back (see `yield_now`'s
            // deferral: it resumes us after the next poll of the I/O driver). The client
            // side then wakes once per turn, not once per response: under Flask on this
            // VM, 0.05 instead of 0.99 wake-ups (IPIs) of wrk's core per request, and
            // ~8k -> ~12.5k req/s. Alone, a connection has nobody to wait for.
            tokio::task::yield_now().await;
        }
        self.flush().await
    }

    /// Reads more bytes, first writing any pending output.
    ///
    /// An idle wait (for the next request, nothing of it read yet) has no timer of its
    /// own: its deadline goes into its slot in `Shared::idle`, and the loop's ticker ends
    /// it once past (`Idle::end_expired`, every `SIGNAL_POLL`, so up to 100 ms late).
    /// Resetting the connection's timer for each wait, and racing it against the read,
    /// cost ~280 instructions of a hello request (callgrind: 11.56k -> 11.28k). Other
    /// waits (the rest of a head or a body, whose ends answer 408) keep the timer.
    ///
    /// A graceful stop shortens an idle keep-alive wait to `STOP_LINGER` rather than
    /// cutting it: the client may be sending its next request right now, and closing
    /// under it would lose that request. Such a request is answered with
    /// `Connection: close`. (A wait already in progress when the stop comes is ended by
    /// the stop itself, see `Idle`.) Once stopping, an idle wait uses the timer too: the
    /// ticker ends early when the app raised KeyboardInterrupt.
    async fn read_more(&mut self, deadline: Instant, idle: bool) -> Result<(), ReadEnd> {
        if !self.flush_before_read().await {
            return Err(ReadEnd::Closed);
        }
        let stopping = self.shared.stopping.get();
        if idle && !stopping {
            let _waiting = self
                .shared
                .idle
                .waiting(self.slot, self.conn.fd(), deadline);
            return match self.conn.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => Err(ReadEnd::Closed),
                Ok(_) => Ok(()),
            };
        }
        let mut deadline = deadline;
        if idle {
            deadline = deadline.min(Instant::now() + STOP_LINGER);
        }
        let _waiting = idle.then(|| {
            self.shared
                .idle
                .waiting(self.slot, self.conn.fd(), deadline)
        });
        // `read_by` inline: handed to it, the read future is moved into its state, which
        // cost ~170 instructions (1 %) per keep-alive request (callgrind, 5 runs each).
        let timer = timer_at(&mut self.timer, deadline);
        let read = tokio::select! {
            biased;
            read = self.conn.read_buf(&mut self.rbuf) => read,
            () = timer => return Err(ReadEnd::TimedOut),
        };
        match read {
            Ok(0) | Err(_) => Err(ReadEnd::Closed),
            Ok(_) => Ok(()),
        }
    }

    async fn run(&mut self) {
        let shared = self.shared.clone();
        let settings = &shared.ctx.settings;
        let (keep_alive, header_timeout) = (settings.keep_alive, settings.header_timeout);
        let limits = &settings.limits;
        // The ends of a connection (reject, timed_out, close_with, linger) are awaited
        // boxed: this future is moved whole when its task starts and ends, and inline
        // they made it 1,360 bytes instead of 1,096.
        let mut repeat = false;
        loop {
            // The request head: the keep-alive timeout runs while nothing has arrived,
            // the header timeout from the first byte of the request on.
            let mut deadline = Instant::now() + keep_alive;
            let mut idle = true;
            let head = loop {
                match parse_head(&mut self.rbuf, limits) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(e) => return Box::pin(self.reject(e)).await,
                }
                if idle && !self.rbuf.is_empty() {
                    idle = false;
                    deadline = Instant::now() + header_timeout;
                }
                match self.read_more(deadline, idle).await {
                    Ok(()) => {}
                    Err(ReadEnd::TimedOut) if !idle => return Box::pin(self.timed_out()).await,
                    Err(_) => return,
                }
            };
            let started = Instant::now();

            // `--keep-alive 0` turns persistence off: say so in the response (RFC 9112 §9.6).
            let force_close =
                self.shared.one_request || keep_alive.is_zero() || self.shared.stopping.get();
            let body = match self.read_body(&head.framing, head.expect_continue).await {
                Ok(body) => body,
                Err(BodyError::Refused(e)) => return Box::pin(self.reject(e)).await,
                Err(BodyError::TimedOut) => return Box::pin(self.timed_out()).await,
                Err(BodyError::Closed) => return,
                Err(BodyError::Store(e)) => {
                    self.shared
                        .ctx
                        .error_log
                        .error(&format!("Cannot store a request body: {e}"));
                    return Box::pin(self.close_with(SPOOL_FAILED)).await;
                }
            };
            if matches!(body, Body::Stream { .. }) && !self.flush().await {
                return;
            }
            let ex = Exchange {
                head,
                body,
                out: Output::new(
                    self.conn.fd(),
                    std::mem::take(&mut self.out),
                    shared.ctx.settings.write_timeout,
                ),
                peer: self.peer.clone(),
                force_close,
                repeat,
                started,
            };
            repeat = true;
            // Inline, without an async call in between: the Exchange is then moved once
            // less (it is ~350 bytes).
            let mut step = if self.shared.inline() {
                self.shared.run_inline(ex)
            } else {
                // Boxed: a hand-off to a thread costs far more than an allocation, and
                // inline this future (it holds the Exchange) made every connection's
                // future larger.
                match Box::pin(self.shared.run_pooled(ex)).await {
                    Some(outcome) => Step::Done(outcome),
                    None => return,
                }
            };
            let outcome = loop {
                match step {
                    Step::Done(outcome) => break outcome,
                    // The response got ahead of a slow client: send what is queued from
                    // here, serving the other connections meanwhile, then let it go on.
                    Step::Wait(mut waiting) => {
                        let limit = self.shared.ctx.settings.write_timeout;
                        if !send_all(&self.conn, &mut waiting.out.buf, limit, false).await {
                            waiting.out.lost();
                        }
                        step = Python::attach(|py| resume(py, &self.shared.ctx, waiting));
                    }
                }
            };
            self.out = outcome.out.buf;
            if self.shared.ctx.count_request() && !self.shared.stopping.get() {
                self.shared.ctx.error_log.info(&format!(
                    "Served max_requests ({}): stopping to be replaced",
                    self.shared.ctx.settings.max_requests
                ));
                self.shared.stop_now();
            }
            if let Some(raw) = outcome.raw_back {
                self.rbuf = raw;
            }
            if outcome.out.broken {
                return;
            }
            if !outcome.keep_alive || force_close {
                self.finish().await;
                // With the request read whole and nothing after it, closing cannot reset
                // the response away: close at once. Otherwise drain first (see linger).
                if self.rbuf.is_empty() && !outcome.unread_body {
                    return;
                }
                return Box::pin(self.linger()).await;
            }
            if self.out.len() >= PIPELINE_FLUSH && !self.flush().await {
                return;
            }
        }
    }

    /// Reads the body the app will see, whole, before the app runs (so a slow client
    /// never holds a Python thread): in memory up to `body_buffer_size`, beyond that into
    /// an unnamed temporary file. Only a body behind `Expect: 100-continue` stays on the
    /// socket, for the app to pull when it reads (the 100 goes out then).
    async fn read_body(
        &mut self,
        framing: &BodyFraming,
        expect_continue: bool,
    ) -> Result<Body, BodyError> {
        let shared = self.shared.clone();
        let settings = &shared.ctx.settings;
        let max_body = settings.limits.max_body;
        let keep = settings.body_buffer_size as u64;
        let decoder = || {
            ChunkedDecoder::new(
                settings.limit_chunk_ext_size,
                settings.limit_trailer_size,
                max_body,
            )
        };
        match *framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Ok(Body::Empty),
            BodyFraming::Length(n) if expect_continue => {
                Ok(self.stream(Vec::new(), Framing::Length(n), true))
            }
            BodyFraming::Chunked if expect_continue => {
                Ok(self.stream(Vec::new(), Framing::Chunked(decoder()), true))
            }
            BodyFraming::Length(n) if n <= keep => {
                let n = n as usize;
                if !self.shared.inline() && self.rbuf.len() >= n {
                    return Ok(Body::Buffered(self.rbuf.split_to(n).freeze()));
                }
                let mut buf = if self.shared.inline() {
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
            BodyFraming::Chunked => Box::pin(self.read_chunked(decoder(), keep)).await,
        }
    }

    /// A Content-Length body larger than `body_buffer_size`, into a temporary file.
    async fn spool_body(&mut self, n: u64) -> Result<Body, BodyError> {
        let mut spool = Spool::new().map_err(BodyError::Store)?;
        loop {
            let take = (n - spool.len).min(self.rbuf.len() as u64) as usize;
            spool.write(&self.rbuf[..take]).map_err(BodyError::Store)?;
            self.rbuf.advance(take);
            if spool.len == n {
                return Ok(Body::Spooled {
                    file: spool.file,
                    len: n,
                });
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
        loop {
            let used = dec
                .decode(&self.rbuf, &mut decoded)
                .map_err(BodyError::Refused)?;
            self.rbuf.advance(used);
            if spool.is_some() || decoded.len() as u64 > keep {
                let file = match spool.as_mut() {
                    Some(file) => file,
                    None => spool.insert(Spool::new().map_err(BodyError::Store)?),
                };
                file.write(&decoded).map_err(BodyError::Store)?;
                decoded.clear();
            }
            if dec.is_done() {
                return Ok(match spool {
                    Some(s) => Body::Spooled {
                        file: s.file,
                        len: s.len,
                    },
                    None => Body::Buffered(decoded.into()),
                });
            }
            self.rbuf.reserve(SPOOL_READ);
            self.read_body_bytes().await?;
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
        let n = read_by(
            &mut self.timer,
            deadline,
            self.conn.read_uninit(buf.unfilled()),
        )
        .await?;
        // SAFETY: the read initialised the first `n` bytes of `unfilled()`.
        unsafe { buf.filled(n) };
        Ok(())
    }

    fn stream(&mut self, already: Vec<u8>, framing: Framing, send_continue: bool) -> Body {
        let shared = self.shared.clone();
        let settings = &shared.ctx.settings;
        let total = already.len() as u64;
        Body::Stream {
            already,
            stream: Box::new(Stream {
                fd: self.conn.fd(),
                raw: std::mem::take(&mut self.rbuf),
                framing,
                send_continue,
                total,
                max_body: settings.limits.max_body,
                timeout: settings.body_timeout,
                done: false,
                failed: false,
            }),
        }
    }

    /// RFC 9112 §2.2/§6: a request that cannot be framed gets its 4xx/5xx and the connection
    /// closes, since what follows it can no longer be told apart from a new request.
    async fn reject(&mut self, err: HttpError) {
        self.shared.ctx.error_log.info(&format!(
            "Invalid request from {}: {} {}",
            if self.peer.remote.host.is_empty() {
                "unix socket"
            } else {
                &self.peer.remote.host
            },
            err.status(),
            err.detail()
        ));
        self.out.write_with(|v| error_response(err, v));
        self.finish().await;
        self.linger().await;
    }

    /// RFC 9110 §15.5.9: the request did not arrive in time.
    async fn timed_out(&mut self) {
        self.close_with(REQUEST_TIMEOUT).await
    }

    /// Sends a complete canned response and closes.
    async fn close_with(&mut self, response: &[u8]) {
        self.out.extend(response);
        self.finish().await;
        self.linger().await;
    }

    /// After `finish`: closes so that the response is not lost to a reset (which a close
    /// with unread bytes would send): reads and drops what the client still sends, for a
    /// short bounded time.
    async fn linger(&mut self) {
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        let mut drained = 0usize;
        while drained < 1 << 20 {
            self.rbuf.clear();
            self.rbuf.reserve(16 * 1024);
            match read_by(
                &mut self.timer,
                deadline,
                self.conn.read_buf(&mut self.rbuf),
            )
            .await
            {
                Ok(n) => drained += n,
                Err(_) => return,
            }
        }
    }
}
