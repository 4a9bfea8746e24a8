//! Finds where a request head ends, under the size limits and before any parsing: the method's first bytes, the CRLF line ends, the version token.

use super::{Limits, Version};
use crate::http::error::HttpError;
use crate::http::response::is_tchar;

/// `0` means unlimited.
fn limit(n: usize) -> usize {
    if n == 0 {
        usize::MAX
    } else {
        n
    }
}

/// Refuses bytes that cannot begin a method (a TLS ClientHello, binary noise) at once,
/// rather than leaving them to wait for a line end that may never come. `buf` starts at
/// the request line.
pub(super) fn check_method(buf: &[u8], limits: &Limits) -> Result<(), HttpError> {
    // Only the bytes a valid request line could hold are looked at, the same window
    // `scan_head` searches, so the answer does not depend on how the bytes were split
    // into reads (past that window it is 414 however the rest arrives).
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
    Ok(())
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
pub(super) struct Shape {
    /// Length of the request line without its CRLF.
    pub(super) line_len: usize,
    /// Length of the whole head, final blank line included.
    pub(super) head_len: usize,
    /// Number of header field lines.
    pub(super) fields: usize,
}

/// Finds the end of the head, enforcing the size limits and CRLF line endings
/// as it goes, so that a client can never make us buffer past a limit.
pub(super) fn scan_head(buf: &[u8], limits: &Limits) -> Result<Option<Shape>, HttpError> {
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
pub(super) struct VersionToken {
    /// The version the request is served as.
    pub(super) version: Version,
    /// Offset of the token in the head.
    pub(super) start: usize,
    /// The minor digit is 2..=9, which httparse does not accept.
    pub(super) higher_minor: bool,
}

/// RFC 9112 §2.3: `HTTP-version = HTTP-name "/" DIGIT "." DIGIT`, with
/// `HTTP-name` case-sensitive. RFC 9110 §2.5: a 1.x request with a higher
/// minor is served as the highest 1.x we support.
pub(super) fn parse_version(line: &[u8]) -> Result<VersionToken, HttpError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::tests::{err, ok, parse_with, partial, BAD};

    /// Incomplete heads are `Ok(None)` at every cut point, and the whole parses.
    #[test]
    fn incomplete_is_not_an_error() {
        let full = b"GET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n";
        for cut in 0..full.len() {
            partial(&full[..cut]);
        }
        ok(full);
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
}
