//! Test doubles of the WSGI layer's two interfaces, and a context around a Python app
//! defined in the test: the handler is tested with in-memory sinks and sources, no socket.

use std::any::Any;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::config::Settings;
use crate::http::Limits;
use crate::log::{ErrorLog, Level, Sink};
use crate::wsgi::sink::{BodyLength, BodySource, Flow, Gone, ResponseHead, ResponseSink};
use crate::wsgi::Context;

/// Runs `f` with the embedded interpreter (cargo test links libpython; nothing starts it
/// for us).
pub(crate) fn py_run<T>(f: impl for<'py> FnOnce(Python<'py>) -> T) -> T {
    Python::initialize();
    Python::attach(f)
}

/// The engine's settings as the Python table's defaults make them, with `threads`.
pub(crate) fn settings(threads: usize) -> Settings {
    Settings {
        threads,
        workers: 1,
        root_path: String::new(),
        access_logfile: None,
        access_logformat: String::new(),
        log_format: "text".into(),
        error_logfile: "-".into(),
        log_level: "critical".into(),
        keep_alive: Duration::from_secs(2),
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(60),
        worker_connections: 1000,
        body_buffer_size: 1 << 20,
        output_budget: 64 << 20,
        limit_chunk_ext_size: 4096,
        limit_trailer_size: 8192,
        limit_request_line: Limits::default().max_request_line,
        limit_request_fields: Limits::default().max_headers,
        limit_request_field_size: Limits::default().max_header_field_size,
        limit_request_head_size: Limits::default().max_header_block,
        max_request_body_size: Limits::default().max_body,
        limits: Limits::default(),
        url_scheme: "http".into(),
        graceful_timeout: Duration::from_secs(30),
        max_requests: 0,
        parent_pid: 0,
        certfile: None,
        keyfile: None,
        keyfile_password: None,
        ca_certs: None,
        cert_reqs: 0,
        ciphers: None,
        tls_min_version: "1.2".into(),
        tls_handshake_timeout: Duration::from_secs(10),
        http_protocols: "h2,h1".into(),
        http2_cleartext: "off".into(),
        http2_max_concurrent_streams: 100,
        http2_initial_window_size: 65_535,
        http2_max_frame_size: 16_384,
        http2_max_header_list_size: 65_536,
        tls: None,
        forwarded_allow_ips: vec!["127.0.0.1".into(), "::1".into()],
        secure_scheme_headers: Vec::new(),
        forwarded_host: 0,
        forwarded_port: 0,
        forwarded_prefix: 0,
        trusted: crate::http::forwarded::TrustedNets::parse(&["127.0.0.1", "::1"]).unwrap(),
        forwarding: crate::http::forwarded::Rules::default(),
        proxy_protocol: false,
        protocol: "http".into(),
        sendfile: true,
        static_mounts: Vec::new(),
        static_max_age: 60,
        static_index: false,
        static_fallthrough: false,
        static_follow_symlinks: false,
        static_cache_size: 256,
        statics: None,
        log_syslog_to: None,
        log_syslog_facility: "user".into(),
        log_syslog_prefix: "qiao".into(),
        proxy_allow_ips: vec!["127.0.0.1".into(), "::1".into()],
        proxy_allowed: crate::http::forwarded::TrustedNets::parse(&["127.0.0.1", "::1"]).unwrap(),
    }
}

/// A context for the WSGI application `app` defined by the Python source `code`.
pub(crate) fn context(py: Python<'_>, code: &str, settings: Settings) -> Arc<Context> {
    // A module of its own per context: CPython reuses a module of the same name, and
    // tests run side by side.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = std::ffi::CString::new(format!("test_app_{n}")).unwrap();
    let file = std::ffi::CString::new(format!("test_app_{n}.py")).unwrap();
    let module = PyModule::from_code(py, &std::ffi::CString::new(code).unwrap(), &file, &name)
        .expect("the test app compiles");
    let app = module.getattr("app").expect("the test code defines app");
    let error_log = Arc::new(ErrorLog::new(Level::Critical, Sink::Stderr));
    Arc::new(Context::new(py, app.unbind(), settings, error_log, None, None).unwrap())
}

/// A module attribute of the test app's module, read back (a counter the app keeps).
pub(crate) fn app_global<'py>(py: Python<'py>, ctx: &Context, name: &str) -> Bound<'py, PyAny> {
    let globals: Bound<'_, PyDict> = ctx
        .app
        .bind(py)
        .getattr("__globals__")
        .expect("the app is a function")
        .cast_into()
        .unwrap();
    globals.get_item(name).unwrap().expect("the global exists")
}

/// What a `MemorySink` was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Head(u16, BodyLength),
    Body(Vec<u8>),
    File(u64, u64),
    End,
    Abort,
    Fail,
    Push,
    Wait,
}

/// A sink that records what it is told. `room`: how many body bytes a push hands on
/// before the client is "behind" (`Flow::Wait`) until a wait; `None` for no limit.
pub(crate) struct MemorySink {
    pub events: Arc<Mutex<Vec<Event>>>,
    room: Option<usize>,
    queued: usize,
    pub gone: bool,
}

impl MemorySink {
    pub(crate) fn new(room: Option<usize>) -> (MemorySink, Arc<Mutex<Vec<Event>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = MemorySink {
            events: events.clone(),
            room,
            queued: 0,
            gone: false,
        };
        (sink, events)
    }

    fn note(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }
}

impl ResponseSink for MemorySink {
    fn head(&mut self, head: &ResponseHead, length: BodyLength) {
        self.note(Event::Head(head.status, length));
    }

    fn block(&mut self, block: &Bound<'_, PyBytes>) {
        self.bytes(block.as_bytes());
    }

    fn bytes(&mut self, data: &[u8]) {
        self.queued += data.len();
        self.note(Event::Body(data.to_vec()));
    }

    fn file(&mut self, _file: OwnedFd, offset: u64, len: u64) {
        self.note(Event::File(offset, len));
    }

    fn end(&mut self) {
        self.note(Event::End);
    }

    fn abort(&mut self) {
        self.note(Event::Abort);
    }

    fn fail(&mut self) {
        self.note(Event::Fail);
    }

    fn push(&mut self) -> Result<Flow, Gone> {
        self.note(Event::Push);
        if self.gone {
            return Err(Gone);
        }
        Ok(match self.room {
            Some(room) if self.queued > room => Flow::Wait,
            _ => Flow::Go,
        })
    }

    fn wait(&mut self) -> Result<(), Gone> {
        self.note(Event::Wait);
        self.queued = 0;
        if self.gone {
            return Err(Gone);
        }
        Ok(())
    }

    fn gone(&self) -> bool {
        self.gone
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A body held in memory, handed out at most `piece` bytes per read; `asked` records the
/// size of every buffer it was asked to fill.
pub(crate) struct MemorySource {
    data: Vec<u8>,
    pos: usize,
    piece: usize,
    pub(crate) asked: Arc<Mutex<Vec<usize>>>,
}

impl MemorySource {
    pub(crate) fn new(data: Vec<u8>, piece: usize) -> MemorySource {
        MemorySource {
            data,
            pos: 0,
            piece,
            asked: Arc::default(),
        }
    }
}

impl BodySource for MemorySource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked.lock().unwrap().push(buf.len());
        let n = buf.len().min(self.piece).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }
}
