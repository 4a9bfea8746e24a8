//! What a file's name says about it: its media type (`mime_guess`'s table, as build.rs
//! writes it), and whether it carries a hash of its content, so that it can be cached for
//! good. Pure.

use std::path::Path;

// NAMES and EXTENSIONS: every extension mime_guess knows and the media type it names first.
include!(concat!(env!("OUT_DIR"), "/media_types.rs"));

/// The `Content-Type` for a file: the type its extension names, `charset=utf-8` for text
/// (what Django's and bundlers' assets are written in), octet-stream when unknown.
pub(crate) fn content_type(path: &Path) -> String {
    let Some(essence) = media_type(path) else {
        return "application/octet-stream".to_string();
    };
    let textual = essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        );
    // No type of the table has parameters (build.rs checks), a charset among them.
    if textual {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

/// The media type (type/subtype, lower-case) the file's extension names, in any case.
fn media_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_lowercase();
    let name = |at: u16, len: u8| &NAMES[usize::from(at)..usize::from(at) + usize::from(len)];
    let i = EXTENSIONS
        .binary_search_by(|&(at, len, _, _)| name(at, len).cmp(ext.as_str()))
        .ok()?;
    let (_, _, at, len) = EXTENSIONS[i];
    Some(name(at, len))
}

/// Whether the file name carries a content hash, the forms tools write: Django's
/// `ManifestStaticFilesStorage` (`site.0123456789ab.css`: 12 hex digits), and bundlers'
/// `[name]-[hash]` / `[name].[hash]` (8 or more letters, digits, `_`). A word such as
/// `datepicker` in `bootstrap-datepicker.js` is not a hash: a hash has a digit, or both
/// cases out of a camel-case word's order (`BoldItalic` in `Roboto-BoldItalic.ttf`, the
/// way font files and components are named, is words: calling it a hash would have
/// clients keep a replaced file for a year).
pub(crate) fn is_hashed(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // The stem before the extension (and before a second one: `x.abc123.min.js` has none).
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    let Some(cut) = stem.rfind(['.', '-']) else {
        return false;
    };
    let hash = &stem[cut + 1..];
    if cut == 0 || hash.len() < 8 {
        return false;
    }
    let word = hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let digit = hash.bytes().any(|b| b.is_ascii_digit());
    let upper = hash.bytes().any(|b| b.is_ascii_uppercase());
    let lower = hash.bytes().any(|b| b.is_ascii_lowercase());
    word && (digit || (upper && lower && !is_camel_case(hash)))
}

/// Capitalised words run together (`SemiBold`, `ExtraLight`): a capital, then two or more
/// lower-case letters, and again.
fn is_camel_case(s: &str) -> bool {
    let b = s.as_bytes();
    let mut at = 0;
    while at < b.len() {
        let lower = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_lowercase())
            .count();
        if !b[at].is_ascii_uppercase() || lower < 2 {
            return false;
        }
        at += 1 + lower;
    }
    !b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let t = |p: &str| content_type(Path::new(p));
        assert_eq!(t("a.css"), "text/css; charset=utf-8");
        assert_eq!(t("a.html"), "text/html; charset=utf-8");
        assert!(t("a.js").contains("javascript") && t("a.js").ends_with("; charset=utf-8"));
        assert_eq!(t("a.png"), "image/png");
        assert_eq!(t("a.woff2"), "font/woff2");
        assert_eq!(t("a.svg"), "image/svg+xml; charset=utf-8");
        assert_eq!(t("a.unknownext"), "application/octet-stream");
        assert_eq!(t("README"), "application/octet-stream");
    }

    /// The table answers as mime_guess, which the engine asked until the table was
    /// written from it: for every extension it knows, in lower and upper case.
    #[test]
    fn content_types_are_mime_guess_s() {
        let before = |path: &Path| {
            let Some(mime) = mime_guess::from_path(path).first() else {
                return "application/octet-stream".to_string();
            };
            let textual = mime.type_() == mime_guess::mime::TEXT
                || matches!(
                    mime.essence_str(),
                    "application/javascript"
                        | "application/json"
                        | "application/xml"
                        | "image/svg+xml"
                );
            if textual && mime.get_param("charset").is_none() {
                format!("{}; charset=utf-8", mime.essence_str())
            } else {
                mime.essence_str().to_string()
            }
        };
        let all = mime_guess::get_extensions("*", "*").unwrap();
        assert!(all.len() > 1000, "{}", all.len());
        for ext in all {
            for name in [format!("f.{ext}"), format!("f.{}", ext.to_uppercase())] {
                let path = Path::new(&name);
                assert_eq!(content_type(path), before(path), "{name}");
            }
        }
        for name in [
            "f.nosuchext",
            "f.",
            "f",
            ".htaccess",
            "f.tar.gz",
            "f.\u{212A}ML",
        ] {
            let path = Path::new(name);
            assert_eq!(content_type(path), before(path), "{name}");
        }
    }

    #[test]
    fn hashed_names() {
        let h = |p: &str| is_hashed(Path::new(p));
        assert!(h("css/base.5af66c1b1797.css"));
        assert!(h("admin/js/core.0123456789ab.js"));
        assert!(h("assets/index-BxK3a9_2.js"));
        assert!(h("assets/index-DfGhJkLm.js"));
        assert!(h("main.3f2a9c1e7b.js"));
        assert!(!h("css/base.css"));
        assert!(!h("js/bootstrap-datepicker.js"));
        assert!(!h("js/jquery-3.7.1.min.js"));
        assert!(!h("vendor/abc.js"));
        assert!(!h(".12345678.js"));
    }

    /// Font and component files named in capitalised words are not hashed: they get the
    /// configured max-age, not a year's `immutable` (RFC 9111 §5.2.2.1), so a replaced
    /// file reaches clients.
    #[test]
    fn camel_case_words_are_not_hashes() {
        let h = |p: &str| is_hashed(Path::new(p));
        for name in [
            "fonts/Roboto-BoldItalic.ttf",
            "fonts/OpenSans-SemiBold.woff2",
            "fonts/Inter-ExtraLight.woff2",
            "img/logo-DarkMode.svg",
        ] {
            assert!(!h(name), "{name}");
        }
        assert!(h("assets/index-BxKqWzPa.js"), "a hash of letters only");
    }
}
