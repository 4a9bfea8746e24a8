//! Static files answered by the engine (`--static URL_PREFIX=DIRECTORY`), before any
//! Python runs: a request under a mount's prefix is matched to a file, its preconditions
//! (RFC 9110 §13) and ranges (§14) decided, and the response handed to the connection's
//! response sink as a head and file ranges (sent with `sendfile(2)` over plain TCP, read
//! and encrypted over TLS, framed as DATA over HTTP/2).
//!
//! The parts are pure where they can be: `path` (the request path below a mount),
//! `conditional`, `range`, `negotiate` (precompressed siblings), `naming` (media type,
//! hashed names); `cache` opens the files.

mod cache;
pub mod conditional;
mod naming;
pub mod negotiate;
mod path;
pub mod range;

use std::borrow::Cow;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::http::{reason_phrase, BodyLength, RequestHead};
use crate::wsgi::sink::{ResponseHead, ResponseSink};

use cache::{Asset, Cache, Content, Exhausted, Found, Opened};
use conditional::{Conditions, Decision};
use range::Ranges;

/// `Cache-Control` of a file whose name carries its content's hash: it never changes, so
/// clients may keep it for good (a year is the longest RFC 9111 §5.2.2.1 implementations
/// are expected to honour, WhiteNoise sends ten).
const IMMUTABLE: &str = "max-age=315360000, public, immutable";

/// The methods a static file answers.
const ALLOW: &str = "GET, HEAD, OPTIONS";

/// One `--static URL_PREFIX=DIRECTORY`.
#[derive(Debug)]
struct Mount {
    /// The URL path prefix, without a trailing `/` (empty for `/`).
    prefix: Vec<u8>,
    /// The directory, its real path (links resolved), which every file served must be
    /// inside unless `follow_symlinks`.
    root: PathBuf,
}

/// The static settings, checked once.
#[derive(Debug)]
pub(crate) struct Config {
    /// Longest prefix first, so `/static/admin` wins over `/static`.
    mounts: Vec<Mount>,
    /// `Cache-Control` of files without a hash in their name (`--static-max-age`; none
    /// for 0).
    cache_control: Option<String>,
    /// A directory's `index.html` answers for it.
    index: bool,
    /// A request under a prefix that names no file goes to the application (not 404).
    fallthrough: bool,
    follow_symlinks: bool,
    cache_size: usize,
}

impl Config {
    /// The mounts `(prefix, directory)`; `None` when there are none. An error names the
    /// mount whose directory cannot be used.
    pub(crate) fn new(
        mounts: &[(String, String)],
        max_age: u64,
        index: bool,
        fallthrough: bool,
        follow_symlinks: bool,
        cache_size: usize,
    ) -> Result<Option<Arc<Config>>, String> {
        if mounts.is_empty() {
            return Ok(None);
        }
        let mut checked = Vec::with_capacity(mounts.len());
        for (prefix, dir) in mounts {
            if !prefix.starts_with('/') {
                return Err(format!("{prefix}={dir}: the URL prefix must start with /"));
            }
            let root = Path::new(dir)
                .canonicalize()
                .map_err(|e| format!("{prefix}={dir}: {e}"))?;
            if !root.is_dir() {
                return Err(format!("{prefix}={dir}: not a directory"));
            }
            let prefix = prefix.trim_end_matches('/').as_bytes().to_vec();
            checked.push(Mount { prefix, root });
        }
        checked.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Ok(Some(Arc::new(Config {
            mounts: checked,
            cache_control: (max_age > 0).then(|| format!("max-age={max_age}, public")),
            index,
            fallthrough,
            follow_symlinks,
            cache_size,
        })))
    }
}

/// An event loop's static file server: the settings and its open files.
pub(crate) struct Statics {
    config: Arc<Config>,
    cache: Cache,
}

/// A response ready for a sink.
pub(crate) struct Answer {
    pub(crate) head: ResponseHead,
    pub(crate) length: BodyLength,
    body: Vec<Piece>,
    /// The body bytes sent (for the access log).
    pub(crate) body_bytes: u64,
}

enum Piece {
    Bytes(Vec<u8>),
    /// A range of a small file's bytes, kept in memory by the cache.
    Memory(Rc<[u8]>, usize, usize),
    File(OwnedFd, u64, u64),
}

impl Answer {
    /// Hands the response to `sink`: head, body, end.
    pub(crate) fn deliver(self, sink: &mut dyn ResponseSink) {
        sink.head(&self.head, self.length);
        for piece in self.body {
            match piece {
                Piece::Bytes(b) => sink.bytes(&b),
                Piece::Memory(b, start, len) => sink.bytes(&b[start..start + len]),
                Piece::File(fd, offset, len) => sink.file(fd, offset, len),
            }
        }
        sink.end();
    }
}

/// The fields of a response being made: the status line and field lines of
/// `ResponseHead::lines`.
struct Head(Vec<u8>);

