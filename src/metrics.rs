//! The metrics table: per-worker request counters in memory shared by the master and its
//! workers, for the master's Prometheus exporter and `qiao status`.
//!
//! Beside the scoreboard (which says what each thread does now), this says what each
//! worker has done: requests by method and status class, time histograms, bytes,
//! connections, refusals. The master maps it (anonymous, shared) before it forks. Each
//! thread of a worker that counts (its I/O thread, each app thread of its pool) has a part
//! of the worker's row to itself, so that every cell has one writer: an addition is a
//! relaxed load and store, with no locked instruction, and no syscall, lock or Python call
//! per request. The master only reads, summing a row's parts, except when a worker is
//! gone: it then folds the row's counters into its own totals (`fold`), so that a worker's
//! counts outlive it, and the row is cleared for the next worker (`reset`).
//!
//! A row's counters are a flat array of `u64` cells, laid out as `schema()` describes: the
//! request grid (method x status class), two histograms (buckets, not cumulative, then the
//! sum in microseconds), one cell per status code from 100 to 599, then the scalar
//! counters and, last, the gauges (which a fold drops: a gone worker has nothing in
//! flight). After the parts come the request texts of the app threads (`qiao status`).

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::http::{BodyFraming, RequestHead};
use crate::log::{Logged, Tally};
use crate::sys::SharedMap;

/// The methods counted by name; any other is counted as `other` (label values stay bounded).
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// Status classes; a status outside 100..=599 (none the engine sends) is `other`.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// Histogram bucket upper bounds in microseconds (Prometheus' usual web latency spread);
/// one more bucket, past the last, is `+Inf`.
const BOUNDS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;
/// The statuses of the requests the engine refuses before the application (limits and
/// malformed requests); any other refusal status is `other`.
const REFUSED: [u16; 5] = [400, 408, 413, 414, 431];

/// A histogram's cells: its buckets, then its sum in microseconds.
const HISTOGRAM: usize = BUCKETS + 1;
/// Status codes counted one by one (for StatsD's `request.status.<code>`): 100 to 599.
const FIRST_CODE: u16 = 100;
const CODES: usize = 500;
const GRID: usize = 0;
const APP_TIME: usize = GRID + METHODS.len() * CLASSES.len();
const TOTAL_TIME: usize = APP_TIME + HISTOGRAM;
const STATUS_CODES: usize = TOTAL_TIME + HISTOGRAM;
const SCALARS: usize = STATUS_CODES + CODES;

/// The scalar counters after the histograms, in this order (the schema names them).
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    /// Request bytes: heads and bodies, a chunked body as sent (with its framing).
    BytesReceived = 0,
    /// Response bytes: head fields and bodies.
    BytesSent,
    ConnectionsAccepted,
    /// Times the accept loop waited because `--worker-connections` were all open (the
    /// clients then wait in the listen backlog).
    ConnectionsLimited,
    /// Requests that came on a connection which had carried one before.
    KeepAliveReuses,
    /// Request bodies written to a temporary file (past `--body-buffer-size`).
    BodiesSpooled,
    /// Error-log calls by `Logged` kind, these four in its order (see `LogTally`).
    LogCritical,
}
const COUNTER_NAMES: [&str; 10] = [
    "bytes_received",
    "bytes_sent",
    "connections_accepted",
    "connections_limited",
    "keepalive_reuses",
    "bodies_spooled",
    "log_critical",
    "log_error",
    "log_warning",
    "log_exception",
];
const REFUSALS: usize = SCALARS + COUNTER_NAMES.len();
const GAUGES: usize = REFUSALS + REFUSED.len() + 1;

/// The gauges, last in a row: the worker's present, not its history.
#[derive(Clone, Copy)]
pub(crate) enum Gauge {
    InFlight = 0,
    ConnectionsOpen,
}
const GAUGE_NAMES: [&str; 2] = ["requests_in_flight", "connections_open"];
/// Cells in a row's counters; the request text of each app thread follows them.
const ROW: usize = GAUGES + GAUGE_NAMES.len();
/// Per app thread: a sequence number (odd while the text is written), then the method and
/// path of its request, NUL-padded, for `qiao status`.
const TEXT_BYTES: usize = 64;
const TEXT: usize = 1 + TEXT_BYTES / 8;

