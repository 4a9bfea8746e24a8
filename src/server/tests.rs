//! The connection tested without a socket: an in-memory transport plays the client, a
//! Python app defined in each test plays the application (framing, persistence,
//! pipelining, backpressure, refusals).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::sync::{watch, Notify};
use tokio::task::LocalSet;

use crate::server::conn::Connection;
use crate::server::outbuf::OutBuf;
use crate::server::pool::Pool;
use crate::server::transport::Transport;
use crate::server::{Admission, Shared};
use crate::wsgi::environ::{HostPort, Peer};
use crate::wsgi::testing::{app_global, context, settings};

/// What the in-memory "socket" holds.
#[derive(Default)]
struct Wire {
    /// Sent by the client, not yet read by the connection.
    input: VecDeque<u8>,
    /// The client closed its side.
    eof: bool,
    /// Written by the connection.
    output: Vec<u8>,
    /// Bytes the socket still takes before it is full.
    room: usize,
    /// Writes that took something.
    writes: usize,
    /// The connection shut its sending side.
    shut: bool,
}

/// One end of the in-memory socket (the connection's and the client's share it).
#[derive(Clone)]
struct Mock {
    wire: Arc<Mutex<Wire>>,
    readable: Arc<Notify>,
    writable: Arc<Notify>,
    /// For a thread blocked in `wait_writable`.
    room_made: Arc<Condvar>,
}

impl Mock {
    fn new(room: usize) -> Mock {
        Mock {
            wire: Arc::new(Mutex::new(Wire {
                room,
                ..Wire::default()
            })),
            readable: Arc::new(Notify::new()),
            writable: Arc::new(Notify::new()),
            room_made: Arc::new(Condvar::new()),
        }
    }

    // The client's side.

    fn send(&self, bytes: &[u8]) {
        self.wire.lock().unwrap().input.extend(bytes);
        self.readable.notify_one();
    }

    fn close(&self) {
        self.wire.lock().unwrap().eof = true;
        self.readable.notify_one();
    }

    fn give_room(&self, n: usize) {
        self.wire.lock().unwrap().room += n;
        self.writable.notify_one();
        self.room_made.notify_all();
    }

    fn output(&self) -> Vec<u8> {
        self.wire.lock().unwrap().output.clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Waits (serving the event loop meanwhile) until `done` holds of the wire.
    async fn until(&self, what: &str, done: impl Fn(&Wire) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(&self.wire.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until the output holds `n` responses' worth of `HTTP/1.1 ` status lines.
    async fn responses(&self, n: usize) {
        self.until("responses", |w| {
            String::from_utf8_lossy(&w.output)
                .matches("HTTP/1.1 ")
                .count()
                >= n
        })
        .await;
    }
}

impl Transport for Mock {
    async fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            {
                let mut wire = self.wire.lock().unwrap();
                if !wire.input.is_empty() {
                    let n = buf.len().min(wire.input.len());
                    for (slot, byte) in buf.iter_mut().zip(wire.input.drain(..n)) {
                        slot.write(byte);
                    }
                    return Ok(n);
                }
                if wire.eof {
                    return Ok(0);
                }
            }
            self.readable.notified().await;
        }
    }

    fn try_write(&self, out: &mut OutBuf, _last: bool) -> io::Result<usize> {
        let mut wire = self.wire.lock().unwrap();
        let bytes = match out.front_file() {
            Some((file, offset, len)) => {
                let mut data = vec![0; len.min(wire.room)];
                let file = std::fs::File::from(file.try_clone_to_owned()?);
                let n = file.read_at(&mut data, offset)?;
                data.truncate(n);
                data
            }
            None => {
                let mut data: Vec<u8> = out
                    .slices()
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                data.truncate(wire.room);
                data
            }
        };
        let n = bytes.len();
        wire.output.extend_from_slice(&bytes);
        wire.room -= n;
        if n > 0 {
            wire.writes += 1;
        }
        out.advance(n);
        Ok(n)
    }

    async fn write(&self, out: &mut OutBuf, last: bool) -> io::Result<usize> {
        loop {
            match self.try_write(out, last)? {
                0 if !out.is_empty() => self.writable.notified().await,
                n => return Ok(n),
            }
        }
    }

    fn wait_writable(&self, deadline: Instant) -> io::Result<()> {
        let mut wire = self.wire.lock().unwrap();
        while wire.room == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            wire = self.room_made.wait_timeout(wire, left).unwrap().0;
        }
        Ok(())
    }

