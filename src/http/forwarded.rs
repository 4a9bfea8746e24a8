//! What a trusted proxy says about the request it forwards: the client's address, the
//! scheme, and (when enabled) the host, port and path prefix the client used, read from
//! `X-Forwarded-*` and RFC 7239 `Forwarded` fields. Pure: header bytes in, values out.
//!
//! Only the connection decides whether its peer is trusted (once, at accept); these
//! functions are called for requests from trusted peers alone, so a request from anyone
//! else pays nothing and changes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::HttpError;
use super::request::is_valid_host;
use super::uwsgi::Variable;

/// A set of addresses and networks (`--forwarded-allow-ips`, `--proxy-allow-from`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedNets {
    /// `*`: every peer.
    all: bool,
    /// (network address, prefix length) pairs, IPv4 ones as IPv4.
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedNets {
    /// Every peer trusted.
    pub fn all() -> TrustedNets {
        TrustedNets {
            all: true,
            nets: Vec::new(),
        }
    }

    /// From items such as `127.0.0.1`, `::1`, `10.0.0.0/8`, `fd00::/8` or `*`; the item
    /// that does not read is the error.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<TrustedNets, String> {
        let mut set = TrustedNets::default();
        for item in items {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                set.all = true;
                continue;
            }
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("not an IP address or network: {item:?}"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(format!("not an IP address or network: {item:?}")),
                },
            };
            // `::ffff:10.0.0.0/104` is `10.0.0.0/8`, as `contains` sees addresses.
            let net = match canonical(addr) {
                v4 @ IpAddr::V4(_) if addr.is_ipv6() => (v4, prefix.saturating_sub(96)),
                same => (same, prefix),
            };
            set.nets.push(net);
        }
        Ok(set)
    }

    /// Whether `ip` is in the set (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let ip = canonical(ip);
        self.nets.iter().any(|&(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: the same host, whichever way a socket or a header
/// spells it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The most secure scheme headers read (the settings table refuses more): their values
/// are then kept on the stack.
pub const MAX_SCHEME_HEADERS: usize = 8;

/// A secure scheme header: (lower-case field name, the value that means https).
pub type SchemeHeader = (Box<[u8]>, Box<[u8]>);

/// Which forwarding fields to read from a trusted peer, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// gunicorn's `secure_scheme_headers`: (lower-case field name, the value that means
    /// https). A present field with another value means http.
    pub secure_scheme_headers: Vec<SchemeHeader>,
    /// `X-Forwarded-Host`, `-Port`, `-Prefix`: how many proxies set each (Werkzeug
    /// ProxyFix's `x_host`, `x_port`, `x_prefix`): the value used is that many from the
    /// right of the field's list; 0 leaves the field unread.
    pub x_host: usize,
    pub x_port: usize,
    pub x_prefix: usize,
}

impl Default for Rules {
    /// gunicorn's default secure scheme headers; host, port and prefix unread.
    fn default() -> Rules {
        let pair = |n: &str, v: &str| (Box::from(n.as_bytes()), Box::from(v.as_bytes()));
        Rules {
            secure_scheme_headers: vec![
                pair("x-forwarded-protocol", "ssl"),
                pair("x-forwarded-proto", "https"),
                pair("x-forwarded-ssl", "on"),
            ],
            x_host: 0,
            x_port: 0,
            x_prefix: 0,
        }
    }
}

/// The client as a proxy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// Only `Forwarded: for="[v6]:port"` / `for="a.b.c.d:port"` and `X-Forwarded-For`
    /// entries with a port carry one.
    pub port: Option<u16>,
}

/// What trusted proxies said about one request; `None` fields were not said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The scheme the client used: true for https.
    pub https: Option<bool>,
    pub client: Option<Client>,
    /// `uri-host [ ":" port ]` the client addressed (`X-Forwarded-Host`).
    pub host: Option<Box<[u8]>>,
    /// The port the client connected to (`X-Forwarded-Port`).
    pub port: Option<u16>,
    /// The path the proxy mounts the application at, without a trailing `/`
    /// (`X-Forwarded-Prefix`).
    pub prefix: Option<Box<[u8]>>,
    /// CGI variables a uwsgi packet gave, set in the environ as they are.
    pub environ: Vec<Variable>,
}

impl Forwarded {
    /// Whether `other` says the same but for the client, which both name.
    pub fn differs_only_in_client(&self, other: &Forwarded) -> bool {
        self.client.is_some()
            && other.client.is_some()
            && self.https == other.https
            && self.host == other.host
            && self.port == other.port
            && self.prefix == other.prefix
            && self.environ == other.environ
    }

