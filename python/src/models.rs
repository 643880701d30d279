//! Kura's model instances, built and read here for Kura's own model classes.
//!
//! Why by hand, not through pydantic: a load of 100 000 summaries makes some 40 million
//! Python objects, and calling `model_construct` once per row in Python was half of what
//! remained of a load once its values were made; a save ran pydantic's JSON serializer on
//! every model only for the codec to parse that JSON again. So:
//!
//! - a load builds each instance as `model_construct` does for a complete row (pydantic
//!   2's `BaseModel.model_construct`): `cls.__new__(cls)`, then, past the class's own
//!   `__setattr__`, the instance `__dict__` (the fields in the model's order), its
//!   `__pydantic_fields_set__` (every field: the row has them all, as a line Kura reads
//!   does), `__pydantic_extra__` and `__pydantic_private__` (None);
//! - a save reads each model's fields into the kind's decoder as values
//!   ([`ckpt::jsonl::JsonlDecoder::decode_values`]), the one place Kura's rules are
//!   applied, with the values the model's JSON would parse to. A row holding a value whose
//!   JSON is not plain (a datetime, a non-finite or subclassed number, an int beyond 64
//!   bits, nested lists...) goes by the JSON route instead: pydantic's serializer and the
//!   line decoder, as every row went before.
//!
//! Which classes qualify is decided by the Python side (`_builds_natively` in
//! `python/ckpt/kura.py`): Kura's models exactly (same fields and types), without
//! validators, serializers, a post-init hook or extra fields. The routes are proven equal
//! (the same models loaded, the same bytes saved) by `python/tests/test_fast_paths.py`.

use std::borrow::Cow;

use arrow::array::RecordBatch;
use ckpt::jsonl::value::{self, Value};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyType,
};

use crate::columns::python_columns;

/// A model class whose instances are built here (a load).
pub(crate) struct ModelClass {
    cls: Py<PyType>,
    /// `cls.__new__`.
    new: Py<PyAny>,
    /// The model's fields, in its order.
    fields: Vec<Py<PyString>>,
    /// The same, as the set every instance gets a copy of.
    fields_set: Py<PyFrozenSet>,
    /// `object.__setattr__`: past the model's own `__setattr__`, as pydantic sets the
    /// attributes below.
    set_attr: Py<PyAny>,
    /// The names of the four attributes set on each instance.
    dict_attr: Py<PyString>,
    fields_set_attr: Py<PyString>,
    extra_attr: Py<PyString>,
    private_attr: Py<PyString>,
}

impl ModelClass {
    pub(crate) fn new(cls: &Bound<'_, PyType>) -> PyResult<Self> {
        let py = cls.py();
        let fields: Vec<Py<PyString>> = field_names(cls)?
            .iter()
            .map(|n| PyString::intern(py, n).unbind())
            .collect();
        Ok(ModelClass {
            cls: cls.clone().unbind(),
            new: cls.getattr("__new__")?.unbind(),
            set_attr: py
                .import("builtins")?
                .getattr("object")?
                .getattr("__setattr__")?
                .unbind(),
            fields_set: PyFrozenSet::new(py, fields.iter().map(|f| f.bind(py)))?.unbind(),
            fields,
            dict_attr: PyString::intern(py, "__dict__").unbind(),
            fields_set_attr: PyString::intern(py, "__pydantic_fields_set__").unbind(),
            extra_attr: PyString::intern(py, "__pydantic_extra__").unbind(),
            private_attr: PyString::intern(py, "__pydantic_private__").unbind(),
        })
    }

    /// Whether `batch` holds every field of the model (else its rows go as dicts, and the
    /// Python side builds them).
    pub(crate) fn fits(&self, py: Python<'_>, batch: &RecordBatch) -> bool {
        self.fields.iter().all(|f| {
            f.bind(py)
                .to_str()
                .is_ok_and(|name| batch.schema().column_with_name(name).is_some())
        })
    }

