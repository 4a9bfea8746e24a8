//! The responses the server writes on its own, without the application: refusals,
//! timeouts, a failed app's 500 and the interim `100 Continue`. The one writer of them.

use super::date::write_http_date;
use super::error::HttpError;
use super::response::reason_phrase;

/// A response the server makes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canned {
    /// A request refused for its framing, size or grammar (4xx/5xx from `HttpError`).
    Refused(HttpError),
    /// RFC 9110 §15.5.9: the request did not arrive in time.
    RequestTimeout,
    /// A request body that could not be stored (spool file, memory).
    BodyNotStored,
    /// The application failed before its response's head went out.
    InternalError,
    /// RFC 9110 §15.2.1: the interim response a client that sent `Expect: 100-continue`
    /// waits for before its body.
    Continue,
}

impl Canned {
    /// The status code it answers with.
    pub fn status(&self) -> u16 {
        match self {
            Canned::Refused(e) => e.status(),
            Canned::RequestTimeout => 408,
            Canned::BodyNotStored | Canned::InternalError => 500,
            Canned::Continue => 100,
        }
    }

    /// Appends the whole response to `out`. Every final one closes the connection and
    /// carries a one-line plain-text body naming the problem (none for a HEAD request).
    pub fn write(self, head_request: bool, out: &mut Vec<u8>) {
        if self == Canned::Continue {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            return;
        }
        let code = self.status();
        let reason = reason_phrase(code).as_bytes();
        let mut body = Vec::with_capacity(80);
        self.write_body(&mut body);
        out.reserve(160 + reason.len() + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\nConnection: close\r\nDate: ");
        write_http_date(out);
        out.extend_from_slice(b"\r\nServer: qiao\r\n\r\n");
        if !head_request {
            out.extend_from_slice(&body);
        }
    }

    /// Appends the body of a final response: `<code> <reason>[: <detail>]\n`, what every
    /// protocol's canned answer carries (HTTP/1.1 above, HTTP/2 streams).
    pub fn write_body(self, out: &mut Vec<u8>) {
        let code = self.status();
        out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(code).as_bytes());
        let detail: &[u8] = match self {
            Canned::Refused(e) => e.detail().as_bytes(),
            Canned::BodyNotStored => b"the request body could not be stored",
            _ => b"",
        };
        if !detail.is_empty() {
            out.extend_from_slice(b": ");
            out.extend_from_slice(detail);
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: Canned, head_request: bool) -> (String, String) {
        let mut out = Vec::new();
        c.write(head_request, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }

    /// A refusal is complete and self-delimited, closes, and names the problem.
    #[test]
    fn refusals() {
        let (head, body) = text(
            Canned::Refused(HttpError::BadRequest("invalid Content-Length")),
            false,
        );
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 400 Bad Request");
        assert_eq!(lines[1], "Content-Type: text/plain; charset=utf-8");
        assert_eq!(lines[2], format!("Content-Length: {}", body.len()));
        assert_eq!(lines[3], "Connection: close");
        assert!(lines[4].starts_with("Date: ") && lines[4].ends_with(" GMT"));
        assert_eq!(lines[5], "Server: qiao");
        assert_eq!(body, "400 Bad Request: invalid Content-Length\n");
        for e in [
            HttpError::UriTooLong,
            HttpError::HeaderFieldsTooLarge,
            HttpError::PayloadTooLarge,
            HttpError::NotImplemented("unsupported transfer coding"),
            HttpError::VersionNotSupported,
        ] {
            let (head, body) = text(Canned::Refused(e), false);
            assert!(head.starts_with(&format!(
                "HTTP/1.1 {} {}\r\n",
                e.status(),
                reason_phrase(e.status())
            )));
            assert!(head.contains(&format!("\r\nContent-Length: {}\r", body.len())));
            assert!(body.contains(e.detail()));
        }
    }

    /// RFC 9110 §15.5.9 and §15.6.1: the server's own 408 and 500s.
    #[test]
    fn timeouts_and_server_errors() {
        let (head, body) = text(Canned::RequestTimeout, false);
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert_eq!(body, "408 Request Timeout\n");
        let (head, body) = text(Canned::InternalError, false);
        assert!(head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(head.contains("Connection: close"));
        assert_eq!(body, "500 Internal Server Error\n");
        let (_, body) = text(Canned::BodyNotStored, false);
        assert!(body.starts_with("500 Internal Server Error: "));
    }

    /// RFC 9110 §9.3.2: a HEAD request's answer has no body, but the length GET's would.
    #[test]
    fn head_requests_get_no_body() {
        let (head, body) = text(Canned::InternalError, true);
        assert!(head.contains("Content-Length: 26"), "{head}");
        assert_eq!(body, "");
    }

    /// RFC 9110 §15.2.1: 100 Continue is a status line and an empty header section.
    #[test]
    fn continue_is_interim() {
        let mut out = Vec::new();
        Canned::Continue.write(false, &mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
