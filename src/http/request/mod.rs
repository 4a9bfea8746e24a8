//! Parses an HTTP/1.x request head (request line and header section) from the front of a read buffer into a `RequestHead`, running the scan, the request-line and the field rules in turn.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::error::HttpError;
use fields::{trim_ows, Fields, Outcome};
use scan::{check_method, parse_version, scan_head};
pub(crate) use target::is_valid_host;
use target::split_target;

pub use fields::parse_content_length;
pub use target::percent_decode;

mod fields;
mod h2;
mod scan;
mod target;
#[cfg(test)]
mod tests;

/// Size limits applied while reading a request head; 0 in any field means "unlimited".
///
/// Owned by the server configuration and borrowed by every `parse_head` call.
/// Defaults match gunicorn's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line in bytes, not counting its CRLF (gunicorn
    /// `limit_request_line`); bounds the method + target + version a client
    /// can make us buffer. Exceeding it answers 414.
    pub max_request_line: usize,
    /// Most header field lines in one head (gunicorn `limit_request_fields`);
    /// bounds the per-request header vector. Exceeding it answers 431.
    pub max_headers: usize,
    /// Longest single header field line in bytes, counting its CRLF (gunicorn
    /// `limit_request_field_size`). Exceeding it answers 431.
    pub max_header_field_size: usize,
    /// Longest whole head (request line through the blank line) in bytes;
    /// bounds the read buffer before any request is dispatched. Exceeding it answers 431.
    pub max_header_block: usize,
    /// Largest body a client may declare with Content-Length (the connection
    /// layer applies it to chunked bodies as they arrive). Exceeding it answers 413.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 4094,
            max_headers: 100,
            max_header_field_size: 8190,
            max_header_block: 65_536,
            max_body: 1 << 30,
        }
    }
}

/// The protocol version of a request; HTTP/1.2 to HTTP/1.9 are served as 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: connections close unless the client asks for keep-alive.
    Http10,
    /// HTTP/1.1 (and higher 1.x minors, RFC 9110 §2.5).
    Http11,
    /// HTTP/2 (RFC 9113): a stream of a multiplexed connection.
    Http2,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: no Content-Length nor Transfer-Encoding, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes follow the head (never 0: that is `Empty`).
    Length(u64),
    /// A chunked body follows; decode it with `ChunkedDecoder`.
    Chunked,
}

/// One parsed request head; every range indexes into `buf`.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The raw head (request line through the blank line), split off the read
    /// buffer; owned here so the ranges stay valid while the request is served.
    pub buf: Bytes,
    /// The method token, case preserved (methods are case-sensitive).
    pub method: Range<usize>,
    /// The request-target exactly as sent.
    pub target: Range<usize>,
    /// The raw path (not percent-decoded): for origin-form the part before
    /// `?`; for absolute-form the part after the authority, and an empty range
    /// when that is empty (`path()` then returns `/`); `*` for asterisk-form;
    /// the authority for CONNECT.
    pub path: Range<usize>,
    /// The raw query without its `?`; an empty range if there is none.
    pub query: Range<usize>,
    /// The version the request is served as.
    pub version: Version,
    /// The version token exactly as sent, e.g. `HTTP/1.1`.
    pub version_raw: Range<usize>,
    /// (name, value) of each field line in the order received; values exclude
    /// surrounding whitespace.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// How the body that follows the head is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue` on HTTP/1.1 and waits for a 100.
    pub expect_continue: bool,
    /// The host the request is addressed to: the authority of an absolute-form
    /// target (RFC 9112 §3.2.2), otherwise the Host header value, if present.
    pub host: Option<Range<usize>>,
}

impl RequestHead {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> &[u8] {
        &self.buf[self.method.clone()]
    }

    /// The request-target exactly as sent.
    pub fn target(&self) -> &[u8] {
        &self.buf[self.target.clone()]
    }

    /// `METHOD path` as one run of the request line, when the line holds it so (an
    /// origin-form target: the path right after the method and its space): the head from
    /// the method on, and the run's length at its start (what follows lets a reader take
    /// whole words).
    pub fn method_and_path(&self) -> Option<(&[u8], usize)> {
        let adjoining = !self.path.is_empty()
            && self.path.start == self.method.end + 1
            && self.buf.get(self.method.end) == Some(&b' ');
        adjoining.then(|| {
            (
                &self.buf[self.method.start..],
                self.path.end - self.method.start,
            )
        })
    }

    /// The raw (still percent-encoded) path; `/` for an absolute-form target without one.
    pub fn path(&self) -> &[u8] {
        if self.path.is_empty() {
            b"/"
        } else {
            &self.buf[self.path.clone()]
        }
    }

    /// The raw query string without `?`, empty if none.
    pub fn query(&self) -> &[u8] {
        &self.buf[self.query.clone()]
    }

    /// The version token exactly as sent.
    pub fn version_raw(&self) -> &[u8] {
        &self.buf[self.version_raw.clone()]
    }

    /// The number of header field lines.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The name of header `i`, case as sent.
    pub fn header_name(&self, i: usize) -> &[u8] {
        &self.buf[self.headers[i].0.clone()]
    }

    /// The value of header `i`, without surrounding whitespace.
    pub fn header_value(&self, i: usize) -> &[u8] {
        &self.buf[self.headers[i].1.clone()]
    }

