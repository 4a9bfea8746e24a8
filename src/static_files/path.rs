//! The request path below a mount, made into a path relative to the mount's directory, or
//! refused: pure, bytes in, a relative path out.
//!
//! The path is percent-decoded once (RFC 3986 §2.1), as nginx does; a `%` the decoding
//! leaves (from `%25`) is then part of a file name, so a double-encoded `..` names a file
//! called `%2e%2e`, never the parent. Empty segments are merged (`a//b` is `a/b`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::http::percent_decode;

/// What is asked for below a mount.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The path below the mount's directory (empty: the directory itself).
    pub(crate) relative: PathBuf,
    /// The request path ended with `/`: a directory is asked for.
    pub(crate) directory: bool,
}

/// The path `rest` (still percent-encoded, what follows the mount's prefix) names below
/// the mount's directory; `None` for a path that is never served: one that would climb
/// out (`..`), names `.`, hides a dotfile or a dot-directory, or carries a NUL byte or a
/// backslash (which some file systems and proxies read as a separator).
pub(crate) fn resolve(rest: &[u8]) -> Option<Wanted> {
    let decoded = percent_decode(rest);
    if decoded.iter().any(|&b| b == 0 || b == b'\\') {
        return None;
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split(|&b| b == b'/') {
        if segment.is_empty() {
            continue;
        }
        // `.` and `..` are dot-segments (RFC 3986 §3.3), dotfiles are hidden: all start so.
        if segment[0] == b'.' {
            return None;
        }
        relative.push(OsStr::from_bytes(segment));
    }
    Some(Wanted {
        relative,
        directory: decoded.is_empty() || decoded.ends_with(b"/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, bool) {
        let w = resolve(raw.as_bytes()).expect("served");
        (w.relative.to_string_lossy().into_owned(), w.directory)
    }

    #[test]
    fn plain_paths_resolve_below_the_mount() {
        assert_eq!(ok("/css/site.css"), ("css/site.css".into(), false));
        assert_eq!(ok("css//site.css"), ("css/site.css".into(), false));
        assert_eq!(ok("/docs/"), ("docs".into(), true));
        assert_eq!(ok(""), ("".into(), true));
        assert_eq!(ok("/a%20b.txt"), ("a b.txt".into(), false));
    }

    /// RFC 3986 §5.2.4 would remove dot-segments; a static path with one is refused
    /// instead, in every spelling.
    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for raw in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/%2e./x",
            "/./x",
            "/a/..",
        ] {
            assert_eq!(resolve(raw.as_bytes()), None, "{raw}");
        }
    }

    /// Decoded once: a double-encoded `..` is a file named `%2e%2e`, which cannot climb.
    #[test]
    fn double_encoding_is_decoded_once() {
        assert_eq!(ok("/%252e%252e/x"), ("%2e%2e/x".into(), false));
    }

    #[test]
    fn nul_backslash_and_dotfiles_are_refused() {
        for raw in [
            "/a%00.txt",
            "/..%5cetc",
            "/a\\b",
            "/a%5Cb",
            "/.env",
            "/.git/config",
            "/%2egit/config",
            "/sub/.htaccess",
        ] {
            assert_eq!(resolve(raw.as_bytes()), None, "{raw}");
        }
    }
}
