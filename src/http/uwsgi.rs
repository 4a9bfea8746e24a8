//! The uwsgi protocol's request packet (what nginx's `uwsgi_pass` and uWSGI's routers
//! send): a 4-byte header, then the request's CGI variables as length-prefixed pairs, then
//! the body. Bytes in: the variables, turned into an HTTP/1.0 request head that the usual
//! parser then checks, and the bytes the packet took; `Ok(None)` while it is incomplete.

use std::net::IpAddr;

/// A CGI variable: its name and value.
pub type Variable = (Box<[u8]>, Box<[u8]>);

/// A variable as it lies in the packet.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// Why a packet was refused; the connection is closed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UwsgiError(pub &'static str);

/// A request as a uwsgi packet gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UwsgiRequest {
    /// An HTTP/1.0 request head made of REQUEST_METHOD, REQUEST_URI (or PATH_INFO and
    /// QUERY_STRING), CONTENT_TYPE, CONTENT_LENGTH and the HTTP_* variables: HTTP/1.0, so
    /// that the response is delimited by its length or the connection's close, never
    /// chunked, and the connection ends with it (as nginx expects of uwsgi upstreams).
    pub head: Vec<u8>,
    /// The other variables (PATH_INFO, SCRIPT_NAME, SERVER_NAME, SERVER_PORT,
    /// SERVER_PROTOCOL, HTTPS, DOCUMENT_ROOT...), for the environ as they are. Only names
    /// of capitals, digits and `_` are kept, so none can pose as `wsgi.*` keys.
    pub environ: Vec<Variable>,
    /// REMOTE_ADDR and REMOTE_PORT, when they read as an address and a port.
    pub remote: Option<(IpAddr, Option<u16>)>,
    /// HTTPS is `on` (or `1`), or REQUEST_SCHEME / UWSGI_SCHEME is `https`.
    pub https: bool,
}

/// The largest packet accepted is the whole head limit, and never more than the 16-bit
/// size field allows.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(UwsgiRequest, usize)>, UwsgiError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    // modifier1 0: a WSGI/CGI request; modifier2 0.
    if buf[0] != 0 || buf[3] != 0 {
        return Err(UwsgiError("uwsgi packet with unsupported modifiers"));
    }
    let size = usize::from(u16::from_le_bytes([buf[1], buf[2]]));
    if size > max {
        return Err(UwsgiError("uwsgi packet larger than the head limit"));
    }
    let Some(vars) = buf.get(4..4 + size) else {
        return Ok(None);
    };
    let vars = variables(vars)?;
    Ok(Some((request(&vars)?, 4 + size)))
}

/// `key_size (u16 LE), key, value_size (u16 LE), value`, repeated to the end exactly.
fn variables(mut rest: &[u8]) -> Result<Vec<Pair<'_>>, UwsgiError> {
    const BAD: UwsgiError = UwsgiError("malformed uwsgi variables");
    let mut vars = Vec::new();
    while !rest.is_empty() {
        let mut field = || -> Result<&[u8], UwsgiError> {
            let len = usize::from(u16::from_le_bytes([
                *rest.first().ok_or(BAD)?,
                *rest.get(1).ok_or(BAD)?,
            ]));
            let value = rest.get(2..2 + len).ok_or(BAD)?;
            rest = &rest[2 + len..];
            Ok(value)
        };
        let key = field()?;
        let value = field()?;
        if key.is_empty() {
            return Err(BAD);
        }
        vars.push((key, value));
    }
    Ok(vars)
}

