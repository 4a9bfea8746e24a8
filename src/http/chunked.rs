//! Decodes (and frames) the chunked transfer coding of RFC 9112 §7.1, incrementally, from byte slices.

use super::error::HttpError;

/// Default bound on one chunk's extension bytes (everything after the size on its line).
pub const DEFAULT_MAX_CHUNK_EXT: usize = 4096;
/// Default bound on the trailer section in bytes (CRLFs included).
pub const DEFAULT_MAX_TRAILER: usize = 8192;
/// The last chunk with an empty trailer section: ends a chunked body we send.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The most hex digits (leading zeros included) accepted in one chunk size;
/// bounds the size line independently of the extension limit.
const MAX_SIZE_DIGITS: usize = 64;

/// Where the decoder is in the chunked grammar:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size; only a `;` may follow (BWS before chunk-ext).
    SizeWs,
    /// Inside the chunk extensions, up to the CR.
    Ext,
    /// Saw the CR ending the size line; the LF must follow.
    SizeLf,
    /// Copying chunk data; this many bytes are left in the chunk.
    Data { remaining: u64 },
    /// Chunk data done; its CR must follow.
    DataCr,
    /// Saw the CR after the data; the LF must follow.
    DataLf,
    /// At the start of a trailer field line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw the CR ending a trailer field line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    /// The whole chunked body has been read.
    Done,
}

/// An incremental chunked-body decoder; owned by the connection while it
/// reads one request body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    /// The grammar position.
    state: State,
    /// The chunk size read so far.
    size: u64,
    /// Hex digits read for the current size (0 means the size is empty).
    digits: usize,
    /// Extension bytes on the current size line.
    ext_len: usize,
    /// Bound on `ext_len` (`usize::MAX` for none).
    max_chunk_ext: usize,
    /// Trailer-section bytes read so far.
    trailer_len: usize,
    /// Bound on `trailer_len` (`usize::MAX` for none).
    max_trailer: usize,
    /// Data bytes the chunks so far declared (delivered or still to come).
    declared: u64,
    /// Bound on `declared` (`u64::MAX` for none): the body limit lives here, where the
    /// sizes are decoded, so no caller can sum them wrong.
    max_body: u64,
    /// The current trailer field line, kept until its CRLF to be validated;
    /// allocated only when a body has trailers.
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new(DEFAULT_MAX_CHUNK_EXT, DEFAULT_MAX_TRAILER, 0)
    }
}

const fn bad(why: &'static str) -> HttpError {
    HttpError::BadRequest(why)
}

