//! The access log: gunicorn's `--access-logformat` atoms, parsed once, rendered per request.

use std::time::Instant;

use crate::http::RequestHead;
use crate::log::{local_timestamp, Sink};
use std::sync::Mutex;

/// One piece of a parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Text(String),
    RemoteAddr,     // h
    Dash,           // l, u: identd and remote user, never known here
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
}

/// What the access log needs to know of one finished request.
pub(crate) struct AccessRecord<'a> {
    pub remote_addr: &'a str,
    pub head: &'a RequestHead,
    pub status: u16,
    pub body_bytes: u64,
    /// The serialized response head, searched only by `%({name}o)s` atoms.
    pub response_head: &'a [u8],
    pub started: Instant,
}

pub(crate) struct AccessLog {
    atoms: Vec<Atom>,
    /// One writer for the process, so lines from several threads stay whole.
    sink: Mutex<Sink>,
}

impl AccessLog {
    /// Parses a `%(name)s` format; unknown atoms are an error naming the atom.
    pub(crate) fn new(format: &str, sink: Sink) -> Result<AccessLog, String> {
        Ok(AccessLog {
            atoms: parse_format(format)?,
            sink: Mutex::new(sink),
        })
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
        for atom in &self.atoms {
            render(atom, rec, &mut line);
        }
        line.push('\n');
        if let Ok(mut sink) = self.sink.lock() {
            sink.write_all(line.as_bytes());
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
        atoms.push(atom_named(name)?);
    }
    text.push_str(rest);
    if !text.is_empty() {
        atoms.push(Atom::Text(text));
    }
    Ok(atoms)
}

fn atom_named(name: &str) -> Result<Atom, String> {
    if let Some(inner) = name.strip_prefix('{') {
        if let Some(var) = inner.strip_suffix("}i") {
            return Ok(Atom::RequestHeader(var.to_ascii_lowercase()));
        }
        if let Some(var) = inner.strip_suffix("}o") {
            return Ok(Atom::ResponseHeader(var.to_ascii_lowercase()));
        }
        if let Some(var) = inner.strip_suffix("}e") {
            return Ok(Atom::EnvVar(var.to_string()));
        }
    }
    Ok(match name {
        "h" => Atom::RemoteAddr,
        "l" | "u" => Atom::Dash,
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
        _ => return Err(format!("unknown access log atom %({name})s")),
    })
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
    let elapsed = rec.started.elapsed();
    match atom {
        Atom::Text(t) => out.push_str(t),
        Atom::RemoteAddr => out.push_str(if rec.remote_addr.is_empty() {
            "-"
        } else {
            rec.remote_addr
        }),
        Atom::Dash => out.push('-'),
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
        Atom::EnvVar(name) => match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => out.push('-'),
        },
    }
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
    fn rejects_unknown_atoms() {
        assert!(parse_format("%(zz)s").unwrap_err().contains("%(zz)s"));
        assert!(parse_format("%(h").is_err());
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
