//! Hugging Face dataset directories (`datasets`' `save_to_disk`, Kura's
//! `HFDatasetCheckpointManager`) read as the kind's declared schema: DataFusion's Arrow
//! scan over exactly the data files `state.json` lists, plus a projection that decodes
//! each stored column with the `hf_column` function.
//!
//! Kura stores a kind's rows in its own lossy encoding (see `_model_to_dict` /
//! `_dict_to_model` in Kura 0.5.4): `None` as `""`, `0` or `[]`; `metadata` as
//! `struct<keys, values>` of text (lists as JSON, the rest through `str`); datetimes as
//! `timestamp[ns]` of the UTC instant; messages as a struct of lists with roles as class
//! ids. `hf_column` gives what Kura's manager loads from those columns. Like the Kura
//! Parquet layout (`scan::kura`), the decoding is a logical plan over DataFusion's own
//! table, so `EXPLAIN` shows `ProjectionExec: expr=[hf_column(...)]` over the Arrow
//! `DataSourceExec` and the optimizer prunes the columns a query does not use.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, Int32Array, Int64Array, ListArray, StringArray,
    StringBuilder, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::{Column, Result as DfResult, ScalarValue, TableReference, exec_err};
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, col, lit,
};
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::kind::{
    CheckpointKind, DEFAULT_JSON, JSON_TEXT, computed_len_of, message_fields, utc_offset_of,
};
use crate::storage::Root;
use crate::{Error, Result};

/// The file that lists a dataset's data files; written last, it is the commit of a save.
pub const STATE_FILE: &str = "state.json";
/// The file that holds a dataset's features.
pub const INFO_FILE: &str = "dataset_info.json";
/// Schema metadata key of the datasets ckpt writes: nulls are stored as nulls, so `""`,
/// `0` and `[]` are read as themselves (in Kura's files they stand for `None`).
pub const CKPT_KEY: &str = "ckpt";
/// The class names of Kura's message roles, in the order of their ids.
pub const ROLE_NAMES: [&str; 2] = ["user", "assistant"];

/// The data files of the dataset directory `dir` (ending in `/`), in `state.json`'s order,
/// from the directory's listing `files`. `None` when there is no `state.json`: an
/// unfinished save, or not a dataset.
pub async fn data_files(
    root: &Root,
    dir: &str,
    files: &[ObjectMeta],
) -> Result<Option<Vec<ObjectMeta>>> {
    let dir = dir.trim_end_matches('/');
    let state_name = format!("{dir}/{STATE_FILE}");
    let Some(state) = files
        .iter()
        .find(|m| root.name_of(&m.location).as_deref() == Some(state_name.as_str()))
    else {
        return Ok(None);
    };
    let bytes = root
        .store()
        .get(&state.location)
        .await
        .map_err(|e| Error::storage(format!("cannot read {}", root.describe(&state_name)), e))?
        .bytes()
        .await
        .map_err(|e| Error::storage(format!("cannot read {}", root.describe(&state_name)), e))?;
    let bad = |why: String| Error::data(root.describe(&state_name), None, None, why);
    let state: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let listed = state
        .get("_data_files")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("no `_data_files` list".to_owned()))?;
    let mut out = Vec::with_capacity(listed.len());
    for f in listed {
        let name = f
            .get("filename")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("a `_data_files` item without a `filename`".to_owned()))?;
        let want = format!("{dir}/{name}");
        let meta = files
            .iter()
            .find(|m| root.name_of(&m.location).as_deref() == Some(want.as_str()))
            .ok_or_else(|| bad(format!("lists {name}, which is not in the directory")))?;
        out.push(meta.clone());
    }
    Ok(Some(out))
}

