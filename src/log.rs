//! The error log and the access log: one writer each per process, shared by every thread.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::syslog::Syslog;

/// Severity of an error-log line; ordered so that a filter is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    /// The number Python's `logging` gives the level.
    fn number(self) -> u8 {
        match self {
            Level::Debug => 10,
            Level::Info => 20,
            Level::Warning => 30,
            Level::Error => 40,
            Level::Critical => 50,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// The error-log calls gunicorn's StatsD logger counts (`gunicorn.log.<name>`): a call at
/// warning level or above, whatever `--log-level` lets through, an error logged with its
/// traceback (`exception`) apart from the other errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    Critical = 0,
    Error,
    Warning,
    Exception,
}

impl Logged {
    /// The kinds in the order of their counters, with gunicorn's names.
    pub(crate) const NAMES: [&'static str; 4] = ["critical", "error", "warning", "exception"];

    fn of(level: Level) -> Option<Logged> {
        match level {
            Level::Critical => Some(Logged::Critical),
            Level::Error => Some(Logged::Error),
            Level::Warning => Some(Logged::Warning),
            Level::Info | Level::Debug => None,
        }
    }
}

/// Where a process counts its error-log calls (`Logged`): a worker in its row of the
/// master's metrics table, the master in its own `Tallies`.
pub(crate) trait Tally: Send + Sync {
    fn logged(&self, kind: Logged);
}

/// A process's own counts of its error-log calls, by `Logged` kind.
#[derive(Default)]
pub(crate) struct Tallies([AtomicU64; 4]);

impl Tally for Tallies {
    fn logged(&self, kind: Logged) {
        self.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl Tally for Arc<Tallies> {
    fn logged(&self, kind: Logged) {
        self.as_ref().logged(kind);
    }
}

/// Where log lines go: a standard stream or an append-only file.
pub enum Sink {
    Stdout,
    Stderr,
    /// The file and the path it was opened from, to reopen it after rotation.
    File(File, PathBuf),
}

impl Sink {
    /// `-` is the given standard stream; anything else is a path opened for appending.
    pub fn open(target: &str, dash: Sink) -> io::Result<Sink> {
        if target == "-" {
            Ok(dash)
        } else {
            Ok(Sink::File(open_append(target)?, PathBuf::from(target)))
        }
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) {
        // A log that cannot be written must not take the server down: drop the line.
        let _ = match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes).and_then(|_| out.flush())
            }
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File(f, _) => f.write_all(bytes),
        };
    }

    /// Opens the file again by its path (after log rotation moved the old one away).
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File(file, path) = self {
            *file = open_append(path)?;
        }
        Ok(())
    }
}

fn open_append(path: impl AsRef<Path>) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The error log: `[date] [pid] [LEVEL] message` lines, as gunicorn writes them.
pub struct ErrorLog {
    /// Lines below this level are dropped before any formatting.
    level: Level,
    /// `--log-format json`: one JSON object per line instead of gunicorn's line.
    json: bool,
    /// One writer for the process; the mutex keeps lines whole across threads.
    sink: Mutex<Sink>,
    /// `--log-syslog`: each line is also sent there.
    syslog: Option<Syslog>,
    /// A logging configuration's `gunicorn.error` logger: lines go there, not to `sink`.
    python: Option<Py<PyAny>>,
    /// Where the calls at warning level and above are counted, for StatsD and metrics.
    tally: Option<Box<dyn Tally>>,
}

impl ErrorLog {
    pub fn new(level: Level, sink: Sink) -> ErrorLog {
        ErrorLog {
            level,
            json: false,
            sink: Mutex::new(sink),
            syslog: None,
            python: None,
            tally: None,
        }
    }

    /// The same log, its calls at warning level and above counted in `tally`.
    pub(crate) fn with_tally(mut self, tally: Option<Box<dyn Tally>>) -> ErrorLog {
        self.tally = tally;
        self
    }

    /// The same log, its lines handed to a Python logger instead of its sink (`wsgi.errors`
    /// still writes to the sink: it is a stream, not lines).
    pub(crate) fn with_python(mut self, logger: Option<Py<PyAny>>) -> ErrorLog {
        self.python = logger;
        self
    }

    /// The same log, its lines JSON objects (`--log-format json`).
    pub(crate) fn with_json(mut self, json: bool) -> ErrorLog {
        self.json = json;
        self
    }

    /// The same log, its lines also sent to `syslog`.
    pub(crate) fn with_syslog(mut self, syslog: Option<Syslog>) -> ErrorLog {
        self.syslog = syslog;
        self
    }

    pub fn enabled(&self, level: Level) -> bool {
        level >= self.level
    }

    pub fn log(&self, level: Level, message: &str) {
        if let (Some(tally), Some(kind)) = (&self.tally, Logged::of(level)) {
            tally.logged(kind);
        }
        self.write(level, message, std::process::id());
    }

    /// An error and its traceback (gunicorn's `log.exception`): logged at error level,
    /// counted as an exception.
    pub fn exception(&self, message: &str) {
        if let Some(tally) = &self.tally {
            tally.logged(Logged::Exception);
        }
        self.write(Level::Error, message, std::process::id());
    }