impl Head {
    fn new(status: u16) -> Head {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        v.push(b' ');
        v.extend_from_slice(reason_phrase(status).as_bytes());
        v.extend_from_slice(b"\r\n");
        Head(v)
    }

    fn field(&mut self, name: &str, value: &str) -> &mut Head {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_bytes());
        self.0.extend_from_slice(b"\r\n");
        self
    }
}

/// Counts multipart responses, for boundaries unique within the process.
static BOUNDARIES: AtomicU64 = AtomicU64::new(0);

impl Statics {
    pub(crate) fn new(config: Arc<Config>) -> Statics {
        let cache = Cache::new(config.cache_size, config.follow_symlinks);
        Statics { config, cache }
    }

    /// The answer to `head` if its path is under a mount and the engine answers it;
    /// `None` for the application (not under a mount, or a miss with `fallthrough`).
    pub(crate) fn answer(&self, head: &RequestHead) -> Option<Answer> {
        let asset = match self.locate(head)? {
            Ok(asset) => asset,
            Err(answer) => return Some(answer),
        };
        match head.method() {
            b"GET" | b"HEAD" => Some(
                self.respond(head, &asset)
                    .unwrap_or_else(|_| unavailable(head)),
            ),
            b"OPTIONS" => Some(plain(head, 204, Some(("Allow", ALLOW)))),
            _ => Some(plain(head, 405, Some(("Allow", ALLOW)))),
        }
    }

    /// The file `head` asks for under a mount; `Err` for the engine's own answer (a path
    /// refused, a miss, a directory's redirect), `None` when not under a mount or a miss
    /// goes to the application.
    fn locate(&self, head: &RequestHead) -> Option<Result<Rc<Asset>, Answer>> {
        let path = head.path();
        let (mount, rest) = self.config.mounts.iter().find_map(|m| {
            let rest = path.strip_prefix(m.prefix.as_slice())?;
            (rest.is_empty() || rest[0] == b'/').then_some((m, rest))
        })?;
        let Some(wanted) = path::resolve(rest) else {
            return Some(Err(plain(head, 404, None)));
        };
        let found = match self.cache.lookup(&mount.root, &wanted.relative) {
            Found::Asset(_) if wanted.directory => Found::Missing,
            Found::Directory if self.config.index && !wanted.directory => {
                // As nginx: the directory's URL is the one with a slash.
                let mut location = path.to_vec();
                location.push(b'/');
                if !head.query().is_empty() {
                    location.push(b'?');
                    location.extend_from_slice(head.query());
                }
                let location = String::from_utf8_lossy(&location).into_owned();
                return Some(Err(plain(head, 301, Some(("Location", &location)))));
            }
            Found::Directory if self.config.index => self
                .cache
                .lookup(&mount.root, &wanted.relative.join("index.html")),
            found => found,
        };
        match found {
            Found::Asset(asset) => Some(Ok(asset)),
            Found::Exhausted => Some(Err(unavailable(head))),
            _ if self.config.fallthrough => None,
            _ => Some(Err(plain(head, 404, None))),
        }
    }

