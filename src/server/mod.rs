//! The server loop of one process: listeners, connections, the app threads, and a stop
//! that lets requests in flight finish.

mod body;
mod budget;
mod channel;
mod conn;
mod gil;
mod h2;
mod idle;
mod listener;
mod outbuf;
mod pool;
mod proxied;
mod sink;
mod spool;
#[cfg(test)]
mod tests;
mod tls;
mod transport;
mod writer;

use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use pyo3::prelude::*;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::LocalSet;

use crate::http::forwarded::Forwarded;
use crate::http::RequestHead;
use crate::metrics::{Counter, Finished, Gauge, Writer};
use crate::server::budget::Budget;
use crate::server::conn::Connection;
use crate::server::idle::Idle;
use crate::server::listener::{AcceptFailures, Listener};
use crate::server::pool::Pool;
use crate::server::tls::{HandshakeError, TlsStream};
use crate::server::transport::{Socket, Transport};
use crate::static_files::{Answer, Statics};
use crate::sys::Mono;
use crate::wsgi::environ::Peer;
use crate::wsgi::handler::{handle_inline, Exchange, Outcome, Step};
use crate::wsgi::Context;

/// How often the loop looks at Python's pending signals (Ctrl-C) and app interrupts.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What every connection of one serving run shares; lives on the I/O thread.
pub(crate) struct Shared {
    pub ctx: Arc<Context>,
    /// `None`: the I/O thread calls the app itself (one thread, no hand-off).
    pool: Option<Pool>,
    /// Set when the server is stopping (a graceful stop: requests in flight go on).
    pub stopping: Cell<bool>,
    /// The stop is this worker's own, at `max_requests`: the master and the other workers
    /// keep the listening sockets open and take what is queued there.
    retiring: Cell<bool>,
    /// Stops the server.
    stopper: Arc<watch::Sender<bool>>,
    /// The connections waiting for a request, whose waits a stop ends.
    pub idle: Idle,
    /// Buffers of closed connections, for new ones.
    pub spare: conn::Spare,
    /// `handle_request()`: serve one request, then close.
    pub one_request: bool,
    /// The connections being served, so a stop can wait for them.
    pub tracker: Tracker,
    /// The response bytes the worker's connections hold in memory, and their bound.
    pub budget: Arc<Budget>,
    /// The static files this loop answers itself (`--static`), with its open files.
    pub statics: Option<Statics>,
}

impl Shared {
    fn new(
        ctx: Arc<Context>,
        pool: Option<Pool>,
        stopper: Arc<watch::Sender<bool>>,
        one_request: bool,
    ) -> Shared {
        let budget = Arc::new(Budget::new(ctx.settings.output_budget));
        let statics = ctx.settings.statics.clone().map(Statics::new);
        Shared {
            ctx,
            pool,
            stopping: Cell::new(false),
            retiring: Cell::new(false),
            stopper,
            idle: Idle::default(),
            spare: conn::Spare::default(),
            one_request,
            tracker: Tracker::default(),
            budget,
            statics,
        }
    }

    /// Whether the I/O thread calls the app itself, and so holds the GIL while it works.
    pub(crate) fn inline(&self) -> bool {
        self.pool.is_none()
    }

    /// Stops the worker after `max_requests`, to be replaced: a graceful stop, as a
    /// signal's, but without accepting what is queued (see `accept_queued`).
    pub(crate) fn retire(&self) {
        self.retiring.set(true);
        self.stopping.set(true);
        self.stopper.send_replace(true);
    }

    /// The engine's answer to a request for a static file (`--static`), if it is one.
    pub(crate) fn static_answer(&self, head: &RequestHead) -> Option<Answer> {
        self.statics.as_ref()?.answer(head)
    }

