//! The response sink of an HTTP/1.1 connection (the WSGI layer's `ResponseSink`): it
//! frames the response into the connection's output queue (`http::framing`) and delivers
//! it in one of two ways. Inline, when the application runs on the connection's own
//! thread: the connection lends the sink its transport for the call, and the sink writes
//! what the transport takes at once, or, for blocks the application produces quickly one
//! after another, gathers them and lends the transport on to the stream writer
//! (`writer`), which sends them if the application turns out slow. Pooled, when it runs
//! on a pool thread: the sink hands its bytes to the connection's task through a
//! `Channel`, and the task writes them while the application goes on. Either way, PEP
//! 3333's "Buffering and Streaming" holds: no block waits for the next unless another
//! thread goes on transmitting it.

use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::http::framing::{End, CHUNK_END};
use crate::http::{BodyLength, Canned, Framing};
use crate::server::budget::Budget;
use crate::server::channel::Channel;
use crate::server::outbuf::OutBuf;
use crate::server::transport::Transport;
use crate::server::writer::Lent;
use crate::wsgi::sink::{Flow, Gone, ResponseHead, ResponseSink};

/// Up to this many bytes of an inline stream are gathered into one write: as much as a
/// pooled response may queue for its connection.
const GATHER: usize = crate::server::channel::HIGH_WATER;

/// An inline block is gathered only if the application produced it within this time of
/// the previous one: a generator with its data at hand, not one that waits between
/// blocks (server-sent events, rows from a database), whose blocks are written at once.
#[cfg(not(test))]
const FAST: Duration = Duration::from_micros(100);
/// The unit tests run debug builds on shared, loaded machines, where a generator with
/// its data at hand can take longer than 100 µs between blocks; their slow generator
/// sleeps 5 ms between blocks, well past this.
#[cfg(test)]
const FAST: Duration = Duration::from_millis(2);

/// How a response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Its head has not gone out.
    Fresh,
    /// Its head went out; its body is on its way.
    Body,
    /// Its body ended, delimited as this says.
    Ended(End),
    /// Cut short, or answered with the canned 500: the connection closes after it.
    Broken,
}

/// How the bytes get to the transport.
pub(super) enum Delivery<T> {
    /// The application runs on the connection's thread.
    Inline(Inline<T>),
    /// The application runs on a pool thread.
    Pooled(Arc<Channel>),
}

impl<T> Delivery<T> {
    /// Inline delivery, with no transport lent yet.
    pub(super) fn inline() -> Delivery<T> {
        Delivery::Inline(Inline {
            transport: None,
            writer: None,
            lent: false,
            held: 0,
            since: None,
            pushed: None,
            keeping_up: true,
        })
    }
}

/// The transport an inline call was lent, and the gathering of its stream.
pub(super) struct Inline<T> {
    /// The transport while the sink holds it (`None` between calls, and while it is lent
    /// on to the writer).
    transport: Option<T>,
    /// This connection's slot with the stream writer, made at its first gathered block.
    writer: Option<Arc<Lent<T>>>,
    /// The transport and the queue are with the writer.
    lent: bool,
    /// While they are: the memory of the queue as last lent or added to.
    held: usize,
    /// When the oldest byte not yet written was first held.
    since: Option<Instant>,
    /// When the last block (or the head) was handed over: the application's time for
    /// its next block runs from here.
    pushed: Option<Instant>,
    /// The client took everything the last time it was written to: gathering pays. A
    /// client that falls behind gets each block written at once (and its generator paused).
    keeping_up: bool,
}

impl<T> Inline<T> {
    /// Whether a block pushed `now`, with `held` bytes of the response in memory, is
    /// gathered rather than written at once: the application produced it quickly, the
    /// client keeps up, and neither this connection's bound nor the worker's budget is
    /// reached.
    fn gathers(&self, now: Instant, held: usize, budget: &Budget) -> bool {
        let quick = self.pushed.is_some_and(|t| now.duration_since(t) < FAST);
        quick && self.keeping_up && held < GATHER && !budget.over()
    }
}

