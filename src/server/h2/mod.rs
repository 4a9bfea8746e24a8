//! HTTP/2 (RFC 9113) with the `h2` crate: one task drives a connection (frames, flow
//! control, HPACK), and each stream is served by a task of its own as one WSGI call: its
//! body read whole first (within the HTTP/1.1 limits), its response sent as the peer's
//! flow-control window allows. Streams of one connection run concurrently on the app
//! threads; with one thread, one at a time on the event loop as HTTP/1.1 requests do.

pub(super) mod io;
mod sink;

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use pyo3::Python;

use crate::http::forwarded;
use crate::http::{Canned, HttpError, RequestHead};
use crate::metrics::Counter;
use crate::server::channel::Channel;
use crate::server::h2::io::{H2Io, NonBlocking};
use crate::server::h2::sink::{canned, End, H2Sink, Told};
use crate::server::outbuf::OutBuf;
use crate::server::spool::{self, Spool};
use crate::server::{Admission, Shared};
use crate::sys::Mono;
use crate::wsgi::bodybuf::Body;
use crate::wsgi::environ::Peer;
use crate::wsgi::handler::{resume, Exchange, Outcome, Step};
use crate::wsgi::sink::ResponseSink;

/// The most body bytes handed to `h2` in one DATA frame's worth of sending: the stream's
/// window permitting, a few frames at a time.
const SEND_CHUNK: usize = 64 * 1024;

/// The bytes RFC 9113 §3.4 has a client open a connection with, which an HTTP/1.1 reader
/// takes for a request line with the method `PRI`.
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves an HTTP/2 connection to its end. `pre`: bytes already read from it.
pub(super) async fn serve<T: NonBlocking + 'static>(
    shared: Rc<Shared>,
    stream: T,
    pre: Bytes,
    peer: Peer,
    _admission: Admission,
) {
    let settings = &shared.ctx.settings;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .initial_window_size(settings.http2_initial_window_size)
        .max_frame_size(settings.http2_max_frame_size)
        .max_header_list_size(settings.http2_max_header_list_size)
        // Response bytes h2 queues per stream beyond the window: the task sends only
        // what the window allows, so this bounds only frames of our own.
        .max_send_buffer_size(SEND_CHUNK)
        // CVE-2023-44487 (rapid reset): streams a client opens and resets before they
        // are served count against this, and past it the connection ends.
        .max_pending_accept_reset_streams(settings.http2_max_concurrent_streams as usize)
        .max_local_error_reset_streams(Some(1024));
    let peer = Arc::new(peer);
    // A client that never completes its preface and SETTINGS gets the header timeout.
    let handshake = builder.handshake::<_, Bytes>(H2Io::new(stream, pre));
    let Ok(Ok(mut conn)) = tokio::time::timeout(settings.header_timeout, handshake).await else {
        return;
    };
    let mut stopped = shared.stopper.subscribe();
    let active = Rc::new(std::cell::Cell::new(0usize));
    // Told by the stream that leaves the connection without streams, so that the idle
    // timer below starts then, not at the next frame.
    let emptied = Rc::new(tokio::sync::Notify::new());
    let mut closing = false;
    // A connection without streams is closed (GOAWAY) after the keep-alive timeout; before
    // its first request, after the header timeout, as an HTTP/1.1 one is.
    let mut idle_limit = settings.header_timeout;
    loop {
        let idle = active.get() == 0 && !closing;
        let next = tokio::select! {
            next = conn.accept() => next,
            _ = stopped.wait_for(|s| *s), if !closing => {
                // A graceful stop: GOAWAY, and the streams already open finish.
                conn.graceful_shutdown();
                closing = true;
                continue;
            }
            () = tokio::time::sleep(idle_limit), if idle => {
                conn.graceful_shutdown();
                closing = true;
                continue;
            }
            () = emptied.notified(), if !idle => continue,
        };
        match next {
            Some(Ok((request, respond))) => {
                if !settings.keep_alive.is_zero() {
                    idle_limit = settings.keep_alive;
                }
                let task = serve_stream(shared.clone(), peer.clone(), request, respond);
                let (active, emptied) = (active.clone(), emptied.clone());
                active.set(active.get() + 1);
                tokio::task::spawn_local(Box::pin(async move {
                    task.await;
                    active.set(active.get() - 1);
                    if active.get() == 0 {
                        emptied.notify_one();
                    }
                }));
            }
            Some(Err(e)) => {
                shared
                    .ctx
                    .error_log
                    .debug(&format!("HTTP/2 connection error: {e}"));
                break;
            }
            None => break,
        }
    }
}

