//! Writing a checkpoint as a Hugging Face dataset directory, as `datasets`'
//! `save_to_disk` does for Kura's `HFDatasetCheckpointManager`: `NAME/` holding one Arrow
//! IPC stream (uncompressed, batches of 1 000 rows, schema metadata `huggingface`),
//! `dataset_info.json` (features, lists as `Sequence`, which `datasets` 3.x and 5.x both
//! read) and `state.json` (the data files).
//!
//! Values are stored in Kura's encoding where Kura reads them (`_model_to_dict`): metadata
//! as `struct<keys, values>` of `str()`/`json.dumps` text, datetimes as `timestamp[ns]`
//! of `dt.timestamp() * 1e9`, messages as a struct of lists with roles as class ids,
//! `count` stored. Where Kura writes `""`, `0` or `[]` for `None`, ckpt writes a null:
//! Kura reads both as `None`, and ckpt, told by the schema metadata key `ckpt`, reads its
//! own nulls back as nulls and its own `""`, `0` and `[]` as themselves.
//!
//! Atomic like every save. Locally the directory is written in a hidden sibling
//! (`.NAME.ckpt-staging-PID-NANOS`), synced, and swapped in with one rename (on Linux an
//! exchange with the previous version, which is then removed). On an object store there
//! is no directory to rename: the data file and `dataset_info.json` are written first,
//! `state.json` last as the commit, and readers ignore a directory without it; a data
//! file that would replace one the current `state.json` lists gets a new name, so a write
//! that dies leaves the previous version readable. Hand-written because neither arrow nor
//! DataFusion knows the `datasets` layout.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, ListArray, RecordBatch, StringBuilder,
    StructArray, TimestampNanosecondArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};

use super::{Progress, WriteStats};
use python_text::PyValue;

mod python_text;
use crate::kind::{CheckpointKind, JSON_TEXT, computed_len_of, utc_offset_of};
use crate::scan::hf::{CKPT_KEY, INFO_FILE, ROLE_NAMES, STATE_FILE};
use crate::storage::Root;
use crate::{Error, Result};

/// Rows per record batch, as `datasets` writes them.
pub const BATCH_ROWS: usize = 1000;
/// The one data file ckpt writes (`datasets` splits above 500 MB; one file reads the same).
const DATA_FILE: &str = "data-00000-of-00001.arrow";

/// The stored Arrow schema of `kind` in a dataset, and its `datasets` features.
pub fn hf_schema(kind: CheckpointKind) -> (SchemaRef, Value) {
    let mut fields = Vec::new();
    let mut features = serde_json::Map::new();
    let string_list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    let value = |dtype: &str| json!({"dtype": dtype, "_type": "Value"});
    let sequence = |feature: Value| json!({"feature": feature, "_type": "Sequence"});
    for f in kind.schema().fields() {
        if utc_offset_of(f).is_some() {
            continue;
        }
        let name = f.name().as_str();
        let (dt, feature) = if f.metadata().contains_key(JSON_TEXT) {
            (
                DataType::Struct(Fields::from(vec![
                    Field::new("keys", string_list(), true),
                    Field::new("values", string_list(), true),
                ])),
                json!({"keys": sequence(value("string")), "values": sequence(value("string"))}),
            )
        } else if name == "messages" {
            let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
            (
                DataType::Struct(Fields::from(vec![
                    Field::new(
                        "created_at",
                        DataType::List(Arc::new(Field::new("item", ts, true))),
                        true,
                    ),
                    Field::new(
                        "role",
                        DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                        true,
                    ),
                    Field::new("content", string_list(), true),
                ])),
                sequence(json!({
                    "created_at": value("timestamp[ns]"),
                    "role": {"names": ROLE_NAMES, "_type": "ClassLabel"},
                    "content": value("string"),
                })),
            )
        } else if computed_len_of(f).is_some() {
            (DataType::Int32, value("int32"))
        } else {
            match f.data_type() {
                DataType::Utf8 => (DataType::Utf8, value("string")),
                DataType::Int32 if f.metadata().contains_key(crate::kind::RANGE) => {
                    (DataType::Int8, value("int8"))
                }
                DataType::Int32 => (DataType::Int32, value("int32")),
                DataType::Float64 => (DataType::Float32, value("float32")),
                DataType::Timestamp(..) => (
                    DataType::Timestamp(TimeUnit::Nanosecond, None),
                    value("timestamp[ns]"),
                ),
                DataType::List(item) if item.data_type() == &DataType::Float64 => (
                    DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                    sequence(value("float32")),
                ),
                _ => (string_list(), sequence(value("string"))),
            }
        };
        fields.push(Field::new(name, dt, true));
        features.insert(name.to_owned(), feature);
    }
    let features = Value::Object(features);
    let hf = json!({"info": {"features": features}}).to_string();
    let metadata = std::collections::HashMap::from([
        ("huggingface".to_owned(), hf),
        (CKPT_KEY.to_owned(), json!({"nulls": true}).to_string()),
    ]);
    (
        Arc::new(Schema::new_with_metadata(fields, metadata)),
        features,
    )
}