    /// The rows of `batch` (which [`fits`](Self::fits)) as instances of the model.
    pub(crate) fn instances<'py>(
        &self,
        py: Python<'py>,
        batch: &RecordBatch,
    ) -> PyResult<Bound<'py, PyList>> {
        let schema = batch.schema();
        let mut columns = python_columns(py, batch)?;
        // The model's fields in its order, each with its column's values.
        let mut values: Vec<(Bound<'py, PyString>, std::vec::IntoIter<Bound<'py, PyAny>>)> =
            Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            let field = field.bind(py);
            let (i, _) = schema
                .column_with_name(field.to_str()?)
                .expect("the batch fits the model");
            values.push((field.clone(), std::mem::take(&mut columns[i]).into_iter()));
        }
        let cls = self.cls.bind(py);
        let new = self.new.bind(py);
        let set_attr = self.set_attr.bind(py);
        let fields_set = self.fields_set.bind(py);
        let dict_attr = self.dict_attr.bind(py);
        let fields_set_attr = self.fields_set_attr.bind(py);
        let extra_attr = self.extra_attr.bind(py);
        let private_attr = self.private_attr.bind(py);
        let none = py.None().into_bound(py);
        let list = PyList::empty(py);
        for _ in 0..batch.num_rows() {
            let dict = PyDict::new(py);
            for (name, column) in values.iter_mut() {
                dict.set_item(&*name, column.next().expect("one value per row"))?;
            }
            let instance = new.call1((cls,))?;
            let fields_set = PySet::new(py, fields_set.iter())?;
            set_attr.call1((&instance, dict_attr, dict))?;
            set_attr.call1((&instance, fields_set_attr, fields_set))?;
            set_attr.call1((&instance, extra_attr, &none))?;
            set_attr.call1((&instance, private_attr, &none))?;
            list.append(instance)?;
        }
        Ok(list)
    }
}

/// A model class whose instances are read here (a save).
pub(crate) struct ModelReader {
    cls: Py<PyType>,
    /// The model's fields, in its order, and whether each is the kind's list of floats
    /// (the embedding, read as numbers).
    fields: Vec<(Py<PyString>, String, bool)>,
    /// `cls.__pydantic_serializer__.to_json`: the JSON route.
    to_json_model: Py<PyAny>,
    /// `pydantic_core.to_json`: a dict value's JSON as the model's serializer writes it.
    to_json_value: Py<PyAny>,
    dict_attr: Py<PyString>,
    extra_attr: Py<PyString>,
}

/// A model read by [`ModelReader::read`].
pub(crate) enum ModelRow<'py> {
    /// The values its JSON parses to, and the list of floats apart.
    Values(Vec<(Cow<'static, str>, Value<'static>)>, Option<Vec<f64>>),
    /// Its JSON line, from pydantic's serializer.
    Json(Bound<'py, PyBytes>),
}

impl ModelReader {
    /// `float_list`: the name of the kind's list of floats, if it has one.
    pub(crate) fn new(cls: &Bound<'_, PyType>, float_list: Option<&str>) -> PyResult<Self> {
        let py = cls.py();
        let fields = field_names(cls)?
            .into_iter()
            .map(|name| {
                let is_floats = float_list == Some(name.as_str());
                (PyString::intern(py, &name).unbind(), name, is_floats)
            })
            .collect();
        Ok(ModelReader {
            cls: cls.clone().unbind(),
            fields,
            to_json_model: cls
                .getattr("__pydantic_serializer__")?
                .getattr("to_json")?
                .unbind(),
            to_json_value: to_json_value(cls)?,
            dict_attr: PyString::intern(py, "__dict__").unbind(),
            extra_attr: PyString::intern(py, "__pydantic_extra__").unbind(),
        })
    }

