//! Rows out of the package as Arrow C streams (`__arrow_c_stream__`, the Arrow PyCapsule
//! interface): query results (`session`) and whole checkpoints (`manager`'s `open_arrow`).
//! pyarrow, polars and DuckDB read them without a copy and without a Python object per
//! value; batches are produced as the reader asks for them.

use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ffi::FFI_ArrowSchema;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::RecordBatchReader;
use ckpt::Error;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::errors::{CkptError, ConfigError};
use crate::runtime;

const STREAM_CAPSULE: &CStr = c"arrow_array_stream";
const SCHEMA_CAPSULE: &CStr = c"arrow_schema";

/// `stream` as an Arrow C stream capsule: each batch is awaited on the runtime by the
/// thread that reads (pyarrow's, polars', ...), never a runtime thread.
pub(crate) fn stream_capsule(
    py: Python<'_>,
    stream: SendableRecordBatchStream,
) -> PyResult<Bound<'_, PyCapsule>> {
    let reader = StreamReader {
        schema: stream.schema(),
        stream,
    };
    let ffi = FFI_ArrowArrayStream::new(Box::new(reader));
    PyCapsule::new_with_value(py, ffi, STREAM_CAPSULE)
}

/// `schema` as an Arrow C schema capsule.
pub(crate) fn schema_capsule<'py>(
    py: Python<'py>,
    schema: &arrow::datatypes::Schema,
) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema)
        .map_err(|e| CkptError::new_err(format!("cannot export the schema: {e}")))?;
    PyCapsule::new_with_value(py, ffi, SCHEMA_CAPSULE)
}

/// A checkpoint's rows, read once as an Arrow C stream: the table SQL reads (the kind's
/// columns, metadata as JSON text), decoded on the runtime as the reader asks.
#[pyclass(frozen, module = "ckpt._native")]
pub(crate) struct CheckpointStream {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl CheckpointStream {
    pub(crate) fn new(stream: SendableRecordBatchStream) -> Self {
        CheckpointStream {
            schema: stream.schema(),
            stream: Mutex::new(Some(stream)),
        }
    }
}

#[pymethods]
impl CheckpointStream {
    /// The Arrow C stream interface. A checkpoint stream is read once: a second call
    /// raises (load the checkpoint again to read it again).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // A requested schema is a hint the producer may ignore (the protocol's rule).
        let _ = requested_schema;
        let Some(stream) = self.stream.lock().expect("not poisoned").take() else {
            return Err(ConfigError::new_err(
                "this checkpoint stream was read already; load the checkpoint again",
            ));
        };
        stream_capsule(py, stream)
    }

    /// The schema as an Arrow C schema capsule.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.schema)
    }
}

/// A running plan as a `RecordBatchReader` (see [`stream_capsule`]).
struct StreamReader {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
}

impl Iterator for StreamReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        runtime()
            .block_on(self.stream.next())
            .map(|r| r.map_err(|e| ArrowError::ExternalError(Box::new(Error::from(e)))))
    }
}

impl RecordBatchReader for StreamReader {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