    /// A GET or HEAD of `asset`: the representation `Accept-Encoding` picks, the
    /// preconditions, the ranges. `Err` if no descriptor can be had for the body.
    fn respond(&self, head: &RequestHead, asset: &Asset) -> Result<Answer, Exhausted> {
        let available: Vec<_> = asset.encoded.iter().map(|(c, _)| *c).collect();
        let coding = negotiate::choose(field(head, b"accept-encoding").as_deref(), &available);
        let file = coding
            .and_then(|c| asset.encoded.iter().find(|(e, _)| *e == c))
            .map_or(&asset.file, |(_, f)| f);
        let cache_control = if asset.hashed {
            Some(IMMUTABLE)
        } else {
            self.config.cache_control.as_deref()
        };
        // The fields a 200 would carry that a 304 repeats (RFC 9110 §15.4.5).
        let validators = |h: &mut Head| {
            h.field("ETag", &file.validators.etag)
                .field("Last-Modified", &file.last_modified);
            if let Some(cc) = cache_control {
                h.field("Cache-Control", cc);
            }
            if !available.is_empty() {
                h.field("Vary", "Accept-Encoding");
            }
        };
        let inm = field(head, b"if-none-match");
        let im = field(head, b"if-match");
        let conditions = Conditions {
            if_match: im.as_deref(),
            if_none_match: inm.as_deref(),
            if_modified_since: head.header(b"if-modified-since"),
            if_unmodified_since: head.header(b"if-unmodified-since"),
        };
        match conditional::evaluate(&conditions, &file.validators) {
            Decision::Proceed => {}
            Decision::NotModified => {
                let mut h = Head::new(304);
                validators(&mut h);
                return Ok(Answer {
                    head: response_head(304, h),
                    length: BodyLength::None { computed: None },
                    body: Vec::new(),
                    body_bytes: 0,
                });
            }
            Decision::Failed => return Ok(plain(head, 412, None)),
        }
        // RFC 9110 §14.2: Range applies to GET only.
        let is_get = head.method() == b"GET";
        let ranges = match head.header(b"range") {
            Some(value) if is_get => {
                // The second the response's Date will carry.
                let now = crate::http::date::unix_seconds();
                let applies = head
                    .header(b"if-range")
                    .is_none_or(|v| conditional::if_range_holds(v, &file.validators, now));
                if applies {
                    range::parse(value, file.len)
                } else {
                    Ranges::Whole
                }
            }
            _ => Ranges::Whole,
        };
        let content_type = asset.content_type.as_str();
        let mut body = Vec::new();
        let (status, mut h, total) = match ranges {
            Ranges::Unsatisfiable => {
                let unsatisfied = format!("bytes */{}", file.len);
                return Ok(plain(head, 416, Some(("Content-Range", &unsatisfied))));
            }
            Ranges::Whole => {
                let mut h = Head::new(200);
                h.field("Content-Type", content_type);
                if is_get {
                    body.push(send(file, 0, file.len)?);
                }
                (200, h, file.len)
            }
            Ranges::Parts(parts) if parts.len() == 1 => {
                let (first, n) = parts[0];
                let mut h = Head::new(206);
                h.field("Content-Type", content_type)
                    .field("Content-Range", &range::content_range(first, n, file.len));
                body.push(send(file, first, n)?);
                (206, h, n)
            }
            Ranges::Parts(parts) => {
                let boundary = format!("{:020}", BOUNDARIES.fetch_add(1, Ordering::Relaxed));
                let (heads, tail) =
                    range::multipart_frames(&boundary, content_type, &parts, file.len);
                let mut h = Head::new(206);
                let multipart = format!("multipart/byteranges; boundary={boundary}");
                h.field("Content-Type", &multipart);
                let mut total = tail.len() as u64;
                for (part_head, &(first, n)) in heads.into_iter().zip(&parts) {
                    total += part_head.len() as u64 + n;
                    body.push(Piece::Bytes(part_head));
                    body.push(send(file, first, n)?);
                }
                body.push(Piece::Bytes(tail));
                (206, h, total)
            }
        };
        if let Some(c) = coding {
            h.field("Content-Encoding", c.name());
        }
        h.field("Accept-Ranges", "bytes");
        validators(&mut h);
        let (length, body_bytes) = if is_get {
            (BodyLength::Computed(total), total)
        } else {
            (
                BodyLength::None {
                    computed: Some(total),
                },
                0,
            )
        };
        Ok(Answer {
            head: response_head(status, h),
            length,
            body,
            body_bytes,
        })
    }
}

/// A range of `file` for the sink: from memory for a small file, else through a descriptor
/// of its own; `Err` when none can be had (out of descriptors).
fn send(file: &Opened, offset: u64, len: u64) -> Result<Piece, Exhausted> {
    match &file.content {
        Content::Memory(bytes) => Ok(Piece::Memory(bytes.clone(), offset as usize, len as usize)),
        Content::File(f) => {
            let fd = f.try_clone().map_err(|_| Exhausted)?;
            Ok(Piece::File(OwnedFd::from(fd), offset, len))
        }
    }
}

/// RFC 9110 §15.6.4: out of descriptors for now; the client may try again shortly.
fn unavailable(head: &RequestHead) -> Answer {
    plain(head, 503, Some(("Retry-After", "1")))
}

fn response_head(status: u16, h: Head) -> ResponseHead {
    ResponseHead {
        status,
        lines: h.0,
        content_length: None,
        has_date: false,
        has_server: false,
    }
}

/// A response of the server's own with a one-line text body (none for 204, 301 keeps
/// it short too), and `extra` field.
fn plain(head: &RequestHead, status: u16, extra: Option<(&str, &str)>) -> Answer {
    let mut h = Head::new(status);
    if let Some((name, value)) = extra {
        h.field(name, value);
    }
    let text = if status == 204 {
        String::new()
    } else {
        format!("{status} {}\n", reason_phrase(status))
    };
    if !text.is_empty() {
        h.field("Content-Type", "text/plain; charset=utf-8");
    }
    let len = text.len() as u64;
    let is_head = head.method() == b"HEAD";
    let (length, body) = if status == 204 {
        (BodyLength::None { computed: None }, Vec::new())
    } else if is_head {
        (
            BodyLength::None {
                computed: Some(len),
            },
            Vec::new(),
        )
    } else {
        (
            BodyLength::Computed(len),
            vec![Piece::Bytes(text.into_bytes())],
        )
    };
    Answer {
        head: response_head(status, h),
        length,
        body,
        body_bytes: if is_head { 0 } else { len },
    }
}

/// The values of every line of a list-valued field, joined (RFC 9110 §5.3).
fn field<'a>(head: &'a RequestHead, name: &[u8]) -> Option<Cow<'a, [u8]>> {
    let mut values = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = [first, second].join(&b", "[..]);
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v);
    }
    Some(Cow::Owned(joined))
}
