//! A table in memory shared by the master and its workers: each worker's heartbeat and,
//! per app thread, when the request it is running began. The master reads it to find a
//! request stuck past `--timeout` or a worker whose loop stopped.
//!
//! The master maps it (anonymous, shared) before it forks, so every worker sees the
//! same pages. Cells are atomics: one writer per cell, the master only reads.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::prelude::*;

/// Milliseconds on the system-wide monotonic clock (the same in every process).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[pyclass(module = "qiao._qiao", frozen)]
pub struct Scoreboard {
    /// `slots * (1 + threads)` cells: per slot a heartbeat, then one busy-since per thread.
    cells: *mut AtomicU64,
    /// Rows: the most workers that may use this board at once.
    slots: usize,
    /// Columns: the most app threads a worker using this board may have. Fixed at mapping
    /// time; a worker with more threads needs another board (the master maps one when a
    /// reload raises `--threads`).
    threads: usize,
    /// Length of the mapping, for `munmap`.
    bytes: usize,
}

// SAFETY: the cells are atomics in memory that lives as long as the Scoreboard (it is
// unmapped only on drop); nothing else is behind the pointer, so moving the board to
// another thread is sound.
unsafe impl Send for Scoreboard {}
// SAFETY: every access to the cells goes through atomic operations, so shared references
// from several threads are sound.
unsafe impl Sync for Scoreboard {}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: `cells` and `bytes` come from the mmap in `new`.
        unsafe { libc::munmap(self.cells.cast(), self.bytes) };
    }
}

impl Scoreboard {
    fn cell(&self, slot: usize, index: usize) -> &AtomicU64 {
        assert!(slot < self.slots && index <= self.threads);
        // SAFETY: the index is inside the mapping (checked above).
        unsafe { &*self.cells.add(slot * (1 + self.threads) + index) }
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

    /// App thread `thread` of worker `slot` started a request now (`busy`) or finished.
    /// Panics if the board has no column for `thread`.
    pub fn set_busy(&self, slot: usize, thread: usize, busy: bool) {
        let value = if busy { now_ms().max(1) } else { 0 };
        self.thread_cell(slot, thread)
            .store(value, Ordering::Relaxed);
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
        // SAFETY: an anonymous shared mapping; zero-filled by the kernel, which is a valid
        // AtomicU64 bit pattern.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(PyOSError::new_err(format!(
                "cannot map the scoreboard: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Scoreboard {
            cells: ptr.cast(),
            slots,
            threads,
            bytes,
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

    /// Seconds the longest-running request of the worker has been running (0 when idle).
    fn busiest(&self, slot: usize) -> PyResult<f64> {
        check(self, slot)?;
        let now = now_ms();
        let oldest = (1..=self.threads)
            .map(|i| self.cell(slot, i).load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min();
        Ok(oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0))
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
    use super::*;

    #[test]
    fn busy_and_idle_are_seen() {
        let board = Scoreboard::new(2, 3).unwrap();
        board.reset(1).unwrap();
        assert!(!board.ready(1).unwrap());
        board.beat(1);
        assert!(board.ready(1).unwrap());
        assert_eq!(board.busiest(1).unwrap(), 0.0);
        board.set_busy(1, 2, true);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(board.busiest(1).unwrap() >= 0.015);
        board.set_busy(1, 2, false);
        assert_eq!(board.busiest(1).unwrap(), 0.0);
        assert!(board.silence(1).unwrap() < 5.0);
        assert!(board.reset(2).is_err());
    }

    /// A thread index past the board's columns is refused, not folded onto another
    /// thread's cell (where one finishing would clear the other's stuck request).
    #[test]
    #[should_panic(expected = "app thread 2 has no column")]
    fn thread_without_a_column_is_refused() {
        let board = Scoreboard::new(1, 2).unwrap();
        board.set_busy(0, 2, true);
    }
}
