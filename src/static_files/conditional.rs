//! Conditional requests (RFC 9110 §13) against a file's validators: the preconditions in
//! the order of §13.2.2, and `If-Range` (§13.1.5). Pure: field values in, a decision out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A file's validators, as its responses announce them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, quotes included: `"<mtime hex>-<length hex>"`, the form
    /// nginx uses, so that both servers give one file the same tag.
    pub etag: String,
    /// The modification time in whole seconds since the epoch (what `Last-Modified`
    /// says, and what dates are compared with).
    pub modified: u64,
}

impl Validators {
    pub fn new(modified: u64, len: u64) -> Validators {
        Validators {
            etag: format!("\"{modified:x}-{len:x}\""),
            modified,
        }
    }
}

/// The conditional fields of a request (each the values of all its lines, joined).
#[derive(Debug, Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
}

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the method (and its Range, if any).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// RFC 9110 §13.2.2: the preconditions, in order, for a GET or HEAD of a representation
/// that exists (the only methods a static file answers).
pub fn evaluate(c: &Conditions<'_>, v: &Validators) -> Decision {
    // 1. If-Match: false (strong comparison, §13.1.1) → 412.
    if let Some(value) = c.if_match {
        if !list_matches(value, &v.etag, Comparison::Strong) {
            return Decision::Failed;
        }
    } else if let Some(date) = c.if_unmodified_since.and_then(parse_date) {
        // 2. If-Unmodified-Since, without If-Match (an invalid date is ignored): modified
        // after the date → 412.
        if v.modified > date {
            return Decision::Failed;
        }
    }
    // 3. If-None-Match: false (weak comparison, §13.1.2) → 304 for GET and HEAD.
    if let Some(value) = c.if_none_match {
        if list_matches(value, &v.etag, Comparison::Weak) {
            return Decision::NotModified;
        }
    } else if let Some(date) = c.if_modified_since.and_then(parse_date) {
        // 4. If-Modified-Since, without If-None-Match: not modified since → 304.
        if v.modified <= date {
            return Decision::NotModified;
        }
    }
    Decision::Proceed
}

/// RFC 9110 §13.1.5: whether a Range applies given `If-Range`, at `now` (seconds since
/// the epoch, the response's `Date`): an entity tag must match strongly (a weak tag never
/// does); a date must equal the Last-Modified date exactly and be a strong validator
/// (§8.8.2.2): the file was last modified in a second that is over by `now`, so the date
/// stands for one content only. A file modified within the current second may change again
/// in it under the same date, and mixing its ranges with a client's older copy would
/// corrupt that copy. Anything else sends the whole file.
pub fn if_range_holds(value: &[u8], v: &Validators, now: u64) -> bool {
    let value = value.trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        // One entity tag, not a list (`"a", "b"` matches nothing), equal to our strong
        // one: a weak tag never matches.
        return value == v.etag.as_bytes();
    }
    parse_date(value) == Some(v.modified) && v.modified < now
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// One entity tag of a list.
struct Tag<'a> {
    weak: bool,
    /// The opaque tag, its quotes included.
    opaque: &'a [u8],
}

/// Whether an `If-Match` / `If-None-Match` value (`*` or a list of entity tags) matches
/// `etag` (our strong tag). A malformed list matches nothing.
fn list_matches(value: &[u8], etag: &str, how: Comparison) -> bool {
    if value.trim_ascii() == b"*" {
        return true;
    }
    for tag in tags(value) {
        let Ok(tag) = tag else { return false };
        let comparable = how == Comparison::Weak || !tag.weak;
        if comparable && tag.opaque == etag.as_bytes() {
            return true;
        }
    }
    false
}

/// The entity tags of a comma-separated list (RFC 9110 §8.8.3: `[W/] DQUOTE *etagc
/// DQUOTE`, where etagc may be a comma), empty elements skipped (§5.6.1); `Err` at the
/// first element that is not one.
fn tags(value: &[u8]) -> impl Iterator<Item = Result<Tag<'_>, ()>> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_ascii_start();
            match rest.first() {
                None => return None,
                Some(b',') => rest = &rest[1..],
                Some(_) => break,
            }
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        let bad = |rest: &mut &[u8]| {
            *rest = &[];
            Some(Err(()))
        };
        if rest.first() != Some(&b'"') {
            return bad(&mut rest);
        }
        let Some(close) = rest[1..].iter().position(|&b| b == b'"') else {
            return bad(&mut rest);
        };
        let opaque = &rest[..close + 2];
        if !is_opaque_tag(opaque) {
            return bad(&mut rest);
        }
        rest = rest[close + 2..].trim_ascii_start();
        match rest.first() {
            None | Some(b',') => Some(Ok(Tag { weak, opaque })),
            Some(_) => bad(&mut rest),
        }
    })
}

/// RFC 9110 §8.8.3: `opaque-tag = DQUOTE *etagc DQUOTE`, `etagc = %x21 / %x23-7E / obs-text`.
fn is_opaque_tag(tag: &[u8]) -> bool {
    let etagc = |b: &u8| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80;
    tag.len() >= 2
        && tag[0] == b'"'
        && tag[tag.len() - 1] == b'"'
        && tag[1..tag.len() - 1].iter().all(etagc)
}

