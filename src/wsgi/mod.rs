//! The PEP 3333 side: the environ, `start_response`, `wsgi.input`, `wsgi.errors`,
//! `wsgi.file_wrapper`, and the call of the application for one request.

pub(crate) mod bodybuf;
pub(crate) mod environ;
pub(crate) mod errors;
pub(crate) mod file_wrapper;
pub(crate) mod handler;
pub(crate) mod input;
pub(crate) mod response;
pub(crate) mod sink;
#[cfg(test)]
pub(crate) mod testing;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::access_log::AccessLog;
use crate::config::Settings;
use crate::log::ErrorLog;
use crate::metrics::{Counter, Gauge, Metrics, Writer};
use crate::scoreboard::Scoreboard;
use crate::sys::Mono;

/// Everything a request needs that lives as long as the server: built once, shared by threads.
pub(crate) struct Context {
    /// The WSGI application callable.
    pub app: Py<PyAny>,
    pub settings: Settings,
    pub error_log: Arc<ErrorLog>,
    /// `None` when no `--access-logfile` was given.
    pub access_log: Option<AccessLog>,
    /// The per-server part of every environ, copied per request.
    pub environ: environ::Template,
    /// A KeyboardInterrupt or SystemExit raised inside the app: it stops the server.
    pub interrupt: Mutex<Option<PyErr>>,
    /// Requests served, for `max_requests`.
    pub served: AtomicU64,
    /// The master's table and this worker's slot in it, when there is a master.
    pub board: Option<(Py<Scoreboard>, usize)>,
    /// The master's metrics table and this worker's row in it, when there is a master.
    pub metrics: Option<(Py<Metrics>, usize)>,
    /// The server hooks around each request (gunicorn's `pre_request`/`post_request`),
    /// when a config file defines them; `None` costs a request nothing.
    pub hooks: Option<RequestHooks>,
    /// Whether a request's environ is kept past the app's call, for the hooks or the
    /// access log's `%({NAME}e)s` atoms; otherwise the app alone holds it.
    pub keeps_environ: bool,
}

/// Two Python callables around each request, made by the worker from the config file's
/// `pre_request` and `post_request` hooks: `begin(environ)` before the app is called
/// returns a token (gunicorn's `req`), and `end(token, environ, status, head, sent)` once
/// the response is over (the iterable closed), on every path, with the status code, the
/// response head's lines (`b"200 OK\r\nName: value\r\n..."`) and the body bytes sent.
pub(crate) struct RequestHooks {
    pub begin: Py<PyAny>,
    pub end: Py<PyAny>,
}

/// One request's part of the hooks: held from `begin` to `end`.
pub(crate) struct Hooked {
    pub end: Py<PyAny>,
    pub token: Py<PyAny>,
}

impl Hooked {
    /// Calls `end` with what the response was; what it raises is logged (the Python side
    /// logs its hook's own errors, so this is only what escapes that).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end(
        self,
        py: Python<'_>,
        environ: Option<&Py<PyAny>>,
        status: u16,
        head: &[u8],
        sent: u64,
        log: Option<&ErrorLog>,
    ) {
        let head = pyo3::types::PyBytes::new(py, head);
        let environ = environ.map_or_else(|| py.None(), |e| e.clone_ref(py));
        let called = self
            .end
            .bind(py)
            .call1((self.token, environ, status, head, sent));
        if let (Err(err), Some(log)) = (called, log) {
            let trace = handler::format_traceback(py, &err);
            log.exception(&format!("Exception in post_request hook\n{trace}"));
        }
    }
}