/// The stored schema of an Arrow IPC stream (or file) read from its first bytes.
pub async fn stored_schema(root: &Root, meta: &ObjectMeta) -> Result<SchemaRef> {
    let display = root
        .name_of(&meta.location)
        .unwrap_or_else(|| meta.location.to_string());
    let mut len = 64 * 1024u64;
    loop {
        let end = len.min(meta.size);
        if end == 0 {
            return Err(Error::data(&display, None, None, "empty Arrow file"));
        }
        let bytes = root
            .store()
            .get_range(&meta.location, 0..end)
            .await
            .map_err(|e| Error::storage(format!("cannot read {display}"), e))?;
        // The IPC file format is the stream format behind a magic number and padding.
        let body = match bytes.starts_with(b"ARROW1") {
            true => bytes.slice(8..),
            false => bytes,
        };
        match datafusion::arrow::ipc::reader::StreamReader::try_new(Cursor::new(body), None) {
            Ok(r) => return Ok(r.schema()),
            Err(_) if end < meta.size => len *= 8,
            Err(e) => {
                return Err(Error::data(
                    &display,
                    None,
                    None,
                    format!("not an Arrow IPC stream: {e}"),
                ));
            }
        }
    }
}

/// The kind the columns of a dataset's first data file say.
pub async fn kind_of_dataset(root: &Root, files: &[ObjectMeta]) -> Result<Option<CheckpointKind>> {
    let Some(first) = files.first() else {
        return Ok(None);
    };
    let schema = stored_schema(root, first).await?;
    Ok(crate::kind::kind_of_columns(
        schema.fields().iter().map(|f| f.name().as_str()),
    ))
}

/// The table of the dataset directory `dir` of `kind`: its `data` files (as
/// [`data_files`] lists them) scanned by DataFusion's Arrow format, decoded by
/// `hf_column`. Without a kind, the stored columns as they are.
pub fn hf_table(
    root: &Root,
    dir: &str,
    data: &[ObjectMeta],
    stored: SchemaRef,
    kind: Option<CheckpointKind>,
) -> Result<Arc<dyn TableProvider>> {
    let urls = data
        .iter()
        .map(|m| {
            let name = root
                .name_of(&m.location)
                .ok_or_else(|| Error::config(format!("{} is outside the root", m.location)))?;
            Ok(ListingTableUrl::parse(root.url_of(&name)?.as_str())?)
        })
        .collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(".arrow");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(stored.clone());
    let listing: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
    let Some(kind) = kind else {
        return Ok(listing);
    };
    let file = dir.trim_end_matches('/');
    let encoding = match stored.metadata().contains_key(CKPT_KEY) {
        true => "nulls",
        false => "kura",
    };
    let udf = Arc::new(HfColumn::udf());
    let exprs: Vec<Expr> = kind
        .schema()
        .fields()
        .iter()
        .map(|field| {
            let source = stored_source(field);
            let stored_column = match stored.index_of(source) {
                Ok(_) => col(Column::new_unqualified(source)),
                Err(_) => lit(ScalarValue::Null),
            };
            udf.call(vec![
                stored_column,
                lit(format!("{kind}.{}", field.name())),
                lit(file),
                lit(encoding),
            ])
            .alias(field.name())
        })
        .collect();
    let plan = LogicalPlanBuilder::scan(
        TableReference::bare(file),
        provider_as_source(listing),
        None,
    )?
    .project(exprs)?
    .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The stored column a declared column is decoded from: itself, the list a computed
/// column counts, or the datetime a UTC offset column belongs to.
fn stored_source(field: &Field) -> &str {
    computed_len_of(field)
        .or_else(|| utc_offset_of(field))
        .unwrap_or(field.name())
}

/// `hf_column(stored, 'kind.field', 'file', 'encoding')`: one column of a kind's declared
/// schema from the column Kura's HF manager stored, decoded as Kura's manager loads it.
/// `file` names the checkpoint in errors; a column the dataset lacks comes as NULL.
/// `encoding` is `kura` (`""`, `0` and `[]` stand for `None`) or `nulls` (ckpt's own
/// datasets, where a null is stored as one).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HfColumn {
    signature: Signature,
}

impl HfColumn {
    pub const NAME: &'static str = "hf_column";

