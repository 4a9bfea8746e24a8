//! The PROXY protocol header (`--proxy-protocol`) a load balancer's connection begins
//! with, read as the connection is accepted: before TLS (HAProxy's `send-proxy` and cloud
//! load balancers write it in clear, ahead of the ClientHello), before the HTTP/2 preface,
//! and before the first HTTP/1.1 request, so that every kind of connection reads it in
//! the same place.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use crate::http::proxy::{self, ProxyHeader};
use crate::server::conn::READ_BUFFER;
use crate::server::listener::host_port;
use crate::server::transport::{Socket, Transport};
use crate::server::Shared;
use crate::wsgi::environ::Peer;

/// Reads the PROXY header (within the header timeout) and makes the client it names the
/// peer; the bytes read after the header, which begin the connection's own protocol.
/// None (logged; the connection is to be closed without a response) for a missing,
/// malformed or late header.
pub(super) async fn read_header(
    shared: &Shared,
    socket: &Socket,
    peer: &mut Peer,
) -> Option<BytesMut> {
    let deadline = Instant::now() + shared.ctx.settings.header_timeout;
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        match proxy::parse(&buf) {
            Ok(Some((header, used))) => {
                buf.advance(used);
                take(shared, peer, header);
                return Some(buf);
            }
            Ok(None) => {}
            Err(e) => {
                log_closed(shared, peer, e.0);
                return None;
            }
        }
        let read = tokio::time::timeout_at(deadline.into(), socket.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return None,
            Err(_) => {
                log_closed(
                    shared,
                    peer,
                    "no complete PROXY header within --header-timeout",
                );
                return None;
            }
        }
    }
}

/// The client a PROXY header names becomes the connection's peer; whether it is a trusted
/// proxy in turn is decided for it (its forwarding fields are its own).
fn take(shared: &Shared, peer: &mut Peer, header: ProxyHeader) {
    let ProxyHeader::Proxy {
        source,
        destination,
        ssl,
    } = header
    else {
        return; // LOCAL or UNKNOWN: the connection's own addresses stand.
    };
    peer.trusted = shared.ctx.settings.trusted.contains(source.ip());
    peer.remote = host_port(source);
    peer.local = Arc::new(host_port(destination));
    peer.https |= ssl;
}

/// Logs why a connection is closed without a response (a PROXY header or uwsgi packet it
/// should or should not have sent).
pub(super) fn log_closed(shared: &Shared, peer: &Peer, why: &str) {
    shared.ctx.error_log.info(&format!(
        "Closed the connection from {}: {why}",
        peer.shown(),
    ));
}