impl ChunkedDecoder {
    /// A decoder with the given bounds on one chunk's extensions, on the trailer
    /// section and on the body's data, in bytes; 0 means unlimited.
    pub fn new(max_chunk_ext: usize, max_trailer: usize, max_body: u64) -> Self {
        let unlimited = |n: usize| if n == 0 { usize::MAX } else { n };
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            ext_len: 0,
            max_chunk_ext: unlimited(max_chunk_ext),
            trailer_len: 0,
            max_trailer: unlimited(max_trailer),
            line: Vec::new(),
            declared: 0,
            max_body: if max_body == 0 { u64::MAX } else { max_body },
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending body data to `out`,
    /// and returns the bytes consumed. It stops early only when the body is
    /// done: the bytes after it belong to the next request.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let n = remaining.min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                // RFC 9112 §7.1: chunk-size = 1*HEXDIG. No sign, no "0x",
                // no whitespace before it.
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = match b {
                            b'0'..=b'9' => b - b'0',
                            b'a'..=b'f' => b - b'a' + 10,
                            _ => b - b'A' + 10,
                        };
                        self.digits += 1;
                        if self.digits > MAX_SIZE_DIGITS {
                            return Err(bad("chunk size line too long"));
                        }
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or(bad("chunk size overflow"))?;
                        // RFC 9110 §15.5.14: refused as soon as the declared sizes pass
                        // the limit, before any of the chunk's data is read. (`declared`
                        // never exceeds `max_body`, so the subtraction cannot wrap.)
                        if self.size > self.max_body - self.declared {
                            return Err(HttpError::PayloadTooLarge);
                        }
                    }
                    _ if self.digits == 0 => return Err(bad("invalid chunk size")),
                    b';' => {
                        self.add_ext(1)?;
                        self.state = State::Ext;
                    }
                    b' ' | b'\t' => {
                        self.add_ext(1)?;
                        self.state = State::SizeWs;
                    }
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(bad("bare LF in chunk size line")),
                    _ => return Err(bad("invalid chunk size")),
                },
                // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name
                // [ BWS "=" BWS chunk-ext-val ] ): whitespace after the size
                // is only allowed before a ";".
                State::SizeWs => match b {
                    b' ' | b'\t' => self.add_ext(1)?,
                    b';' => {
                        self.add_ext(1)?;
                        self.state = State::Ext;
                    }
                    _ => return Err(bad("whitespace after chunk size")),
                },
                // Extensions are ignored (RFC 9112 §7.1.1: "A recipient MUST
                // ignore unrecognized chunk extensions"), but bounded and free
                // of control bytes, so that a bare CR or LF cannot hide in them.
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(bad("bare LF in chunk extension")),
                    b'\t' => self.add_ext(1)?,
                    0..=0x1f | 0x7f => return Err(bad("control byte in chunk extension")),
                    _ => self.add_ext(1)?,
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(bad("bare CR in chunk size line"));
                    }
                    // RFC 9112 §7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF.
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        self.declared += self.size;
                        State::Data {
                            remaining: self.size,
                        }
                    };
                    self.size = 0;
                    self.digits = 0;
                    self.ext_len = 0;
                }
                // RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF.
                State::DataCr => {
                    if b != b'\r' {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    self.state = State::Size;
                }
                // RFC 9112 §7.1.2: trailer-section = *( field-line CRLF ),
                // then the CRLF that ends the body.
                State::TrailerStart => {
                    self.add_trailer(1)?;
                    match b {
                        b'\r' => self.state = State::EndLf,
                        b'\n' => return Err(bad("bare LF in trailer section")),
                        _ => {
                            self.line.push(b);
                            self.state = State::TrailerLine;
                        }
                    }
                }
                State::TrailerLine => {
                    // Take the run of bytes up to the next CR or LF at once.
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        self.add_trailer(run)?;
                        self.line.extend_from_slice(&input[i..i + run]);
                        i += run;
                        continue;
                    }
                    self.add_trailer(1)?;
                    if b == b'\n' {
                        return Err(bad("bare LF in trailer section"));
                    }
                    self.state = State::TrailerLf;
                }
                State::TrailerLf => {
                    self.add_trailer(1)?;
                    if b != b'\n' {
                        return Err(bad("bare CR in trailer section"));
                    }
                    check_trailer_field(&self.line)?;
                    self.line.clear();
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    self.add_trailer(1)?;
                    if b != b'\n' {
                        return Err(bad("bare CR at end of chunked body"));
                    }
                    self.line = Vec::new();
                    self.state = State::Done;
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn add_ext(&mut self, n: usize) -> Result<(), HttpError> {
        self.ext_len += n;
        if self.ext_len > self.max_chunk_ext {
            return Err(bad("chunk extension too long"));
        }
        Ok(())
    }

    fn add_trailer(&mut self, n: usize) -> Result<(), HttpError> {
        self.trailer_len += n;
        if self.trailer_len > self.max_trailer {
            return Err(bad("trailer section too long"));
        }
        Ok(())
    }
}

/// RFC 9110 §6.5.1: fields that describe framing, routing, connection
/// handling, request modifiers or authentication must not arrive after the
/// content, where a later hop might apply them.
const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"authorization",
    b"cache-control",
    b"connection",
    b"content-encoding",
    b"content-length",
    b"content-range",
    b"expect",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"keep-alive",
    b"max-forwards",
    b"pragma",
    b"proxy-authorization",
    b"proxy-connection",
    b"range",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, with a
/// token name (no whitespace before the colon, no obs-fold) and a value of
/// VCHAR / obs-text / SP / HTAB.
fn check_trailer_field(line: &[u8]) -> Result<(), HttpError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("malformed trailer field"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !super::response::is_token(name) {
        return Err(bad("invalid trailer field name"));
    }
    if !super::response::is_valid_field_value(value) {
        return Err(bad("invalid trailer field value"));
    }
    if FORBIDDEN_TRAILERS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
    {
        return Err(bad("forbidden trailer field"));
    }
    Ok(())
}

