//! A TLS stream over a `Socket` (rustls): the handshake when the connection is accepted,
//! then the same `Transport` as plain TCP. Records are decrypted into the connection's
//! read buffer; the output queue, memory and file ranges alike, is encrypted as the socket
//! takes it (a file range is read here and encrypted: `sendfile` cannot encrypt).

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use rustls::{ServerConfig, ServerConnection};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::http::{Canned, HttpError};
use crate::server::h2::io::NonBlocking;
use crate::server::outbuf::OutBuf;
use crate::server::transport::{RawSocket, Socket, Transport, Wire};
use crate::sys;
use crate::tls::SessionInfo;

/// How much of a file range one write reads to encrypt (rustls takes plaintext up to its
/// buffer limit beyond what the socket took; the rest is read again at the next write).
const FILE_CHUNK: usize = 64 * 1024;

/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1): what a
/// ClientHello starts with. Anything else on a TLS port is not TLS.
const HANDSHAKE_RECORD: u8 = 0x16;

/// One TLS connection: the socket and the session's state, which every read and write
/// goes through.
pub(super) struct TlsStream {
    socket: Socket,
    /// Locked only for non-blocking steps, never across a wait. Two threads may use the
    /// stream in turn (the event loop, and the writer thread while the stream is lent to
    /// it), never at once.
    session: Mutex<Session>,
}

struct Session {
    conn: ServerConnection,
    /// `close_notify` is queued: nothing more is encrypted.
    closing: bool,
    /// Where a file range is read before it is encrypted; made at the first one.
    file_chunk: Vec<u8>,
}

/// Why a connection ended before its TLS session began.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// The client spoke plain HTTP to the TLS port; it was answered with a 400.
    PlainHttp,
    /// The handshake failed (an alert was sent where one could be) or the socket did.
    Failed(io::Error),
}

