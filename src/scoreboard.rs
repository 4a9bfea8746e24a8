//! A table in memory shared by the master and its workers: each worker's heartbeat and,
//! per app thread, how long the request it is running has spent in the application. The
//! master reads it to find a request stuck past `--timeout` or a worker whose loop stopped.
//!
//! The master maps it (anonymous, shared) before it forks, so every worker sees the
//! same pages. Cells are atomics: one writer per cell, the master only reads.
//!
//! A thread's cell holds one of three states in one `u64`, so that a reader never sees
//! half of a transition:
//!
//! - `0`: idle, no request;
//! - `t` (below [`WAITING`]): running the application; `t` is when its request began,
//!   moved forward by the time it has spent waiting on its client, so that `now - t` is
//!   its time in the application alone;
//! - `WAITING | a`: blocked until its client reads the queued response, after `a`
//!   milliseconds in the application. Not counted by `--timeout`, which is for stuck
//!   applications; a client that stops reading is `--write-timeout`'s business.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::sys::{monotonic_ms as now_ms, SharedMap};

/// The flag bit of a thread cell waiting on its client; the bits below it are then the
/// milliseconds spent in the application so far (see the module's documentation).
const WAITING: u64 = 1 << 63;

#[pyclass(module = "qiao._qiao", frozen)]
pub struct Scoreboard {
    /// `slots * (1 + threads)` cells: per slot a heartbeat, then one state per app thread.
    cells: SharedMap,
    /// Rows: the most workers that may use this board at once.
    slots: usize,
    /// Columns: the most app threads a worker using this board may have. Fixed at mapping
    /// time; a worker with more threads needs another board (the master maps one when a
    /// reload raises `--threads`).
    threads: usize,
}

impl Scoreboard {
    fn cell(&self, slot: usize, index: usize) -> &AtomicU64 {
        assert!(slot < self.slots && index <= self.threads);
        // SAFETY: the index is inside the mapping (checked above).
        // The mapping is zero-filled (a valid AtomicU64) and its cells are only ever
        // accessed atomically, by this and the other processes that share it.
        unsafe {
            &*self
                .cells
                .as_ptr()
                .cast::<AtomicU64>()
                .add(slot * (1 + self.threads) + index)
        }
    }

    /// The cell of app thread `thread` of worker `slot`.
    ///
    /// Panics when the board has no column for `thread`: two threads sharing a cell would
    /// clear each other's state and let a stuck request escape `--timeout`, so a worker
    /// must be given a board with a column per app thread (see `threads`).
    fn thread_cell(&self, slot: usize, thread: usize) -> &AtomicU64 {
        assert!(
            thread < self.threads,
            "scoreboard: app thread {thread} has no column (the board has {}); \
             it must be mapped for the worker's --threads",
            self.threads
        );
        self.cell(slot, 1 + thread)
    }

    /// The worker's loop is alive.
    pub fn beat(&self, slot: usize) {
        self.cell(slot, 0).store(now_ms(), Ordering::Relaxed);
    }

    /// App thread `thread` of worker `slot` started a request at `at` (`monotonic_ms`): its
    /// time in the application starts from zero, not waiting. Panics if the board has no
    /// column for `thread`.
    pub fn set_busy(&self, slot: usize, thread: usize, at: u64) {
        self.set_busy_at(slot, thread, true, at);
    }

    /// App thread `thread` of worker `slot` finished its request: idle, whatever its state
    /// (no clock reading: an idle cell holds no time).
    pub fn set_idle(&self, slot: usize, thread: usize) {
        self.set_busy_at(slot, thread, false, 0);
    }

    /// App thread `thread` of worker `slot` starts (`waiting`) or stops waiting until its
    /// client reads the queued response. Time spent waiting does not count towards
    /// `busiest` (`--timeout`); the time in the application before and after it does.
    ///
    /// Only the thread's own writer may call it, between its `set_busy` and
    /// `set_idle`. Outside a request (idle), starting to wait while already
    /// waiting, and stopping while not waiting change nothing, so that a guard that ends a
    /// wait after the request was cleared cannot leave a thread looking busy.
    /// Panics if the board has no column for `thread`.
    pub fn set_waiting(&self, slot: usize, thread: usize, waiting: bool) {
        self.set_waiting_at(slot, thread, waiting, now_ms());
    }

