//! Runs one request through the application: builds the environ, calls the app, sends what
//! it returns, and calls the iterable's `close()` on every path (PEP 3333).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList, PyTuple};

use crate::access_log::AccessRecord;
use crate::http::{RequestHead, Version};
use crate::server::gather::{FAST, GATHER};
use crate::server::output::Output;
use crate::wsgi::environ::Peer;
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::input::{Input, Stream};
use crate::wsgi::response::{
    push, push_now, type_name, RequestFacts, Responder, Response, StartResponse,
};
use crate::wsgi::Context;

/// The request body as the connection hands it over.
pub enum Body {
    Empty,
    /// Read whole before the app runs.
    Buffered(Bytes),
    /// Read whole, before the app runs, into the `bytes` object `read()` will return.
    Object(Py<PyBytes>),
    /// Read whole into an unnamed temporary file of `len` bytes (large bodies).
    Spooled {
        file: std::fs::File,
        len: u64,
    },
    /// `already` decoded; the rest still on the socket (behind `Expect: 100-continue`).
    Stream {
        already: Vec<u8>,
        /// Boxed: rare, and it would make every request's `Body` (moved a few times
        /// on the way to the app) four times larger.
        stream: Box<Stream>,
    },
}

/// One request, handed from the connection to the thread that runs the app.
pub struct Exchange {
    pub head: RequestHead,
    pub body: Body,
    pub out: Output,
    pub peer: Arc<Peer>,
    /// The connection closes after this request (shutting down, or one-request mode).
    pub force_close: bool,
    /// The connection carried a request before this one.
    pub repeat: bool,
    pub started: Instant,
}

/// What the connection gets back.
pub struct Outcome {
    pub out: Output,
    pub keep_alive: bool,
    /// The read buffer a streamed body took with it: it may hold the next request.
    pub raw_back: Option<BytesMut>,
    /// Part of the request body was never read (the client may still be sending it).
    pub unread_body: bool,
}

/// Why sending the body stopped early.
enum Failure {
    /// The app (or its iterable) raised.
    App(PyErr),
    /// The client went away or stopped reading.
    Client,
    /// The app yielded fewer bytes than its Content-Length; this many are missing.
    Short(u64),
}

/// How the handling of a request stands when `handle_inline` or `resume` returns.
pub enum Step {
    Done(Outcome),
    /// The app's iterable is part-way and more than `OUTPUT_HIGH_WATER` waits for a slow
    /// client: the connection sends `Waiting::out` from the event loop, then calls `resume`.
    /// (Boxed: rare, and `Step` is moved on every request's way back.)
    Wait(Box<Waiting>),
}

/// A request whose response iteration is paused until its client has read what is queued.
pub struct Waiting {
    pub out: Output,
    /// `None` once resumed (or closed on drop).
    req: Option<Live>,
}

/// The live parts of a request between the app's call and the end of its response.
struct Live {
    sr: Py<StartResponse>,
    input: Py<Input>,
    iterable: Py<PyAny>,
    /// The iteration in progress; `None` before it began.
    iter: Option<Py<PyIterator>>,
    head: RequestHead,
    peer: Arc<Peer>,
    started: Instant,
}

impl Drop for Waiting {
    /// A paused request dropped without being resumed (its connection was cut at the end
    /// of a stop's grace period): PEP 3333 still wants the iterable's `close()`. The
    /// response goes too: it may hold the `write` that holds its `StartResponse`.
    fn drop(&mut self) {
        if let Some(req) = self.req.take() {
            Python::attach(|py| {
                let _ = close_iterable(req.iterable.bind(py));
                req.sr.bind(py).borrow_mut().resp = None;
            });
        }
    }
}

/// Runs one request to its end on app thread `thread` of the pool: waits for a slow client
/// on this thread (the GIL released), never pausing.
pub fn handle(py: Python<'_>, ctx: &Context, ex: Exchange, thread: usize) -> Outcome {
    match busy(ctx, thread, || run(py, ctx, ex, false)) {
        Step::Done(outcome) => outcome,
        Step::Wait(_) => unreachable!("a request run without pausing paused"),
    }
}

/// Runs one request on the event loop's own thread (one app thread, no pool): a response
/// iteration that gets ahead of a slow client pauses (`Step::Wait`) instead of blocking
/// the loop, so the other connections keep being served.
pub fn handle_inline(py: Python<'_>, ctx: &Context, ex: Exchange) -> Step {
    busy(ctx, 0, || run(py, ctx, ex, true))
}

