//! One client connection, from accept to close: read a request head, read its body whole,
//! hand the request to the application, write the response, and again while the
//! connection persists (RFC 9112 §9). The connection owns its transport and is the only
//! code that reads or writes it: the application's response reaches it through the sink
//! (`server::sink`), lent the transport only for an inline call on this same thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pyo3::Python;
use tokio::time::{Instant as TokioInstant, Sleep};

use crate::http::forwarded::{self, Forwarded};
use crate::http::proxy;
use crate::http::uwsgi::{self, Variable};
use crate::http::{parse_head, Canned, HttpError, RequestHead, Version};
use crate::metrics::Counter;
use crate::server::body::BodyError;
use crate::server::channel::Channel;
use crate::server::outbuf::OutBuf;
use crate::server::proxied;
use crate::server::sink::{Delivery, H1Sink};
use crate::server::spool;
use crate::server::transport::Transport;
use crate::server::{Admission, Shared};
use crate::static_files::Answer;
use crate::sys::Mono;
use crate::wsgi::bodybuf::Body;
use crate::wsgi::environ::Peer;
use crate::wsgi::handler::{resume, Exchange, Outcome, Step};
use crate::wsgi::sink::ResponseSink;

/// How long an idle keep-alive connection may still bring a request once a graceful stop
/// began: enough for a request already on its way.
pub(super) const STOP_LINGER: Duration = Duration::from_millis(500);

/// Output held back for pipelined requests before it is written anyway.
const PIPELINE_FLUSH: usize = 64 * 1024;

/// After an error response: how long, and how much, the connection reads and drops of
/// what the client still sends, so that the response is not lost to a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Whether the connection may carry another request after the one in hand (RFC 9112
/// §9.3). One value, fed by the request's head, the server's state and the response's
/// end, and read in one place: the connection's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persistence {
    KeepAlive,
    Close,
}

impl Persistence {
    /// Nothing more is read on this connection after the current exchange.
    pub(super) fn disable(&mut self) {
        *self = Persistence::Close;
    }

    pub(super) fn persists(self) -> bool {
        self == Persistence::KeepAlive
    }
}