    /// `item`'s values, or its JSON where a value is not plain.
    pub(crate) fn read<'py>(&self, item: &Bound<'py, PyAny>) -> PyResult<ModelRow<'py>> {
        let py = item.py();
        if item.get_type().as_ptr() != self.cls.as_ptr() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "a row of type {} among rows of type {}",
                item.get_type().name()?,
                self.cls.bind(py).name()?
            )));
        }
        if let Some(row) = self.values(item)? {
            return Ok(row);
        }
        let json = self.to_json_model.bind(py).call1((item,))?;
        Ok(ModelRow::Json(json.cast_into::<PyBytes>()?))
    }

    /// The values, or None when one is not plain (then the JSON route decides).
    fn values<'py>(&self, item: &Bound<'py, PyAny>) -> PyResult<Option<ModelRow<'py>>> {
        let py = item.py();
        if !item.getattr(self.extra_attr.bind(py))?.is_none() {
            return Ok(None);
        }
        let dict = item.getattr(self.dict_attr.bind(py))?;
        let Ok(dict) = dict.cast_into::<PyDict>() else {
            return Ok(None);
        };
        let mut entries = Vec::with_capacity(self.fields.len());
        let mut floats = None;
        for (key, name, is_floats) in &self.fields {
            let Some(v) = dict.get_item(key.bind(py))? else {
                // A field the instance lacks: its JSON says what it is.
                return Ok(None);
            };
            if *is_floats && let Some(list) = float_list(&v)? {
                floats = Some(list);
                continue;
            }
            let Some(value) = self.plain(&v, 0)? else {
                return Ok(None);
            };
            entries.push((Cow::Owned(name.clone()), value));
        }
        Ok(Some(ModelRow::Values(entries, floats)))
    }

    /// The value `v`'s JSON parses to, when its JSON is plain; `depth` 0 for a field.
    fn plain(&self, v: &Bound<'_, PyAny>, depth: usize) -> PyResult<Option<Value<'static>>> {
        if v.is_none() {
            return Ok(Some(Value::Null));
        }
        if let Ok(s) = v.cast_exact::<PyString>() {
            // Text with lone surrogates is not UTF-8: the serializer says what it does.
            return Ok(s
                .to_str()
                .ok()
                .map(|t| Value::Str(Cow::Owned(t.to_owned()))));
        }
        if let Ok(b) = v.cast_exact::<PyBool>() {
            return Ok(Some(Value::Bool(b.is_true())));
        }
        if v.cast_exact::<PyInt>().is_ok() {
            return Ok(v.extract::<i64>().ok().map(|n| Value::Number {
                text: Cow::Owned(n.to_string()),
                float: false,
            }));
        }
        if let Ok(f) = v.cast_exact::<PyFloat>() {
            let f = f.value();
            // Rust's `{:?}` is the shortest text that reads back as the same number,
            // with a fraction or an exponent, as pydantic writes a float.
            return Ok(f.is_finite().then(|| Value::Number {
                text: Cow::Owned(format!("{f:?}")),
                float: true,
            }));
        }
        if depth > 0 {
            return Ok(None);
        }
        if let Ok(list) = v.cast_exact::<PyList>() {
            let mut items = Vec::with_capacity(list.len());
            for item in list.iter() {
                let Some(value) = self.plain(&item, depth + 1)? else {
                    return Ok(None);
                };
                items.push(value);
            }
            return Ok(Some(Value::Array(items)));
        }
        if let Ok(dict) = v.cast_exact::<PyDict>() {
            if dict.is_empty() {
                return Ok(Some(Value::Object(Vec::new())));
            }
            // An object's JSON as the model's serializer writes the field (a `dict`
            // field is serialized as `pydantic_core.to_json` serializes the value).
            let json = self.to_json_value.bind(v.py()).call1((v,))?;
            let json = json.cast_into::<PyBytes>()?;
            let Ok(text) = std::str::from_utf8(json.as_bytes()) else {
                return Ok(None);
            };
            return Ok(value::parse(text).ok().map(Value::into_owned));
        }
        Ok(None)
    }
}

/// The model's field names, in its order (`model_fields`).
fn field_names(cls: &Bound<'_, PyType>) -> PyResult<Vec<String>> {
    cls.getattr("model_fields")?
        .call_method0("keys")?
        .try_iter()?
        .map(|k| k?.extract::<String>())
        .collect()
}

/// `pydantic_core.to_json` with the model's JSON settings (its own defaults differ from a
/// model's: non-finite floats as `NaN` where a model writes `null`).
fn to_json_value(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    let py = cls.py();
    let config = cls.getattr("model_config")?;
    let setting = |key: &str, default: &str| -> PyResult<Bound<'_, PyAny>> {
        Ok(match config.call_method1("get", (key,))? {
            v if v.is_none() => PyString::new(py, default).into_any(),
            v => v,
        })
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("inf_nan_mode", setting("ser_json_inf_nan", "null")?)?;
    kwargs.set_item("bytes_mode", setting("ser_json_bytes", "utf8")?)?;
    kwargs.set_item("timedelta_mode", setting("ser_json_timedelta", "iso8601")?)?;
    let partial = py.import("functools")?.getattr("partial")?;
    let to_json = py.import("pydantic_core")?.getattr("to_json")?;
    Ok(partial.call((to_json,), Some(&kwargs))?.unbind())
}

/// The numbers of a list of finite floats; None for anything else.
fn float_list(v: &Bound<'_, PyAny>) -> PyResult<Option<Vec<f64>>> {
    let Ok(list) = v.cast_exact::<PyList>() else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        match item.cast_exact::<PyFloat>() {
            Ok(f) if f.value().is_finite() => out.push(f.value()),
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}
