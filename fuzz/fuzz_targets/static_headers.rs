//! Fuzzes the request fields a static file answers (`src/static_files/`): `Range` against
//! a file's length, the preconditions (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`) and `If-Range` against its validators, and `Accept-Encoding`
//! against the precompressed siblings it has. The first 17 bytes choose the file (length,
//! modification time, the clock, the siblings); the rest are the fields' values, one a
//! line, in that order (a missing line is a missing field). In them `$E` stands for the
//! file's entity tag and `$D` for its Last-Modified date, so that matches are reached.
#![no_main]

use _qiao::static_files::conditional::{
    evaluate, if_range_holds, parse_date, Conditions, Decision, Validators,
};
use _qiao::static_files::negotiate::{choose, Coding};
use _qiao::static_files::range::{self, Ranges, MAX_RANGES};
use libfuzzer_sys::fuzz_target;

/// The last second an IMF-fixdate can write (9999-12-31T23:59:59Z).
const LAST_DATE: u64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    let Some((file, fields)) = data.split_first_chunk::<17>() else {
        return;
    };
    let raw = u64::from_le_bytes(file[0..8].try_into().unwrap());
    // Small files, larger ones, any length, and lengths at the top of u64.
    let len = match raw % 4 {
        0 => (raw >> 2) % 256,
        1 => (raw >> 2) % 65_536,
        2 => raw >> 2,
        _ => u64::MAX - (raw >> 2) % 256,
    };
    let modified = u64::from_le_bytes(file[8..16].try_into().unwrap()) % (LAST_DATE + 1);
    // The clock a second before, at, or after the file's second, or anywhere later.
    let now = match file[16] % 4 {
        0 => modified.saturating_sub(1),
        1 => modified,
        2 => modified + 1,
        _ => modified + u64::from(file[16]) * 3600,
    };
    let available: Vec<Coding> = Coding::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| file[16] & (0x10 << i) != 0)
        .map(|(_, c)| c)
        .collect();
    let validators = Validators::new(modified, len);
    let last_modified = http_date(modified);
    let fields = expand(fields, b"$E", validators.etag.as_bytes());
    let fields = expand(&fields, b"$D", last_modified.as_bytes());
    let mut lines = fields.split(|&b| b == b'\n');
    let mut next = || lines.next();
    let (range_field, if_range) = (next(), next());
    let conditions = Conditions {
        if_match: next(),
        if_none_match: next(),
        if_modified_since: next(),
        if_unmodified_since: next(),
    };
    let accept = next();

    if let Some(value) = range_field {
        check_ranges(value, len);
    }
    if let Some(value) = if_range {
        check_if_range(value, &validators, now);
    }
    check_preconditions(&conditions, &validators);
    check_negotiation(accept, &available);
});

/// RFC 9110 §14.1.2, §14.2: a satisfiable answer is a non-empty list of at most
/// `MAX_RANGES` non-empty ranges inside the file that add up to no more than it; a field
/// of another unit is ignored; empty list elements change nothing (§5.6.1).
fn check_ranges(value: &[u8], len: u64) {
    let ranges = range::parse(value, len);
    match &ranges {
        Ranges::Whole | Ranges::Unsatisfiable => {}
        Ranges::Parts(parts) => {
            assert!(!parts.is_empty() && parts.len() <= MAX_RANGES, "{parts:?}");
            let mut total = 0u64;
            for &(first, n) in parts {
                assert!(n > 0, "an empty range: {parts:?}");
                let end = first.checked_add(n).expect("a range past u64");
                assert!(end <= len, "a range past the file: {parts:?} of {len}");
                total = total.checked_add(n).expect("ranges past u64");
                let content_range = range::content_range(first, n, len);
                assert!(content_range.starts_with("bytes "), "{content_range}");
            }
            assert!(total <= len, "more than the file: {parts:?} of {len}");
            let (heads, _) = range::multipart_frames("B", "text/plain", parts, len);
            assert_eq!(heads.len(), parts.len());
        }
    }
    let trimmed = value.trim_ascii();
    if !trimmed
        .get(..6)
        .is_some_and(|u| u.eq_ignore_ascii_case(b"bytes="))
    {
        assert_eq!(ranges, Ranges::Whole, "another unit");
    }
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(value);
    padded.extend_from_slice(b" , ,");
    assert_eq!(
        range::parse(&padded, len),
        ranges,
        "empty elements and spaces"
    );
}

/// RFC 9110 §13.1.5: If-Range holds only for our strong tag, or for our date once it is a
/// strong validator (§8.8.2.2: the second it names is over).
fn check_if_range(value: &[u8], v: &Validators, now: u64) {
    if if_range_holds(value, v, now) {
        let value = value.trim_ascii();
        let date = parse_date(value);
        assert!(
            value == v.etag.as_bytes() || (date == Some(v.modified) && v.modified < now),
            "{:?} held against {v:?} at {now}",
            String::from_utf8_lossy(value)
        );
    }
    assert!(if_range_holds(v.etag.as_bytes(), v, now));
    assert!(!if_range_holds(format!("W/{}", v.etag).as_bytes(), v, now));
    let ours = http_date(v.modified);
    assert_eq!(if_range_holds(ours.as_bytes(), v, now), v.modified < now);
}