    fn shutdown_write(&self) {
        self.wire.lock().unwrap().shut = true;
    }

    fn read_handle(&self) -> Option<RawFd> {
        None
    }
}

/// Serves one in-memory connection to the app `code` with `threads` app threads, the
/// socket taking `room` bytes before it is full, while `test` plays the client.
fn with_connection<F, Fut>(code: &str, threads: usize, room: usize, test: F)
where
    F: FnOnce(Mock, Arc<crate::wsgi::Context>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ctx = crate::wsgi::testing::py_run(|py| context(py, code, settings(threads)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = LocalSet::new();
    let mock = Mock::new(room);
    local.block_on(&rt, async {
        let pool = (threads > 1).then(|| Pool::start(ctx.clone(), threads));
        let (stop, _) = watch::channel(false);
        let shared = Rc::new(Shared::new(ctx.clone(), pool, Arc::new(stop), false));
        let peer = Peer::new(
            HostPort::new("10.0.0.1".into(), "5555".into()),
            Arc::new(HostPort::new("127.0.0.1".into(), "8000".into())),
        );
        let admission = Admission::new(&shared, None);
        let conn = Connection::new(shared, mock.clone(), peer, admission);
        let task = tokio::task::spawn_local(conn.serve());
        test(mock.clone(), ctx.clone()).await;
        mock.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
}

/// An app that answers each request with its path, and counts its calls.
const ECHO_PATH: &str = r#"
calls = 0
def app(environ, start_response):
    global calls
    calls += 1
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"#;

/// RFC 9112 §9.3.2: pipelined requests are answered in order, and the responses of one
/// read go out together.
#[test]
fn pipelined_requests_are_answered_in_order_in_one_write() {
    with_connection(ECHO_PATH, 1, usize::MAX, |client, _| async move {
        client.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
        client.responses(2).await;
        let text = client.text();
        let a = text.find("\r\n\r\n/a").expect("the first response");
        let b = text.find("\r\n\r\n/b").expect("the second response");
        assert!(a < b, "{text}");
        assert_eq!(client.wire.lock().unwrap().writes, 1, "one write for both");
        assert!(!client.wire.lock().unwrap().shut, "the connection persists");
    });
}

/// RFC 9112 §9.3: an HTTP/1.0 request without keep-alive closes the connection after its
/// response, which says so; an HTTP/1.1 `Connection: close` likewise.
#[test]
fn persistence_follows_the_request() {
    for request in [
        &b"GET /x HTTP/1.0\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ] {
        with_connection(ECHO_PATH, 1, usize::MAX, |client, _| async move {
            client.send(request);
            client.until("the close", |w| w.shut).await;
            let text = client.text();
            assert!(text.contains("Connection: close\r\n"), "{text}");
            assert!(text.ends_with("\r\n\r\n/x"), "{text}");
        });
    }
    with_connection(ECHO_PATH, 1, usize::MAX, |client, _| async move {
        client.send(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        client.responses(1).await;
        client.send(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n");
        client.responses(2).await;
        let text = client.text();
        assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
        assert!(!client.wire.lock().unwrap().shut);
    });
}

/// A generator of `BLOCKS` blocks of 64 KiB that counts the blocks asked of it, after
/// `PAUSE` seconds each.
fn stream(blocks: usize, pause: f64) -> String {
    format!(
        r#"
import time
asked = 0
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", str({blocks} * 65536))])
    def blocks():
        global asked
        for i in range({blocks}):
            time.sleep({pause})
            asked += 1
            yield bytes([65 + i % 26]) * 65536
    return blocks()
"#
    )
}

fn asked(ctx: &crate::wsgi::Context) -> usize {
    crate::wsgi::testing::py_run(|py| app_global(py, ctx, "asked").extract().unwrap())
}

/// The body after the head, checked block by block.
fn check_body(out: &[u8], blocks: usize) {
    let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), blocks * 65536);
    for (i, block) in body.chunks(65536).enumerate() {
        assert!(
            block.iter().all(|&b| b == 65 + (i % 26) as u8),
            "block {i} altered"
        );
    }
}

/// PEP 3333 "Buffering and Streaming", one thread: blocks the app produces quickly are
/// gathered (the stream writer goes on sending them meanwhile), but only up to a bound:
/// a client that takes nothing holds the generator there (the event loop serves others
/// meanwhile), and nothing is lost or reordered.
#[test]
fn a_slow_client_holds_a_fast_generator_at_the_gathering_bound() {
    with_connection(&stream(48, 0.0), 1, 1000, |client, ctx| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        client.until("the head", |w| w.output.len() >= 1000).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = asked(&ctx);
        assert!(
            first < 24,
            "{first} of 48 blocks asked while the client took 1000 bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            asked(&ctx),
            first,
            "the generator went on while its client took nothing"
        );
        client.give_room(usize::MAX / 2);
        client
            .until("the whole body", |w| w.output.ends_with(&[b'V'; 100]))
            .await;
        check_body(&client.output(), 48);
    });
}

/// A generator that takes its time between blocks (server-sent events, rows from a
/// database) has each block written as soon as it is produced, not held for the next.
/// (20 ms apart: a writer delayed longer than the gap by a busy machine would rightly
/// find two blocks to write at once.)
#[test]
fn a_slow_generators_blocks_are_each_written_at_once() {
    with_connection(&stream(5, 0.02), 1, usize::MAX, |client, _| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        client
            .until("the whole body", |w| w.output.ends_with(&[b'E'; 100]))
            .await;
        check_body(&client.output(), 5);
        assert!(
            client.wire.lock().unwrap().writes >= 5,
            "blocks were held for the next"
        );
    });
}

/// A fast generator's blocks are gathered into fewer writes than blocks.
#[test]
fn a_fast_generators_blocks_are_gathered() {
    with_connection(&stream(8, 0.0), 1, usize::MAX, |client, _| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        client
            .until("the whole body", |w| w.output.ends_with(&[b'H'; 100]))
            .await;
        check_body(&client.output(), 8);
        assert!(client.wire.lock().unwrap().writes < 8, "a write per block");
    });
}

/// The same with a pool thread (PEP 3333's second way): the connection writes what the
/// app hands over while the app goes on, and the app waits only once its connection
/// holds its bound.
#[test]
fn a_pooled_stream_reaches_a_slow_client_whole() {
    with_connection(&stream(4, 0.0), 2, 1000, |client, _| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        client.until("the head", |w| w.output.len() >= 1000).await;
        for _ in 0..300 {
            client.give_room(1000);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client.give_room(usize::MAX / 2);
        client
            .until("the whole body", |w| w.output.ends_with(&[b'D'; 100]))
            .await;
        let out = client.output();
        let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(body.len(), 4 * 65536);
    });
}

/// PEP 3333 has no interim responses: a 1xx from the app would be read as the interim
/// answer and the next response as this request's. It is a 500, and the connection
/// closes.
#[test]
fn an_interim_status_from_the_app_is_a_500_and_a_close() {
    const EARLY_HINTS: &str = r#"
def app(environ, start_response):
    start_response("103 Early Hints", [("Link", "</style.css>; rel=preload")])
    return [b""]
"#;
    with_connection(EARLY_HINTS, 1, usize::MAX, |client, _| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n");
        client.until("the close", |w| w.shut).await;
        let text = client.text();
        assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
        assert!(!text.contains("103"), "{text}");
    });
}