    pub fn new() -> Self {
        HfColumn {
            signature: Signature::any(4, Volatility::Immutable),
        }
    }

    /// The function as a `ScalarUDF`, to register in a session.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(HfColumn::new())
    }
}

impl Default for HfColumn {
    fn default() -> Self {
        Self::new()
    }
}

fn declared_field(target: &str) -> DfResult<FieldRef> {
    let bad = || {
        datafusion::error::DataFusionError::Plan(format!(
            "{}: unknown column {target:?}",
            HfColumn::NAME
        ))
    };
    let (kind, field) = target.split_once('.').ok_or_else(bad)?;
    let kind: CheckpointKind = kind.parse().map_err(|_| bad())?;
    let schema = kind.schema();
    let field = schema.field_with_name(field).map_err(|_| bad())?;
    Ok(Arc::new(field.clone()))
}

impl ScalarUDFImpl for HfColumn {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        datafusion::common::plan_err!("{} needs its target as a literal", Self::NAME)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        match args.scalar_arguments.get(1).copied().flatten() {
            Some(ScalarValue::Utf8(Some(target))) => declared_field(target),
            _ => datafusion::common::plan_err!("{}: argument 2 must be a text literal", Self::NAME),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let (
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(target))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(file))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(encoding))),
        ) = (&args.args[1], &args.args[2], &args.args[3])
        else {
            return exec_err!(
                "{}: target, file and encoding must be text literals",
                Self::NAME
            );
        };
        let field = declared_field(target)?;
        let stored = args.args[0].to_array(args.number_rows)?;
        let kura_nones = encoding != "nulls";
        let column = decode_column(&field, &stored, file, kura_nones)?;
        Ok(ColumnarValue::Array(column))
    }
}

/// The declared column `field` from the stored column `stored` (`Null` when the dataset
/// has no such column), as Kura's `_dict_to_model` reads it; with `kura_nones`, `""`, `0`
/// and `[]` in optional columns are `None`, as Kura saves them.
pub fn decode_column(
    field: &Field,
    stored: &ArrayRef,
    file: &str,
    kura_nones: bool,
) -> Result<ArrayRef> {
    let bad = |why: String| Error::data(file, None, Some(field.name()), why);
    let rows = stored.len();
    if utc_offset_of(field).is_some() {
        // Kura loads every datetime of a dataset naive (pandas' Timestamp of the UTC
        // instant): no offset.
        return Ok(Arc::new(Int32Array::new_null(rows)));
    }
    if computed_len_of(field).is_some() {
        let counts: Int64Array = match stored.data_type() {
            DataType::Null => return Err(bad("the list it counts is missing".into())),
            _ => {
                let lists = cast(stored, &crate::kind::string_list_type())?;
                let lists = lists.as_list::<i32>();
                (0..rows)
                    .map(|i| {
                        Some(if lists.is_null(i) {
                            0
                        } else {
                            lists.value_length(i) as i64
                        })
                    })
                    .collect()
            }
        };
        return Ok(Arc::new(counts));
    }
    if *stored.data_type() == DataType::Null {
        if let Some(default) = field.metadata().get(DEFAULT_JSON) {
            return Ok(Arc::new(StringArray::from(vec![default.as_str(); rows])));
        }
        if field.is_nullable() {
            return Ok(datafusion::arrow::array::new_null_array(
                field.data_type(),
                rows,
            ));
        }
        return Err(bad("required column is missing from the dataset".into()));
    }
    let out: ArrayRef = if field.metadata().contains_key(JSON_TEXT) {
        decode_metadata(stored).map_err(bad)?
    } else if field.name() == "messages" {
        decode_messages(stored).map_err(bad)?
    } else {
        match field.data_type() {
            DataType::Timestamp(..) => decode_timestamp(stored)?,
            DataType::Utf8 => {
                let s = cast(stored, &DataType::Utf8)?;
                match field.is_nullable() && kura_nones {
                    // Kura saves a missing text as "" and loads "" as None.
                    true => nullif(&s, |i| s.as_string::<i32>().value(i).is_empty()),
                    false => s,
                }
            }
            DataType::Int32 if field.is_nullable() && kura_nones => {
                // Kura saves a missing score as 0 and loads 0 as None.
                let v = cast(stored, &DataType::Int32)?;
                let ints = v.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
                let zero: Vec<bool> = (0..rows).map(|i| ints.value(i) == 0).collect();
                nullif(&v, |i| zero[i])
            }
            DataType::List(_) => {
                let v = cast(stored, field.data_type())?;
                match field.is_nullable() && kura_nones {
                    // Kura saves a missing list as [] and loads an empty list as None.
                    true => {
                        let l = v.as_list::<i32>();
                        let empty: Vec<bool> = (0..rows).map(|i| l.value_length(i) == 0).collect();
                        nullif(&v, |i| empty[i])
                    }
                    false => v,
                }
            }
            dt => cast(stored, dt)?,
        }
    };
    if !field.is_nullable() && out.null_count() > 0 {
        return Err(bad("null where Kura's model requires a value".into()));
    }
    Ok(out)
}

