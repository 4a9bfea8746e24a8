//! qiao's engine: a WSGI (PEP 3333) server over HTTP/1.1, exposed to Python as `qiao._qiao`.

pub mod access_log;
pub mod config;
pub mod engine;
pub mod http;
pub mod log;
pub mod server;
pub mod wsgi;

use pyo3::prelude::*;

#[pymodule]
fn _qiao(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    m.add_class::<wsgi::errors::Errors>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add_class::<wsgi::response::StartResponse>()?;
    Ok(())
}