/// How a read for more request bytes ended, when it did not bring any.
pub(super) enum ReadEnd {
    /// The client closed or the socket failed.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// One client connection.
pub(super) struct Connection<T: Transport> {
    pub(super) shared: Rc<Shared>,
    /// The byte stream; `None` only while lent to the sink for an inline app call.
    pub(super) transport: Option<T>,
    peer: Arc<Peer>,
    /// Bytes received and not yet parsed.
    pub(super) rbuf: BytesMut,
    /// The response sink, which holds the output queue (pipelined responses wait there
    /// together). Boxed: it travels to the app's thread and back as a `dyn ResponseSink`.
    pub(super) sink: Option<Box<H1Sink<T>>>,
    /// The deadline of the read in progress. One timer per connection, moved on by each
    /// read: moving a registered timer later is cheap, where a new timer per read took
    /// the timer driver's lock to register and again to cancel. Made by the first read
    /// (see `timer_at`).
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    /// This connection's slot in `Shared::idle`.
    slot: usize,
    /// The variables of the uwsgi packet this connection began with (`--protocol uwsgi`),
    /// for its request's environ.
    uwsgi_environ: Vec<Variable>,
    /// Its place in the worker, given back as it closes (after its buffers, below).
    _admission: Admission,
}

impl<T: Transport> Drop for Connection<T> {
    fn drop(&mut self) {
        self.shared.idle.release(self.slot);
        let out = self.sink.take().map(|mut s| std::mem::take(&mut s.out));
        self.shared
            .spare
            .give(std::mem::take(&mut self.rbuf), out.unwrap_or_default());
    }
}

/// How many closed connections' buffers are kept for new ones.
const SPARE_BUFFERS: usize = 16;

/// The read buffer's size for a new connection (a request head fits, most bodies do not).
pub(super) const READ_BUFFER: usize = 8 * 1024;

/// The buffers of closed connections, handed to new ones: a connection then allocates no
/// 8 KiB read buffer and no output queue, and frees none at its close.
#[derive(Default)]
pub(crate) struct Spare {
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

/// The connection's timer, set to `deadline`; made here at the first read. tokio puts a
/// timer in its wheel when it is first polled or reset, so a first read that completes at
/// once (the request is usually there by the time the connection is accepted) never
/// registers one.
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

/// Runs `read` (a read of the connection's transport) until `deadline`, on the
/// connection's one timer: the bytes read, or why there were none.
pub(super) async fn read_by(
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

/// Writes all of `out`, waiting in the event loop while the transport is full; false (and
/// `out` emptied) if the client is gone or took nothing for `limit`. `last`: a shutdown
/// follows.
async fn write_all<T: Transport>(
    transport: &T,
    out: &mut OutBuf,
    limit: Duration,
    last: bool,
) -> bool {
    // Most responses fit the socket's buffer: one write, and no timer to arm.
    match transport.try_write(out, last) {
        Ok(_) if transport.drained(out) => return true,
        Ok(_) => {}
        Err(_) => {
            out.clear();
            return false;
        }
    }
    // A client that stops reading is dropped after `limit` without progress.
    let write = async {
        while !transport.drained(out) {
            let step = tokio::time::timeout(limit, transport.write(out, last)).await;
            if !matches!(step, Ok(Ok(_))) {
                return false;
            }
        }
        true
    };
    // Boxed: this wait is the rare case, and its state would otherwise make every future
    // that awaits `write_all` (each request's read) that much larger.
    let ok = Box::pin(write).await;
    if !ok {
        out.clear();
    }
    ok
}

impl<T: Transport> Connection<T> {
    /// A connection just accepted, counted open until it is dropped.
    pub(super) fn new(
        shared: Rc<Shared>,
        transport: T,
        peer: Peer,
        admission: Admission,
    ) -> Connection<T> {
        let slot = shared.idle.slot();
        let (rbuf, out) = shared.spare.take();
        let delivery = if shared.inline() {
            Delivery::inline()
        } else {
            Delivery::Pooled(Arc::new(Channel::new(shared.budget.clone())))
        };
        let mut sink = Box::new(H1Sink::new(
            delivery,
            shared.ctx.settings.write_timeout,
            shared.budget.clone(),
        ));
        sink.out = out;
        Connection {
            shared,
            transport: Some(transport),
            peer: Arc::new(peer),
            rbuf,
            sink: Some(sink),
            timer: None,
            slot,
            uwsgi_environ: Vec::new(),
            _admission: admission,
        }
    }

    /// The connection with `bytes` already received from it (read before it was known
    /// to be HTTP/1.1).
    pub(super) fn with_received(mut self, bytes: &[u8]) -> Connection<T> {
        self.rbuf.extend_from_slice(bytes);
        self
    }

    /// Serves the connection to its end: the future a connection's task runs.
    pub(super) async fn serve(mut self) {
        self.run().await;
    }

    pub(super) fn transport(&self) -> &T {
        self.transport
            .as_ref()
            .expect("the transport is back between application calls")
    }

    fn out(&mut self) -> &mut OutBuf {
        &mut self
            .sink
            .as_mut()
            .expect("the sink is back between application calls")
            .out
    }

    /// Writes all pending output; false if the client is gone.
    pub(super) async fn flush(&mut self) -> bool {
        let limit = self.shared.ctx.settings.write_timeout;
        let (Some(transport), Some(sink)) = (self.transport.as_ref(), self.sink.as_mut()) else {
            return false;
        };
        write_all(transport, &mut sink.out, limit, false).await
    }

    /// Sends the rest of the output and shuts our side: the client reads the end of the
    /// stream after the last response, which shares its final segment with the FIN.
    async fn finish(&mut self) {
        let limit = self.shared.ctx.settings.write_timeout;
        let (Some(transport), Some(sink)) = (self.transport.as_ref(), self.sink.as_mut()) else {
            return;
        };
        write_all(transport, &mut sink.out, limit, true).await;
        transport.shutdown_write();
    }

    /// Writes any pending output before the connection waits for the client; false if the
    /// client is gone.
    pub(super) async fn flush_before_read(&mut self) -> bool {
        if !self.out().is_empty() && self.shared.tracker.open.get() > 1 {
            // Let the other connections with a request ready run first, so that the
            // responses of one loop turn go out back to back (see `yield_now`'s
            // deferral: it resumes us after the next poll of the I/O driver): the client
            // side then wakes once per turn, not once per response. Alone, a connection
            // has nobody to wait for.
            tokio::task::yield_now().await;
        }
        self.flush().await
    }

    /// Reads more bytes, first writing any pending output.
    ///
    /// An idle wait (for the next request, nothing of it read yet) has no timer of its
    /// own: its deadline goes into its slot in `Shared::idle`, and the loop's ticker ends
    /// it once past (`Idle::end_expired`, up to one tick late). A timer reset for each
    /// wait goes into tokio's timer wheel and out again, and racing it against the read
    /// polls both, on every keep-alive request; writing a slot costs neither, and a
    /// keep-alive deadline needs no better than a tick's precision. Other waits (the rest
    /// of a head or a body, whose ends answer 408) keep the timer.
    ///
    /// A graceful stop shortens an idle keep-alive wait to `STOP_LINGER` rather than
    /// cutting it: the client may be sending its next request right now, and closing
    /// under it would lose that request. Such a request is answered with
    /// `Connection: close`. (A wait already in progress when the stop comes is ended by
    /// the stop itself, see `Idle`.) Once stopping, an idle wait uses the timer too: the
    /// ticker ends early when the app raised KeyboardInterrupt.
    pub(super) async fn read_more(&mut self, deadline: Instant, idle: bool) -> Result<(), ReadEnd> {
        if !self.flush_before_read().await {
            return Err(ReadEnd::Closed);
        }
        let stopping = self.shared.stopping.get();
        let handle = self.transport().read_handle();
        let transport = self
            .transport
            .as_ref()
            .expect("the transport is back between application calls");
        if idle && !stopping {
            let _waiting = handle.map(|fd| self.shared.idle.waiting(self.slot, fd, deadline));
            return match transport.read(&mut self.rbuf).await {
                Ok(0) | Err(_) => Err(ReadEnd::Closed),
                Ok(_) => Ok(()),
            };
        }
        let mut deadline = deadline;
        if idle {
            deadline = deadline.min(Instant::now() + STOP_LINGER);
        }
        let _waiting = handle
            .filter(|_| idle)
            .map(|fd| self.shared.idle.waiting(self.slot, fd, deadline));
        let timer = timer_at(&mut self.timer, deadline);
        let read = tokio::select! {
            biased;
            read = transport.read(&mut self.rbuf) => read,
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
        // The ends of a connection (refuse, linger) are awaited boxed: this future is
        // moved whole when its task starts and ends, and inline they made it larger.
        if shared.ctx.settings.protocol == "uwsgi" && !Box::pin(self.read_uwsgi_packet()).await {
            return;
        }
        let mut repeat = false;
        loop {
            // The request head: the keep-alive timeout runs while nothing has arrived,
            // the header timeout from the first byte of the request on (each deadline is
            // taken when a read has to wait: a request already buffered needs none).
            let mut deadline = None;
            let mut idle = true;
            // Where the request's time starts (its access-log and metrics durations): the
            // read of its first byte or, for a request already buffered behind another
            // (pipelined), now, when the server turns to it, as nginx's $request_time.
            let mut first_byte = (!self.rbuf.is_empty()).then(Mono::now);
            let head = loop {
                // (Looked at before the parser, which skips the empty lines a v2 header
                // starts with.)
                if !repeat && self.unwanted_proxy_header() {
                    return;
                }
                match parse_head(&mut self.rbuf, limits) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(e) => return Box::pin(self.refuse(Canned::Refused(e))).await,
                }
                if idle && !self.rbuf.is_empty() {
                    idle = false;
                    deadline = Some(Instant::now() + header_timeout);
                }
                let until = *deadline.get_or_insert_with(|| Instant::now() + keep_alive);
                match self.read_more(until, idle).await {
                    Ok(()) => {}
                    Err(ReadEnd::TimedOut) if !idle => {
                        return Box::pin(self.refuse(Canned::RequestTimeout)).await
                    }
                    Err(_) => return,
                }
                first_byte = first_byte.or_else(|| Some(Mono::now()));
            };
            let started = first_byte.unwrap_or_else(Mono::now);
            let forwarded = match self.forwarded(&head).map(|f| self.with_uwsgi_environ(f)) {
                Ok(forwarded) => forwarded,
                Err(e) => {
                    self.log_refused_request(&head, Canned::Refused(e), started);
                    return Box::pin(self.refuse(Canned::Refused(e))).await;
                }
            };

            let mut persist = Persistence::KeepAlive;
            // RFC 9112 §9.3: the client's wish; `--keep-alive 0`, a stop, or
            // `handle_request()`: the server's (the response says so, RFC 9112 §9.6).
            if !head.keep_alive
                || shared.one_request
                || keep_alive.is_zero()
                || shared.stopping.get()
            {
                persist.disable();
            }
            let body = match self.read_body(&head).await {
                Ok(body) => body,
                Err(BodyError::Closed) => return,
                Err(err) => {
                    let canned = match err {
                        BodyError::Refused(e) => Canned::Refused(e),
                        BodyError::TimedOut => Canned::RequestTimeout,
                        BodyError::Store(e) => {
                            spool::log_not_stored(&shared.ctx.error_log, &e);
                            Canned::BodyNotStored
                        }
                        BodyError::Closed => unreachable!("matched above"),
                    };
                    self.log_refused_request(&head, canned, started);
                    return Box::pin(self.refuse(canned)).await;
                }
            };
            if repeat {
                shared.ctx.count(Counter::KeepAliveReuses, 1);
            }
            let keep = repeat && persist.persists();
            repeat = true;
            // A static file is answered here, without Python; most other responses are
            // done in one inline call: no future of their own.
            let (sink, by_app) = if let Some(answer) = shared.static_answer(&head) {
                let sink =
                    self.answer_static(&head, forwarded.as_deref(), answer, persist, started);
                (sink, false)
            } else {
                let sink = match self.dispatch(head, forwarded, body, persist, keep, started) {
                    Dispatched::Done(sink) => sink,
                    Dispatched::Paused(step) => Box::pin(self.drive_inline(step)).await,
                    Dispatched::Pooled(ex, chan) => {
                        let Some(sink) = Box::pin(self.drive_pooled(*ex, chan)).await else {
                            return;
                        };
                        sink
                    }
                };
                (sink, true)
            };
            let clean = sink.persists();
            self.sink = Some(sink);
            if !clean {
                persist.disable();
            }
            if by_app && shared.ctx.count_request() && !shared.stopping.get() {
                shared.ctx.error_log.info(&format!(
                    "Served max_requests ({}): stopping to be replaced",
                    settings.max_requests
                ));
                shared.retire();
            }
            if !persist.persists() {
                self.finish().await;
                // With the request read whole and nothing after it, closing cannot reset
                // the response away: close at once. Otherwise drain first (see linger).
                if self.rbuf.is_empty() {
                    return;
                }
                return Box::pin(self.linger()).await;
            }
            if self.out().len() >= PIPELINE_FLUSH && !self.flush().await {
                return;
            }
        }
    }

    /// Hands the request to the application: inline, run to its end or its first pause
    /// here; pooled, the exchange to send to a pool thread.
    fn dispatch(
        &mut self,
        head: RequestHead,
        forwarded: Option<Box<Forwarded>>,
        body: Body,
        persist: Persistence,
        keep: bool,
        started: Mono,
    ) -> Dispatched<T> {
        let mut sink = self.sink.take().expect("the sink is back between requests");
        sink.prepare(
            head.version == Version::Http11,
            head.method() == b"HEAD",
            persist.persists(),
        );
        let chan = match &sink.delivery {
            Delivery::Pooled(chan) => Some(chan.clone()),
            Delivery::Inline(_) => {
                sink.lend(self.transport.take().expect("the transport is here"));
                None
            }
        };
        let ex = Exchange {
            head,
            forwarded,
            body,
            sink,
            peer: self.peer.clone(),
            keep,
            started,
        };
        let Some(chan) = chan else {
            return match self.shared.run_inline(ex) {
                Step::Done(Outcome { sink }) => {
                    let mut sink = own::<T>(sink);
                    self.transport = sink.take_back();
                    Dispatched::Done(sink)
                }
                step => Dispatched::Paused(step),
            };
        };
        Dispatched::Pooled(Box::new(ex), chan)
    }

    /// Sends the engine's answer for a static file through the connection's sink, which
    /// frames it as it frames the application's responses.
    fn answer_static(
        &mut self,
        head: &RequestHead,
        forwarded: Option<&Forwarded>,
        answer: Answer,
        persist: Persistence,
        started: Mono,
    ) -> Box<H1Sink<T>> {
        let mut sink = self.sink.take().expect("the sink is back between requests");
        sink.prepare(
            head.version == Version::Http11,
            head.method() == b"HEAD",
            persist.persists(),
        );
        self.shared
            .finished_static(head, &self.peer, forwarded, &answer, started);
        answer.deliver(&mut *sink);
        sink
    }

    /// Sees an inline request to its end: each time its client falls behind, writes what
    /// is queued from the event loop (serving the other connections meanwhile), then lets
    /// the application go on.
    async fn drive_inline(&mut self, mut step: Step) -> Box<H1Sink<T>> {
        let limit = self.shared.ctx.settings.write_timeout;
        loop {
            match step {
                Step::Done(Outcome { sink }) => {
                    let mut sink = own::<T>(sink);
                    self.transport = sink.take_back();
                    return sink;
                }
                Step::Wait(mut waiting) => {
                    let mut sink = own::<T>(waiting.sink.take().expect("a pause lends the sink"));
                    let transport = sink.take_back().expect("the transport was lent");
                    if !write_all(&transport, &mut sink.out, limit, false).await {
                        sink.lost();
                    }
                    sink.settle();
                    sink.lend(transport);
                    waiting.sink = Some(sink);
                    step = Python::attach(|py| resume(py, &self.shared.ctx, waiting));
                }
            }
        }
    }

    /// Sees a pooled request to its end: writes what the application hands over through
    /// the channel as it comes, while the application goes on producing.
    async fn drive_pooled(&mut self, ex: Exchange, chan: Arc<Channel>) -> Option<Box<H1Sink<T>>> {
        let limit = self.shared.ctx.settings.write_timeout;
        let shared = self.shared.clone();
        // Whatever ends this wait (the outcome, or the connection dropped at the end of a
        // stop's grace period), the app's thread must not go on handing over bytes no one
        // will write: the guard tells it the client is gone unless the request finished.
        let mut guard = Handover(Some(chan.clone()));
        let mut job = std::pin::pin!(shared.run_pooled(ex));
        let transport = self.transport();
        let mut queue = OutBuf::default();
        let mut lost = false;
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut job => break outcome?,
                () = chan.ready() => {
                    chan.take(&mut queue);
                    let memory = queue.memory_len();
                    if !lost && !write_all(transport, &mut queue, limit, false).await {
                        lost = true;
                        chan.lost();
                    }
                    queue.clear();
                    chan.written(memory);
                }
            }
        };
        guard.0 = None;
        let mut sink = own::<T>(outcome.sink);
        // What was handed over and not yet taken goes ahead of what the sink still holds.
        chan.take(&mut queue);
        queue.append(&mut sink.out);
        sink.out = queue;
        if lost {
            sink.lost();
        }
        Some(sink)
    }