/// Continues a paused request once its queued output was sent (or the client was lost:
/// `out.broken`).
pub fn resume(py: Python<'_>, ctx: &Context, mut waiting: Box<Waiting>) -> Step {
    let req = waiting.req.take().expect("a request is resumed once");
    let out = std::mem::take(&mut waiting.out);
    with_resp(req.sr.bind(py), |r| r.out = out);
    busy(ctx, 0, || body(py, ctx, req, true))
}

/// Runs `f` with app thread `thread` marked busy on the scoreboard (what `--timeout`
/// watches): only while the app's code may run, not while a paused request waits.
fn busy<T>(ctx: &Context, thread: usize, f: impl FnOnce() -> T) -> T {
    ctx.set_busy(thread, true);
    let result = f();
    ctx.set_busy(thread, false);
    result
}

fn run(py: Python<'_>, ctx: &Context, ex: Exchange, may_pause: bool) -> Step {
    let Exchange {
        head,
        body: request_body,
        out,
        peer,
        force_close,
        repeat,
        started,
    } = ex;
    // A connection that carried a request before and may carry more keeps what its
    // requests can reuse (see `Peer`).
    let keep = repeat && head.keep_alive && !force_close;
    let facts = RequestFacts {
        head_request: head.method() == b"HEAD",
        http11: head.version == Version::Http11,
        keep_alive: head.keep_alive,
    };
    let input = match request_body {
        Body::Empty => Ok(ctx.environ.empty_input.bind(py).clone()),
        Body::Buffered(b) => Bound::new(py, Input::buffered(b)),
        Body::Object(obj) => Bound::new(py, Input::object(py, obj)),
        Body::Spooled { file, len } => Bound::new(py, Input::spooled(file, len)),
        Body::Stream { already, stream } => Bound::new(py, Input::streamed(already, stream)),
    };
    let resp = Response::new(out, facts, force_close);
    let responder = StartResponse::for_request(py, &peer.start_response, resp, keep);
    let (input, Responder { sr, start }) = match (input, responder) {
        (Ok(i), Ok(s)) => (i, s),
        (Err(e), _) | (_, Err(e)) => panic!("cannot allocate request objects: {e}"),
    };

    let result = ctx
        .environ
        .build(py, &head, &peer, &input, keep)
        .and_then(|environ| ctx.app.bind(py).call1((environ, start)));
    let iterable = match result {
        Ok(iterable) => iterable,
        Err(err) => {
            fail(py, ctx, &sr, &head, Failure::App(err));
            return Step::Done(finalize(ctx, &sr, &input, &head, &peer, started));
        }
    };
    let req = Live {
        sr: sr.unbind(),
        input: input.unbind(),
        iterable: iterable.unbind(),
        iter: None,
        head,
        peer,
        started,
    };
    body(py, ctx, req, may_pause)
}

/// Sends (more of) the response body; at its end, or on failure, closes the iterable and
/// ends the request.
fn body(py: Python<'_>, ctx: &Context, mut req: Live, may_pause: bool) -> Step {
    let sr = req.sr.bind(py).clone();
    let iterable = req.iterable.bind(py).clone();
    let sent = match req.iter.take() {
        None => send_body(py, &sr, &iterable, may_pause),
        Some(iter) => send_iter(py, &sr, &iterable, iter.bind(py).clone(), may_pause),
    };
    match sent {
        Ok(Sent::All) => {}
        Ok(Sent::Paused(iter)) => {
            req.iter = Some(iter);
            let out = with_resp(&sr, |r| std::mem::take(&mut r.out));
            return Step::Wait(Box::new(Waiting {
                out,
                req: Some(req),
            }));
        }
        Err(f) => fail(py, ctx, &sr, &req.head, f),
    }
    // PEP 3333: close() is called whether the iteration ended, failed or was cut.
    if let Err(err) = close_iterable(&iterable) {
        log_exception(
            py,
            ctx,
            &req.head,
            "Error closing the response iterable",
            &err,
        );
    }
    let input = req.input.bind(py).clone();
    Step::Done(finalize(
        ctx,
        &sr,
        &input,
        &req.head,
        &req.peer,
        req.started,
    ))
}