    fn is_empty(&self) -> bool {
        self.https.is_none()
            && self.client.is_none()
            && self.host.is_none()
            && self.port.is_none()
            && self.prefix.is_none()
            && self.environ.is_empty()
    }
}

/// Reads the forwarding fields of a request from a trusted peer: `Ok(None)` when it has
/// none. `trusted` also names the proxies a client address is looked past: the client is
/// the rightmost address of `X-Forwarded-For` / `Forwarded: for=` that is not itself
/// trusted, so a client cannot pass for another by sending the field itself (the proxy
/// appends the address it saw after whatever the client sent).
///
/// Malformed or contradictory values from a trusted peer are a 400, never a guess: the
/// proxy either sent them or let a client's through, and neither may pick the address or
/// the scheme the application sees.
pub fn resolve<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    rules: &Rules,
    trusted: &TrustedNets,
) -> Result<Option<Forwarded>, HttpError> {
    // The lengths of the names read, as bits: most fields (Host, Accept...) are passed
    // over on their length alone, and a request with none of these lengths (what a
    // trusted peer sends when it forwards nothing, e.g. a local client) is done here.
    let mut lengths = bit(b"x-forwarded-for") | bit(b"forwarded");
    for (name, _) in &rules.secure_scheme_headers {
        lengths |= bit(name);
    }
    if rules.x_host + rules.x_port + rules.x_prefix > 0 {
        lengths |= bit(b"x-forwarded-host") | bit(b"x-forwarded-prefix");
    }
    let candidate = |name: &[u8]| name.len() < 64 && lengths & (1 << name.len()) != 0;
    if !headers.clone().any(|(name, _)| candidate(name)) {
        return Ok(None);
    }
    // Field values by name, in the order received (RFC 9110 §5.3: repeated field lines
    // are one comma-separated list, in order). Most requests have none of these, or each
    // once: nothing is allocated for them.
    let mut xff = Values::default();
    let mut forwarded = Values::default();
    let (mut hosts, mut ports, mut prefixes) =
        (Values::default(), Values::default(), Values::default());
    // The rightmost element each secure scheme header has so far (what the nearest
    // proxy said), by its place in the rules.
    let mut secure: [Option<&[u8]>; MAX_SCHEME_HEADERS] = [None; MAX_SCHEME_HEADERS];
    let mut lower = [0u8; 63];
    for (name, value) in headers {
        if !candidate(name) {
            continue;
        }
        // Lower-cased once, then compared whole. (A name with '_' matches none:
        // "X_Forwarded_For" is not a forwarding field, whatever it would become in the
        // environ.)
        let lower = &mut lower[..name.len()];
        for (l, &b) in lower.iter_mut().zip(name) {
            *l = b.to_ascii_lowercase();
        }
        let lower = &*lower;
        match lower {
            b"x-forwarded-for" => xff.push(value),
            b"forwarded" => forwarded.push(value),
            b"x-forwarded-host" if rules.x_host > 0 => hosts.push(value),
            b"x-forwarded-port" if rules.x_port > 0 => ports.push(value),
            b"x-forwarded-prefix" if rules.x_prefix > 0 => prefixes.push(value),
            _ => {}
        }
        if let Some(i) = rules
            .secure_scheme_headers
            .iter()
            .position(|(n, _)| **n == *lower)
        {
            let rightmost = value
                .split(|&b| b == b',')
                .map(trim)
                .rfind(|e| !e.is_empty());
            if let (Some(last), Some(slot)) = (rightmost, secure.get_mut(i)) {
                *slot = Some(last);
            }
        }
    }

    let mut out = Forwarded::default();

    // The scheme: every secure scheme header present must agree (gunicorn answers 400 to
    // "contradictory scheme headers" too).
    for (value, (_, means_https)) in secure.iter().zip(&rules.secure_scheme_headers) {
        if let Some(value) = value {
            agree_scheme(&mut out.https, value.eq_ignore_ascii_case(means_https))?;
        }
    }

    // The client: X-Forwarded-For and Forwarded: for=, walked from the right. Entries
    // left of where the walk ends are not read: they are the client's own to write.
    if !xff.is_empty() {
        let nodes = xff.elements().rev().enumerate().map(|(i, element)| {
            xff_node(element)
                .map(|node| (i, node))
                .ok_or(HttpError::BadRequest("invalid X-Forwarded-For"))
        });
        out.client = walk(nodes, trusted)?.0;
    }
    let mut forwarded_host = None;
    if !forwarded.is_empty() {
        let mut elements = parse_forwarded(&forwarded.all())?;
        let nodes = elements
            .iter()
            .enumerate()
            .rev()
            .map(|(i, e)| Ok((i, e.node.clone())));
        let (client, at) = walk(nodes, trusted)?;
        if let Some(client) = client {
            match &out.client {
                Some(other) if other != &client => {
                    return Err(HttpError::BadRequest(
                        "X-Forwarded-For and Forwarded disagree",
                    ))
                }
                _ => out.client = Some(client),
            }
        }
        // RFC 7239 §5.4: proto= is the scheme of the request the proxy that added this
        // element received: the element of the outermost trusted proxy tells the
        // client's.
        if let Some(https) = at.and_then(|i| elements[i].https) {
            agree_scheme(&mut out.https, https)?;
        }
        // §5.3: host= is the Host the proxy received, so that same element's tells the
        // client's; read only when forwarded hosts are (`--forwarded-headers host`).
        if rules.x_host > 0 {
            forwarded_host = at.and_then(|i| elements[i].host.take());
        }
    }

    if let Some(host) = hosts.nth_from_right(rules.x_host) {
        if host.is_empty() || !is_valid_host(host) {
            return Err(HttpError::BadRequest("invalid X-Forwarded-Host"));
        }
        if forwarded_host
            .as_deref()
            .is_some_and(|f| !f.eq_ignore_ascii_case(host))
        {
            return Err(HttpError::BadRequest(
                "X-Forwarded-Host and Forwarded disagree",
            ));
        }
        out.host = Some(host.into());
    } else if let Some(host) = forwarded_host {
        out.host = Some(host.into());
    }
    if let Some(port) = ports.nth_from_right(rules.x_port) {
        out.port = Some(parse_port(port).ok_or(HttpError::BadRequest("invalid X-Forwarded-Port"))?);
    }
    if let Some(prefix) = prefixes.nth_from_right(rules.x_prefix) {
        // Not `//host` nor `/\\host`: a browser reads a link that starts so as another
        // site's, and SCRIPT_NAME starts every link the app builds.
        if prefix.first() != Some(&b'/')
            || prefix.starts_with(b"//")
            || prefix.iter().any(|&b| b <= b' ' || b >= 0x7f || b == b'\\')
        {
            return Err(HttpError::BadRequest("invalid X-Forwarded-Prefix"));
        }
        let end = prefix.len() - prefix.iter().rev().take_while(|&&b| b == b'/').count();
        out.prefix = Some(prefix[..end].into());
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The bit of `name`'s length (0 for names of 64 bytes or more, which none is).
fn bit(name: &[u8]) -> u64 {
    1u64.checked_shl(name.len() as u32).unwrap_or(0)
}

fn agree_scheme(seen: &mut Option<bool>, https: bool) -> Result<(), HttpError> {
    match *seen {
        Some(before) if before != https => {
            Err(HttpError::BadRequest("contradictory scheme headers"))
        }
        _ => {
            *seen = Some(https);
            Ok(())
        }
    }
}

/// The values of one field, in the order received: most fields come once, and are kept
/// without allocating.
#[derive(Default)]
struct Values<'a> {
    first: Option<&'a [u8]>,
    more: Vec<&'a [u8]>,
}

impl<'a> Values<'a> {
    fn push(&mut self, value: &'a [u8]) {
        match self.first {
            None => self.first = Some(value),
            Some(_) => self.more.push(value),
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn all(&self) -> Vec<&'a [u8]> {
        self.first
            .into_iter()
            .chain(self.more.iter().copied())
            .collect()
    }

    /// The list elements of all the lines, in order.
    fn elements(&self) -> impl DoubleEndedIterator<Item = &'a [u8]> + '_ {
        let lines = self.first.iter().chain(self.more.iter());
        lines
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim)
            .filter(|e| !e.is_empty())
    }

    /// Werkzeug ProxyFix's count: with `n` proxies setting the field, the one nearest the
    /// client put its value `n` from the right; fewer values than that and the field is
    /// not read (a client cannot make up for a proxy that did not set it).
    fn nth_from_right(&self, n: usize) -> Option<&'a [u8]> {
        if n == 0 {
            return None;
        }
        self.elements().rev().nth(n - 1)
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// One hop of a forwarding chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Ip(IpAddr, Option<u16>),
    /// RFC 7239 §6.2 `unknown`, §6.3 an obfuscated identifier, or an element without
    /// `for=`: a hop whose address the proxy does not give.
    Hidden,
}

/// The client, from the hops given right to left with their indexes: the first that is
/// not trusted, with its index; if every hop is trusted, the leftmost. A hidden hop ends
/// the walk without an address (the proxy that knew it did not say): the peer's own
/// stays. A hop that does not read is an error when the walk reaches it.
fn walk(
    nodes: impl Iterator<Item = Result<(usize, Node), HttpError>>,
    trusted: &TrustedNets,
) -> Result<(Option<Client>, Option<usize>), HttpError> {
    let mut last = None;
    for node in nodes {
        let (i, node) = node?;
        match node {
            Node::Hidden => return Ok((None, Some(i))),
            Node::Ip(ip, port) => {
                let client = Client {
                    ip: canonical(ip),
                    port,
                };
                if !trusted.contains(ip) {
                    return Ok((Some(client), Some(i)));
                }
                last = Some((client, i));
            }
        }
    }
    Ok(match last {
        Some((client, i)) => (Some(client), Some(i)),
        None => (None, None),
    })
}

/// An `X-Forwarded-For` entry: `a.b.c.d`, `a.b.c.d:port`, an IPv6 address bare or in
/// brackets, `[v6]:port`, or `unknown`. Anything else (`127.1`, `0x7f.0.0.1`,
/// `0177.0.0.1`, a host name) does not read: the strict dotted-decimal and RFC 4291
/// forms only, so that no address has two spellings.
fn xff_node(entry: &[u8]) -> Option<Node> {
    if entry.eq_ignore_ascii_case(b"unknown") {
        return Some(Node::Hidden);
    }
    // Nearly every entry is a plain IPv4 address: read on a path of its own.
    if let Some(v4) = ipv4(entry) {
        return Some(Node::Ip(IpAddr::V4(v4), None));
    }
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Node::Ip(ip, None));
    }
    ip_and_port(text)
}

