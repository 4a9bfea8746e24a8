//! Parses an HTTP/1.x request head (request line and header section) from the front of a read buffer.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::error::HttpError;
use super::response::is_tchar;

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
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
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

/// `0` means unlimited.
fn limit(n: usize) -> usize {
    if n == 0 {
        usize::MAX
    } else {
        n
    }
}

/// The index of the first LF, eight bytes at a time.
fn find_lf(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        // A byte of `x` is zero where the input byte is LF; the classic
        // "has a zero byte" test marks the first such byte exactly (the
        // borrow can only create false marks above it).
        let x = u64::from_le_bytes(le) ^ LFS;
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| base + i)
}

/// Where the head's lines are, found before any parsing.
struct Shape {
    /// Length of the request line without its CRLF.
    line_len: usize,
    /// Length of the whole head, final blank line included.
    head_len: usize,
    /// Number of header field lines.
    fields: usize,
}

/// Finds the end of the head, enforcing the size limits and CRLF line endings
/// as it goes, so that a client can never make us buffer past a limit.
fn scan_head(buf: &[u8], limits: &Limits) -> Result<Option<Shape>, HttpError> {
    let line_limit = limit(limits.max_request_line);
    let field_limit = limit(limits.max_header_field_size);
    let block_limit = limit(limits.max_header_block);
    let max_fields = limit(limits.max_headers);

    // A request line of at most `line_limit` bytes has its LF within the
    // first `line_limit + 2` bytes; no LF there means it is too long, even if
    // the rest has not arrived yet.
    let window = line_limit.saturating_add(2).min(buf.len());
    let Some(lf) = find_lf(&buf[..window]) else {
        if buf.len() >= line_limit.saturating_add(2) {
            return Err(HttpError::UriTooLong);
        }
        if buf.len() > block_limit {
            return Err(HttpError::HeaderFieldsTooLarge);
        }
        return Ok(None);
    };
    // RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line
    // terminator". We do not: a bare LF that an intermediary reads
    // differently is a request-smuggling vector.
    //
    // The size limit is checked first, as it is when the LF has not arrived yet, so that
    // the answer does not depend on how the bytes were split into reads.
    if lf >= block_limit {
        return Err(HttpError::HeaderFieldsTooLarge);
    }
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(HttpError::BadRequest("bare LF in request line"));
    }
    let line_len = lf - 1;
    // A request line that is whole but bad is refused now, not after waiting for a
    // header section that cannot make it valid.
    parse_version(&buf[..line_len])?;

    let mut pos = lf + 1;
    let mut fields = 0usize;
    loop {
        let rest = &buf[pos..];
        // A field line of at most `field_limit` bytes (CRLF included) has its
        // LF among its first `field_limit` bytes.
        let window = field_limit.min(rest.len());
        let Some(i) = find_lf(&rest[..window]) else {
            if rest.len() >= field_limit || buf.len() > block_limit {
                return Err(HttpError::HeaderFieldsTooLarge);
            }
            return Ok(None);
        };
        // The block limit before the line-ending check, as above.
        if pos + i + 1 > block_limit {
            return Err(HttpError::HeaderFieldsTooLarge);
        }
        if i == 0 || rest[i - 1] != b'\r' {
            return Err(HttpError::BadRequest("bare LF in header section"));
        }
        pos += i + 1;
        if i == 1 {
            // RFC 9112 §2.1: the empty line ends the header section.
            return Ok(Some(Shape {
                line_len,
                head_len: pos,
                fields,
            }));
        }
        fields += 1;
        if fields > max_fields {
            return Err(HttpError::HeaderFieldsTooLarge);
        }
    }
}

/// The version token found at the end of the request line.
struct VersionToken {
    version: Version,
    /// Offset of the token in the head.
    start: usize,
    /// The minor digit is 2..=9, which httparse does not accept.
    higher_minor: bool,
}

/// RFC 9112 §2.3: `HTTP-version = HTTP-name "/" DIGIT "." DIGIT`, with
/// `HTTP-name` case-sensitive. RFC 9110 §2.5: a 1.x request with a higher
/// minor is served as the highest 1.x we support.
fn parse_version(line: &[u8]) -> Result<VersionToken, HttpError> {
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else {
        return Err(HttpError::BadRequest("missing HTTP version"));
    };
    let token = &line[sp + 1..];
    let well_formed = token.len() == 8
        && token.starts_with(b"HTTP/")
        && token[5].is_ascii_digit()
        && token[6] == b'.'
        && token[7].is_ascii_digit();
    if !well_formed {
        return Err(HttpError::BadRequest("invalid HTTP version"));
    }
    let (major, minor) = (token[5] - b'0', token[7] - b'0');
    let version = match (major, minor) {
        (0, _) => return Err(HttpError::BadRequest("unsupported HTTP version")),
        (1, 0) => Version::Http10,
        (1, _) => Version::Http11,
        // HTTP/2 and later (including the HTTP/2 preface "PRI * HTTP/2.0")
        // are other protocols on this port.
        _ => return Err(HttpError::VersionNotSupported),
    };
    Ok(VersionToken {
        version,
        start: sp + 1,
        higher_minor: major == 1 && minor >= 2,
    })
}

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

/// RFC 9110 §5.6.3: OWS = *( SP / HTAB ).
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
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

/// A comma-separated list's elements, trimmed, empty ones skipped
/// (RFC 9110 §5.6.1: recipients ignore empty list elements).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// RFC 9112 §3.2 / RFC 3986 §3.2: the characters of `uri-host [ ":" port ]`
/// (reg-name, IP-literal, port); an empty Host is allowed.
fn is_valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    })
}

/// RFC 9112 §6.3: `Content-Length = 1*DIGIT`; no sign, no list, no overflow. (Also
/// checks the Content-Length an application sends, `wsgi::response`.)
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// The header fields whose meaning the protocol layer needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Host,
    Connection,
    Expect,
    ContentType,
    Other,
}

fn classify(name: &[u8]) -> Field {
    let (field, want): (Field, &[u8]) = match name.len() {
        4 => (Field::Host, b"host"),
        6 => (Field::Expect, b"expect"),
        10 => (Field::Connection, b"connection"),
        12 => (Field::ContentType, b"content-type"),
        14 => (Field::ContentLength, b"content-length"),
        17 => (Field::TransferEncoding, b"transfer-encoding"),
        _ => return Field::Other,
    };
    if name.eq_ignore_ascii_case(want) {
        field
    } else {
        Field::Other
    }
}

/// The split of a request-target into path and query, relative to the target.
struct TargetParts {
    path: Range<usize>,
    query: Range<usize>,
    /// The authority of an absolute-form target; `None` for the other forms.
    authority: Option<Range<usize>>,
}