/// `array` with the rows where `is_null` holds made null (and the nulls it had).
fn nullif(array: &ArrayRef, is_null: impl Fn(usize) -> bool) -> ArrayRef {
    let mut keep = BooleanBufferBuilder::new(array.len());
    for i in 0..array.len() {
        keep.append(array.is_valid(i) && !is_null(i));
    }
    let nulls = NullBuffer::new(keep.finish());
    let data = array
        .to_data()
        .into_builder()
        .nulls(Some(nulls))
        .build()
        .expect("same length, same type");
    datafusion::arrow::array::make_array(data)
}

/// Kura's datetimes: `timestamp[ns]` (or int nanoseconds) of the UTC instant, loaded
/// naive; the declared column holds microseconds.
fn decode_timestamp(stored: &ArrayRef) -> Result<ArrayRef> {
    let want = crate::kind::timestamp_type();
    let ns = match stored.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) | DataType::Int64 => {
            cast(stored, &DataType::Timestamp(TimeUnit::Nanosecond, None))?
        }
        _ => stored.clone(),
    };
    let ns = match ns.data_type() {
        DataType::Timestamp(_, Some(_)) => {
            cast(&ns, &DataType::Timestamp(TimeUnit::Nanosecond, None))?
        }
        _ => ns,
    };
    Ok(cast(&ns, &want)?)
}