/// A row's layout as `Metrics.schema()` tells it: methods, classes, bucket bounds in
/// seconds, the status codes counted one by one, counter names, refusal statuses, gauge
/// names.
type Schema = (
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<f64>,
    Vec<u16>,
    Vec<&'static str>,
    Vec<u16>,
    Vec<&'static str>,
);

/// Where a thread adds in a worker's row: its own part (`SHARED` false: it is each cell's
/// one writer), or the part the threads without one share (atomic additions). A constant,
/// so that a request's dozen additions are not each a branch.
struct Part<'a, const SHARED: bool> {
    cells: &'a [AtomicU64; ROW],
}

/// A part, as `Metrics::part` finds it.
enum AnyPart<'a> {
    Own(Part<'a, false>),
    Shared(Part<'a, true>),
}

impl<const SHARED: bool> Part<'_, SHARED> {
    fn bump(&self, index: usize, n: u64) {
        let cell = &self.cells[index];
        if SHARED {
            cell.fetch_add(n, Ordering::Relaxed);
        } else {
            // This thread is the cell's one writer: no other can change it in between.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }

    fn observe(&self, histogram: usize, us: u64) {
        let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
        self.bump(histogram + bucket, 1);
        self.bump(histogram + BUCKETS, us);
    }

    /// `req` counted, and no longer in flight.
    fn finished(&self, req: &Finished<'_>) {
        let method = method_index(req.method);
        let class = match req.status {
            100..=599 => {
                let code = usize::from(req.status - FIRST_CODE);
                self.bump(STATUS_CODES + code, 1);
                usize::from(req.status / 100 - 1)
            }
            _ => CLASSES.len() - 1,
        };
        self.bump(GRID + method * CLASSES.len() + class, 1);
        if let Some(app) = req.app_us {
            self.observe(APP_TIME, app);
        }
        self.observe(TOTAL_TIME, req.total_us);
        self.bump(SCALARS + Counter::BytesReceived as usize, req.received);
        self.bump(SCALARS + Counter::BytesSent as usize, req.sent);
        self.bump(GAUGES + Gauge::InFlight as usize, u64::MAX);
    }
}

/// The index of `method` in `METHODS` (`other` for any not named there).
#[inline]
fn method_index(method: &[u8]) -> usize {
    match method {
        b"GET" => 0,
        b"HEAD" => 1,
        b"POST" => 2,
        b"PUT" => 3,
        b"DELETE" => 4,
        b"PATCH" => 5,
        b"OPTIONS" => 6,
        _ => METHODS.len() - 1,
    }
}

/// Which part of its worker's row a thread writes, so that every cell has one writer: the
/// event loop's thread (the connections' work, and the application when it runs there)
/// writes part 0, app thread `i` of the pool part `1 + i`. A part past the table's room
/// (more threads after a reload) is the shared one, with atomic additions. Given by the
/// caller, which knows its thread, rather than read from a thread-local (in a shared
/// library, a call into the dynamic linker on every read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Writer(usize);

impl Writer {
    pub(crate) const LOOP: Writer = Writer(0);

    pub(crate) fn pool(thread: usize) -> Writer {
        Writer(1 + thread)
    }
}

/// One finished request, as the metrics count it.
pub(crate) struct Finished<'a> {
    pub method: &'a [u8],
    pub status: u16,
    /// Microseconds from the application's call to the end of its response (`None`: a
    /// static file, which no application served).
    pub app_us: Option<u64>,
    /// Microseconds from the request's first byte to the end of its response.
    pub total_us: u64,
    pub received: u64,
    pub sent: u64,
}

impl<'a> Finished<'a> {
    /// The request of `head`, answered with `status` and `sent` bytes (head and body),
    /// `total_us` after its first byte and, when an application served it, `app_us` after
    /// its call.
    pub(crate) fn of(
        head: &'a RequestHead,
        status: u16,
        sent: u64,
        total_us: u64,
        app_us: Option<u64>,
    ) -> Finished<'a> {
        let body = match head.framing {
            BodyFraming::Length(n) => n,
            _ => 0,
        };
        Finished {
            method: head.method(),
            status,
            app_us,
            total_us,
            received: head.buf.len() as u64 + body,
            sent,
        }
    }
}

