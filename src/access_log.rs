//! The access log: gunicorn's `--access-logformat` atoms, parsed once, rendered per request.

use std::time::Duration;

use pyo3::prelude::*;

use crate::http::RequestHead;
use crate::log::{local_timestamp, Sink};
use crate::syslog::Syslog;
use std::sync::Mutex;

/// One piece of a parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Text(String),
    RemoteAddr,     // h
    Dash,           // l: identd, never known here
    User,           // u: the user of Basic authentication
    Time,           // t
    RequestLine,    // r
    Method,         // m
    Path,           // U
    Query,          // q
    Protocol,       // H
    Status,         // s
    BytesOrDash,    // b
    Bytes,          // B
    Referer,        // f
    UserAgent,      // a
    Seconds,        // T
    Millis,         // M
    Micros,         // D
    DecimalSeconds, // L
    Pid,            // p
    RequestHeader(String),
    ResponseHeader(String),
    EnvVar(String),
    /// A name gunicorn has no atom for: `-`, as gunicorn prints it (its atoms are a dict
    /// whose missing keys read as `-`), so that a format written for it runs unchanged.
    Unknown(String),
}

/// What the access log needs to know of one finished request.
pub(crate) struct AccessRecord<'a> {
    pub remote_addr: &'a str,
    pub head: &'a RequestHead,
    pub status: u16,
    pub body_bytes: u64,
    /// The serialized response head, searched only by `%({name}o)s` atoms.
    pub response_head: &'a [u8],
    /// From the request's first byte to the end of its response.
    pub elapsed: Duration,
    /// The request's WSGI environ, read by `%({NAME}e)s` atoms (`None`: a request the
    /// app never saw, whose atoms show `-`).
    pub environ: Option<&'a Bound<'a, PyAny>>,
}

pub(crate) struct AccessLog {
    atoms: Vec<Atom>,
    /// `--log-format json`: a JSON object per line, a field per atom of the format.
    json: bool,
    /// One writer for the process, so lines from several threads stay whole.
    sink: Mutex<Sink>,
    /// `--log-syslog`: each line is also sent there (gunicorn's default, unless its
    /// `disable_redirect_access_to_syslog`).
    syslog: Option<Syslog>,
    /// A logging configuration's `gunicorn.access` logger: lines go there, not to `sink`.
    python: Option<Py<PyAny>>,
}

impl AccessLog {
    /// Parses a `%(name)s` format; unknown atoms are an error naming the atom.
    pub(crate) fn new(format: &str, sink: Sink) -> Result<AccessLog, String> {
        Ok(AccessLog {
            atoms: parse_format(format)?,
            json: false,
            sink: Mutex::new(sink),
            syslog: None,
            python: None,
        })
    }

    /// The same log, its lines handed to a Python logger instead of its sink.
    pub(crate) fn with_python(mut self, logger: Option<Py<PyAny>>) -> AccessLog {
        self.python = logger;
        self
    }

    /// The same log, its lines JSON objects (`--log-format json`).
    pub(crate) fn with_json(mut self, json: bool) -> AccessLog {
        self.json = json;
        self
    }

    /// The same log, its lines also sent to `syslog`.
    pub(crate) fn with_syslog(mut self, syslog: Option<Syslog>) -> AccessLog {
        self.syslog = syslog;
        self
    }

    /// Whether the format reads the environ (`%({NAME}e)s`), which must then be kept.
    pub(crate) fn reads_environ(&self) -> bool {
        self.atoms.iter().any(|a| matches!(a, Atom::EnvVar(_)))
    }

    /// Reopens the log file (USR1 after rotation).
    pub(crate) fn reopen(&self) -> std::io::Result<()> {
        match self.sink.lock() {
            Ok(mut sink) => sink.reopen(),
            Err(_) => Ok(()),
        }
    }

