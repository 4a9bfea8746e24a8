//! Byte ranges (RFC 9110 §14): the `Range` field read against a file's length, and the
//! `multipart/byteranges` framing (§14.6) of several ranges. Pure.

/// At most this many ranges are served in one response; a request with more gets the
/// whole file (RFC 9110 §14.2: a server may ignore a Range that asks for many small
/// ranges, a known way to make a server do much work for little).
pub const MAX_RANGES: usize = 32;

/// What a `Range` field asks of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable Range: send the whole file (200). A unit other than bytes, an empty set,
    /// too many ranges, or ranges that add up to more than the file (overlapping ones)
    /// are ignored so, as RFC 9110 §14.2 allows.
    Whole,
    /// These satisfiable ranges, as `(first byte, length)`, in the request's order (206).
    Parts(Vec<(u64, u64)>),
    /// None of the ranges is satisfiable, or the set is malformed (416, `Content-Range:
    /// bytes */len`): RFC 9110 §14.2 lets a server ignore or reject an invalid set, and
    /// nginx rejects it.
    Unsatisfiable,
}

/// RFC 9110 §14.1.2: `bytes=` then a list of `first-last`, `first-` or `-suffix`.
pub fn parse(value: &[u8], len: u64) -> Ranges {
    let value = value.trim_ascii();
    let Some(set) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .map(|_| &value[6..])
    else {
        return Ranges::Whole;
    };
    let mut parts = Vec::new();
    let mut seen = 0usize;
    // A range that starts past the end (not at it).
    let mut past_the_end = false;
    for spec in set.split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        if spec.is_empty() {
            continue;
        }
        seen += 1;
        if seen > MAX_RANGES {
            return Ranges::Whole;
        }
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return Ranges::Unsatisfiable;
        };
        let (first, last) = (&spec[..dash], &spec[dash + 1..]);
        let range = if first.is_empty() {
            // suffix-range: the last N bytes (N = 0 is unsatisfiable).
            let Some(n) = number(last) else {
                return Ranges::Unsatisfiable;
            };
            (n > 0 && len > 0).then(|| (len - n.min(len), n.min(len)))
        } else {
            let Some(first) = number(first) else {
                return Ranges::Unsatisfiable;
            };
            past_the_end |= first > len;
            let last = if last.is_empty() {
                None
            } else {
                let Some(l) = number(last) else {
                    return Ranges::Unsatisfiable;
                };
                Some(l)
            };
            // §14.1.1: a last-pos below first-pos makes the range invalid; it is dropped
            // as an unsatisfiable one is, as nginx does (alone, it leaves nothing: 416).
            (first < len && last.is_none_or(|l| l >= first)).then(|| {
                let end = last.map_or(len - 1, |l| l.min(len - 1));
                (first, end - first + 1)
            })
        };
        if let Some(range) = range {
            parts.push(range);
        }
    }
    if seen == 0 {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        // An empty file has no byte for a 206: asked from its start or for its end
        // (`bytes=0-`, what media players send, or `-5`), it is sent whole, as nginx does
        // (§14.2 lets a server ignore Range), rather than refused.
        if len == 0 && !past_the_end {
            return Ranges::Whole;
        }
        return Ranges::Unsatisfiable;
    }
    let total = parts
        .iter()
        .try_fold(0u64, |sum, (_, n)| sum.checked_add(*n));
    if total.is_none_or(|t| t > len) {
        return Ranges::Whole;
    }
    Ranges::Parts(parts)
}

/// A run of digits (1*DIGIT) as a number; `None` past u64.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `Content-Range` for a range of a file of `len` bytes (§14.4).
pub fn content_range(first: u64, n: u64, len: u64) -> String {
    format!("bytes {first}-{}/{len}", first + n - 1)
}

