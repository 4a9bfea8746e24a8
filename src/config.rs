//! The engine's settings: the dict the Python settings table hands over, checked once, typed.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::http::Limits;

/// The settings the engine reads, validated by Python's settings table first.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Python threads calling the app; 1 means the I/O thread calls it itself.
    pub threads: usize,
    /// Worker processes (only reported in `wsgi.multiprocess` here).
    pub workers: usize,
    /// SCRIPT_NAME: the mount point stripped from the front of PATH_INFO.
    pub root_path: String,
    pub access_logfile: Option<String>,
    pub access_logformat: String,
    pub error_logfile: String,
    pub log_level: String,
    /// Idle time allowed between keep-alive requests.
    pub keep_alive: Duration,
    /// Time allowed to receive a whole request head (slowloris bound).
    pub header_timeout: Duration,
    /// Time allowed between two reads of a request body (slow POST bound).
    pub body_timeout: Duration,
    /// Time a client that stopped reading the response may keep us waiting.
    pub write_timeout: Duration,
    /// Connections one worker holds open at most; more wait in the listen backlog.
    pub worker_connections: usize,
    /// Bodies up to this size are kept in memory; larger ones are spooled to a temporary
    /// file. Either way the body is read whole before the app runs, so a slow client
    /// never holds a Python thread.
    pub body_buffer_size: usize,
    /// Response bytes the worker may hold for slow clients across its connections.
    pub output_budget: usize,
    /// Bound on one chunk extension of a chunked body.
    pub limit_chunk_ext_size: usize,
    /// Bound on the trailer section of a chunked body.
    pub limit_trailer_size: usize,
    pub limits: Limits,
    pub url_scheme: String,
    /// How long a graceful stop waits for requests in flight.
    pub graceful_timeout: Duration,
    /// Requests after which this worker stops gracefully to be replaced (0: never).
    pub max_requests: u64,
    /// The master's pid: when the parent is no longer it, the worker stops (0: no master).
    pub parent_pid: i32,
}

macro_rules! item {
    ($d:expr, $key:expr, $t:ty) => {
        match $d.get_item($key)? {
            Some(v) => v.extract::<$t>().map_err(|e| {
                PyValueError::new_err(format!("setting {}: {}", $key, PyErr::from(e)))
            }),
            None => Err(PyValueError::new_err(format!("missing setting {}", $key))),
        }
    };
}

fn seconds(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Duration> {
    let s = item!(d, key, f64)?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err(format!("setting {key}: bad duration {s}")))
}

impl Settings {
    pub(crate) fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Settings> {
        let limit = |key: &str| -> PyResult<usize> { item!(d, key, usize) };
        let threads = item!(d, "threads", usize)?;
        if threads == 0 {
            return Err(PyValueError::new_err("setting threads: must be at least 1"));
        }
        Ok(Settings {
            threads,
            workers: item!(d, "workers", usize)?,
            root_path: item!(d, "root_path", String)?
                .trim_end_matches('/')
                .to_string(),
            access_logfile: item!(d, "access_logfile", Option<String>)?,
            access_logformat: item!(d, "access_logformat", String)?,
            error_logfile: item!(d, "error_logfile", String)?,
            log_level: item!(d, "log_level", String)?,
            keep_alive: seconds(d, "keep_alive")?,
            header_timeout: seconds(d, "header_timeout")?,
            body_timeout: seconds(d, "body_timeout")?,
            write_timeout: seconds(d, "write_timeout")?,
            worker_connections: item!(d, "worker_connections", usize)?.max(1),
            body_buffer_size: item!(d, "body_buffer_size", usize)?,
            output_budget: item!(d, "output_budget", usize)?,
            limit_chunk_ext_size: item!(d, "limit_chunk_ext_size", usize)?,
            limit_trailer_size: item!(d, "limit_trailer_size", usize)?,
            limits: Limits {
                max_request_line: limit("limit_request_line")?,
                max_headers: limit("limit_request_fields")?,
                max_header_field_size: limit("limit_request_field_size")?,
                max_body: item!(d, "max_request_body_size", u64)?,
                max_header_block: limit("limit_request_head_size")?,
            },
            url_scheme: item!(d, "url_scheme", String)?,
            graceful_timeout: seconds(d, "graceful_timeout")?,
            max_requests: item!(d, "max_requests", u64)?,
            parent_pid: item!(d, "parent_pid", i32)?,
        })
    }
}