/// The request is over: the connection's outcome, and the access log line.
fn finalize(
    ctx: &Context,
    sr: &Bound<'_, StartResponse>,
    input: &Bound<'_, Input>,
    head: &RequestHead,
    peer: &Peer,
    started: Instant,
) -> Outcome {
    let mut resp = sr
        .borrow_mut()
        .resp
        .take()
        .expect("the response stays until the request ends");
    resp.out.reclaim();
    let mut keep_alive = resp.keep_alive && !resp.out.broken;
    let mut unread_body = false;
    let raw_back = input.borrow_mut().stream.take().map(|stream| {
        // A body the app did not read to its end leaves the connection out of step.
        if !stream.done || stream.failed {
            keep_alive = false;
            unread_body = true;
        }
        stream.raw
    });
    if let Some(log) = &ctx.access_log {
        log.log(&AccessRecord {
            remote_addr: &peer.remote.host,
            head,
            status: resp.status,
            body_bytes: resp.body_bytes,
            response_head: &resp.head,
            started,
        });
    }
    resp.head = Vec::new();
    Outcome {
        out: resp.out,
        keep_alive,
        raw_back,
        unread_body,
    }
}

/// Calls the iterable's `close()` if it has one. A plain list or tuple has none, and asking
/// would cost an AttributeError per request.
fn close_iterable(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match iterable.getattr_opt("close")? {
        Some(close) => close.call0().map(drop),
        None => Ok(()),
    }
}

/// The response, with any output held for gathering taken back first.
fn with_resp<T>(sr: &Bound<'_, StartResponse>, f: impl FnOnce(&mut Response) -> T) -> T {
    let mut guard = sr.borrow_mut();
    let resp = guard
        .resp
        .as_mut()
        .expect("the response stays until the request ends");
    resp.out.reclaim();
    f(resp)
}

fn client_gone(sr: &Bound<'_, StartResponse>, err: PyErr) -> Failure {
    if with_resp(sr, |r| r.out.broken) {
        Failure::Client
    } else {
        Failure::App(err)
    }
}

/// How far `send_body` got.
enum Sent {
    All,
    /// Paused with this iteration part-way (see `Step::Wait`).
    Paused(Py<PyIterator>),
}

fn send_body(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    iterable: &Bound<'_, PyAny>,
    may_pause: bool,
) -> Result<Sent, Failure> {
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if let Some((fd, pos, size)) = wrapper.borrow().sendable(py) {
            return send_file(py, sr, fd, pos, size).map(|()| Sent::All);
        }
    }
    // A list or tuple of bytes: the length is known, so Content-Length and one write. Read
    // by index (no iterator object, no length hint): only exact lists and tuples, since a
    // subclass may iterate differently from its items.
    if with_resp(sr, |r| r.started) {
        if let Ok(list) = iterable.cast_exact::<PyList>() {
            return send_items(sr, iterable, list.len(), |i| list.get_item(i));
        }
        if let Ok(tuple) = iterable.cast_exact::<PyTuple>() {
            return send_items(sr, iterable, tuple.len(), |i| tuple.get_item(i));
        }
    }
    let iter = iterable.try_iter().map_err(Failure::App)?;
    send_iter(py, sr, iterable, iter, may_pause)
}

/// Sends the `n` items of a list or tuple (`item(i)`), with their total as Content-Length.
fn send_items<'py>(
    sr: &Bound<'py, StartResponse>,
    iterable: &Bound<'py, PyAny>,
    n: usize,
    item: impl Fn(usize) -> PyResult<Bound<'py, PyAny>>,
) -> Result<Sent, Failure> {
    // No Python code runs between the two passes, so the items stay the same.
    let mut total = 0u64;
    for i in 0..n {
        let block = item(i).map_err(Failure::App)?;
        total += as_bytes(&block, iterable)
            .map_err(Failure::App)?
            .as_bytes()
            .len() as u64;
    }
    with_resp(sr, |r| -> PyResult<()> {
        r.send_headers(Some(total))?;
        for i in 0..n {
            r.body(item(i)?.cast::<PyBytes>().expect("checked above"));
        }
        Ok(())
    })
    .map_err(Failure::App)?;
    finish(sr).map(|()| Sent::All)
}

