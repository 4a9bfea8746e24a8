//! Runs gunicorn's request corpus (`../shared/conformance/gunicorn-requests`) through the parser and the chunked decoder; skipped when the corpus is absent.
//!
//! Every `invalid/*.req` must be refused (by `parse_head`, by the chunked
//! decoder, or by ending mid-request), and every `valid/*.req` must parse to
//! the method, path, query, version, headers and body `cases.json` records.
//! `cases.json`'s `path` is the raw path (`valid/027` keeps its `%20`), so it
//! is compared with `RequestHead::path()`, not with `percent_decode` of it.
//! Where we deliberately differ from gunicorn the case is listed in
//! `KNOWN_DIFFERENCES` with the reason.

use std::path::{Path, PathBuf};

use bytes::{Buf, BytesMut};

use super::chunked::ChunkedDecoder;
use super::error::HttpError;
use super::request::{parse_head, BodyFraming, Limits, RequestHead};

/// Cases where qiao's default behaviour differs from gunicorn's, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    // RFC 9112 §3.2: a request-target has no fragment; we answer 400,
    // gunicorn strips it.
    ("valid/005", "fragment in request-target"),
    (
        "valid/009",
        "fragment in request-target (and Transfer-Encoding: identity)",
    ),
    // RFC 9110 §4.2.4: userinfo in an http(s) target is refused (400), since the
    // absolute-form authority stands in for Host (RFC 9112 §3.2.2); gunicorn
    // accepts it.
    (
        "valid/rfc9112_target_absolute_userinfo_01",
        "userinfo in an absolute-form target is 400",
    ),
    // RFC 9112 §6.1: a transfer coding we do not implement is 501; gunicorn
    // passes gzip/identity through undecoded.
    ("valid/025", "Transfer-Encoding gzip is 501"),
    ("valid/025_line", "Transfer-Encoding gzip is 501"),
    (
        "valid/rfc9112_smuggle_gzip_chunked_01",
        "Transfer-Encoding gzip is 501",
    ),
    ("valid/029", "Transfer-Encoding identity is 501"),
    ("valid/030", "Transfer-Encoding identity is 501"),
    (
        "valid/rfc9112_smuggle_te_identity_chunked_01",
        "Transfer-Encoding identity is 501",
    ),
    // Settings we do not offer: whitespace before the colon and obs-fold are
    // always 400 (RFC 9112 §5.1, §5.2); methods keep their case (RFC 9110 §9.1).
    ("valid/028", "gunicorn strip_header_spaces"),
    ("valid/compat_obs_fold", "gunicorn permit_obsolete_folding"),
    (
        "valid/compat_obs_fold_huge",
        "gunicorn permit_obsolete_folding",
    ),
    ("valid/031compat", "gunicorn casefold_http_method"),
    // The PROXY protocol header is consumed before HTTP parsing, not here.
    ("valid/pp_01", "PROXY protocol is not this layer's job"),
    ("valid/pp_02", "PROXY protocol is not this layer's job"),
    ("valid/pp_04", "PROXY protocol is not this layer's job"),
    ("valid/pp_05", "PROXY protocol is not this layer's job"),
    // RFC 9110 §9.1: any token is a method; gunicorn by default refuses
    // lower-case methods.
    ("invalid/003c", "lower-case method token is accepted"),
    // X-Forwarded-* trust is decided by the WSGI layer, not the parser.
    ("invalid/019", "gunicorn forwarded_allow_ips"),
    // Header names with '_' are tokens; the WSGI layer decides whether to
    // drop them (gunicorn's default) or refuse them (header_map=refuse).
    ("invalid/040", "gunicorn header_map=refuse"),
    ("invalid/chunked_07", "gunicorn header_map=refuse"),
];

/// Corpus files whose body is shorter than their Content-Length: gunicorn
/// reports what is there; we check that prefix.
const TRUNCATED_BODIES: &[&str] = &["valid/099"];

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/gunicorn-requests");
    dir.is_dir().then_some(dir)
}

