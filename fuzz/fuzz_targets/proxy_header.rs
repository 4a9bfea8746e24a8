//! Fuzzes the PROXY protocol header parser over arbitrary bytes: it never panics, never
//! takes more bytes than it was given, and every prefix of the input is either
//! "incomplete" or the same answer as the whole (a header read in pieces parses as when
//! it arrives whole).
#![no_main]

use _qiao::http::proxy::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Some((_, used))) = whole {
        assert!(used <= data.len());
    }
    for n in 0..data.len() {
        match parse(&data[..n]) {
            Ok(None) => {}
            // A prefix that already decides must decide as the whole does.
            prefix => assert_eq!(prefix, whole, "prefix of {n} bytes"),
        }
    }
});