/// One connection's sink, reused from request to request.
pub(super) struct H1Sink<T> {
    /// Response bytes not yet handed on: the connection's output queue, which may still
    /// hold earlier pipelined responses ahead of this one.
    pub out: OutBuf,
    pub delivery: Delivery<T>,
    /// An HTTP/1.1 client (chunked framing available), not HTTP/1.0.
    http11: bool,
    head_request: bool,
    /// Whether the connection may carry another request after this response, as far as
    /// the request and the server are concerned (the connection's persistence when it
    /// dispatched the request).
    keep_alive: bool,
    /// Chosen when the head goes out.
    framing: Option<Framing>,
    state: State,
    /// The client is gone: nothing more is sent.
    gone: bool,
    /// How long a client that reads nothing may keep a blocked write waiting.
    write_timeout: Duration,
    /// The worker's output budget, and this connection's bytes charged to it (inline; a
    /// pooled response's are its channel's).
    budget: Arc<Budget>,
    charged: usize,
}

impl<T> Drop for H1Sink<T> {
    fn drop(&mut self) {
        self.budget.release(std::mem::take(&mut self.charged));
    }
}

impl<T: Transport> H1Sink<T> {
    pub(super) fn new(
        delivery: Delivery<T>,
        write_timeout: Duration,
        budget: Arc<Budget>,
    ) -> H1Sink<T> {
        H1Sink {
            out: OutBuf::default(),
            delivery,
            http11: true,
            head_request: false,
            keep_alive: false,
            framing: None,
            state: State::Fresh,
            gone: false,
            write_timeout,
            budget,
            charged: 0,
        }
    }

    /// Readies the sink for the next request's response.
    pub(super) fn prepare(&mut self, http11: bool, head_request: bool, keep_alive: bool) {
        self.http11 = http11;
        self.head_request = head_request;
        self.keep_alive = keep_alive;
        self.framing = None;
        self.state = State::Fresh;
        self.gone = false;
        match &mut self.delivery {
            Delivery::Pooled(chan) => chan.reset(),
            Delivery::Inline(io) => {
                io.pushed = None;
                io.keeping_up = true;
            }
        }
        self.settle();
    }

    /// Whether the connection may carry another request after this response: its head
    /// said so, its body ended delimited, and the client is still there.
    pub(super) fn persists(&self) -> bool {
        self.state == State::Ended(End::Clean)
            && self.framing.is_some_and(|f| f.keep_alive())
            && !ResponseSink::gone(self)
    }

    /// Lends the connection's transport for an application call.
    pub(super) fn lend(&mut self, transport: T) {
        if let Delivery::Inline(io) = &mut self.delivery {
            io.transport = Some(transport);
        }
    }

    /// Takes the lent transport back (from the writer, if it has it).
    pub(super) fn take_back(&mut self) -> Option<T> {
        self.reclaim();
        match &mut self.delivery {
            Delivery::Inline(io) => io.transport.take(),
            Delivery::Pooled(_) => None,
        }
    }

    /// Marks the client gone (a write failed): nothing more is sent.
    pub(super) fn lost(&mut self) {
        self.gone = true;
        self.out.clear();
        self.settle();
    }

    /// Charges the worker's budget with what this connection holds in memory now.
    pub(super) fn settle(&mut self) {
        if matches!(self.delivery, Delivery::Inline(_)) {
            let held = self.out.memory_len();
            self.budget.adjust(&mut self.charged, held);
        }
    }

    /// Takes the transport and the queue back from the writer, before anything touches
    /// them. Nearly always nothing is lent: an inline check, the taking out of line.
    #[inline]
    fn reclaim(&mut self) {
        if matches!(&self.delivery, Delivery::Inline(io) if io.lent) {
            self.take_from_writer();
        }
    }