/// The gunicorn settings that correspond to our `Limits`.
fn limits_for(settings: Option<&Json>) -> Limits {
    let mut limits = Limits::default();
    let Some(Json::Obj(fields)) = settings else {
        return limits;
    };
    for (key, value) in fields {
        let Json::Num(n) = value else { continue };
        let n = *n as usize;
        match key.as_str() {
            "limit_request_line" => limits.max_request_line = n,
            "limit_request_fields" => limits.max_headers = n,
            // gunicorn applies its default field size when this is 0
            // (`invalid/limit_header_default_01`); ours would be unlimited.
            "limit_request_field_size" => {
                limits.max_header_field_size = if n == 0 { 8190 } else { n }
            }
            _ => {}
        }
    }
    limits
}

/// What one request on the wire parsed to.
struct Parsed {
    head: RequestHead,
    body: Vec<u8>,
    truncated: bool,
}

/// Reads every request in `bytes`, as a connection would up to EOF,
/// receiving `step` bytes per read.
fn run(bytes: &[u8], limits: &Limits, step: usize) -> Result<Vec<Parsed>, HttpError> {
    const INCOMPLETE: HttpError = HttpError::BadRequest("connection closed mid-request");
    enum Reading {
        Head,
        Length(RequestHead, usize, Vec<u8>),
        Chunked(RequestHead, ChunkedDecoder, Vec<u8>),
    }
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut reading = Reading::Head;
    let mut reads = bytes.chunks(step.max(1));
    loop {
        // Make all the progress the buffered bytes allow.
        let done = loop {
            match std::mem::replace(&mut reading, Reading::Head) {
                Reading::Head => match parse_head(&mut buf, limits)? {
                    None => break None,
                    Some(head) => match head.framing {
                        BodyFraming::Empty => break Some((head, Vec::new())),
                        BodyFraming::Length(n) => {
                            reading = Reading::Length(head, n as usize, Vec::new())
                        }
                        BodyFraming::Chunked => {
                            reading = Reading::Chunked(head, ChunkedDecoder::default(), Vec::new())
                        }
                    },
                },
                Reading::Length(head, left, mut body) => {
                    let n = left.min(buf.len());
                    body.extend_from_slice(&buf.split_to(n));
                    if n == left {
                        break Some((head, body));
                    }
                    reading = Reading::Length(head, left - n, body);
                    break None;
                }
                Reading::Chunked(head, mut decoder, mut body) => {
                    let used = decoder.decode(&buf, &mut body)?;
                    buf.advance(used);
                    if decoder.is_done() {
                        break Some((head, body));
                    }
                    reading = Reading::Chunked(head, decoder, body);
                    break None;
                }
            }
        };
        if let Some((head, body)) = done {
            // RFC 9112 §9.3: nothing after a non-persistent request is read.
            let last = !head.keep_alive;
            out.push(Parsed {
                head,
                body,
                truncated: false,
            });
            if last {
                return Ok(out);
            }
            continue;
        }
        match reads.next() {
            Some(read) => buf.extend_from_slice(read),
            None => {
                return match reading {
                    Reading::Head if buf.is_empty() => Ok(out),
                    // A Content-Length body cut short by EOF: keep what came.
                    Reading::Length(head, _, body) => {
                        out.push(Parsed {
                            head,
                            body,
                            truncated: true,
                        });
                        Ok(out)
                    }
                    _ => Err(INCOMPLETE),
                };
            }
        }
    }
}