    pub(crate) fn log(&self, rec: &AccessRecord<'_>) {
        let mut line = String::with_capacity(160);
        if self.json {
            render_json(&self.atoms, rec, &mut line);
        } else {
            for atom in &self.atoms {
                render(atom, rec, &mut line);
            }
        }
        line.push('\n');
        match &self.python {
            Some(logger) => {
                let record = &line[..line.len() - 1];
                crate::log::to_python(logger, crate::log::Level::Info, record);
            }
            None => {
                if let Ok(mut sink) = self.sink.lock() {
                    sink.write_all(line.as_bytes());
                }
            }
        }
        if let Some(syslog) = &self.syslog {
            syslog.send(crate::log::Level::Info, &line);
        }
    }
}

fn parse_format(format: &str) -> Result<Vec<Atom>, String> {
    let mut atoms = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("%%") {
            text.push('%');
            rest = after;
            continue;
        }
        let Some(after) = rest.strip_prefix("%(") else {
            return Err(format!("stray '%' in access log format near {rest:?}"));
        };
        let Some(close) = after.find(")s") else {
            return Err(format!(
                "unterminated atom in access log format near {rest:?}"
            ));
        };
        let name = &after[..close];
        rest = &after[close + 2..];
        if !text.is_empty() {
            atoms.push(Atom::Text(std::mem::take(&mut text)));
        }
        atoms.push(atom_named(name));
    }
    text.push_str(rest);
    if !text.is_empty() {
        atoms.push(Atom::Text(text));
    }
    Ok(atoms)
}

/// The names in `format` that are not gunicorn atoms (printed `-`), for a warning at
/// start; an error for a format that does not parse.
pub(crate) fn unknown_atoms(format: &str) -> Result<Vec<String>, String> {
    Ok(parse_format(format)?
        .into_iter()
        .filter_map(|atom| match atom {
            Atom::Unknown(name) => Some(name),
            _ => None,
        })
        .collect())
}

/// Checks an access-log format once at start, whether an access log is on or not: the
/// names that are not atoms (each printed as `-`), or `ValueError` naming what does not
/// parse.
#[pyfunction]
pub(crate) fn check_access_log_format(format: &str) -> PyResult<Vec<String>> {
    unknown_atoms(format).map_err(pyo3::exceptions::PyValueError::new_err)
}

fn atom_named(name: &str) -> Atom {
    if let Some(inner) = name.strip_prefix('{') {
        if let Some(var) = inner.strip_suffix("}i") {
            return Atom::RequestHeader(var.to_ascii_lowercase());
        }
        if let Some(var) = inner.strip_suffix("}o") {
            return Atom::ResponseHeader(var.to_ascii_lowercase());
        }
        if let Some(var) = inner.strip_suffix("}e") {
            return Atom::EnvVar(var.to_string());
        }
    }
    match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "b" => Atom::BytesOrDash,
        "B" => Atom::Bytes,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => Atom::Unknown(name.to_string()),
    }
}

fn request_header<'a>(head: &'a RequestHead, lower: &str) -> Option<&'a [u8]> {
    (0..head.headers.len())
        .find(|&i| head.header_name(i).eq_ignore_ascii_case(lower.as_bytes()))
        .map(|i| head.header_value(i))
}

fn response_header<'a>(head: &'a [u8], lower: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(lower.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn push_latin1(out: &mut String, bytes: &[u8]) {
    out.extend(bytes.iter().map(|&b| b as char));
}

fn push_or_dash(out: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) if !b.is_empty() => push_latin1(out, b),
        _ => out.push('-'),
    }
}