/// Why a stream's request is answered without the application.
enum Refusal {
    /// With this answer (the one HTTP/1.1 gives).
    Answer(Canned),
    /// The client reset the stream or the connection ended.
    Gone,
}

impl From<HttpError> for Refusal {
    fn from(e: HttpError) -> Refusal {
        Refusal::Answer(Canned::Refused(e))
    }
}

async fn serve_stream(
    shared: Rc<Shared>,
    peer: Arc<Peer>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let started = Mono::now();
    let (parts, mut recv) = request.into_parts();
    // RFC 9110 §10.1.1: a client that expects 100-continue waits for it before its body;
    // the body is read at once (as over HTTP/1.1), so it gets it now.
    let expects = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = declared.is_some_and(|n| n > shared.ctx.settings.limits.max_body);
    if expects && !too_large && !recv.is_end_stream() {
        let mut proceed = http::Response::new(());
        *proceed.status_mut() = http::StatusCode::CONTINUE;
        let _ = respond.send_informational(proceed);
    }
    let prepared = async {
        let settings = &shared.ctx.settings;
        if too_large {
            return Err(Refusal::from(HttpError::PayloadTooLarge));
        }
        let (body, length) = read_body(&shared, &mut recv).await?;
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let fields = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
        let length = (length > 0).then_some(length);
        let head = RequestHead::from_h2(
            parts.method.as_str().as_bytes(),
            target.as_bytes(),
            authority,
            fields,
            length,
            &settings.limits,
        )?;
        // What a trusted proxy says of the client, as over HTTP/1.1 (`http::forwarded`).
        let forwarded = if peer.trusted {
            forwarded::resolve(head.headers(), &settings.forwarding, &settings.trusted)?
                .map(Box::new)
        } else {
            None
        };
        Ok((head, forwarded, body))
    };
    let (head, forwarded, body) = match prepared.await {
        Ok(prepared) => prepared,
        Err(Refusal::Answer(answer)) => {
            shared.ctx.refused(answer.status());
            let (resp, body) = canned(answer);
            if let Ok(mut send) = respond.send_response(resp, false) {
                let _ = send.send_data(body.into(), true);
            }
            return;
        }
        Err(Refusal::Gone) => return,
    };
    drop(recv);
    let mut out = Outgoing {
        respond,
        send: None,
        limit: shared.ctx.settings.write_timeout,
        failed: false,
    };
    // A static file: answered here, without Python.
    if let Some(answer) = shared.static_answer(&head) {
        shared.finished_static(&head, &peer, forwarded.as_deref(), &answer, started);
        let mut sink = Box::new(H2Sink::new(None));
        answer.deliver(&mut *sink);
        out.finish(sink).await;
        return;
    }

    let inline = shared.inline();
    let channel = (!inline).then(|| Arc::new(Channel::new(shared.budget.clone())));
    let sink = Box::new(H2Sink::new(channel.clone()));
    let told = sink.told.clone();
    let ex = Exchange {
        head,
        forwarded,
        body,
        sink,
        peer,
        keep: true,
        started,
    };
    if let Some(chan) = channel {
        drive_pooled(&shared, ex, chan, &told, &mut out).await;
    } else {
        let mut step = shared.run_inline(ex);
        loop {
            match step {
                Step::Done(Outcome { sink }) => {
                    out.finish(own(sink)).await;
                    break;
                }
                Step::Wait(mut waiting) => {
                    let mut sink = own(waiting.sink.take().expect("a pause lends the sink"));
                    if !out.deliver(&mut sink).await {
                        sink.lost();
                    }
                    // The application goes on on this thread, and may hold it: the block
                    // is written first (PEP 3333: transmitted before the next is asked for).
                    let_the_connection_write().await;
                    waiting.sink = Some(sink);
                    step = Python::attach(|py| resume(py, &shared.ctx, waiting));
                }
            }
        }
    }
    if shared.ctx.count_request() && !shared.stopping.get() {
        shared.ctx.error_log.info(&format!(
            "Served max_requests ({}): stopping to be replaced",
            shared.ctx.settings.max_requests
        ));
        shared.retire();
    }
}