/// RFC 9112 §3.2: the four forms of request-target, each allowed only where
/// the RFC allows it.
fn split_target(method: &[u8], target: &[u8]) -> Result<TargetParts, HttpError> {
    // RFC 9112 §3.2: request-target has no fragment component (origin-form
    // is absolute-path [ "?" query ]; absolute-form is absolute-URI).
    if target.contains(&b'#') {
        return Err(HttpError::BadRequest("fragment in request-target"));
    }
    let end = target.len();
    let path_and_query = |start: usize| {
        let q = target[start..]
            .iter()
            .position(|&b| b == b'?')
            .map_or(end, |i| start + i);
        TargetParts {
            path: start..q,
            query: if q == end { end..end } else { q + 1..end },
            authority: None,
        }
    };

    // RFC 9112 §3.2.3: "The authority-form of request-target is only used
    // for CONNECT requests": authority-form = uri-host ":" port.
    if method == b"CONNECT" {
        let port_ok = target.iter().rposition(|&b| b == b':').is_some_and(|c| {
            c > 0 && c + 1 < end && target[c + 1..].iter().all(u8::is_ascii_digit)
        });
        if !port_ok || !is_valid_host(target) {
            return Err(HttpError::BadRequest("invalid authority-form target"));
        }
        return Ok(TargetParts {
            path: 0..end,
            query: end..end,
            authority: None,
        });
    }
    // RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ].
    if target.first() == Some(&b'/') {
        return Ok(path_and_query(0));
    }
    // RFC 9112 §3.2.4: asterisk-form "*" is only used for a server-wide OPTIONS.
    if target == b"*" {
        if method == b"OPTIONS" {
            return Ok(TargetParts {
                path: 0..1,
                query: 1..1,
                authority: None,
            });
        }
        return Err(HttpError::BadRequest(
            "asterisk-form target without OPTIONS",
        ));
    }
    // RFC 9112 §3.2.2: absolute-form = absolute-URI; we serve the http and
    // https schemes (case-insensitive, RFC 9110 §4.2.3).
    let scheme_len = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return Err(HttpError::BadRequest("invalid request-target"));
    };
    let authority_end = target[scheme_len..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(end, |i| scheme_len + i);
    let authority = &target[scheme_len..authority_end];
    // RFC 9110 §4.2.1: "A recipient that processes such a URI reference [an http
    // URI with an empty host identifier] MUST reject it as invalid."
    if authority.is_empty() || authority[0] == b':' {
        return Err(HttpError::BadRequest("absolute-form target without host"));
    }
    // RFC 9110 §4.2.4: a sender "MUST NOT generate the userinfo subcomponent (and
    // its "@" delimiter)" in an http(s) target URI, and a recipient "SHOULD parse for
    // userinfo and treat its presence as an error". The authority stands in for the
    // Host header (RFC 9112 §3.2.2), so `user@host` must never reach the app as one.
    if authority.contains(&b'@') {
        return Err(HttpError::BadRequest("userinfo in request-target"));
    }
    // The same characters as a Host value: the authority is used as one.
    if !is_valid_host(authority) {
        return Err(HttpError::BadRequest("invalid host in request-target"));
    }
    Ok(TargetParts {
        authority: Some(scheme_len..authority_end),
        ..path_and_query(authority_end)
    })
}

/// Accumulated Transfer-Encoding codings over all its field lines (RFC 9112 §6.1).
#[derive(Default)]
struct Codings {
    /// A Transfer-Encoding field line was received, even an empty one.
    present: bool,
    /// How many times `chunked` was listed.
    chunked: u32,
    /// The last coding listed so far is `chunked`.
    last_is_chunked: bool,
    /// A coding other than `chunked` was listed.
    unknown: bool,
    /// A value is not a list of transfer-codings (RFC 9110 §10.1.4).
    invalid: bool,
    /// `chunked` came with parameters, which it does not define.
    chunked_params: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in (CodingList { rest: value }) {
            let Ok(coding) = coding else {
                self.invalid = true;
                return;
            };
            // RFC 9112 §7: "All transfer-coding names are case-insensitive".
            if coding.name.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
                self.last_is_chunked = true;
                self.chunked_params |= coding.has_params;
            } else {
                self.unknown = true;
                self.last_is_chunked = false;
            }
        }
    }
}

/// One element of a Transfer-Encoding list.
struct Coding<'a> {
    /// The coding's name as sent.
    name: &'a [u8],
    /// Whether one or more `; name=value` parameters followed the name.
    has_params: bool,
}

/// A Transfer-Encoding value breaks the transfer-coding grammar.
struct Malformed;

/// Reads the codings of one Transfer-Encoding value (RFC 9112 §6.1:
/// `Transfer-Encoding = #transfer-coding`), as RFC 9110 §10.1.4 writes them:
///
/// ```text
/// transfer-coding    = token *( OWS ";" OWS transfer-parameter )
/// transfer-parameter = token BWS "=" BWS ( token / quoted-string )
/// ```
///
/// A comma inside a quoted-string does not end an element. After a `Malformed`
/// element it yields nothing more: where the grammar broke, the element
/// boundaries are unknown.
struct CodingList<'a> {
    /// What is left of the field value.
    rest: &'a [u8],
}

impl<'a> Iterator for CodingList<'a> {
    type Item = Result<Coding<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        // RFC 9110 §5.6.1.2: "A recipient MUST parse and ignore a reasonable
        // number of empty list elements" (the value is bounded by the field limit).
        loop {
            self.skip_ows();
            match self.rest.split_first() {
                Some((b',', tail)) => self.rest = tail,
                Some(_) => break,
                None => return None,
            }
        }
        let coding = self.coding();
        if coding.is_err() {
            self.rest = &[];
        }
        Some(coding)
    }
}