    /// Reads the uwsgi packet the connection begins with (within the header timeout) and
    /// puts the HTTP/1.0 request head it makes in its place in the read buffer, for the
    /// usual parser to check (the body, if any, follows it there). From a trusted peer
    /// (`--forwarded-allow-ips`), REMOTE_ADDR, REMOTE_PORT and HTTPS name the client and
    /// the scheme; the other variables go to the environ. False (closed without a
    /// response) for a malformed, oversized or late packet.
    async fn read_uwsgi_packet(&mut self) -> bool {
        let max = self.shared.ctx.settings.limits.max_header_block;
        let parsed = self
            .read_preamble("uwsgi packet", |buf| {
                uwsgi::parse(buf, max).map_err(|e| e.0)
            })
            .await;
        let Some((request, used)) = parsed else {
            return false;
        };
        let mut rbuf =
            BytesMut::with_capacity(request.head.len() + self.rbuf.len() - used + READ_BUFFER);
        rbuf.extend_from_slice(&request.head);
        rbuf.extend_from_slice(&self.rbuf[used..]);
        self.rbuf = rbuf;
        if self.peer.trusted {
            let trusted = match request.remote {
                Some((ip, _)) => self.shared.ctx.settings.trusted.contains(ip),
                None => true,
            };
            let peer = Arc::get_mut(&mut self.peer).expect("not shared yet");
            if let Some((ip, port)) = request.remote {
                let text = crate::wsgi::environ::ip_text(ip);
                let port = port.map(|p| p.to_string()).unwrap_or_default();
                peer.remote = crate::wsgi::environ::HostPort::new(text, port);
                peer.trusted = trusted;
            }
            peer.https |= request.https;
        }
        self.uwsgi_environ = request.environ;
        true
    }

