//! With one app thread, the I/O thread holds the GIL while it works and lets go of it only
//! while it sleeps in epoll: the GIL is released around waiting, never around work.
//! Requests then cost no GIL hand-over each, and the app's calls into Python find it
//! already held.

use std::cell::Cell;

use pyo3::ffi;

thread_local! {
    /// The state to give back when this thread lets go of the GIL, while it holds it.
    static HELD: Cell<Option<ffi::PyGILState_STATE>> = const { Cell::new(None) };
}

/// Takes the GIL for this thread (no-op if this module already holds it).
pub(super) fn hold() {
    HELD.with(|held| {
        if held.get().is_none() {
            // SAFETY: the interpreter is initialised (we were called from Python), and the
            // state is released by `let_go` on this same thread.
            held.set(Some(unsafe { ffi::PyGILState_Ensure() }));
        }
    });
}

/// Gives back the GIL taken by `hold` (no-op if not held).
pub(super) fn let_go() {
    HELD.with(|held| {
        if let Some(state) = held.take() {
            // SAFETY: `state` came from PyGILState_Ensure on this thread.
            unsafe { ffi::PyGILState_Release(state) };
        }
    });
}
