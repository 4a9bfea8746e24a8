//! Which precompressed sibling of a file to send, by `Accept-Encoding` (RFC 9110
//! §12.5.3), as nginx's `gzip_static` and WhiteNoise choose: the file `name.br`,
//! `name.zst` or `name.gz` beside `name`, sent with its `Content-Encoding`. Pure.

/// A content coding a sibling file may carry, in the server's order of preference (the
/// smallest output first) for codings the client weighs equally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// The coding's name in `Content-Encoding` and `Accept-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The suffix of the sibling file.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Coding::Brotli => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// The weight (RFC 9110 §12.4.2: 0 to 1000, in thousandths) `accept` gives `coding`, or
/// the weight of `*` when it is not named; 0 when neither.
fn weight(accept: &[u8], coding: &str) -> u16 {
    let mut star = None;
    for item in accept.split(|&b| b == b',') {
        let mut params = item.split(|&b| b == b';');
        let name = params.next().unwrap_or_default().trim_ascii();
        let q = params
            .find_map(|p| {
                let p = p.trim_ascii();
                let value = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q="))?;
                Some(qvalue(value))
            })
            .unwrap_or(Some(1000));
        let Some(q) = q else { continue };
        if name.eq_ignore_ascii_case(coding.as_bytes())
            || (coding == "gzip" && name.eq_ignore_ascii_case(b"x-gzip"))
        {
            return q;
        }
        if name == b"*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn qvalue(v: &[u8]) -> Option<u16> {
    let v = v.trim_ascii();
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The coding to send among those whose sibling exists (`available`), for a request
/// whose `Accept-Encoding` is `accept`: the one the client weighs most (ties broken by
/// `Coding::ALL`'s order), if the client accepts it at all and weighs it no less than
/// the file as it is. No `Accept-Encoding`: the file as it is (§12.5.3: a client that
/// sends none is better served by no coding).
pub fn choose(accept: Option<&[u8]>, available: &[Coding]) -> Option<Coding> {
    let accept = accept?;
    let mut best: Option<(Coding, u16)> = None;
    for &coding in Coding::ALL.iter().filter(|c| available.contains(c)) {
        let q = weight(accept, coding.name());
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    let (coding, q) = best?;
    // identity is acceptable unless excluded (§12.5.3); prefer it only if weighed higher.
    let named_identity = accept.split(|&b| b == b',').any(|item| {
        item.split(|&b| b == b';')
            .next()
            .is_some_and(|n| n.trim_ascii().eq_ignore_ascii_case(b"identity"))
    });
    if named_identity && weight(accept, "identity") > q {
        return None;
    }
    Some(coding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    const ALL: &[Coding] = &[Brotli, Zstd, Gzip];

    fn c(accept: &str, available: &[Coding]) -> Option<Coding> {
        choose(Some(accept.as_bytes()), available)
    }

    #[test]
    fn the_best_coding_the_client_takes() {
        assert_eq!(c("gzip, deflate, br, zstd", ALL), Some(Brotli));
        assert_eq!(c("gzip, deflate", ALL), Some(Gzip));
        assert_eq!(c("gzip, br", &[Gzip]), Some(Gzip));
        assert_eq!(c("zstd, gzip", &[Brotli]), None);
        assert_eq!(choose(None, ALL), None);
    }

    /// RFC 9110 §12.4.2: qvalues weigh the codings; q=0 means not acceptable.
    #[test]
    fn qvalues_decide() {
        assert_eq!(c("br;q=0.5, gzip;q=0.8", ALL), Some(Gzip));
        assert_eq!(c("br;q=0, gzip", ALL), Some(Gzip));
        assert_eq!(c("br;q=0, gzip;q=0", ALL), None);
        assert_eq!(c("*", ALL), Some(Brotli));
        assert_eq!(c("*;q=0.1, gzip;q=0.5", ALL), Some(Gzip));
        assert_eq!(c("gzip;q=0.5, identity", ALL), None);
        assert_eq!(c("gzip;q=bad", ALL), None);
        assert_eq!(c("x-gzip", ALL), Some(Gzip));
    }

    #[test]
    fn qvalue_syntax() {
        assert_eq!(qvalue(b"1"), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"0.05"), Some(50));
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"1.5"), None);
        assert_eq!(qvalue(b"0.1234"), None);
        assert_eq!(qvalue(b"2"), None);
    }
}