    /// Reads until `parse` makes out what the connection begins with (a `what`) or says
    /// why it cannot, within the header timeout; None (logged) for a malformed, late or
    /// missing one.
    async fn read_preamble<P>(
        &mut self,
        what: &str,
        parse: impl Fn(&[u8]) -> Result<Option<P>, &'static str>,
    ) -> Option<P> {
        let deadline = Instant::now() + self.shared.ctx.settings.header_timeout;
        loop {
            match parse(&self.rbuf) {
                Ok(Some(parsed)) => return Some(parsed),
                Ok(None) => {}
                Err(why) => {
                    self.log_proxy(why);
                    return None;
                }
            }
            match self.read_more(deadline, false).await {
                Ok(()) => {}
                Err(ReadEnd::TimedOut) => {
                    self.log_proxy(&format!("no complete {what} within --header-timeout"));
                    return None;
                }
                Err(ReadEnd::Closed) => return None,
            }
        }
    }

    /// `forwarded`, with the uwsgi packet's variables (taken: one request per packet).
    fn with_uwsgi_environ(&mut self, forwarded: Option<Box<Forwarded>>) -> Option<Box<Forwarded>> {
        if self.uwsgi_environ.is_empty() {
            return forwarded;
        }
        let mut f = forwarded.unwrap_or_default();
        f.environ = std::mem::take(&mut self.uwsgi_environ);
        Some(f)
    }