#[pyclass(module = "qiao._qiao", frozen)]
pub struct Metrics {
    /// `slots * stride` cells; a worker writes only its row, the master reads them all.
    cells: SharedMap,
    slots: usize,
    /// App threads the table was made for: each has a part of the row and a request text.
    threads: usize,
    /// The parts of a row (of `ROW` cells each) with one writer: the I/O thread's (0) and
    /// one per app thread; one more after them is shared, with atomic additions, by the
    /// threads of a worker that has more app threads than the table (after a reload).
    private: usize,
    /// Cells per row: `private + 1` parts, then `threads` texts.
    stride: usize,
    /// The master's: the counters of the workers that are gone (folded at their exit).
    folded: Mutex<Vec<u64>>,
}

impl Metrics {
    /// `len` cells of row `slot` from its cell `index`.
    fn cells(&self, slot: usize, index: usize, len: usize) -> &[AtomicU64] {
        assert!(slot < self.slots && index + len <= self.stride);
        // SAFETY: the cells are inside the mapping (checked above). The mapping is
        // zero-filled (a valid AtomicU64) and its cells are only ever accessed atomically,
        // by this and the other processes that share it.
        unsafe {
            let first = self
                .cells
                .as_ptr()
                .cast::<AtomicU64>()
                .add(slot * self.stride + index);
            std::slice::from_raw_parts(first, len)
        }
    }

    fn cell(&self, slot: usize, index: usize) -> &AtomicU64 {
        &self.cells(slot, index, 1)[0]
    }

