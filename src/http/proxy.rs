//! The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) that a load
//! balancer sends first on a connection to say who the client is: bytes in, the header
//! and the bytes it took out, `Ok(None)` while it is incomplete.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::forwarded::ipv4;

/// Why a PROXY header was refused; the connection is closed without a response. A fixed
/// text, safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError(pub &'static str);

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection carries a client's: its address, and the address it connected to.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
        /// v2's SSL TLV says the client's connection used TLS (`PP2_CLIENT_SSL`).
        ssl: bool,
    },
    /// The connection's own addresses stand: v2 `LOCAL` (the proxy's own connection, a
    /// health check), v1 `UNKNOWN`, or a v2 family with no IP address (`UNSPEC`, `UNIX`).
    Local,
}

/// Section 2.2: the v2 header's first twelve bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// Section 2.1: "a receiver ... will only need a 107-byte buffer" for a v1 line.
const V1_MAX: usize = 107;
/// The longest v2 address block and TLVs accepted (after the 16-byte fixed part). The
/// spec allows 65535; real proxies send well under this (the largest address block, two
/// Unix paths, is 216 bytes), and it bounds what one connection makes us buffer.
pub const V2_MAX_LENGTH: usize = 4096;

/// Whether `buf` starts like a PROXY header (of either version): `None` while too short to
/// tell.
pub fn starts_like_header(buf: &[u8]) -> Option<bool> {
    let v1 = prefix_state(buf, V1_PREFIX);
    let v2 = prefix_state(buf, &V2_SIGNATURE);
    match (v1, v2) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// `Some(true)`: `buf` starts with `prefix`; `Some(false)`: it cannot; `None`: too short.
fn prefix_state(buf: &[u8], prefix: &[u8]) -> Option<bool> {
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        Some(false)
    } else if n == prefix.len() {
        Some(true)
    } else {
        None
    }
}

/// Parses the PROXY header at the front of `buf`: the header and its length, `Ok(None)` if
/// more bytes are needed, or why it is refused. A connection that must carry a header
/// and does not start with one is refused too (section 2: "the receiver MUST ... not try
/// to guess whether the protocol header is present or not").
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match (
        prefix_state(buf, V1_PREFIX),
        prefix_state(buf, &V2_SIGNATURE),
    ) {
        (Some(true), _) => parse_v1(buf),
        (_, Some(true)) => parse_v2(buf),
        (Some(false), Some(false)) => Err(ProxyError("no PROXY protocol header")),
        _ => Ok(None),
    }
}

/// Section 2.1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, or `PROXY UNKNOWN`
/// with anything up to the CRLF; single spaces; at most 107 bytes.
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    const BAD: ProxyError = ProxyError("malformed PROXY v1 header");
    let window = &buf[..buf.len().min(V1_MAX)];
    // The first line break: a line feed with no carriage return before it cannot end a
    // valid line (looked for with the CR, so that a header read in pieces gets the same
    // answer as read whole).
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError("PROXY v1 header longer than 107 bytes"));
        }
        return Ok(None);
    };
    if window[cr] == b'\n' {
        return Err(BAD);
    }
    match window.get(cr + 1) {
        None if cr + 1 < V1_MAX => return Ok(None),
        Some(b'\n') => {}
        _ => return Err(BAD),
    }
    let used = cr + 2;
    // Read as bytes, field by field: it is done once per connection, and splitting a
    // `str` on ' ' searched for each space with memchr.
    let line = &buf[V1_PREFIX.len()..cr];
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // "the receiver must ignore anything presented before the CRLF is found".
        return Ok(Some((ProxyHeader::Local, used)));
    }
    let mut fields = line.split(|&b| b == b' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(BAD);
    };
    let v6 = |text: &[u8]| -> Option<IpAddr> {
        Some(IpAddr::V6(std::str::from_utf8(text).ok()?.parse().ok()?))
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        b"TCP4" => (
            IpAddr::V4(ipv4(src).ok_or(BAD)?),
            IpAddr::V4(ipv4(dst).ok_or(BAD)?),
        ),
        b"TCP6" => (v6(src).ok_or(BAD)?, v6(dst).ok_or(BAD)?),
        _ => return Err(BAD),
    };
    let (sport, dport) = (v1_port(sport).ok_or(BAD)?, v1_port(dport).ok_or(BAD)?);
    Ok(Some((
        ProxyHeader::Proxy {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
            ssl: false,
        },
        used,
    )))
}