    /// A static file's response: counted in the metrics (no time in an application) and
    /// written to the access log.
    pub(crate) fn finished_static(
        &self,
        head: &RequestHead,
        peer: &Peer,
        forwarded: Option<&Forwarded>,
        answer: &Answer,
        started: Mono,
    ) {
        let log = self.ctx.access_log.as_ref();
        if log.is_none() && self.ctx.metrics.is_none() {
            return;
        }
        let now = Mono::now();
        let elapsed = now.since(started);
        if let Some((metrics, row)) = self.ctx.metrics() {
            let sent = answer.head.lines.len() as u64 + answer.body_bytes;
            metrics.gauge(row, Writer::LOOP, Gauge::InFlight, true);
            let total = now.micros_since(started);
            let req = Finished::of(head, answer.head.status, sent, total, None);
            metrics.finished(row, Writer::LOOP, &req);
        }
        let Some(log) = log else {
            return;
        };
        log.log(&crate::access_log::AccessRecord {
            remote_addr: &peer.client(forwarded),
            head,
            status: answer.head.status,
            body_bytes: answer.body_bytes,
            response_head: &answer.head.lines,
            elapsed,
            environ: None,
        });
    }

    /// Runs the request on this thread (`inline()`), to its end or its first pause.
    pub(crate) fn run_inline(&self, ex: Exchange) -> Step {
        Python::attach(|py| handle_inline(py, &self.ctx, ex))
    }

    /// Hands the request to the thread pool and waits for its outcome; `None` if the pool
    /// is gone (stopping).
    pub(crate) async fn run_pooled(&self, ex: Exchange) -> Option<Outcome> {
        self.pool.as_ref()?.run(ex).await
    }
}

/// Counts open connections so a stop can wait for them.
#[derive(Default)]
pub(crate) struct Tracker {
    pub open: Cell<usize>,
    /// Notified at each close during a stop.
    on_close: Notify,
}

