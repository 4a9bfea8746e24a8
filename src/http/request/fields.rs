//! The header fields the parser acts on (Content-Length, Transfer-Encoding, Host, Connection, Expect, Content-Type): each field line's rule, and the body framing and persistence they decide together.

use std::ops::Range;

use super::target::is_valid_host;
use super::{BodyFraming, Limits, Version};
use crate::http::error::HttpError;
use crate::http::response::is_tchar;

/// What the field lines of one head have said so far, read in order by `add`.
pub(super) struct Fields {
    /// The request's version: HTTP/1.0 ignores Expect, refuses Transfer-Encoding
    /// and persists only on request.
    version: Version,
    /// The Content-Length value, once one has been read.
    content_length: Option<u64>,
    /// The Transfer-Encoding codings over all its field lines.
    codings: Codings,
    /// Where the Host value is in the head, once one has been read.
    host: Option<Range<usize>>,
    /// A Content-Type field has been read (a second one is refused).
    content_type_seen: bool,
    /// `close` is a Connection option.
    conn_close: bool,
    /// `keep-alive` is a Connection option.
    conn_keep_alive: bool,
    /// `100-continue` is expected on HTTP/1.1.
    expect_continue: bool,
}

/// What the header section decides once every field line has been read.
pub(super) struct Outcome {
    /// Where the Host value is in the head, if there is one.
    pub(super) host: Option<Range<usize>>,
    /// How the body that follows the head is delimited.
    pub(super) framing: BodyFraming,
    /// Whether the connection may carry another request after this one.
    pub(super) keep_alive: bool,
    /// Whether the client waits for a 100 before it sends the body.
    pub(super) expect_continue: bool,
}

impl Fields {
    /// Nothing read yet, for a request of `version`.
    pub(super) fn new(version: Version) -> Fields {
        Fields {
            version,
            content_length: None,
            codings: Codings::default(),
            host: None,
            content_type_seen: false,
            conn_close: false,
            conn_keep_alive: false,
            expect_continue: false,
        }
    }

    /// Applies the rule of one field line: `value` is trimmed of OWS, and
    /// `value_r` is where it is in the head.
    pub(super) fn add(
        &mut self,
        name: &[u8],
        value: &[u8],
        value_r: &Range<usize>,
    ) -> Result<(), HttpError> {
        match classify(name) {
            Field::ContentLength => {
                // RFC 9112 §6.3 item 5: several Content-Length field lines, or
                // a list value, make the length unreliable: 400, no guessing.
                if self.content_length.is_some() {
                    return Err(HttpError::BadRequest("multiple Content-Length headers"));
                }
                let n = parse_content_length(value)
                    .ok_or(HttpError::BadRequest("invalid Content-Length"))?;
                self.content_length = Some(n);
            }
            Field::TransferEncoding => self.codings.add(value),
            Field::Host => {
                // RFC 9112 §3.2: 400 for "more than one Host header field
                // line or a Host header field with an invalid field value".
                if self.host.is_some() {
                    return Err(HttpError::BadRequest("multiple Host headers"));
                }
                if !is_valid_host(value) {
                    return Err(HttpError::BadRequest("invalid Host header"));
                }
                self.host = Some(value_r.clone());
            }
            Field::Connection => {
                for option in list_elements(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        self.conn_close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        self.conn_keep_alive = true;
                    }
                }
            }
            Field::Expect => {
                // RFC 9110 §10.1.1: "A server that receives a 100-continue
                // expectation in an HTTP/1.0 request MUST ignore that expectation."
                if self.version == Version::Http11
                    && list_elements(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"))
                {
                    self.expect_continue = true;
                }
            }
            Field::ContentType => {
                // RFC 9110 §5.3: Content-Type is a singleton field; two
                // differing values leave CONTENT_TYPE ambiguous.
                if self.content_type_seen {
                    return Err(HttpError::BadRequest("multiple Content-Type headers"));
                }
                self.content_type_seen = true;
            }
            Field::Other => {}
        }
        Ok(())
    }

    /// The rules that need the whole header section: Host's presence, then the
    /// body framing, then persistence.
    pub(super) fn finish(self, limits: &Limits) -> Result<Outcome, HttpError> {
        // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
        // code to any HTTP/1.1 request message that lacks a Host header field", even
        // one whose absolute-form target names the host.
        if self.version == Version::Http11 && self.host.is_none() {
            return Err(HttpError::BadRequest("missing Host header"));
        }
        let framing = self.framing(limits)?;
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close" is a connection
        // option; HTTP/1.0 persists only if "keep-alive" is.
        let keep_alive =
            !self.conn_close && (self.version == Version::Http11 || self.conn_keep_alive);
        Ok(Outcome {
            host: self.host,
            framing,
            keep_alive,
            expect_continue: self.expect_continue,
        })
    }

    /// How the body is delimited (RFC 9112 §6.1, §6.3).
    fn framing(&self, limits: &Limits) -> Result<BodyFraming, HttpError> {
        let codings = &self.codings;
        if !codings.present {
            // RFC 9112 §6.3 items 6 and 7: a valid Content-Length gives the
            // length; a request with neither field has no body.
            return match self.content_length {
                None | Some(0) => Ok(BodyFraming::Empty),
                Some(n) if limits.max_body != 0 && n > limits.max_body => {
                    Err(HttpError::PayloadTooLarge)
                }
                Some(n) => Ok(BodyFraming::Length(n)),
            };
        }
        // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0
        // message containing a Transfer-Encoding header field MUST treat the
        // message as if the framing is faulty".
        if self.version == Version::Http10 {
            return Err(HttpError::BadRequest(
                "Transfer-Encoding in HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.1: a server "MAY reject a request that contains both
        // Content-Length and Transfer-Encoding"; we do, as the safe reading
        // of a message built to smuggle.
        if self.content_length.is_some() {
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
        Ok(BodyFraming::Chunked)
    }
}

/// RFC 9110 §5.6.3: OWS = *( SP / HTAB ).
pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A comma-separated list's elements, trimmed, empty ones skipped
/// (RFC 9110 §5.6.1: recipients ignore empty list elements).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::tests::{err, ok, parse_with, BAD};

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
}