impl<'a> CodingList<'a> {
    /// One transfer-coding and the comma (or end) after it.
    fn coding(&mut self) -> Result<Coding<'a>, Malformed> {
        let name = self.token()?;
        let mut has_params = false;
        loop {
            self.skip_ows();
            match self.rest.split_first() {
                None => break,
                Some((b',', tail)) => {
                    self.rest = tail;
                    break;
                }
                Some((b';', tail)) => {
                    self.rest = tail;
                    self.skip_ows();
                    self.token()?;
                    // BWS = OWS (RFC 9110 §5.6.3).
                    self.skip_ows();
                    self.rest = self.rest.strip_prefix(b"=").ok_or(Malformed)?;
                    self.skip_ows();
                    if self.rest.first() == Some(&b'"') {
                        self.quoted_string()?;
                    } else {
                        self.token()?;
                    }
                    has_params = true;
                }
                Some(_) => return Err(Malformed),
            }
        }
        Ok(Coding { name, has_params })
    }

    /// RFC 9110 §5.6.3: OWS = *( SP / HTAB ).
    fn skip_ows(&mut self) {
        while let [b' ' | b'\t', tail @ ..] = self.rest {
            self.rest = tail;
        }
    }

    /// RFC 9110 §5.6.2: token = 1*tchar.
    fn token(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self
            .rest
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(self.rest.len());
        if len == 0 {
            return Err(Malformed);
        }
        let (token, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(token)
    }

    /// RFC 9110 §5.6.4: `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE`,
    /// `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`,
    /// `quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )`; `rest` starts at the
    /// opening DQUOTE.
    fn quoted_string(&mut self) -> Result<(), Malformed> {
        // HTAB, SP, VCHAR and obs-text: every byte but the other controls and DEL.
        let text = |b: u8| b == b'\t' || (b >= 0x20 && b != 0x7f);
        let mut i = 1;
        loop {
            match self.rest.get(i) {
                Some(b'"') => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(());
                }
                Some(b'\\') => match self.rest.get(i + 1) {
                    Some(&b) if text(b) => i += 2,
                    _ => return Err(Malformed),
                },
                Some(&b) if text(b) => i += 1,
                _ => return Err(Malformed),
            }
        }
    }
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

    // Bytes that cannot begin a method (a TLS ClientHello, binary noise) are refused at
    // once rather than left to wait for a line end that may never come. Only the bytes a
    // valid request line could hold are looked at, the same window `scan_head` searches,
    // so the answer does not depend on how the bytes were split into reads (past that
    // window it is 414 however the rest arrives).
    let window = limit(limits.max_request_line)
        .saturating_add(2)
        .min(buf.len());
    let method_end = buf[..window]
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(window);
    if !buf[..method_end].iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequest("invalid request method"));
    }
    // RFC 9110 §5.6.2 lists `#` among tchar, so `GE#T` is a token; but no registered
    // method contains one, and `#` is the fragment delimiter that request-smuggling
    // scanners put into methods to find parsers that read the line differently. It is
    // refused as deliberate hardening, as gunicorn does by default (its METHOD_BADCHAR
    // check); every other token stays a method (RFC 9110 §9.1).
    if buf[..method_end].contains(&b'#') {
        return Err(HttpError::BadRequest("invalid request method"));
    }

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
    let mut content_length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut host: Option<Range<usize>> = None;
    let mut content_type_seen = false;
    let (mut conn_close, mut conn_keep_alive, mut expect_continue) = (false, false, false);

    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim_ows(h.value);
        let value_r = range_in(head, value);
        match classify(name) {
            Field::ContentLength => {
                // RFC 9112 §6.3 item 5: several Content-Length field lines, or
                // a list value, make the length unreliable: 400, no guessing.
                if content_length.is_some() {
                    return Err(HttpError::BadRequest("multiple Content-Length headers"));
                }
                let n = parse_content_length(value)
                    .ok_or(HttpError::BadRequest("invalid Content-Length"))?;
                content_length = Some(n);
            }
            Field::TransferEncoding => codings.add(value),
            Field::Host => {
                // RFC 9112 §3.2: 400 for "more than one Host header field
                // line or a Host header field with an invalid field value".
                if host.is_some() {
                    return Err(HttpError::BadRequest("multiple Host headers"));
                }
                if !is_valid_host(value) {
                    return Err(HttpError::BadRequest("invalid Host header"));
                }
                host = Some(value_r.clone());
            }
            Field::Connection => {
                for option in list_elements(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            Field::Expect => {
                // RFC 9110 §10.1.1: "A server that receives a 100-continue
                // expectation in an HTTP/1.0 request MUST ignore that expectation."
                if version == Version::Http11
                    && list_elements(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"))
                {
                    expect_continue = true;
                }
            }
            Field::ContentType => {
                // RFC 9110 §5.3: Content-Type is a singleton field; two
                // differing values leave CONTENT_TYPE ambiguous.
                if content_type_seen {
                    return Err(HttpError::BadRequest("multiple Content-Type headers"));
                }
                content_type_seen = true;
            }
            Field::Other => {}
        }
        headers.push((range_in(head, name), value_r));
    }

    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    // code to any HTTP/1.1 request message that lacks a Host header field", even
    // one whose absolute-form target names the host.
    if version == Version::Http11 && host.is_none() {
        return Err(HttpError::BadRequest("missing Host header"));
    }

    let framing = if codings.present {
        // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0
        // message containing a Transfer-Encoding header field MUST treat the
        // message as if the framing is faulty".
        if version == Version::Http10 {
            return Err(HttpError::BadRequest(
                "Transfer-Encoding in HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.1: a server "MAY reject a request that contains both
        // Content-Length and Transfer-Encoding"; we do, as the safe reading
        // of a message built to smuggle.
        if content_length.is_some() {
            return Err(HttpError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // RFC 9110 §10.1.4: transfer-coding = token *( OWS ";" OWS
        // transfer-parameter ), transfer-parameter = token BWS "=" BWS ( token /
        // quoted-string ); a value outside that grammar (`chunked;`, `gzip;q`)
        // says nothing reliable about the framing.
        if codings.invalid {
            return Err(HttpError::BadRequest("invalid Transfer-Encoding"));
        }
        // RFC 9112 §7.1 defines chunked without parameters, so `chunked;x=y` names
        // a coding we do not know how to decode; gunicorn, waitress and granian
        // refuse it too, and 400 keeps its framing from being guessed at.
        if codings.chunked_params {
            return Err(HttpError::BadRequest("parameters on chunked"));
        }
        // RFC 9112 §6.1: "A sender MUST NOT apply the chunked transfer coding
        // more than once to a message body".
        if codings.chunked > 1 {
            return Err(HttpError::BadRequest("chunked applied more than once"));
        }
        // RFC 9112 §6.3 item 4: "If a Transfer-Encoding header field is
        // present in a request and the chunked transfer coding is not the
        // final encoding, ... the server MUST respond with the 400".
        if codings.chunked == 1 && !codings.last_is_chunked {
            return Err(HttpError::BadRequest(
                "chunked is not the final transfer coding",
            ));
        }
        // RFC 9112 §6.1: "A server that receives a request message with a
        // transfer coding it does not understand SHOULD respond with 501".
        if codings.unknown {
            return Err(HttpError::NotImplemented("unsupported transfer coding"));
        }
        if codings.chunked == 0 {
            return Err(HttpError::BadRequest("empty Transfer-Encoding"));
        }
        BodyFraming::Chunked
    } else {
        // RFC 9112 §6.3 items 6 and 7: a valid Content-Length gives the
        // length; a request with neither field has no body.
        match content_length {
            None | Some(0) => BodyFraming::Empty,
            Some(n) if limits.max_body != 0 && n > limits.max_body => {
                return Err(HttpError::PayloadTooLarge);
            }
            Some(n) => BodyFraming::Length(n),
        }
    };

    // RFC 9112 §9.3: HTTP/1.1 persists unless "close" is a connection
    // option; HTTP/1.0 persists only if "keep-alive" is.
    let keep_alive = !conn_close && (version == Version::Http11 || conn_keep_alive);

    let t0 = target_r.start;
    let path = parts.path.start + t0..parts.path.end + t0;
    let query = parts.query.start + t0..parts.query.end + t0;
    // RFC 9112 §3.2.2: "When an origin server receives a request with an
    // absolute-form of request-target, the origin server MUST ignore the received
    // Host header field (if any) and instead use the host information of the
    // request-target." (The Host header was still checked above.)
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

/// Decodes `%XX` escapes (RFC 3986 §2.1) into bytes; an invalid escape is
/// kept as it is. No `+` handling and no normalisation. Borrows when there is
/// nothing to decode.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = raw.iter().position(|&b| b == b'%') else {
        return Cow::Borrowed(raw);
    };
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut i = first;
    while i < raw.len() {
        let b = raw[i];
        let escape = if b == b'%' && i + 2 < raw.len() {
            hex(raw[i + 1]).zip(hex(raw[i + 2]))
        } else {
            None
        };
        if let Some((high, low)) = escape {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::{mutate, xorshift};

    fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, limits)
    }

    fn ok(bytes: &[u8]) -> RequestHead {
        match parse_with(bytes, &Limits::default()) {
            Ok(Some(head)) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn err(bytes: &[u8]) -> HttpError {
        match parse_with(bytes, &Limits::default()) {
            Err(e) => e,
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }

    fn partial(bytes: &[u8]) {
        assert!(
            matches!(parse_with(bytes, &Limits::default()), Ok(None)),
            "{:?} should need more bytes",
            String::from_utf8_lossy(bytes)
        );
    }

    const BAD: fn(&'static str) -> HttpError = HttpError::BadRequest;

    #[test]
    fn simple_get() {
        let h = ok(b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
        assert_eq!(h.method(), b"GET");
        assert_eq!(h.target(), b"/a/b?x=1&y");
        assert_eq!(h.path(), b"/a/b");
        assert_eq!(h.query(), b"x=1&y");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.version_raw(), b"HTTP/1.1");
        assert_eq!(h.header_count(), 2);
        assert_eq!(h.header_name(1), b"Accept");
        assert_eq!(h.header_value(1), b"*/*");
        assert_eq!(h.host(), Some(&b"example.com"[..]));
        assert_eq!(h.header(b"ACCEPT"), Some(&b"*/*"[..]));
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    /// The head is split off; the buffer keeps the body and the next request.
    #[test]
    fn head_is_split_off_the_buffer() {
        let mut buf = BytesMut::from(
            &b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n"[..],
        );
        let h = parse_head(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert_eq!(h.content_length(), Some(5));
        assert_eq!(&buf[..], b"helloGET / HTTP/1.1\r\n");
        assert_eq!(
            &h.buf[..],
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
        );
    }

    /// Incomplete heads are `Ok(None)` at every cut point, and the whole parses.
    #[test]
    fn incomplete_is_not_an_error() {
        let full = b"GET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n";
        for cut in 0..full.len() {
            partial(&full[..cut]);
        }
        ok(full);
    }

    /// RFC 9112 §2.2: leading empty lines before the request line are ignored.
    #[test]
    fn leading_empty_lines_are_skipped() {
        let h = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.method(), b"GET");
        let mut buf = BytesMut::from(&b"\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, &Limits::default()).unwrap().is_none());
        assert!(buf.is_empty());
    }

    /// RFC 9112 §2.2: a bare LF is not accepted as a line terminator here.
    #[test]
    fn bare_lf_is_rejected() {
        assert_eq!(
            err(b"GET / HTTP/1.1\nHost: h\r\n\r\n"),
            BAD("bare LF in request line")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\n\r\n"),
            BAD("bare LF in header section")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\n\n"),
            BAD("bare LF in header section")
        );
        assert_eq!(
            err(b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("invalid request method")
        );
    }

    /// Bytes that cannot start a method fail at once, before any line end arrives.
    #[test]
    fn garbage_fails_before_a_line_end() {
        let tls_hello: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        assert_eq!(err(tls_hello), BAD("invalid request method"));
        assert_eq!(
            err(b"PROXY TCP4 192.168.0.1 192.16...\r\n"),
            BAD("invalid HTTP version")
        );
    }

    /// RFC 9112 §2.2: a bare CR outside a CRLF is invalid.
    #[test]
    fn bare_cr_is_rejected() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n").status(),
            400
        );
        assert_eq!(err(b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
    }

    /// RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
    #[test]
    fn malformed_versions_are_400() {
        for line in [
            &b"GET / http/1.1\r\n\r\n"[..],
            b"GET / HTTP/01.1\r\n\r\n",
            b"GET / HTTP/1.10\r\n\r\n",
            b"GET / HTTP/1\r\n\r\n",
            b"GET / HTTP/111\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"GET / HTTP/0.99\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET\r\n\r\n",
        ] {
            assert_eq!(
                err(line).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// RFC 9110 §2.5 / §15.6.6: another major version is answered 505.
    #[test]
    fn http2_is_505() {
        assert_eq!(
            err(b"GET / HTTP/2.0\r\n\r\n"),
            HttpError::VersionNotSupported
        );
        assert_eq!(
            err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HttpError::VersionNotSupported
        );
        assert_eq!(
            err(b"GET / HTTP/3.0\r\n\r\n"),
            HttpError::VersionNotSupported
        );
    }

    /// RFC 9110 §2.5: a higher 1.x minor is served as HTTP/1.1.
    #[test]
    fn higher_minor_is_served_as_1_1() {
        let h = ok(b"GET /x HTTP/1.2\r\nHost: h\r\n\r\n");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.version_raw(), b"HTTP/1.2");
        assert_eq!(h.path(), b"/x");
        assert_eq!(h.host(), Some(&b"h"[..]));
        assert_eq!(
            ok(b"GET / HTTP/1.9\r\nHost: h\r\n\r\n").version,
            Version::Http11
        );
        // A 1.x request with a higher minor still follows the 1.1 rules.
        assert_eq!(err(b"GET / HTTP/1.5\r\n\r\n"), BAD("missing Host header"));
    }

    /// RFC 9112 §3.2: HTTP/1.1 needs exactly one Host; 1.0 may omit it.
    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), BAD("missing Host header"));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            BAD("multiple Host headers")
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"),
            BAD("multiple Host headers")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            BAD("invalid Host header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            BAD("invalid Host header")
        );
        let h = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.host, None);
        assert_eq!(
            ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").host(),
            Some(&b""[..])
        );
        assert_eq!(
            ok(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").host(),
            Some(&b"[::1]:80"[..])
        );
    }

    /// RFC 9112 §3.2.1: origin-form keeps the path raw and splits the query.
    #[test]
    fn origin_form() {
        let h = ok(b"GET ///a%20b?q=%2F&x?y HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.path(), b"///a%20b");
        assert_eq!(h.query(), b"q=%2F&x?y");
        let h = ok(b"GET /? HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.path(), b"/");
        assert_eq!(h.query(), b"");
        let h = ok(b"GET /\xc3\xa0 HTTP/1.0\r\n\r\n");
        assert_eq!(h.path(), b"/\xc3\xa0");
    }

    /// RFC 9112 §3.2.2: absolute-form with http or https, any case.
    #[test]
    fn absolute_form() {
        let h = ok(b"GET http://example.com/foo?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.target(), b"http://example.com/foo?q=1");
        assert_eq!(h.path(), b"/foo");
        assert_eq!(h.query(), b"q=1");
        let h = ok(b"GET HTTPS://example.com HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.path(), b"/");
        assert_eq!(h.query(), b"");
        let h = ok(b"GET http://h?a=b HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.path(), b"/");
        assert_eq!(h.query(), b"a=b");
        let h = ok(b"GET http://[::1]:8080/x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.path(), b"/x");
        assert_eq!(
            err(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"PUT s://]ufd/: HTTP/1.1\r\nHost: h\r\n\r\n").status(),
            400
        );
    }

    /// RFC 9112 §3.2.2: "When an origin server receives a request with an absolute-form
    /// of request-target, the origin server MUST ignore the received Host header field
    /// (if any) and instead use the host information of the request-target"; the Host
    /// header is still required on HTTP/1.1 (§3.2) and still checked.
    #[test]
    fn absolute_form_authority_replaces_host() {
        let h = ok(b"GET http://a.example:81/p HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(h.host(), Some(&b"a.example:81"[..]));
        assert_eq!(h.header(b"host"), Some(&b"b.example"[..]));
        assert_eq!(h.path(), b"/p");
        let h = ok(b"GET https://[::1]:8443?q HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.host(), Some(&b"[::1]:8443"[..]));
        assert_eq!(h.query(), b"q");
        // HTTP/1.0 may omit Host; the target still names the host.
        let h = ok(b"GET HTTP://A.example/ HTTP/1.0\r\n\r\n");
        assert_eq!(h.host(), Some(&b"A.example"[..]));
        // A higher minor version parses a patched copy; the ranges still hold.
        let h = ok(b"GET http://a.example/p HTTP/1.3\r\nHost: b\r\n\r\n");
        assert_eq!(h.host(), Some(&b"a.example"[..]));
        // Other forms keep the Host header.
        let h = ok(b"GET /p HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(h.host(), Some(&b"b.example"[..]));
        let h = ok(b"CONNECT a.example:443 HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(h.host(), Some(&b"b.example"[..]));
        // RFC 9112 §3.2: Host is required, single and valid whatever the target.
        assert_eq!(
            err(b"GET http://a.example/ HTTP/1.1\r\n\r\n"),
            BAD("missing Host header")
        );
        assert_eq!(
            err(b"GET http://a.example/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            BAD("multiple Host headers")
        );
        assert_eq!(
            err(b"GET http://a.example/ HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            BAD("invalid Host header")
        );
    }

    /// RFC 9110 §4.2.4: a recipient "SHOULD parse for userinfo and treat its presence as
    /// an error"; RFC 9110 §4.2.1: an empty host MUST be rejected; the authority is
    /// checked with the Host value's characters (RFC 9112 §3.2), as it stands for one.
    #[test]
    fn absolute_form_authority_is_checked() {
        for target in [
            &b"http://user@a.example/p"[..],
            b"http://user:pass@a.example:8080/p?q=1",
            b"https://@a.example/",
            b"http://a.example@b.example/",
        ] {
            let mut line = b"GET ".to_vec();
            line.extend_from_slice(target);
            line.extend_from_slice(b" HTTP/1.1\r\nHost: a.example\r\n\r\n");
            assert_eq!(err(&line), BAD("userinfo in request-target"), "{target:?}");
        }
        for target in [&b"http://:80/p"[..], b"http://:/", b"https://?q"] {
            let mut line = b"GET ".to_vec();
            line.extend_from_slice(target);
            line.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(
                err(&line),
                BAD("absolute-form target without host"),
                "{target:?}"
            );
        }
        for target in [
            &b"http://a{b}/p"[..],
            b"http://a\"b/",
            b"http://a\\b/",
            b"http://a^b?x",
        ] {
            let mut line = b"GET ".to_vec();
            line.extend_from_slice(target);
            line.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(
                err(&line),
                BAD("invalid host in request-target"),
                "{target:?}"
            );
        }
    }

    /// RFC 9112 §3.2.3: authority-form only for CONNECT, and CONNECT only with it.
    #[test]
    fn authority_form() {
        let h = ok(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(h.path(), b"example.com:443");
        assert_eq!(h.query(), b"");
        let h = ok(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.path(), b"[::1]:443");
        assert_eq!(
            err(b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("invalid request-target")
        );
        assert_eq!(
            err(b"CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("invalid authority-form target")
        );
        assert_eq!(
            err(b"CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("invalid authority-form target")
        );
        assert_eq!(
            err(b"CONNECT u@h:1 HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("invalid authority-form target")
        );
    }

    /// RFC 9112 §3.2.4: asterisk-form only for OPTIONS.
    #[test]
    fn asterisk_form() {
        let h = ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.path(), b"*");
        assert_eq!(h.query(), b"");
        assert_eq!(
            err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("asterisk-form target without OPTIONS")
        );
    }

    /// RFC 9112 §3.2: relative references and fragments are not request-targets.
    #[test]
    fn other_targets_are_400() {
        assert_eq!(
            err(b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("invalid request-target")
        );
        assert_eq!(
            err(b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("fragment in request-target")
        );
        assert_eq!(
            err(b"GET /a?b#c HTTP/1.1\r\nHost: h\r\n\r\n"),
            BAD("fragment in request-target")
        );
    }

    /// RFC 9112 §3: method = token; SP separators exactly; no stray bytes.
    #[test]
    fn request_line_grammar() {
        for line in [
            &b"GET\x00 / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET\x00PROXY / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET: / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET\xc3\x9f / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET\n/\nHTTP/1.1\r\n\r\n",
            b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(
                err(line).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // Any token is a method; case is kept.
        assert_eq!(
            ok(b"-blargh /foo HTTP/1.1\r\nHost: h\r\n\r\n").method(),
            b"-blargh"
        );
    }

    /// RFC 9110 §5.6.2 makes `#` a tchar, so `GE#T` is a token; it is refused anyway as
    /// hardening (no registered method holds `#`, the fragment delimiter that smuggling
    /// scanners put in methods; gunicorn refuses it by default), and every other token
    /// method is still accepted (RFC 9110 §9.1).
    #[test]
    fn method_with_hash_is_refused() {
        for line in [
            &b"GE#T / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"#GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET# / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"# / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(
                err(line),
                BAD("invalid request method"),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // Refused on its first bytes, before the line ends.
        assert_eq!(err(b"GE#"), BAD("invalid request method"));
        for method in [
            &b"-blargh"[..],
            b"M-SEARCH",
            b"PROPFIND",
            b"!$%&'*+.^_`|~09aZ",
        ] {
            let mut line = method.to_vec();
            line.extend_from_slice(b" / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(ok(&line).method(), method);
        }
    }

    /// RFC 9112 §5.1-§5.2, RFC 9110 §5.5: field-name is a token with no
    /// whitespace before the colon, values have no CTLs, obs-fold is rejected.
    #[test]
    fn field_line_grammar() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\nX\t: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nba\x00z: bar\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-V: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-V: plain\x07bel\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-V: plain\x7fdel\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-V: a\x1bb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nLong: one\r\n two\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nLong: one\r\n\ttwo\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nC\xc3\x9f: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
        ] {
            assert_eq!(
                err(head).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    /// RFC 9110 §5.5: values are trimmed of OWS; HTAB and obs-text are allowed.
    #[test]
    fn field_values() {
        let h = ok(b"GET / HTTP/1.1\r\nHost: h\r\nName: \t value \t \r\nX:\tabc\t\r\nY: caf\xc3\xa9\r\nE:\r\nZ: a\tb c\r\n\r\n");
        assert_eq!(h.header(b"name"), Some(&b"value"[..]));
        assert_eq!(h.header(b"x"), Some(&b"abc"[..]));
        assert_eq!(h.header(b"y"), Some(&b"caf\xc3\xa9"[..]));
        assert_eq!(h.header(b"e"), Some(&b""[..]));
        assert_eq!(h.header(b"z"), Some(&b"a\tb c"[..]));
        let h =
            ok(b"GET / HTTP/1.1\r\nHost: h\r\nX.Custom|Pipe: ok\r\nTransfer_Encoding: x\r\n\r\n");
        let names: Vec<&[u8]> = h.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [&b"Host"[..], b"X.Custom|Pipe", b"Transfer_Encoding"]
        );
        assert_eq!(h.framing, BodyFraming::Empty);
    }

    /// RFC 9112 §6.3 item 5 / §6.2: Content-Length = 1*DIGIT, exactly once.
    #[test]
    fn content_length_values_parse_as_digits_only() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"13"), Some(13));
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b"1\xff"), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nconTENT-Length: 0005\r\n\r\n").framing,
            BodyFraming::Length(5)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").framing,
            BodyFraming::Empty
        );
        for value in [
            &b"-1"[..],
            b"+1",
            b"-0",
            b"0_1",
            b"0 1",
            b"3 1",
            b"5, 5",
            b"bla",
            b"",
            b"0x10",
            b"1e3",
            b"18446744073709551616",
            b"99999999999999999999999",
        ] {
            let mut head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ".to_vec();
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n\r\n");
            assert_eq!(err(&head), BAD("invalid Content-Length"), "{value:?}");
        }
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            BAD("multiple Content-Length headers")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 2\r\n\r\n"),
            BAD("multiple Content-Length headers")
        );
    }

    /// RFC 9110 §15.5.14: a declared body above the limit is 413.
    #[test]
    fn content_length_above_max_body_is_413() {
        let limits = Limits {
            max_body: 10,
            ..Limits::default()
        };
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(
            parse_with(head, &limits).unwrap_err(),
            HttpError::PayloadTooLarge
        );
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n";
        assert!(parse_with(head, &limits).unwrap().is_some());
        let unlimited = Limits {
            max_body: 0,
            ..Limits::default()
        };
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(
            parse_with(head, &unlimited).unwrap().unwrap().framing,
            BodyFraming::Length(u64::MAX)
        );
    }

    /// RFC 9112 §6.1 / §6.3: Transfer-Encoding rules.
    #[test]
    fn transfer_encoding_rules() {
        let te = |value: &[u8]| {
            let mut head = b"POST / HTTP/1.1\r\nHost: h\r\n".to_vec();
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n\r\n");
            parse_with(&head, &Limits::default()).map(|h| h.unwrap().framing)
        };
        assert_eq!(te(b"Transfer-Encoding: chunked"), Ok(BodyFraming::Chunked));
        assert_eq!(te(b"transfer-encoding: CHUNKED"), Ok(BodyFraming::Chunked));
        assert_eq!(
            te(b"Transfer-Encoding: \tchunked , "),
            Ok(BodyFraming::Chunked)
        );
        // "chunked" more than once, in one line or several.
        assert_eq!(
            te(b"Transfer-Encoding: chunked, chunked"),
            Err(BAD("chunked applied more than once"))
        );
        assert_eq!(
            te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
            Err(BAD("chunked applied more than once"))
        );
        assert_eq!(
            te(b"Transfer-Encoding: identity, chunked, identity, chunked"),
            Err(BAD("chunked applied more than once"))
        );
        // chunked not final.
        assert_eq!(
            te(b"Transfer-Encoding: chunked, gzip"),
            Err(BAD("chunked is not the final transfer coding"))
        );
        assert_eq!(
            te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
            Err(BAD("chunked is not the final transfer coding"))
        );
        // Codings we do not implement.
        let not_impl = Err(HttpError::NotImplemented("unsupported transfer coding"));
        assert_eq!(te(b"Transfer-Encoding: gzip, chunked"), not_impl);
        assert_eq!(te(b"Transfer-Encoding: identity, chunked"), not_impl);
        assert_eq!(
            te(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"),
            not_impl
        );
        assert_eq!(te(b"Transfer-Encoding: gzip"), not_impl);
        assert_eq!(te(b"Transfer-Encoding: identity"), not_impl);
        // Empty or malformed.
        assert_eq!(
            te(b"Transfer-Encoding:"),
            Err(BAD("empty Transfer-Encoding"))
        );
        assert_eq!(
            te(b"Transfer-Encoding: ,"),
            Err(BAD("empty Transfer-Encoding"))
        );
        assert_eq!(
            te(b"Transfer-Encoding: chu\"nked"),
            Err(BAD("invalid Transfer-Encoding"))
        );
        // With Content-Length.
        assert_eq!(
            te(b"Content-Length: 3\r\nTransfer-Encoding: chunked"),
            Err(BAD("both Content-Length and Transfer-Encoding"))
        );
        assert_eq!(
            te(b"Transfer-Encoding: chunked\r\nContent-Length: 0"),
            Err(BAD("both Content-Length and Transfer-Encoding"))
        );
    }

    /// RFC 9110 §10.1.4: transfer-coding = token *( OWS ";" OWS transfer-parameter ),
    /// transfer-parameter = token BWS "=" BWS ( token / quoted-string ). RFC 9112 §7.1
    /// defines chunked without parameters: a well-formed parameter on it is 400, and so
    /// is a value outside the grammar; an unknown coding with well-formed parameters
    /// stays 501.
    #[test]
    fn transfer_coding_parameters() {
        let te = |value: &[u8]| {
            let mut head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ".to_vec();
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n\r\n");
            parse_with(&head, &Limits::default()).map(|h| h.unwrap().framing)
        };
        for value in [
            &b"chunked;x=y"[..],
            b"chunked ; x = y",
            b"chunked;x=\"y\"",
            b"chunked;x=\"a,b\";z=w",
            b"CHUNKED;q=1",
            b"gzip;q=1, chunked;x=y",
        ] {
            assert_eq!(te(value), Err(BAD("parameters on chunked")), "{value:?}");
        }
        for value in [
            &b"chunked;"[..],
            b"chunked; ",
            b"chunked;x",
            b"chunked;x=",
            b"chunked;=y",
            b"chunked;x=y;",
            b"chunked;x=\"y",
            b"chunked;x=\"y\\",
            b"chunked;x=y z",
            b"chunked;x=\"y\"z",
            b"chunked x",
            b"gzip;, chunked",
            b";, chunked",
        ] {
            assert_eq!(
                te(value),
                Err(BAD("invalid Transfer-Encoding")),
                "{value:?}"
            );
        }
        let not_impl = Err(HttpError::NotImplemented("unsupported transfer coding"));
        for value in [
            &b"gzip;q=1"[..],
            b"gzip ;\tlevel = 9 , chunked",
            b"x-custom;a=\"1,2\\\"3\";b=c, chunked",
            b"gzip;a=\"\xe9\", chunked",
        ] {
            assert_eq!(te(value), not_impl, "{value:?}");
        }
        // Empty list elements around codings are still ignored.
        assert_eq!(te(b", ,chunked,, "), Ok(BodyFraming::Chunked));
    }

    /// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing.
    #[test]
    fn transfer_encoding_in_http10_is_400() {
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BAD("Transfer-Encoding in HTTP/1.0 request")
        );
    }

    /// RFC 9110 §5.3: Content-Type is a singleton field.
    #[test]
    fn duplicate_content_type_is_400() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n"),
            BAD("multiple Content-Type headers")
        );
    }

    /// RFC 9112 §9.3: persistence defaults and Connection options.
    #[test]
    fn keep_alive_rules() {
        let ka = |head: &[u8]| ok(head).keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x\r\nConnection: CLOSE\r\n\r\n"
        ));
        assert!(ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: TE, keep-alive\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    /// RFC 9110 §10.1.1: 100-continue on 1.1 only, case-insensitive.
    #[test]
    fn expect_continue() {
        assert!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(
            !ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(!ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n").expect_continue);
    }

    /// gunicorn `limit_request_line`: the line without CRLF, even before it ends.
    #[test]
    fn request_line_limit_is_414() {
        let limits = Limits {
            max_request_line: 20,
            ..Limits::default()
        };
        // Exactly 20 bytes is fine.
        let head = b"GET /234567 HTTP/1.0\r\n\r\n";
        assert!(parse_with(head, &limits).unwrap().is_some());
        let head = b"GET /2345678 HTTP/1.0\r\n\r\n";
        assert_eq!(
            parse_with(head, &limits).unwrap_err(),
            HttpError::UriTooLong
        );
        // Still incomplete but already too long.
        assert!(parse_with(b"GET /234567 HTTP/1.0\r", &limits)
            .unwrap()
            .is_none());
        assert_eq!(
            parse_with(b"GET /234567 HTTP/1.0xy", &limits).unwrap_err(),
            HttpError::UriTooLong
        );
        assert_eq!(err(&[b'a'; 5000]), HttpError::UriTooLong,);
    }

    /// gunicorn `limit_request_field_size`: one field line, CRLF included.
    #[test]
    fn field_size_limit_is_431() {
        let limits = Limits {
            max_header_field_size: 10,
            ..Limits::default()
        };
        // "X: 12345\r\n" is 10 bytes.
        let head = b"GET / HTTP/1.0\r\nX: 12345\r\n\r\n";
        assert!(parse_with(head, &limits).unwrap().is_some());
        let head = b"GET / HTTP/1.0\r\nX: 123456\r\n\r\n";
        assert_eq!(
            parse_with(head, &limits).unwrap_err(),
            HttpError::HeaderFieldsTooLarge
        );
        // Incomplete but already too long.
        assert_eq!(
            parse_with(b"GET / HTTP/1.0\r\nX: 1234567", &limits).unwrap_err(),
            HttpError::HeaderFieldsTooLarge
        );
        assert!(parse_with(b"GET / HTTP/1.0\r\nX: 12345\r", &limits)
            .unwrap()
            .is_none());
    }

    /// gunicorn `limit_request_fields`: more field lines than allowed is 431.
    #[test]
    fn header_count_limit_is_431() {
        let limits = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        let head = b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            parse_with(head, &limits).unwrap().unwrap().header_count(),
            2
        );
        let head = b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_with(head, &limits).unwrap_err(),
            HttpError::HeaderFieldsTooLarge
        );
        let mut many = b"GET / HTTP/1.0\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("h{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err(&many), HttpError::HeaderFieldsTooLarge);
    }

    /// More fields than fit on the stack still parse (heap storage path).
    #[test]
    fn many_headers_parse() {
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..99 {
            many.extend_from_slice(format!("h{i}: v{i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let h = ok(&many);
        assert_eq!(h.header_count(), 100);
        assert_eq!(h.header_value(99), b"v98");
    }

    /// The whole head is bounded, complete or not.
    #[test]
    fn header_block_limit_is_431() {
        let limits = Limits {
            max_header_block: 40,
            ..Limits::default()
        };
        let head = b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(parse_with(head, &limits).unwrap().is_some());
        let head = b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3333333\r\n\r\n";
        assert_eq!(
            parse_with(head, &limits).unwrap_err(),
            HttpError::HeaderFieldsTooLarge
        );
        let head = b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5";
        assert_eq!(
            parse_with(head, &limits).unwrap_err(),
            HttpError::HeaderFieldsTooLarge
        );
    }

    /// 0 means unlimited for every limit.
    #[test]
    fn zero_limits_are_unlimited() {
        let limits = Limits {
            max_request_line: 0,
            max_headers: 0,
            max_header_field_size: 0,
            max_header_block: 0,
            max_body: 0,
        };
        let mut head = b"GET /".to_vec();
        head.extend(std::iter::repeat_n(b'a', 100_000));
        head.extend_from_slice(b" HTTP/1.0\r\nX: ");
        head.extend(std::iter::repeat_n(b'b', 100_000));
        head.extend_from_slice(b"\r\n\r\n");
        assert!(parse_with(&head, &limits).unwrap().is_some());
    }

    /// Several pipelined requests come off one buffer in order.
    #[test]
    fn pipelined_requests() {
        let mut buf = BytesMut::from(
            &b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.0\r\n\r\nGET /th"[..],
        );
        let limits = Limits::default();
        let a = parse_head(&mut buf, &limits).unwrap().unwrap();
        let b = parse_head(&mut buf, &limits).unwrap().unwrap();
        assert_eq!(a.path(), b"/first");
        assert_eq!(b.path(), b"/second");
        assert_eq!(b.version, Version::Http10);
        assert!(parse_head(&mut buf, &limits).unwrap().is_none());
        assert_eq!(&buf[..], b"GET /th");
    }

    /// No input makes the parser panic: mutated requests, any limits.
    #[test]
    fn never_panics_on_mutated_input() {
        let seeds: [&[u8]; 3] = [
            b"POST http://h/p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            b"\r\nCONNECT h:1 HTTP/1.2\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
            b"OPTIONS * HTTP/1.0\r\nX: \t\xff\r\nContent-Type: a\r\n\r\n",
        ];
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
        const BYTES: &[u8] = b"\r\n :,;?#/*%\t\x00\x7f\xffHTPchunked0123456789";
        for round in 0..20_000 {
            let input = mutate(seeds[round % seeds.len()], 4, BYTES, &mut rand);
            let small = rand(64);
            let limits = Limits {
                max_request_line: small,
                max_headers: small % 5,
                max_header_field_size: small,
                max_header_block: small * 2,
                max_body: rand(10) as u64,
            };
            for limits in [Limits::default(), limits] {
                let mut buf = BytesMut::from(&input[..]);
                while let Ok(Some(head)) = parse_head(&mut buf, &limits) {
                    // Every accessor stays in bounds.
                    let _ = (head.method(), head.target(), head.path(), head.query());
                    let _ = (head.version_raw(), head.host(), head.headers().count());
                    if let BodyFraming::Length(n) = head.framing {
                        let n = (n as usize).min(buf.len());
                        buf.advance(n);
                    }
                }
            }
        }
    }

    #[test]
    fn find_lf_matches_naive_search() {
        let mut bytes = vec![b'a'; 40];
        assert_eq!(find_lf(&bytes), None);
        for i in 0..40 {
            for j in i..40 {
                bytes.fill(b'a');
                bytes[j] = b'\n';
                bytes[i] = b'\n';
                // Neighbouring values that trip naive zero-byte tricks.
                if i > 0 {
                    bytes[i - 1] = 0x0b;
                }
                assert_eq!(find_lf(&bytes), Some(i));
                assert_eq!(find_lf(&bytes[..i]), None);
            }
        }
        assert_eq!(find_lf(b"\x8a\x0b\x09\xff\n"), Some(4));
    }

    #[test]
    fn percent_decoding() {
        assert!(matches!(
            percent_decode(b"/plain"),
            Cow::Borrowed(b"/plain")
        ));
        assert_eq!(&*percent_decode(b"/a%20b%2Fc%2f"), b"/a b/c/");
        assert_eq!(&*percent_decode(b"%"), b"%");
        assert_eq!(&*percent_decode(b"%4"), b"%4");
        assert_eq!(&*percent_decode(b"%zz%41"), b"%zzA");
        assert_eq!(&*percent_decode(b"a+b%2"), b"a+b%2");
        assert_eq!(&*percent_decode(b"%00%ff"), b"\x00\xff");
        assert_eq!(&*percent_decode(b"%%41"), b"%A");
    }

    /// A small xorshift64 generator: reproducible property tests without extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// What a connection reads off a stream: each head (as its Debug text, which holds
    /// its bytes and every range), the error that stopped it, whether a chunked body
    /// stopped it, and the bytes left over. Content-Length bodies are skipped across
    /// reads the way the connection skips them.
    fn read_stream<'a>(
        reads: impl IntoIterator<Item = &'a [u8]>,
        limits: &Limits,
    ) -> (Vec<String>, Option<HttpError>, bool, Vec<u8>) {
        let mut buf = BytesMut::new();
        let mut skip = 0u64;
        let mut heads = Vec::new();
        let mut chunked = false;
        for read in reads {
            buf.extend_from_slice(read);
            // After a chunked head the bytes belong to the chunked decoder.
            while !chunked {
                let n = skip.min(buf.len() as u64);
                buf.advance(n as usize);
                skip -= n;
                if skip > 0 {
                    break;
                }
                match parse_head(&mut buf, limits) {
                    Ok(Some(head)) => {
                        heads.push(format!("{head:?}"));
                        match head.framing {
                            BodyFraming::Length(n) => skip = n,
                            BodyFraming::Chunked => chunked = true,
                            BodyFraming::Empty => {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return (heads, Some(e), false, Vec::new()),
                }
            }
        }
        (heads, None, chunked, buf.to_vec())
    }

    /// Asserts that `input` read in two pieces, at every cut, and one byte per read, gives
    /// what it gives read whole; an error may come early, but it must be the same error.
    fn assert_split_invariant(input: &[u8], limits: &Limits) {
        let whole = read_stream([input], limits);
        let shown = String::from_utf8_lossy(input);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(read_stream([a, b], limits), whole, "cut {cut} of {shown:?}");
        }
        assert_eq!(
            read_stream(input.chunks(1), limits),
            whole,
            "bytewise {shown:?}"
        );
    }

    /// Requests, valid and not, that the split tests run: each rule's pass and fail side.
    const SPLIT_CASES: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\n\r\nPOST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /n HTTP/1.0\r\n\r\n",
        b"OPTIONS * HTTP/1.0\r\nX: \t\xff v \r\nEmpty:\r\n\r\n",
        b"CONNECT h:443 HTTP/1.2\r\nHost: h:443\r\nExpect: 100-continue\r\n\r\n",
        b"POST http://h/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=y\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip;q=\"a,b\", chunked\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / http/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /#frag HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GE#T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://a.example:81/p HTTP/1.1\r\nHost: b.example\r\n\r\n",
        b"GET http://u@a.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"M-SEARCH /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\r\nGET / HTTP/1.0\r\n\r\n",
        b"\r\n\rGET / HTTP/1.0\r\n\r\n",
    ];

    /// RFC 9112 §2.2 (a message is a stream of octets): how the bytes are split into
    /// reads never changes what is parsed, nor which error is answered.
    #[test]
    fn split_at_every_boundary_parses_as_whole() {
        let small = Limits {
            max_request_line: 24,
            max_headers: 3,
            max_header_field_size: 24,
            max_header_block: 96,
            max_body: 4,
        };
        for case in SPLIT_CASES {
            assert_split_invariant(case, &Limits::default());
            assert_split_invariant(case, &small);
        }
        // Limits hit before the line ends, and lines far past them.
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        long.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_split_invariant(&long, &Limits::default());
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..120 {
            many.extend_from_slice(format!("h{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_split_invariant(&many, &Limits::default());
    }

    /// Found by fuzzing: a request line longer than its limit whose first non-token
    /// byte lies past the limit was 400 read whole but 414 read in two pieces; the
    /// method check now looks only where a valid request line could be (414 both ways).
    #[test]
    fn method_check_stays_within_the_request_line_limit() {
        let limits = Limits {
            max_request_line: 64,
            ..Limits::default()
        };
        let mut input = vec![b'1'; 75];
        input.extend_from_slice(b".\r1C\nontent-Length: 7\r\n\r\n");
        assert_eq!(
            parse_with(&input, &limits).unwrap_err(),
            HttpError::UriTooLong
        );
        assert_eq!(
            parse_with(&input[..69], &limits).unwrap_err(),
            HttpError::UriTooLong
        );
        assert_split_invariant(&input, &limits);
        // Within the window a bad method byte is still refused at once.
        assert_eq!(err(b"G\x01"), BAD("invalid request method"));
    }

    /// Found by fuzzing: RFC 9112 §2.2 says to ignore an empty line before the request
    /// line, but one whose CR and LF arrived in separate reads was answered 400.
    #[test]
    fn empty_line_split_between_cr_and_lf_is_ignored() {
        let mut buf = BytesMut::from(&b"\r"[..]);
        assert!(parse_head(&mut buf, &Limits::default()).unwrap().is_none());
        buf.extend_from_slice(b"\nGET / HTTP/1.0\r\n\r\n");
        let head = parse_head(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(head.method(), b"GET");
        // A CR not followed by LF is still refused.
        assert_eq!(
            err(b"\rGET / HTTP/1.0\r\n\r\n"),
            BAD("invalid request method")
        );
    }

    /// Found by the split property test: a field line that ends in a bare LF past the
    /// header-block limit was 400 read whole but 431 read in pieces; the limit is now
    /// checked first either way.
    #[test]
    fn block_limit_is_checked_before_line_endings() {
        let limits = Limits {
            max_header_block: 30,
            ..Limits::default()
        };
        let input = b"GET /a HTTP/1.1\r\nHost: h\r\nConnection:\nclose\r\n\r\n";
        assert_eq!(
            parse_with(input, &limits).unwrap_err(),
            HttpError::HeaderFieldsTooLarge
        );
        assert_split_invariant(input, &limits);
        let limits = Limits {
            max_header_block: 10,
            ..Limits::default()
        };
        assert_split_invariant(b"GET /abcdefgh\nHTTP/1.1\r\n\r\n", &limits);
    }

    /// The split property over mutations of valid requests, with random limits.
    #[test]
    fn mutated_requests_split_anywhere_parse_as_whole() {
        let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
        const BYTES: &[u8] = b"\r\n :,;?#/*%\t\x00\x7f\xffHTPchunked0123456789";
        for round in 0..6_000 {
            let mut input = SPLIT_CASES[round % 6].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                let byte = BYTES[rng.below(BYTES.len())];
                match rng.below(3) {
                    0 if at < input.len() => input[at] = byte,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, byte),
                }
            }
            // Limits as the configuration makes them: the block holds at least a line.
            let line = 8 + rng.below(64);
            let limits = Limits {
                max_request_line: line,
                max_headers: rng.below(6),
                max_header_field_size: 8 + rng.below(64),
                max_header_block: line + 2 + rng.below(256),
                max_body: rng.next() % 16,
            };
            let whole = read_stream([&input[..]], &limits);
            let cut = rng.below(input.len() + 1);
            let (a, b) = input.split_at(cut);
            assert_eq!(
                read_stream([a, b], &limits),
                whole,
                "cut {cut} of {:?} with {limits:?}",
                String::from_utf8_lossy(&input)
            );
            let whole = read_stream([&input[..]], &Limits::default());
            assert_eq!(read_stream([a, b], &Limits::default()), whole);
        }
    }
}
