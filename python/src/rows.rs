//! Batches of a checkpoint handed to Python, decoded ahead on the runtime.

use std::sync::Mutex;

use arrow::array::RecordBatch;
use ckpt::Error;
use ckpt::kind::computed_len_of;
use ckpt::sink::BatchStream;
use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::columns::python_columns;
use crate::errors::to_py;
use crate::models::ModelClass;
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
/// test proves both forms give the same models (python/tests/test_fast_paths.py). With a
/// model class (Kura's own, see `crate::models`), the second form comes as the model's
/// instances, built here.
#[pyclass(module = "ckpt._native")]
pub(crate) struct RowBatches {
    batches: Mutex<Option<tokio::sync::mpsc::Receiver<ckpt::Result<RecordBatch>>>>,
    python_values: bool,
    /// Kura's model the rows are built as here (see `crate::models`), if any.
    model: Option<ModelClass>,
}

impl RowBatches {
    pub(crate) fn new(
        mut stream: BatchStream,
        python_values: bool,
        model: Option<ModelClass>,
    ) -> Self {
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
            model,
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
            Ok(Some(Either::Batch(batch))) => Ok(Some(match &self.model {
                Some(model) if model.fits(py, &batch) => model.instances(py, &batch)?.into_any(),
                _ => python_rows(py, &batch)?.into_any(),
            })),
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

/// The rows of `batch` as a list of dicts (see [`RowBatches`]).
fn python_rows<'py>(py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyList>> {
    let keys: Vec<Bound<'py, PyString>> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| PyString::intern(py, f.name()))
        .collect();
    let mut columns: Vec<std::vec::IntoIter<Bound<'py, PyAny>>> = python_columns(py, batch)?
        .into_iter()
        .map(Vec::into_iter)
        .collect();
    let list = PyList::empty(py);
    for _ in 0..batch.num_rows() {
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