    /// Whether the connection begins with a PROXY header from a peer not allowed to send
    /// one (`--proxy-allow-from`): closed without a response, as a bad header from an
    /// allowed peer is.
    fn unwanted_proxy_header(&self) -> bool {
        let unwanted = self.shared.ctx.settings.proxy_protocol
            && !self.peer.proxy_header
            && proxy::starts_like_header(&self.rbuf) == Some(true);
        if unwanted {
            self.log_proxy("PROXY header from a peer not in --proxy-allow-from");
        }
        unwanted
    }

    fn log_proxy(&self, why: &str) {
        proxied::log_closed(&self.shared, &self.peer, why);
    }

    /// What the peer, if it is a trusted proxy, says of the request's client, scheme, host
    /// and prefix; a 400 for values it cannot stand behind (see `http::forwarded`).
    fn forwarded(&self, head: &RequestHead) -> Result<Option<Box<Forwarded>>, HttpError> {
        if !self.peer.trusted {
            return Ok(None);
        }
        let settings = &self.shared.ctx.settings;
        Ok(
            forwarded::resolve(head.headers(), &settings.forwarding, &settings.trusted)?
                .map(Box::new),
        )
    }

    /// Answers with a canned response and closes (RFC 9112 §2.2, §6: once a request cannot
    /// be framed, what follows it can no longer be told apart from a new request).
    async fn refuse(&mut self, canned: Canned) {
        self.shared.ctx.refused(canned.status());
        if let Canned::Refused(err) = canned {
            self.log_refusal(err);
        }
        self.out().write_with(|v| canned.write(false, v));
        self.finish().await;
        self.linger().await;
    }

