//! Batches of a checkpoint handed to Python, decoded ahead on the runtime.

use std::sync::Mutex;

use arrow::array::RecordBatch;
use ckpt::Error;
use ckpt::kind::computed_len_of;
use ckpt::sink::BatchStream;
use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString};

use crate::errors::{CkptError, to_py};
use crate::runtime;

/// A checkpoint being read, one batch per `next`. A task on the runtime decodes ahead
/// (two batches at most), so decoding (no GIL) overlaps with the caller's work on the
/// previous batch (with the GIL).
///
/// Each batch comes as a JSON array of its rows (the text Kura's models are defined by,
/// validated by pydantic's JSON mode), or, when the manager asked for Python values and
/// every column is of a plain type, as a list of dicts: strings, ints, floats, lists of
/// them, and JSON-text columns (metadata) through Python's `json.loads`. The second form
/// spares pydantic parsing every embedding float from text (most of a load's time); a
/// test proves both forms give the same models (python/tests/test_fast_paths.py).
#[pyclass(module = "ckpt._native")]
pub(crate) struct RowBatches {
    batches: Mutex<Option<tokio::sync::mpsc::Receiver<ckpt::Result<RecordBatch>>>>,
    python_values: bool,
}

impl RowBatches {
    pub(crate) fn new(mut stream: BatchStream, python_values: bool) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        runtime().spawn(async move {
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(Error::from).and_then(without_computed);
                let failed = batch.is_err();
                // The reader went away (or it has the error): stop decoding.
                if tx.send(batch).await.is_err() || failed {
                    break;
                }
            }
        });
        RowBatches {
            batches: Mutex::new(Some(rx)),
            python_values,
        }
    }
}

#[pymethods]
impl RowBatches {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut guard = self.batches.lock().expect("not poisoned");
        let Some(rx) = guard.as_mut() else {
            return Ok(None);
        };
        let python_values = self.python_values;
        let next = py.detach(|| {
            runtime().block_on(async {
                match rx.recv().await {
                    None => Ok(None),
                    Some(batch) => {
                        let batch = batch?;
                        if python_values && has_plain_columns(&batch) {
                            return Ok(Some(Either::Batch(batch)));
                        }
                        let mut out = Vec::with_capacity(batch.get_array_memory_size());
                        ckpt::jsonl::JsonlEncoder.encode_array(&batch, &mut out)?;
                        Ok(Some(Either::Json(out)))
                    }
                }
            })
        });
        match next {
            Ok(Some(Either::Json(json))) => Ok(Some(PyBytes::new(py, &json).into_any())),
            Ok(Some(Either::Batch(batch))) => Ok(Some(python_rows(py, &batch)?.into_any())),
            Ok(None) => {
                *guard = None;
                Ok(None)
            }
            Err(e) => {
                *guard = None;
                Err(to_py(e))
            }
        }
    }
}

enum Either {
    Json(Vec<u8>),
    Batch(RecordBatch),
}

/// Whether every column is of a type [`python_rows`] converts.
fn has_plain_columns(batch: &RecordBatch) -> bool {
    use arrow::datatypes::DataType as T;
    batch.schema().fields().iter().all(|f| match f.data_type() {
        T::Utf8 | T::Int32 | T::Int64 | T::Float64 => true,
        T::List(item) => matches!(item.data_type(), T::Utf8 | T::Float64),
        _ => false,
    })
}

/// The rows of `batch` as a list of dicts (see [`RowBatches`]); columns are converted
/// one at a time, then zipped into rows.
fn python_rows<'py>(py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyList>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType as T, Float64Type, Int32Type, Int64Type};
    let json_loads = py.import("json")?.getattr("loads")?;
    let rows = batch.num_rows();
    let mut columns: Vec<Vec<Bound<'py, PyAny>>> = Vec::with_capacity(batch.num_columns());
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let none = || py.None().into_bound(py);
        let mut out = Vec::with_capacity(rows);
        match field.data_type() {
            T::Utf8 => {
                let a = col.as_string::<i32>();
                let json = ckpt::kind::is_json_text(field);
                for v in a.iter() {
                    out.push(match v {
                        None => none(),
                        Some(text) if json => json_loads.call1((text,))?,
                        Some(text) => PyString::new(py, text).into_any(),
                    });
                }
            }
            T::Int32 => {
                for v in col.as_primitive::<Int32Type>().iter() {
                    out.push(
                        v.map_or_else(none, |v| v.into_pyobject(py).expect("an int").into_any()),
                    );
                }
            }
            T::Int64 => {
                for v in col.as_primitive::<Int64Type>().iter() {
                    out.push(
                        v.map_or_else(none, |v| v.into_pyobject(py).expect("an int").into_any()),
                    );
                }
            }
            T::Float64 => {
                for v in col.as_primitive::<Float64Type>().iter() {
                    out.push(v.map_or_else(none, |v| PyFloat::new(py, v).into_any()));
                }
            }
            T::List(item) => {
                let list = col.as_list::<i32>();
                for i in 0..rows {
                    if list.is_null(i) {
                        out.push(none());
                        continue;
                    }
                    let values = list.value(i);
                    let py_list = match item.data_type() {
                        T::Float64 => {
                            let v = values.as_primitive::<Float64Type>();
                            PyList::new(
                                py,
                                (0..v.len()).map(|j| (!v.is_null(j)).then(|| v.value(j))),
                            )?
                        }
                        _ => {
                            let v = values.as_string::<i32>();
                            PyList::new(py, v.iter())?
                        }
                    };
                    out.push(py_list.into_any());
                }
            }
            other => {
                return Err(CkptError::new_err(format!(
                    "internal: no Python conversion for a column of type {other}"
                )));
            }
        }
        columns.push(out);
    }
    let keys: Vec<Bound<'py, PyString>> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| PyString::intern(py, f.name()))
        .collect();
    let list = PyList::empty(py);
    let mut columns: Vec<std::vec::IntoIter<Bound<'py, PyAny>>> =
        columns.into_iter().map(Vec::into_iter).collect();
    for _ in 0..rows {
        let row = PyDict::new(py);
        for (key, col) in keys.iter().zip(columns.iter_mut()) {
            row.set_item(key, col.next().expect("one value per row"))?;
        }
        list.append(row)?;
    }
    Ok(list)
}

/// The batch without computed columns (`count`): Kura's models have no such field.
fn without_computed(batch: RecordBatch) -> ckpt::Result<RecordBatch> {
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| computed_len_of(f).is_none())
        .map(|(i, _)| i)
        .collect();
    if keep.len() == batch.num_columns() {
        return Ok(batch);
    }
    Ok(batch.project(&keep)?)
}
