//! Tests of `parse_head` as a whole (the request line and field lines as httparse reads them, the split into head and rest, pipelining), the split-invariance properties, and the helpers the submodules' tests share.

use super::*;
use crate::http::testing::{mutate, xorshift};

pub(super) fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
    let mut buf = BytesMut::from(bytes);
    parse_head(&mut buf, limits)
}

pub(super) fn ok(bytes: &[u8]) -> RequestHead {
    match parse_with(bytes, &Limits::default()) {
        Ok(Some(head)) => head,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

pub(super) fn err(bytes: &[u8]) -> HttpError {
    match parse_with(bytes, &Limits::default()) {
        Err(e) => e,
        other => panic!(
            "{:?}: expected an error, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

pub(super) fn partial(bytes: &[u8]) {
    assert!(
        matches!(parse_with(bytes, &Limits::default()), Ok(None)),
        "{:?} should need more bytes",
        String::from_utf8_lossy(bytes)
    );
}

pub(super) const BAD: fn(&'static str) -> HttpError = HttpError::BadRequest;

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

/// RFC 9112 §2.2: leading empty lines before the request line are ignored.
#[test]
fn leading_empty_lines_are_skipped() {
    let h = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(h.method(), b"GET");
    let mut buf = BytesMut::from(&b"\r\n\r\n"[..]);
    assert!(parse_head(&mut buf, &Limits::default()).unwrap().is_none());
    assert!(buf.is_empty());
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
    let h = ok(b"GET / HTTP/1.1\r\nHost: h\r\nX.Custom|Pipe: ok\r\nTransfer_Encoding: x\r\n\r\n");
    let names: Vec<&[u8]> = h.headers().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [&b"Host"[..], b"X.Custom|Pipe", b"Transfer_Encoding"]
    );
    assert_eq!(h.framing, BodyFraming::Empty);
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

/// `METHOD path` is one slice of an origin-form request line (what `qiao status` shows);
/// an absolute-form target, whose path is not next to the method, has none.
#[test]
fn method_and_path_is_the_request_lines_start_when_it_holds_them() {
    let h = parse_with(
        b"GET /a/b?secret=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        &Limits::default(),
    )
    .unwrap()
    .unwrap();
    let (line, len) = h.method_and_path().unwrap();
    assert_eq!(&line[..len], b"GET /a/b");
    assert!(line.starts_with(b"GET /a/b?secret=1 HTTP/1.1\r\n"));
    let h = parse_with(
        b"GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
        &Limits::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!((h.method_and_path(), h.path()), (None, &b"/a"[..]));
}
