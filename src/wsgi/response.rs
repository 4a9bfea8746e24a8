//! One response: `start_response` and `write()` (PEP 3333 "The start_response() Callable"),
//! the header checks, and the framing chosen when the headers go out (RFC 9112 §6).

use std::sync::{Mutex, OnceLock};

use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::http::{
    body_allowed, is_hop_by_hop, is_token, is_valid_field_value, parse_content_length, parse_status,
};
use crate::wsgi::sink::{BodyLength, Flow, Gone, ResponseHead, ResponseSink};

/// One response as the WSGI layer keeps it: the application's head, how much body it may
/// still send, and the sink its bytes go to.
pub struct Response {
    /// Where the response goes. `None` while a paused response's sink is back with the
    /// connection (see `handler::Step::Wait`).
    pub sink: Option<Box<dyn ResponseSink>>,
    head_request: bool,
    /// `start_response` was called.
    pub started: bool,
    /// The status code and the application's head, checked.
    pub head: ResponseHead,
    pub headers_sent: bool,
    /// Body bytes the response may still send: under a Content-Length (the app's or one
    /// the server computed) what is left of it, 0 for a response without a body, `None`
    /// when unbounded (chunked or close-delimited).
    left: Option<u64>,
    /// Body bytes handed to the sink, for the access log.
    pub body_bytes: u64,
    /// What `start_response` returns, when its connection keeps it (see `KeptStartResponse`).
    write: Option<Py<PyAny>>,
}

/// The bytes of a latin-1 `str` (PEP 3333 "Unicode Issues"), borrowed from the object.
///
/// CPython stores a `str` whose code points are all below 256 one byte per code point
/// (PEP 393's 1-byte kind): those bytes are its latin-1 encoding, read in place. `to_str`
/// and an ASCII check would look up (or make) the UTF-8 copy and scan it, for the
/// status and every header name and value of every response.
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

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

impl Response {
    pub fn new(sink: Box<dyn ResponseSink>, head_request: bool) -> Response {
        Response {
            sink: Some(sink),
            head_request,
            started: false,
            head: ResponseHead::default(),
            headers_sent: false,
            left: None,
            body_bytes: 0,
            write: None,
        }
    }

