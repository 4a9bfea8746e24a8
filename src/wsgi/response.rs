//! One response: `start_response` and `write()` (PEP 3333 "The start_response() Callable"),
//! the header checks, and the framing chosen when the headers go out (RFC 9112 §6).

use std::sync::{Mutex, OnceLock};

use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::http::{
    body_allowed, encode_chunk_header, is_hop_by_hop, is_token, is_valid_field_value,
    parse_content_length, parse_status, write_http_date, LAST_CHUNK,
};
use crate::server::output::Output;

/// How the body is framed once the headers are out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    /// Headers not sent yet.
    Pending,
    /// HEAD, 1xx, 204, 304: whatever the app yields is dropped (RFC 9110 §6.4.1).
    NoBody,
    /// Content-Length framing with this many bytes still owed.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients).
    Chunked,
    /// The end of the body is the end of the connection (HTTP/1.0 clients).
    Close,
}

/// What the request says about how to answer it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    pub head_request: bool,
    pub http11: bool,
    /// The client allows another request on this connection (RFC 9112 §9.3).
    pub keep_alive: bool,
}

pub struct Response {
    pub out: Output,
    facts: RequestFacts,
    /// The server will close after this response whatever the app does.
    force_close: bool,
    /// `start_response` was called.
    pub started: bool,
    pub status: u16,
    /// Status line and the app's headers; once sent, the whole head as written.
    pub head: Vec<u8>,
    app_length: Option<u64>,
    has_date: bool,
    has_server: bool,
    pub headers_sent: bool,
    mode: BodyMode,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// Body bytes handed to the socket, for the access log.
    pub body_bytes: u64,
    /// What `start_response` returns, when its connection keeps it (see `KeptStartResponse`).
    write: Option<Py<PyAny>>,
}

/// The bytes of a latin-1 `str` (PEP 3333 "Unicode Issues"), borrowed from the object.
///
/// CPython stores a `str` whose code points are all below 256 one byte per code point
/// (PEP 393's 1-byte kind): those bytes are its latin-1 encoding, read in place. Through
/// `to_str` and an ASCII check this cost ~95 instructions per string, five per hello
/// response (callgrind); now ~20.
fn latin1_bytes<'a>(s: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    let s = s
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str, not {}", type_name(s))))?;
    let ptr = s.as_ptr();
    // SAFETY: `ptr` is a live str (checked above) borrowed for 'a. Once ready (a no-op
    // since 3.12), a 1-byte-kind str's data is GET_LENGTH bytes that live and stay
    // unchanged as long as the object (str is immutable).
    unsafe {
        if ffi::PyUnicode_READY(ptr) != 0 {
            return Err(PyErr::fetch(s.py()));
        }
        if ffi::PyUnicode_KIND(ptr) == ffi::PyUnicode_1BYTE_KIND {
            let data = ffi::PyUnicode_DATA(ptr).cast::<u8>();
            let len = ffi::PyUnicode_GET_LENGTH(ptr) as usize;
            return Ok(std::slice::from_raw_parts(data, len));
        }
    }
    Err(PyValueError::new_err(format!(
        "{what} is not latin-1: {:?}",
        s.to_string_lossy()
    )))
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

impl Response {
    pub fn new(out: Output, facts: RequestFacts, force_close: bool) -> Response {
        Response {
            out,
            facts,
            force_close,
            started: false,
            status: 0,
            head: Vec::new(),
            app_length: None,
            has_date: false,
            has_server: false,
            headers_sent: false,
            mode: BodyMode::Pending,
            keep_alive: false,
            body_bytes: 0,
            write: None,
        }
    }

