//! The response bytes waiting for one client, as a queue of segments: small pieces (heads,
//! chunk framing, short bodies) copied into owned buffers, large `bytes` bodies kept by
//! reference to the Python object and written with `writev(2)` straight from its memory,
//! and ranges of files (`wsgi.file_wrapper`) sent with `sendfile(2)`. A 1 MiB body thus
//! costs no copy in qiao before the kernel's, and a file none at all.
//!
//! It is data only: the transport that owns the socket writes it (see `transport`).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bodies at least this large are sent from the Python object instead of copied.
pub(super) const SHARE_AT: usize = 8 * 1024;

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
    /// `len` bytes of a file from `offset`, through our own duplicate of its descriptor
    /// (the app may close its file as soon as the response is handed over).
    File {
        fd: OwnedFd,
        offset: u64,
        len: usize,
    },
}

// SAFETY: `ptr` points into the immutable buffer of the `bytes` object that `_obj` keeps
// alive; reading it from any thread is sound (nothing ever writes it), and Py<T> may be
// dropped from any thread.
unsafe impl Send for Seg {}
// SAFETY: as for `Send`: a shared `Seg` only ever reads the immutable buffer.
unsafe impl Sync for Seg {}

impl Seg {
    /// The bytes of a memory segment; empty for a file range.
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Owned(v) => v,
            // SAFETY: see the `Send` impl: the buffer lives as long as `_obj`.
            Seg::Shared { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Seg::File { .. } => &[],
        }
    }

    fn len(&self) -> usize {
        match self {
            Seg::File { len, .. } => *len,
            _ => self.bytes().len(),
        }
    }
}

#[derive(Default)]
pub(super) struct OutBuf {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already written.
    front_sent: usize,
    /// Bytes queued and not yet written.
    len: usize,
    /// Of those, the bytes in file ranges (they hold no memory).
    file_len: usize,
    /// An emptied owned buffer kept to be reused, so steady traffic allocates nothing.
    spare: Vec<u8>,
}

impl OutBuf {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes queued in memory (file ranges not counted): what backpressure bounds.
    pub(super) fn memory_len(&self) -> usize {
        self.len - self.file_len
    }

    /// Queues a copy of `bytes`.
    pub(super) fn extend(&mut self, bytes: &[u8]) {
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
    pub(super) fn write_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
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
    pub(super) fn push_bytes(&mut self, data: &Bound<'_, PyBytes>) {
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

    /// Queues `len` bytes of the file `fd` from `offset` (sent with `sendfile(2)`).
    pub(super) fn push_file(&mut self, fd: OwnedFd, offset: u64, len: usize) {
        if len == 0 {
            return;
        }
        self.len += len;
        self.file_len += len;
        self.segs.push_back(Seg::File { fd, offset, len });
    }

    /// Up to MAX_IOVECS slices of the memory segments at the front (up to the first file
    /// range), oldest first.
    #[inline]
    pub(super) fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut out = Vec::with_capacity(self.segs.len().min(MAX_IOVECS));
        for (i, seg) in self.segs.iter().take(MAX_IOVECS).enumerate() {
            if matches!(seg, Seg::File { .. }) {
                break;
            }
            let b = seg.bytes();
            out.push(IoSlice::new(if i == 0 { &b[self.front_sent..] } else { b }));
        }
        out
    }

    /// The file range at the front of the queue, if the front is one: the descriptor, the
    /// offset of its first unsent byte, and the bytes left of it.
    pub(super) fn front_file(&self) -> Option<(BorrowedFd<'_>, u64, usize)> {
        match self.segs.front() {
            Some(Seg::File { fd, offset, len }) => Some((
                fd.as_fd(),
                offset + self.front_sent as u64,
                len - self.front_sent,
            )),
            _ => None,
        }
    }

    /// Whether a file range follows the first `n` segments (the memory ones `slices`
    /// returned): a writer then tells TCP more comes at once.
    pub(super) fn file_after(&self, n: usize) -> bool {
        matches!(self.segs.get(n), Some(Seg::File { .. }))
    }

    /// Moves everything queued in `other` to the back of this queue.
    pub(super) fn append(&mut self, other: &mut OutBuf) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            std::mem::swap(&mut self.segs, &mut other.segs);
            std::mem::swap(&mut self.front_sent, &mut other.front_sent);
            self.len = std::mem::take(&mut other.len);
            self.file_len = std::mem::take(&mut other.file_len);
            return;
        }
        // The front of `other` may be partly sent; only its unsent part moves.
        if other.front_sent > 0 {
            let sent = std::mem::take(&mut other.front_sent);
            match other.segs.pop_front() {
                Some(Seg::Owned(v)) => {
                    other.len -= v.len() - sent;
                    self.extend(&v[sent..]);
                }
                Some(Seg::File { fd, offset, len }) => {
                    other.len -= len - sent;
                    other.file_len -= len - sent;
                    self.push_file(fd, offset + sent as u64, len - sent);
                }
                Some(Seg::Shared { _obj, ptr, len }) => {
                    other.len -= len - sent;
                    self.len += len - sent;
                    // SAFETY: `sent <= len`: the pointer stays inside the object's buffer.
                    let ptr = unsafe { ptr.add(sent) };
                    self.segs.push_back(Seg::Shared {
                        _obj,
                        ptr,
                        len: len - sent,
                    });
                }
                None => {}
            }
        }
        self.len += std::mem::take(&mut other.len);
        self.file_len += std::mem::take(&mut other.file_len);
        self.segs.append(&mut other.segs);
    }

    /// Drops the first `n` queued bytes (they were written).
    #[inline]
    pub(super) fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.segs.front().expect("advance within what is queued");
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                if matches!(front, Seg::File { .. }) {
                    self.file_len -= n;
                }
                return;
            }
            n -= left;
            self.pop_front();
        }
        while self
            .segs
            .front()
            .is_some_and(|s| s.len() == self.front_sent)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let sent = std::mem::take(&mut self.front_sent);
        match self.segs.pop_front() {
            Some(Seg::Owned(mut v))
                if v.capacity() > self.spare.capacity() && v.capacity() <= 64 * 1024 =>
            {
                v.clear();
                self.spare = v;
            }
            Some(Seg::File { len, .. }) => self.file_len -= len - sent,
            _ => {}
        }
    }

    pub(super) fn clear(&mut self) {
        while !self.segs.is_empty() {
            self.pop_front();
        }
        self.len = 0;
        self.file_len = 0;
    }

    /// The memory segments queued before any file range, copied.
    #[cfg(test)]
    pub(super) fn to_vec(&self) -> Vec<u8> {
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

    /// Appending keeps order and counts, and moves only the unsent part of a partly
    /// sent front segment.
    #[test]
    fn append_moves_the_unsent_bytes_in_order() {
        let mut a = OutBuf::default();
        a.extend(b"one|");
        let mut b = OutBuf::default();
        b.extend(b"two|");
        b.advance(1);
        b.extend(b"three");
        a.append(&mut b);
        assert!(b.is_empty() && b.slices().is_empty());
        assert_eq!(a.to_vec(), b"one|wo|three");
        assert_eq!(a.len(), 12);
        let mut empty = OutBuf::default();
        empty.append(&mut a);
        assert_eq!(empty.to_vec(), b"one|wo|three");
        assert!(a.is_empty());
        let file = tempfile::tempfile().unwrap();
        let mut c = OutBuf::default();
        c.push_file(OwnedFd::from(file), 10, 100);
        c.advance(40);
        empty.append(&mut c);
        assert_eq!(empty.len(), 12 + 60);
        assert_eq!(empty.memory_len(), 12);
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