/// Sees a pooled stream's response out while the application produces it.
async fn drive_pooled(
    shared: &Shared,
    ex: Exchange,
    chan: Arc<Channel>,
    told: &Mutex<Told>,
    out: &mut Outgoing,
) {
    let mut job = std::pin::pin!(shared.run_pooled(ex));
    let mut queue = OutBuf::default();
    let outcome = loop {
        tokio::select! {
            biased;
            outcome = &mut job => break outcome,
            () = chan.ready() => {
                chan.take(&mut queue);
                let memory = queue.memory_len();
                // The head comes first (the sink told it before these bytes).
                if !out.failed && !out.send_body(&mut queue, false, Some(told)).await {
                    chan.lost();
                }
                queue.clear();
                chan.written(memory);
            }
        }
    };
    let Some(Outcome { sink }) = outcome else {
        out.reset();
        return;
    };
    let mut sink = own(sink);
    chan.take(&mut queue);
    queue.append(&mut sink.out);
    sink.out = queue;
    out.finish(sink).await;
}

/// The sending side of a stream.
struct Outgoing {
    respond: SendResponse<Bytes>,
    /// The body's stream, once the head is sent.
    send: Option<SendStream<Bytes>>,
    limit: Duration,
    /// The stream was reset or the client stopped reading: nothing more is sent.
    failed: bool,
}

impl Outgoing {
    /// Sends the head if the sink has one for us, then what its queue holds: false if the
    /// client is gone.
    async fn deliver(&mut self, sink: &mut H2Sink) -> bool {
        let told = sink.told.clone();
        self.send_body(&mut sink.out, false, Some(&told)).await
    }