fn render(atom: &Atom, rec: &AccessRecord<'_>, out: &mut String) {
    let head = rec.head;
    let elapsed = rec.elapsed;
    match atom {
        Atom::Text(t) => out.push_str(t),
        Atom::RemoteAddr => out.push_str(if rec.remote_addr.is_empty() {
            "-"
        } else {
            rec.remote_addr
        }),
        Atom::Dash | Atom::Unknown(_) => out.push('-'),
        Atom::User => push_or_dash(out, basic_user(head).as_deref()),
        Atom::Time => {
            out.push('[');
            out.push_str(&local_timestamp(true));
            out.push(']');
        }
        Atom::RequestLine => {
            push_latin1(out, head.method());
            out.push(' ');
            push_latin1(out, head.target());
            out.push(' ');
            push_latin1(out, head.version_raw());
        }
        Atom::Method => push_latin1(out, head.method()),
        Atom::Path => push_latin1(out, head.path()),
        Atom::Query => push_latin1(out, head.query()),
        Atom::Protocol => push_latin1(out, head.version_raw()),
        Atom::Status => out.push_str(itoa::Buffer::new().format(rec.status)),
        Atom::BytesOrDash if rec.body_bytes == 0 => out.push('-'),
        Atom::BytesOrDash | Atom::Bytes => out.push_str(itoa::Buffer::new().format(rec.body_bytes)),
        Atom::Referer => push_or_dash(out, request_header(head, "referer")),
        Atom::UserAgent => push_or_dash(out, request_header(head, "user-agent")),
        Atom::Seconds => out.push_str(itoa::Buffer::new().format(elapsed.as_secs())),
        Atom::Millis => out.push_str(itoa::Buffer::new().format(elapsed.as_millis())),
        Atom::Micros => out.push_str(itoa::Buffer::new().format(elapsed.as_micros())),
        Atom::DecimalSeconds => out.push_str(&format!("{:.6}", elapsed.as_secs_f64())),
        Atom::Pid => out.push_str(itoa::Buffer::new().format(std::process::id())),
        Atom::RequestHeader(name) => push_or_dash(out, request_header(head, name)),
        Atom::ResponseHeader(name) => push_or_dash(out, response_header(rec.response_head, name)),
        // gunicorn's `%({NAME}e)s` is the WSGI environ's key, never the server's own
        // environment (which holds secrets a log must not print).
        Atom::EnvVar(name) => match rec.environ.and_then(|e| e.get_item(name).ok()) {
            Some(v) if !v.is_none() => match v.str() {
                Ok(text) => out.push_str(&text.to_string_lossy()),
                Err(_) => out.push('-'),
            },
            _ => out.push('-'),
        },
    }
}

/// The format's atoms as one JSON object: a field each, named for what it shows; numbers
/// as numbers, what is not known (`-` in a text line) as `null`.
fn render_json(atoms: &[Atom], rec: &AccessRecord<'_>, out: &mut String) {
    let mut value = String::with_capacity(64);
    out.push('{');
    let mut first = true;
    for atom in atoms {
        let name = match atom {
            Atom::Text(_) => continue,
            Atom::RemoteAddr => "remote_addr".to_string(),
            Atom::Dash => "ident".to_string(),
            Atom::User => "user".to_string(),
            Atom::Time => "time".to_string(),
            Atom::RequestLine => "request".to_string(),
            Atom::Method => "method".to_string(),
            Atom::Path => "path".to_string(),
            Atom::Query => "query".to_string(),
            Atom::Protocol => "protocol".to_string(),
            Atom::Status => "status".to_string(),
            Atom::BytesOrDash | Atom::Bytes => "bytes".to_string(),
            Atom::Referer => "referer".to_string(),
            Atom::UserAgent => "user_agent".to_string(),
            Atom::Seconds => "duration_s".to_string(),
            Atom::Millis => "duration_ms".to_string(),
            Atom::Micros => "duration_us".to_string(),
            Atom::DecimalSeconds => "duration".to_string(),
            Atom::Pid => "pid".to_string(),
            Atom::RequestHeader(n) => format!("request_header.{n}"),
            Atom::ResponseHeader(n) => format!("response_header.{n}"),
            Atom::EnvVar(n) => format!("environ.{n}"),
            Atom::Unknown(n) => n.clone(),
        };
        if !first {
            out.push_str(", ");
        }
        first = false;
        crate::log::push_json_str(out, &name);
        out.push_str(": ");
        value.clear();
        match atom {
            Atom::Time => {
                crate::log::push_json_str(out, &local_timestamp(false));
                continue;
            }
            Atom::BytesOrDash => render(&Atom::Bytes, rec, &mut value),
            _ => render(atom, rec, &mut value),
        }
        let numeric = matches!(
            atom,
            Atom::Status
                | Atom::BytesOrDash
                | Atom::Bytes
                | Atom::Seconds
                | Atom::Millis
                | Atom::Micros
                | Atom::DecimalSeconds
                | Atom::Pid
        );
        if numeric {
            out.push_str(&value);
        } else if value == "-" && !matches!(atom, Atom::Path | Atom::RequestLine) {
            out.push_str("null");
        } else {
            crate::log::push_json_str(out, &value);
        }
    }
    out.push('}');
}

