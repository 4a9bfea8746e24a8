//! Fuzzes the uwsgi packet parser over arbitrary bytes: it never panics, never takes more
//! than it was given, never makes a head with a line break it did not put there itself,
//! and every prefix of the input is "incomplete" or the same answer as the whole.
#![no_main]

use _qiao::http::uwsgi::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data, 65536);
    if let Ok(Some((request, used))) = &whole {
        assert!(*used <= data.len());
        // Each line of the head ends in CRLF, and no CR or LF stands alone.
        let head = &request.head;
        assert!(head.ends_with(b"\r\n\r\n"));
        for (i, &b) in head.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(head[i - 1], b'\r');
            }
            if b == b'\r' {
                assert_eq!(head.get(i + 1), Some(&b'\n'));
            }
        }
    }
    for n in 0..data.len().min(512) {
        match parse(&data[..n], 65536) {
            Ok(None) => {}
            prefix => assert_eq!(prefix, whole, "prefix of {n} bytes"),
        }
    }
});
