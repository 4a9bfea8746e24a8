//! The WSGI layer's two narrow interfaces to whatever carries an exchange: the response
//! sink it writes the response into, and the body source it reads a request body from.
//! An HTTP/1.1 connection implements them today; a TLS stream or an HTTP/2 stream can
//! implement the same. The WSGI layer never sees a socket: only the owner of the
//! transport (the connection) reads and writes it.

use std::any::Any;
use std::io;
use std::os::fd::OwnedFd;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub(crate) use crate::http::BodyLength;

/// A response's head as the application gave it, checked (PEP 3333 "The
/// start_response() Callable").
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    /// The status (`200 OK`) and then the application's field lines (`Name: value`), each
    /// ending in CRLF: what the transport's own framing starts from.
    pub lines: Vec<u8>,
    /// The application's `Content-Length`, if it sent one.
    pub content_length: Option<u64>,
    pub has_date: bool,
    pub has_server: bool,
}

/// Whether a producer may go on after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// What was pushed is on its way: ask the application for more.
    Go,
    /// The client is behind: wait (`ResponseSink::wait`) or pause before asking for more.
    Wait,
}

/// The client went away, or stopped reading for longer than the write timeout: nothing
/// more will be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl From<Gone> for PyErr {
    fn from(_: Gone) -> PyErr {
        pyo3::exceptions::PyOSError::new_err("client disconnected")
    }
}

/// Where a response goes. Calls come in this order: `head` once, then any number of
/// `block`/`file` (only body bytes the application may send: the WSGI layer keeps the
/// response within its Content-Length), then `end` or `abort`; `push`/`wait` at any
/// point after `head`, and `fail` instead of `head` when the application failed first.
pub trait ResponseSink: Send + Sync {
    /// Starts the response with its head and what is known of its body's length.
    fn head(&mut self, head: &ResponseHead, length: BodyLength);

    /// Queues a block of body, by reference where that saves a copy.
    fn block(&mut self, block: &Bound<'_, PyBytes>);

    /// Queues a copy of a piece of body (the part of a block that fits a Content-Length).
    fn bytes(&mut self, data: &[u8]);

    /// Queues `len` bytes of `file` from `offset`, sent from the file itself.
    fn file(&mut self, file: OwnedFd, offset: u64, len: u64);

    /// The body is complete.
    fn end(&mut self);

    /// The body stops short after an error: the client must be able to tell it is
    /// incomplete (no clean end, the connection closes).
    fn abort(&mut self);

    /// Answers with a plain 500 in place of a response whose head was not sent.
    fn fail(&mut self);

    /// Hands what is queued on toward the client without waiting for it.
    fn push(&mut self) -> Result<Flow, Gone>;

    /// Blocks (call it with the GIL released) until what was pushed is on its way.
    fn wait(&mut self) -> Result<(), Gone>;

    /// Whether the client is known to be gone.
    fn gone(&self) -> bool;

    /// For the owner of the transport to take its sink back whole.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// A request body that is not in memory (a large one, spooled to a file): read in
/// pieces. The WSGI layer reads through this, whatever holds the bytes.
pub trait BodySource: Send + Sync {
    /// Fills the front of `buf` with the next bytes of the body: how many (0 at its end).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Bytes not yet read.
    fn remaining(&self) -> u64;
}