    /// `start_response(status, response_headers, exc_info=None)`.
    pub fn start(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        match exc_info {
            // PEP 3333: with exc_info after the headers went out, re-raise it.
            Some(info) if self.headers_sent => {
                return Err(PyErr::from_value(info.get_item(1)?));
            }
            Some(_) => {}
            None if self.started => {
                return Err(PyAssertionError::new_err(
                    "start_response() called again without exc_info",
                ));
            }
            None => {}
        }
        let status_bytes = latin1_bytes(status, "status")?;
        let code = parse_status(status_bytes).ok_or_else(|| {
            PyValueError::new_err(format!(
                "invalid status {:?}: expected three digits, a space and a reason",
                String::from_utf8_lossy(status_bytes)
            ))
        })?;
        let list = headers.cast::<PyList>().map_err(|_| {
            PyTypeError::new_err(format!(
                "response_headers must be a list, not {}",
                type_name(headers)
            ))
        })?;
        // Room for what send_headers adds (Content-Length, Date, Server, Connection).
        let mut head = Vec::with_capacity(160 + 32 * list.len());
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status_bytes);
        head.extend_from_slice(b"\r\n");
        let (mut app_length, mut has_date, mut has_server) = (None, false, false);
        for item in list.iter() {
            let pair = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "each header must be a (name, value) tuple, not {}",
                    type_name(&item)
                ))
            })?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(format!(
                    "each header must be a (name, value) tuple, got {} items",
                    pair.len()
                )));
            }
            // SAFETY: the tuple has two items (checked above), and a tuple's items live
            // as long as it does. (The checked `get_borrowed_item` cost ~16 instructions
            // per call, two calls per header, callgrind.)
            let (name, value) = unsafe {
                (
                    pair.get_borrowed_item_unchecked(0),
                    pair.get_borrowed_item_unchecked(1),
                )
            };
            let name = latin1_bytes(&name, "header name")?;
            let value = latin1_bytes(&value, "header value")?;
            if !is_token(name) {
                return Err(PyValueError::new_err(format!(
                    "invalid header name {:?}",
                    String::from_utf8_lossy(name)
                )));
            }
            if !is_valid_field_value(value) {
                return Err(PyValueError::new_err(format!(
                    "invalid value for header {}: control characters are not allowed",
                    String::from_utf8_lossy(name)
                )));
            }
            // PEP 3333 "Other HTTP Features": hop-by-hop headers are the server's business.
            if is_hop_by_hop(name) {
                return Err(PyValueError::new_err(format!(
                    "hop-by-hop header {} is not allowed from a WSGI application",
                    String::from_utf8_lossy(name)
                )));
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_content_length(value).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(value)
                    ))
                })?;
                app_length = Some(n);
            } else if name.eq_ignore_ascii_case(b"date") {
                has_date = true;
            } else if name.eq_ignore_ascii_case(b"server") {
                has_server = true;
            }
            head.extend_from_slice(name);
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        self.started = true;
        self.status = code;
        self.head = head;
        self.app_length = app_length;
        self.has_date = has_date;
        self.has_server = has_server;
        Ok(())
    }

    /// Writes the head into the output; `known` is the body's length when the server can
    /// tell it (a list of bytes, or nothing at all).
    pub fn send_headers(&mut self, known: Option<u64>) -> PyResult<()> {
        if self.headers_sent {
            return Ok(());
        }
        if !self.started {
            return Err(PyAssertionError::new_err(
                "the application returned a body before calling start_response()",
            ));
        }
        let mut keep_alive = self.facts.keep_alive && !self.force_close;
        let mut extra_length = None;
        self.mode = if !body_allowed(self.status, false) {
            BodyMode::NoBody
        } else if self.facts.head_request {
            // A HEAD response says what GET would have framed, when that is known.
            if self.app_length.is_none() {
                extra_length = known;
            }
            BodyMode::NoBody
        } else if let Some(n) = self.app_length {
            BodyMode::Length(n)
        } else if let Some(n) = known {
            extra_length = Some(n);
            BodyMode::Length(n)
        } else if self.facts.http11 {
            BodyMode::Chunked
        } else {
            keep_alive = false;
            BodyMode::Close
        };
        let head = &mut self.head;
        if let Some(n) = extra_length {
            head.extend_from_slice(b"Content-Length: ");
            head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if self.mode == BodyMode::Chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !self.has_date {
            head.extend_from_slice(b"Date: ");
            write_http_date(head);
            head.extend_from_slice(b"\r\n");
        }
        if !self.has_server {
            head.extend_from_slice(b"Server: qiao\r\n");
        }
        if !keep_alive {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if !self.facts.http11 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");
        self.out.buf.extend(head);
        self.keep_alive = keep_alive;
        self.headers_sent = true;
        Ok(())
    }

    /// Frames one block of body into the output (after the headers); a large block is
    /// queued by reference, not copied.
    pub fn body(&mut self, block: &Bound<'_, PyBytes>) {
        let data = block.as_bytes();
        if data.is_empty() {
            return;
        }
        match self.mode {
            BodyMode::Pending | BodyMode::NoBody => {}
            BodyMode::Length(left) => {
                // More than the app declared is cut to the declared length.
                let n = (data.len() as u64).min(left) as usize;
                if n == data.len() {
                    self.out.buf.push_bytes(block);
                } else {
                    self.out.buf.extend(&data[..n]);
                }
                self.mode = BodyMode::Length(left - n as u64);
                self.body_bytes += n as u64;
            }
            BodyMode::Chunked => {
                self.out
                    .buf
                    .write_with(|v| encode_chunk_header(data.len(), v));
                self.out.buf.push_bytes(block);
                self.out.buf.extend(b"\r\n");
                self.body_bytes += data.len() as u64;
            }
            BodyMode::Close => {
                self.out.buf.push_bytes(block);
                self.body_bytes += data.len() as u64;
            }
        }
    }

    /// Bytes a Content-Length response still owes, if that is how it is framed.
    pub fn length_left(&self) -> Option<u64> {
        match self.mode {
            BodyMode::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Whether anything the app yields from now on would be sent.
    pub fn wants_body(&self) -> bool {
        !matches!(self.mode, BodyMode::NoBody | BodyMode::Length(0))
    }

    /// Ends the body. Returns false if a Content-Length response came up short, in which
    /// case the connection must be closed so the client can tell.
    pub fn finish(&mut self) -> PyResult<bool> {
        self.send_headers(Some(0))?;
        match self.mode {
            BodyMode::Chunked => self.out.buf.extend(LAST_CHUNK),
            BodyMode::Length(left) if left > 0 => {
                self.keep_alive = false;
                return Ok(false);
            }
            BodyMode::Close => self.keep_alive = false,
            _ => {}
        }
        Ok(true)
    }

    /// Ends a response whose headers are out after an error: no clean end of body follows
    /// and the connection closes, so the client can tell it was cut short.
    pub fn abort(&mut self) {
        self.keep_alive = false;
        self.mode = BodyMode::NoBody;
    }

    /// Accounts for body bytes sent around the buffer (`sendfile`).
    pub fn sent_directly(&mut self, n: u64) {
        self.body_bytes += n;
        if let BodyMode::Length(left) = self.mode {
            self.mode = BodyMode::Length(left - n.min(left));
        }
    }

    /// Replaces a response whose headers were not sent with a plain 500.
    pub fn internal_error(&mut self) {
        let body = b"Internal Server Error\n";
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        head.extend_from_slice(b"\r\nDate: ");
        write_http_date(head);
        head.extend_from_slice(b"\r\nServer: qiao\r\nConnection: close\r\n\r\n");
        self.out.buf.extend(head);
        if !self.facts.head_request {
            self.out.buf.extend(body);
            self.body_bytes = body.len() as u64;
        }
        self.status = 500;
        self.started = true;
        self.headers_sent = true;
        self.mode = BodyMode::Length(0);
        self.keep_alive = false;
    }
}

/// One response as the app sees it: the app is handed this object's bound
/// `start_response` method, which returns its bound `write`.
///
/// Bound methods, not the object itself made callable: a call to a method goes through
/// CPython's vectorcall with its arguments in place, where a call to an object makes a
/// tuple of them for `__call__` (~250 instructions of every response, callgrind).
#[pyclass(module = "qiao._qiao")]
pub struct StartResponse {
    pub resp: Option<Response>,
}

impl StartResponse {
    /// The response, with any output held for gathering taken back first (the app may
    /// call `write` or `start_response` while its generator runs).
    fn resp(&mut self) -> PyResult<&mut Response> {
        let resp = self
            .resp
            .as_mut()
            .ok_or_else(|| PyAssertionError::new_err("this response is already finished"))?;
        resp.out.reclaim();
        Ok(resp)
    }
}

/// A connection's `StartResponse` with its two bound methods, kept from one of its
/// requests to the next instead of made and freed for each. Keeping the object and its
/// `write` saved ~730 instructions of a hello request (callgrind, 12.48k -> 11.75k,
/// before the app was handed the bound `start_response`, which is kept the same way).
pub struct KeptStartResponse {
    sr: Py<StartResponse>,
    start: Py<PyAny>,
    write: Py<PyAny>,
}

impl KeptStartResponse {
    /// Nothing but this holds the three (each method holds the `StartResponse`): no code
    /// can tell them from new ones. (None can be weakly referenced: `StartResponse` does
    /// not support it, and neither method has a weak reference.)
    fn unshared(&self) -> bool {
        // SAFETY: all three are live objects (we hold them); a method is read as a builtin
        // method object only once its type says it is one.
        unsafe fn alone(method: *mut ffi::PyObject) -> bool {
            ffi::Py_REFCNT(method) == 1
                && ffi::PyCFunction_Check(method) != 0
                && (*method.cast::<ffi::PyCFunctionObject>())
                    .m_weakreflist
                    .is_null()
        }
        unsafe {
            ffi::Py_REFCNT(self.sr.as_ptr()) == 3
                && alone(self.start.as_ptr())
                && alone(self.write.as_ptr())
        }
    }
}

/// What a request's app is handed: the response's holder and its bound `start_response`.
pub struct Responder<'py> {
    pub sr: Bound<'py, StartResponse>,
    pub start: Bound<'py, PyAny>,
}

impl StartResponse {
    /// The `start_response` of a request that `resp` answers. When `keep` (the connection
    /// carried a request before this one and may carry more), `kept` holds the
    /// connection's: reused when unshared, else replaced by a new one.
    pub fn for_request<'py>(
        py: Python<'py>,
        kept: &Mutex<Option<KeptStartResponse>>,
        mut resp: Response,
        keep: bool,
    ) -> PyResult<Responder<'py>> {
        let slot = keep.then(|| kept.lock().ok()).flatten();
        let Some(mut slot) = slot else {
            let sr = Bound::new(py, StartResponse { resp: Some(resp) })?;
            let start = bound(&sr, &START)?;
            return Ok(Responder { sr, start });
        };
        if let Some(k) = slot.as_ref().filter(|k| k.unshared()) {
            resp.write = Some(k.write.clone_ref(py));
            let sr = k.sr.bind(py).clone();
            sr.borrow_mut().resp = Some(resp);
            let start = k.start.bind(py).clone();
            return Ok(Responder { sr, start });
        }
        let sr = Bound::new(py, StartResponse { resp: None })?;
        let (start, write) = (bound(&sr, &START)?, bound(&sr, &WRITE)?);
        resp.write = Some(write.clone().unbind());
        sr.borrow_mut().resp = Some(resp);
        *slot = Some(KeptStartResponse {
            sr: sr.clone().unbind(),
            start: start.clone().unbind(),
            write: write.unbind(),
        });
        Ok(Responder { sr, start })
    }
}

