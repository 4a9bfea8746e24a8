//! `wsgi.input` (PEP 3333 "Input and Error Streams"): the request body, decoded, which
//! never reads past its end. Small bodies arrive whole; large ones and those behind
//! `Expect: 100-continue` are read from the socket as the app asks for them.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::{PyOSError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::{ChunkedDecoder, HttpError};
use crate::server::sockio;

/// A body written whole to an unnamed temporary file before the app ran.
struct Spooled {
    file: std::fs::File,
    len: u64,
    /// Bytes already read into the Input's buffer.
    read: u64,
}

/// How much of a spooled body is read from its file at a time.
const SPOOL_READ: usize = 64 * 1024;

/// How the rest of a streamed body is framed on the wire.
pub enum Framing {
    /// Bytes of a Content-Length body still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// A body still (partly) on the socket.
pub struct Stream {
    pub fd: RawFd,
    /// Bytes read from the socket and not yet decoded; after the body, the next request.
    pub raw: BytesMut,
    pub framing: Framing,
    /// `Expect: 100-continue` was asked and the interim response is still owed.
    pub send_continue: bool,
    /// Decoded bytes so far, checked against the body limit.
    pub total: u64,
    pub max_body: u64,
    pub timeout: Duration,
    /// Set once the body's end was read.
    pub done: bool,
    /// Set when reading failed: the connection cannot be reused.
    pub failed: bool,
}

impl Stream {
    /// Reads and decodes more of the body into `out`; returns false at the end of the body.
    fn fill(&mut self, py: Python<'_>, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        if self.send_continue {
            self.send_continue = false;
            let fd = self.fd;
            let timeout = self.timeout;
            py.detach(|| sockio::send_all(fd, b"HTTP/1.1 100 Continue\r\n\r\n", timeout))?;
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let before = out.len();
            self.decode(out)?;
            if out.len() > before || self.done {
                self.total += (out.len() - before) as u64;
                if self.max_body > 0 && self.total > self.max_body {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request body larger than max_request_body_size",
                    ));
                }
                return Ok(out.len() > before || !self.done);
            }
            // Need bytes from the client.
            self.raw.reserve(64 * 1024);
            let fd = self.fd;
            let raw = &mut self.raw;
            let n = py.detach(|| -> io::Result<usize> {
                loop {
                    match sockio::recv_uninit(fd, raw.spare_capacity_mut())? {
                        Some(n) => return Ok(n),
                        None => sockio::wait(fd, false, deadline)?,
                    }
                }
            })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection before the end of the body",
                ));
            }
            // SAFETY: recv initialised `n` bytes past the old length.
            unsafe { self.raw.set_len(self.raw.len() + n) };
        }
    }

    fn decode(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.framing {
            Framing::Length(left) => {
                let n = (*left).min(self.raw.len() as u64) as usize;
                out.extend_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                *left -= n as u64;
                self.done = *left == 0;
            }
            Framing::Chunked(dec) => {
                let used = dec.decode(&self.raw, out).map_err(bad_body)?;
                self.raw.advance(used);
                self.done = dec.is_done();
            }
        }
        Ok(())
    }
}

fn bad_body(e: HttpError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.detail())
}

/// A `bytes` object as the storage of a `Bytes`, so the body can be read in pieces too.
struct Held {
    /// Only kept, never read: it is what keeps `bytes` valid.
    _obj: Py<PyBytes>,
    /// The object's contents, which neither change nor move while `obj` keeps it alive.
    bytes: *const [u8],
}

// SAFETY: `Py` is Send, and `bytes` points into the immutable object it keeps alive.
unsafe impl Send for Held {}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `bytes`.
        unsafe { &*self.bytes }
    }
}

#[pyclass(module = "qiao._qiao")]
pub struct Input {
    /// Body bytes ready for the app; `pos` is how far it has read.
    data: Bytes,
    pos: usize,
    /// The `bytes` object `data` lies in, while the app may still read it whole.
    whole: Option<Py<PyBytes>>,
    /// The part of the body still on the socket, if any.
    pub stream: Option<Box<Stream>>,
    /// A spooled body, read from its file piece by piece.
    spool: Option<Spooled>,
}