    #[cold]
    fn take_from_writer(&mut self) {
        let Delivery::Inline(io) = &mut self.delivery else {
            return;
        };
        let Some(writer) = &io.writer else { return };
        let (transport, out, since, failed) = writer.take();
        let pending = transport
            .as_ref()
            .map_or(!out.is_empty(), |t| !t.drained(&out));
        io.transport = transport;
        io.lent = false;
        io.since = pending.then_some(since);
        self.out = out;
        if failed {
            self.lost();
        }
    }

    /// Adds a body block of `len` bytes, which `add` queues, framed as the body is:
    /// into the stream writer's slot while the queue is lent there (one lock, the
    /// transport staying with the writer), else into the sink's own queue.
    fn body_block(&mut self, len: usize, add: impl FnOnce(&mut OutBuf)) {
        let framing = self.framing.expect("a body block follows its head");
        let framed = |out: &mut OutBuf| {
            let chunked = framing.is_chunked() && len > 0;
            if chunked {
                out.write_with(|v| {
                    framing.chunk_header(len, v);
                });
            }
            add(out);
            if chunked {
                out.extend(CHUNK_END);
            }
        };
        let framed = match &mut self.delivery {
            Delivery::Inline(io) if io.lent => {
                let writer = io.writer.as_ref().expect("lent to the writer");
                match writer.add(framed) {
                    Ok(held) => {
                        io.held = held;
                        return;
                    }
                    // The client is gone: taken back, the sink learns it.
                    Err(framed) => framed,
                }
            }
            _ => framed,
        };
        self.reclaim();
        framed(&mut self.out);
    }

    /// A push that keeps the queue with the writer, if the stream still gathers.
    fn push_lent(&mut self) -> Option<Result<Flow, Gone>> {
        let Delivery::Inline(io) = &mut self.delivery else {
            return None;
        };
        if !io.lent || self.gone {
            return None;
        }
        let now = Instant::now();
        if !io.gathers(now, io.held, &self.budget) {
            return None;
        }
        io.pushed = Some(now);
        self.budget.adjust(&mut self.charged, io.held);
        Some(Ok(Flow::Go))
    }

    /// An inline push: gathers a block the application produced quickly, lending the
    /// transport to the writer; else writes what the transport takes now.
    fn push_inline(&mut self) -> Result<Flow, Gone> {
        let Delivery::Inline(io) = &mut self.delivery else {
            unreachable!("an inline push")
        };
        let now = Instant::now();
        let memory = self.out.memory_len();
        let flow = if io.gathers(now, memory, &self.budget) && gather(io, &mut self.out, now) {
            Ok(Flow::Go)
        } else {
            let transport = io
                .transport
                .as_ref()
                .expect("the transport is lent for the call");
            let flow = write_now(transport, &mut self.out);
            io.keeping_up = flow == Ok(Flow::Go);
            if io.keeping_up {
                io.since = None;
            }
            flow
        };
        io.pushed = Some(Instant::now());
        if flow.is_err() {
            self.lost();
        } else if !io.lent {
            self.settle();
        } else {
            // The queue went to the writer whole: charge what it held.
            self.budget.adjust(&mut self.charged, memory);
        }
        flow
    }
}

/// Lends the transport and `out` to the stream writer, the oldest byte held since `now`
/// or earlier; false if there is no writer (then nothing was lent).
fn gather<T: Transport>(io: &mut Inline<T>, out: &mut OutBuf, now: Instant) -> bool {
    if io.writer.is_none() {
        io.writer = Lent::new();
    }
    let Some(writer) = &io.writer else {
        return false;
    };
    let Some(transport) = io.transport.take() else {
        return false;
    };
    let since = *io.since.get_or_insert(now);
    io.held = out.memory_len();
    writer.lend(transport, std::mem::take(out), since);
    io.lent = true;
    true
}

