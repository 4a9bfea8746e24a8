//! Splits a request-target into the parts of its form (RFC 9112 §3.2: origin, absolute, authority or asterisk form), and percent-decodes a path.

use std::borrow::Cow;
use std::ops::Range;

use crate::http::error::HttpError;

/// The split of a request-target into path and query, relative to the target.
pub(super) struct TargetParts {
    /// The raw path: see `RequestHead::path`.
    pub(super) path: Range<usize>,
    /// The raw query without its `?`; empty if there is none.
    pub(super) query: Range<usize>,
    /// The authority of an absolute-form target; `None` for the other forms.
    pub(super) authority: Option<Range<usize>>,
}

/// RFC 9112 §3.2: the four forms of request-target, each allowed only where
/// the RFC allows it.
pub(super) fn split_target(method: &[u8], target: &[u8]) -> Result<TargetParts, HttpError> {
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

/// RFC 9112 §3.2 / RFC 3986 §3.2: the characters of `uri-host [ ":" port ]`
/// (reg-name, IP-literal, port); an empty Host is allowed.
pub(crate) fn is_valid_host(value: &[u8]) -> bool {
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
    use crate::http::request::tests::{err, ok, BAD};

    /// A GET of `target` with the given Host.
    fn get(target: &[u8], host: &str) -> Vec<u8> {
        let mut line = b"GET ".to_vec();
        line.extend_from_slice(target);
        line.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        line.extend_from_slice(host.as_bytes());
        line.extend_from_slice(b"\r\n\r\n");
        line
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
        let cases: [(&[&[u8]], &str); 3] = [
            (
                &[
                    b"http://user@a.example/p",
                    b"http://user:pass@a.example:8080/p?q=1",
                    b"https://@a.example/",
                    b"http://a.example@b.example/",
                ],
                "userinfo in request-target",
            ),
            (
                &[b"http://:80/p", b"http://:/", b"https://?q"],
                "absolute-form target without host",
            ),
            (
                &[
                    b"http://a{b}/p",
                    b"http://a\"b/",
                    b"http://a\\b/",
                    b"http://a^b?x",
                ],
                "invalid host in request-target",
            ),
        ];
        for (targets, reason) in cases {
            for target in targets {
                assert_eq!(err(&get(target, "a.example")), BAD(reason), "{target:?}");
            }
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
}