/// The blocks of an iteration, each handed to the socket before the next is asked for.
/// Past `OUTPUT_HIGH_WATER` queued for a slow client, waits for it here (`may_pause`
/// false: a pool thread) or returns `Sent::Paused` for the event loop to wait.
fn send_iter(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    iterable: &Bound<'_, PyAny>,
    iter: Bound<'_, PyIterator>,
    may_pause: bool,
) -> Result<Sent, Failure> {
    let mut blocks = iter.clone();
    loop {
        let asked = Instant::now();
        let Some(item) = blocks.next() else { break };
        let quick = asked.elapsed() < FAST;
        let item = item.map_err(|e| client_gone(sr, e))?;
        let data = as_bytes(&item, iterable).map_err(Failure::App)?;
        if data.as_bytes().is_empty() {
            continue; // PEP 3333: headers go out with the first non-empty block.
        }
        let (more, pause) = with_resp(sr, |r| -> PyResult<(bool, bool)> {
            r.send_headers(None)?;
            r.body(&data);
            let more = r.wants_body();
            // A block that completes the declared length is the last one: it goes out
            // with the connection's next flush, together with the other responses of
            // this loop turn, instead of in a send of its own (Flask's one-block
            // responses: one wake-up of the client per turn, not per response).
            if !more {
                return Ok((false, false));
            }
            if may_pause && r.out.over_high_water() {
                push_now(&mut r.out)?;
                return Ok((true, r.out.over_high_water()));
            }
            // Produced quickly: the app probably has more at hand; gather it into one
            // write, the flusher sending it if the app turns out slow (see `gather`).
            if quick && r.out.buf.memory_len() < GATHER && r.out.hold() {
                return Ok((true, false));
            }
            push(py, &mut r.out)?;
            r.out.keep_sending();
            Ok((true, false))
        })
        .map_err(|e| client_gone(sr, e))?;
        if !more {
            break; // HEAD, or the declared Content-Length is complete: the rest is cut.
        }
        if pause {
            return Ok(Sent::Paused(iter.unbind()));
        }
    }
    finish(sr).map(|()| Sent::All)
}

fn finish(sr: &Bound<'_, StartResponse>) -> Result<(), Failure> {
    let complete = with_resp(sr, |r| r.finish()).map_err(Failure::App)?;
    match with_resp(sr, |r| r.length_left()) {
        Some(left) if !complete => Err(Failure::Short(left)),
        _ => Ok(()),
    }
}

/// PEP 3333: the body is bytes; anything else is the app's error, named with its source.
fn as_bytes<'py>(
    item: &Bound<'py, PyAny>,
    iterable: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().cloned().map_err(|_| {
        let source = iterable
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| type_name(iterable));
        PyTypeError::new_err(format!(
            "the response iterable {source} yielded {}, not bytes",
            type_name(item)
        ))
    })
}

/// `wsgi.file_wrapper` over a regular file: the head, then the file from its current
/// position, queued as a file range that `sendfile(2)` sends. What the socket takes at
/// once goes now; the rest is sent by the connection's task, so a slow client never holds
/// this thread (nor, with one thread, the event loop).
fn send_file(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    file_fd: i32,
    pos: u64,
    size: u64,
) -> Result<(), Failure> {
    let available = size.saturating_sub(pos);
    with_resp(sr, |r| -> PyResult<()> {
        r.send_headers(Some(available))?;
        let count = r.length_left().unwrap_or(0).min(available);
        if count > 0 {
            let own = crate::server::listener::dup(file_fd)?;
            r.out.buf.push_file(own, pos, count as usize);
            r.sent_directly(count);
        }
        push(py, &mut r.out)
    })
    .map_err(|e| client_gone(sr, e))?;
    finish(sr)
}

fn fail(
    py: Python<'_>,
    ctx: &Context,
    sr: &Bound<'_, StartResponse>,
    head: &RequestHead,
    failure: Failure,
) {
    let err = match failure {
        Failure::Client => {
            ctx.error_log
                .debug("client went away before the response was complete");
            with_resp(sr, |r| r.keep_alive = false);
            return;
        }
        Failure::Short(left) => {
            ctx.error_log.error(&format!(
                "Response to {} {} ended {left} bytes short of its Content-Length; connection closed",
                String::from_utf8_lossy(head.method()),
                String::from_utf8_lossy(head.target()),
            ));
            return;
        }
        Failure::App(err) => err,
    };
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        ctx.set_interrupt(err.clone_ref(py));
    }
    log_exception(py, ctx, head, "Error handling request", &err);
    with_resp(sr, |r| {
        if r.headers_sent {
            // Too late for a 500: end the connection without a clean end of body, so the
            // client sees the response is truncated.
            r.abort();
        } else {
            r.internal_error();
        }
    });
}

fn log_exception(py: Python<'_>, ctx: &Context, head: &RequestHead, what: &str, err: &PyErr) {
    let target = String::from_utf8_lossy(head.target());
    let trace = format_traceback(py, err);
    ctx.error_log.error(&format!("{what} {target}\n{trace}"));
}

pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )
    });
    match formatted.and_then(|lines| lines.extract::<Vec<String>>()) {
        Ok(lines) => lines.concat(),
        Err(_) => err.to_string(),
    }
}