#[pymethods]
impl StartResponse {
    /// PEP 3333 "The start_response() Callable".
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn start_response(
        slf: &Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let kept = {
            let mut sr = slf.borrow_mut();
            let resp = sr.resp()?;
            resp.start(status, headers, exc_info)?;
            resp.write.as_ref().map(|w| w.clone_ref(slf.py()))
        };
        match kept {
            Some(write) => Ok(write),
            None => bound(slf, &WRITE).map(Bound::unbind),
        }
    }

    /// PEP 3333 "The write() Callable": the data is on its way to the client on return.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        let resp = self.resp()?;
        resp.send_headers(None)?;
        resp.body(data);
        push(py, &mut resp.out)?;
        resp.out.keep_sending();
        Ok(())
    }
}

/// A method of `StartResponse` (its name and the descriptor looked up at first use).
struct Method {
    name: &'static str,
    descr: OnceLock<Py<PyAny>>,
}

static START: Method = Method {
    name: "start_response",
    descr: OnceLock::new(),
};
static WRITE: Method = Method {
    name: "write",
    descr: OnceLock::new(),
};

/// `method` bound to `sr`.
///
/// The class's method descriptor is looked up once and bound directly, which is what
/// `getattr` ends up doing after searching the type and the instance on every call
/// (~150 instructions of every response, callgrind).
fn bound<'py>(sr: &Bound<'py, StartResponse>, method: &Method) -> PyResult<Bound<'py, PyAny>> {
    let py = sr.py();
    let descr = match method.descr.get() {
        Some(descr) => descr,
        None => {
            // Made with the GIL held and without releasing it, so no other thread can be
            // here at the same time (a std OnceLock, as in environ.rs).
            let descr = py
                .get_type::<StartResponse>()
                .getattr(method.name)?
                .unbind();
            method.descr.get_or_init(|| descr)
        }
    };
    // SAFETY: `descr` is the class's method descriptor, whose type has a `tp_descr_get`
    // (descriptors are made so); it returns a new reference or NULL with an exception set.
    unsafe {
        let get = (*ffi::Py_TYPE(descr.as_ptr()))
            .tp_descr_get
            .ok_or_else(|| PyTypeError::new_err("a StartResponse method is not a descriptor"))?;
        let bound = get(
            descr.as_ptr(),
            sr.as_ptr(),
            ffi::Py_TYPE(sr.as_ptr()).cast(),
        );
        Bound::from_owned_ptr_or_err(py, bound)
    }
}

