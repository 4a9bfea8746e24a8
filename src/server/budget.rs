//! The worker's output budget: the response bytes all its connections hold in memory
//! for slow clients, against `--output-budget`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The output one worker may hold in memory for its clients across all connections
/// (`--output-budget`): past it, pooled producers wait and inline streams are no longer
/// gathered.
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit: if limit == 0 { usize::MAX } else { limit },
        }
    }

    /// Moves a holder's charge from `*charged` to `now`.
    pub(super) fn adjust(&self, charged: &mut usize, now: usize) {
        if now > *charged {
            self.charge(now - *charged);
        } else {
            self.release(*charged - now);
        }
        *charged = now;
    }

    pub(super) fn charge(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    pub(super) fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}