    /// The part of worker `slot`'s row `writer` writes (found once for all of a request's
    /// additions: one bounds check).
    fn part(&self, slot: usize, writer: Writer) -> AnyPart<'_> {
        let n = writer.0.min(self.private);
        let cells = self.cells(slot, n * ROW, ROW);
        let cells = cells.try_into().expect("a part is a row long");
        if n < self.private {
            AnyPart::Own(Part { cells })
        } else {
            AnyPart::Shared(Part { cells })
        }
    }

    fn add(&self, slot: usize, writer: Writer, index: usize, n: u64) {
        match self.part(slot, writer) {
            AnyPart::Own(part) => part.bump(index, n),
            AnyPart::Shared(part) => part.bump(index, n),
        }
    }

    pub(crate) fn count(&self, slot: usize, writer: Writer, counter: Counter, n: u64) {
        self.add(slot, writer, SCALARS + counter as usize, n);
    }

    /// Moves gauge `gauge` of worker `slot` up (`up`) or down by one.
    /// (One part may go below zero, as when a request is counted in flight by one
    /// thread and out by another: the sum of the parts stays right, additions wrapping.)
    pub(crate) fn gauge(&self, slot: usize, writer: Writer, gauge: Gauge, up: bool) {
        let n = if up { 1 } else { u64::MAX };
        self.add(slot, writer, GAUGES + gauge as usize, n);
    }

    /// A request refused before the application, with `status`.
    pub(crate) fn refused(&self, slot: usize, writer: Writer, status: u16) {
        let i = REFUSED
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REFUSED.len());
        self.add(slot, writer, REFUSALS + i, 1);
    }

    /// A request's response is over: it is counted, and no longer in flight.
    pub(crate) fn finished(&self, slot: usize, writer: Writer, req: &Finished<'_>) {
        match self.part(slot, writer) {
            AnyPart::Own(part) => part.finished(req),
            AnyPart::Shared(part) => part.finished(req),
        }
    }

    /// App thread `thread` of worker `slot` starts serving `method` `path` (the path only:
    /// a query string may carry secrets). A seqlock: the reader retries a torn read.
    pub(crate) fn serving(&self, slot: usize, thread: usize, method: &[u8], path: &[u8]) {
        let mut text = [0u8; TEXT_BYTES];
        let m = method.len().min(TEXT_BYTES);
        text[..m].copy_from_slice(&method[..m]);
        if m < TEXT_BYTES {
            text[m] = b' ';
            let p = path.len().min(TEXT_BYTES - m - 1);
            text[m + 1..m + 1 + p].copy_from_slice(&path[..p]);
        }
        let len = (method.len() + 1 + path.len()).min(TEXT_BYTES);
        self.serving_text(slot, thread, &text, len);
    }

    /// `serving` with its text already joined: the first `len` bytes of `line` (`METHOD
    /// path`, as the usual request line holds it: then nothing is put together first),
    /// cut at 64 bytes. The text is written a word at a time; where `line` goes on past
    /// it (the rest of the request line), its last word is read whole and what is past
    /// the text masked off.
    pub(crate) fn serving_text(&self, slot: usize, thread: usize, line: &[u8], len: usize) {
        if thread >= self.threads {
            return;
        }
        let len = len.min(TEXT_BYTES).min(line.len());
        let cells = self.cells(slot, self.texts() + thread * TEXT, TEXT);
        let (seq, room) = cells.split_first().expect("a text has its sequence cell");
        // One writer per text (its thread), so a load then a store is not a race.
        let n = seq.load(Ordering::Relaxed);
        seq.store(n.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let whole = len / 8;
        for (cell, word) in room.iter().zip(line[..whole * 8].chunks_exact(8)) {
            cell.store(
                u64::from_le_bytes(word.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
        // Then the word holding the text's end and its terminating zero (the next word when
        // the text ends on a word's edge), unless the text fills the room; what follows the
        // zero is never read.
        if let Some(cell) = room.get(whole) {
            let at = whole * 8;
            let word = match line.get(at..at + 8) {
                Some(word) => u64::from_le_bytes(word.try_into().expect("8 bytes")),
                None => {
                    let mut word = [0u8; 8];
                    word[..line.len() - at].copy_from_slice(&line[at..]);
                    u64::from_le_bytes(word)
                }
            };
            let mask = (1u64 << ((len % 8) * 8)) - 1;
            cell.store(word & mask, Ordering::Relaxed);
        }
        seq.store(n.wrapping_add(2), Ordering::Release);
    }

    fn text(&self, slot: usize, thread: usize) -> Option<String> {
        let base = self.texts() + thread * TEXT;
        for _ in 0..100 {
            let before = self.cell(slot, base).load(Ordering::Acquire);
            let mut text = Vec::with_capacity(TEXT_BYTES);
            for i in 0..TEXT_BYTES / 8 {
                let word = self.cell(slot, base + 1 + i).load(Ordering::Relaxed);
                text.extend_from_slice(&word.to_le_bytes());
            }
            fence(Ordering::Acquire);
            let after = self.cell(slot, base).load(Ordering::Relaxed);
            if before == after && before % 2 == 0 {
                if before == 0 {
                    return None;
                }
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                return Some(String::from_utf8_lossy(&text[..end]).into_owned());
            }
            std::hint::spin_loop();
        }
        None
    }

    pub(crate) fn rows(&self) -> usize {
        self.slots
    }

    /// Where a row's texts begin, after its parts.
    fn texts(&self) -> usize {
        (self.private + 1) * ROW
    }

    /// The counters and gauges of a row: the sum of its parts (not its texts).
    fn row(&self, slot: usize) -> Vec<u64> {
        let mut sum = vec![0u64; ROW];
        for part in 0..=self.private {
            for (i, total) in sum.iter_mut().enumerate() {
                let value = self.cell(slot, part * ROW + i).load(Ordering::Relaxed);
                *total = total.wrapping_add(value);
            }
        }
        sum
    }
}

#[pymethods]
impl Metrics {
    /// Maps room for `slots` workers, and the request text of `threads` app threads each.
    #[new]
    #[pyo3(signature = (slots, threads = 1))]
    fn new(slots: usize, threads: usize) -> PyResult<Metrics> {
        if slots == 0 {
            return Err(PyValueError::new_err("slots must be at least 1"));
        }
        let private = 1 + threads;
        let stride = (private + 1) * ROW + threads * TEXT;
        let cells = SharedMap::new(slots * stride * std::mem::size_of::<AtomicU64>())
            .map_err(|e| PyOSError::new_err(format!("cannot map the metrics table: {e}")))?;
        Ok(Metrics {
            cells,
            slots,
            threads,
            private,
            stride,
            folded: Mutex::new(vec![0; ROW]),
        })
    }

    /// What app thread `thread` of worker `slot` serves or served last: `METHOD /path`
    /// (None before its first request, or past the threads the table has room for).
    fn request(&self, slot: usize, thread: usize) -> PyResult<Option<String>> {
        check(self, slot)?;
        Ok((thread < self.threads)
            .then(|| self.text(slot, thread))
            .flatten())
    }

    /// The layout of a row, for the reader: `methods`, `classes` (the request grid is
    /// method-major), `bounds` (bucket upper bounds in seconds, `+Inf` left out), `codes`
    /// (one cell each), `counters`, `refused` (statuses; one more cell follows for the
    /// others) and `gauges`, in the order of the cells.
    #[staticmethod]
    fn schema() -> Schema {
        (
            METHODS.to_vec(),
            CLASSES.to_vec(),
            BOUNDS_US.iter().map(|&us| us as f64 / 1e6).collect(),
            (FIRST_CODE..FIRST_CODE + CODES as u16).collect(),
            COUNTER_NAMES.to_vec(),
            REFUSED.to_vec(),
            GAUGE_NAMES.to_vec(),
        )
    }

    #[getter]
    fn slots(&self) -> usize {
        self.slots
    }

    /// Clears a row for a new worker (the master, before forking it).
    fn reset(&self, slot: usize) -> PyResult<()> {
        check(self, slot)?;
        for i in 0..self.stride {
            self.cell(slot, i).store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Adds the counters of the row of a worker that is gone to the master's totals and
    /// clears the row (its gauges are dropped: nothing of it is in flight any more).
    fn fold(&self, slot: usize) -> PyResult<()> {
        check(self, slot)?;
        let row = self.row(slot);
        if let Ok(mut folded) = self.folded.lock() {
            for (total, value) in folded.iter_mut().zip(&row[..GAUGES]) {
                *total = total.wrapping_add(*value);
            }
        }
        self.reset(slot)
    }

    /// The cells of the row of the worker in `slot`.
    #[pyo3(name = "row")]
    fn py_row(&self, slot: usize) -> PyResult<Vec<u64>> {
        check(self, slot)?;
        Ok(self.row(slot))
    }

    /// The sum of the rows in `slots` (the live workers') and of the folded totals.
    fn totals(&self, slots: Vec<usize>) -> PyResult<Vec<u64>> {
        let mut sum = self.folded.lock().map(|f| f.clone()).unwrap_or_default();
        sum.resize(ROW, 0);
        for slot in slots {
            check(self, slot)?;
            for (total, value) in sum.iter_mut().zip(self.row(slot)) {
                *total = total.wrapping_add(value);
            }
        }
        Ok(sum)
    }
}

/// A worker's error log counts its calls (`Logged`) in its row: in the part shared by
/// threads without one of their own, with atomic additions, since any thread may log (a
/// line costs a write to the log anyway).
pub(crate) struct LogTally {
    table: Py<Metrics>,
    slot: usize,
}

impl LogTally {
    pub(crate) fn new(py: Python<'_>, table: &Py<Metrics>, slot: usize) -> LogTally {
        LogTally {
            table: table.clone_ref(py),
            slot,
        }
    }
}

impl Tally for LogTally {
    fn logged(&self, kind: Logged) {
        let m = self.table.get();
        let index = SCALARS + Counter::LogCritical as usize + kind as usize;
        m.add(self.slot, Writer(m.private), index, 1);
    }
}

fn check(metrics: &Metrics, slot: usize) -> PyResult<()> {
    if slot < metrics.slots {
        Ok(())
    } else {
        Err(PyIndexError::new_err(format!(
            "metrics slot {slot} out of range ({} slots)",
            metrics.slots
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &'static [u8], status: u16, ms: u64) -> Finished<'static> {
        Finished {
            method,
            status,
            app_us: Some(ms * 1_000),
            total_us: (ms + 1) * 1_000,
            received: 100,
            sent: 1_000,
        }
    }

    #[test]
    fn a_request_lands_in_its_method_class_and_buckets() {
        let m = Metrics::new(2, 1).unwrap();
        m.finished(1, Writer::LOOP, &request(b"POST", 201, 3));
        m.finished(1, Writer::LOOP, &request(b"BREW", 418, 0));
        let row = m.row(1);
        assert_eq!(row[GRID + 2 * CLASSES.len() + 1], 1, "POST 2xx");
        assert_eq!(row[GRID + 7 * CLASSES.len() + 3], 1, "other 4xx");
        assert_eq!(row[STATUS_CODES + 101], 1, "201");
        assert_eq!(row[STATUS_CODES + 318], 1, "418");
        // 3 ms is in the 5 ms bucket (index 2), 0 ms in the first.
        assert_eq!(row[APP_TIME + 2], 1);
        assert_eq!(row[APP_TIME], 1);
        assert_eq!(row[APP_TIME + BUCKETS], 3_000);
        assert_eq!(row[TOTAL_TIME + BUCKETS], 5_000);
        assert_eq!(row[SCALARS + Counter::BytesSent as usize], 2_000);
        assert!(m.row(0).iter().all(|&c| c == 0));
    }

    /// The methods counted by name are counted under their own name, any other as
    /// `other` (the schema's order is the cells' order).
    #[test]
    fn methods_land_in_their_schema_cells() {
        for (i, name) in METHODS[..METHODS.len() - 1].iter().enumerate() {
            assert_eq!(method_index(name.as_bytes()), i, "{name}");
        }
        for other in [&b"get"[..], b"BREW", b"", b"GETS", b"CONNECT"] {
            assert_eq!(METHODS[method_index(other)], "other");
        }
    }

    /// A bound is inclusive (Prometheus' `le`): exactly 1 ms is in the 1 ms bucket; past
    /// the last bound is `+Inf`.
    #[test]
    fn bucket_bounds_are_inclusive() {
        let m = Metrics::new(1, 1).unwrap();
        m.finished(0, Writer::LOOP, &request(b"GET", 200, 1));
        m.finished(0, Writer::LOOP, &request(b"GET", 200, 60_000));
        let row = m.row(0);
        assert_eq!(row[APP_TIME], 1);
        assert_eq!(row[APP_TIME + BUCKETS - 1], 1);
    }

    /// A thread's request text reads back whole, cut at 64 bytes; a thread past the table's
    /// room is not recorded.
    #[test]
    fn request_text_reads_back() {
        let m = Metrics::new(2, 2).unwrap();
        assert_eq!(m.request(1, 0).unwrap(), None);
        m.serving(1, 1, b"GET", b"/a/b");
        assert_eq!(m.request(1, 1).unwrap().as_deref(), Some("GET /a/b"));
        m.serving(1, 1, b"POST", &[b'x'; 100]);
        let long = m.request(1, 1).unwrap().unwrap();
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("POST xxx"));
        // A shorter text after a longer one: nothing of the longer one's tail shows.
        m.serving(1, 1, b"GET", b"/x");
        assert_eq!(m.request(1, 1).unwrap().as_deref(), Some("GET /x"));
        m.serving(1, 1, b"GET", b"/abcdefghij");
        m.serving(1, 1, b"PUT", b"/abc");
        assert_eq!(m.request(1, 1).unwrap().as_deref(), Some("PUT /abc"));
        // Read straight from a request line holding both (and then cut at 64 bytes, or
        // ending on a word's edge, its terminating zero in the word after).
        let line = b"GET /from/the/line?q=1 HTTP/1.1";
        m.serving_text(1, 1, line, 18);
        assert_eq!(
            m.request(1, 1).unwrap().as_deref(),
            Some("GET /from/the/line")
        );
        let long = [b"PUT ".as_slice(), &[b'y'; 90]].concat();
        m.serving_text(1, 1, &long, long.len());
        assert_eq!(
            m.request(1, 1).unwrap().unwrap(),
            String::from_utf8_lossy(&long[..64])
        );
        m.serving_text(1, 1, line, 8);
        assert_eq!(m.request(1, 1).unwrap().as_deref(), Some("GET /fro"));
        // A line that ends with the text: its last word is put together, not read whole.
        m.serving_text(1, 1, &line[..13], 13);
        assert_eq!(m.request(1, 1).unwrap().as_deref(), Some("GET /from/the"));
        m.serving(1, 1, b"POST", &[b'x'; 100]);
        m.serving(1, 2, b"GET", b"/");
        assert_eq!(m.request(1, 2).unwrap(), None);
        m.finished(1, Writer::LOOP, &request(b"GET", 200, 1));
        assert_eq!(
            m.request(1, 1).unwrap().unwrap().len(),
            64,
            "texts apart from counters"
        );
        m.reset(1).unwrap();
        assert_eq!(m.request(1, 1).unwrap(), None);
    }

    /// A gone worker's counters stay in the totals; its gauges do not.
    #[test]
    fn folding_keeps_counters_and_drops_gauges() {
        let m = Metrics::new(2, 1).unwrap();
        m.finished(0, Writer::LOOP, &request(b"GET", 200, 1));
        m.gauge(0, Writer::LOOP, Gauge::InFlight, true);
        m.refused(0, Writer::LOOP, 431);
        m.refused(0, Writer::LOOP, 505);
        m.gauge(1, Writer::LOOP, Gauge::InFlight, true);
        m.finished(1, Writer::LOOP, &request(b"GET", 500, 1));
        m.fold(0).unwrap();
        assert!(m.row(0).iter().all(|&c| c == 0));
        let totals = m.totals(vec![1]).unwrap();
        assert_eq!(totals[GRID + 1], 1);
        assert_eq!(totals[GRID + 4], 1);
        assert_eq!(totals[REFUSALS + 4], 1);
        assert_eq!(totals[REFUSALS + REFUSED.len()], 1);
        assert_eq!(totals[GAUGES + Gauge::InFlight as usize], 0);
        assert!(m.totals(vec![2]).is_err());
    }

    /// Threads of one worker add to its row at once: no count is lost.
    #[test]
    fn concurrent_adds_are_all_counted() {
        // The event loop's thread and two app threads with parts of their own, and three
        // threads past the table's room sharing the last part (a reload raised --threads).
        let m = Metrics::new(1, 2).unwrap();
        std::thread::scope(|scope| {
            for writer in 0..6 {
                let m = &m;
                scope.spawn(move || {
                    let writer = Writer(writer);
                    for _ in 0..10_000 {
                        m.gauge(0, writer, Gauge::InFlight, true);
                        m.finished(0, writer, &request(b"GET", 200, 0));
                    }
                });
            }
        });
        let row = m.row(0);
        assert_eq!(row[GRID + 1], 60_000);
        assert_eq!(row[GAUGES + Gauge::InFlight as usize], 0);
    }

    /// A worker's error-log calls land in its row by kind, from any thread, and outlive it
    /// as the other counters do.
    #[test]
    fn log_calls_are_counted_by_kind() {
        Python::initialize();
        let m = Python::attach(|py| Py::new(py, Metrics::new(2, 1).unwrap()).unwrap());
        let tally = Python::attach(|py| LogTally::new(py, &m, 1));
        std::thread::scope(|scope| {
            for _ in 0..3 {
                let tally = &tally;
                scope.spawn(move || {
                    tally.logged(Logged::Warning);
                    tally.logged(Logged::Exception);
                });
            }
        });
        let at = SCALARS + Counter::LogCritical as usize;
        let m = m.get();
        assert_eq!(&m.row(1)[at..at + 4], &[0, 0, 3, 3]);
        m.fold(1).unwrap();
        assert_eq!(&m.totals(vec![]).unwrap()[at..at + 4], &[0, 0, 3, 3]);
    }

    /// A request counted in flight by one thread and out by another leaves the sum at 0.
    #[test]
    fn a_gauge_moved_by_two_threads_sums_right() {
        let m = Metrics::new(1, 1).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| m.gauge(0, Writer::LOOP, Gauge::ConnectionsOpen, true));
        });
        std::thread::scope(|scope| {
            scope.spawn(|| m.gauge(0, Writer::pool(0), Gauge::ConnectionsOpen, false));
        });
        assert_eq!(m.row(0)[GAUGES + Gauge::ConnectionsOpen as usize], 0);
    }
}
