//! Fuzzes the chunked encoder against the decoder: any payload cut into any chunk sizes,
//! framed with `encode_chunk_header` and `LAST_CHUNK`, decodes back to the payload and
//! consumes exactly the framed bytes, however the wire is split.
#![no_main]

use _qiao::http::{encode_chunk_header, ChunkedDecoder, LAST_CHUNK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first bytes choose chunk sizes and read sizes, the rest is the payload.
    let Some((&[a, b, c], payload)) = input.split_first_chunk::<3>() else {
        return;
    };
    let mut wire = Vec::new();
    let mut sizes = [
        usize::from(a) + 1,
        usize::from(b),
        usize::from(a ^ b) * 3 + 1,
    ]
    .into_iter()
    .cycle();
    let mut rest = payload;
    while !rest.is_empty() {
        // A zero size would end the body: skip it, as a sender must.
        let n = sizes.next().unwrap_or(1).max(1).min(rest.len());
        encode_chunk_header(n, &mut wire);
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    wire.extend_from_slice(LAST_CHUNK);
    wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let framed = wire.len() - 16;

    let step = usize::from(c) + 1;
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in wire.chunks(step) {
        if d.is_done() {
            break;
        }
        consumed += d.decode(piece, &mut out).expect("our own framing is valid");
    }
    assert!(d.is_done());
    assert_eq!(consumed, framed);
    assert_eq!(out, payload);
});