/// An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime
/// forms a recipient must accept) as seconds since the epoch; `None` if it is not one.
pub fn parse_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value.trim_ascii()).ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Seconds since the epoch as a `SystemTime` (for formatting `Last-Modified`).
pub(crate) fn system_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const LM_SECS: u64 = 784111777;

    fn file() -> Validators {
        Validators::new(LM_SECS, 100)
    }

    fn eval(c: Conditions<'_>) -> Decision {
        evaluate(&c, &file())
    }

    #[test]
    fn the_tag_is_nginx_s_form() {
        assert_eq!(file().etag, "\"2ebc98a1-64\"");
    }

    /// RFC 9110 §5.6.7: all three date forms are read.
    #[test]
    fn the_three_date_forms_are_read() {
        assert_eq!(parse_date(LM.as_bytes()), Some(LM_SECS));
        assert_eq!(parse_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(LM_SECS));
        assert_eq!(parse_date(b"Sun Nov  6 08:49:37 1994"), Some(LM_SECS));
        assert_eq!(parse_date(b"yesterday"), None);
    }

    /// RFC 9110 §13.1.1: If-Match uses the strong comparison; `*` matches any current
    /// representation.
    #[test]
    fn if_match_compares_strongly() {
        let tag = file().etag;
        let weak = format!("W/{tag}");
        let list = format!("\"x\", {tag}");
        let m = |v: &str| {
            eval(Conditions {
                if_match: Some(v.as_bytes()),
                ..Default::default()
            })
        };
        assert_eq!(m(&tag), Decision::Proceed);
        assert_eq!(m(&list), Decision::Proceed);
        assert_eq!(m("*"), Decision::Proceed);
        assert_eq!(m(&weak), Decision::Failed);
        assert_eq!(m("\"other\""), Decision::Failed);
        assert_eq!(m("not-a-tag"), Decision::Failed);
    }

    /// RFC 9110 §13.1.2: If-None-Match uses the weak comparison; a match is a 304 for GET
    /// and HEAD.
    #[test]
    fn if_none_match_compares_weakly() {
        let tag = file().etag;
        let n = |v: &str| {
            eval(Conditions {
                if_none_match: Some(v.as_bytes()),
                ..Default::default()
            })
        };
        assert_eq!(n(&tag), Decision::NotModified);
        assert_eq!(n(&format!("W/{tag}")), Decision::NotModified);
        assert_eq!(n(&format!("\"a,b\" , {tag}")), Decision::NotModified);
        assert_eq!(n("*"), Decision::NotModified);
        assert_eq!(n("\"other\""), Decision::Proceed);
    }

    /// RFC 9110 §13.2.2 steps 3 and 4: If-Modified-Since is ignored when If-None-Match is
    /// present.
    #[test]
    fn if_none_match_outranks_if_modified_since() {
        let c = Conditions {
            if_none_match: Some(b"\"other\""),
            if_modified_since: Some(LM.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::Proceed);
        let c = Conditions {
            if_modified_since: Some(LM.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::NotModified);
        let c = Conditions {
            if_modified_since: Some(b"Sun, 06 Nov 1994 08:49:36 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::Proceed);
        let c = Conditions {
            if_modified_since: Some(b"garbage"),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::Proceed, "an invalid date is ignored");
    }

    /// RFC 9110 §13.2.2 steps 1 and 2: If-Unmodified-Since is ignored when If-Match is
    /// present, and a failed precondition outranks a 304.
    #[test]
    fn if_unmodified_since_and_the_order_of_evaluation() {
        let c = Conditions {
            if_unmodified_since: Some(b"Sun, 06 Nov 1994 08:49:36 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::Failed);
        let tag = file().etag;
        let c = Conditions {
            if_match: Some(tag.as_bytes()),
            if_unmodified_since: Some(b"Sun, 06 Nov 1994 08:49:36 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::Proceed);
        let c = Conditions {
            if_match: Some(b"\"other\""),
            if_none_match: Some(tag.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(c), Decision::Failed);
    }

    /// RFC 9110 §13.1.5: If-Range with a strong tag or the exact date; a weak tag never.
    #[test]
    fn if_range_needs_a_strong_match() {
        let v = file();
        let later = LM_SECS + 60;
        assert!(if_range_holds(v.etag.as_bytes(), &v, later));
        assert!(!if_range_holds(
            format!("W/{}", v.etag).as_bytes(),
            &v,
            later
        ));
        assert!(!if_range_holds(b"\"other\"", &v, later));
        assert!(if_range_holds(LM.as_bytes(), &v, later));
        assert!(!if_range_holds(b"Sun, 06 Nov 1994 08:49:38 GMT", &v, later));
        assert!(!if_range_holds(b"junk", &v, later));
    }

    /// RFC 9110 §13.1.5 and §8.8.2.2: a date in If-Range is a strong validator only once
    /// the second it names is over; within it the file may change again under the same
    /// Last-Modified, so the whole file is sent. An entity tag does not depend on the time.
    #[test]
    fn if_range_date_of_a_file_modified_this_second_is_weak() {
        let v = file();
        assert!(!if_range_holds(LM.as_bytes(), &v, LM_SECS));
        assert!(
            !if_range_holds(LM.as_bytes(), &v, LM_SECS - 1),
            "a clock behind the file"
        );
        assert!(if_range_holds(LM.as_bytes(), &v, LM_SECS + 1));
        assert!(if_range_holds(v.etag.as_bytes(), &v, LM_SECS));
    }

    /// RFC 9110 §13.1.5: `If-Range = entity-tag / HTTP-date`, one validator: a list that
    /// starts with the file's tag is no entity-tag and does not match (found by the
    /// static_headers fuzz target).
    #[test]
    fn if_range_takes_one_tag_not_a_list() {
        let v = file();
        let later = LM_SECS + 60;
        for value in [
            format!("{}\r\r,", v.etag),
            format!("{}, \"other\"", v.etag),
            format!("{} ,", v.etag),
            format!("{} x", v.etag),
        ] {
            assert!(!if_range_holds(value.as_bytes(), &v, later), "{value:?}");
        }
        assert!(if_range_holds(
            format!(" {} ", v.etag).as_bytes(),
            &v,
            later
        ));
    }
}