/// Adds a Host field to every HTTP/1.1 request line: most of gunicorn's
/// valid HTTP/1.1 cases omit Host, which RFC 9112 §3.2 makes a 400.
fn with_host(bytes: &[u8]) -> Vec<u8> {
    const LINE_END: &[u8] = b" HTTP/1.1\r\n";
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut rest = bytes;
    while let Some(i) = rest.windows(LINE_END.len()).position(|w| w == LINE_END) {
        out.extend_from_slice(&rest[..i + LINE_END.len()]);
        out.extend_from_slice(b"Host: qiao.test\r\n");
        rest = &rest[i + LINE_END.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Each request's raw head and body.
type Digest = Vec<(Vec<u8>, Vec<u8>)>;

/// A comparable digest of a run: the error, or each request's head and body.
fn summary(result: &Result<Vec<Parsed>, HttpError>) -> Result<Digest, HttpError> {
    match result {
        Err(e) => Err(*e),
        Ok(parsed) => Ok(parsed
            .iter()
            .map(|p| (p.head.buf.to_vec(), p.body.clone()))
            .collect()),
    }
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 text"))
        .collect()
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn gunicorn_request_corpus() {
    let Some(dir) = corpus_dir() else {
        eprintln!("skipped: gunicorn request corpus not found");
        return;
    };
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    let Json::Arr(cases) = Json::parse(&text) else {
        panic!("cases.json is not a list")
    };
    let mut failures = Vec::new();
    let (mut checked, mut skipped) = (0, 0);
    for case in &cases {
        let name = case.get("case").and_then(Json::as_str).unwrap();
        let file = case.get("file").and_then(Json::as_str).unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let limits = limits_for(case.get("gunicorn_settings"));
        let mut input = bytes.clone();
        let mut result = run(&input, &limits, input.len());
        let missing_host =
            result.as_ref().err() == Some(&HttpError::BadRequest("missing Host header"));
        if missing_host {
            // Re-run with a Host so that the rest of the case is still checked
            // (and an invalid case is refused for its own reason).
            input = with_host(&bytes);
            result = run(&input, &limits, input.len());
        }
        // Byte-at-a-time reads must give the same outcome as one read.
        let bytewise = run(&input, &limits, 1);
        if summary(&result) != summary(&bytewise) {
            failures.push(format!(
                "{name}: one read gives {:?}, byte reads give {:?}",
                summary(&result),
                summary(&bytewise)
            ));
        }
        if let Some((_, why)) = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == name) {
            // Keep the list honest: each listed case must really differ.
            let differs = if name.starts_with("invalid/") {
                result.is_ok()
            } else {
                result.is_err() || name == "valid/031compat"
            };
            if !differs {
                failures.push(format!("{name}: listed as a difference ({why}) but agrees"));
            }
            skipped += 1;
            continue;
        }
        checked += 1;

        if name.starts_with("invalid/") {
            if let Ok(parsed) = &result {
                failures.push(format!(
                    "{name}: accepted {} request(s), gunicorn says {:?}",
                    parsed.len(),
                    case.get("gunicorn_error")
                ));
            }
            continue;
        }

        let parsed = match result {
            Ok(parsed) => parsed,
            Err(e) => {
                failures.push(format!("{name}: refused with {e}"));
                continue;
            }
        };
        let Some(Json::Arr(expected)) = case.get("requests") else {
            panic!("{name}: no requests")
        };
        if parsed.len() != expected.len() {
            failures.push(format!(
                "{name}: {} requests, expected {}",
                parsed.len(),
                expected.len()
            ));
            continue;
        }
        for (got, want) in parsed.iter().zip(expected) {
            let field = |k: &str| latin1(want.get(k).and_then(Json::as_str).unwrap());
            let h = &got.head;
            let mut check = |what: &str, ours: &[u8], theirs: &[u8]| {
                if ours != theirs {
                    failures.push(format!(
                        "{name}: {what} {:?} != {:?}",
                        show(ours),
                        show(theirs)
                    ));
                }
            };
            check("method", h.method(), &field("method"));
            // gunicorn splits an authority-form target with urlsplit, which
            // reads "example.com:443" as scheme "example.com"; our path for
            // CONNECT is the whole authority.
            let want_path = if h.method() == b"CONNECT" {
                field("target")
            } else {
                field("path")
            };
            check("path", h.path(), &want_path);
            check("query", h.query(), &field("query"));
            check("fragment", b"", &field("fragment"));
            check("version", h.version_raw(), &field("version"));

            // gunicorn drops names with '_' by default (the WSGI layer's
            // choice here) and upper-cases names; skip our injected Host.
            let ours: Vec<(Vec<u8>, &[u8])> = h
                .headers()
                .filter(|(n, v)| {
                    let injected =
                        missing_host && n.eq_ignore_ascii_case(b"host") && *v == b"qiao.test";
                    !n.contains(&b'_') && !injected
                })
                .map(|(n, v)| (n.to_ascii_uppercase(), v))
                .collect();
            let Some(Json::Arr(theirs)) = want.get("headers") else {
                panic!()
            };
            let theirs: Vec<(Vec<u8>, Vec<u8>)> = theirs
                .iter()
                .map(|pair| {
                    let Json::Arr(p) = pair else { panic!() };
                    (
                        latin1(p[0].as_str().unwrap()),
                        latin1(p[1].as_str().unwrap()),
                    )
                })
                .filter(|(n, _)| !n.contains(&b'_'))
                .collect();
            let ours_owned: Vec<(Vec<u8>, Vec<u8>)> =
                ours.into_iter().map(|(n, v)| (n, v.to_vec())).collect();
            if ours_owned != theirs {
                failures.push(format!(
                    "{name}: headers differ: {ours_owned:?} vs {theirs:?}"
                ));
            }

            let want_body = base64(want.get("body_base64").and_then(Json::as_str).unwrap());
            if got.truncated && !TRUNCATED_BODIES.contains(&name) {
                failures.push(format!("{name}: body truncated"));
            }
            if got.body != want_body {
                failures.push(format!(
                    "{name}: body {:?} != {:?}",
                    show(&got.body),
                    show(&want_body)
                ));
            }
        }
    }
    eprintln!("gunicorn corpus: {checked} cases checked, {skipped} known differences skipped");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 100, "only {checked} cases checked");
}

/// RFC 4648 base64 (standard alphabet, padded).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 byte {c}"),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = acc << 6 | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Just enough JSON to read `cases.json` without a dependency.
#[derive(Debug)]
enum Json {
    /// `true`, `false` or `null`: not needed by the test.
    Lit,
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing JSON");
        v
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Json {
        self.ws();
        let first = self.s[self.i];
        match first {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                loop {
                    self.ws();
                    if self.eat("}") {
                        return Json::Obj(fields);
                    }
                    if !fields.is_empty() {
                        assert!(self.eat(","), "expected , at {}", self.i);
                        self.ws();
                    }
                    let Json::Str(key) = self.value() else {
                        panic!("object key")
                    };
                    self.ws();
                    assert!(self.eat(":"), "expected : at {}", self.i);
                    fields.push((key, self.value()));
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.eat("]") {
                        return Json::Arr(items);
                    }
                    if !items.is_empty() {
                        assert!(self.eat(","), "expected , at {}", self.i);
                    }
                    items.push(self.value());
                }
            }
            b'"' => Json::Str(self.string()),
            b't' | b'f' | b'n' if self.eat("true") || self.eat("false") || self.eat("null") => {
                Json::Lit
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(
                    text.parse()
                        .unwrap_or_else(|_| panic!("bad JSON at {start}")),
                )
            }
        }
    }

    fn hex4(&mut self) -> u32 {
        let text = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
        self.i += 4;
        u32::from_str_radix(text, 16).unwrap()
    }

    fn string(&mut self) -> String {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.s[self.i] != b'"' && self.s[self.i] != b'\\' {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
            let c = self.s[self.i];
            self.i += 1;
            if c == b'"' {
                return out;
            }
            let e = self.s[self.i];
            self.i += 1;
            match e {
                b'n' => out.push('\n'),
                b't' => out.push('\t'),
                b'r' => out.push('\r'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'u' => {
                    let mut code = self.hex4();
                    if (0xD800..0xDC00).contains(&code) && self.eat("\\u") {
                        let low = self.hex4();
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    }
                    out.push(char::from_u32(code).expect("valid code point"));
                }
                other => out.push(other as char),
            }
        }
    }
}