/// A batch of `kind`'s declared schema in the stored schema `schema`.
pub fn encode_batch(
    kind: CheckpointKind,
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let declared = kind.schema();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for stored in schema.fields() {
        let name = stored.name().as_str();
        let field = declared.field_with_name(name)?;
        let src = |n: &str| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| Error::internal(format!("hf: no column {n} to write")))
        };
        let column: ArrayRef = if field.metadata().contains_key(JSON_TEXT) {
            encode_metadata(&src(name)?)?
        } else if name == "messages" {
            encode_messages(&src(name)?)?
        } else if let Some(list) = computed_len_of(field) {
            let l = src(list)?;
            let l = l.as_list::<i32>();
            Arc::new(Int32Array::from_iter_values(
                (0..l.len()).map(|i| l.value_length(i)),
            ))
        } else if matches!(field.data_type(), DataType::Timestamp(..)) {
            Arc::new(kura_nanos(&src(name)?)?)
        } else {
            cast(&src(name)?, stored.data_type())?
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Kura's `int(dt.timestamp() * 1_000_000_000)`, in floating point as Python computes it
/// (so Kura loads the microsecond it loads from its own files); naive datetimes are taken
/// as UTC, which is Kura's reading on a machine whose zone is UTC.
fn kura_nanos(micros: &ArrayRef) -> Result<TimestampNanosecondArray> {
    let us = cast(micros, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let us = us.as_primitive::<TimestampMicrosecondType>();
    Ok(us.unary(|v| ((v as f64 / 1e6) * 1e9) as i64))
}

fn encode_messages(messages: &ArrayRef) -> Result<ArrayRef> {
    let list = messages.as_list::<i32>();
    let offsets = list.offsets().clone();
    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    let values = list.values().slice(first, last - first);
    let rebased = OffsetBuffer::new(
        offsets
            .iter()
            .map(|o| o - offsets[0])
            .collect::<Vec<_>>()
            .into(),
    );
    let items = values.as_struct();
    let created = Arc::new(kura_nanos(
        items
            .column_by_name("created_at")
            .expect("messages have created_at"),
    )?);
    let roles = items
        .column_by_name("role")
        .expect("messages have a role")
        .as_string::<i32>();
    let role_ids = roles
        .iter()
        .map(|r| {
            let r = r.unwrap_or_default();
            ROLE_NAMES
                .iter()
                .position(|n| *n == r)
                .map(|i| i as i64)
                .ok_or_else(|| {
                    Error::config(format!(
                        "message role {r:?} is not one of Kura's (user, assistant)"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let content = items
        .column_by_name("content")
        .expect("messages have content")
        .clone();
    let list_of = |values: ArrayRef| -> Result<ArrayRef> {
        let item = Arc::new(Field::new("item", values.data_type().clone(), true));
        Ok(Arc::new(ListArray::try_new(
            item,
            rebased.clone(),
            values,
            None,
        )?))
    };
    let fields = Fields::from(vec![
        Field::new(
            "created_at",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ))),
            true,
        ),
        Field::new(
            "role",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        ),
        Field::new(
            "content",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]);
    let columns = vec![
        list_of(created)?,
        list_of(Arc::new(Int64Array::from(role_ids)))?,
        list_of(cast(&content, &DataType::Utf8)?)?,
    ];
    Ok(Arc::new(StructArray::try_new(fields, columns, None)?))
}

/// Kura's `_serialize_metadata`: keys, and each value as `json.dumps` (lists) or `str`.
fn encode_metadata(text: &ArrayRef) -> Result<ArrayRef> {
    let text = cast(text, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let (mut keys, mut values) = (StringBuilder::new(), StringBuilder::new());
    let mut offsets = vec![0i32];
    let mut entries = 0i32;
    for i in 0..text.len() {
        if text.is_valid(i)
            && let PyValue::Dict(map) = PyValue::parse(text.value(i))?
        {
            for (k, v) in map {
                keys.append_value(&k);
                entries += 1;
                values.append_value(match &v {
                    PyValue::List(_) => v.json_dumps(),
                    _ => v.str(),
                });
            }
        }
        offsets.push(entries);
    }
    let offsets = OffsetBuffer::new(offsets.into());
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let keys = ListArray::try_new(item.clone(), offsets.clone(), Arc::new(keys.finish()), None)?;
    let values = ListArray::try_new(item, offsets, Arc::new(values.finish()), None)?;
    let fields = Fields::from(vec![
        Field::new("keys", keys.data_type().clone(), true),
        Field::new("values", values.data_type().clone(), true),
    ]);
    Ok(Arc::new(StructArray::try_new(
        fields,
        vec![Arc::new(keys), Arc::new(values)],
        None,
    )?))
}

/// The IPC stream of a dataset's data file, produced batch by batch.
struct Encoder {
    kind: CheckpointKind,
    schema: SchemaRef,
    coalescer: BatchCoalescer,
    writer: StreamWriter<Vec<u8>>,
    rows: u64,
}

impl Encoder {
    fn new(kind: CheckpointKind) -> Result<Self> {
        let (schema, _) = hf_schema(kind);
        Ok(Encoder {
            kind,
            coalescer: BatchCoalescer::new(schema.clone(), BATCH_ROWS),
            writer: StreamWriter::try_new(Vec::new(), &schema)?,
            schema,
            rows: 0,
        })
    }

    /// Encodes `batch`; returns the stream bytes completed so far.
    fn push(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let encoded = encode_batch(self.kind, &self.schema, batch)?;
        self.rows += encoded.num_rows() as u64;
        self.coalescer.push_batch(encoded)?;
        while let Some(b) = self.coalescer.next_completed_batch() {
            self.writer.write(&b)?;
        }
        Ok(std::mem::take(self.writer.get_mut()))
    }

    /// The last bytes of the stream: the batch under 1 000 rows and the end marker.
    fn finish(mut self) -> Result<Vec<u8>> {
        self.coalescer.finish_buffered_batch()?;
        while let Some(b) = self.coalescer.next_completed_batch() {
            self.writer.write(&b)?;
        }
        self.writer.finish()?;
        Ok(self.writer.into_inner()?)
    }
}

fn info_json(kind: CheckpointKind) -> Vec<u8> {
    let (_, features) = hf_schema(kind);
    let info = json!({
        "citation": "",
        "description": "",
        "features": features,
        "homepage": "",
        "license": "",
    });
    serde_json::to_vec_pretty(&info).expect("JSON")
}

fn state_json(data_file: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let state = json!({
        "_data_files": [{"filename": data_file}],
        "_fingerprint": format!("{:016x}", (nanos as u64) ^ u64::from(std::process::id())),
        "_format_columns": null,
        "_format_kwargs": {},
        "_format_type": null,
        "_output_all_columns": false,
        "_split": null,
    });
    serde_json::to_vec_pretty(&state).expect("JSON")
}

/// Writes `stream` (batches of `kind`'s schema) as the dataset directory `dir` of `root`,
/// replacing any previous version atomically (see the module docs).
pub async fn write_hf(
    root: &Root,
    dir: &str,
    kind: Option<CheckpointKind>,
    stream: BoxStream<'static, Result<RecordBatch>>,
    progress: Option<Progress>,
) -> Result<WriteStats> {
    let kind = kind.ok_or_else(|| {
        Error::config(format!(
            "{}: a Hugging Face dataset is written for a known kind (summaries, clusters, meta_clusters, dimensionality, conversations)",
            root.describe(dir)
        ))
    })?;
    let dir = dir.trim_end_matches('/');
    crate::format::validate_checkpoint_name(dir)?;
    match root.local_dir() {
        Some(base) => write_local(&base.join(dir), kind, stream, progress).await,
        None => write_store(root, dir, kind, stream, progress).await,
    }
}

async fn write_local(
    target: &std::path::Path,
    kind: CheckpointKind,
    mut stream: BoxStream<'static, Result<RecordBatch>>,
    progress: Option<Progress>,
) -> Result<WriteStats> {
    use std::io::Write;
    let parent = target
        .parent()
        .expect("a checkpoint has a parent directory")
        .to_owned();
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a valid name")
        .to_owned();
    std::fs::create_dir_all(&parent)
        .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    let stamp = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    clean_dead_staging(&parent, &name);
    let staged = parent.join(format!(".{name}{STAGING}{stamp}"));
    let io = |what: &std::path::Path| {
        let what = what.display().to_string();
        move |e| Error::io(format!("cannot write {what}"), e)
    };
    std::fs::create_dir(&staged).map_err(io(&staged))?;
    let result = async {
        let data_path = staged.join(DATA_FILE);
        let mut data = std::fs::File::create(&data_path).map_err(io(&data_path))?;
        let mut encoder = Encoder::new(kind)?;
        while let Some(batch) = stream.next().await {
            let bytes = encoder.push(&batch?)?;
            data.write_all(&bytes).map_err(io(&data_path))?;
            if let Some(p) = &progress {
                p(encoder.rows);
            }
        }
        let rows = encoder.rows;
        data.write_all(&encoder.finish()?).map_err(io(&data_path))?;
        data.sync_all().map_err(io(&data_path))?;
        let bytes = data.metadata().map_err(io(&data_path))?.len();
        for (file, body) in [
            (INFO_FILE, info_json(kind)),
            (STATE_FILE, state_json(DATA_FILE)),
        ] {
            let path = staged.join(file);
            let mut f = std::fs::File::create(&path).map_err(io(&path))?;
            f.write_all(&body).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
        sync_dir(&staged)?;
        Ok::<_, Error>(WriteStats { rows, bytes })
    }
    .await;
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
    };
    if let Err(e) = swap_in(&staged, target) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    sync_dir(&parent)?;
    Ok(stats)
}

/// What marks a staged dataset directory: `.NAME.ckpt-staging-PID-NANOS`.
const STAGING: &str = ".ckpt-staging-";

/// Removes the staged directories of `name` whose writer is gone (killed mid-save, or
/// between the exchange and the removal of the previous version): a process that no
/// longer exists (Linux, through `/proc`; elsewhere they are left).
fn clean_dead_staging(parent: &std::path::Path, name: &str) {
    let prefix = format!(".{name}{STAGING}");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive =
            !cfg!(target_os = "linux") || std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            tracing::debug!(path = %entry.path().display(), "removing a dead writer's staged dataset");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Puts the complete directory `staged` at `target` in one step: renamed when `target`
/// is new, else exchanged with it (Linux) and the previous version removed.
fn swap_in(staged: &std::path::Path, target: &std::path::Path) -> Result<()> {
    let io = |e| Error::io(format!("cannot replace {}", target.display()), e);
    if !target.exists() {
        return std::fs::rename(staged, target).map_err(io);
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        renameat_with(CWD, staged, CWD, target, RenameFlags::EXCHANGE)
            .map_err(|e| io(std::io::Error::from(e)))?;
        // `staged` now holds the previous version.
        std::fs::remove_dir_all(staged).map_err(io)
    }
    #[cfg(not(target_os = "linux"))]
    {
        // No atomic exchange: the previous version is moved aside for the moment between
        // the two renames.
        let aside = staged.with_extension("previous");
        std::fs::rename(target, &aside).map_err(io)?;
        std::fs::rename(staged, target).map_err(io)?;
        std::fs::remove_dir_all(&aside).map_err(io)
    }
}

fn sync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

async fn write_store(
    root: &Root,
    dir: &str,
    kind: CheckpointKind,
    mut stream: BoxStream<'static, Result<RecordBatch>>,
    progress: Option<Progress>,
) -> Result<WriteStats> {
    // A data file the current state.json lists is never overwritten: a write that dies
    // before its commit leaves that version whole.
    let listed = root.list_dir(dir).await.unwrap_or_default();
    let current = crate::scan::hf::data_files(root, dir, &listed)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let in_use = |file: &str| current.iter().any(|m| m.location.filename() == Some(file));
    let data_file = match in_use(DATA_FILE) {
        false => DATA_FILE.to_owned(),
        true => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("data-00000-of-00001-{nanos:x}.arrow")
        }
    };
    let mut out = root.writer(&format!("{dir}/{data_file}"))?;
    let mut encoder = Encoder::new(kind)?;
    let written = async {
        while let Some(batch) = stream.next().await {
            let bytes = encoder.push(&batch?)?;
            out.write(Bytes::from(bytes)).await?;
            if let Some(p) = &progress {
                p(encoder.rows);
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = written {
        out.abort().await;
        return Err(e);
    }
    let rows = encoder.rows;
    out.write(Bytes::from(encoder.finish()?)).await?;
    let bytes = out.commit().await?;
    for (file, body) in [
        (INFO_FILE, info_json(kind)),
        (STATE_FILE, state_json(&data_file)),
    ] {
        let mut w = root.writer(&format!("{dir}/{file}"))?;
        w.write(Bytes::from(body)).await?;
        w.commit().await?;
    }
    // The previous version's data, no longer listed.
    for old in current {
        if old.location.filename() != Some(data_file.as_str())
            && let Some(name) = root.name_of(&old.location)
        {
            let _ = root.delete(&name).await;
        }
    }
    Ok(WriteStats { rows, bytes })
}