    /// A line about process `pid` (a worker's stack dump, which the master logs for it):
    /// written with that pid; counted as the master's.
    pub(crate) fn log_for(&self, pid: u32, level: Level, message: &str) {
        if let (Some(tally), Some(kind)) = (&self.tally, Logged::of(level)) {
            tally.logged(kind);
        }
        self.write(level, message, pid);
    }

    fn write(&self, level: Level, message: &str, pid: u32) {
        if !self.enabled(level) {
            return;
        }
        let message = message.trim_end_matches('\n');
        let mut line = String::with_capacity(48 + message.len());
        if self.json && self.python.is_none() {
            json_record(&mut line, level, pid, message);
            self.write_raw(line.as_bytes());
            if let Some(syslog) = &self.syslog {
                syslog.send(level, &line);
            }
            return;
        }
        // gunicorn's line, `[date] [pid] [LEVEL] message`; syslog gets it without the date.
        let _ = write!(line, "[{}] ", local_timestamp(false));
        let undated = line.len();
        let _ = write!(line, "[{pid}] [{}] ", level.label());
        line.push_str(message);
        line.push('\n');
        match &self.python {
            // The logging configuration's formatter makes its own line.
            Some(logger) => to_python(logger, level, message),
            None => self.write_raw(line.as_bytes()),
        }
        if let Some(syslog) = &self.syslog {
            syslog.send(level, &line[undated..]);
        }
    }

    /// With `--log-format json`, a panic's report (which Rust's default hook writes to
    /// stderr as raw lines) becomes one critical record of this log, for the rest of the
    /// process; with a logging configuration's logger (which needs the GIL) or text lines,
    /// the default hook stays.
    pub(crate) fn report_panics(self: &Arc<Self>) {
        if !self.json || self.python.is_some() {
            return;
        }
        let log = Arc::downgrade(self);
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let message = format!("thread '{}' {info}", thread.name().unwrap_or("<unnamed>"));
            let mut line = String::with_capacity(96 + message.len());
            json_record(&mut line, Level::Critical, std::process::id(), &message);
            // try_lock: the panic may have come while this thread held the sink.
            let Some(log) = log.upgrade() else {
                return default(info);
            };
            let written = match log.sink.try_lock() {
                Ok(mut sink) => {
                    sink.write_all(line.as_bytes());
                    true
                }
                Err(_) => false,
            };
            if !written {
                default(info);
            }
        }));
    }

    /// Reopens a log file (USR1 after rotation).
    pub fn reopen(&self) -> io::Result<()> {
        match self.sink.lock() {
            Ok(mut sink) => sink.reopen(),
            Err(_) => Ok(()),
        }
    }

    /// Writes what the application wrote to `wsgi.errors`: as it is, or with
    /// `--log-format json` as a record of its own (level `error`, whatever the log level).
    pub fn write_stream(&self, bytes: &[u8]) {
        if !self.json {
            return self.write_raw(bytes);
        }
        let text = String::from_utf8_lossy(bytes);
        let message = text.trim_end_matches('\n');
        if message.is_empty() {
            return;
        }
        let mut line = String::with_capacity(64 + message.len());
        json_record(&mut line, Level::Error, std::process::id(), message);
        self.write_raw(line.as_bytes());
    }

    /// Writes bytes as they are.
    fn write_raw(&self, bytes: &[u8]) {
        if let Ok(mut sink) = self.sink.lock() {
            sink.write_all(bytes);
        }
    }

    pub fn debug(&self, m: &str) {
        self.log(Level::Debug, m)
    }
    pub fn info(&self, m: &str) {
        self.log(Level::Info, m)
    }
    pub fn warning(&self, m: &str) {
        self.log(Level::Warning, m)
    }
    pub fn error(&self, m: &str) {
        self.log(Level::Error, m)
    }
}

/// Hands a line to a Python `logging.Logger`, at `level`: where a logging configuration
/// (`--log-config*`) routes qiao's lines, as gunicorn's go through its loggers. Never holds
/// a lock of ours while it takes the GIL: an app thread holding the GIL may be logging
/// too. A logger that raises loses the line, as a log file that cannot be written does.
pub(crate) fn to_python(logger: &Py<PyAny>, level: Level, message: &str) {
    Python::attach(|py| {
        let _ = logger
            .bind(py)
            .call_method1(pyo3::intern!(py, "log"), (level.number(), message));
    });
}

/// One error log record as a JSON object and a newline: time, level, pid, message.
fn json_record(line: &mut String, level: Level, pid: u32, message: &str) {
    line.push_str("{\"time\": ");
    push_json_str(line, &local_timestamp(false));
    let _ = write!(
        line,
        ", \"level\": \"{}\", \"pid\": {}, \"message\": ",
        level.label().to_ascii_lowercase(),
        pid
    );
    push_json_str(line, message);
    line.push_str("}\n");
}