/// Strict dotted decimal (RFC 3986 §3.2.2 `IPv4address`): four decimal octets of 0 to 255
/// without leading zeros, as `Ipv4Addr`'s parser reads them.
pub(crate) fn ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let (mut octets, mut at) = ([0u8; 4], 0);
    // The current octet's value and digits.
    let (mut n, mut digits) = (0u16, 0u8);
    for &b in text {
        match b {
            b'0'..=b'9' => {
                // A leading zero is not dotted decimal ("01" reads as octal elsewhere).
                if digits == 3 || (digits == 1 && n == 0) {
                    return None;
                }
                n = n * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && at < 3 => {
                octets[at] = u8::try_from(n).ok()?;
                (at, n, digits) = (at + 1, 0, 0);
            }
            _ => return None,
        }
    }
    if digits == 0 || at != 3 {
        return None;
    }
    octets[3] = u8::try_from(n).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// `a.b.c.d:port`, `[v6]` or `[v6]:port`.
fn ip_and_port(text: &str) -> Option<Node> {
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = v6.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':')?.as_bytes())?),
        };
        return Some(Node::Ip(IpAddr::V6(ip), port));
    }
    let (v4, port) = text.split_once(':')?;
    let ip: Ipv4Addr = v4.parse().ok()?;
    Some(Node::Ip(IpAddr::V4(ip), Some(parse_port(port.as_bytes())?)))
}