/// A v1 port: 0 to 65535 in decimal, "leading zeroes are not permitted".
fn v1_port(text: &[u8]) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    let mut n: u32 = 0;
    for &d in text {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(d - b'0');
    }
    u16::try_from(n).ok()
}

/// Section 2.2: the signature, version and command, family and transport, the length of
/// what follows, the address block, then TLVs (section 2.2.7).
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError("PROXY v2 header of an unknown version"));
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX_LENGTH {
        return Err(ProxyError("PROXY v2 header too long"));
    }
    let used = 16 + length;
    if buf.len() < used {
        return Ok(None);
    }
    let header = &buf[..used];
    let body = &header[16..];
    let bad = ProxyError("malformed PROXY v2 header");
    // The address block's length, by family (AF_INET, AF_INET6, AF_UNIX).
    let addresses = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(bad),
    };
    if body.len() < addresses {
        return Err(bad);
    }
    let ssl = tlvs(header, &body[addresses..])?;
    match command {
        // LOCAL: "the receiver must ... use the real connection endpoints".
        0 => return Ok(Some((ProxyHeader::Local, used))),
        1 => {}
        _ => return Err(ProxyError("PROXY v2 header with an unknown command")),
    }
    // Only a stream can carry HTTP (an UNSPEC family may say UNSPEC for transport too).
    match (family, transport) {
        (0, _) => return Ok(Some((ProxyHeader::Local, used))),
        (_, 1) => {}
        _ => return Err(ProxyError("PROXY v2 header for a transport other than TCP")),
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (source, destination) = match family {
        1 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        // AF_UNIX: paths, no address the environ can show.
        _ => return Ok(Some((ProxyHeader::Local, used))),
    };
    Ok(Some((
        ProxyHeader::Proxy {
            source,
            destination,
            ssl,
        },
        used,
    )))
}

/// PP2_TYPE_SSL, PP2_TYPE_CRC32C, and PP2_CLIENT_SSL of the SSL TLV's client field.
const PP2_TYPE_CRC32C: u8 = 0x03;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_CLIENT_SSL: u8 = 0x01;

/// Walks the TLVs (section 2.2.7), each bounded by what is left: whether the SSL TLV says
/// the client used TLS. A CRC32C TLV is checked against the header (section 2.2.5).
fn tlvs(header: &[u8], mut rest: &[u8]) -> Result<bool, ProxyError> {
    const BAD: ProxyError = ProxyError("malformed PROXY v2 TLV");
    let mut ssl = false;
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(BAD);
        }
        let (kind, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let value = rest.get(3..3 + len).ok_or(BAD)?;
        match kind {
            PP2_TYPE_SSL => {
                // struct pp2_tlv_ssl: client (1 byte), verify (4), then sub-TLVs.
                if value.len() < 5 {
                    return Err(BAD);
                }
                ssl = value[0] & PP2_CLIENT_SSL != 0;
                tlvs(header, &value[5..])?;
            }
            PP2_TYPE_CRC32C => {
                if value.len() != 4 {
                    return Err(BAD);
                }
                // The checksum of the whole header with its own four bytes as zeros.
                // (`rest` lies within `header`: its value's offset there.)
                let at = rest.as_ptr() as usize - header.as_ptr() as usize + 3;
                let mut copy = header.to_vec();
                copy[at..at + 4].fill(0);
                if crc32c(&copy).to_be_bytes() != value {
                    return Err(ProxyError("PROXY v2 header checksum mismatch"));
                }
            }
            _ => {}
        }
        rest = &rest[3 + len..];
    }
    Ok(ssl)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: run once per
