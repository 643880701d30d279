//! Arrow columns as Python values, a column at a time: what a load hands to Python,
//! as dicts (`rows`) or as Kura's models (`models`).

use arrow::array::RecordBatch;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString};

use crate::errors::CkptError;

/// The values of each column of `batch` as Python objects, a column at a time: strings,
/// ints, floats, lists of them, and JSON-text columns (metadata) through `json.loads`.
pub(crate) fn python_columns<'py>(
    py: Python<'py>,
    batch: &RecordBatch,
) -> PyResult<Vec<Vec<Bound<'py, PyAny>>>> {
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
                        // Most metadata is empty: no parser call for it.
                        Some("{}") if json => PyDict::new(py).into_any(),
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
    Ok(columns)
}