/// 1 to 5 digits, at most 65535 (RFC 7239 §6: `port = 1*5DIGIT`).
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One `forwarded-element` (RFC 7239 §4), the parameters qiao reads.
#[derive(Debug)]
struct Element {
    node: Node,
    https: Option<bool>,
    /// `host=` (RFC 7239 §5.3): the Host the proxy received. `by=` (§5.1), the proxy's own
    /// interface, has no place in the environ: checked for form only.
    host: Option<Vec<u8>>,
}

/// RFC 7239 §4:
/// `Forwarded = 1#forwarded-element`,
/// `forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )`,
/// `forwarded-pair = token "=" value`, `value = token / quoted-string`;
/// a parameter occurs at most once per element. Any departure is a 400.
fn parse_forwarded(values: &[&[u8]]) -> Result<Vec<Element>, HttpError> {
    const BAD: HttpError = HttpError::BadRequest("invalid Forwarded header");
    let mut elements = Vec::new();
    for value in values {
        let mut p = Pairs { s: value, i: 0 };
        loop {
            let mut element = Element {
                node: Node::Hidden,
                https: None,
                host: None,
            };
            let (mut has_for, mut has_proto, mut has_by, mut any) = (false, false, false, false);
            // The pairs of one element, up to ',' or the end.
            loop {
                p.skip_ows();
                if p.at(b',') || p.done() {
                    break;
                }
                if p.at(b';') {
                    p.i += 1;
                    continue;
                }
                let name = p.token().ok_or(BAD)?;
                if !p.at(b'=') {
                    return Err(BAD);
                }
                p.i += 1;
                let value = p.value().ok_or(BAD)?;
                any = true;
                if name.eq_ignore_ascii_case(b"for") {
                    if has_for {
                        return Err(BAD);
                    }
                    has_for = true;
                    element.node = forwarded_node(&value).ok_or(BAD)?;
                } else if name.eq_ignore_ascii_case(b"proto") {
                    if has_proto {
                        return Err(BAD);
                    }
                    has_proto = true;
                    // RFC 7239 §5.4: a URI scheme name; qiao serves http and https.
                    element.https = Some(if value.eq_ignore_ascii_case(b"https") {
                        true
                    } else if value.eq_ignore_ascii_case(b"http") {
                        false
                    } else {
                        return Err(BAD);
                    });
                } else if name.eq_ignore_ascii_case(b"host") {
                    // RFC 7239 §5.3: a Host field value (RFC 9110 §7.2).
                    if element.host.is_some() || value.is_empty() || !is_valid_host(&value) {
                        return Err(BAD);
                    }
                    element.host = Some(value);
                } else if name.eq_ignore_ascii_case(b"by") {
                    if has_by {
                        return Err(BAD);
                    }
                    has_by = true;
                    forwarded_node(&value).ok_or(BAD)?;
                }
                p.skip_ows();
                if !(p.at(b';') || p.at(b',') || p.done()) {
                    return Err(BAD);
                }
            }
            // Empty list elements are ignored (RFC 9110 §5.6.1).
            if any {
                elements.push(element);
            }
            if p.done() {
                break;
            }
            p.i += 1; // the ','
        }
    }
    Ok(elements)
}

