//! `wsgi.errors`: a text stream that writes into the server's error log (PEP 3333).

use std::sync::Arc;

use pyo3::prelude::*;

use crate::log::ErrorLog;

#[pyclass(module = "qiao._qiao", frozen)]
pub struct Errors {
    pub log: Arc<ErrorLog>,
}

#[pymethods]
impl Errors {
    fn write(&self, py: Python<'_>, text: &str) -> usize {
        let bytes = text.as_bytes().to_vec();
        let log = self.log.clone();
        py.detach(move || log.write_stream(&bytes));
        text.chars().count()
    }

    fn writelines(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            let line = line?;
            self.write(py, line.extract::<&str>()?);
        }
        Ok(())
    }

    fn flush(&self) {}
}
