//! Runs one request through the application: builds the environ, calls the app, sends what
//! it returns, and calls the iterable's `close()` on every path (PEP 3333).

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList, PyTuple};

use crate::access_log::AccessRecord;
use crate::http::forwarded::Forwarded;
use crate::http::RequestHead;
use crate::log::Level;
use crate::metrics::{Finished, Gauge, Metrics, Writer};
use crate::sys::Mono;
use crate::wsgi::bodybuf::Body;
use crate::wsgi::environ::Peer;
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::input::Input;
use crate::wsgi::response::{type_name, Responder, Response, StartResponse};
use crate::wsgi::sink::{Flow, ResponseSink};
use crate::wsgi::{AppThread, Context, Hooked};

/// One request, handed from the connection to the thread that runs the app.
pub(crate) struct Exchange {
    pub head: RequestHead,
    /// What a trusted proxy said of the request (`None`: nothing, or not trusted).
    pub forwarded: Option<Box<Forwarded>>,
    pub body: Body,
    /// Where the response goes.
    pub sink: Box<dyn ResponseSink>,
    pub peer: Arc<Peer>,
    /// The connection carried a request before this one and may carry another after it:
    /// the per-connection objects are worth keeping (see `Peer`).
    pub keep: bool,
    pub started: Mono,
}