impl Context {
    /// The context of `app` under `settings`: its environ template (with `wsgi.errors`
    /// writing to `error_log`) made once here.
    pub(crate) fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        settings: Settings,
        error_log: Arc<ErrorLog>,
        access_log: Option<AccessLog>,
        board: Option<(Py<Scoreboard>, usize)>,
    ) -> PyResult<Context> {
        let errors = Py::new(
            py,
            errors::Errors {
                log: error_log.clone(),
            },
        )?;
        let wrapper = py.get_type::<file_wrapper::FileWrapper>();
        let environ = environ::Template::new(
            py,
            &settings,
            errors.into_any(),
            wrapper.into_any().unbind(),
        )?;
        Ok(Context {
            app,
            settings,
            error_log,
            environ,
            interrupt: Mutex::new(None),
            served: AtomicU64::new(0),
            keeps_environ: access_log.as_ref().is_some_and(|log| log.reads_environ()),
            access_log,
            board,
            metrics: None,
            hooks: None,
        })
    }

    /// Records an exception that must stop the server once requests in flight are done.
    pub(crate) fn set_interrupt(&self, err: PyErr) {
        if let Ok(mut slot) = self.interrupt.lock() {
            slot.get_or_insert(err);
        }
    }

    pub(crate) fn take_interrupt(&self) -> Option<PyErr> {
        self.interrupt.lock().ok().and_then(|mut s| s.take())
    }

    /// Counts a finished request; true once `max_requests` is reached.
    pub(crate) fn count_request(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.settings.max_requests > 0 && n >= self.settings.max_requests
    }

    /// App thread `thread` enters the application: busy in the master's table from now.
    /// Returns now when anything times the request (the table, or the metrics' time in
    /// the application), so that one clock reading serves both.
    pub(crate) fn set_busy(&self, thread: usize) -> Option<Mono> {
        if self.board.is_none() && self.metrics.is_none() {
            return None;
        }
        let now = Mono::now();
        if let Some((board, slot)) = &self.board {
            board.get().set_busy(*slot, thread, now.ms());
        }
        Some(now)
    }

    /// App thread `thread` is out of the application: idle in the master's table.
    pub(crate) fn set_idle(&self, thread: usize) {
        if let Some((board, slot)) = &self.board {
            board.get().set_idle(*slot, thread);
        }
    }

    /// Marks app thread `thread` as waiting on its client (or back in the application).
    pub(crate) fn set_waiting(&self, thread: usize, waiting: bool) {
        if let Some((board, slot)) = &self.board {
            board.get().set_waiting(*slot, thread, waiting);
        }
    }

    /// Tells the master the loop is alive.
    pub(crate) fn beat(&self) {
        if let Some((board, slot)) = &self.board {
            board.get().beat(*slot);
        }
    }

    /// Adds `n` to a counter of this worker's metrics (when a master keeps them), from the
    /// event loop's thread (a connection's work).
    pub(crate) fn count(&self, counter: Counter, n: u64) {
        if let Some((metrics, row)) = self.metrics() {
            metrics.count(row, Writer::LOOP, counter, n);
        }
    }

    /// Moves a gauge of this worker's metrics up or down by one, from the event loop's
    /// thread.
    pub(crate) fn gauge(&self, gauge: Gauge, up: bool) {
        if let Some((metrics, row)) = self.metrics() {
            metrics.gauge(row, Writer::LOOP, gauge, up);
        }
    }

    /// A request enters the application on `thread`: in flight, and what the thread
    /// serves now, for `qiao status`.
    pub(crate) fn started(&self, thread: AppThread, head: &crate::http::RequestHead) {
        if let Some((metrics, row)) = self.metrics() {
            metrics.gauge(row, thread.writer(), Gauge::InFlight, true);
            let index = thread.index();
            match head.method_and_path() {
                Some((line, len)) => metrics.serving_text(row, index, line, len),
                None => metrics.serving(row, index, head.method(), head.path()),
            }
        }
    }

    /// Counts a request refused before the application, with `status` (from the event
    /// loop's thread).
    pub(crate) fn refused(&self, status: u16) {
        if let Some((metrics, row)) = self.metrics() {
            metrics.refused(row, Writer::LOOP, status);
        }
    }

    /// The metrics table and this worker's row, when a master reads them.
    pub(crate) fn metrics(&self) -> Option<(&Metrics, usize)> {
        self.metrics.as_ref().map(|(m, slot)| (m.get(), *slot))
    }

    pub(crate) fn interrupted(&self) -> bool {
        self.interrupt.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

/// The thread that runs a request's application: the event loop's own (one app thread; a
/// response to a slow client then pauses, so that the loop serves the other connections)
/// or thread `i` of the pool (which waits for the client itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppThread {
    Loop,
    Pool(usize),
}

impl AppThread {
    /// Its index among the app threads: its cell of the scoreboard, its request text.
    pub(crate) fn index(self) -> usize {
        match self {
            AppThread::Loop => 0,
            AppThread::Pool(i) => i,
        }
    }

    /// The part of the worker's metrics row it writes.
    pub(crate) fn writer(self) -> Writer {
        match self {
            AppThread::Loop => Writer::LOOP,
            AppThread::Pool(i) => Writer::pool(i),
        }
    }

    /// Whether a response whose client falls behind pauses (on the loop) rather than
    /// waits.
    pub(crate) fn may_pause(self) -> bool {
        self == AppThread::Loop
    }
}

thread_local! {
    /// The context and app-thread index of the thread running this code, when it is one
    /// of the threads that call the application (see `on_app_thread`).
    static APP_THREAD: RefCell<Option<(Arc<Context>, usize)>> = const { RefCell::new(None) };
}

/// Declares the current thread app thread `thread` of `ctx`: its waits on clients are then
/// shown apart on the scoreboard (`waiting_on_client`).
/// `None`: it no longer is.
pub(crate) fn on_app_thread(me: Option<(Arc<Context>, usize)>) {
    APP_THREAD.with(|t| *t.borrow_mut() = me);
}

/// Runs `wait` (a wait for a slow client) marked on the scoreboard as a wait on the
/// client, not time in the application, so that `--timeout` does not count it.
pub(crate) fn waiting_on_client<T>(wait: impl FnOnce() -> T) -> T {
    let me = APP_THREAD.with(|t| t.borrow().clone());
    if let Some((ctx, thread)) = &me {
        ctx.set_waiting(*thread, true);
    }
    let result = wait();
    if let Some((ctx, thread)) = &me {
        ctx.set_waiting(*thread, false);
    }
    result
}