/// RFC 9110 §10.1.1: `100 Continue` goes out before the body is read; the app sees the
/// whole body.
#[test]
fn expect_continue_is_answered_then_the_body_read_whole() {
    const ECHO_BODY: &str = r#"
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [])
    return [body]
"#;
    with_connection(ECHO_BODY, 1, usize::MAX, |client, _| async move {
        client.send(
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        client.until("the 100", |w| !w.output.is_empty()).await;
        assert_eq!(client.output(), b"HTTP/1.1 100 Continue\r\n\r\n");
        client.send(b"hello");
        client.responses(2).await;
        assert!(
            client.text().ends_with("\r\n\r\nhello"),
            "{}",
            client.text()
        );
    });
}

/// RFC 9112 §6.1: a request that cannot be framed gets its status and a closed
/// connection, and the app never runs (not even for a request pipelined behind it).
#[test]
fn a_refused_request_gets_its_status_and_a_close() {
    with_connection(ECHO_PATH, 1, usize::MAX, |client, ctx| async move {
        client.send(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        client.until("the close", |w| w.shut).await;
        let text = client.text();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(!text.contains("smuggled"));
        let calls: usize =
            crate::wsgi::testing::py_run(|py| app_global(py, &ctx, "calls").extract().unwrap());
        assert_eq!(calls, 0);
    });
}
