//! Pure HTTP/1.x protocol code: request heads, chunked bodies, response helpers; bytes in, values out.

pub mod canned;
pub mod chunked;
pub mod date;
pub mod error;
pub mod forwarded;
pub mod framing;
pub mod proxy;
pub mod request;
pub mod response;
#[cfg(test)]
pub mod testing;
pub mod uwsgi;

pub use canned::Canned;
pub use chunked::{encode_chunk_header, ChunkedDecoder, LAST_CHUNK};
pub use date::{format_imf_fixdate, write_http_date};
pub use error::HttpError;
pub use framing::{BodyLength, Framing};
pub use request::{
    parse_content_length, parse_head, percent_decode, BodyFraming, Limits, RequestHead, Version,
};
pub use response::{
    body_allowed, is_hop_by_hop, is_token, is_valid_field_value, parse_status, reason_phrase,
};

#[cfg(test)]
mod conformance;
