//! Fuzzes `parse_head` over arbitrary bytes: it never panics, and a head that arrives in
//! two reads (split at a point chosen by the input) parses exactly as when it arrives whole.
#![no_main]

use _qiao::http::{parse_head, BodyFraming, HttpError, Limits, RequestHead};
use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Everything a parsed head tells the connection, in a comparable form.
type Summary = (
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<(Vec<u8>, Vec<u8>)>,
    BodyFraming,
    bool,
    bool,
    Option<Vec<u8>>,
);

fn summary(h: &RequestHead) -> Summary {
    // Every accessor stays in bounds.
    let _ = (h.version, h.header_count(), h.content_length());
    (
        h.method().to_vec(),
        h.target().to_vec(),
        h.path().to_vec(),
        h.query().to_vec(),
        h.version_raw().to_vec(),
        h.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
        h.framing,
        h.keep_alive,
        h.expect_continue,
        h.host().map(<[u8]>::to_vec),
    )
}

/// A connection's read side reduced to heads: it reads requests off its buffer as bytes
/// arrive, skipping Content-Length bodies, and stops at a chunked body or an error.
#[derive(Default)]
struct Reader {
    buf: BytesMut,
    /// Body bytes still to skip before the next head.
    skip: u64,
    heads: Vec<Summary>,
    error: Option<HttpError>,
    /// A chunked body follows: the chunked decoder owns the rest (the other target).
    stopped: bool,
}

impl Reader {
    fn feed(&mut self, bytes: &[u8], limits: &Limits) {
        if self.stopped || self.error.is_some() {
            return;
        }
        self.buf.extend_from_slice(bytes);
        // Bounded: every successful parse consumes at least one byte.
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len() as u64);
                self.buf.advance(n as usize);
                self.skip -= n;
                if self.skip > 0 {
                    return;
                }
            }
            match parse_head(&mut self.buf, limits) {
                Ok(Some(head)) => {
                    self.heads.push(summary(&head));
                    match head.framing {
                        BodyFraming::Length(n) => self.skip = n,
                        BodyFraming::Chunked => {
                            self.stopped = true;
                            return;
                        }
                        BodyFraming::Empty => {}
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }
}

fn check(data: &[u8], cut: usize, limits: &Limits) {
    let mut whole = Reader::default();
    whole.feed(data, limits);

    let mut split = Reader::default();
    split.feed(&data[..cut], limits);
    if let Some(e) = split.error {
        // An error on a prefix must be the error the whole input gives, after the same heads.
        assert_eq!(whole.error, Some(e), "early error differs at cut {cut}");
        assert_eq!(
            whole.heads, split.heads,
            "heads before an early error differ at cut {cut}"
        );
        return;
    }
    split.feed(&data[cut..], limits);
    assert_eq!(whole.heads, split.heads, "heads differ at cut {cut}");
    assert_eq!(whole.error, split.error, "error differs at cut {cut}");
    assert_eq!(
        whole.stopped, split.stopped,
        "chunked stop differs at cut {cut}"
    );
    if !whole.stopped && whole.error.is_none() {
        assert_eq!(
            &whole.buf[..],
            &split.buf[..],
            "leftover differs at cut {cut}"
        );
        assert_eq!(whole.skip, split.skip, "body left differs at cut {cut}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let cut = if data.is_empty() {
        0
    } else {
        usize::from(first) * 257 % (data.len() + 1)
    };
    check(data, cut, &Limits::default());
    // Small limits, consistent with each other as the configuration makes them.
    let small = Limits {
        max_request_line: 64,
        max_headers: 4,
        max_header_field_size: 48,
        max_header_block: 256,
        max_body: 100,
    };
    check(data, cut, &small);
});
