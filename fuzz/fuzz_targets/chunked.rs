//! Fuzzes `ChunkedDecoder` over arbitrary bytes: it never panics; feeding the input
//! whole, one byte at a time, or in two pieces (split where the input says) gives the
//! same data, the same bytes consumed and the same error; and the data it accepts never
//! exceeds its body limit, whatever the chunk sizes.
#![no_main]

use _qiao::http::{ChunkedDecoder, HttpError};
use libfuzzer_sys::fuzz_target;

/// (data, bytes consumed, done) or the error.
type Outcome = Result<(Vec<u8>, usize, bool), HttpError>;

/// Feeds `pieces` in order as a connection would, stopping once the body is done.
fn decode<'a>(mut d: ChunkedDecoder, pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        if d.is_done() {
            break;
        }
        let n = d.decode(piece, &mut out)?;
        assert!(n <= piece.len());
        // Only a finished body stops short of the end of a piece.
        assert!(n == piece.len() || d.is_done());
        consumed += n;
    }
    Ok((out, consumed, d.is_done()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let cut = usize::from(first) * 257 % (data.len() + 1);
    // Default bounds, and small ones (chosen by the input) that the fuzzer can reach.
    for small in [false, true] {
        let make = || {
            if small {
                ChunkedDecoder::new(
                    usize::from(first % 16),
                    usize::from(first / 16) * 4,
                    u64::from(first),
                )
            } else {
                ChunkedDecoder::default()
            }
        };
        let whole = decode(make(), std::iter::once(data));
        let bytewise = decode(make(), data.chunks(1));
        let two = decode(make(), [&data[..cut], &data[cut..]].into_iter());
        assert_eq!(whole, bytewise, "byte-at-a-time differs");
        assert_eq!(whole, two, "split at {cut} differs");
        if let Ok((out, consumed, _)) = &whole {
            // The data never exceeds the bytes it came from, nor the body limit.
            assert!(out.len() <= *consumed);
            if small && first > 0 {
                assert!(out.len() as u64 <= u64::from(first));
            }
        }
    }
});
