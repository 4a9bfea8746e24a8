//! A request head from the fields an HTTP/2 stream carries (RFC 9113 §8.3: the pseudo-header
//! fields and the rest), laid out like an HTTP/1.1 head so that the WSGI layer reads both
//! alike: `METHOD SP target SP HTTP/2`, then `name: value` lines, `:authority` as `host`.

use super::target::split_target;
use super::{BodyFraming, HttpError, Limits, RequestHead, Version};

/// The version token an HTTP/2 request shows (`SERVER_PROTOCOL`).
const HTTP2: &[u8] = b"HTTP/2";

impl RequestHead {
    /// The head of an HTTP/2 request. `target` is `:path` (`*` for `OPTIONS *`), `fields`
    /// the regular fields as decoded (lower-case names, pseudo-fields removed), `length`
    /// the body's length when known (`Content-Length`, or the whole body already read).
    ///
    /// RFC 9113 §8.2.3: `cookie` fields, which HTTP/2 lets a client split, are joined
    /// with `; ` into one. §8.3.1: `:authority` is the host; a `host` field is dropped
    /// when there is one. The request line, field count and field size limits apply as
    /// to an HTTP/1.1 head.
    pub fn from_h2<'a>(
        method: &[u8],
        target: &[u8],
        authority: Option<&[u8]>,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        length: Option<u64>,
        limits: &Limits,
    ) -> Result<RequestHead, HttpError> {
        let line_len = method.len() + 1 + target.len() + 1 + HTTP2.len();
        if limits.max_request_line != 0 && line_len > limits.max_request_line {
            return Err(HttpError::UriTooLong);
        }
        let mut buf = Vec::with_capacity(line_len + 256);
        buf.extend_from_slice(method);
        buf.push(b' ');
        let target_start = buf.len();
        buf.extend_from_slice(target);
        let target_r = target_start..buf.len();
        buf.push(b' ');
        let version_raw = buf.len()..buf.len() + HTTP2.len();
        buf.extend_from_slice(HTTP2);
        buf.extend_from_slice(b"\r\n");

        let mut headers = Vec::new();
        let mut host = None;
        let push = |buf: &mut Vec<u8>, name: &[u8], value: &[u8]| {
            let n = buf.len()..buf.len() + name.len();
            buf.extend_from_slice(name);
            buf.extend_from_slice(b": ");
            let v = buf.len()..buf.len() + value.len();
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n");
            (n, v)
        };
        if let Some(authority) = authority {
            let (n, v) = push(&mut buf, b"host", authority);
            host = Some(v.clone());
            headers.push((n, v));
        }
        let mut cookies: Vec<&[u8]> = Vec::new();
        for (name, value) in fields {
            match name {
                b"cookie" => cookies.push(value),
                b"host" if authority.is_some() => {}
                // The body's length is the one the stream had (below).
                b"content-length" => {}
                _ => {
                    let (n, v) = push(&mut buf, name, value);
                    if name == b"host" {
                        host = Some(v.clone());
                    }
                    headers.push((n, v));
                }
            }
        }
        if !cookies.is_empty() {
            let joined = cookies.join(&b"; "[..]);
            headers.push(push(&mut buf, b"cookie", &joined));
        }
        if let Some(n) = length {
            let mut text = itoa::Buffer::new();
            headers.push(push(&mut buf, b"content-length", text.format(n).as_bytes()));
        }
        if limits.max_headers != 0 && headers.len() > limits.max_headers {
            return Err(HttpError::HeaderFieldsTooLarge);
        }
        // A field line as HTTP/1.1 counts it against the same limit: `name: value` and its
        // CRLF, as laid out in `buf`.
        let field_limit = limits.max_header_field_size;
        if field_limit != 0
            && headers
                .iter()
                .any(|(n, v)| v.end + 2 - n.start > field_limit)
        {
            return Err(HttpError::HeaderFieldsTooLarge);
        }

        let parts = split_target(method, target)?;
        let t0 = target_r.start;
        Ok(RequestHead {
            buf: buf.into(),
            method: 0..method.len(),
            target: target_r,
            path: parts.path.start + t0..parts.path.end + t0,
            query: parts.query.start + t0..parts.query.end + t0,
            version: Version::Http2,
            version_raw,
            headers,
            framing: match length {
                Some(0) | None => BodyFraming::Empty,
                Some(n) => BodyFraming::Length(n),
            },
            keep_alive: true,
            expect_continue: false,
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        target: &[u8],
        authority: Option<&[u8]>,
        fields: &[(&[u8], &[u8])],
        length: Option<u64>,
    ) -> RequestHead {
        RequestHead::from_h2(
            b"POST",
            target,
            authority,
            fields.iter().copied(),
            length,
            &Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn reads_like_an_http11_head() {
        let h = head(
            b"/a%20b?x=1",
            Some(b"example.com:8443"),
            &[(b"accept", b"*/*"), (b"host", b"ignored")],
            Some(3),
        );
        assert_eq!(h.method(), b"POST");
        assert_eq!(h.target(), b"/a%20b?x=1");
        assert_eq!(h.path(), b"/a%20b");
        assert_eq!(h.query(), b"x=1");
        assert_eq!(h.version_raw(), b"HTTP/2");
        assert_eq!(h.host(), Some(&b"example.com:8443"[..]));
        assert_eq!(h.header(b"accept"), Some(&b"*/*"[..]));
        assert_eq!(h.header(b"content-length"), Some(&b"3"[..]));
        assert_eq!(h.content_length(), Some(3));
        let hosts = h.headers().filter(|(n, _)| *n == b"host").count();
        assert_eq!(hosts, 1, "RFC 9113 §8.3.1: :authority replaces host");
    }

    /// RFC 9113 §8.2.3: the cookie fields of a request are one cookie header again.
    #[test]
    fn split_cookies_are_joined() {
        let h = head(
            b"/",
            None,
            &[(b"cookie", b"a=1"), (b"cookie", b"b=2")],
            None,
        );
        assert_eq!(h.header(b"cookie"), Some(&b"a=1; b=2"[..]));
        assert_eq!(h.framing, BodyFraming::Empty);
        assert_eq!(h.host(), None);
    }

    #[test]
    fn limits_apply() {
        let limits = Limits {
            max_request_line: 20,
            max_headers: 1,
            ..Limits::default()
        };
        let long = RequestHead::from_h2(b"GET", &[b'a'; 30], None, [], None, &limits);
        assert_eq!(long.unwrap_err(), HttpError::UriTooLong);
        let many: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"2")];
        let err = RequestHead::from_h2(b"GET", b"/", None, many, None, &limits);
        assert_eq!(err.unwrap_err(), HttpError::HeaderFieldsTooLarge);
    }

    /// `--limit-request-field-size` over HTTP/2: a field line as HTTP/1.1 counts it
    /// ("x: 12345\r\n" is 10 bytes), the joined cookie and :authority (as host) too.
    #[test]
    fn the_field_size_limit_applies() {
        let limits = Limits {
            max_header_field_size: 10,
            ..Limits::default()
        };
        let get = |authority: Option<&[u8]>, fields: &[(&[u8], &[u8])]| {
            RequestHead::from_h2(
                b"GET",
                b"/",
                authority,
                fields.iter().copied(),
                None,
                &limits,
            )
        };
        assert!(get(None, &[(b"x", b"12345")]).is_ok());
        let too_large = Err(HttpError::HeaderFieldsTooLarge);
        assert_eq!(get(None, &[(b"x", b"123456")]).map(|_| ()), too_large);
        let crumbs: &[(&[u8], &[u8])] = &[(b"cookie", b"a=1"), (b"cookie", b"b=2")];
        assert_eq!(get(None, crumbs).map(|_| ()), too_large); // "cookie: a=1; b=2"
        assert_eq!(get(Some(b"example.com"), &[]).map(|_| ()), too_large);
    }
}
