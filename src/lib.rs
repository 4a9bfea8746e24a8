//! qiao's engine: a WSGI (PEP 3333) server over HTTP/1.1, exposed to Python as `qiao._qiao`.

mod access_log;
mod alloc;
mod config;
mod engine;
pub mod http;
mod log;
mod metrics;
mod scoreboard;
mod server;
pub mod static_files;
mod sys;
mod syslog;
mod tls;
mod wsgi;
mod x509;

#[global_allocator]
static ALLOC: alloc::Mimalloc = alloc::Mimalloc;

use pyo3::prelude::*;

/// Names this process `title` for `ps -o comm`, `top` and the kernel (15 bytes at most).
#[pyfunction]
fn set_process_name(title: &str) {
    sys::set_process_name(title);
}

/// Gives the C heap's free pages back to the kernel (glibc's `malloc_trim`). The master
/// calls it before forking: pages freed by start-up work (argument parsing, the settings
/// check) would otherwise stay resident in the master and in every worker it forks.
#[pyfunction]
fn trim_memory() {
    sys::trim_c_heap();
}

#[pymodule]
fn _qiao(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // What `qiao --version` adds (build.rs): the sources' commit and the Python built for.
    m.add("BUILD_REVISION", env!("QIAO_GIT_REVISION"))?;
    m.add("BUILT_FOR", env!("QIAO_BUILT_FOR"))?;
    m.add("BUILD_TARGET", env!("QIAO_TARGET"))?;
    m.add("ENGINE_SETTINGS", config::KEYS.to_vec())?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<scoreboard::Scoreboard>()?;
    m.add_class::<metrics::Metrics>()?;
    m.add_class::<log::PyLogger>()?;
    m.add_function(wrap_pyfunction!(set_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(trim_memory, m)?)?;
    m.add_function(wrap_pyfunction!(tls::check_tls, m)?)?;
    m.add_function(wrap_pyfunction!(access_log::check_access_log_format, m)?)?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    m.add_class::<wsgi::errors::Errors>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add_class::<wsgi::response::StartResponse>()?;
    Ok(())
}