/// RFC 7239 §6: `node = nodename [ ":" node-port ]`; `nodename = IPv4address /
/// "[" IPv6address "]" / "unknown" / obfnode`; `node-port = port / obfport`.
fn forwarded_node(value: &[u8]) -> Option<Node> {
    let text = std::str::from_utf8(value).ok()?;
    let obfuscated = |s: &str| {
        s.len() > 1
            && s.starts_with('_')
            && s[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    // The name alone, or with an obfuscated port: no address to give.
    let (name, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => match &text[end + 1..] {
                "" => (&text[..=end], None),
                rest => (&text[..=end], Some(rest.strip_prefix(':')?)),
            },
            None => return None,
        }
    } else {
        match text.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        }
    };
    if let Some(p) = port {
        if !obfuscated(p) && parse_port(p.as_bytes()).is_none() {
            return None;
        }
    }
    if name.eq_ignore_ascii_case("unknown") || obfuscated(name) {
        return Some(Node::Hidden);
    }
    let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse().ok()?),
        None => IpAddr::V4(name.parse().ok()?),
    };
    let port = port.and_then(|p| parse_port(p.as_bytes()));
    Some(Node::Ip(ip, port))
}

/// A cursor over one `Forwarded` field value.
struct Pairs<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Pairs<'a> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn at(&self, b: u8) -> bool {
        self.s.get(self.i) == Some(&b)
    }

    fn skip_ows(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| is_tchar(b)) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A token or a quoted-string (RFC 9110 §5.6.4), unquoted.
    fn value(&mut self) -> Option<Vec<u8>> {
        if !self.at(b'"') {
            return self.token().map(<[u8]>::to_vec);
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    let escaped = *self.s.get(self.i + 1)?;
                    out.push(escaped);
                    self.i += 2;
                }
                b => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(items: &[&str]) -> TrustedNets {
        TrustedNets::parse(items).unwrap()
    }

    fn local() -> TrustedNets {
        nets(&["127.0.0.1", "::1"])
    }

    fn run(
        headers: &[(&str, &str)],
        rules: &Rules,
        trusted: &TrustedNets,
    ) -> Result<Option<Forwarded>, HttpError> {
        resolve(
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            rules,
            trusted,
        )
    }

    fn client(
        headers: &[(&str, &str)],
        trusted: &TrustedNets,
    ) -> Result<Option<String>, HttpError> {
        Ok(run(headers, &Rules::default(), trusted)?
            .and_then(|f| f.client)
            .map(|c| match c.port {
                Some(p) => format!("{} {p}", c.ip),
                None => c.ip.to_string(),
            }))
    }

    fn https(headers: &[(&str, &str)]) -> Result<Option<bool>, HttpError> {
        Ok(run(headers, &Rules::default(), &local())?.and_then(|f| f.https))
    }

    #[test]
    fn trusted_nets_match_addresses_and_ranges() {
        let set = nets(&["127.0.0.1", "10.0.0.0/8", "fd00::/8", "::1"]);
        for yes in ["127.0.0.1", "10.1.2.3", "fd12::5", "::1", "::ffff:10.0.0.1"] {
            assert!(set.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "fe80::1", "::2", "::ffff:11.0.0.1"] {
            assert!(!set.contains(no.parse().unwrap()), "{no}");
        }
        assert!(nets(&["*"]).contains("203.0.113.9".parse().unwrap()));
        assert!(nets(&["0.0.0.0/0"]).contains("203.0.113.9".parse().unwrap()));
        assert!(!nets(&[]).contains("127.0.0.1".parse().unwrap()));
        assert!(nets(&["::ffff:10.0.0.0/104"]).contains("10.9.9.9".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "::1/129",
            "localhost",
            "10.0.0.1/x",
        ] {
            assert!(TrustedNets::parse(&[bad]).is_err(), "{bad}");
        }
    }

    /// Nothing forwarded: `None`, and nothing allocated for the result.
    #[test]
    fn no_forwarding_fields_is_none() {
        assert_eq!(
            run(
                &[("Host", "a"), ("Accept", "*/*")],
                &Rules::default(),
                &local()
            ),
            Ok(None)
        );
    }

    /// gunicorn's `secure_scheme_headers`: each field's configured value means https,
    /// another value http.
    #[test]
    fn secure_scheme_headers() {
        assert_eq!(https(&[("X-Forwarded-Proto", "https")]), Ok(Some(true)));
        assert_eq!(https(&[("x-forwarded-proto", "HTTPS")]), Ok(Some(true)));
        assert_eq!(https(&[("X-Forwarded-Proto", "http")]), Ok(Some(false)));
        assert_eq!(https(&[("X-Forwarded-Ssl", "on")]), Ok(Some(true)));
        assert_eq!(https(&[("X-Forwarded-Protocol", "ssl")]), Ok(Some(true)));
        assert_eq!(
            https(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on")]),
            Ok(Some(true))
        );
        // A list: the nearest proxy's (rightmost) value.
        assert_eq!(
            https(&[("X-Forwarded-Proto", "http, https")]),
            Ok(Some(true))
        );
        assert_eq!(
            https(&[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Proto", "http")
            ]),
            Ok(Some(false))
        );
        // '_' names are other fields.
        assert_eq!(https(&[("X_Forwarded_Proto", "https")]), Ok(None));
    }

    /// gunicorn answers 400 to contradictory scheme headers; so does qiao, and a
    /// `Forwarded: proto=` that disagrees with them is the same contradiction.
    #[test]
    fn contradictory_schemes_are_400() {
        let bad = Err(HttpError::BadRequest("contradictory scheme headers"));
        assert_eq!(
            https(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")]),
            bad
        );
        assert_eq!(
            https(&[
                ("X-Forwarded-Proto", "http"),
                ("Forwarded", "for=1.2.3.4;proto=https")
            ]),
            bad
        );
    }

    #[test]
    fn configured_scheme_headers_replace_the_defaults() {
        let rules = Rules {
            secure_scheme_headers: vec![(Box::from(&b"x-scheme"[..]), Box::from(&b"secure"[..]))],
            ..Rules::default()
        };
        let f = run(
            &[("X-Scheme", "secure"), ("X-Forwarded-Proto", "http")],
            &rules,
            &local(),
        );
        assert_eq!(f.unwrap().unwrap().https, Some(true));
    }

    /// The client is the rightmost address not itself trusted.
    #[test]
    fn x_forwarded_for_rightmost_untrusted() {
        let t = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let xff = |v: &str| client(&[("X-Forwarded-For", v)], &t);
        assert_eq!(xff("203.0.113.7"), Ok(Some("203.0.113.7".into())));
        // A client's own forged entries stay left of what the proxy appended.
        assert_eq!(xff("1.1.1.1, 203.0.113.7"), Ok(Some("203.0.113.7".into())));
        // ...and are not read, even when they are not addresses.
        assert_eq!(
            xff("127.1, <script>, 203.0.113.7"),
            Ok(Some("203.0.113.7".into()))
        );
        assert_eq!(
            xff("1.1.1.1, 203.0.113.7, 10.0.0.2"),
            Ok(Some("203.0.113.7".into()))
        );
        // Every hop trusted: the leftmost.
        assert_eq!(xff("10.0.0.3, 127.0.0.1"), Ok(Some("10.0.0.3".into())));
        // Repeated fields are one list (RFC 9110 §5.3), in order.
        assert_eq!(
            client(
                &[
                    ("X-Forwarded-For", "203.0.113.7"),
                    ("x-forwarded-for", "10.0.0.9")
                ],
                &t
            ),
            Ok(Some("203.0.113.7".into()))
        );
        assert_eq!(
            client(
                &[
                    ("X-Forwarded-For", "10.0.0.9"),
                    ("x-forwarded-for", "203.0.113.7")
                ],
                &t
            ),
            Ok(Some("203.0.113.7".into()))
        );
        // Empty elements are ignored (RFC 9110 §5.6.1).
        assert_eq!(xff(" , 203.0.113.7 ,"), Ok(Some("203.0.113.7".into())));
        // Ports and IPv6, normalised.
        assert_eq!(xff("203.0.113.7:4711"), Ok(Some("203.0.113.7 4711".into())));
        assert_eq!(xff("2001:DB8::0:1"), Ok(Some("2001:db8::1".into())));
        assert_eq!(xff("[2001:db8::1]:80"), Ok(Some("2001:db8::1 80".into())));
        assert_eq!(xff("::ffff:203.0.113.7"), Ok(Some("203.0.113.7".into())));
        // `unknown` hides the hop: no address.
        assert_eq!(xff("203.0.113.7, unknown"), Ok(None));
    }

    /// The IPv4 fast path reads exactly what `Ipv4Addr`'s parser reads.
    #[test]
    fn ipv4_matches_std() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "",
            "1.2.3.4 ",
            "a.b.c.d",
            "1.2.3.04",
            "100.200.0.9",
            "999.1.1.1",
            "1.2.3.-4",
            "+1.2.3.4",
        ] {
            assert_eq!(ipv4(text.as_bytes()), text.parse().ok(), "{text:?}");
        }
    }

    /// Obfuscated spellings of an address do not read as one: 400, so that no spelling
    /// of a trusted address can be slipped past the walk.
    #[test]
    fn x_forwarded_for_odd_spellings_are_400() {
        for v in [
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "127.0.0.1.",
            "localhost",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "[::1",
            "::1]",
            "1.2.3.4 5.6.7.8",
            "203.0.113.7;",
        ] {
            assert_eq!(
                client(&[("X-Forwarded-For", v)], &local()),
                Err(HttpError::BadRequest("invalid X-Forwarded-For")),
                "{v}"
            );
        }
    }

    /// RFC 7239 §4 syntax, §5.2 `for`, §5.4 `proto`, §6 node names.
    #[test]
    fn forwarded_field() {
        let t = local();
        let fwd = |v: &str| client(&[("Forwarded", v)], &t);
        assert_eq!(
            fwd("for=192.0.2.60;proto=http;by=203.0.113.43"),
            Ok(Some("192.0.2.60".into()))
        );
        assert_eq!(
            fwd("For=\"[2001:db8:cafe::17]:4711\""),
            Ok(Some("2001:db8:cafe::17 4711".into()))
        );
        assert_eq!(
            fwd("for=192.0.2.43, for=198.51.100.17"),
            Ok(Some("198.51.100.17".into()))
        );
        assert_eq!(
            fwd("for=192.0.2.43, for=127.0.0.1"),
            Ok(Some("192.0.2.43".into()))
        );
        assert_eq!(
            fwd("for=\"192.0.2.43:_port\""),
            Ok(Some("192.0.2.43".into()))
        );
        assert_eq!(fwd("for=unknown"), Ok(None));
        assert_eq!(fwd("for=_hidden, for=127.0.0.1"), Ok(None));
        assert_eq!(fwd("proto=https"), Ok(None));
        assert_eq!(fwd("for=192.0.2.43,,"), Ok(Some("192.0.2.43".into())));
        for bad in [
            "for=[2001:db8::1]",             // IPv6 must be quoted: '[' is not a tchar
            "for=192.0.2.43;for=192.0.2.44", // a parameter twice in one element
            "for",
            "for=",
            "for=\"192.0.2.43",
            "for=192.0.2.43 proto=http",
            "for=localhost",
            "for=127.1",
            "for=\"192.0.2.43:99999\"",
            "for=\"[::1]x\"",
            "proto=ftp",
        ] {
            assert_eq!(
                fwd(bad),
                Err(HttpError::BadRequest("invalid Forwarded header")),
                "{bad}"
            );
        }
    }

    /// The scheme comes from the element the outermost trusted proxy added.
    #[test]
    fn forwarded_proto_from_the_client_hop() {
        let t = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let f = run(
            &[(
                "Forwarded",
                "for=203.0.113.7;proto=https, for=10.0.0.2;proto=http",
            )],
            &Rules {
                secure_scheme_headers: vec![],
                ..Rules::default()
            },
            &t,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.https, Some(true));
        assert_eq!(f.client.unwrap().ip.to_string(), "203.0.113.7");
    }

    /// Two fields naming two different clients: one was let through from the client.
    #[test]
    fn disagreeing_client_fields_are_400() {
        assert_eq!(
            client(
                &[
                    ("X-Forwarded-For", "203.0.113.7"),
                    ("Forwarded", "for=198.51.100.1")
                ],
                &local()
            ),
            Err(HttpError::BadRequest(
                "X-Forwarded-For and Forwarded disagree"
            ))
        );
        assert_eq!(
            client(
                &[
                    ("X-Forwarded-For", "203.0.113.7"),
                    ("Forwarded", "for=203.0.113.7")
                ],
                &local()
            ),
            Ok(Some("203.0.113.7".into()))
        );
    }

    /// RFC 7239 §5.3: `host=` of the outermost trusted proxy's element is the client's
    /// Host, read only with `--forwarded-headers host`; `by=` is checked for form only.
    #[test]
    fn forwarded_host_is_the_outermost_trusted_proxys() {
        let hosts = Rules {
            x_host: 1,
            ..Rules::default()
        };
        // The client's own element (left of the walk's end) names a host it chose.
        let chain = "for=198.51.100.9;host=evil.example, for=203.0.113.7;host=\"example.com:8443\";by=127.0.0.1, for=127.0.0.1;host=internal";
        let f = run(&[("Forwarded", chain)], &hosts, &local())
            .unwrap()
            .unwrap();
        assert_eq!(f.host.as_deref(), Some(&b"example.com:8443"[..]));
        // Without host forwarding enabled, host= changes nothing.
        let f = run(&[("Forwarded", chain)], &Rules::default(), &local())
            .unwrap()
            .unwrap();
        assert_eq!(f.host, None);
        // With X-Forwarded-Host too, the two must agree.
        let both = |xfh: &str| {
            run(
                &[
                    ("Forwarded", "for=203.0.113.7;host=example.com"),
                    ("X-Forwarded-Host", xfh),
                ],
                &hosts,
                &local(),
            )
        };
        assert_eq!(
            both("EXAMPLE.com").unwrap().unwrap().host.as_deref(),
            Some(&b"EXAMPLE.com"[..])
        );
        assert_eq!(
            both("other.example"),
            Err(HttpError::BadRequest(
                "X-Forwarded-Host and Forwarded disagree"
            ))
        );
        for bad in [
            "for=203.0.113.7;host=\"a b\"",
            "for=203.0.113.7;host=",
            "for=203.0.113.7;host=a;host=b",
            "for=203.0.113.7;by=not-a-node",
            "for=203.0.113.7;by=_x;by=_y",
        ] {
            assert_eq!(
                run(&[("Forwarded", bad)], &hosts, &local()),
                Err(HttpError::BadRequest("invalid Forwarded header")),
                "{bad}"
            );
        }
    }

    /// Werkzeug ProxyFix's counting: the value `n` from the right, none if fewer.
    #[test]
    fn host_port_prefix_counted_from_the_right() {
        let rules = Rules {
            x_host: 1,
            x_port: 1,
            x_prefix: 1,
            ..Rules::default()
        };
        let f = run(
            &[
                ("X-Forwarded-Host", "evil.example, example.com"),
                ("X-Forwarded-Port", "443"),
                ("X-Forwarded-Prefix", "/app/"),
            ],
            &rules,
            &local(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.host.as_deref(), Some(&b"example.com"[..]));
        assert_eq!(f.port, Some(443));
        assert_eq!(f.prefix.as_deref(), Some(&b"/app"[..]));

        let two = Rules {
            x_host: 2,
            ..Rules::default()
        };
        let f = run(
            &[("X-Forwarded-Host", "a.example, b.example")],
            &two,
            &local(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.host.as_deref(), Some(&b"a.example"[..]));
        // Fewer values than proxies: unread.
        assert_eq!(
            run(&[("X-Forwarded-Host", "b.example")], &two, &local()),
            Ok(None)
        );
        // Not enabled: unread.
        assert_eq!(
            run(
                &[("X-Forwarded-Host", "b.example")],
                &Rules::default(),
                &local()
            ),
            Ok(None)
        );
    }

    #[test]
    fn malformed_host_port_prefix_are_400() {
        let rules = Rules {
            x_host: 1,
            x_port: 1,
            x_prefix: 1,
            ..Rules::default()
        };
        let bad = |n: &str, v: &str| run(&[(n, v)], &rules, &local()).unwrap_err().detail();
        assert_eq!(bad("X-Forwarded-Host", "a b"), "invalid X-Forwarded-Host");
        assert_eq!(bad("X-Forwarded-Host", "a/b"), "invalid X-Forwarded-Host");
        assert_eq!(bad("X-Forwarded-Port", "70000"), "invalid X-Forwarded-Port");
        assert_eq!(bad("X-Forwarded-Port", "https"), "invalid X-Forwarded-Port");
        assert_eq!(
            bad("X-Forwarded-Prefix", "app"),
            "invalid X-Forwarded-Prefix"
        );
        assert_eq!(
            bad("X-Forwarded-Prefix", "//evil.example"),
            "invalid X-Forwarded-Prefix"
        );
        assert_eq!(
            bad("X-Forwarded-Prefix", "/\\evil.example"),
            "invalid X-Forwarded-Prefix"
        );
    }
}
