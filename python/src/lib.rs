//! The native module of the ckpt Python package, `ckpt._native`.
//!
//! A thin layer: every call goes to the same library the `ckpt` command line uses
//! (managers, sessions, the sink, `convert`, `describe_root`), so a checkpoint saved from
//! Python is validated, encoded and committed exactly as one saved by the CLI. The
//! Python-facing classes (Kura's managers, `connect`, ...) are written in Python on top of
//! this module (`python/ckpt/`); what lives here is what must not run under the GIL:
//! storage I/O, decoding, encoding, query execution. Each of those runs with the GIL
//! released ([`Python::detach`]) on one shared tokio runtime.
//!
//! Rows cross the boundary in the forms Kura's models are defined by: a save hands over
//! the lines `model_dump_json` writes, or Kura's models themselves, read field by field
//! (`models`); either way the kind's codec decodes and validates every field. A load
//! hands back each batch as a JSON array, which the Python side validates with one
//! pydantic call, as Python values, or as Kura's models built here (`rows`, `models`).
//! Query results and whole checkpoints cross as Arrow, through the Arrow C stream
//! interface (`__arrow_c_stream__`), without copies (`arrow_stream`); Arrow given to a
//! save comes as an IPC stream and takes the JSON route of every row
//! (`ckpt::manager::arrow_batches`).
//!
//! Modules: `arrow_stream` (Arrow C streams out), `columns` (Arrow columns as Python
//! values), `errors` (the exception classes), `manager` (checkpoint managers), `models`
//! (Kura's model instances built and read natively), `rows` (batches to Python),
//! `session` (SQL), `commands` (`convert`, `ls`).
//!
//! Written by hand rather than with arrow-rs's `pyarrow` feature: that feature is tied
//! to its own pyo3 version and to pyarrow's classes, where the C stream protocol needs
//! one capsule and works with pyarrow, polars and DuckDB alike. Arrow coming in is not
//! imported through the C interface, which takes `unsafe` code (the workspace forbids
//! it): pyarrow writes it as an IPC stream, which arrow-rs reads safely.

mod arrow_stream;
mod columns;
mod commands;
mod errors;
mod manager;
mod models;
mod rows;
mod session;

use std::sync::OnceLock;

use pyo3::prelude::*;

use errors::{ChangedWhileRead, CkptError, ConfigError, DataError, StaleCheckpoint, StorageError};

/// The runtime every call runs on; created on first use, shared by all objects.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ckpt")
            .build()
            .expect("the tokio runtime starts")
    })
}

/// Runs `fut` to completion with the GIL released.
pub(crate) fn run<T: Send>(py: Python<'_>, fut: impl std::future::Future<Output = T> + Send) -> T {
    py.detach(|| runtime().block_on(fut))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CkptError", py.get_type::<CkptError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("ChangedWhileRead", py.get_type::<ChangedWhileRead>())?;
    m.add("StaleCheckpoint", py.get_type::<StaleCheckpoint>())?;
    m.add_class::<manager::PyManager>()?;
    m.add_class::<rows::RowBatches>()?;
    m.add_class::<manager::CheckpointWriter>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<session::QueryResult>()?;
    m.add_class::<arrow_stream::CheckpointStream>()?;
    m.add_function(wrap_pyfunction!(manager::kind_fields, m)?)?;

    m.add_function(wrap_pyfunction!(manager::kind_of_name, m)?)?;
    m.add_function(wrap_pyfunction!(commands::convert, m)?)?;
    m.add_function(wrap_pyfunction!(commands::ls, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