/// RFC 9110 §13.2.2 and §13.1.1-§13.1.4: the preconditions' decision follows from each
/// field's own answer.
fn check_preconditions(c: &Conditions<'_>, v: &Validators) {
    let decision = evaluate(c, v);
    let only = |c: Conditions<'_>| evaluate(&c, v);
    // Each field alone.
    let strong = c.if_match.map(|m| {
        only(Conditions {
            if_match: Some(m),
            ..Default::default()
        }) == Decision::Proceed
    });
    if let Some(m) = c.if_match {
        // A strong match is a weak match too (§8.8.3.2).
        if strong == Some(true) {
            let weak = only(Conditions {
                if_none_match: Some(m),
                ..Default::default()
            });
            assert_eq!(weak, Decision::NotModified, "matched strongly, not weakly");
        }
    }
    let ius = c.if_unmodified_since.and_then(parse_date);
    if let Some(d) = c.if_unmodified_since {
        let alone = only(Conditions {
            if_unmodified_since: Some(d),
            ..Default::default()
        });
        let failed = ius.is_some_and(|date| v.modified > date);
        assert_eq!(alone == Decision::Failed, failed, "If-Unmodified-Since");
    }
    if let Some(d) = c.if_modified_since {
        let alone = only(Conditions {
            if_modified_since: Some(d),
            ..Default::default()
        });
        let not_modified = parse_date(d).is_some_and(|date| v.modified <= date);
        assert_eq!(
            alone == Decision::NotModified,
            not_modified,
            "If-Modified-Since"
        );
    }
    // Step 1 and 2: a failed If-Match, else a failed If-Unmodified-Since, is a 412.
    let fails = match strong {
        Some(matched) => !matched,
        None => ius.is_some_and(|date| v.modified > date),
    };
    assert_eq!(
        decision == Decision::Failed,
        fails,
        "412 when step 1 or 2 fails"
    );
    // Our own tag in If-Match passes step 1, whatever If-Unmodified-Since says.
    let passes = evaluate(
        &Conditions {
            if_match: Some(v.etag.as_bytes()),
            ..*c
        },
        v,
    );
    assert_ne!(passes, Decision::Failed);
    // Dates read back from what they are written as.
    for date in [c.if_modified_since, c.if_unmodified_since]
        .into_iter()
        .flatten()
        .filter_map(parse_date)
    {
        let text = http_date(date);
        assert_eq!(parse_date(text.as_bytes()), Some(date), "{text}");
    }
}

/// RFC 9110 §12.5.3 and §12.4.2: a coding is chosen only if its sibling exists and the
/// client gives it a weight above 0, no other sibling weighs more, and the file as it is
/// (identity) is not weighed more; without the field, none.
fn check_negotiation(accept: Option<&[u8]>, available: &[Coding]) {
    let chosen = choose(accept, available);
    let Some(accept) = accept else {
        assert_eq!(chosen, None, "no Accept-Encoding");
        return;
    };
    let weights: Vec<(Coding, u16)> = available
        .iter()
        .map(|&c| (c, reference_weight(accept, c.name())))
        .collect();
    let best = weights.iter().map(|(_, q)| *q).max().unwrap_or(0);
    match chosen {
        Some(c) => {
            assert!(available.contains(&c), "{c:?} is not there");
            let q = reference_weight(accept, c.name());
            assert!(q > 0, "{c:?} is not acceptable");
            assert_eq!(q, best, "{c:?} weighs less than another");
            let first_best = weights.iter().find(|(_, w)| *w == best).map(|(c, _)| *c);
            assert_eq!(Some(c), first_best, "ties go br, zstd, gzip");
            if named(accept, "identity") {
                assert!(
                    reference_weight(accept, "identity") <= q,
                    "identity weighs more"
                );
            }
        }
        None => assert!(
            best == 0 || (named(accept, "identity") && reference_weight(accept, "identity") > best),
            "an acceptable sibling was not sent: {weights:?}"
        ),
    }
}

/// Whether `accept` names `coding` (not through `*`).
fn named(accept: &[u8], coding: &str) -> bool {
    items(accept).any(|(name, _)| name.eq_ignore_ascii_case(coding.as_bytes()))
}

/// The weight in thousandths `accept` gives `coding`: its first well-formed element that
/// names it (`x-gzip` for gzip, RFC 9110 §8.4.1.3), else the last `*`, else 0.
fn reference_weight(accept: &[u8], coding: &str) -> u16 {
    let mut star = 0;
    for (name, q) in items(accept) {
        let Some(q) = q else { continue };
        let gzip = coding == "gzip" && name.eq_ignore_ascii_case(b"x-gzip");
        if name.eq_ignore_ascii_case(coding.as_bytes()) || gzip {
            return q;
        }
        if name == b"*" {
            star = q;
        }
    }
    star
}

/// The elements of an Accept-Encoding value: the coding and its weight (`None` for a
/// malformed qvalue; 1 without one).
fn items(accept: &[u8]) -> impl Iterator<Item = (&[u8], Option<u16>)> {
    accept.split(|&b| b == b',').map(|item| {
        let mut params = item.split(|&b| b == b';');
        let name = params.next().unwrap_or_default().trim_ascii();
        let q = params
            .map(<[u8]>::trim_ascii)
            .find(|p| p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q="))
            .map_or(Some(1000), |p| qvalue(&p[2..]));
        (name, q)
    })
}

/// RFC 9110 §12.4.2: `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn qvalue(v: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(v.trim_ascii()).ok()?;
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `secs` since the epoch as an IMF-fixdate.
fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// `data` with each `marker` replaced by `with`.
fn expand(data: &[u8], marker: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(at) = rest.windows(marker.len()).position(|w| w == marker) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + marker.len()..];
    }
    out.extend_from_slice(rest);
    out
}