fn request(vars: &[Pair<'_>]) -> Result<UwsgiRequest, UwsgiError> {
    let get = |name: &[u8]| vars.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let method = get(b"REQUEST_METHOD").filter(|m| !m.is_empty());
    let method = method.ok_or(UwsgiError("uwsgi packet without REQUEST_METHOD"))?;
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(method);
    head.push(b' ');
    match get(b"REQUEST_URI").filter(|u| !u.is_empty()) {
        Some(uri) => head.extend_from_slice(uri),
        None => {
            // PATH_INFO is decoded: encode what a request-target cannot hold.
            let path = get(b"PATH_INFO").filter(|p| !p.is_empty()).unwrap_or(b"/");
            for &b in path {
                if b.is_ascii_graphic() && !matches!(b, b'%' | b'?' | b'#') {
                    head.push(b);
                } else {
                    head.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
            }
            if let Some(query) = get(b"QUERY_STRING").filter(|q| !q.is_empty()) {
                head.push(b'?');
                head.extend_from_slice(query);
            }
        }
    }
    head.extend_from_slice(b" HTTP/1.0\r\n");
    let mut environ = Vec::new();
    for &(key, value) in vars {
        // No variable may break a line of the head it makes (a request smuggled in a
        // value), nor hold a NUL.
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(UwsgiError("uwsgi variable with a line break or NUL"));
        }
        let field: Option<&[u8]> = match key {
            b"CONTENT_TYPE" => Some(b"content-type"),
            b"CONTENT_LENGTH" => Some(b"content-length"),
            _ => None,
        };
        if let Some(name) = field {
            if !value.is_empty() {
                header(&mut head, name, value);
            }
        } else if let Some(name) = key.strip_prefix(b"HTTP_") {
            // Hop-by-hop fields were the client's connection's to nginx, not this one's:
            // this connection carries one request, framed by CONTENT_LENGTH alone.
            let hop = matches!(
                name,
                b"CONNECTION"
                    | b"KEEP_ALIVE"
                    | b"TRANSFER_ENCODING"
                    | b"TE"
                    | b"UPGRADE"
                    | b"PROXY_CONNECTION"
                    | b"CONTENT_LENGTH"
                    | b"CONTENT_TYPE"
            );
            if !hop && !name.is_empty() && cgi_name(name) {
                let name: Vec<u8> = name
                    .iter()
                    .map(|&b| {
                        if b == b'_' {
                            b'-'
                        } else {
                            b.to_ascii_lowercase()
                        }
                    })
                    .collect();
                header(&mut head, &name, value);
            }
        } else if !matches!(
            key,
            b"REQUEST_METHOD" | b"REQUEST_URI" | b"QUERY_STRING" | b"REMOTE_ADDR" | b"REMOTE_PORT"
        ) && cgi_name(key)
        {
            environ.push((Box::from(key), Box::from(value)));
        }
    }
    head.extend_from_slice(b"\r\n");
    let remote = get(b"REMOTE_ADDR")
        .and_then(|a| std::str::from_utf8(a).ok()?.parse::<IpAddr>().ok())
        .map(|ip| {
            let port = get(b"REMOTE_PORT").and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
            (ip, port)
        });
    let https = get(b"HTTPS").is_some_and(|v| v.eq_ignore_ascii_case(b"on") || v == b"1")
        || [&b"REQUEST_SCHEME"[..], b"UWSGI_SCHEME"]
            .iter()
            .any(|k| get(k).is_some_and(|v| v.eq_ignore_ascii_case(b"https")));
    Ok(UwsgiRequest {
        head,
        environ,
        remote,
        https,
    })
}

/// Capitals, digits and `_`: a CGI variable's name.
fn cgi_name(name: &[u8]) -> bool {
    name.iter()
        .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// One field line (values hold no CR, LF or NUL: checked before).
fn header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `vars` (modifier1 0, modifier2 0).
    fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in vars {
            body.extend_from_slice(&(k.len() as u16).to_le_bytes());
            body.extend_from_slice(k.as_bytes());
            body.extend_from_slice(&(v.len() as u16).to_le_bytes());
            body.extend_from_slice(v.as_bytes());
        }
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&body);
        out
    }

    /// What nginx's uwsgi_params send.
    const NGINX: &[(&str, &str)] = &[
        ("QUERY_STRING", "a=1"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "text/plain"),
        ("CONTENT_LENGTH", "5"),
        ("REQUEST_URI", "/p%20q?a=1"),
        ("PATH_INFO", "/p q"),
        ("DOCUMENT_ROOT", "/srv"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "https"),
        ("HTTPS", "on"),
        ("REMOTE_ADDR", "203.0.113.7"),
        ("REMOTE_PORT", "40000"),
        ("SERVER_PORT", "443"),
        ("SERVER_NAME", "www.example.com"),
        ("HTTP_HOST", "www.example.com"),
        ("HTTP_USER_AGENT", "curl/8"),
        ("HTTP_X_CUSTOM_THING", "x"),
        ("HTTP_CONNECTION", "keep-alive"),
        ("HTTP_TRANSFER_ENCODING", "chunked"),
    ];

    #[test]
    fn nginx_uwsgi_params() {
        let mut bytes = packet(NGINX);
        let used = bytes.len();
        bytes.extend_from_slice(b"hello");
        let (req, n) = parse(&bytes, 65536).unwrap().unwrap();
        assert_eq!(n, used);
        assert_eq!(
            String::from_utf8(req.head).unwrap(),
            "POST /p%20q?a=1 HTTP/1.0\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\
             host: www.example.com\r\nuser-agent: curl/8\r\nx-custom-thing: x\r\n\r\n"
        );
        let names: Vec<&[u8]> = req.environ.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            names,
            [
                &b"PATH_INFO"[..],
                b"DOCUMENT_ROOT",
                b"SERVER_PROTOCOL",
                b"REQUEST_SCHEME",
                b"HTTPS",
                b"SERVER_PORT",
                b"SERVER_NAME"
            ]
        );
        assert_eq!(
            req.remote,
            Some(("203.0.113.7".parse().unwrap(), Some(40000)))
        );
        assert!(req.https);
    }

    #[test]
    fn incomplete_then_whole() {
        let bytes = packet(NGINX);
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n], 65536), Ok(None), "{n}");
        }
        assert!(parse(&bytes, 65536).unwrap().is_some());
    }

    #[test]
    fn target_from_path_info_when_no_request_uri() {
        let bytes = packet(&[
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/a b/%"),
            ("QUERY_STRING", "x=1"),
        ]);
        let (req, _) = parse(&bytes, 65536).unwrap().unwrap();
        assert_eq!(req.head, b"GET /a%20b/%25?x=1 HTTP/1.0\r\n\r\n");
        assert!(!req.https);
        assert_eq!(req.remote, None);
    }

    #[test]
    fn refusals() {
        for (k, v) in [
            ("REQUEST_URI", "/ HTTP/1.0\r\nHost: x\r\n\r\nGET /smuggled"),
            ("HTTP_X_A", "a\r\nX-B: b"),
            ("HTTP_X_A", "a\nb"),
            ("QUERY_STRING", "a\0"),
        ] {
            let bytes = packet(&[("REQUEST_METHOD", "GET"), (k, v)]);
            assert_eq!(
                parse(&bytes, 65536),
                Err(UwsgiError("uwsgi variable with a line break or NUL")),
                "{k}"
            );
        }
        let mut bad_modifier = packet(NGINX);
        bad_modifier[0] = 5;
        assert_eq!(
            parse(&bad_modifier, 65536),
            Err(UwsgiError("uwsgi packet with unsupported modifiers"))
        );
        assert_eq!(
            parse(&packet(NGINX), 16),
            Err(UwsgiError("uwsgi packet larger than the head limit"))
        );
        // A value longer than what is left of the packet.
        let mut cut = packet(&[("REQUEST_METHOD", "GET")]);
        let last = cut.len() - 4;
        cut[last] = 200;
        assert_eq!(
            parse(&cut, 65536),
            Err(UwsgiError("malformed uwsgi variables"))
        );
        assert_eq!(
            parse(&packet(&[("PATH_INFO", "/")]), 65536),
            Err(UwsgiError("uwsgi packet without REQUEST_METHOD"))
        );
        assert_eq!(
            parse(&packet(&[("", "x"), ("REQUEST_METHOD", "GET")]), 65536),
            Err(UwsgiError("malformed uwsgi variables"))
        );
    }

    /// Names that are not CGI variables (`wsgi.input`, lower case) never reach the environ.
    #[test]
    fn only_cgi_names_for_the_environ() {
        let bytes = packet(&[
            ("REQUEST_METHOD", "GET"),
            ("wsgi.url_scheme", "https"),
            ("qiao.original", "x"),
            ("Path_Info", "/x"),
            ("HTTP_x_y", "1"),
        ]);
        let (req, _) = parse(&bytes, 65536).unwrap().unwrap();
        assert!(req.environ.is_empty());
        assert_eq!(req.head, b"GET / HTTP/1.0\r\n\r\n");
    }
}
