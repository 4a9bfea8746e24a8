//! `wsgi.input` (PEP 3333 "Input and Error Streams"): the request body, decoded and read
//! whole before the app runs, which never reads past its end. A body in memory is read
//! by slicing it; a larger one through its `BodySource`, a window at a time. Every way of
//! reading costs time linear in the body: `read()` of all or of a large size fills one
//! `bytes` object of the final size straight from the source, and a line longer than the
//! window grows one buffer, never copying what it already holds again.

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::wsgi::bodybuf::unfilled_bytes;
use crate::wsgi::sink::BodySource;

/// How much of a body outside memory is read into the window at a time.
const WINDOW: usize = 64 * 1024;

/// A `bytes` object as the storage of a `Bytes`, so the body can be read in pieces too.
struct Held {
    /// Only kept, never read: it is what keeps `bytes` valid.
    _obj: Py<PyBytes>,
    /// The object's contents, which neither change nor move while `obj` keeps it alive.
    bytes: *const [u8],
}

// SAFETY: `Py` is Send, and `bytes` points into the immutable object it keeps alive.
unsafe impl Send for Held {}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `bytes`.
        unsafe { &*self.bytes }
    }
}

#[pyclass(module = "qiao._qiao")]
pub struct Input {
    /// Body bytes in memory: the whole body, or the window last read from `source`;
    /// `pos` is how far the app has read it.
    data: Bytes,
    pos: usize,
    /// The `bytes` object `data` lies in, while the app may still read it whole.
    whole: Option<Py<PyBytes>>,
    /// The rest of the body, outside memory.
    source: Option<Box<dyn BodySource>>,
}

impl Input {
    pub fn buffered(data: Bytes) -> Input {
        Input {
            data,
            pos: 0,
            whole: None,
            source: None,
        }
    }

    /// A body read whole into `obj`: reading it all at once returns `obj` itself.
    pub fn object(py: Python<'_>, obj: Py<PyBytes>) -> Input {
        Input {
            data: Bytes::from_owner(Held {
                bytes: obj.as_bytes(py) as *const [u8],
                _obj: obj.clone_ref(py),
            }),
            whole: Some(obj),
            ..Input::buffered(Bytes::new())
        }
    }

    /// A body read through `source`.
    pub fn source(source: Box<dyn BodySource>) -> Input {
        Input {
            source: Some(source),
            ..Input::buffered(Bytes::new())
        }
    }

    fn available(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// Body bytes not yet read, in memory and in the source.
    fn unread(&self) -> u64 {
        self.available().len() as u64 + self.source.as_ref().map_or(0, |s| s.remaining())
    }

    /// Replaces the (fully read) window with the next piece of the source; false at the
    /// end of the body.
    fn refill(&mut self, py: Python<'_>) -> PyResult<bool> {
        debug_assert!(self.available().is_empty());
        let Some(source) = self.source.as_mut() else {
            return Ok(false);
        };
        let want = source.remaining().min(WINDOW as u64) as usize;
        if want == 0 {
            return Ok(false);
        }
        let mut next = vec![0u8; want];
        let got = py.detach(|| source.read(&mut next)).map_err(read_failed)?;
        next.truncate(got);
        self.data = Bytes::from(next);
        self.pos = 0;
        Ok(got > 0)
    }

    /// The next `n` bytes of what is in memory.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        if self.pos == 0 && n == self.data.len() && n > 0 {
            if let Some(whole) = self.whole.take() {
                self.data = Bytes::new();
                return whole.into_bound(py);
            }
        }
        let out = PyBytes::new(py, &self.data[self.pos..self.pos + n]);
        self.pos += n;
        out
    }

    /// The next `n` bytes of the body, more than memory holds: one `bytes` object of that
    /// size, filled from memory and then straight from the source.
    fn read_through<'py>(&mut self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let (obj, ptr) = unfilled_bytes(py, n)?;
        // SAFETY: `obj` holds `n` writable bytes nobody else sees until it is returned.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, n) };
        let head = self.available().len();
        buf[..head].copy_from_slice(self.available());
        self.pos += head;
        let source = self
            .source
            .as_mut()
            .expect("more than memory holds is in the source");
        let mut filled = head;
        let outcome = py.detach(|| {
            while filled < n {
                match source.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(got) => filled += got,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        outcome.map_err(read_failed)?;
        if filled < n {
            // The source ended early (its file was cut): hand over what there is.
            return Ok(PyBytes::new(py, &buf[..filled]));
        }
        Ok(obj)
    }

    /// The next line, up to `limit` bytes; empty at the end of the body.
    fn line<'py>(&mut self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyBytes>> {
        // Most lines lie within the window: sliced out of it.
        let avail = self.available();
        let window = avail.len().min(limit);
        if let Some(i) = avail[..window].iter().position(|&b| b == b'\n') {
            return Ok(self.take(py, i + 1));
        }
        if window == limit || self.source.is_none() {
            return Ok(self.take(py, window));
        }
        // A line that runs past the window: gathered in one buffer, each byte copied once.
        let mut line = Vec::new();
        loop {
            let avail = self.available();
            let room = avail.len().min(limit - line.len());
            let (n, done) = match avail[..room].iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (room, line.len() + room == limit),
            };
            line.extend_from_slice(&avail[..n]);
            self.pos += n;
            if done || !self.refill(py)? {
                return Ok(PyBytes::new(py, &line));
            }
        }
    }
}

