//! `qiao._qiao.Engine`: the object Python drives: one app, one settings dict, the listening
//! sockets; `serve_forever()`, `handle_request()`, `shutdown()` from another thread, `close()`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::config::Settings;
use crate::log::{ErrorLog, Level, Sink};
use crate::metrics::{LogTally, Metrics};
use crate::scoreboard::Scoreboard;
use crate::server;
use crate::sys;
use crate::syslog::Syslog;
use crate::wsgi::{Context, RequestHooks};

#[pyclass(module = "qiao._qiao", frozen)]
pub struct Engine {
    ctx: Arc<Context>,
    /// Our duplicates of the listening sockets; each run serves on duplicates of these.
    fds: Mutex<Vec<OwnedFd>>,
    /// Set to true to stop a run; reset when a run starts.
    stop: Arc<watch::Sender<bool>>,
    /// True while a run is in progress, so `shutdown()` can wait for its end.
    serving: Arc<(Mutex<bool>, Condvar)>,
}

fn os_error(what: &str, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{what}: {e}"))
}

#[pymethods]
impl Engine {
    /// `scoreboard` and `slot`: the master's table and this worker's row in it.
    /// `request_hooks`: `(begin, end)`, called around each request (see `RequestHooks`).
    /// `metrics`: the master's metrics table and this worker's row in it.
    /// `error_logger`, `access_logger`: Python loggers a logging configuration routes the
    /// error and access lines to (the access log is then on without a file).
    #[new]
    #[pyo3(signature = (
        app, settings, fds, scoreboard = None, slot = 0, request_hooks = None, metrics = None,
        error_logger = None, access_logger = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        settings: &Bound<'_, PyDict>,
        fds: Vec<i32>,
        scoreboard: Option<Py<Scoreboard>>,
        slot: usize,
        request_hooks: Option<(Py<PyAny>, Py<PyAny>)>,
        metrics: Option<(Py<Metrics>, usize)>,
        error_logger: Option<Py<PyAny>>,
        access_logger: Option<Py<PyAny>>,
    ) -> PyResult<Engine> {
        if let Some((table, row)) = &metrics {
            if *row >= table.get().rows() {
                return Err(PyValueError::new_err(format!(
                    "metrics row {row} out of range ({} rows)",
                    table.get().rows()
                )));
            }
        }
        let settings = Settings::from_dict(settings)?;
        if let Some(board) = &scoreboard {
            // Two app threads sharing a cell would clear each other's state and let a stuck
            // request escape `--timeout`.
            let columns = board.get().threads();
            if columns < settings.threads {
                return Err(PyValueError::new_err(format!(
                    "the scoreboard has {columns} thread columns for threads={}",
                    settings.threads
                )));
            }
        }
        let level = Level::parse(&settings.log_level).ok_or_else(|| {
            PyValueError::new_err(format!(
                "setting log_level: unknown level {:?}",
                settings.log_level
            ))
        })?;
        let sink = Sink::open(&settings.error_logfile, Sink::Stderr).map_err(|e| {
            os_error(
                &format!("cannot open error log {}", settings.error_logfile),
                e,
            )
        })?;
        let syslog = |name: &str| -> PyResult<Option<Syslog>> {
            let Some(address) = &settings.log_syslog_to else {
                return Ok(None);
            };
            let ident = format!("qiao.{}.{name}", settings.log_syslog_prefix);
            Syslog::connect(address, &settings.log_syslog_facility, ident)
                .map(Some)
                .map_err(|e| os_error(&format!("--log-syslog-to: cannot reach {address}"), e))
        };
        let json = match settings.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "setting log_format: expected text or json, got {other:?}"
                )))
            }
        };
        let error_log = Arc::new(
            ErrorLog::new(level, sink)
                .with_syslog(syslog("error")?)
                .with_json(json)
                .with_python(error_logger)
                .with_tally(metrics.as_ref().map(|(table, row)| {
                    Box::new(LogTally::new(py, table, *row)) as Box<dyn crate::log::Tally>
                })),
        );
        error_log.report_panics();
        // A logging configuration's `gunicorn.access` logger turns the access log on, as
        // gunicorn's does, without an --access-logfile.
        let access_log = match (&settings.access_logfile, access_logger) {
            (None, None) => None,
            (path, python) => {
                let sink = match path {
                    Some(path) => Sink::open(path, Sink::Stdout)
                        .map_err(|e| os_error(&format!("cannot open access log {path}"), e))?,
                    None => Sink::Stdout,
                };
                Some(
                    AccessLog::new(&settings.access_logformat, sink)
                        .map_err(|e| {
                            PyValueError::new_err(format!("setting access_logformat: {e}"))
                        })?
                        .with_syslog(syslog("access")?)
                        .with_json(json)
                        .with_python(python),
                )
            }
        };
        let fds = fds
            .into_iter()
            .map(sys::dup)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| os_error("bad listening socket", e))?;
        let (stop, _) = watch::channel(false);
        let mut ctx = Context::new(
            py,
            app,
            settings,
            error_log,
            access_log,
            scoreboard.map(|b| (b, slot)),
        )?;
        ctx.keeps_environ |= request_hooks.is_some();
        ctx.hooks = request_hooks.map(|(begin, end)| RequestHooks { begin, end });
        ctx.metrics = metrics;
        Ok(Engine {
            ctx: Arc::new(ctx),
            fds: Mutex::new(fds),
            stop: Arc::new(stop),
            serving: Arc::new((Mutex::new(false), Condvar::new())),
        })
    }

    /// Serves until `shutdown()` or Ctrl-C; the GIL is released while the engine waits
    /// (with one thread the I/O thread holds it while it works, see `server::gil`).
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, false)
    }

    /// Waits for one request, serves it, and returns.
    fn handle_request(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, true)
    }

    /// Stops a run in progress and, with `wait`, blocks until it has returned (call that
    /// from another thread; a signal handler on the serving thread passes `wait=False`).
    #[pyo3(signature = (wait = true))]
    fn shutdown(&self, py: Python<'_>, wait: bool) {
        self.stop.send_replace(true);
        if !wait {
            return;
        }
        let serving = self.serving.clone();
        py.detach(move || {
            let (lock, cvar) = &*serving;
            let mut busy = lock.lock().unwrap_or_else(|e| e.into_inner());
            while *busy {
                busy = cvar.wait(busy).unwrap_or_else(|e| e.into_inner());
            }
        });
    }

    /// Releases the engine's listening sockets.
    fn close(&self) {
        if let Ok(mut fds) = self.fds.lock() {
            fds.clear();
        }
    }

    /// Reopens the error and access log files (after log rotation; USR1).
    fn reopen_logs(&self) -> PyResult<()> {
        self.ctx
            .error_log
            .reopen()
            .map_err(|e| os_error("cannot reopen the error log", e))?;
        if let Some(access) = &self.ctx.access_log {
            access
                .reopen()
                .map_err(|e| os_error("cannot reopen the access log", e))?;
        }
        Ok(())
    }

    /// Requests served so far.
    #[getter]
    fn requests_served(&self) -> u64 {
        self.ctx.served.load(Ordering::Relaxed)
    }

    /// Writes one line to the error log at `level` (or `"exception"`: an error with its
    /// traceback).
    fn log(&self, level: &str, message: &str) -> PyResult<()> {
        crate::log::log_named(&self.ctx.error_log, level, message)
    }
}

impl Engine {
    fn run(&self, py: Python<'_>, one_request: bool) -> PyResult<()> {
        let fds = {
            let fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
            if fds.is_empty() {
                return Err(PyOSError::new_err(
                    "the server is closed (no listening sockets)",
                ));
            }
            fds.iter()
                .map(|fd| sys::dup(fd.as_raw_fd()))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| os_error("cannot use a listening socket", e))?
        };
        {
            let mut busy = self.serving.0.lock().unwrap_or_else(|e| e.into_inner());
            *busy = true;
        }
        let ctx = self.ctx.clone();
        let stop = self.stop.clone();
        let result = py.detach(move || server::run(ctx, fds, stop, one_request));
        {
            // Like socketserver: a shutdown() asked before or during this run ends it, and
            // the request is used up once the run is over.
            self.stop.send_replace(false);
            let (lock, cvar) = &*self.serving;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = false;
            cvar.notify_all();
        }
        result.map_err(|e| os_error("server failed", e))?;
        match self.ctx.take_interrupt() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