/// A connection's place in the worker, from its accept to its close: counted open, so that
/// a graceful stop waits for it from the start (through a TLS handshake or a PROXY header,
/// too), and holding its permit under `worker_connections` (none for `handle_request()`'s
/// one connection).
pub(crate) struct Admission {
    shared: Rc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Admission {
    fn new(shared: &Rc<Shared>, permit: Option<OwnedSemaphorePermit>) -> Admission {
        let tracker = &shared.tracker;
        tracker.open.set(tracker.open.get() + 1);
        shared.ctx.count(Counter::ConnectionsAccepted, 1);
        shared.ctx.gauge(Gauge::ConnectionsOpen, true);
        Admission {
            shared: shared.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let tracker = &self.shared.tracker;
        tracker.open.set(tracker.open.get() - 1);
        self.shared.ctx.gauge(Gauge::ConnectionsOpen, false);
        if self.shared.stopping.get() {
            // A stop waits for the count to reach zero.
            tracker.on_close.notify_waiters();
        }
    }
}

/// Serves on `fds` until `stop` turns true (or, with `one_request`, one request).
/// Runs with the GIL released; returns once connections are done or the grace period ends.
pub(crate) fn run(
    ctx: Arc<Context>,
    fds: Vec<OwnedFd>,
    stop: Arc<watch::Sender<bool>>,
    one_request: bool,
) -> io::Result<()> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    let inline = ctx.settings.threads == 1;
    if inline {
        // Hold the GIL except while parked in epoll (see gil.rs).
        builder
            .on_thread_park(gil::let_go)
            .on_thread_unpark(gil::hold);
    }
    let rt = builder.build()?;
    let local = LocalSet::new();
    if inline {
        gil::hold();
    }
    let served = local.block_on(&rt, serve(ctx.clone(), fds, stop, one_request));
    // The connections go with the runtime: a request still in an app thread (a stop's
    // grace period ended under it) learns that its client is gone.
    drop(local);
    drop(rt);
    // Last: the runtime's shutdown may have parked and unparked (taking the GIL again).
    gil::let_go();
    let shared = served?;
    if let Some(pool) = Rc::try_unwrap(shared).ok().and_then(|s| s.pool) {
        let left = pool.stop(ctx.settings.graceful_timeout);
        if left > 0 {
            ctx.error_log.warning(&format!(
                "{left} application thread(s) still running after the stop: left behind"
            ));
        }
    }
    Ok(())
}

async fn serve(
    ctx: Arc<Context>,
    fds: Vec<OwnedFd>,
    stop: Arc<watch::Sender<bool>>,
    one_request: bool,
) -> io::Result<Rc<Shared>> {
    let listeners = fds
        .into_iter()
        .map(|fd| Listener::from_fd(fd).map(Rc::new))
        .collect::<io::Result<Vec<_>>>()?;
    if ctx.board.is_some() {
        // A worker of a master, which announced the addresses itself.
        ctx.error_log
            .info(&format!("Booting worker with pid: {}", std::process::id()));
    } else if !one_request {
        for l in &listeners {
            ctx.error_log.info(&format!(
                "Listening at: {} ({})",
                l.describe(ctx.settings.tls.is_some()),
                std::process::id()
            ));
        }
        ctx.error_log.info(&format!(
            "Serving with {} thread{}",
            ctx.settings.threads,
            if ctx.settings.threads == 1 { "" } else { "s" }
        ));
    }
    let pool = (ctx.settings.threads > 1).then(|| Pool::start(ctx.clone(), ctx.settings.threads));
    if pool.is_none() {
        crate::wsgi::on_app_thread(Some((ctx.clone(), 0)));
    }
    let shared = Rc::new(Shared::new(ctx.clone(), pool, stop.clone(), one_request));
    // Ready from now on, before the first tick: a first request that holds this thread in
    // the app (one app thread) would otherwise keep the ticker from beating, and the
    // master, which watches only workers that have beaten, would never time it out.
    ctx.beat();

    // Every SIGNAL_POLL: end the keep-alive waits past their deadline, run Python's
    // pending signal handlers (it runs them only when asked), tell the master the loop is
    // alive, and stop if the master is gone.
    let ticker = {
        let ctx = ctx.clone();
        let stop = stop.clone();
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(SIGNAL_POLL).await;
                shared.idle.end_expired(std::time::Instant::now());
                ctx.beat();
                if let Err(err) = Python::attach(|py| py.check_signals()) {
                    ctx.set_interrupt(err);
                }
                if ctx.interrupted() {
                    stop.send_replace(true);
                    return;
                }
                let parent = ctx.settings.parent_pid;
                if parent != 0 && crate::sys::parent_pid() != parent && !*stop.borrow() {
                    ctx.error_log
                        .warning("The master process is gone: stopping");
                    stop.send_replace(true);
                }
            }
        })
    };

    // At a stop: idle keep-alive connections get STOP_LINGER to bring a request already on
    // its way, then their waits end (those that go idle later wait no longer themselves).
    let lingering = {
        let shared = shared.clone();
        let mut stopped = stop.subscribe();
        tokio::task::spawn_local(async move {
            let _ = stopped.wait_for(|s| *s).await;
            shared.stopping.set(true);
            tokio::time::sleep(conn::STOP_LINGER).await;
            shared.idle.end_waits();
        })
    };
    let mut stopped = stop.subscribe();
    if one_request {
        // handle_request(): the first connection on any listener, one request, done.
        let accepts = listeners.iter().map(|l| Box::pin(l.accept(&ctx.settings)));
        let first = tokio::select! {
            r = futures_select_ok(accepts.collect()) => Some(r),
            _ = stopped.wait_for(|s| *s) => None,
        };
        if let Some(Ok((conn, peer))) = first {
            let admission = Admission::new(&shared, None);
            serve_one(shared.clone(), conn, peer, admission).await;
        }
    } else {
        // `worker_connections`: past it, a worker stops accepting, and further clients
        // wait in the kernel's listen backlog (not in this process's memory).
        let permits = Arc::new(Semaphore::new(ctx.settings.worker_connections));
        // The accept loops are aborted when the stop comes (below), rather than each accept
        // racing a stop signal: that select cost a waiter registration per connection.
        let mut acceptors = Vec::with_capacity(listeners.len());
        for listener in &listeners {
            let listener = listener.clone();
            let shared = shared.clone();
            let permits = permits.clone();
            acceptors.push(tokio::task::spawn_local(async move {
                let mut failures = AcceptFailures::default();
                loop {
                    if permits.available_permits() == 0 {
                        shared.ctx.count(Counter::ConnectionsLimited, 1);
                    }
                    let accepted = {
                        let permit = permits.clone().acquire_owned().await;
                        (listener.accept(&shared.ctx.settings).await, permit)
                    };
                    match accepted {
                        (Ok((conn, peer)), permit) => {
                            failures.succeeded(&shared.ctx.error_log);
                            spawn_accepted(shared.clone(), conn, peer, permit.ok());
                        }
                        (Err(e), _) => {
                            // EMFILE and friends: wait a little rather than spin.
                            failures.failed(&shared.ctx.error_log, &e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        let _ = stopped.wait_for(|s| *s).await;
        shared.stopping.set(true);
        for acceptor in acceptors {
            acceptor.abort();
            let _ = acceptor.await;
        }
        ctx.error_log
            .info("Shutting down: waiting for requests in flight");
        let drained = tokio::time::timeout(ctx.settings.graceful_timeout, async {
            if !shared.retiring.get() {
                accept_queued(&shared, &listeners, &permits).await;
            }
            drop(listeners);
            while shared.tracker.open.get() > 0 {
                let closed = shared.tracker.on_close.notified();
                if shared.tracker.open.get() == 0 {
                    break;
                }
                closed.await;
            }
        })
        .await;
        if drained.is_err() {
            ctx.error_log.warning(&format!(
                "Graceful stop timed out with {} connection(s) open",
                shared.tracker.open.get()
            ));
        }
    }
    // Both hold `shared`: awaited once aborted, so their futures are gone and `shared`
    // comes back whole, with the pool to stop (an abort alone only schedules that).
    ticker.abort();
    lingering.abort();
    let _ = ticker.await;
    let _ = lingering.await;
    crate::wsgi::on_app_thread(None);
    Ok(shared)
}

/// At a stop by a signal, before the listeners close: the connections the kernel has
/// queued and no worker accepted. Their clients have sent their requests
/// (`TCP_DEFER_ACCEPT` queues a connection once its first bytes came), which closing the
/// listening socket would reset; accepted, each is served as any connection during a
/// stop: its request, then a close. Within `--worker-connections`, waiting for
/// connections in flight to end if need be.
async fn accept_queued(shared: &Rc<Shared>, listeners: &[Rc<Listener>], permits: &Arc<Semaphore>) {
    for listener in listeners {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            match listener.accept_queued(&shared.ctx.settings) {
                Ok(Some((conn, peer))) => spawn_accepted(shared.clone(), conn, peer, Some(permit)),
                Ok(None) => break,
                Err(e) => {
                    shared.ctx.error_log.error(&format!("accept failed: {e}"));
                    break;
                }
            }
        }
    }
}

/// Starts the task that serves one accepted connection to its end: plain HTTP/1.1, or
/// after a TLS handshake, or cleartext HTTP/2 by prior knowledge. Each kind is a task of
/// its own concrete type, boxed: the task holds a pointer, not the connection's large
/// future, which it would otherwise copy whole several times over a connection's life
/// (one allocation is cheaper); and a plain connection's future neither carries the space
/// a TLS handshake needs nor is reached through a vtable.
fn spawn_accepted(
    shared: Rc<Shared>,
    socket: Socket,
    peer: Peer,
    permit: Option<OwnedSemaphorePermit>,
) {
    let admission = Admission::new(&shared, permit);
    if peer.proxy_header {
        tokio::task::spawn_local(Box::pin(serve_proxied(shared, socket, peer, admission)));
    } else if let Some(config) = shared.ctx.settings.tls.clone() {
        let first = BytesMut::new();
        tokio::task::spawn_local(Box::pin(serve_tls(
            shared, config, socket, first, peer, admission,
        )));
    } else if shared.ctx.settings.http2_cleartext == "prior-knowledge" {
        let first = BytesMut::new();
        tokio::task::spawn_local(Box::pin(serve_cleartext(
            shared, socket, first, peer, admission,
        )));
    } else {
        let conn = Connection::new(shared, socket, peer, admission);
        tokio::task::spawn_local(Box::pin(conn.serve()));
    }
}

/// Serves the one connection of `handle_request()`, of whichever kind.
async fn serve_one(shared: Rc<Shared>, socket: Socket, peer: Peer, admission: Admission) {
    if peer.proxy_header {
        Box::pin(serve_proxied(shared, socket, peer, admission)).await
    } else {
        Box::pin(serve_after(
            shared,
            socket,
            BytesMut::new(),
            peer,
            admission,
        ))
        .await
    }
}

/// A connection that begins with a PROXY header (read at once, whatever comes after it),
/// then served as the listener's kind with what followed the header.
async fn serve_proxied(shared: Rc<Shared>, socket: Socket, mut peer: Peer, admission: Admission) {
    if let Some(first) = proxied::read_header(&shared, &socket, &mut peer).await {
        Box::pin(serve_after(shared, socket, first, peer, admission)).await
    }
}

/// Serves a connection as the listener's kind (TLS, cleartext HTTP/2 or HTTP/1.1), `first`
/// the bytes of it already read.
async fn serve_after(
    shared: Rc<Shared>,
    socket: Socket,
    first: BytesMut,
    peer: Peer,
    admission: Admission,
) {
    if let Some(config) = shared.ctx.settings.tls.clone() {
        Box::pin(serve_tls(shared, config, socket, first, peer, admission)).await
    } else if shared.ctx.settings.http2_cleartext == "prior-knowledge" {
        Box::pin(serve_cleartext(shared, socket, first, peer, admission)).await
    } else {
        Box::pin(
            Connection::new(shared, socket, peer, admission)
                .with_received(&first)
                .serve(),
        )
        .await
    }
}

/// A TLS connection: the handshake, bounded by `tls_handshake_timeout`, then HTTP/2 or
/// HTTP/1.1 as ALPN chose.
async fn serve_tls(
    shared: Rc<Shared>,
    config: Arc<rustls::ServerConfig>,
    socket: Socket,
    first: BytesMut,
    mut peer: Peer,
    admission: Admission,
) {
    let limit = shared.ctx.settings.tls_handshake_timeout;
    let handshake = TlsStream::accept(socket, first, config);
    let failed = match tokio::time::timeout(limit, handshake).await {
        Ok(Ok((stream, session))) => {
            let h2 = session.h2;
            peer.tls = Some(Box::new(session));
            if h2 {
                return Box::pin(h2::serve(shared, stream, Bytes::new(), peer, admission)).await;
            }
            return Box::pin(Connection::new(shared, stream, peer, admission).serve()).await;
        }
        Ok(Err(HandshakeError::PlainHttp)) => "plain HTTP sent to the TLS port".to_string(),
        Ok(Err(HandshakeError::Failed(e))) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    shared.ctx.error_log.debug(&format!(
        "TLS handshake with {} failed: {failed}",
        peer.shown()
    ));
}

/// A plain connection when cleartext HTTP/2 is on: served as HTTP/2 if it opens with the
/// HTTP/2 preface (prior knowledge, RFC 9113 §3.3), else as HTTP/1.1 with what was read.
async fn serve_cleartext(
    shared: Rc<Shared>,
    socket: Socket,
    mut first: BytesMut,
    peer: Peer,
    admission: Admission,
) {
    first.reserve(conn::READ_BUFFER);
    let limit = shared
        .ctx
        .settings
        .keep_alive
        .max(shared.ctx.settings.header_timeout);
    while first.len() < h2::PREFACE.len() && h2::PREFACE.starts_with(&first) {
        match tokio::time::timeout(limit, socket.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
    if first.starts_with(h2::PREFACE) {
        return h2::serve(shared, socket, first.freeze(), peer, admission).await;
    }
    Connection::new(shared, socket, peer, admission)
        .with_received(&first)
        .serve()
        .await
}

/// The first of several accepts to finish (a tiny `select_ok` without the futures crate).
async fn futures_select_ok<F, T>(mut futs: Vec<std::pin::Pin<Box<F>>>) -> io::Result<T>
where
    F: std::future::Future<Output = io::Result<T>>,
{
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready(r);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