impl<T: Transport> ResponseSink for H1Sink<T> {
    fn head(&mut self, head: &ResponseHead, length: BodyLength) {
        self.reclaim();
        let (http11, keep_alive) = (self.http11, self.keep_alive);
        let mut framing = None;
        self.out.write_with(|v| {
            v.extend_from_slice(b"HTTP/1.1 ");
            v.extend_from_slice(&head.lines);
            framing = Some(Framing::start(
                http11,
                length,
                head.has_date,
                head.has_server,
                keep_alive,
                v,
            ));
        });
        self.framing = framing;
        self.state = State::Body;
        if let Delivery::Inline(io) = &mut self.delivery {
            // The first block follows at once: the application's time for it is spent.
            io.pushed = Some(Instant::now());
        }
    }

    fn block(&mut self, block: &Bound<'_, PyBytes>) {
        self.body_block(block.as_bytes().len(), |out| out.push_bytes(block));
    }

    fn bytes(&mut self, data: &[u8]) {
        self.body_block(data.len(), |out| out.extend(data));
    }

    fn file(&mut self, file: OwnedFd, offset: u64, len: u64) {
        let len = len as usize;
        self.body_block(len, |out| out.push_file(file, offset, len));
    }

    fn end(&mut self) {
        self.reclaim();
        let framing = self.framing.expect("a body ends after its head");
        let mut end = End::Clean;
        if framing.is_chunked() {
            self.out.write_with(|v| end = framing.end(v));
        } else {
            end = framing.end(&mut Vec::new());
        }
        self.state = State::Ended(end);
    }

    fn abort(&mut self) {
        self.reclaim();
        self.state = State::Broken;
    }

    fn fail(&mut self) {
        self.reclaim();
        let head_request = self.head_request;
        self.out
            .write_with(|v| Canned::InternalError.write(head_request, v));
        self.state = State::Broken;
    }

    fn push(&mut self) -> Result<Flow, Gone> {
        if let Some(gathered) = self.push_lent() {
            return gathered;
        }
        self.reclaim();
        if self.gone {
            return Err(Gone);
        }
        let pushed = match &self.delivery {
            Delivery::Inline(_) => return self.push_inline(),
            Delivery::Pooled(chan) => chan.put(&mut self.out),
        };
        if pushed.is_err() {
            self.lost();
        }
        pushed
    }

    fn wait(&mut self) -> Result<(), Gone> {
        self.reclaim();
        let waited = match &mut self.delivery {
            Delivery::Pooled(chan) => chan.wait(),
            Delivery::Inline(io) => {
                let transport = io.transport.as_ref().expect("the transport is lent");
                let deadline = Instant::now() + self.write_timeout;
                let waited = loop {
                    match write_now(transport, &mut self.out) {
                        Ok(Flow::Go) => break Ok(()),
                        Ok(Flow::Wait) => {}
                        Err(gone) => break Err(gone),
                    }
                    if transport.wait_writable(deadline).is_err() {
                        break Err(Gone);
                    }
                };
                io.keeping_up = false;
                waited
            }
        };
        if waited.is_err() {
            self.lost();
        }
        self.settle();
        waited
    }

    fn gone(&self) -> bool {
        self.gone
            || match &self.delivery {
                Delivery::Pooled(chan) => chan.is_gone(),
                Delivery::Inline(_) => false,
            }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Writes what the transport takes now: `Go` once everything is with it (PEP 3333
/// "Buffering and Streaming", the first way: the block goes to the operating system
/// before the application is asked for the next), `Wait` if it is full.
fn write_now<T: Transport>(transport: &T, out: &mut OutBuf) -> Result<Flow, Gone> {
    while !transport.drained(out) {
        match transport.try_write(out, false) {
            Ok(0) if !transport.drained(out) => return Ok(Flow::Wait),
            Ok(0) => {}
            Ok(_) => {}
            Err(_) => return Err(Gone),
        }
    }
    Ok(Flow::Go)
}