    /// The end of a response: head, the rest of the body, the stream's end.
    async fn finish(&mut self, mut sink: Box<H2Sink>) {
        let told = sink.told.clone();
        let end = told.lock().map(|t| t.end).unwrap_or(None);
        match end {
            Some(End::Clean) => {
                self.send_body(&mut sink.out, true, Some(&told)).await;
            }
            Some(End::Abort) | None => {
                self.send_body(&mut sink.out, false, Some(&told)).await;
                // A reset drops what `h2` still holds of the stream: the blocks handed to
                // it are written first (PEP 3333: a yielded block is transmitted).
                let_the_connection_write().await;
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        match &mut self.send {
            Some(send) => send.send_reset(Reason::INTERNAL_ERROR),
            None => self.respond.send_reset(Reason::INTERNAL_ERROR),
        }
        self.failed = true;
    }

    /// Sends the head if there is one to send, then `queue`, as the stream's window allows
    /// (waiting at most the write timeout for it to open); `end`: the body ends with it.
    async fn send_body(
        &mut self,
        queue: &mut OutBuf,
        end: bool,
        told: Option<&Mutex<Told>>,
    ) -> bool {
        if self.failed {
            queue.clear();
            return false;
        }
        if self.send.is_none() {
            let head = told.and_then(|t| {
                let mut t = t.lock().ok()?;
                Some((t.head.take()?, t.empty))
            });
            let Some((head, empty)) = head else {
                // No head yet (a pooled application woken us for nothing to send).
                return true;
            };
            let no_body = empty || (end && queue.is_empty());
            match self.respond.send_response(head, no_body) {
                Ok(send) if !no_body => self.send = Some(send),
                Ok(_) => return true,
                Err(_) => {
                    self.failed = true;
                    return false;
                }
            }
        }
        let Some(send) = self.send.as_mut() else {
            return true;
        };
        let ok = send_data(send, queue, end, self.limit).await;
        if !ok {
            send.send_reset(Reason::CANCEL);
            self.failed = true;
            queue.clear();
        }
        ok
    }
}

/// Lets the connection's task run once, so that it writes the frames the streams handed to
/// `h2`: `h2` writes only when that task polls the connection (handing them over woke it).
/// What the socket cannot take at once stays queued in `h2`.
async fn let_the_connection_write() {
    tokio::task::yield_now().await;
}

/// Sends `queue` on `send` as its window allows; `end` marks the last frame END_STREAM.
async fn send_data(
    send: &mut SendStream<Bytes>,
    queue: &mut OutBuf,
    end: bool,
    limit: Duration,
) -> bool {
    while !queue.is_empty() {
        send.reserve_capacity(queue.len().min(SEND_CHUNK));
        // `poll_capacity` wakes only when the capacity grows: capacity the stream already
        // holds (left from a grant larger than the block it was spent on) is read here, or
        // a stream with it would wait for a growth that never comes.
        let mut n = send.capacity();
        if n == 0 {
            let granted =
                tokio::time::timeout(limit, std::future::poll_fn(|cx| send.poll_capacity(cx)));
            n = match granted.await {
                Ok(Some(Ok(n))) => n,
                _ => return false,
            };
        }
        if n == 0 {
            continue;
        }
        let Ok(chunk) = take_front(queue, n) else {
            return false;
        };
        let last = end && queue.is_empty();
        if send.send_data(chunk, last).is_err() {
            return false;
        }
    }
    if end && send.send_data(Bytes::new(), true).is_err() {
        // Sent with the last chunk, or nothing was queued: the empty frame ends it.
    }
    true
}

/// Up to `n` bytes from the front of the queue, as one buffer: memory copied, a file
/// range read.
fn take_front(queue: &mut OutBuf, n: usize) -> std::io::Result<Bytes> {
    let mut chunk = BytesMut::with_capacity(n.min(queue.len()));
    if let Some((file, offset, len)) = queue.front_file() {
        let want = n.min(len);
        chunk.resize(want, 0);
        let read = crate::sys::pread(file, &mut chunk, offset)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        chunk.truncate(read);
    } else {
        for slice in queue.slices() {
            let room = n - chunk.len();
            if room == 0 {
                break;
            }
            chunk.extend_from_slice(&slice[..slice.len().min(room)]);
        }
    }
    queue.advance(chunk.len());
    Ok(chunk.freeze())
}

/// Reads a stream's body whole: in memory up to `body_buffer_size`, else spooled; 413
/// past `max_request_body_size`, 408 when the client pauses past `body_timeout`.
async fn read_body(shared: &Shared, recv: &mut RecvStream) -> Result<(Body, u64), Refusal> {
    let settings = &shared.ctx.settings;
    if recv.is_end_stream() {
        return Ok((Body::Empty, 0));
    }
    let keep = settings.body_buffer_size;
    let mut memory = BytesMut::new();
    let mut spool: Option<Spool> = None;
    let mut total: u64 = 0;
    let not_stored = |e: std::io::Error| {
        spool::log_not_stored(&shared.ctx.error_log, &e);
        Refusal::Answer(Canned::BodyNotStored)
    };
    loop {
        let next = tokio::time::timeout(settings.body_timeout, recv.data()).await;
        let data = match next {
            Err(_) => return Err(Refusal::Answer(Canned::RequestTimeout)),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Refusal::Gone),
            Ok(Some(Ok(data))) => data,
        };
        total += data.len() as u64;
        let _ = recv.flow_control().release_capacity(data.len());
        if total > settings.limits.max_body {
            return Err(Refusal::from(HttpError::PayloadTooLarge));
        }
        if spool.is_none() && memory.len() + data.len() > keep {
            let mut file = Spool::new().map_err(not_stored)?;
            shared.ctx.count(Counter::BodiesSpooled, 1);
            file.write(&memory).map_err(not_stored)?;
            memory = BytesMut::new();
            spool = Some(file);
        }
        match spool.as_mut() {
            Some(file) => file.write(&data).map_err(not_stored)?,
            None => memory.extend_from_slice(&data),
        }
    }
    let body = match spool {
        Some(file) => Body::Source(Box::new(file.into_source())),
        None if memory.is_empty() => Body::Empty,
        None => Body::Buffered(memory.freeze()),
    };
    Ok((body, total))
}

/// The stream's own sink, back from the WSGI layer.
fn own(sink: Box<dyn ResponseSink>) -> Box<H2Sink> {
    sink.into_any()
        .downcast()
        .unwrap_or_else(|_| unreachable!("a stream gets back the sink it lent"))
}