    /// The sink, while the response has it.
    pub fn sink(&mut self) -> PyResult<&mut Box<dyn ResponseSink>> {
        self.sink
            .as_mut()
            .ok_or_else(|| PyAssertionError::new_err("this response is paused"))
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
        // PEP 3333 has no interim responses: a 1xx sent as the response would be read by
        // the client as the interim answer, and the next response on the connection as
        // this request's (a desync). The app gets an error; unhandled, it is a 500.
        if code < 200 {
            return Err(PyValueError::new_err(format!(
                "status {:?}: a WSGI application cannot send an interim (1xx) response",
                String::from_utf8_lossy(status_bytes)
            )));
        }
        let list = headers.cast::<PyList>().map_err(|_| {
            PyTypeError::new_err(format!(
                "response_headers must be a list, not {}",
                type_name(headers)
            ))
        })?;
        // Room for what the framing adds (Content-Length, Date, Server, Connection).
        let mut lines = Vec::with_capacity(160 + 32 * list.len());
        lines.extend_from_slice(status_bytes);
        lines.extend_from_slice(b"\r\n");
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
            // as long as it does. (The checked `get_borrowed_item` would test the index
            // against the length again, twice per header.)
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
            lines.extend_from_slice(name);
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value);
            lines.extend_from_slice(b"\r\n");
        }
        self.started = true;
        self.head = ResponseHead {
            status: code,
            lines,
            content_length: app_length,
            has_date,
            has_server,
        };
        Ok(())
    }

    /// Sends the head; `known` is the body's length when the server can tell it (a list
    /// of bytes, a file, or nothing at all).
    pub fn send_headers(&mut self, known: Option<u64>) -> PyResult<()> {
        if self.headers_sent {
            return Ok(());
        }
        if !self.started {
            return Err(PyAssertionError::new_err(
                "the application returned a body before calling start_response()",
            ));
        }
        let length = if !body_allowed(self.head.status, self.head_request) {
            // RFC 9110 §9.3.2: a HEAD response says what GET would have framed, when that
            // is known; 204 and 304 carry no length of their own making.
            let computed =
                known.filter(|_| self.head_request && self.head.content_length.is_none());
            BodyLength::None { computed }
        } else if let Some(n) = self.head.content_length {
            BodyLength::Declared(n)
        } else if let Some(n) = known {
            BodyLength::Computed(n)
        } else {
            BodyLength::Unknown
        };
        self.left = match length {
            BodyLength::None { .. } => Some(0),
            BodyLength::Declared(n) | BodyLength::Computed(n) => Some(n),
            BodyLength::Unknown => None,
        };
        let head = std::mem::take(&mut self.head);
        let sent = self.sink().map(|sink| sink.head(&head, length));
        self.head = head;
        sent?;
        self.headers_sent = true;
        Ok(())
    }

    /// How many of `len` bytes of body go out: all, fewer past a Content-Length (PEP 3333:
    /// the server must not send more than declared), none without a body.
    fn admit(&mut self, len: u64) -> u64 {
        match &mut self.left {
            None => len,
            Some(left) => {
                let n = len.min(*left);
                *left -= n;
                n
            }
        }
    }

    /// Hands one block of body to the sink (after the headers); a large block goes by
    /// reference, not copied.
    pub fn body(&mut self, block: &Bound<'_, PyBytes>) -> PyResult<()> {
        let data = block.as_bytes();
        let n = self.admit(data.len() as u64) as usize;
        if n == 0 {
            return Ok(());
        }
        let sink = self.sink()?;
        if n == data.len() {
            sink.block(block);
        } else {
            sink.bytes(&data[..n]);
        }
        self.body_bytes += n as u64;
        Ok(())
    }

    /// Hands `len` bytes of `file` from `offset` to the sink (within what the response
    /// may still send).
    pub fn file(&mut self, file: std::os::fd::OwnedFd, offset: u64, len: u64) -> PyResult<()> {
        let n = self.admit(len);
        if n > 0 {
            self.sink()?.file(file, offset, n);
            self.body_bytes += n;
        }
        Ok(())
    }

    /// Bytes a Content-Length response still owes, if that is how it is bounded.
    pub fn length_left(&self) -> Option<u64> {
        self.left
    }

    /// Whether anything the app yields from now on would be sent.
    pub fn wants_body(&self) -> bool {
        self.left != Some(0)
    }

    /// Ends the body. Returns false if a Content-Length response came up short: then the
    /// sink was told the body is cut, so the client can tell.
    pub fn finish(&mut self) -> PyResult<bool> {
        self.send_headers(Some(0))?;
        let short = self.left.is_some_and(|left| left > 0);
        let sink = self.sink()?;
        if short {
            sink.abort();
        } else {
            sink.end();
        }
        Ok(!short)
    }

    /// Ends a response whose headers are out after an error: no clean end of body follows
    /// and the connection closes, so the client can tell it was cut short.
    pub fn abort(&mut self) {
        if let Some(sink) = self.sink.as_mut() {
            sink.abort();
        }
        self.left = Some(0);
    }

    /// Replaces a response whose headers were not sent with a plain 500.
    pub fn internal_error(&mut self) {
        if let Some(sink) = self.sink.as_mut() {
            sink.fail();
        }
        self.head.status = 500;
        self.started = true;
        self.headers_sent = true;
        self.left = Some(0);
    }

    /// Hands what is queued toward the client; if the client is behind, waits for it with
    /// the GIL released (backpressure). A gone client is an `OSError` in the app.
    pub fn push(&mut self, py: Python<'_>) -> PyResult<()> {
        let sink = self.sink()?;
        if sink.push()? == Flow::Wait {
            py.detach(|| crate::wsgi::waiting_on_client(|| sink.wait()))?;
        }
        Ok(())
    }

    /// Hands what is queued toward the client without waiting: whether the client is
    /// behind (the caller then pauses or waits).
    pub fn push_now(&mut self) -> Result<Flow, Gone> {
        match self.sink.as_mut() {
            Some(sink) => sink.push(),
            None => Ok(Flow::Wait),
        }
    }

    /// Whether the client is known to be gone.
    pub fn client_gone(&self) -> bool {
        self.sink.as_ref().is_some_and(|s| s.gone())
    }
}

