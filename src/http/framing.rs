//! How an HTTP/1.1 response's body is delimited (RFC 9112 §6): the choice made when the
//! head goes out, the fields that announce it, the bytes around each block, and how the
//! body ends; and the canned 500. Bytes in, bytes out.

use super::chunked::encode_chunk_header;
use super::date::write_http_date;
use super::LAST_CHUNK;

/// How long the body a head announces is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body follows (HEAD, 1xx, 204, 304); `computed` is the length the server can
    /// tell for a HEAD response whose head has none (RFC 9110 §9.3.2: the fields GET
    /// would have had).
    None { computed: Option<u64> },
    /// The head's own `Content-Length` (the application's).
    Declared(u64),
    /// A length the server computed (a list of bytes, a file), to be announced.
    Computed(u64),
    /// Not known before the end of the body.
    Unknown,
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Complete and delimited: the connection may carry another response.
    Clean,
    /// Complete, but only the connection's close delimits it.
    CloseDelimited,
}

/// How one response's body is delimited on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// `Transfer-Encoding: chunked`: each block is framed, and a last chunk ends the body.
    chunked: bool,
    /// The body ends with the connection (RFC 9112 §6.3 (8)).
    close_delimited: bool,
    /// The head said the connection stays open.
    keep_alive: bool,
}

impl Framing {
    /// Chooses the framing for a response to an HTTP/1.1 client (`http11`) or an
    /// HTTP/1.0 one, and appends the server's fields and the blank line that ends the
    /// head: the length, `Date` and `Server` where the head lacks them, `Connection`.
    /// `keep_alive`: whether the connection may persist after this response, as far as
    /// everything but the framing is concerned.
    pub fn start(
        http11: bool,
        length: BodyLength,
        has_date: bool,
        has_server: bool,
        keep_alive: bool,
        head: &mut Vec<u8>,
    ) -> Framing {
        let mut framing = Framing {
            chunked: false,
            close_delimited: false,
            keep_alive,
        };
        let announce = match length {
            BodyLength::None { computed } => computed,
            BodyLength::Declared(_) => None,
            BodyLength::Computed(n) => Some(n),
            BodyLength::Unknown if http11 => {
                framing.chunked = true;
                None
            }
            BodyLength::Unknown => {
                // RFC 9112 §6.3 (8): without a length an HTTP/1.0 body ends when the
                // connection does.
                framing.close_delimited = true;
                framing.keep_alive = false;
                None
            }
        };
        if let Some(n) = announce {
            head.extend_from_slice(b"Content-Length: ");
            head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if framing.chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !has_date {
            head.extend_from_slice(b"Date: ");
            write_http_date(head);
            head.extend_from_slice(b"\r\n");
        }
        if !has_server {
            head.extend_from_slice(b"Server: qiao\r\n");
        }
        // RFC 9112 §9.6: a server that will close says so; RFC 9112 §9.3: an HTTP/1.0
        // client keeps the connection only if told it persists.
        if !framing.keep_alive {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if !http11 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");
        framing
    }

    /// Appends the chunk-size line that goes before a block of `len` bytes, when the body
    /// is chunked (then the block is followed by `CHUNK_END`): whether it did. An empty
    /// block gets none: a zero-size chunk would end the body.
    pub fn chunk_header(&self, len: usize, out: &mut Vec<u8>) -> bool {
        if !self.chunked || len == 0 {
            return false;
        }
        encode_chunk_header(len, out);
        true
    }

    /// Ends the body: appends the last chunk where there is one, and says how it ended.
    pub fn end(&self, out: &mut Vec<u8>) -> End {
        if self.chunked {
            out.extend_from_slice(LAST_CHUNK);
        }
        if self.close_delimited {
            End::CloseDelimited
        } else {
            End::Clean
        }
    }

    /// Whether each block is framed as a chunk.
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// Whether the head said the connection persists.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields `start` appends, as text, for a head with its own Date and Server.
    fn fields(http11: bool, length: BodyLength, keep: bool) -> (String, Framing) {
        let mut head = Vec::new();
        let framing = Framing::start(http11, length, true, true, keep, &mut head);
        (String::from_utf8(head).unwrap(), framing)
    }

    /// PEP 3333 "Handling the Content-Length Header": the server may compute it.
    #[test]
    fn a_computed_length_is_announced() {
        let (text, f) = fields(true, BodyLength::Computed(5), true);
        assert_eq!(text, "Content-Length: 5\r\n\r\n");
        assert_eq!(f.end(&mut Vec::new()), End::Clean);
        let (text, _) = fields(true, BodyLength::Declared(5), true);
        assert_eq!(text, "\r\n", "the head's own Content-Length stands alone");
    }

    /// RFC 9112 §7.1: an unknown length to an HTTP/1.1 client is chunked, each block
    /// framed, and the last chunk ends it.
    #[test]
    fn an_unknown_length_is_chunked_on_http11() {
        let (text, f) = fields(true, BodyLength::Unknown, true);
        assert_eq!(text, "Transfer-Encoding: chunked\r\n\r\n");
        let mut out = Vec::new();
        assert!(f.chunk_header(10, &mut out));
        assert_eq!(out, b"a\r\n");
        assert!(
            !f.chunk_header(0, &mut out),
            "an empty chunk would end the body"
        );
        let mut tail = Vec::new();
        assert_eq!(f.end(&mut tail), End::Clean);
        assert_eq!(tail, LAST_CHUNK);
    }

    /// RFC 9112 §6.3 (8): without a length an HTTP/1.0 body ends with the connection, and
    /// the head says the connection closes.
    #[test]
    fn an_unknown_length_closes_on_http10() {
        let (text, f) = fields(false, BodyLength::Unknown, true);
        assert_eq!(text, "Connection: close\r\n\r\n");
        assert!(!f.keep_alive());
        assert!(!f.chunk_header(3, &mut Vec::new()));
        assert_eq!(f.end(&mut Vec::new()), End::CloseDelimited);
    }

    /// RFC 9112 §9.3: an HTTP/1.0 client keeps the connection only when told so.
    #[test]
    fn http10_keep_alive_is_announced() {
        let (text, f) = fields(false, BodyLength::Computed(2), true);
        assert_eq!(text, "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n");
        assert!(f.keep_alive());
    }

    /// RFC 9110 §9.3.2 and §6.4.1: a HEAD response announces the length GET would have
    /// had; 204 and 304 announce nothing.
    #[test]
    fn responses_without_a_body() {
        let (text, _) = fields(true, BodyLength::None { computed: Some(5) }, true);
        assert_eq!(text, "Content-Length: 5\r\n\r\n");
        let (text, f) = fields(true, BodyLength::None { computed: None }, true);
        assert_eq!(text, "\r\n");
        assert_eq!(f.end(&mut Vec::new()), End::Clean);
    }

    /// The server's own fields are added only where the head lacks them, and a closing
    /// connection says so (RFC 9112 §9.6).
    #[test]
    fn date_server_and_close() {
        let mut head = Vec::new();
        let f = Framing::start(
            true,
            BodyLength::Computed(0),
            false,
            false,
            false,
            &mut head,
        );
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("Content-Length: 0\r\nDate: "), "{text}");
        assert!(text.ends_with("GMT\r\nServer: qiao\r\nConnection: close\r\n\r\n"));
        assert!(!f.keep_alive());
    }
}