/// The user name of `Authorization: Basic` (gunicorn's `%(u)s`): what precedes the first
/// `:` of the decoded credentials; `None` for other schemes or undecodable ones.
fn basic_user(head: &RequestHead) -> Option<Vec<u8>> {
    let value = request_header(head, "authorization")?;
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64_decode(token.trim_ascii())?;
    let end = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[..end].to_vec())
}

/// Standard base64 (RFC 4648 §4) with its padding; `None` for anything else.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gunicorn_default_format() {
        let atoms =
            parse_format(r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#).unwrap();
        assert_eq!(atoms[0], Atom::RemoteAddr);
        assert_eq!(atoms[1], Atom::Text(" ".into()));
        assert!(atoms.contains(&Atom::UserAgent));
        assert_eq!(atoms.last(), Some(&Atom::Text("\"".into())));
    }

    #[test]
    fn parses_header_atoms_and_percent() {
        let atoms = parse_format("%({X-Id}i)s %({content-type}o)s %({HOME}e)s 100%%").unwrap();
        assert_eq!(atoms[0], Atom::RequestHeader("x-id".into()));
        assert_eq!(atoms[2], Atom::ResponseHeader("content-type".into()));
        assert_eq!(atoms[4], Atom::EnvVar("HOME".into()));
        assert_eq!(atoms[5], Atom::Text(" 100%".into()));
    }

    #[test]
    fn unknown_atoms_are_kept_and_bad_syntax_refused() {
        assert_eq!(
            parse_format("%(zz)s").unwrap(),
            [Atom::Unknown("zz".into())]
        );
        assert_eq!(
            unknown_atoms("%(h)s %()s %(asctime)s").unwrap(),
            ["", "asctime"]
        );
        assert!(parse_format("%(h").is_err());
    }

    /// gunicorn's `%(u)s`: the user of `Authorization: Basic` (RFC 7617 §2, user-id
    /// before the first colon).
    #[test]
    fn user_of_basic_authentication() {
        assert_eq!(base64_decode(b"YWxpY2U6czNjcjN0").unwrap(), b"alice:s3cr3t");
        assert_eq!(base64_decode(b"YTpi").unwrap(), b"a:b");
        assert_eq!(base64_decode(b"YTo=").unwrap(), b"a:");
        assert_eq!(base64_decode(b"YQ==").unwrap(), b"a");
        assert!(base64_decode(b"YQ=").is_none());
        assert!(base64_decode(b"Y!==").is_none());
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: basic YWxpY2U6czNjcjN0\r\n\r\n";
        let mut buf = bytes::BytesMut::from(&raw[..]);
        let head = crate::http::parse_head(&mut buf, &crate::http::Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(basic_user(&head).unwrap(), b"alice");
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc\r\n\r\n";
        let mut buf = bytes::BytesMut::from(&raw[..]);
        let head = crate::http::parse_head(&mut buf, &crate::http::Limits::default())
            .unwrap()
            .unwrap();
        assert!(basic_user(&head).is_none());
    }

    #[test]
    fn finds_response_header() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A:  b \r\n\r\n";
        assert_eq!(response_header(head, "x-a"), Some(&b"b"[..]));
        assert_eq!(
            response_header(head, "content-type"),
            Some(&b"text/plain"[..])
        );
        assert_eq!(response_header(head, "nope"), None);
    }
}