    /// All (name, value) pairs in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (&self.buf[n.clone()], &self.buf[v.clone()]))
    }

    /// The value of the first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The host the request is addressed to, as `uri-host [ ":" port ]`: the
    /// authority of an absolute-form target, which RFC 9112 §3.2.2 puts in place of
    /// the Host header, otherwise the Host header value, if present.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.clone().map(|r| &self.buf[r])
    }

    /// The declared Content-Length (None for chunked or no body).
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }
}

/// Header storage on the stack for heads with at most this many fields.
const STACK_HEADERS: usize = 64;

/// httparse's error as ours: 400 with a fixed reason, or 431 for too many fields.
fn map_httparse(err: httparse::Error) -> HttpError {
    match err {
        httparse::Error::HeaderName => HttpError::BadRequest("invalid header field name"),
        httparse::Error::HeaderValue => HttpError::BadRequest("invalid header field value"),
        httparse::Error::NewLine => HttpError::BadRequest("invalid line ending"),
        httparse::Error::Token => HttpError::BadRequest("invalid request line"),
        httparse::Error::Version => HttpError::BadRequest("invalid HTTP version"),
        httparse::Error::TooManyHeaders => HttpError::HeaderFieldsTooLarge,
        httparse::Error::Status => HttpError::BadRequest("invalid request line"),
    }
}

/// The offset range of `part` inside `base`. httparse only returns
/// sub-slices of the buffer it parsed (empty values point into it too); a
/// slice from anywhere else would be a bug, caught in debug builds and made
/// an empty range, never a panic, in release builds.
fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    if start > base.len() || part.len() > base.len() - start {
        debug_assert!(part.is_empty(), "slice outside the parsed head");
        return 0..0;
    }
    start..start + part.len()
}

/// Parses one request head from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed (not an error). On success the
/// head's bytes are split off the front of `buf`, which then starts at the
/// body or the next request. Leading empty lines are consumed even when the
/// head is still incomplete.
pub fn parse_head(buf: &mut BytesMut, limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
    // RFC 9112 §2.2: "a server that is expecting to receive and parse a
    // request-line SHOULD ignore at least one empty line (CRLF) received
    // prior to the request-line."
    let mut skip = 0;
    while buf.len() >= skip + 2 && buf[skip] == b'\r' && buf[skip + 1] == b'\n' {
        skip += 2;
    }
    buf.advance(skip);
    // A lone CR may be the first half of one more empty line; wait for the next byte.
    if buf.is_empty() || &buf[..] == b"\r" {
        return Ok(None);
    }

    check_method(buf, limits)?;
    let Some(shape) = scan_head(buf, limits)? else {
        return Ok(None);
    };
    let ver = parse_version(&buf[..shape.line_len])?;

    let patched;
    let head: &[u8] = if ver.higher_minor {
        // httparse accepts only HTTP/1.0 and HTTP/1.1; parse a copy whose
        // minor digit reads 1. The layout is identical, so ranges into the
        // copy are ranges into the original.
        let mut copy = buf[..shape.head_len].to_vec();
        copy[ver.start + 7] = b'1';
        patched = copy;
        &patched
    } else {
        &buf[..shape.head_len]
    };

    // Header storage sized by the scan: uninitialised, so nothing is zeroed
    // per request; on the heap only for unusually many fields.
    let mut stack: [MaybeUninit<httparse::Header<'_>>; STACK_HEADERS] =
        [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let storage = if shape.fields <= STACK_HEADERS {
        &mut stack[..shape.fields]
    } else {
        heap.resize_with(shape.fields, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, storage) {
        Ok(httparse::Status::Complete(n)) if n == shape.head_len => {}
        // The scan found the blank line, so httparse must too; anything else
        // means the two disagree about line structure: refuse the request.
        Ok(_) => return Err(HttpError::BadRequest("malformed header section")),
        Err(e) => return Err(map_httparse(e)),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HttpError::BadRequest("invalid request line"));
    };
    let method_r = range_in(head, method.as_bytes());
    let target_r = range_in(head, target.as_bytes());
    let parts = split_target(method.as_bytes(), target.as_bytes())?;
    let version = ver.version;

    let mut headers = Vec::with_capacity(req.headers.len());
    let mut fields = Fields::new(version);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim_ows(h.value);
        let value_r = range_in(head, value);
        fields.add(name, value, &value_r)?;
        headers.push((range_in(head, name), value_r));
    }
    let Outcome {
        host,
        framing,
        keep_alive,
        expect_continue,
    } = fields.finish(limits)?;

    let t0 = target_r.start;
    let path = parts.path.start + t0..parts.path.end + t0;
    let query = parts.query.start + t0..parts.query.end + t0;
    // RFC 9112 §3.2.2: "When an origin server receives a request with an
    // absolute-form of request-target, the origin server MUST ignore the received
    // Host header field (if any) and instead use the host information of the
    // request-target." (The Host header was still checked by `Fields`.)
    let host = match parts.authority {
        Some(a) => Some(a.start + t0..a.end + t0),
        None => host,
    };
    let version_raw = ver.start..ver.start + 8;
    let head_len = shape.head_len;
    let buf = buf.split_to(head_len).freeze();
    Ok(Some(RequestHead {
        buf,
        method: method_r,
        target: target_r,
        path,
        query,
        version,
        version_raw,
        headers,
        framing,
        keep_alive,
        expect_continue,
        host,
    }))
}