/// What the connection gets back: its sink, holding what is still to be written.
pub(crate) struct Outcome {
    pub sink: Box<dyn ResponseSink>,
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
pub(crate) enum Step {
    Done(Outcome),
    /// The app's iterable is part-way and its client has not taken the last block: the
    /// connection writes what `Waiting::sink` holds from the event loop (serving the other
    /// connections meanwhile), then calls `resume`. (Boxed: `Step` is moved on every
    /// request's way back.)
    Wait(Box<Waiting>),
}

/// A request whose response iteration is paused until its client has read what is queued.
pub(crate) struct Waiting {
    /// The response's sink, lent back to the connection for the pause.
    pub sink: Option<Box<dyn ResponseSink>>,
    /// `None` once resumed (or closed on drop).
    req: Option<Live>,
    /// The metrics row whose in-flight count the request holds, to give back if the
    /// request is dropped paused (it never reaches `finalize` then).
    metrics: Option<(Py<Metrics>, usize)>,
}

/// The live parts of a request between the app's call and the end of its response.
struct Live {
    sr: Py<StartResponse>,
    input: Py<Input>,
    iterable: Py<PyAny>,
    /// The iteration in progress; `None` before it began.
    iter: Option<Py<PyIterator>>,
    head: RequestHead,
    forwarded: Option<Box<Forwarded>>,
    peer: Arc<Peer>,
    started: Mono,
    /// When the application was called (only taken when metrics are kept).
    called: Option<Mono>,
    /// The request hooks' state, when the config file defines them (boxed: most servers
    /// have none, and `Live` moves on every pause).
    hooked: Option<Box<Hooked>>,
    /// The environ, kept when `Context::keeps_environ` says so.
    environ: Option<Py<PyAny>>,
}

impl Drop for Waiting {
    /// A paused request dropped without being resumed (its connection was cut at the end
    /// of a stop's grace period, or its client went away): PEP 3333 still wants the
    /// iterable's `close()`. The response goes too: it may hold the `write` that holds
    /// its `StartResponse`.
    fn drop(&mut self) {
        if let Some(req) = self.req.take() {
            if let Some((metrics, row)) = &self.metrics {
                // Only the event loop's thread pauses requests.
                metrics
                    .get()
                    .gauge(*row, Writer::LOOP, Gauge::InFlight, false);
            }
            Python::attach(|py| {
                let _ = close_iterable(req.iterable.bind(py));
                let resp = req.sr.bind(py).borrow_mut().resp.take();
                if let (Some(hooked), Some(r)) = (req.hooked, resp) {
                    // The error log is not at hand here; the hook's wrapper logs what its
                    // hook raises itself.
                    let environ = req.environ.as_ref();
                    hooked.end(
                        py,
                        environ,
                        r.head.status,
                        &r.head.lines,
                        r.body_bytes,
                        None,
                    );
                }
            });
        }
    }
}

/// Runs one request to its end on app thread `thread` of the pool: waits for a slow client
/// on this thread (the GIL released), never pausing.
pub(crate) fn handle(py: Python<'_>, ctx: &Context, ex: Exchange, thread: usize) -> Outcome {
    let thread = AppThread::Pool(thread);
    ctx.started(thread, &ex.head);
    match busy(ctx, thread, |at| run(py, ctx, ex, at, thread)) {
        Step::Done(outcome) => outcome,
        Step::Wait(_) => unreachable!("a request run without pausing paused"),
    }
}

/// Runs one request on the event loop's own thread (one app thread, no pool): a response
/// iteration whose client falls behind pauses (`Step::Wait`) instead of blocking the
/// loop, so the other connections keep being served.
pub(crate) fn handle_inline(py: Python<'_>, ctx: &Context, ex: Exchange) -> Step {
    ctx.started(AppThread::Loop, &ex.head);
    busy(ctx, AppThread::Loop, |at| {
        run(py, ctx, ex, at, AppThread::Loop)
    })
}

/// Continues a paused request once its client took what was queued (or is gone: then the
/// iteration ends at once).
pub(crate) fn resume(py: Python<'_>, ctx: &Context, mut waiting: Box<Waiting>) -> Step {
    let req = waiting.req.take().expect("a request is resumed once");
    let sink = waiting
        .sink
        .take()
        .expect("the sink comes back with the pause");
    if let Some(resp) = req.sr.bind(py).borrow_mut().resp.as_mut() {
        resp.sink = Some(sink);
    }
    busy(ctx, AppThread::Loop, |_| {
        body(py, ctx, req, AppThread::Loop)
    })
}

/// Runs `f` with app thread `thread` marked busy on the scoreboard (what `--timeout`
/// watches): only while the app's code may run, not while a paused request waits. `f` is
/// given the moment it began, when something times it.
fn busy<T>(ctx: &Context, thread: AppThread, f: impl FnOnce(Option<Mono>) -> T) -> T {
    let at = ctx.set_busy(thread.index());
    let result = f(at);
    ctx.set_idle(thread.index());
    result
}

/// Calls the application for `ex` (at `at`, when timed) and sends its response, or as
/// much of it as the client takes when `thread` may pause.
fn run(py: Python<'_>, ctx: &Context, ex: Exchange, at: Option<Mono>, thread: AppThread) -> Step {
    let Exchange {
        head,
        forwarded,
        body: request_body,
        sink,
        peer,
        keep,
        started,
    } = ex;
    let input = match request_body {
        Body::Empty => Ok(ctx.environ.empty_input.bind(py).clone()),
        Body::Buffered(b) => Bound::new(py, Input::buffered(b)),
        Body::Object(obj) => Bound::new(py, Input::object(py, obj)),
        Body::Source(source) => Bound::new(py, Input::source(source)),
    };
    // The application's time, for the metrics, from the same reading as the scoreboard's.
    let called = ctx.metrics().and(at);
    let resp = Response::new(sink, head.method() == b"HEAD");
    let responder = StartResponse::for_request(py, &peer.start_response, resp, keep);
    let (input, Responder { sr, start }) = match (input, responder) {
        (Ok(i), Ok(s)) => (i, s),
        (Err(e), _) | (_, Err(e)) => panic!("cannot allocate request objects: {e}"),
    };

    let mut hooked = None;
    let mut kept = None;
    let result = ctx
        .environ
        .build(py, &head, forwarded.as_deref(), &peer, &input, keep)
        .and_then(|environ| {
            if ctx.keeps_environ {
                kept = Some(environ.clone().into_any().unbind());
            }
            if let Some(hooks) = &ctx.hooks {
                // gunicorn's pre_request: what it raises is the request's 500.
                let token = hooks.begin.bind(py).call1((&environ,))?;
                hooked = Some(Box::new(Hooked {
                    end: hooks.end.clone_ref(py),
                    token: token.unbind(),
                }));
            }
            ctx.app.bind(py).call1((environ, start))
        });
    let iterable = match result {
        Ok(iterable) => iterable,
        Err(err) => {
            fail(py, ctx, &sr, &head, Failure::App(err));
            let client = forwarded.as_deref();
            let ended = Ended {
                thread,
                started,
                called,
                hooked,
                environ: kept,
            };
            return Step::Done(finalize(py, ctx, &sr, &head, client, &peer, ended));
        }
    };
    let req = Live {
        sr: sr.unbind(),
        input: input.unbind(),
        iterable: iterable.unbind(),
        iter: None,
        head,
        forwarded,
        peer,
        started,
        called,
        hooked,
        environ: kept,
    };
    body(py, ctx, req, thread)
}

/// Sends (more of) the response body; at its end, or on failure, closes the iterable and
/// ends the request (on `thread`).
fn body(py: Python<'_>, ctx: &Context, mut req: Live, thread: AppThread) -> Step {
    let may_pause = thread.may_pause();
    let sr = req.sr.bind(py).clone();
    let iterable = req.iterable.bind(py).clone();
    let sent = match req.iter.take() {
        None => send_body(py, &sr, &iterable, may_pause, ctx.settings.sendfile),
        Some(iter) => send_iter(py, &sr, &iterable, iter.bind(py).clone(), may_pause),
    };
    match sent {
        Ok(Sent::All) => {}
        Ok(Sent::Paused(iter)) => {
            req.iter = Some(iter);
            let sink = with_resp(&sr, |r| r.sink.take());
            return Step::Wait(Box::new(Waiting {
                sink,
                req: Some(req),
                metrics: ctx.metrics.as_ref().map(|(m, row)| (m.clone_ref(py), *row)),
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
    // The body was read whole before the app ran: nothing of it is left on the wire,
    // whatever the app read of it.
    drop(req.input);
    let forwarded = req.forwarded.as_deref();
    let ended = Ended {
        thread,
        started: req.started,
        called: req.called,
        hooked: req.hooked,
        environ: req.environ,
    };
    Step::Done(finalize(
        py, ctx, &sr, &req.head, forwarded, &req.peer, ended,
    ))
}

/// What a request carries to its end besides its head and response.
struct Ended {
    thread: AppThread,
    started: Mono,
    called: Option<Mono>,
    hooked: Option<Box<Hooked>>,
    environ: Option<Py<PyAny>>,
}

/// The request is over: the connection's outcome, the access log line, and the
/// `post_request` hook.
fn finalize(
    py: Python<'_>,
    ctx: &Context,
    sr: &Bound<'_, StartResponse>,
    head: &RequestHead,
    forwarded: Option<&Forwarded>,
    peer: &Peer,
    ended: Ended,
) -> Outcome {
    let Ended {
        thread,
        started,
        called,
        hooked,
        environ,
    } = ended;
    let mut resp = sr
        .borrow_mut()
        .resp
        .take()
        .expect("the response stays until the request ends");
    // One clock reading for the metrics, the access log and the debug line.
    let debug = ctx.error_log.enabled(Level::Debug);
    let now = (called.is_some() || ctx.access_log.is_some() || debug).then(Mono::now);
    // (Taken only where it is used: the metrics count whole microseconds instead.)
    let elapsed = || now.map_or(Duration::ZERO, |now| now.since(started));
    if let (Some((metrics, row)), Some(called), Some(now)) = (ctx.metrics(), called, now) {
        let sent = resp.head.lines.len() as u64 + resp.body_bytes;
        let status = resp.head.status;
        let (total, app) = (now.micros_since(started), Some(now.micros_since(called)));
        let req = Finished::of(head, status, sent, total, app);
        metrics.finished(row, thread.writer(), &req);
    }
    if let Some(log) = &ctx.access_log {
        log.log(&AccessRecord {
            remote_addr: &peer.client(forwarded),
            head,
            status: resp.head.status,
            body_bytes: resp.body_bytes,
            response_head: &resp.head.lines,
            elapsed: elapsed(),
            environ: environ.as_ref().map(|e| e.bind(py)),
        });
    }
    if debug {
        // --log-level debug: one line per request, for the development loop.
        ctx.error_log.debug(&format!(
            "\"{} {} {}\" {} {} bytes in {:.3} ms",
            String::from_utf8_lossy(head.method()),
            String::from_utf8_lossy(head.target()),
            String::from_utf8_lossy(head.version_raw()),
            resp.head.status,
            resp.body_bytes,
            elapsed().as_secs_f64() * 1000.0,
        ));
    }
    if let Some(hooked) = hooked {
        hooked.end(
            py,
            environ.as_ref(),
            resp.head.status,
            &resp.head.lines,
            resp.body_bytes,
            Some(&ctx.error_log),
        );
    }
    Outcome {
        sink: resp.sink.take().expect("a finished response has its sink"),
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

/// The response (it stays until the request ends).
fn with_resp<T>(sr: &Bound<'_, StartResponse>, f: impl FnOnce(&mut Response) -> T) -> T {
    let mut guard = sr.borrow_mut();
    let resp = guard
        .resp
        .as_mut()
        .expect("the response stays until the request ends");
    f(resp)
}

/// An error the app raised, or the client's absence seen through it (`write()` raised
/// `OSError` because the client was gone).
fn client_gone(sr: &Bound<'_, StartResponse>, err: PyErr) -> Failure {
    if with_resp(sr, |r| r.client_gone()) {
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
    sendfile: bool,
) -> Result<Sent, Failure> {
    // `--no-sendfile`: the wrapper is iterated like any iterable (its file read block by
    // block), as gunicorn does, for file systems where the kernel's copy misbehaves.
    if let (true, Ok(wrapper)) = (sendfile, iterable.cast::<FileWrapper>()) {
        if let Some((fd, pos, size)) = wrapper.borrow().sendable(py) {
            return send_file(sr, fd, pos, size).map(|()| Sent::All);
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
            r.body(item(i)?.cast::<PyBytes>().expect("checked above"))?;
        }
        Ok(())
    })
    .map_err(Failure::App)?;
    finish(sr).map(|()| Sent::All)
}

/// The blocks of an iteration, each handed on before the next is asked for (PEP 3333
/// "Buffering and Streaming"). When the client falls behind, waits for it here
/// (`may_pause` false: a pool thread, GIL released) or returns `Sent::Paused` for the
/// event loop to wait.
fn send_iter(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    iterable: &Bound<'_, PyAny>,
    iter: Bound<'_, PyIterator>,
    may_pause: bool,
) -> Result<Sent, Failure> {
    let mut blocks = iter.clone();
    loop {
        let Some(item) = blocks.next() else { break };
        let item = item.map_err(|e| client_gone(sr, e))?;
        let data = as_bytes(&item, iterable).map_err(Failure::App)?;
        if data.as_bytes().is_empty() {
            continue; // PEP 3333: headers go out with the first non-empty block.
        }
        let flow = with_resp(sr, |r| -> PyResult<Option<Flow>> {
            r.send_headers(None)?;
            r.body(&data)?;
            // A block that completes the declared length is the last one: it goes out
            // with the connection's next write, together with the other responses of
            // this loop turn, instead of in a write of its own (Flask's one-block
            // responses: one wake-up of the client per turn, not per response).
            if !r.wants_body() {
                return Ok(None);
            }
            Ok(Some(r.push_now()?))
        })
        .map_err(|e| client_gone(sr, e))?;
        match flow {
            // HEAD, or the declared Content-Length is complete: the rest is cut.
            None => break,
            Some(Flow::Go) => {}
            Some(Flow::Wait) if may_pause => return Ok(Sent::Paused(iter.unbind())),
            Some(Flow::Wait) => {
                let waited = with_resp(sr, |r| {
                    let sink = r.sink.as_mut().expect("a running response has its sink");
                    py.detach(|| crate::wsgi::waiting_on_client(|| sink.wait()))
                });
                if waited.is_err() {
                    return Err(Failure::Client);
                }
            }
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
/// position, as a file range the transport sends from the file itself (`sendfile(2)` on
/// a plain socket), through a duplicate of its descriptor (the app may close its file as
/// soon as the response is handed over). The connection sends it, so a slow client never
/// holds this thread (nor, with one thread, the event loop).
fn send_file(
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
            let own = crate::sys::dup(file_fd)?;
            r.file(own, pos, count)?;
        }
        Ok(())
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
            with_resp(sr, |r| r.abort());
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
    ctx.error_log
        .exception(&format!("{what} {target}\n{trace}"));
}

pub(crate) fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
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

#[cfg(test)]
mod tests {
    //! The handler with an in-memory sink: what it hands on, when it pauses, and that
    //! the iterable is closed on every path (PEP 3333).
    use super::*;
    use crate::http::{parse_head, Limits};
    use crate::wsgi::environ::HostPort;
    use crate::wsgi::testing::{app_global, context, py_run, settings, Event, MemorySink};
    use std::sync::Mutex;

    fn exchange(sink: MemorySink) -> Exchange {
        let mut raw = bytes::BytesMut::from(&b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n"[..]);
        let head = parse_head(&mut raw, &Limits::default()).unwrap().unwrap();
        Exchange {
            head,
            forwarded: None,
            body: Body::Empty,
            sink: Box::new(sink),
            peer: Arc::new(Peer::new(
                HostPort::new("10.0.0.1".into(), "1".into()),
                Arc::new(HostPort::new("127.0.0.1".into(), "80".into())),
            )),
            keep: false,
            started: Mono::now(),
        }
    }

    fn events(log: &Mutex<Vec<Event>>) -> Vec<Event> {
        log.lock().unwrap().clone()
    }

    const THREE_BLOCKS: &str = r#"
closed = 0
class Body:
    def __init__(self):
        self.blocks = iter([b"aa", b"bb", b"cc"])
    def __iter__(self):
        return self
    def __next__(self):
        return next(self.blocks)
    def close(self):
        global closed
        closed += 1
def app(environ, start_response):
    start_response("200 OK", [])
    return Body()
"#;

    /// PEP 3333 "Buffering and Streaming": on the event loop's thread, a client that is
    /// behind pauses the iteration (no next block is asked for) until the connection
    /// resumes it; close() is called once, at the end.
    #[test]
    fn a_client_behind_pauses_the_iteration_inline() {
        py_run(|py| {
            let ctx = context(py, THREE_BLOCKS, settings(1));
            let (sink, log) = MemorySink::new(Some(1));
            let mut step = handle_inline(py, &ctx, exchange(sink));
            let mut pauses = 0;
            while let Step::Wait(waiting) = step {
                pauses += 1;
                let asked = events(&log)
                    .iter()
                    .filter(|e| matches!(e, Event::Body(_)))
                    .count();
                assert_eq!(asked, pauses, "more blocks were taken during a pause");
                step = resume(py, &ctx, waiting);
            }
            // The length is unknown: the last block is not known as such until the
            // iteration ends, so it too is pushed and waited for.
            assert_eq!(pauses, 3, "paused after each block");
            let closed: usize = app_global(py, &ctx, "closed").extract().unwrap();
            assert_eq!(closed, 1);
            assert_eq!(events(&log).last(), Some(&Event::End));
        });
    }

    /// On a pool thread the handler waits for the client itself instead of pausing.
    #[test]
    fn a_pool_thread_waits_for_a_client_behind() {
        py_run(|py| {
            let ctx = context(py, THREE_BLOCKS, settings(2));
            let (sink, log) = MemorySink::new(Some(1));
            handle(py, &ctx, exchange(sink), 0);
            let log = events(&log);
            assert_eq!(log.iter().filter(|e| **e == Event::Wait).count(), 3);
            assert_eq!(log.last(), Some(&Event::End));
        });
    }

    /// PEP 3333 "Error Handling": an exception before the headers went out becomes a 500;
    /// after them, the response is cut (no clean end). close() is called either way.
    #[test]
    fn app_errors_before_and_after_the_headers() {
        py_run(|py| {
            let ctx = context(
                py,
                "def app(environ, start_response):\n    raise RuntimeError('boom')\n",
                settings(1),
            );
            let (sink, log) = MemorySink::new(None);
            assert!(matches!(
                handle_inline(py, &ctx, exchange(sink)),
                Step::Done(_)
            ));
            assert_eq!(events(&log), [Event::Fail]);

            let ctx = context(
                py,
                r#"
closed = 0
class Body:
    def __iter__(self):
        yield b"first"
        raise RuntimeError("late")
    def close(self):
        global closed
        closed += 1
def app(environ, start_response):
    start_response("200 OK", [])
    return Body()
"#,
                settings(1),
            );
            let (sink, log) = MemorySink::new(None);
            handle_inline(py, &ctx, exchange(sink));
            let log = events(&log);
            assert_eq!(log.last(), Some(&Event::Abort), "{log:?}");
            assert!(!log.contains(&Event::End));
            let closed: usize = app_global(py, &ctx, "closed").extract().unwrap();
            assert_eq!(closed, 1);
        });
    }

    /// A client gone mid-response ends the iteration (close() called) without a 500.
    #[test]
    fn a_gone_client_ends_the_iteration() {
        py_run(|py| {
            let ctx = context(py, THREE_BLOCKS, settings(1));
            let (mut sink, log) = MemorySink::new(None);
            sink.gone = true;
            handle_inline(py, &ctx, exchange(sink));
            let log = events(&log);
            assert!(
                !log.contains(&Event::Fail) && !log.contains(&Event::End),
                "{log:?}"
            );
            let closed: usize = app_global(py, &ctx, "closed").extract().unwrap();
            assert_eq!(closed, 1);
        });
    }
}