    fn set_busy_at(&self, slot: usize, thread: usize, busy: bool, now: u64) {
        // 0 means idle, so a start at time 0 is recorded as 1 (1 ms more, once after boot).
        let value = if busy { now.max(1) } else { 0 };
        self.thread_cell(slot, thread)
            .store(value, Ordering::Relaxed);
    }

    fn set_waiting_at(&self, slot: usize, thread: usize, waiting: bool, now: u64) {
        let cell = self.thread_cell(slot, thread);
        // One writer per cell (this thread), so a load then a store is not a race: no one
        // else changes the cell in between (the master's `reset` is for a slot no worker
        // uses yet).
        let state = cell.load(Ordering::Relaxed);
        let next = match (state, waiting) {
            (0, _) => return,
            (s, true) if s & WAITING == 0 => WAITING | now.saturating_sub(s),
            (s, false) if s & WAITING != 0 => now.saturating_sub(s & !WAITING).max(1),
            _ => return,
        };
        cell.store(next, Ordering::Relaxed);
    }

    fn busiest_at(&self, slot: usize, now: u64) -> f64 {
        let oldest = (1..=self.threads)
            .map(|i| self.cell(slot, i).load(Ordering::Relaxed))
            .filter(|&t| t != 0 && t & WAITING == 0)
            .min();
        oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0)
    }
}

#[pymethods]
impl Scoreboard {
    /// Maps room for `slots` workers of `threads` app threads each.
    #[new]
    fn new(slots: usize, threads: usize) -> PyResult<Scoreboard> {
        if slots == 0 || threads == 0 {
            return Err(PyValueError::new_err(
                "slots and threads must be at least 1",
            ));
        }
        let bytes = slots * (1 + threads) * std::mem::size_of::<AtomicU64>();
        let cells = SharedMap::new(bytes)
            .map_err(|e| PyOSError::new_err(format!("cannot map the scoreboard: {e}")))?;
        Ok(Scoreboard {
            cells,
            slots,
            threads,
        })
    }

    #[getter]
    fn slots(&self) -> usize {
        self.slots
    }