/// Appends a chunk-size line (`<hex len>\r\n`) for a chunk of `len` bytes.
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut start = digits.len();
    let mut n = len;
    loop {
        start -= 1;
        digits[start] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::{mutate, xorshift};

    /// Decodes `body` in one call; returns (data, consumed, done).
    fn whole(body: &[u8]) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let n = d.decode(body, &mut out)?;
        Ok((out, n, d.is_done()))
    }

    /// Decodes `body` one byte per call.
    fn bytewise(body: &[u8]) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut consumed = 0;
        for b in body.chunks(1) {
            if d.is_done() {
                break;
            }
            consumed += d.decode(b, &mut out)?;
        }
        Ok((out, consumed, d.is_done()))
    }

    fn err(body: &[u8]) -> HttpError {
        let e = whole(body).expect_err(&String::from_utf8_lossy(body));
        assert_eq!(bytewise(body).unwrap_err(), e, "bytewise differs");
        e
    }

    /// RFC 9112 §7.1: a chunked body decodes to the concatenated chunk data.
    #[test]
    fn simple_body() {
        let (data, n, done) = whole(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(n, 26);
        assert!(done);
    }

    /// Bytes after the last chunk belong to the next request: not consumed.
    #[test]
    fn stops_at_end_of_body() {
        let input = b"1e\r\nall your base are belong to us\r\n000\r\n\r\nGET / HTTP/1.1\r\n";
        let (data, n, done) = whole(input).unwrap();
        assert_eq!(data, b"all your base are belong to us");
        assert!(done);
        assert_eq!(&input[n..], b"GET / HTTP/1.1\r\n");
    }

    /// Feeding one byte at a time gives the same result as the whole body.
    #[test]
    fn byte_at_a_time_matches_whole() {
        for body in [
            &b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"[..],
            b"5; some; parameters=stuff\r\nhello\r\n6; blahblah; blah\r\n world\r\n0\r\n\r\n",
            b"5 ;foo=\"bar baz\"\r\nhello\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n",
            b"A\r\n0123456789\r\n0005\r\nabcde\r\n000\r\n\r\nnext",
        ] {
            assert_eq!(whole(body).unwrap(), bytewise(body).unwrap());
            assert!(whole(body).unwrap().2);
        }
        // Every split point into two calls gives the same result too.
        let body = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..body.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let a = d.decode(&body[..cut], &mut out).unwrap();
            assert_eq!(a, cut);
            let b = d.decode(&body[cut..], &mut out).unwrap();
            assert_eq!(a + b, body.len());
            assert_eq!(out, b"abcde");
            assert!(d.is_done());
        }
    }

    /// An unfinished body consumes all input and is not done.
    #[test]
    fn incomplete_body_is_not_done() {
        let (data, n, done) = whole(b"5\r\nhel").unwrap();
        assert_eq!((&data[..], n, done), (&b"hel"[..], 6, false));
        // RFC 9112 §7.1: the final CRLF is required.
        assert!(!whole(b"0\r\n").unwrap().2);
        assert!(!whole(b"0\r\n\r").unwrap().2);
    }

    /// RFC 9112 §7.1: sizes are hex, upper or lower case, leading zeros allowed.
    #[test]
    fn size_forms() {
        assert_eq!(
            whole(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0,
            b"0123456789"
        );
        assert_eq!(
            whole(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap().0,
            b"0123456789"
        );
        assert_eq!(whole(b"0005\r\nhello\r\n0\r\n\r\n").unwrap().0, b"hello");
    }

    /// RFC 9112 §7.1: chunk-size = 1*HEXDIG, nothing else.
    #[test]
    fn bad_sizes_are_400() {
        for body in [
            &b"\r\nhello\r\n0\r\n\r\n"[..],
            b";ext\r\n",
            b" 0\r\n\r\n",
            b" ;foo=bar\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"6_0\r\n",
            b"g\r\n",
            b"5\r\nhello\r\n6_0\r\n world\r\n",
        ] {
            assert_eq!(
                err(body),
                HttpError::BadRequest("invalid chunk size"),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(err(b"10000000000000000\r\n"), bad("chunk size overflow"));
        assert_eq!(
            err(&[b'0'; 65]),
            HttpError::BadRequest("chunk size line too long")
        );
    }

    /// RFC 9112 §7.1.1: whitespace after the size only before a ";".
    #[test]
    fn whitespace_after_size() {
        assert_eq!(err(b"0 \r\n\r\n"), bad("whitespace after chunk size"));
        assert_eq!(
            whole(b"5 \t; a=b\r\nhello\r\n0\r\n\r\n").unwrap().0,
            b"hello"
        );
    }

    /// RFC 9112 §2.2 and §7.1: lines end in CRLF; bare LF or CR is an error.
    #[test]
    fn bare_line_endings_are_400() {
        assert_eq!(
            err(b"5\nhello\r\n0\r\n\r\n"),
            bad("bare LF in chunk size line")
        );
        assert_eq!(
            err(b"5\n;\r\nhello\r\n0\r\n\r\n"),
            bad("bare LF in chunk size line")
        );
        assert_eq!(err(b"5\rhello\r\n"), bad("bare CR in chunk size line"));
        assert_eq!(
            err(b"5;ext=val\rue\r\nhello\r\n"),
            bad("bare CR in chunk size line")
        );
        assert_eq!(err(b"5;a\nb\r\n"), bad("bare LF in chunk extension"));
        assert_eq!(
            err(b"5\r\nhello\n0\r\n\r\n"),
            bad("chunk data not followed by CRLF")
        );
        assert_eq!(
            err(b"5\r\nhello\rx"),
            bad("chunk data not followed by CRLF")
        );
        assert_eq!(err(b"0\r\n\n"), bad("bare LF in trailer section"));
        assert_eq!(err(b"0\r\nA: b\n\r\n"), bad("bare LF in trailer section"));
        assert_eq!(
            err(b"0\r\nA: b\rc\r\n\r\n"),
            bad("bare CR in trailer section")
        );
        assert_eq!(err(b"0\r\n\rx"), bad("bare CR at end of chunked body"));
    }

    /// RFC 9112 §7.1: the data of a chunk is exactly chunk-size bytes then CRLF.
    #[test]
    fn data_longer_than_size_is_400() {
        assert_eq!(
            err(b"3\r\nhello\r\n0\r\n\r\n"),
            bad("chunk data not followed by CRLF")
        );
        assert_eq!(
            err(b"5\r\nhello\r\n6\r\n world\r\n\r\n"),
            bad("invalid chunk size")
        );
    }

    /// RFC 9112 §7.1.1: extensions are skipped but bounded and CTL-free.
    #[test]
    fn chunk_extensions() {
        assert_eq!(
            whole(b"5;a;b=c;d=\"e f\"\r\nhello\r\n0;x\r\n\r\n")
                .unwrap()
                .0,
            b"hello"
        );
        assert_eq!(
            err(b"5;a\x00b\r\nhello\r\n"),
            bad("control byte in chunk extension")
        );
        assert_eq!(
            err(b"5;a\x7fb\r\nhello\r\n"),
            bad("control byte in chunk extension")
        );
        let mut d = ChunkedDecoder::new(8, 0, 0);
        let mut out = Vec::new();
        assert!(d.decode(b"5;1234567\r\nhello\r\n", &mut out).is_ok());
        let mut d = ChunkedDecoder::new(8, 0, 0);
        assert_eq!(
            d.decode(b"5;12345678\r\n", &mut out).unwrap_err(),
            bad("chunk extension too long")
        );
    }

    /// RFC 9112 §7.1.2 / RFC 9110 §6.5.1: trailers are validated and framing
    /// or routing fields are refused.
    #[test]
    fn trailers() {
        let (data, _, done) =
            whole(b"5\r\nhello\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n").unwrap();
        assert_eq!(data, b"hello");
        assert!(done);
        for name in [
            "Content-Length",
            "transfer-encoding",
            "HOST",
            "Trailer",
            "TE",
            "Authorization",
        ] {
            let body = format!("0\r\n{name}: 1\r\n\r\n");
            assert_eq!(
                err(body.as_bytes()),
                bad("forbidden trailer field"),
                "{name}"
            );
        }
        assert_eq!(err(b"0\r\nNoColon\r\n\r\n"), bad("malformed trailer field"));
        assert_eq!(
            err(b"0\r\nA : b\r\n\r\n"),
            bad("invalid trailer field name")
        );
        assert_eq!(err(b"0\r\n: b\r\n\r\n"), bad("invalid trailer field name"));
        assert_eq!(
            err(b"0\r\nA: b\r\n c\r\n\r\n"),
            bad("malformed trailer field")
        );
        assert_eq!(
            err(b"0\r\nA: b\x01\r\n\r\n"),
            bad("invalid trailer field value")
        );
    }

    /// The trailer section is bounded.
    #[test]
    fn trailer_limit() {
        let mut d = ChunkedDecoder::new(0, 10, 0);
        let mut out = Vec::new();
        // "A: 12345\r\n" is 10 bytes; the final CRLF makes 12.
        assert_eq!(
            d.decode(b"0\r\nA: 12345\r\n\r\n", &mut out).unwrap_err(),
            bad("trailer section too long")
        );
        let mut d = ChunkedDecoder::new(0, 12, 0);
        assert!(d.decode(b"0\r\nA: 12345\r\n\r\n", &mut out).is_ok());
        assert!(d.is_done());
    }

    /// RFC 9110 §15.5.14: the body limit is the decoder's. A small chunk followed by one
    /// declaring nearly 2^64 bytes is refused before any of its data, not summed into a
    /// wrapped total that lets the body through.
    #[test]
    fn declared_sizes_past_the_limit_are_413() {
        let limit = |max: u64, body: &[u8]| {
            let mut d = ChunkedDecoder::new(0, 0, max);
            let mut out = Vec::new();
            d.decode(body, &mut out).map(|_| out.len())
        };
        assert_eq!(
            limit(1 << 20, b"1\r\na\r\nfffffffffffffff0\r\n"),
            Err(HttpError::PayloadTooLarge)
        );
        assert_eq!(
            limit(1 << 20, b"1\r\na\r\nffffffffffffffff\r\n"),
            Err(HttpError::PayloadTooLarge)
        );
        // Refused at the digits, before the line ends and before any data arrives.
        assert_eq!(limit(10, b"b"), Err(HttpError::PayloadTooLarge));
        // Exactly the limit passes; one byte more, spread over chunks, does not.
        assert_eq!(limit(10, b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"), Ok(10));
        assert_eq!(
            limit(10, b"5\r\nhello\r\n5\r\nworld\r\n1\r\n"),
            Err(HttpError::PayloadTooLarge)
        );
        // 0: no limit (the size overflow check still holds).
        assert_eq!(limit(0, b"ffffffffffffffff\r\n"), Ok(0));
        assert_eq!(
            limit(0, b"10000000000000000\r\n"),
            Err(bad("chunk size overflow"))
        );
    }

    /// Whatever the chunk sizes, the data a decoder hands out never exceeds its limit.
    #[test]
    fn decoded_data_never_exceeds_the_limit() {
        let mut rand = xorshift(0x1234_5678_9abc_def1);
        for _ in 0..5_000 {
            let max = 1 + rand(200) as u64;
            let mut wire = Vec::new();
            for _ in 0..rand(8) {
                let n = rand(80);
                encode_chunk_header(
                    if rand(10) == 0 {
                        usize::MAX - rand(5)
                    } else {
                        n
                    },
                    &mut wire,
                );
                wire.extend(std::iter::repeat_n(b'z', n));
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(LAST_CHUNK);
            let mut d = ChunkedDecoder::new(0, 0, max);
            let mut out = Vec::new();
            for piece in wire.chunks(1 + rand(40)) {
                if d.decode(piece, &mut out).is_err() || d.is_done() {
                    break;
                }
            }
            assert!(out.len() as u64 <= max, "{} > {max}", out.len());
        }
    }

    /// No input makes the decoder panic, and splitting never changes the outcome.
    #[test]
    fn never_panics_on_mutated_input() {
        let seed: &[u8] = b"5;a=\"b c\"\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: v\r\n\r\n";
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
        const BYTES: &[u8] = b"\r\n ;=\"\t\x00\x7f0aF:xX-+";
        for _ in 0..20_000 {
            let input = mutate(seed, 3, BYTES, &mut rand);
            let one = whole(&input);
            let cut = rand(input.len() + 1);
            let mut d = ChunkedDecoder::new(8, 16, 0);
            let mut out = Vec::new();
            let _ = d
                .decode(&input[..cut], &mut out)
                .and_then(|_| d.decode(&input[cut..], &mut out));
            assert_eq!(
                one,
                bytewise(&input),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn chunk_header_encoding() {
        let mut out = Vec::new();
        for n in [0usize, 1, 15, 16, 255, 4096, usize::MAX] {
            out.clear();
            encode_chunk_header(n, &mut out);
            assert_eq!(out, format!("{n:x}\r\n").into_bytes());
        }
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    /// What we encode, we decode.
    #[test]
    fn round_trip() {
        let mut wire = Vec::new();
        let parts: [&[u8]; 3] = [b"hello", &[b'x'; 300], b"!"];
        for p in parts {
            encode_chunk_header(p.len(), &mut wire);
            wire.extend_from_slice(p);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(LAST_CHUNK);
        let (data, n, done) = whole(&wire).unwrap();
        assert_eq!(data, parts.concat());
        assert_eq!(n, wire.len());
        assert!(done);
    }

    /// Decodes `wire` in reads of random sizes (from `rand`); returns (data, consumed, done).
    fn in_random_reads(
        wire: &[u8],
        rand: &mut impl FnMut(usize) -> usize,
    ) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < wire.len() && !d.is_done() {
            let end = (pos + 1 + rand(300)).min(wire.len());
            let n = d.decode(&wire[pos..end], &mut out)?;
            assert!(
                n == end - pos || d.is_done(),
                "stopped early without finishing"
            );
            pos += n;
        }
        Ok((out, pos, d.is_done()))
    }

    /// RFC 9112 §7.1: encode_chunk_header + data + CRLF per chunk, then LAST_CHUNK,
    /// decodes back to the payload for random payloads and chunk sizes, read whole, one
    /// byte at a time, or in random pieces; the bytes after the body are not consumed.
    #[test]
    fn encode_decode_round_trips_for_random_payloads() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..2_000 {
            let len = match round % 4 {
                0 => rand(16),
                1 => rand(1_000),
                2 => rand(70_000),
                _ => 0,
            };
            let payload: Vec<u8> = (0..len).map(|_| rand(256) as u8).collect();
            let mut wire = Vec::new();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                // Sizes from 1 byte up to past the hex-digit boundaries (0xf, 0xff, 0xfff, ...).
                let bits = 1 + rand(17);
                let n = (1 + rand(1 << bits)).min(rest.len());
                encode_chunk_header(n, &mut wire);
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(LAST_CHUNK);
            let framed = wire.len();
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n");

            let expect = Ok((payload.clone(), framed, true));
            assert_eq!(whole(&wire), expect, "round {round}");
            assert_eq!(in_random_reads(&wire, &mut rand), expect, "round {round}");
            if len < 2_000 {
                assert_eq!(bytewise(&wire), expect, "round {round}");
            }
        }
    }

    /// RFC 9112 §7.1.1-§7.1.2: chunk extensions, leading zeros and trailers are skipped
    /// the same whatever the read boundaries; mutated bodies fail with the same error
    /// whole and in pieces.
    #[test]
    fn random_splits_match_whole_with_extensions_and_trailers() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
        const EXTS: &[&[u8]] = &[b"", b";a", b" ;a=b", b";a=\"q s\";c", b"\t;x=1"];
        const TRAILERS: &[&[u8]] = &[b"", b"X-T: 1\r\n", b"A: b\r\nC:\td \r\n"];
        const NOISE: &[u8] = b"\r\n ;=\"\t\x00\x7f0aF:xX-+";
        for _ in 0..3_000 {
            let mut wire = Vec::new();
            let mut payload = Vec::new();
            for _ in 0..rand(5) {
                let n = 1 + rand(40);
                let data: Vec<u8> = (0..n).map(|_| rand(256) as u8).collect();
                wire.extend(std::iter::repeat_n(b'0', rand(3)));
                wire.extend_from_slice(format!("{n:X}").as_bytes());
                wire.extend_from_slice(EXTS[rand(EXTS.len())]);
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&data);
                wire.extend_from_slice(b"\r\n");
                payload.extend_from_slice(&data);
            }
            wire.extend_from_slice(b"0");
            wire.extend_from_slice(EXTS[rand(EXTS.len())]);
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(TRAILERS[rand(TRAILERS.len())]);
            wire.extend_from_slice(b"\r\n");
            let good = whole(&wire);
            assert_eq!(good, Ok((payload, wire.len(), true)));
            assert_eq!(in_random_reads(&wire, &mut rand), good);
            // One mutation: whichever way it fails or passes, pieces agree with whole.
            let at = rand(wire.len());
            wire[at] = NOISE[rand(NOISE.len())];
            let one = whole(&wire);
            assert_eq!(bytewise(&wire), one);
            match in_random_reads(&wire, &mut rand) {
                Ok((data, consumed, true)) => assert_eq!(one, Ok((data, consumed, true))),
                Ok(partial) => assert_eq!(one, Ok(partial)),
                Err(e) => assert_eq!(one, Err(e)),
            }
        }
    }
}
