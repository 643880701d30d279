//! `ckpt convert` and `ckpt ls` for Python: the same library operations the command line
//! calls (`ckpt::ops`), their reports as dicts.

use std::collections::HashMap;

use ckpt::ops::convert::{ConvertOptions, convert as convert_checkpoints};
use ckpt::ops::ls::{LsOptions, ls as list_root};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{to_py, to_py_core};
use crate::manager::parse_storage_options;
use crate::run;

/// `ckpt convert SRC DST`: returns one dict per converted checkpoint.
#[pyfunction]
#[pyo3(signature = (src, dst, *, to = None, compression = None, layout = None, storage_options = None))]
pub(crate) fn convert<'py>(
    py: Python<'py>,
    src: &str,
    dst: &str,
    to: Option<&str>,
    compression: Option<&str>,
    layout: Option<&str>,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let mut opts = ConvertOptions::default();
    opts.session.storage = parse_storage_options(storage_options)?;
    if let Some(to) = to {
        opts.to = Some(to.parse().map_err(to_py_core)?);
    }
    if let Some(c) = compression {
        opts.write.compression = c.parse().map_err(to_py_core)?;
    }
    if let Some(l) = layout {
        opts.write.layout = l.parse().map_err(to_py_core)?;
    }
    let done = run(py, convert_checkpoints(src, dst, &opts)).map_err(to_py)?;
    done.into_iter()
        .map(|c| {
            let d = PyDict::new(py);
            d.set_item("name", c.name)?;
            d.set_item("source", c.source)?;
            d.set_item("target", c.target)?;
            d.set_item("kind", c.kind.map(|k| k.to_string()))?;
            d.set_item("rows", c.rows)?;
            d.set_item("bytes_in", c.bytes_in)?;
            d.set_item("bytes_out", c.bytes_out)?;
            Ok(d)
        })
        .collect()
}

/// `ckpt ls ROOT`: one dict per checkpoint (name, file, kind, format, layout, rows,
/// bytes, error).
#[pyfunction]
#[pyo3(signature = (root, *, storage_options = None))]
pub(crate) fn ls<'py>(
    py: Python<'py>,
    root: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let storage = parse_storage_options(storage_options)?;
    let report = run(py, list_root(root, &LsOptions { storage })).map_err(to_py)?;
    report
        .checkpoints
        .into_iter()
        .map(|i| {
            let d = PyDict::new(py);
            d.set_item("name", i.name)?;
            d.set_item("file", i.file)?;
            d.set_item("kind", i.kind)?;
            d.set_item("format", i.format)?;
            d.set_item("layout", i.layout)?;
            d.set_item("rows", i.rows)?;
            d.set_item("bytes", i.bytes)?;
            d.set_item("error", i.error)?;
            Ok(d)
        })
        .collect()
}