    /// The most app threads a worker using this board may have (one column each).
    #[getter]
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Clears a slot for a new worker (the master, before forking it).
    fn reset(&self, slot: usize) -> PyResult<()> {
        check(self, slot)?;
        for i in 0..=self.threads {
            self.cell(slot, i).store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the worker in `slot` has started serving (its loop beat at least once).
    fn ready(&self, slot: usize) -> PyResult<bool> {
        check(self, slot)?;
        Ok(self.cell(slot, 0).load(Ordering::Relaxed) != 0)
    }

    /// Seconds since the worker's loop last beat.
    fn silence(&self, slot: usize) -> PyResult<f64> {
        check(self, slot)?;
        let last = self.cell(slot, 0).load(Ordering::Relaxed);
        Ok(now_ms().saturating_sub(last) as f64 / 1000.0)
    }

    /// Seconds the request of the worker that has spent the longest in the application
    /// has spent there (0 when idle). A thread waiting on its client is left out, and the
    /// time it waited is not counted once it is back in the application.
    fn busiest(&self, slot: usize) -> PyResult<f64> {
        check(self, slot)?;
        Ok(self.busiest_at(slot, now_ms()))
    }

    /// Each app thread's state, for `qiao status`: `(state, seconds)` with `state` 0 idle,
    /// 1 in the application (`seconds` there so far), 2 waiting on its client (`seconds`:
    /// its time in the application before the wait).
    fn thread_states(&self, slot: usize) -> PyResult<Vec<(u8, f64)>> {
        check(self, slot)?;
        let now = now_ms();
        Ok((1..=self.threads)
            .map(|i| match self.cell(slot, i).load(Ordering::Relaxed) {
                0 => (0, 0.0),
                s if s & WAITING != 0 => (2, (s & !WAITING) as f64 / 1000.0),
                s => (1, now.saturating_sub(s) as f64 / 1000.0),
            })
            .collect())
    }

    /// How many app threads of the worker are running a request in the application, and
    /// how many are waiting on a client to read its response: `(busy, waiting)`.
    fn threads_state(&self, slot: usize) -> PyResult<(usize, usize)> {
        check(self, slot)?;
        let (mut busy, mut waiting) = (0, 0);
        for i in 1..=self.threads {
            match self.cell(slot, i).load(Ordering::Relaxed) {
                0 => {}
                s if s & WAITING != 0 => waiting += 1,
                _ => busy += 1,
            }
        }
        Ok((busy, waiting))
    }
}

fn check(board: &Scoreboard, slot: usize) -> PyResult<()> {
    if slot < board.slots {
        Ok(())
    } else {
        Err(PyIndexError::new_err(format!(
            "scoreboard slot {slot} out of range ({} slots)",
            board.slots
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn busy_and_idle_are_seen() {
        let board = Scoreboard::new(2, 3).unwrap();
        board.reset(1).unwrap();
        assert!(!board.ready(1).unwrap());
        board.beat(1);
        assert!(board.ready(1).unwrap());
        assert_eq!(board.busiest(1).unwrap(), 0.0);
        board.set_busy(1, 2, now_ms());
        std::thread::sleep(Duration::from_millis(20));
        assert!(board.busiest(1).unwrap() >= 0.015);
        assert_eq!(board.threads_state(1).unwrap(), (1, 0));
        board.set_idle(1, 2);
        assert_eq!(board.busiest(1).unwrap(), 0.0);
        assert_eq!(board.threads_state(1).unwrap(), (0, 0));
        assert!(board.silence(1).unwrap() < 5.0);
        assert!(board.reset(2).is_err());
        assert!(board.threads_state(2).is_err());
    }

    /// A thread in the application 50 ms, then 200 ms waiting on its client, then 50 ms
    /// more: `busiest` (what `--timeout` watches) reads 100 ms, not 300.
    #[test]
    fn time_waiting_on_the_client_is_not_counted_after_it() {
        let board = Scoreboard::new(1, 2).unwrap();
        board.set_busy_at(0, 1, true, 1_000);
        board.set_waiting_at(0, 1, true, 1_050);
        board.set_waiting_at(0, 1, false, 1_250);
        assert_eq!(board.busiest_at(0, 1_300), 0.1);
        assert_eq!(board.threads_state(0).unwrap(), (1, 0));
    }

    /// The same with the real clock: whatever the sleeps really took, the 200 ms (at
    /// least) spent waiting are left out of `busiest`.
    #[test]
    fn real_wait_of_200ms_is_left_out_of_busiest() {
        let board = Scoreboard::new(1, 1).unwrap();
        let start = Instant::now();
        board.set_busy(0, 0, now_ms());
        std::thread::sleep(Duration::from_millis(20));
        board.set_waiting(0, 0, true);
        std::thread::sleep(Duration::from_millis(200));
        board.set_waiting(0, 0, false);
        std::thread::sleep(Duration::from_millis(20));
        let busiest = board.busiest(0).unwrap();
        let wall = start.elapsed().as_secs_f64();
        // Each reading is whole milliseconds: allow 2 ms of rounding either way.
        assert!(busiest >= 0.040 - 0.002, "{busiest}");
        assert!(busiest <= wall - 0.200 + 0.002, "{busiest} of {wall}");
    }

    /// A thread waiting on its client, alone, is not busy: `busiest` is 0 however long it
    /// waits, and it is counted as waiting.
    #[test]
    fn waiting_thread_alone_is_not_busy() {
        let board = Scoreboard::new(1, 4).unwrap();
        board.set_busy_at(0, 3, true, 1_000);
        board.set_waiting_at(0, 3, true, 1_010);
        assert_eq!(board.busiest_at(0, 1_010), 0.0);
        assert_eq!(board.busiest_at(0, 100_000), 0.0);
        assert_eq!(board.threads_state(0).unwrap(), (0, 1));
    }

    /// Busy and waiting threads of one worker are counted apart, and `busiest` is the
    /// busy one's time.
    #[test]
    fn busy_and_waiting_threads_are_counted_apart() {
        let board = Scoreboard::new(1, 4).unwrap();
        board.set_busy_at(0, 0, true, 1_000);
        board.set_busy_at(0, 1, true, 2_000);
        board.set_busy_at(0, 2, true, 1_500);
        board.set_waiting_at(0, 0, true, 1_100);
        assert_eq!(board.threads_state(0).unwrap(), (2, 1));
        assert_eq!(board.busiest_at(0, 3_000), 1.5);
    }

    /// Finishing the request clears the cell, waiting or not; a new request starts its
    /// application time from zero.
    #[test]
    fn clearing_ends_a_wait_and_a_new_request_starts_from_zero() {
        let board = Scoreboard::new(1, 2).unwrap();
        board.set_busy_at(0, 0, true, 1_000);
        board.set_waiting_at(0, 0, true, 5_000);
        board.set_busy_at(0, 0, false, 6_000);
        assert_eq!(board.threads_state(0).unwrap(), (0, 0));
        assert_eq!(board.busiest_at(0, 7_000), 0.0);

        board.set_busy_at(0, 0, true, 8_000);
        assert_eq!(board.busiest_at(0, 8_250), 0.25);

        board.set_waiting_at(0, 0, true, 8_300);
        board.set_busy_at(0, 0, true, 9_000); // the next request, without a clear between
        assert_eq!(board.threads_state(0).unwrap(), (1, 0));
        assert_eq!(board.busiest_at(0, 9_100), 0.1);

        board.set_busy_at(0, 0, true, 10_000);
        board.reset(0).unwrap();
        assert_eq!(board.threads_state(0).unwrap(), (0, 0));
    }

    /// Marking an idle thread, waiting twice or ending a wait that did not start change
    /// nothing: a late end of a wait cannot make an idle thread look busy, and a second
    /// start cannot lose the application time already counted.
    #[test]
    fn waits_outside_their_request_change_nothing() {
        let board = Scoreboard::new(1, 1).unwrap();
        board.set_waiting_at(0, 0, true, 1_000);
        board.set_waiting_at(0, 0, false, 2_000);
        assert_eq!(board.threads_state(0).unwrap(), (0, 0));

        board.set_busy_at(0, 0, true, 3_000);
        board.set_waiting_at(0, 0, false, 3_100); // not waiting: no change
        assert_eq!(board.busiest_at(0, 3_200), 0.2);
        board.set_waiting_at(0, 0, true, 3_300);
        board.set_waiting_at(0, 0, true, 3_900); // already waiting: still 300 ms in the app
        board.set_waiting_at(0, 0, false, 4_000);
        assert_eq!(board.busiest_at(0, 4_000), 0.3);

        board.set_busy_at(0, 0, false, 4_100);
        board.set_waiting_at(0, 0, false, 4_200); // a guard ending the wait after the clear
        assert_eq!(board.threads_state(0).unwrap(), (0, 0));
    }

    /// Waiting right at the start of a request, then back: the application time so far
    /// is 0 ms and the cell still reads busy, not idle.
    #[test]
    fn zero_application_time_is_still_busy() {
        let board = Scoreboard::new(1, 1).unwrap();
        board.set_busy_at(0, 0, true, 1_000);
        board.set_waiting_at(0, 0, true, 1_000);
        assert_eq!(board.threads_state(0).unwrap(), (0, 1));
        board.set_waiting_at(0, 0, false, 1_000);
        assert_eq!(board.threads_state(0).unwrap(), (1, 0));
        assert_eq!(board.busiest_at(0, 1_000), 0.0);
    }

    /// Workers write their own rows at the same time: no write lands in another row or
    /// column. Each slot ends with `slot` threads waiting and the others busy.
    #[test]
    fn concurrent_slots_do_not_interfere() {
        const SLOTS: usize = 4;
        const THREADS: usize = 4;
        let board = Scoreboard::new(SLOTS, THREADS).unwrap();
        std::thread::scope(|scope| {
            for slot in 0..SLOTS {
                for thread in 0..THREADS {
                    let board = &board;
                    scope.spawn(move || {
                        for _ in 0..10_000 {
                            board.set_busy(slot, thread, now_ms());
                            board.set_waiting(slot, thread, true);
                            board.set_waiting(slot, thread, false);
                            board.set_idle(slot, thread);
                        }
                        board.set_busy(slot, thread, now_ms());
                        if thread < slot {
                            board.set_waiting(slot, thread, true);
                        }
                    });
                }
            }
            // Read while they write: every count stays within the row.
            for _ in 0..1_000 {
                for slot in 0..SLOTS {
                    let (busy, waiting) = board.threads_state(slot).unwrap();
                    assert!(busy + waiting <= THREADS);
                }
            }
        });
        for slot in 0..SLOTS {
            assert_eq!(
                board.threads_state(slot).unwrap(),
                (THREADS - slot, slot),
                "slot {slot}"
            );
        }
    }

    /// A thread index past the board's columns is refused, not folded onto another
    /// thread's cell (where one finishing would clear the other's stuck request).
    #[test]
    #[should_panic(expected = "app thread 2 has no column")]
    fn thread_without_a_column_is_refused() {
        let board = Scoreboard::new(1, 2).unwrap();
        board.set_busy(0, 2, now_ms());
    }
}