fn read_failed(e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("cannot read the request body: {e}"))
}

/// `size` as PEP 3333 callers pass it: None or negative means "all".
fn limit(size: Option<isize>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let unread = usize::try_from(self.unread()).unwrap_or(usize::MAX);
        let n = limit(size).map_or(unread, |want| want.min(unread));
        if n <= self.available().len() {
            return Ok(self.take(py, n));
        }
        self.read_through(py, n)
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if self.available().is_empty() {
            self.refill(py)?;
        }
        self.line(py, limit(size).unwrap_or(usize::MAX))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.readline(py, None)?;
        if line.as_bytes().is_empty() {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsgi::testing::{py_run, MemorySource};

    fn source_input(body: &[u8], piece: usize) -> Input {
        Input::source(Box::new(MemorySource::new(body.to_vec(), piece)))
    }

    fn body(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                if i % 97 == 96 {
                    b'\n'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect()
    }

    /// PEP 3333: `read()` of everything returns the whole body, in one object filled
    /// straight from the source (it asked the source for all of it, not window by window).
    #[test]
    fn read_all_from_a_source() {
        py_run(|py| {
            let data = body(300_000);
            let mut input = source_input(&data, 7_000);
            assert_eq!(input.read(py, Some(10)).unwrap().as_bytes(), &data[..10]);
            assert_eq!(input.read(py, None).unwrap().as_bytes(), &data[10..]);
            assert_eq!(input.read(py, None).unwrap().as_bytes(), b"");
            assert_eq!(input.read(py, Some(5)).unwrap().as_bytes(), b"");
        });
    }

    /// Linear whatever the size: `read()` of a body outside memory fills one object of the
    /// final size straight from the source, each read asked for all that is still
    /// missing, so no byte is copied again as the body grows (it was copied once per
    /// 64 KiB step, quadratic in the body).
    #[test]
    fn read_all_fills_one_object_from_the_source() {
        py_run(|py| {
            let data = body(1 << 20);
            let source = MemorySource::new(data.clone(), 100_000);
            let asked = source.asked.clone();
            let mut input = Input::source(Box::new(source));
            assert_eq!(input.read(py, Some(3)).unwrap().as_bytes(), &data[..3]);
            let window = asked.lock().unwrap().len();
            assert_eq!(input.read(py, None).unwrap().as_bytes(), &data[3..]);
            let asked = asked.lock().unwrap()[window..].to_vec();
            let mut missing = data.len() - 3;
            for want in &asked {
                assert_eq!(
                    *want, missing,
                    "a read asked for less than what was missing"
                );
                missing -= (*want).min(100_000);
            }
            assert_eq!(asked.len(), (data.len() - 3).div_ceil(100_000));
        });
    }

    /// Every strategy of reading gives back the body exactly, never past its end.
    #[test]
    fn every_strategy_reads_the_body_exactly() {
        py_run(|py| {
            let data = body(200_000);
            for piece in [1_000, 65_536, 1 << 20] {
                let mut input = source_input(&data, piece);
                let mut got = Vec::new();
                for size in [1usize, 100, 70_000, 3].iter().cycle() {
                    let chunk = input.read(py, Some(*size as isize)).unwrap();
                    if chunk.as_bytes().is_empty() {
                        break;
                    }
                    got.extend_from_slice(chunk.as_bytes());
                }
                assert!(got == data, "read(n) with pieces of {piece}");

                let mut input = source_input(&data, piece);
                let mut got = Vec::new();
                loop {
                    let line = input.readline(py, None).unwrap();
                    if line.as_bytes().is_empty() {
                        break;
                    }
                    assert!(
                        line.as_bytes().ends_with(b"\n")
                            || got.len() + line.as_bytes().len() == data.len()
                    );
                    got.extend_from_slice(line.as_bytes());
                }
                assert!(got == data, "readline() with pieces of {piece}");
            }
        });
    }

    /// PEP 3333: `readline(size)` returns at most `size` bytes; a line longer than the
    /// window arrives whole from `readline()`.
    #[test]
    fn long_lines_and_line_limits() {
        py_run(|py| {
            let mut data = vec![b'x'; 3 * WINDOW + 5];
            data.push(b'\n');
            data.extend_from_slice(b"tail");
            let mut input = source_input(&data, WINDOW);
            assert_eq!(
                input.readline(py, Some(10)).unwrap().as_bytes(),
                &data[..10]
            );
            let line = input.readline(py, None).unwrap();
            assert_eq!(line.as_bytes().len(), 3 * WINDOW + 5 + 1 - 10);
            assert_eq!(input.readline(py, None).unwrap().as_bytes(), b"tail");
            assert_eq!(input.readline(py, None).unwrap().as_bytes(), b"");
        });
    }

    /// A body in one `bytes` object: read whole, the app gets that very object.
    #[test]
    fn a_whole_object_is_handed_over_as_is() {
        py_run(|py| {
            let obj = PyBytes::new(py, b"hello world").unbind();
            let mut input = Input::object(py, obj.clone_ref(py));
            let got = input.read(py, None).unwrap();
            assert!(got.is(obj.bind(py)));
            assert_eq!(input.read(py, None).unwrap().as_bytes(), b"");
        });
    }
}