/// The bytes a `multipart/byteranges` body puts before each part and after the last
/// (RFC 9110 §14.6, RFC 2046 §5.1.1): each part's delimiter and fields, and the closing
/// delimiter.
pub fn multipart_frames(
    boundary: &str,
    content_type: &str,
    parts: &[(u64, u64)],
    len: u64,
) -> (Vec<Vec<u8>>, Vec<u8>) {
    let heads = parts
        .iter()
        .map(|&(first, n)| {
            format!(
                "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                content_range(first, n, len)
            )
            .into_bytes()
        })
        .collect();
    (heads, format!("\r\n--{boundary}--\r\n").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Ranges {
        parse(v.as_bytes(), 1000)
    }

    /// RFC 9110 §14.1.2's examples, on a 1000-byte file (for the first 500 bytes, the
    /// second 500, the last 500, and more).
    #[test]
    fn the_rfc_examples() {
        assert_eq!(p("bytes=0-499"), Ranges::Parts(vec![(0, 500)]));
        assert_eq!(p("bytes=500-999"), Ranges::Parts(vec![(500, 500)]));
        assert_eq!(p("bytes=-500"), Ranges::Parts(vec![(500, 500)]));
        assert_eq!(p("bytes=9500-"), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=0-0,-1"), Ranges::Parts(vec![(0, 1), (999, 1)]));
        assert_eq!(
            p("bytes= 0-99, 200-299 ,"),
            Ranges::Parts(vec![(0, 100), (200, 100)])
        );
    }

    /// §14.1.2: a last-pos past the end, or a suffix longer than the file, is cut to it.
    #[test]
    fn ranges_are_cut_to_the_file() {
        assert_eq!(p("bytes=900-5000"), Ranges::Parts(vec![(900, 100)]));
        assert_eq!(p("bytes=-5000"), Ranges::Parts(vec![(0, 1000)]));
        assert_eq!(p("bytes=999-"), Ranges::Parts(vec![(999, 1)]));
    }

    /// §14.1.1: unsatisfiable ranges are dropped; all unsatisfiable → 416.
    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(p("bytes=1000-"), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=1000-2000,0-9"), Ranges::Parts(vec![(0, 10)]));
    }

    /// §14.2: a server may ignore Range; for an empty file asked from its start or for its
    /// end it does, as nginx: there is no byte a 206 could carry, and a 416 would refuse a
    /// client that asked `bytes=0-` (what media players send) of whatever is there. A range
    /// past the end, or a malformed set, is 416 as for any file.
    #[test]
    fn an_empty_file_is_sent_whole() {
        for v in [
            "bytes=0-",
            "bytes=-5",
            "bytes=0-0",
            "bytes=0-9,-1",
            "items=0-",
        ] {
            assert_eq!(parse(v.as_bytes(), 0), Ranges::Whole, "{v}");
        }
        for v in ["bytes=5-", "bytes=x", "bytes=0-,5-", "bytes=5-1"] {
            assert_eq!(parse(v.as_bytes(), 0), Ranges::Unsatisfiable, "{v}");
        }
    }

    /// §14.1.1: a range whose last-pos is below its first-pos is invalid; it is dropped
    /// like an unsatisfiable one (nginx's choice), so a set with others is served them,
    /// and a set of only such ranges is 416.
    #[test]
    fn a_backwards_range_is_dropped() {
        assert_eq!(p("bytes=1-0,0-1"), Ranges::Parts(vec![(0, 2)]));
        assert_eq!(p("bytes=5-1"), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=5-1,9-2"), Ranges::Unsatisfiable);
    }

    /// §14.2: another unit, an empty set and abusive sets are ignored (200); a malformed
    /// set is rejected (416), as nginx does.
    #[test]
    fn ignored_and_rejected_fields() {
        for v in ["items=0-9", "bytes=", "bytes=0-999,0-999"] {
            assert_eq!(p(v), Ranges::Whole, "{v}");
        }
        for v in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=--5",
            "bytes=0-4,x",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(p(v), Ranges::Unsatisfiable, "{v}");
        }
        let many = (0..40).map(|i| format!("{i}-{i}")).collect::<Vec<_>>();
        assert_eq!(p(&format!("bytes={}", many.join(","))), Ranges::Whole);
    }

    #[test]
    fn multipart_framing() {
        let (heads, tail) = multipart_frames("B", "text/plain", &[(0, 2), (5, 3)], 10);
        assert_eq!(
            heads[0],
            b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n"
        );
        assert_eq!(
            heads[1],
            b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-7/10\r\n\r\n"
        );
        assert_eq!(tail, b"\r\n--B--\r\n");
    }
}