/// connection over a few dozen bytes, where a table would cost more than it saves.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str, ssl: bool) -> ProxyHeader {
        ProxyHeader::Proxy {
            source: addr(src),
            destination: addr(dst),
            ssl,
        }
    }

    /// A v2 header: signature, version 2 with `command`, `fam_proto`, the block.
    fn v2(command: u8, fam_proto: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(fam_proto);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn inet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut b = src.to_vec();
        b.extend_from_slice(&dst);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b
    }

    /// Every proper prefix of a valid header is `Ok(None)`, and the whole gives `want`.
    fn whole_and_split(bytes: &[u8], want: ProxyHeader) {
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), Ok(None), "prefix of {n} bytes");
        }
        let mut more = bytes.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&more), Ok(Some((want, bytes.len()))));
    }

    /// Section 2.1, the v1 examples.
    #[test]
    fn v1_tcp4_tcp6_unknown() {
        whole_and_split(
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            proxied("192.168.0.1:56324", "192.168.0.11:443", false),
        );
        whole_and_split(
            b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
            proxied("[2001:db8::1]:65535", "[2001:db8::2]:0", false),
        );
        whole_and_split(b"PROXY UNKNOWN\r\n", ProxyHeader::Local);
        whole_and_split(
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
            ProxyHeader::Local,
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n"[..], // bare LF
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",
            b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n", // two spaces
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n", // leading zero
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
            b"PROXY TCP4 127.1 192.168.0.11 1 443\r\n",
            b"PROXY TCP4 ::1 ::1 1 443\r\n", // v6 under TCP4
            b"PROXY TCP6 192.168.0.1 192.168.0.11 1 443\r\n",
            b"PROXY UDP4 192.168.0.1 192.168.0.11 1 443\r\n",
            b"PROXY \r\n",
            // Found by the fuzz target: a bare LF before a CR still waiting for its LF.
            b"PROXY !R\nOXPROXOLY \r",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError("malformed PROXY v1 header")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 100]].concat();
        assert_eq!(
            parse(&long),
            Err(ProxyError("PROXY v1 header longer than 107 bytes"))
        );
    }

    /// Section 2.2: TCP over IPv4 and IPv6, LOCAL, UNSPEC and UNIX families.
    #[test]
    fn v2_addresses_and_commands() {
        let four = inet([203, 0, 113, 7], [10, 0, 0, 1], 40000, 443);
        whole_and_split(
            &v2(1, 0x11, &four),
            proxied("203.0.113.7:40000", "10.0.0.1:443", false),
        );
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&1234u16.to_be_bytes());
        six.extend_from_slice(&80u16.to_be_bytes());
        whole_and_split(
            &v2(1, 0x21, &six),
            proxied("[2001:db8::7]:1234", "[2001:db8::1]:80", false),
        );
        // LOCAL (a health check): the addresses are discarded, whatever they say.
        whole_and_split(&v2(0, 0x11, &four), ProxyHeader::Local);
        whole_and_split(&v2(0, 0x00, &[]), ProxyHeader::Local);
        whole_and_split(&v2(1, 0x00, &[]), ProxyHeader::Local);
        whole_and_split(&v2(1, 0x31, &[0; 216]), ProxyHeader::Local);
    }

    #[test]
    fn v2_refusals() {
        let four = inet([203, 0, 113, 7], [10, 0, 0, 1], 40000, 443);
        let mut bad_version = v2(1, 0x11, &four);
        bad_version[12] = 0x11;
        assert_eq!(
            parse(&bad_version),
            Err(ProxyError("PROXY v2 header of an unknown version"))
        );
        assert_eq!(
            parse(&v2(2, 0x11, &four)),
            Err(ProxyError("PROXY v2 header with an unknown command"))
        );
        assert_eq!(
            parse(&v2(1, 0x12, &four)),
            Err(ProxyError("PROXY v2 header for a transport other than TCP"))
        );
        // An address block longer than the length says.
        assert_eq!(
            parse(&v2(1, 0x11, &four[..11])),
            Err(ProxyError("malformed PROXY v2 header"))
        );
        assert_eq!(
            parse(&v2(1, 0x41, &four)),
            Err(ProxyError("malformed PROXY v2 header"))
        );
        // Past the bound: refused on the fixed part, before the rest is read.
        let mut huge = v2(1, 0x11, &four);
        huge[14..16].copy_from_slice(&((V2_MAX_LENGTH + 1) as u16).to_be_bytes());
        assert_eq!(
            parse(&huge[..16]),
            Err(ProxyError("PROXY v2 header too long"))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ProxyError("no PROXY protocol header"))
        );
        assert_eq!(
            parse(b"\r\n\r\nGET"),
            Err(ProxyError("no PROXY protocol header"))
        );
    }

    /// Section 2.2.7: TLVs bounded by the header; 2.2.5: SSL with PP2_CLIENT_SSL.
    #[test]
    fn v2_tlvs() {
        let mut block = inet([203, 0, 113, 7], [10, 0, 0, 1], 40000, 443);
        // ALPN "h2", then SSL: client SSL, verify 0, a VERSION sub-TLV "TLSv1.3".
        block.extend_from_slice(&[0x01, 0, 2, b'h', b'2']);
        let version = b"TLSv1.3";
        let mut ssl = vec![PP2_CLIENT_SSL, 0, 0, 0, 0, 0x21, 0, version.len() as u8];
        ssl.extend_from_slice(version);
        block.extend_from_slice(&[PP2_TYPE_SSL, 0, ssl.len() as u8]);
        block.extend_from_slice(&ssl);
        whole_and_split(
            &v2(1, 0x11, &block),
            proxied("203.0.113.7:40000", "10.0.0.1:443", true),
        );
        // The SSL TLV without PP2_CLIENT_SSL: plain.
        let mut plain = inet([203, 0, 113, 7], [10, 0, 0, 1], 40000, 80);
        plain.extend_from_slice(&[PP2_TYPE_SSL, 0, 5, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse(&v2(1, 0x11, &plain)).unwrap().unwrap().0,
            proxied("203.0.113.7:40000", "10.0.0.1:80", false)
        );
        for tail in [
            &[0x04u8][..],                              // a TLV cut in its type and length
            &[0x04, 0, 5, 1, 2],                        // a value longer than what is left
            &[PP2_TYPE_SSL, 0, 2, 1, 0],                // an SSL TLV shorter than its fixed part
            &[PP2_TYPE_SSL, 0, 6, 1, 0, 0, 0, 0, 0x21], // a sub-TLV cut short
            &[PP2_TYPE_CRC32C, 0, 2, 0, 0],
        ] {
            let mut block = inet([203, 0, 113, 7], [10, 0, 0, 1], 1, 2);
            block.extend_from_slice(tail);
            assert_eq!(
                parse(&v2(1, 0x11, &block)),
                Err(ProxyError("malformed PROXY v2 TLV")),
                "{tail:?}"
            );
        }
    }

    /// Section 2.2.5: a CRC32C TLV is checked over the header with its value zeroed.
    #[test]
    fn v2_checksum() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283); // the standard check value
        let mut block = inet([203, 0, 113, 7], [10, 0, 0, 1], 40000, 443);
        block.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        let mut header = v2(1, 0x11, &block);
        let sum = crc32c(&header).to_be_bytes();
        let at = header.len() - 4;
        header[at..].copy_from_slice(&sum);
        assert!(parse(&header).unwrap().is_some());
        header[16] ^= 1; // the source address changed on the way
        assert_eq!(
            parse(&header),
            Err(ProxyError("PROXY v2 header checksum mismatch"))
        );
    }

    #[test]
    fn starts_like_a_header() {
        assert_eq!(starts_like_header(b""), None);
        assert_eq!(starts_like_header(b"PRO"), None);
        assert_eq!(starts_like_header(b"PROXY "), Some(true));
        assert_eq!(starts_like_header(b"\r\n\r\n\0"), None);
        assert_eq!(starts_like_header(&V2_SIGNATURE), Some(true));
        assert_eq!(starts_like_header(b"GET /"), Some(false));
        assert_eq!(starts_like_header(b"\r\n\r\nG"), Some(false));
    }
}