/// One response as the app sees it: the app is handed this object's bound
/// `start_response` method, which returns its bound `write`.
///
/// Bound methods, not the object itself made callable: a call to a method goes through
/// CPython's vectorcall with its arguments in place, where a call to an object makes a
/// tuple of them for `__call__` (and frees it), on every response.
#[pyclass(module = "qiao._qiao")]
pub struct StartResponse {
    pub resp: Option<Response>,
}

impl StartResponse {
    /// The response, while the request runs.
    fn resp(&mut self) -> PyResult<&mut Response> {
        self.resp
            .as_mut()
            .ok_or_else(|| PyAssertionError::new_err("this response is already finished"))
    }
}

/// A connection's `StartResponse` with its two bound methods, kept from one of its
/// requests to the next instead of made and freed for each: three Python objects fewer
/// to allocate, initialise and free on each later request of a keep-alive connection.
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
        /// # Safety
        /// `method` is a live object.
        unsafe fn alone(method: *mut ffi::PyObject) -> bool {
            // SAFETY: the object is live (the caller's promise); it is read as a builtin
            // method object only once its type says it is one.
            unsafe {
                ffi::Py_REFCNT(method) == 1
                    && ffi::PyCFunction_Check(method) != 0
                    && (*method.cast::<ffi::PyCFunctionObject>())
                        .m_weakreflist
                        .is_null()
            }
        }
        // SAFETY: all three are live objects (we hold them).
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
        resp.body(data)?;
        resp.push(py)
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
/// `getattr` ends up doing, after searching the type and the instance, each time a
/// response binds the method.
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

#[cfg(test)]
mod tests {
    //! The head a response hands its sink and the body it lets through (PEP 3333 "The
    //! start_response() Callable" and "Handling the Content-Length Header"); the bytes on
    //! the wire are the HTTP/1.1 framing's business (`http::framing`).
    use super::*;
    use crate::wsgi::testing::{py_run, Event, MemorySink};
    use pyo3::types::PyList;

    /// Runs start_response with `headers`, sends `body` as the server would (with its
    /// total as the known length when `known`), and returns what the sink was told.
    fn respond(
        head_request: bool,
        status: &str,
        headers: &[(&str, &str)],
        body: &[&[u8]],
        known: bool,
    ) -> Vec<Event> {
        py_run(|py| {
            let (sink, events) = MemorySink::new(None);
            let mut r = Response::new(Box::new(sink), head_request);
            let list = PyList::empty(py);
            for (k, v) in headers {
                list.append((k, v)).unwrap();
            }
            r.start(&PyString::new(py, status), &list, None).unwrap();
            let total = body.iter().map(|b| b.len() as u64).sum();
            r.send_headers(known.then_some(total)).unwrap();
            for b in body {
                r.body(&PyBytes::new(py, b)).unwrap();
            }
            r.finish().unwrap();
            let events = events.lock().unwrap().clone();
            events
        })
    }

    fn body(b: &[u8]) -> Event {
        Event::Body(b.to_vec())
    }

    #[test]
    fn a_known_length_is_computed() {
        // PEP 3333 "Handling the Content-Length Header": the server may compute it.
        let events = respond(false, "200 OK", &[], &[b"hello"], true);
        assert_eq!(
            events,
            [
                Event::Head(200, BodyLength::Computed(5)),
                body(b"hello"),
                Event::End
            ]
        );
    }