/// Hands the output to the socket; past the high-water mark, waits for the client with
/// the GIL released (backpressure). A gone client is an `OSError` in the app.
pub fn push(py: Python<'_>, out: &mut Output) -> PyResult<()> {
    let result = if out.over_high_water() {
        py.detach(|| out.flush_blocking())
    } else {
        out.push()
    };
    result.map_err(client_disconnected)
}

/// Hands the kernel what it takes now, never waiting, whatever is queued.
pub fn push_now(out: &mut Output) -> PyResult<()> {
    out.push().map_err(client_disconnected)
}

fn client_disconnected(e: std::io::Error) -> PyErr {
    pyo3::exceptions::PyOSError::new_err(format!("client disconnected: {e}"))
}

#[cfg(test)]
mod tests {
    //! Byte-literal checks of the head and framing a response gets (no socket is touched:
    //! nothing here pushes the output).
    use super::*;
    use crate::server::outbuf::OutBuf;
    use pyo3::types::PyList;
    use std::time::Duration;

    /// The embedded interpreter (cargo test links libpython; nothing starts it for us).
    fn py_run<T>(f: impl for<'py> FnOnce(Python<'py>) -> T) -> T {
        Python::initialize();
        Python::attach(f)
    }

    fn facts(head_request: bool, http11: bool, keep_alive: bool) -> RequestFacts {
        RequestFacts {
            head_request,
            http11,
            keep_alive,
        }
    }

    /// Runs start_response with `headers`, sends `body` as the server would, returns the wire bytes.
    fn respond(
        f: RequestFacts,
        status: &str,
        headers: &[(&str, &str)],
        body: &[&[u8]],
        known: bool,
    ) -> String {
        py_run(|py| {
            let mut r = Response::new(
                Output::new(-1, OutBuf::default(), Duration::from_secs(1)),
                f,
                false,
            );
            let list = PyList::empty(py);
            for (k, v) in headers {
                list.append((k, v)).unwrap();
            }
            r.start(&PyString::new(py, status), &list, None).unwrap();
            let total = body.iter().map(|b| b.len() as u64).sum();
            r.send_headers(known.then_some(total)).unwrap();
            for b in body {
                r.body(&PyBytes::new(py, b));
            }
            r.finish().unwrap();
            let text = String::from_utf8(r.out.buf.to_vec()).unwrap();
            // The Date value changes every second: blank it out.
            let start = text.find("Date: ").map(|i| i + 6).unwrap();
            format!("{}<date>{}", &text[..start], &text[start + 29..])
        })
    }

    #[test]
    fn known_length_gets_content_length() {
        // PEP 3333 "Handling the Content-Length Header": the server may compute it.
        let wire = respond(
            facts(false, true, true),
            "200 OK",
            &[("Content-Type", "text/plain")],
            &[b"hello"],
            true,
        );
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nDate: <date>\r\nServer: qiao\r\n\r\nhello"
        );
    }

    #[test]
    fn unknown_length_is_chunked_on_http11() {
        // RFC 9112 §7.1: chunked framing, ended by the last chunk.
        let wire = respond(
            facts(false, true, true),
            "200 OK",
            &[],
            &[b"ab", b"cde"],
            false,
        );
        assert!(wire.contains("Transfer-Encoding: chunked\r\n"));
        assert!(wire.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"));
    }

    #[test]
    fn unknown_length_closes_on_http10() {
        // RFC 9112 §6.3 (8): without a length the body ends when the connection closes.
        let wire = respond(facts(false, false, true), "200 OK", &[], &[b"ab"], false);
        assert!(wire.contains("Connection: close\r\n"));
        assert!(!wire.contains("chunked"));
        assert!(wire.ends_with("\r\n\r\nab"));
    }

    #[test]
    fn http10_keep_alive_is_announced() {
        // RFC 9112 §9.3: a 1.0 client only keeps the connection if told so.
        let wire = respond(facts(false, false, true), "200 OK", &[], &[b"ab"], true);
        assert!(wire.contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn app_content_length_truncates_extra_bytes() {
        // PEP 3333: the server must not send more than Content-Length.
        let wire = respond(
            facts(false, true, true),
            "200 OK",
            &[("Content-Length", "3")],
            &[b"abcdef"],
            false,
        );
        assert!(wire.ends_with("\r\n\r\nabc"));
        assert!(!wire.contains("chunked"));
    }

    #[test]
    fn head_and_no_content_carry_no_body() {
        // RFC 9110 §6.4.1 / §9.3.2: HEAD, 204 and 304 responses have no content.
        let wire = respond(facts(true, true, true), "200 OK", &[], &[b"hello"], true);
        assert!(wire.ends_with("Content-Length: 5\r\nDate: <date>\r\nServer: qiao\r\n\r\n"));
        let wire = respond(
            facts(false, true, true),
            "204 No Content",
            &[],
            &[b"x"],
            false,
        );
        assert!(wire.ends_with("Server: qiao\r\n\r\n"));
        assert!(!wire.contains("Content-Length") && !wire.contains("chunked"));
        let wire = respond(facts(false, true, true), "304 Not Modified", &[], &[], true);
        assert!(wire.ends_with("Server: qiao\r\n\r\n"));
    }

    #[test]
    fn app_date_and_server_are_kept() {
        let wire = respond(
            facts(false, true, true),
            "200 OK",
            &[
                ("Server", "mine"),
                ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
            &[],
            true,
        );
        assert!(wire.contains("Server: mine\r\n") && !wire.contains("Server: qiao"));
        assert_eq!(wire.matches("Date:").count(), 1);
    }

    #[test]
    fn bad_statuses_and_headers_raise() {
        // PEP 3333 "The start_response() Callable": status and headers are checked.
        py_run(|py| {
            let check = |status: &str, name: &str, value: &str| {
                let mut r = Response::new(
                    Output::new(-1, OutBuf::default(), Duration::from_secs(1)),
                    facts(false, true, true),
                    false,
                );
                let list = PyList::empty(py);
                list.append((name, value)).unwrap();
                r.start(&PyString::new(py, status), &list, None).is_err()
            };
            assert!(!check("200 OK", "X-A", "b"));
            assert!(check("200", "X-A", "b"));
            assert!(check("20 OK", "X-A", "b"));
            assert!(check("200 OK", "X-A", "b\r\nInjected: 1"));
            assert!(check("200 OK", "X A", "b"));
            assert!(check("200 OK", "Connection", "close"));
            assert!(check("200 OK", "Transfer-Encoding", "chunked"));
            assert!(check("200 OK", "X-A", "\u{0100}"));
            assert!(check("200 OK", "Content-Length", "-1"));
            assert!(check("200 OK", "Content-Length", ""));
            assert!(check("200 OK", "Content-Length", "1 2"));
            assert!(check("200 OK", "Content-Length", "18446744073709551616"));
            assert!(!check("200 OK", "Content-Length", "18446744073709551615"));
            assert!(!check("200 OK", "Content-Length", "007"));
        });
    }

    #[test]
    fn second_call_needs_exc_info() {
        py_run(|py| {
            let mut r = Response::new(
                Output::new(-1, OutBuf::default(), Duration::from_secs(1)),
                facts(false, true, true),
                false,
            );
            let status = PyString::new(py, "200 OK");
            let empty = PyList::empty(py);
            r.start(&status, &empty, None).unwrap();
            let err = r.start(&status, &empty, None).unwrap_err();
            assert!(err.is_instance_of::<PyAssertionError>(py));
        });
    }
}
