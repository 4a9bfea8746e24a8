//! `wsgi.file_wrapper` (PEP 3333 "Optional Platform-Specific File Handling"): an iterable
//! over a file-like object; the server sends a real file with `sendfile(2)` instead.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

#[pyclass(module = "qiao._qiao")]
pub struct FileWrapper {
    /// The app's file-like object; closed through `close()`.
    pub filelike: Py<PyAny>,
    pub block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size = 8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        if data.len().unwrap_or(0) == 0 {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(data.unbind())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

impl FileWrapper {
    /// The descriptor and position to `sendfile` from, when the object is a regular file.
    pub fn sendable(&self, py: Python<'_>) -> Option<(i32, u64, u64)> {
        let f = self.filelike.bind(py);
        let fd: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
        let size = crate::sys::regular_file_size(fd)?;
        // The Python object's logical position (its own read buffer may sit ahead of the fd's).
        let pos: u64 = f.call_method0("tell").ok()?.extract().ok()?;
        Some((fd, pos, size))
    }
}
