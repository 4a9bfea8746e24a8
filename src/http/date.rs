//! The `Date` header value: an IMF-fixdate (RFC 9110 §5.6.7), formatted at most once per second per thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

const DAY_NAMES: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

thread_local! {
    /// The unix second last formatted on this thread and its text; each
    /// worker thread owns its own copy, so no locking.
    static CACHE: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
}

/// The current time as an IMF-fixdate, reformatted only when the second changes.
pub fn http_date() -> [u8; DATE_LEN] {
    let now = unix_seconds();
    CACHE.with(|cache| {
        let (secs, text) = cache.get();
        if secs == now {
            return text;
        }
        let text = format_imf_fixdate(now);
        cache.set((now, text));
        text
    })
}

/// The wall clock's second, from the kernel's coarse clock: the time at its last tick
/// (1–4 ms old), read without the TSC. A header with one-second resolution loses
/// nothing, and the clock is read on every response while the text is formatted once a
/// second: the precise clock's TSC read and conversion would be most of `http_date`'s
/// own work.
pub fn unix_seconds() -> u64 {
    if let Some(now) = crate::sys::realtime_coarse() {
        return now.as_secs();
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Appends the current IMF-fixdate to `out`.
pub fn write_http_date(out: &mut Vec<u8>) {
    out.extend_from_slice(&http_date());
}

/// Formats `unix_secs` (seconds since 1970-01-01T00:00:00Z) as
/// `Day, DD Mon YYYY HH:MM:SS GMT` (RFC 9110 §5.6.7 IMF-fixdate).
///
/// Years past 9999 do not fit the fixed format; they are clamped to the last
/// second of 9999 rather than producing a malformed field.
pub fn format_imf_fixdate(unix_secs: u64) -> [u8; DATE_LEN] {
    // 9999-12-31T23:59:59Z.
    const MAX_SECS: u64 = 253_402_300_799;
    let secs = unix_secs.min(MAX_SECS);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
    let weekday = ((days + 4) % 7) as usize;

    let mut b = [0u8; DATE_LEN];
    b[0..3].copy_from_slice(DAY_NAMES[weekday]);
    b[3] = b',';
    b[4] = b' ';
    two_digits(&mut b[5..7], day as u64);
    b[7] = b' ';
    b[8..11].copy_from_slice(MONTH_NAMES[month as usize - 1]);
    b[11] = b' ';
    two_digits(&mut b[12..14], year as u64 / 100);
    two_digits(&mut b[14..16], year as u64 % 100);
    b[16] = b' ';
    two_digits(&mut b[17..19], hour);
    b[19] = b':';
    two_digits(&mut b[20..22], minute);
    b[22] = b':';
    two_digits(&mut b[23..25], second);
    b[25..29].copy_from_slice(b" GMT");
    b
}

fn two_digits(dst: &mut [u8], n: u64) {
    dst[0] = b'0' + (n / 10) as u8;
    dst[1] = b'0' + (n % 10) as u8;
}

/// Converts a count of days since 1970-01-01 to a proleptic Gregorian
/// (year, month 1..=12, day 1..=31).
///
/// Works in "eras" of 400 years (146 097 days, after which the calendar
/// repeats), with years starting on 1 March so that the leap day is the last
/// day of the year and month lengths follow a fixed 153-day pattern per five
/// months.
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    // Shift the epoch to 0000-03-01: 719 468 days before 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // 0..=146_096
                                  // Year within the era: remove the leap days accumulated so far
                                  // (one every 4 years, minus one every 100, plus one at 400).
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month index counted from March (0 = March .. 11 = February).
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (era * 400 + year_of_era) as u32 + u32::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9110 §5.6.7: the example IMF-fixdate.
    #[test]
    fn rfc_example_date() {
        assert_eq!(
            &format_imf_fixdate(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    /// RFC 9110 §5.6.7: known dates, including the epoch and leap days.
    #[test]
    fn known_dates() {
        let cases: [(u64, &[u8; 29]); 7] = [
            (0, b"Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_782_400, b"Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_208_000, b"Thu, 29 Feb 2024 12:00:00 GMT"),
            (1_234_567_890, b"Fri, 13 Feb 2009 23:31:30 GMT"),
            (4_133_980_799, b"Fri, 31 Dec 2100 23:59:59 GMT"),
            (4_133_980_800, b"Sat, 01 Jan 2101 00:00:00 GMT"),
            (253_402_300_799, b"Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                &format_imf_fixdate(secs),
                want,
                "{secs}: {}",
                String::from_utf8_lossy(&format_imf_fixdate(secs))
            );
        }
    }

    /// Years past 9999 cannot be written as IMF-fixdate; they are clamped.
    #[test]
    fn far_future_is_clamped() {
        assert_eq!(
            &format_imf_fixdate(u64::MAX),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    /// Every day for 1000 years: the day counter only moves forward by one.
    #[test]
    fn consecutive_days_are_consistent() {
        let mut prev = civil_from_days(0);
        for d in 1..366_000u64 {
            let cur = civil_from_days(d);
            let next_ok = (cur.0 == prev.0 && cur.1 == prev.1 && cur.2 == prev.2 + 1)
                || (cur.0 == prev.0 && cur.1 == prev.1 + 1 && cur.2 == 1)
                || (cur.0 == prev.0 + 1 && cur.1 == 1 && cur.2 == 1 && prev.1 == 12);
            assert!(next_ok, "{prev:?} -> {cur:?}");
            prev = cur;
        }
    }

    #[test]
    fn coarse_clock_agrees_with_the_wall_clock() {
        // The coarse clock trails the precise one by at most a tick, so the two seconds
        // are equal or one apart (at a second's turn).
        let coarse = unix_seconds();
        let precise = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            precise >= coarse && precise - coarse <= 1,
            "{coarse} vs {precise}"
        );
    }

    #[test]
    fn cached_date_is_well_formed() {
        let a = http_date();
        assert_eq!(&a[25..], b" GMT");
        assert_eq!(a[3], b',');
        let mut v = Vec::new();
        write_http_date(&mut v);
        assert_eq!(v.len(), DATE_LEN);
    }
}
