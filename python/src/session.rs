//! SQL sessions for Python, and query results as Arrow C streams.

use std::collections::HashMap;
use std::sync::Arc;

use ckpt::ops::query::{self, QueryOptions};
use ckpt::{CheckpointSession, SessionOptions};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::arrow_stream::{schema_capsule, stream_capsule};
use crate::errors::to_py;
use crate::manager::parse_storage_options;
use crate::run;

/// A SQL session over one or more checkpoint roots.
#[pyclass(frozen, name = "Session", module = "ckpt._native")]
pub(crate) struct PySession {
    inner: CheckpointSession,
}

#[pymethods]
impl PySession {
    /// `roots`: (schema name, path or URL) pairs; the first is the default schema.
    #[new]
    #[pyo3(signature = (roots, *, storage_options = None, memory_limit = None, sandbox = false, workers = None))]
    fn new(
        py: Python<'_>,
        roots: Vec<(String, String)>,
        storage_options: Option<HashMap<String, String>>,
        memory_limit: Option<usize>,
        sandbox: bool,
        workers: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let workers = match workers {
            Some(list) if !list.is_empty() => {
                ckpt::cluster::parse_workers(&list.join(",")).map_err(to_py)?
            }
            _ => Vec::new(),
        };
        let options = QueryOptions {
            roots,
            session: SessionOptions {
                storage: parse_storage_options(storage_options)?,
                memory_limit,
                sandbox,
                workers,
                ..Default::default()
            },
        };
        let inner = run(py, query::open(&options)).map_err(to_py)?;
        Ok(PySession { inner })
    }

    /// Plans one statement. A query runs when its rows are read; any other statement
    /// (COPY, CREATE VIEW, ...) runs now, and its result (e.g. COPY's row count) is the
    /// returned table.
    fn sql(&self, py: Python<'_>, query: &str) -> PyResult<QueryResult> {
        let session = self.inner.clone();
        let query = query.to_owned();
        let df = run(py, async move {
            let df = session.sql(&query).await?;
            if !query::has_effects(&df) {
                return Ok(df);
            }
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
            Ok(session.context().read_table(Arc::new(table))?)
        })
        .map_err(to_py)?;
        Ok(QueryResult { df })
    }

    /// Table names by schema.
    fn tables(&self) -> HashMap<String, Vec<String>> {
        ckpt::context::table_names(&self.inner)
    }

    /// Reads the roots' listings again (after checkpoints were added or removed).
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        run(py, self.inner.refresh()).map_err(to_py)
    }
}

/// The result of a query: read it as Arrow (`__arrow_c_stream__`), which runs it.
#[pyclass(frozen, module = "ckpt._native")]
pub(crate) struct QueryResult {
    df: DataFrame,
}

#[pymethods]
impl QueryResult {
    /// The Arrow C stream interface: pyarrow, polars and DuckDB read the rows from it as
    /// the query produces them.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // A requested schema is a hint the producer may ignore (the protocol's rule);
        // the result's own types are Kura's, so they are kept.
        let _ = requested_schema;
        let df = self.df.clone();
        let stream =
            run(py, async move { df.execute_stream().await }).map_err(|e| to_py(e.into()))?;
        stream_capsule(py, stream)
    }

    /// The schema as an Arrow C schema capsule.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, self.df.schema().as_arrow())
    }

    /// Column names.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The physical plan with its metrics after running it (`EXPLAIN ANALYZE`'s text).
    fn explain(&self, py: Python<'_>) -> PyResult<String> {
        let df = self.df.clone();
        run(py, async move {
            let batches = df.explain(false, true)?.collect().await?;
            let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
            Ok::<_, DataFusionError>(text)
        })
        .map_err(|e| to_py(e.into()))
    }
}