    /// gunicorn's line for a request it refuses, at its level (a warning).
    fn log_refusal(&self, err: HttpError) {
        self.shared.ctx.error_log.warning(&format!(
            "Invalid request from ip={}: {} {}",
            self.peer.shown(),
            err.status(),
            err.detail()
        ));
    }

    /// The access log line of a request refused once its head was read (its body too
    /// large, malformed or too slow, its forwarding headers contradictory), as gunicorn
    /// writes one for the requests it refuses after reading their request line.
    fn log_refused_request(&self, head: &RequestHead, canned: Canned, started: Mono) {
        let Some(log) = &self.shared.ctx.access_log else {
            return;
        };
        let mut response = Vec::with_capacity(256);
        canned.write(head.method() == b"HEAD", &mut response);
        let mut body = Vec::new();
        canned.write_body(&mut body);
        log.log(&crate::access_log::AccessRecord {
            remote_addr: &self.peer.remote.host,
            head,
            status: canned.status(),
            body_bytes: body.len() as u64,
            response_head: &response,
            elapsed: started.elapsed(),
            environ: None,
        });
    }

    /// After `finish`: closes so that the response is not lost to a reset (which a close
    /// with unread bytes would send): reads and drops what the client still sends, for a
    /// short bounded time.
    async fn linger(&mut self) {
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0usize;
        let Some(transport) = self.transport.as_ref() else {
            return;
        };
        while drained < LINGER_BYTES {
            self.rbuf.clear();
            self.rbuf.reserve(16 * 1024);
            match read_by(&mut self.timer, deadline, transport.read(&mut self.rbuf)).await {
                Ok(n) => drained += n,
                Err(_) => return,
            }
        }
    }
}

/// Where a request stands once handed to the application.
enum Dispatched<T: Transport> {
    /// Its response is done (inline): the sink is back.
    Done(Box<H1Sink<T>>),
    /// Inline, paused for its client.
    Paused(Step),
    /// For a pool thread, with the channel its output comes back through.
    /// (Boxed: the exchange is large, and this value is returned on every request.)
    Pooled(Box<Exchange>, Arc<Channel>),
}

/// A pooled request's channel while the connection waits for the request's end: if the
/// wait is dropped first, the app's thread learns that its client is gone.
struct Handover(Option<Arc<Channel>>);

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(chan) = self.0.take() {
            chan.lost();
        }
    }
}

/// The connection's own sink, back from the WSGI layer.
fn own<T: Transport>(sink: Box<dyn ResponseSink>) -> Box<H1Sink<T>> {
    sink.into_any()
        .downcast()
        .unwrap_or_else(|_| unreachable!("a connection gets back the sink it lent"))
}