/// Kura's metadata, `struct<keys: list<str>, values: list<str>>`, as the JSON object its
/// `_deserialize_metadata` makes: each value parsed as JSON where it parses, else the text.
fn decode_metadata(stored: &ArrayRef) -> std::result::Result<ArrayRef, String> {
    if let DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View = stored.data_type() {
        return cast(stored, &DataType::Utf8).map_err(|e| e.to_string());
    }
    let Some(s) = stored.as_struct_opt() else {
        return Err(format!(
            "expected struct<keys, values>, found {}",
            stored.data_type()
        ));
    };
    let list = |name: &str| -> std::result::Result<ListArray, String> {
        let c = s
            .column_by_name(name)
            .ok_or_else(|| format!("the struct has no `{name}`"))?;
        let c = cast(c, &crate::kind::string_list_type()).map_err(|e| e.to_string())?;
        Ok(c.as_list::<i32>().clone())
    };
    let (keys, values) = (list("keys")?, list("values")?);
    let mut out = StringBuilder::new();
    let mut text = String::new();
    for i in 0..s.len() {
        text.clear();
        text.push('{');
        if s.is_valid(i) && keys.is_valid(i) {
            let (k, v) = (keys.value(i), values.value(i));
            let (k, v) = (k.as_string::<i32>(), v.as_string::<i32>());
            // zip: Kura's loader stops at the shorter list.
            for j in 0..k.len().min(v.len()) {
                if j > 0 {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(k.value(j)).expect("a string"));
                text.push(':');
                let raw = v.value(j);
                match serde_json::from_str::<serde::de::IgnoredAny>(raw) {
                    Ok(_) => text.push_str(raw.trim()),
                    Err(_) => text.push_str(&serde_json::to_string(raw).expect("a string")),
                }
            }
        }
        text.push('}');
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

/// Kura's messages, a struct of lists (`created_at`, `role` as class ids, `content`), as
/// the kind's list of message structs.
fn decode_messages(stored: &ArrayRef) -> std::result::Result<ArrayRef, String> {
    let Some(s) = stored.as_struct_opt() else {
        return Err(format!(
            "expected a struct of lists (datasets' Sequence of a dict), found {}",
            stored.data_type()
        ));
    };
    let rows = s.len();
    // Each list's values and offsets, the offsets starting at 0.
    let part = |name: &str| -> std::result::Result<(ArrayRef, Vec<i64>), String> {
        let c = s
            .column_by_name(name)
            .ok_or_else(|| format!("the messages have no `{name}`"))?;
        let (offsets, values): (Vec<i64>, ArrayRef) = match c.data_type() {
            DataType::List(_) => {
                let l = c.as_list::<i32>();
                (
                    l.value_offsets().iter().map(|o| *o as i64).collect(),
                    l.values().clone(),
                )
            }
            DataType::LargeList(_) => {
                let l = c.as_list::<i64>();
                (l.value_offsets().to_vec(), l.values().clone())
            }
            dt => return Err(format!("`{name}`: expected a list, found {dt}")),
        };
        let (first, last) = (offsets[0], offsets[rows]);
        let values = values.slice(first as usize, (last - first) as usize);
        let lengths: Vec<i64> = (0..rows).map(|i| offsets[i + 1] - offsets[i]).collect();
        Ok((values, lengths))
    };
    let (created, n_created) = part("created_at")?;
    let (role, n_role) = part("role")?;
    let (content, n_content) = part("content")?;
    if n_created != n_role || n_created != n_content {
        return Err("the messages' lists differ in length".into());
    }
    let lengths = n_created;
    let created = decode_timestamp(&created).map_err(|e| e.to_string())?;
    let role_ids = cast(&role, &DataType::Int64).map_err(|e| e.to_string())?;
    let role_ids = role_ids.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let mut roles = StringBuilder::new();
    for i in 0..role_ids.len() {
        if role_ids.is_null(i) {
            return Err("a message without a role".into());
        }
        let id = role_ids.value(i);
        let name = usize::try_from(id)
            .ok()
            .and_then(|i| ROLE_NAMES.get(i))
            .ok_or_else(|| {
                format!("role id {id} is not one of Kura's classes (0 user, 1 assistant)")
            })?;
        roles.append_value(name);
    }
    let content = cast(&content, &DataType::Utf8).map_err(|e| e.to_string())?;
    if created.null_count() > 0 || content.null_count() > 0 {
        return Err("a message without created_at or content".into());
    }
    let n = created.len();
    let fields = message_fields();
    let structs = StructArray::try_new(
        fields.clone(),
        vec![
            created,
            Arc::new(roles.finish()),
            content,
            Arc::new(Int32Array::new_null(n)),
        ],
        None,
    )
    .map_err(|e| e.to_string())?;
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().map(|l| *l as usize));
    let DataType::List(item) = crate::kind::messages_type() else {
        unreachable!("messages are a list")
    };
    let list =
        ListArray::try_new(item, offsets, Arc::new(structs), None).map_err(|e| e.to_string())?;
    Ok(Arc::new(list))
}

/// Whether a stored schema is one `hf_column` can decode as `kind` (every column the kind
/// requires is there); a dataset of other columns is read as stored.
pub fn fits_kind(kind: CheckpointKind, stored: &Schema) -> bool {
    kind.schema().fields().iter().all(|f| {
        f.is_nullable()
            || computed_len_of(f).is_some()
            || f.metadata().contains_key(DEFAULT_JSON)
            || stored.field_with_name(f.name()).is_ok()
    })
}
