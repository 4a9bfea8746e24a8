//! The response bytes waiting for one client, as a queue of segments: small pieces (heads,
//! chunk framing, short bodies) copied into owned buffers, large `bytes` bodies kept by
//! reference to the Python object and written with `writev(2)` straight from its memory.
//! A 1 MiB body thus costs no copy in qiao before the kernel's.

use std::collections::VecDeque;
use std::io::IoSlice;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bodies at least this large are sent from the Python object instead of copied.
pub const SHARE_AT: usize = 8 * 1024;

/// At most this many segments go to one `writev` (the kernel's IOV_MAX is 1024).
const MAX_IOVECS: usize = 64;

enum Seg {
    Owned(Vec<u8>),
    /// A Python `bytes` object: immutable, so its buffer can be read without the GIL
    /// while the reference keeps it alive.
    Shared {
        _obj: Py<PyBytes>,
        ptr: *const u8,
        len: usize,
    },
}

// SAFETY: `ptr` points into the immutable buffer of the `bytes` object that `_obj` keeps
// alive; reading it from any thread is sound (nothing ever writes it), and Py<T> may be
// dropped from any thread.
unsafe impl Send for Seg {}
unsafe impl Sync for Seg {}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Owned(v) => v,
            // SAFETY: see the `Send` impl: the buffer lives as long as `_obj`.
            Seg::Shared { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

#[derive(Default)]
pub struct OutBuf {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already written.
    front_sent: usize,
    /// Bytes queued and not yet written.
    len: usize,
    /// An emptied owned buffer kept to be reused, so steady traffic allocates nothing.
    spare: Vec<u8>,
}

impl OutBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `bytes`.
    pub fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Seg::Owned(v)) = self.segs.back_mut() {
            v.extend_from_slice(bytes);
            return;
        }
        let mut v = std::mem::take(&mut self.spare);
        v.extend_from_slice(bytes);
        self.segs.push_back(Seg::Owned(v));
    }

    /// Lets `write` append to the owned buffer at the back (for code that formats into a
    /// `Vec<u8>`, such as the chunk-size line or an error response).
    pub fn write_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if !matches!(self.segs.back(), Some(Seg::Owned(_))) {
            let v = std::mem::take(&mut self.spare);
            self.segs.push_back(Seg::Owned(v));
        }
        let Some(Seg::Owned(v)) = self.segs.back_mut() else {
            unreachable!("an owned segment was just pushed")
        };
        let before = v.len();
        write(v);
        self.len += v.len() - before;
    }

    /// Queues `data`, by reference when it is large.
    pub fn push_bytes(&mut self, data: &Bound<'_, PyBytes>) {
        let bytes = data.as_bytes();
        if bytes.len() < SHARE_AT {
            return self.extend(bytes);
        }
        self.len += bytes.len();
        self.segs.push_back(Seg::Shared {
            _obj: data.clone().unbind(),
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        });
    }

    /// Up to MAX_IOVECS slices of what is queued, oldest first.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut out = Vec::with_capacity(self.segs.len().min(MAX_IOVECS));
        for (i, seg) in self.segs.iter().take(MAX_IOVECS).enumerate() {
            let b = seg.bytes();
            out.push(IoSlice::new(if i == 0 { &b[self.front_sent..] } else { b }));
        }
        out
    }

    /// Drops the first `n` queued bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.segs.front().expect("advance within what is queued");
            let left = front.bytes().len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.pop_front();
        }
        while self
            .segs
            .front()
            .is_some_and(|s| s.bytes().len() == self.front_sent)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        self.front_sent = 0;
        if let Some(Seg::Owned(mut v)) = self.segs.pop_front() {
            if v.capacity() > self.spare.capacity() && v.capacity() <= 64 * 1024 {
                v.clear();
                self.spare = v;
            }
        }
    }

    pub fn clear(&mut self) {
        while !self.segs.is_empty() {
            self.pop_front();
        }
        self.len = 0;
    }

    /// Everything queued, copied (tests and diagnostics).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for s in self.slices() {
            v.extend_from_slice(&s);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_pieces_coalesce_and_advance_across_segments() {
        let mut out = OutBuf::default();
        out.extend(b"HTTP/1.1 200 OK\r\n\r\n");
        out.extend(b"body");
        assert_eq!(out.slices().len(), 1);
        assert_eq!(out.to_vec(), b"HTTP/1.1 200 OK\r\n\r\nbody");
        out.advance(5);
        assert_eq!(out.to_vec(), b"1.1 200 OK\r\n\r\nbody");
        out.advance(out.len());
        assert!(out.is_empty() && out.slices().is_empty());
    }

    #[test]
    fn large_bytes_are_shared_not_copied() {
        Python::initialize();
        Python::attach(|py| {
            let big = PyBytes::new(py, &vec![b'x'; SHARE_AT]);
            let mut out = OutBuf::default();
            out.extend(b"head");
            out.push_bytes(&big);
            out.extend(b"tail");
            let slices = out.slices();
            assert_eq!(slices.len(), 3);
            assert_eq!(slices[1].as_ptr(), big.as_bytes().as_ptr());
            drop(slices);
            out.advance(4 + 10);
            assert_eq!(out.len(), SHARE_AT - 10 + 4);
            assert_eq!(&out.to_vec()[SHARE_AT - 10..], b"tail");
        });
    }
}
