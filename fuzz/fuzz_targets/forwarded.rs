//! Fuzzes the forwarding fields of a trusted peer's request: the input is split into
//! header lines ("name: value"), and `resolve` never panics whatever they hold, with
//! host, port and prefix read and a trusted network set.
#![no_main]

use _qiao::http::forwarded::{resolve, Rules, TrustedNets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], &line[colon + 1..]))
        })
        .collect();
    let rules = Rules {
        x_host: 1 + usize::from(data.first().copied().unwrap_or(0) % 3),
        x_port: 1,
        x_prefix: 2,
        ..Rules::default()
    };
    let trusted = TrustedNets::parse(&["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
        .expect("valid networks");
    let _ = resolve(lines.iter().copied(), &rules, &trusted);
});
