//! The response bytes waiting for one client, as a queue of segments: small pieces (heads,
//! chunk framing, short bodies) copied into owned buffers, large `bytes` bodies kept by
//! reference to the Python object and written with `writev(2)` straight from its memory,
//! and ranges of files (`wsgi.file_wrapper`) sent with `sendfile(2)`. A 1 MiB body thus
//! costs no copy in qiao before the kernel's, and a file none at all.
//!
//! `send_to` is the one place that writes a queue to a socket, one non-blocking step at a
//! time; the app's thread (`Output`) and the connection's task (`conn::send_all`) only
//! differ in how they wait when the socket is full.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::server::sockio;

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
pub struct OutBuf {
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
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes queued in memory (file ranges not counted): what backpressure bounds.
    pub fn memory_len(&self) -> usize {
        self.len - self.file_len
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

    /// Queues `len` bytes of the file `fd` from `offset` (sent with `sendfile(2)`).
    pub fn push_file(&mut self, fd: OwnedFd, offset: u64, len: usize) {
        if len == 0 {
            return;
        }
        self.len += len;
        self.file_len += len;
        self.segs.push_back(Seg::File { fd, offset, len });
    }

    /// Up to MAX_IOVECS slices of the memory segments at the front (up to the first file
    /// range), oldest first.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
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

    /// Hands the socket `fd` what it takes now from the front of the queue, without
    /// waiting: `Ok(0)` means the socket is full. One `writev` of the memory segments, or
    /// one `sendfile` of a file range.
    ///
    /// `last`: these are the connection's last bytes and a `shutdown(2)` follows. They go
    /// out with `MSG_MORE`: TCP keeps the last short segment back, and the shutdown's FIN
    /// rides on it, so response and FIN are one segment (one packet to process on each
    /// side, one wake-up of the client) instead of two.
    pub fn send_to(&mut self, fd: RawFd, last: bool) -> io::Result<usize> {
        let n = match self.segs.front() {
            None => return Ok(0),
            Some(Seg::File {
                fd: file,
                offset,
                len,
            }) => {
                let mut at = (*offset + self.front_sent as u64) as libc::off_t;
                let count = (*len - self.front_sent).min(1 << 30);
                sockio::sendfile_now(fd, file.as_raw_fd(), &mut at, count)?
            }
            Some(_) => {
                let slices = self.slices();
                // A head followed by a file range: tell TCP more comes at once, so the
                // head and the file's first bytes share a segment.
                let more = last || matches!(self.segs.get(slices.len()), Some(Seg::File { .. }));
                sockio::send_vectored_now(fd, &slices, more)?
            }
        };
        self.advance(n);
        Ok(n)
    }

    /// Hands the socket `fd` all it takes now, without waiting: `send_to` until the queue
    /// is empty or the socket full.
    pub fn send_available(&mut self, fd: RawFd) -> io::Result<()> {
        while !self.is_empty() {
            if self.send_to(fd, false)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Drops the first `n` queued bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
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

    pub fn clear(&mut self) {
        while !self.segs.is_empty() {
            self.pop_front();
        }
        self.len = 0;
        self.file_len = 0;
    }

    /// The memory segments queued before any file range, copied (tests and diagnostics).
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

    /// A file range between memory segments goes out in order, by `sendfile`, and the
    /// accounting of bytes held in memory leaves it out.
    #[test]
    fn file_ranges_are_sent_in_order_and_hold_no_memory() {
        use std::io::{Read, Seek, Write};
        use std::os::unix::net::UnixStream;

        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile_with(&data);
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        let (tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();

        let mut out = OutBuf::default();
        out.extend(b"head|");
        let fd = OwnedFd::from(file.try_clone().unwrap());
        out.push_file(fd, 1000, 150_000);
        out.extend(b"|tail");
        assert_eq!(out.len(), 5 + 150_000 + 5);
        assert_eq!(out.memory_len(), 10);

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).unwrap();
            got
        });
        while !out.is_empty() {
            if out.send_to(tx.as_raw_fd(), false).unwrap() == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(out.memory_len() <= 10);
        }
        assert_eq!(out.memory_len(), 0);
        drop(tx);
        let got = reader.join().unwrap();
        let mut want = b"head|".to_vec();
        want.extend_from_slice(&data[1000..151_000]);
        want.extend_from_slice(b"|tail");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes arrived out of order or altered");
        file.flush().unwrap();
    }

    /// A file shorter than the range queued for it is an error, not a hang.
    #[test]
    fn a_file_that_ends_early_is_an_error() {
        use std::os::unix::net::UnixStream;
        let file = tempfile_with(b"short");
        let (tx, _rx) = UnixStream::pair().unwrap();
        let mut out = OutBuf::default();
        out.push_file(OwnedFd::from(file), 0, 100);
        assert_eq!(out.send_to(tx.as_raw_fd(), false).unwrap(), 5);
        let err = out.send_to(tx.as_raw_fd(), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    fn tempfile_with(data: &[u8]) -> std::fs::File {
        use std::io::Write;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("qiao-outbuf-{}-{n}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all(data).unwrap();
        f
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