    #[test]
    fn an_unknown_length_is_left_to_the_framing() {
        let events = respond(false, "200 OK", &[], &[b"ab", b"cde"], false);
        assert_eq!(
            events,
            [
                Event::Head(200, BodyLength::Unknown),
                body(b"ab"),
                body(b"cde"),
                Event::End
            ]
        );
    }

    #[test]
    fn the_apps_content_length_bounds_the_body() {
        // PEP 3333: the server must not send more than the declared Content-Length.
        let events = respond(
            false,
            "200 OK",
            &[("Content-Length", "3")],
            &[b"abcdef"],
            false,
        );
        assert_eq!(
            events,
            [
                Event::Head(200, BodyLength::Declared(3)),
                body(b"abc"),
                Event::End
            ]
        );
        // Fewer than declared: cut, so the client can tell.
        let events = respond(
            false,
            "200 OK",
            &[("Content-Length", "9")],
            &[b"abc"],
            false,
        );
        assert_eq!(events.last(), Some(&Event::Abort));
    }

    #[test]
    fn head_and_no_content_carry_no_body() {
        // RFC 9110 §6.4.1 / §9.3.2: HEAD, 204 and 304 responses have no content; HEAD
        // announces the length GET would have had.
        let events = respond(true, "200 OK", &[], &[b"hello"], true);
        assert_eq!(
            events,
            [
                Event::Head(200, BodyLength::None { computed: Some(5) }),
                Event::End
            ]
        );
        let events = respond(false, "204 No Content", &[], &[b"x"], false);
        assert_eq!(
            events,
            [
                Event::Head(204, BodyLength::None { computed: None }),
                Event::End
            ]
        );
        let events = respond(false, "304 Not Modified", &[], &[], true);
        assert_eq!(
            events[0],
            Event::Head(304, BodyLength::None { computed: None })
        );
    }

    #[test]
    fn the_apps_date_and_server_are_noted() {
        py_run(|py| {
            let (sink, _) = MemorySink::new(None);
            let mut r = Response::new(Box::new(sink), false);
            let list = PyList::empty(py);
            list.append(("Server", "mine")).unwrap();
            list.append(("Date", "Sun, 06 Nov 1994 08:49:37 GMT"))
                .unwrap();
            r.start(&PyString::new(py, "200 OK"), &list, None).unwrap();
            assert!(r.head.has_server && r.head.has_date);
            assert_eq!(
                r.head.lines,
                b"200 OK\r\nServer: mine\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            );
        });
    }

    #[test]
    fn bad_statuses_and_headers_raise() {
        // PEP 3333 "The start_response() Callable": status and headers are checked.
        py_run(|py| {
            let check = |status: &str, name: &str, value: &str| {
                let (sink, _) = MemorySink::new(None);
                let mut r = Response::new(Box::new(sink), false);
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

    /// PEP 3333 defines no interim responses: a 1xx sent as the response would desync the
    /// connection (the client takes it as interim and the next response as this one's).
    #[test]
    fn interim_statuses_are_refused() {
        py_run(|py| {
            for status in ["100 Continue", "101 Switching Protocols", "103 Early Hints"] {
                let (sink, _) = MemorySink::new(None);
                let mut r = Response::new(Box::new(sink), false);
                let err = r
                    .start(&PyString::new(py, status), &PyList::empty(py), None)
                    .unwrap_err();
                assert!(err.is_instance_of::<PyValueError>(py), "{status}");
                assert!(!r.started);
            }
        });
    }

    #[test]
    fn second_call_needs_exc_info() {
        py_run(|py| {
            let (sink, _) = MemorySink::new(None);
            let mut r = Response::new(Box::new(sink), false);
            let status = PyString::new(py, "200 OK");
            let empty = PyList::empty(py);
            r.start(&status, &empty, None).unwrap();
            let err = r.start(&status, &empty, None).unwrap_err();
            assert!(err.is_instance_of::<PyAssertionError>(py));
        });
    }
}
