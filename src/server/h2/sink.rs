//! The response sink of an HTTP/2 stream: the head becomes the fields of a HEADERS frame,
//! the body DATA frames, both sent by the stream's task on the event loop, which alone
//! talks to the `h2` connection. Inline, each pushed block pauses the application until
//! the task has handed it to the connection and let the connection write it (PEP 3333: a
//! block is sent before the next is asked for); pooled, the blocks travel through a
//! `Channel` as an HTTP/1.1 response's do.

use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE, SERVER};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::http::{write_http_date, BodyLength, Canned};
use crate::server::channel::Channel;
use crate::server::outbuf::OutBuf;
use crate::wsgi::sink::{Flow, Gone, ResponseHead, ResponseSink};

/// How the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Clean,
    /// Cut short: the stream is reset, so the client knows it is incomplete.
    Abort,
}

/// What the sink tells the stream's task besides body bytes: set from the application's
/// thread, taken on the event loop.
#[derive(Default)]
pub(super) struct Told {
    /// The response's head, until the task sends it.
    pub(super) head: Option<http::Response<()>>,
    /// The response carries no body (HEAD, 204, 304, or a length of 0).
    pub(super) empty: bool,
    pub(super) end: Option<End>,
}

pub(super) struct H2Sink {
    /// Body bytes not yet handed to the task.
    pub(super) out: OutBuf,
    /// `Some`: the application runs on a pool thread and hands its bytes over here.
    pub(super) channel: Option<Arc<Channel>>,
    pub(super) told: Arc<Mutex<Told>>,
    gone: bool,
}

impl H2Sink {
    pub(super) fn new(channel: Option<Arc<Channel>>) -> H2Sink {
        H2Sink {
            out: OutBuf::default(),
            channel,
            told: Arc::default(),
            gone: false,
        }
    }

    pub(super) fn told(&self) -> MutexGuard<'_, Told> {
        self.told.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the client gone (the stream was reset): nothing more is sent.
    pub(super) fn lost(&mut self) {
        self.gone = true;
        self.out.clear();
    }

    /// Wakes the task of a pooled response to look at what it was told.
    fn nudge(&mut self) {
        if let Some(chan) = &self.channel {
            let _ = chan.put(&mut self.out);
        }
    }
}

/// The head as HTTP/2 fields (RFC 9113 §8.3.2: `:status`, no reason phrase, lower-case
/// names; the application's hop-by-hop fields were refused before).
fn response(head: &ResponseHead, length: BodyLength) -> http::Response<()> {
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let fields = resp.headers_mut();
    // The first line is the status line.
    for line in head.lines.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            fields.append(name, value);
        }
    }
    let announced = match length {
        BodyLength::Computed(n) | BodyLength::None { computed: Some(n) } => Some(n),
        _ => None,
    };
    if let Some(n) = announced {
        fields.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    if !head.has_date {
        let mut date = Vec::with_capacity(29);
        write_http_date(&mut date);
        if let Ok(value) = HeaderValue::from_bytes(&date) {
            fields.insert(DATE, value);
        }
    }
    if !head.has_server {
        fields.insert(SERVER, HeaderValue::from_static("qiao"));
    }
    resp
}

/// The plain-text response the server makes itself (a failed application, a refused
/// request), as HTTP/2 fields and a body: the HTTP/1.1 answer's status and body
/// (`Canned`), without its connection-specific fields.
pub(super) fn canned(answer: Canned) -> (http::Response<()>, Vec<u8>) {
    let mut body = Vec::with_capacity(80);
    answer.write_body(&mut body);
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(answer.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let fields = resp.headers_mut();
    fields.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    fields.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    fields.insert(SERVER, HeaderValue::from_static("qiao"));
    (resp, body)
}

impl ResponseSink for H2Sink {
    fn head(&mut self, head: &ResponseHead, length: BodyLength) {
        {
            let mut told = self.told();
            told.empty = matches!(length, BodyLength::None { .. })
                || matches!(length, BodyLength::Declared(0) | BodyLength::Computed(0));
            told.head = Some(response(head, length));
        }
        self.nudge();
    }

    fn block(&mut self, block: &Bound<'_, PyBytes>) {
        self.out.push_bytes(block);
    }

    fn bytes(&mut self, data: &[u8]) {
        self.out.extend(data);
    }

    fn file(&mut self, file: OwnedFd, offset: u64, len: u64) {
        self.out.push_file(file, offset, len as usize);
    }

    fn end(&mut self) {
        self.told().end = Some(End::Clean);
    }

    fn abort(&mut self) {
        self.told().end = Some(End::Abort);
    }

    fn fail(&mut self) {
        let (head, body) = canned(Canned::InternalError);
        self.out.clear();
        self.out.extend(&body);
        let mut told = self.told();
        told.head = Some(head);
        told.empty = false;
        told.end = Some(End::Clean);
    }

    fn push(&mut self) -> Result<Flow, Gone> {
        if self.gone {
            return Err(Gone);
        }
        match &self.channel {
            Some(chan) => chan.put(&mut self.out),
            // Inline: the task sends the block from the event loop, then resumes us.
            None if self.out.is_empty() => Ok(Flow::Go),
            None => Ok(Flow::Wait),
        }
    }

    /// Pooled, blocks until the task caught up. Inline there is nothing to wait for here
    /// (the event loop is this thread): what `write()` gave stays queued for the task.
    fn wait(&mut self) -> Result<(), Gone> {
        match &self.channel {
            Some(chan) => chan.wait(),
            None if self.gone => Err(Gone),
            None => Ok(()),
        }
    }

    fn gone(&self) -> bool {
        self.gone || self.channel.as_ref().is_some_and(|c| c.is_gone())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &str, has_date: bool) -> ResponseHead {
        ResponseHead {
            status: lines[..3].parse().unwrap(),
            lines: lines.as_bytes().to_vec(),
            content_length: None,
            has_date,
            has_server: false,
        }
    }

    /// RFC 9113 §8.3.2: only `:status`, no reason phrase; the application's fields kept in
    /// order (repeated ones too), names in lower case; Date and Server added.
    #[test]
    fn a_head_becomes_http2_fields() {
        let h = head(
            "201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            false,
        );
        let resp = response(&h, BodyLength::Computed(5));
        assert_eq!(resp.status(), 201);
        let f = resp.headers();
        assert_eq!(f["content-type"], "text/plain");
        let cookies: Vec<_> = f.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(f["content-length"], "5");
        assert_eq!(f["server"], "qiao");
        assert_eq!(f["date"].len(), 29);
    }

    /// RFC 9110 §9.3.2: a HEAD response announces the length GET would have had.
    #[test]
    fn a_head_response_keeps_the_computed_length() {
        let h = head("200 OK\r\nDate: x\r\n", true);
        let resp = response(&h, BodyLength::None { computed: Some(42) });
        assert_eq!(resp.headers()["content-length"], "42");
        assert_eq!(resp.headers()["date"], "x");
    }

    #[test]
    fn canned_answers_say_what_went_wrong() {
        let (resp, body) = canned(Canned::Refused(crate::http::HttpError::PayloadTooLarge));
        assert_eq!(resp.status(), 413);
        // The same body as the HTTP/1.1 answer's (one writer, `Canned`).
        assert_eq!(body, b"413 Content Too Large: request body too large\n");
        assert_eq!(resp.headers()["content-length"], body.len().to_string());
    }
}
