//! Checks and writes the response side: the app's status and header fields, and our own error responses.

/// PEP 3333 `start_response` status: `"200 OK"`, i.e. exactly three digits
/// (100..=999), one space, then a reason phrase (possibly empty) of
/// HTAB / SP / VCHAR / obs-text (RFC 9112 §4). Returns the code.
pub fn parse_status(status: &[u8]) -> Option<u16> {
    let [d0 @ b'1'..=b'9', d1 @ b'0'..=b'9', d2 @ b'0'..=b'9', b' ', reason @ ..] = status else {
        return None;
    };
    if !is_valid_field_value(reason) {
        return None;
    }
    Some(u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0'))
}

/// RFC 9110 §5.6.2: token = 1*tchar.
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 §5.5: field values are HTAB, SP, VCHAR and obs-text; no CR, LF,
/// NUL, DEL or other control bytes (which would split or smuggle headers).
pub fn is_valid_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// PEP 3333 "Other HTTP Features" and RFC 9110 §7.6.1: headers that concern
/// one connection only, which a WSGI application must not set.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let want: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        8 => &[b"trailers"],
        10 => &[b"connection", b"keep-alive"],
        17 => &[b"transfer-encoding"],
        18 => &[b"proxy-authenticate"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    want.iter().any(|w| w.eq_ignore_ascii_case(name))
}

/// The standard reason phrase for `code` (RFC 9110 §15 and the IANA
/// registry); empty for codes without one.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// RFC 9110 §6.4.1: 1xx, 204 and 304 responses, and every response to HEAD,
/// carry no content.
pub fn body_allowed(code: u16, head_request: bool) -> bool {
    !head_request && !(100..200).contains(&code) && code != 204 && code != 304
}

/// RFC 9110 §5.6.2 tchar.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// RFC 9110 §5.6.2 tchar, as a lookup table.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    /// PEP 3333: status is "NNN reason"; RFC 9112 §4: reason-phrase may be empty.
    #[test]
    fn status_parsing() {
        assert_eq!(parse_status(b"200 OK"), Some(200));
        assert_eq!(parse_status(b"404 Not Found"), Some(404));
        assert_eq!(parse_status(b"599 "), Some(599));
        assert_eq!(parse_status(b"100 Continue"), Some(100));
        assert_eq!(parse_status(b"999 x"), Some(999));
        assert_eq!(parse_status(b"200 caf\xc3\xa9\tok"), Some(200));
        for bad in [
            &b"200"[..],
            b"200OK",
            b"20 OK",
            b"2000 OK",
            b"099 Low",
            b"abc OK",
            b" 200 OK",
            b"200  \r\nX: y",
            b"200 OK\r\n",
            b"200 O\x00K",
            b"200 O\x7fK",
            b"",
        ] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
    }

    /// RFC 9110 §5.6.2: tchar only, non-empty.
    #[test]
    fn tokens() {
        assert!(is_token(b"Content-Type"));
        assert!(is_token(b"X.Custom|Pipe~!#$%&'*+^_`"));
        for bad in [
            &b""[..],
            b"A B",
            b"A:B",
            b"A\r",
            b"A(",
            b"\xc3\x9f",
            b"A\"",
            b"A/",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    /// RFC 9110 §5.5: no CR, LF, NUL or other CTLs except HTAB; obs-text allowed.
    #[test]
    fn field_values() {
        assert!(is_valid_field_value(b"text/html; charset=utf-8"));
        assert!(is_valid_field_value(b""));
        assert!(is_valid_field_value(b"a\tb caf\xc3\xa9 \xff"));
        for bad in [
            &b"a\rb"[..],
            b"a\nb",
            b"a\x00b",
            b"a\x7fb",
            b"\x01",
            b"x\r\nSet-Cookie: y",
        ] {
            assert!(!is_valid_field_value(bad), "{bad:?}");
        }
    }

    /// PEP 3333 "Other HTTP Features": hop-by-hop headers, any case.
    #[test]
    fn hop_by_hop() {
        for name in [
            "Connection",
            "keep-alive",
            "Proxy-Authenticate",
            "proxy-authorization",
            "TE",
            "Trailer",
            "Trailers",
            "Transfer-Encoding",
            "UPGRADE",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in [
            "Content-Length",
            "Content-Type",
            "Set-Cookie",
            "Te-X",
            "Date",
            "Server",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(599), "");
    }

    /// RFC 9110 §6.4.1: 1xx, 204, 304 and HEAD responses have no content.
    #[test]
    fn bodies() {
        assert!(body_allowed(200, false));
        assert!(body_allowed(404, false));
        assert!(!body_allowed(200, true));
        assert!(!body_allowed(100, false));
        assert!(!body_allowed(199, false));
        assert!(!body_allowed(204, false));
        assert!(!body_allowed(304, false));
        assert!(body_allowed(205, false));
    }
}
