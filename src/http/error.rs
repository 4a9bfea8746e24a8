//! The protocol layer's one error type, and the one place that maps it to an HTTP status.

use std::fmt;

/// Why a request could not be read; every parse failure in `http` is one of these.
///
/// Each variant is answered with a final status and a closed connection: once
/// framing is in doubt, nothing after it on the wire can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400: the message breaks the grammar or a framing rule; the reason is
    /// short, fixed text (for logs and the error body), e.g. "invalid Content-Length".
    BadRequest(&'static str),
    /// 414: the request line is longer than `Limits::max_request_line`.
    UriTooLong,
    /// 431: too many header fields, one field line too long, or the whole head too long.
    HeaderFieldsTooLarge,
    /// 413: the declared (or received) body is larger than `Limits::max_body`.
    PayloadTooLarge,
    /// 501: a feature we do not implement, e.g. a transfer coding other than chunked.
    NotImplemented(&'static str),
    /// 505: a major HTTP version other than 1.
    VersionNotSupported,
}

impl HttpError {
    /// The status code the client is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::UriTooLong => 414,
            HttpError::HeaderFieldsTooLarge => 431,
            HttpError::PayloadTooLarge => 413,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// A short, fixed description of the problem (no client bytes in it, so it
    /// is safe to echo in a response body and a log line).
    pub fn detail(&self) -> &'static str {
        match self {
            HttpError::BadRequest(why) => why,
            HttpError::UriTooLong => "request line too long",
            HttpError::HeaderFieldsTooLarge => "request header fields too large",
            HttpError::PayloadTooLarge => "request body too large",
            HttpError::NotImplemented(what) => what,
            HttpError::VersionNotSupported => "HTTP version not supported",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.detail())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9110 §15.5.1, §15.5.14, §15.5.15, §15.5.20 (RFC 6585 §5 for 431),
    /// §15.6.2, §15.6.6: each error maps to its status code.
    #[test]
    fn status_codes() {
        assert_eq!(HttpError::BadRequest("x").status(), 400);
        assert_eq!(HttpError::PayloadTooLarge.status(), 413);
        assert_eq!(HttpError::UriTooLong.status(), 414);
        assert_eq!(HttpError::HeaderFieldsTooLarge.status(), 431);
        assert_eq!(HttpError::NotImplemented("x").status(), 501);
        assert_eq!(HttpError::VersionNotSupported.status(), 505);
    }

    #[test]
    fn detail_carries_the_reason() {
        assert_eq!(
            HttpError::BadRequest("invalid Content-Length").detail(),
            "invalid Content-Length"
        );
        assert_eq!(
            HttpError::BadRequest("invalid Content-Length").to_string(),
            "400 invalid Content-Length"
        );
    }
}
