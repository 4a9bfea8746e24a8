//! The request body as the WSGI layer receives it (`Body`), and `BodyBuf`, the memory for
//! one read whole before the app runs, allocated once at the size the request declared and
//! filled in place by the connection as the body arrives.
//!
//! With one app thread the I/O thread holds the GIL (see `gil`), so the body is read
//! straight into a `bytes` object of its final size, and `wsgi.input.read()` of the whole
//! body hands the app that very object. Read through the connection's buffer, a body is
//! copied twice in user space: when the read buffer grows to hold it, and into the
//! `bytes` that `read()` makes; this way only what came in with the head is copied. With a
//! thread pool the I/O thread must not take the GIL, so the body goes to a `Vec` and
//! `read()` copies it out.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::wsgi::sink::BodySource;

/// The request body as the connection hands it over: always read whole before the app
/// runs, so that no client can hold an application thread while it sends.
pub(crate) enum Body {
    Empty,
    /// In memory.
    Buffered(Bytes),
    /// In memory, in the `bytes` object `read()` of the whole body returns.
    Object(Py<PyBytes>),
    /// Outside memory (spooled to a file), read through its source.
    Source(Box<dyn BodySource>),
}

enum Owner {
    Vec(Vec<u8>),
    /// A `bytes` object no one else has seen yet, so its contents may still be written.
    Py(Py<PyBytes>),
}

/// A new `bytes` object of `n` bytes whose contents are still to be written, and where
/// they start. Nobody else can see it until the caller hands it out, so the caller fills
/// all `n` bytes first.
pub(crate) fn unfilled_bytes(py: Python<'_>, n: usize) -> PyResult<(Bound<'_, PyBytes>, *mut u8)> {
    // SAFETY: a NULL source asks CPython for an uninitialised object of `n` bytes, which
    // we own (refcount 1).
    let obj = unsafe {
        let raw = ffi::PyBytes_FromStringAndSize(std::ptr::null(), n as ffi::Py_ssize_t);
        Bound::from_owned_ptr_or_err(py, raw)?.cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: `obj` is a bytes object; its storage never moves while it lives.
    let ptr = unsafe { ffi::PyBytes_AsString(obj.as_ptr()) }.cast::<u8>();
    Ok((obj, ptr))
}

/// A request body's memory, filled by the connection as the body arrives.
pub(crate) struct BodyBuf {
    owner: Owner,
    /// Start of the owner's `cap` bytes of storage, of which the first `len` are filled.
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

impl BodyBuf {
    /// Storage for `n` bytes outside Python.
    pub(crate) fn heap(n: usize) -> BodyBuf {
        let mut v = Vec::with_capacity(n);
        BodyBuf {
            ptr: v.as_mut_ptr(),
            owner: Owner::Vec(v),
            cap: n,
            len: 0,
        }
    }

    /// A `bytes` object of `n` bytes, its contents still to be written.
    pub(crate) fn python(py: Python<'_>, n: usize) -> PyResult<BodyBuf> {
        let (obj, ptr) = unfilled_bytes(py, n)?;
        Ok(BodyBuf {
            owner: Owner::Py(obj.unbind()),
            ptr,
            cap: n,
            len: 0,
        })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Moves what `src` already holds of the body (from its start) into the buffer.
    pub(crate) fn take_from(&mut self, src: &mut BytesMut) {
        let n = src.len().min(self.cap - self.len);
        // SAFETY: `n` bytes fit the unfilled part, and `src` does not overlap our storage.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(self.len), n) };
        self.len += n;
        src.advance(n);
    }

    /// The part still to be filled.
    pub(crate) fn unfilled(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the storage holds `cap` bytes, `len` of them filled; `&mut self` makes
        // this the only view of the rest.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(self.len).cast::<MaybeUninit<u8>>(),
                self.cap - self.len,
            )
        }
    }

    /// Marks `n` more bytes as filled.
    ///
    /// # Safety
    /// The first `n` bytes of `unfilled()` must have been written.
    pub(crate) unsafe fn filled(&mut self, n: usize) {
        debug_assert!(n <= self.cap - self.len);
        self.len += n;
    }

    /// The full body, as the app's thread takes it.
    pub(crate) fn into_body(self) -> Body {
        debug_assert!(self.is_full());
        match self.owner {
            Owner::Vec(mut v) => {
                // SAFETY: every byte up to `len` was written.
                unsafe { v.set_len(self.len) };
                Body::Buffered(Bytes::from(v))
            }
            Owner::Py(obj) => Body::Object(obj),
        }
    }
}
