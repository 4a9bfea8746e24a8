//! The PEP 3333 side: the environ, `start_response`, `wsgi.input`, `wsgi.errors`,
//! `wsgi.file_wrapper`, and the call of the application for one request.

pub mod environ;
pub mod errors;
pub mod file_wrapper;
pub mod handler;
pub mod input;
pub mod response;

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::access_log::AccessLog;
use crate::config::Settings;
use crate::log::ErrorLog;

/// Everything a request needs that lives as long as the server: built once, shared by threads.
pub struct Context {
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
}

impl Context {
    /// Records an exception that must stop the server once requests in flight are done.
    pub fn set_interrupt(&self, err: PyErr) {
        if let Ok(mut slot) = self.interrupt.lock() {
            slot.get_or_insert(err);
        }
    }

    pub fn take_interrupt(&self) -> Option<PyErr> {
        self.interrupt.lock().ok().and_then(|mut s| s.take())
    }

    pub fn interrupted(&self) -> bool {
        self.interrupt.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}