impl TlsStream {
    /// Completes the handshake on a just-accepted socket: the stream, and what the environ
    /// reports of its session.
    /// The handshake on `socket`, `first` the bytes of it already read (what followed a
    /// PROXY header; empty for most connections).
    pub(super) async fn accept(
        socket: Socket,
        first: BytesMut,
        config: Arc<ServerConfig>,
    ) -> Result<(TlsStream, SessionInfo), HandshakeError> {
        let conn = ServerConnection::new(config)
            .map_err(|e| HandshakeError::Failed(io::Error::other(e)))?;
        let stream = TlsStream {
            socket,
            session: Mutex::new(Session {
                conn,
                closing: false,
                file_chunk: Vec::new(),
            }),
        };
        stream.first_record(first).await?;
        loop {
            let (handshaking, wants_write) = {
                let s = stream.lock();
                (s.conn.is_handshaking(), s.conn.wants_write())
            };
            if wants_write {
                stream
                    .push_records()
                    .await
                    .map_err(HandshakeError::Failed)?;
            } else if handshaking {
                stream
                    .pull_records()
                    .await
                    .map_err(HandshakeError::Failed)?;
            } else {
                break;
            }
        }
        let info = SessionInfo::of(&stream.lock().conn);
        Ok((stream, info))
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the connection's first bytes and hands them to rustls, unless they are not a
    /// TLS record: a client that speaks plain HTTP to the TLS port gets a 400 in plain
    /// HTTP saying so, rather than a TLS alert it cannot read.
    async fn first_record(&self, mut first: BytesMut) -> Result<(), HandshakeError> {
        if first.is_empty() {
            first.reserve(1024);
            let n = self
                .socket
                .read(&mut first)
                .await
                .map_err(HandshakeError::Failed)?;
            if n == 0 {
                return Err(HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        if first[0] != HANDSHAKE_RECORD {
            let mut answer = Vec::new();
            Canned::Refused(HttpError::BadRequest(
                "plain HTTP was sent to a TLS port; use https://",
            ))
            .write(false, &mut answer);
            let _ = Wire(self.socket.fd()).write(&answer);
            sys::shutdown(self.socket.fd(), sys::Side::Write);
            return Err(HandshakeError::PlainHttp);
        }
        let mut session = self.lock();
        let mut bytes = &first[..];
        while !bytes.is_empty() {
            session
                .conn
                .read_tls(&mut bytes)
                .map_err(HandshakeError::Failed)?;
        }
        self.process_here(&mut session)
            .map(drop)
            .map_err(HandshakeError::Failed)
    }

    /// Reads what records have arrived and processes them, waiting in the event loop
    /// until some do; `UnexpectedEof` if the client closed.
    async fn pull_records(&self) -> io::Result<()> {
        let io = self.socket.io()?;
        io.async_io(Interest::READABLE, |_| {
            let mut session = self.lock();
            let n = session.conn.read_tls(&mut Wire(self.socket.fd()))?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.process_here(&mut session).map(drop)
        })
        .await
    }

    /// Lets rustls process the records it has read; on an error, sends the alert it made
    /// (best effort) and fails.
    fn process_here(&self, session: &mut Session) -> io::Result<rustls::IoState> {
        session.conn.process_new_packets().map_err(|e| {
            let _ = session.conn.write_tls(&mut Wire(self.socket.fd()));
            io::Error::new(io::ErrorKind::InvalidData, e)
        })
    }

    /// Writes the records rustls holds, waiting in the event loop while the socket is full.
    async fn push_records(&self) -> io::Result<()> {
        if self.flush_records(&mut self.lock())? {
            return Ok(());
        }
        let io = self.socket.io()?;
        io.async_io(Interest::WRITABLE, |_| {
            if self.flush_records(&mut self.lock())? {
                Ok(())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        })
        .await
    }

    /// Writes the records rustls holds, as far as the socket takes them now: true once all
    /// are written.
    fn flush_records(&self, session: &mut Session) -> io::Result<bool> {
        while session.conn.wants_write() {
            match session.conn.write_tls(&mut Wire(self.socket.fd())) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Hands rustls plaintext from the front of `out` to encrypt: how many bytes it took
    /// (0 once its buffer is full).
    fn encrypt_front(session: &mut Session, out: &mut OutBuf) -> io::Result<usize> {
        let n = if let Some((file, offset, len)) = out.front_file() {
            let want = len.min(FILE_CHUNK);
            let chunk = &mut session.file_chunk;
            chunk.resize(want, 0);
            let read = sys::pread(file, &mut chunk[..want], offset)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its announced length",
                ));
            }
            session.conn.writer().write(&session.file_chunk[..read])?
        } else {
            session.conn.writer().write_vectored(&out.slices())?
        };
        out.advance(n);
        Ok(n)
    }
}

impl Transport for TlsStream {
    async fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            {
                let mut session = self.lock();
                let state = self.process_here(&mut session)?;
                let ready = state.plaintext_bytes_to_read().min(buf.len());
                if ready > 0 {
                    let plain = &mut buf[..ready];
                    plain.fill(MaybeUninit::new(0));
                    // SAFETY: every byte of `plain` was just initialised.
                    let plain = unsafe { &mut *(plain as *mut [MaybeUninit<u8>] as *mut [u8]) };
                    return session.conn.reader().read(plain);
                }
                if state.peer_has_closed() {
                    return Ok(0);
                }
                // Records rustls made on its own (a key update's answer) go out now.
                self.flush_records(&mut session)?;
            }
            match self.pull_records().await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts from the front of `out` and writes the records, as long as the socket
    /// takes them: records it did not take stay with the stream (`holds_output`), and no
    /// more is encrypted until they are written.
    ///
    /// `last`: once `out` is all encrypted, `close_notify` (RFC 8446 §6.1) is queued behind
    /// it, so that the writes that see the response out see the alert out too (queued at
    /// the shutdown instead, it would be lost whenever the response filled the socket).
    fn try_write(&self, out: &mut OutBuf, last: bool) -> io::Result<usize> {
        let mut session = self.lock();
        if !self.flush_records(&mut session)? {
            return Ok(0);
        }
        let mut taken = 0;
        while !out.is_empty() {
            let n = Self::encrypt_front(&mut session, out)?;
            taken += n;
            if n == 0 || !self.flush_records(&mut session)? {
                break;
            }
        }
        if last && out.is_empty() && !session.closing {
            session.closing = true;
            session.conn.send_close_notify();
            self.flush_records(&mut session)?;
        }
        Ok(taken)
    }

    async fn write(&self, out: &mut OutBuf, last: bool) -> io::Result<usize> {
        match self.try_write(out, last)? {
            0 if !self.drained(out) => {}
            n => return Ok(n),
        }
        self.socket
            .io()?
            .async_io(Interest::WRITABLE, |_| match self.try_write(out, last) {
                Ok(0) if !self.drained(out) => Err(io::ErrorKind::WouldBlock.into()),
                other => other,
            })
            .await
    }

    fn holds_output(&self) -> bool {
        self.lock().conn.wants_write()
    }

    fn wait_writable(&self, deadline: Instant) -> io::Result<()> {
        sys::wait_writable(self.socket.fd(), deadline)
    }

    /// Sends `close_notify` ahead of the TCP shutdown, unless the last write queued it, as
    /// far as the socket takes it now.
    fn shutdown_write(&self) {
        {
            let mut session = self.lock();
            if !session.closing {
                session.closing = true;
                session.conn.send_close_notify();
            }
            let _ = self.flush_records(&mut session);
        }
        self.socket.shutdown_write();
    }

    fn read_handle(&self) -> Option<RawFd> {
        Some(self.socket.fd().as_raw_fd())
    }
}

impl NonBlocking for TlsStream {
    fn registration(&self) -> io::Result<&AsyncFd<RawSocket>> {
        self.socket.io()
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut session = self.lock();
        loop {
            let state = self.process_here(&mut session)?;
            if state.plaintext_bytes_to_read() > 0 {
                return session.conn.reader().read(buf);
            }
            if state.peer_has_closed() {
                return Ok(0);
            }
            self.flush_records(&mut session)?;
            if session.conn.read_tls(&mut Wire(self.socket.fd()))? == 0 {
                return Ok(0);
            }
        }
    }

    fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        let mut session = self.lock();
        let n = session.conn.writer().write(data)?;
        self.flush_records(&mut session)?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush_now(&self) -> io::Result<()> {
        if self.flush_records(&mut self.lock())? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn close_now(&self) {
        self.shutdown_write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::transport::tests::pair;
    use bytes::BytesMut;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, StreamOwned};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// A server configuration, and a client configuration that trusts its certificate.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = issued.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key))
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// The client's end of the session, blocking.
    fn client(
        sock: UnixStream,
        config: Arc<ClientConfig>,
    ) -> StreamOwned<ClientConnection, UnixStream> {
        let name = ServerName::try_from("localhost").unwrap();
        StreamOwned::new(ClientConnection::new(config, name).unwrap(), sock)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Writes all of `out` (and what the stream holds of it); `last`: and `close_notify`.
    async fn write_all(stream: &TlsStream, out: &mut OutBuf, last: bool) {
        while !stream.drained(out) {
            stream.write(out, last).await.unwrap();
        }
    }

    #[test]
    fn a_request_and_its_response_cross_the_session() {
        let (server_config, client_config) = configs();
        let (sock, peer) = pair();
        let client = std::thread::spawn(move || {
            let mut tls = client(peer, client_config);
            tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut got = Vec::new();
            // The server's close_notify ends the stream cleanly.
            tls.read_to_end(&mut got).unwrap();
            got
        });
        runtime().block_on(async {
            let (stream, session) = TlsStream::accept(sock, BytesMut::new(), server_config)
                .await
                .unwrap();
            assert_eq!(session.protocol, "TLSv1.3");
            assert!(session.cipher.starts_with("TLS13_"), "{}", session.cipher);
            assert!(session.client.is_none());
            let mut request = BytesMut::new();
            while !request.ends_with(b"\r\n\r\n") {
                assert!(stream.read(&mut request).await.unwrap() > 0);
            }
            assert_eq!(&request[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut out = OutBuf::default();
            out.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
            write_all(&stream, &mut out, false).await;
            stream.shutdown_write();
        });
        assert_eq!(
            client.join().unwrap(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    /// When the socket is full, the records already made wait with the stream: `try_write`
    /// takes nothing more, `holds_output` says so, and the bytes (a file range among them,
    /// read and encrypted) arrive whole and in order once the client reads.
    #[test]
    fn records_wait_with_the_stream_until_the_socket_takes_them() {
        let (server_config, client_config) = configs();
        let (sock, peer) = pair();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut tls = client(peer, client_config);
            tls.write_all(b"go").unwrap();
            wait.recv().unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got).unwrap();
            got
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        runtime().block_on(async {
            let (stream, _) = TlsStream::accept(sock, BytesMut::new(), server_config)
                .await
                .unwrap();
            let mut request = BytesMut::new();
            while request.len() < 2 {
                stream.read(&mut request).await.unwrap();
            }
            let mut out = OutBuf::default();
            out.extend(&data[..1_000_000]);
            out.push_file(OwnedFd::from(file), 1_000_000, 2_000_000);
            loop {
                if stream.try_write(&mut out, false).unwrap() == 0 {
                    break;
                }
            }
            assert!(
                stream.holds_output(),
                "a zero write means records are waiting"
            );
            assert!(!stream.drained(&out));
            go.send(()).unwrap();
            write_all(&stream, &mut out, true).await;
            stream.shutdown_write();
        });
        let got = client.join().unwrap();
        assert!(got == data, "the bytes arrived altered or out of order");
    }

    #[test]
    fn plain_http_is_answered_with_a_400_in_plain_http() {
        let (server_config, _) = configs();
        let (sock, mut peer) = pair();
        peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let result = runtime().block_on(TlsStream::accept(sock, BytesMut::new(), server_config));
        assert!(matches!(result, Err(HandshakeError::PlainHttp)));
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }

    /// RFC 8446 §6: a malformed handshake is answered with a fatal alert (a record of
    /// content type 21) and the session fails.
    #[test]
    fn a_malformed_hello_gets_an_alert() {
        let (server_config, _) = configs();
        let (sock, mut peer) = pair();
        // A handshake record holding a ClientHello of four bytes, which cannot be one.
        let record = [
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff,
        ];
        peer.write_all(&record).unwrap();
        let result = runtime().block_on(TlsStream::accept(sock, BytesMut::new(), server_config));
        assert!(matches!(result, Err(HandshakeError::Failed(_))));
        let mut answer = [0u8; 1];
        peer.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], 21, "an alert record");
    }
}