impl Input {
    pub fn buffered(data: Bytes) -> Input {
        Input {
            data,
            pos: 0,
            whole: None,
            stream: None,
            spool: None,
        }
    }

    /// A body read whole into `obj`: reading it all at once returns `obj` itself.
    pub fn object(py: Python<'_>, obj: Py<PyBytes>) -> Input {
        Input {
            data: Bytes::from_owner(Held {
                bytes: obj.as_bytes(py) as *const [u8],
                _obj: obj.clone_ref(py),
            }),
            whole: Some(obj),
            ..Input::buffered(Bytes::new())
        }
    }

    pub fn streamed(already: Vec<u8>, stream: Box<Stream>) -> Input {
        Input {
            stream: Some(stream),
            ..Input::buffered(Bytes::from(already))
        }
    }

    /// A body already written whole to `file` (`len` bytes from its start).
    pub fn spooled(file: std::fs::File, len: u64) -> Input {
        Input {
            spool: Some(Spooled { file, len, read: 0 }),
            ..Input::buffered(Bytes::new())
        }
    }

    /// Reads the next piece of a spooled body (GIL released); false at its end.
    fn more_from_spool(&mut self, py: Python<'_>) -> PyResult<bool> {
        use std::os::unix::fs::FileExt;
        let Some(spool) = self.spool.as_mut() else {
            return Ok(false);
        };
        let left = spool.len - spool.read;
        if left == 0 {
            return Ok(false);
        }
        let kept = self.data.len() - self.pos;
        let want = left.min(SPOOL_READ as u64) as usize;
        let mut next = vec![0u8; kept + want];
        next[..kept].copy_from_slice(&self.data[self.pos..]);
        let (file, offset) = (&spool.file, spool.read);
        let got = py
            .detach(|| file.read_at(&mut next[kept..], offset))
            .map_err(|e| PyOSError::new_err(format!("cannot read the spooled body: {e}")))?;
        if got == 0 {
            spool.read = spool.len; // the file is shorter than written: end the body
            return Ok(false);
        }
        next.truncate(kept + got);
        spool.read += got as u64;
        self.data = Bytes::from(next);
        self.pos = 0;
        Ok(true)
    }

    fn available(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// Reads more of a spooled or streamed body; false at its end.
    fn more(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.spool.is_some() {
            return self.more_from_spool(py);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        let mut next = Vec::with_capacity(self.data.len() - self.pos + 16 * 1024);
        next.extend_from_slice(&self.data[self.pos..]);
        let got = match stream.fill(py, &mut next) {
            Ok(got) => got,
            Err(e) => {
                stream.failed = true;
                stream.done = true;
                return Err(PyOSError::new_err(e.to_string()));
            }
        };
        self.data = Bytes::from(next);
        self.pos = 0;
        Ok(got)
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        if self.pos == 0 && n == self.data.len() && n > 0 {
            if let Some(whole) = self.whole.take() {
                self.data = Bytes::new();
                return whole.into_bound(py);
            }
        }
        let out = PyBytes::new(py, &self.data[self.pos..self.pos + n]);
        self.pos += n;
        out
    }

    /// Whether the body was read to its end (so the connection can carry another request).
    pub fn finished(&self) -> bool {
        self.stream.as_ref().is_none_or(|s| s.done && !s.failed)
    }
}

/// `size` as PEP 3333 callers pass it: None or negative means "all".
fn limit(size: Option<isize>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let want = limit(size);
        while want.is_none_or(|w| self.available().len() < w) {
            if !self.more(py)? {
                break;
            }
        }
        let n = want.map_or(self.available().len(), |w| w.min(self.available().len()));
        Ok(self.take(py, n))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let want = limit(size);
        let mut scanned = 0;
        loop {
            let avail = self.available();
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let n = scanned + i + 1;
                return Ok(self.take(py, want.map_or(n, |w| w.min(n))));
            }
            scanned = avail.len();
            if want.is_some_and(|w| avail.len() >= w) || !self.more(py)? {
                let n = self.available().len();
                return Ok(self.take(py, want.map_or(n, |w| w.min(n))));
            }
        }
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.readline(py, None)?;
        if line.as_bytes().is_empty() {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(line)
    }
}