/// Appends `text` as a JSON string (RFC 8259 §7: quotes, backslash and control characters
/// escaped).
pub(crate) fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The local time as `2026-11-24 19:36:18 +0000` (error log) or
/// `24/Nov/2026:19:36:18 +0000` (access log, Apache's `%t`).
pub(crate) fn local_timestamp(apache: bool) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (year, month, day, hour, minute, second, gmtoff) = crate::sys::local_time(now);
    let off = gmtoff / 60;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let clock = format!(
        "{hour:02}:{minute:02}:{second:02} {sign}{:02}{:02}",
        off / 60,
        off % 60
    );
    if apache {
        let name = MONTHS[(month.clamp(1, 12) - 1) as usize];
        format!("{day:02}/{name}/{year}:{clock}")
    } else {
        format!("{year}-{month:02}-{day:02} {clock}")
    }
}

/// Logs `message` at the level named `level`, or as an exception (`"exception"`: an error
/// with its traceback, gunicorn's `log.exception`): the Python side's `log(level, message)`.
pub(crate) fn log_named(log: &ErrorLog, level: &str, message: &str) -> PyResult<()> {
    if level.eq_ignore_ascii_case("exception") {
        log.exception(message);
        return Ok(());
    }
    let level = Level::parse(level)
        .ok_or_else(|| PyValueError::new_err(format!("unknown log level {level:?}")))?;
    log.log(level, message);
    Ok(())
}

/// The error log for Python code that runs without an engine (the master process).
#[pyclass(module = "qiao._qiao", name = "Logger", frozen)]
pub struct PyLogger {
    log: Arc<ErrorLog>,
    /// This process's error-log calls, by kind (for StatsD's `gunicorn.log.*`).
    tallies: Arc<Tallies>,
}

#[pymethods]
impl PyLogger {
    /// `target`: a path, or `-` for stderr; `level`: the least severe level written;
    /// `syslog`: `(address, facility, ident)` to send the lines to syslog as well;
    /// `json`: one JSON object per line (`--log-format json`); `python`: a
    /// `logging.Logger` to hand the lines to instead of `target`.
    #[new]
    #[pyo3(signature = (target, level, syslog = None, json = false, python = None))]
    fn new(
        target: &str,
        level: &str,
        syslog: Option<(String, String, String)>,
        json: bool,
        python: Option<Py<PyAny>>,
    ) -> PyResult<PyLogger> {
        let level = Level::parse(level)
            .ok_or_else(|| PyValueError::new_err(format!("unknown log level {level:?}")))?;
        let sink = Sink::open(target, Sink::Stderr)
            .map_err(|e| PyOSError::new_err(format!("cannot open error log {target}: {e}")))?;
        let syslog = match syslog {
            None => None,
            Some((address, facility, ident)) => {
                Some(Syslog::connect(&address, &facility, ident).map_err(|e| {
                    PyOSError::new_err(format!("--log-syslog-to: cannot reach {address}: {e}"))
                })?)
            }
        };
        let tallies = Arc::new(Tallies::default());
        Ok(PyLogger {
            log: Arc::new(
                ErrorLog::new(level, sink)
                    .with_syslog(syslog)
                    .with_json(json)
                    .with_python(python)
                    .with_tally(Some(Box::new(tallies.clone()))),
            ),
            tallies,
        })
    }

    /// Writes one line at `level` (or `"exception"`: an error with its traceback); `pid`:
    /// the process it is about, when not this one (a worker's stack dump).
    #[pyo3(signature = (level, message, pid = None))]
    fn log(&self, level: &str, message: &str, pid: Option<u32>) -> PyResult<()> {
        match pid {
            None => log_named(&self.log, level, message),
            Some(pid) => {
                let level = Level::parse(level)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown log level {level:?}")))?;
                self.log.log_for(pid, level, message);
                Ok(())
            }
        }
    }

    /// This process's error-log calls so far, by kind: `(name, count)` for `critical`,
    /// `error`, `warning` and `exception`, whatever `--log-level` wrote of them.
    fn logged(&self) -> Vec<(&'static str, u64)> {
        Logged::NAMES
            .iter()
            .zip(&self.tallies.0)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn reopen(&self) -> PyResult<()> {
        self.log
            .reopen()
            .map_err(|e| PyOSError::new_err(format!("cannot reopen the error log: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `--log-format json`, a panic's report is one JSON record of the error log, its
    /// location and message inside, rather than raw lines on stderr.
    #[test]
    fn a_panic_is_one_json_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let sink = Sink::open(path.to_str().unwrap(), Sink::Stderr).unwrap();
        let log = Arc::new(ErrorLog::new(Level::Info, sink).with_json(true));
        let before = std::panic::take_hook();
        log.report_panics();
        let caught = std::thread::Builder::new()
            .name("doomed".into())
            .spawn(|| panic!("line one\nline two"))
            .unwrap()
            .join();
        drop(std::panic::take_hook());
        std::panic::set_hook(before);
        assert!(caught.is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("{\"time\": "), "{text}");
        assert!(text.contains("\"level\": \"critical\""), "{text}");
        assert!(
            text.contains("thread 'doomed' panicked at src/log.rs:"),
            "{text}"
        );
        assert!(text.contains("line one\\nline two\"}"), "{text}");
    }
}
