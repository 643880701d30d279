//! Writing a stream of record batches as one checkpoint file (or Hugging Face dataset
//! directory, [`hf`]): the single write path of ckpt. Typed saves, `ckpt convert` and the JSON side of COPY all end here, so encoding,
//! Parquet tuning and atomic commit live once.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use datafusion::parquet::basic::{Encoding, Type as PhysicalType};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::{WriterProperties, WriterVersion};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::format::{FileFormat, Layout, WriteOptions};
use crate::jsonl::JsonlEncoder;
use crate::kind::CheckpointKind;
use crate::layout::{conform, kura_schema, to_kura};
use crate::storage::Root;
use crate::{Error, Result};

pub mod hf;

/// A stream of batches, as DataFusion produces them.
pub type BatchStream = BoxStream<'static, datafusion::error::Result<RecordBatch>>;

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Called with the rows written so far (for progress bars).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Parquet row groups are cut at this many buffered bytes, so memory stays bounded
/// whatever the row width (a summary with a 384-d embedding is ~4 KB).
const ROW_GROUP_BYTES: usize = 32 << 20;

/// Writes `stream` to `file` (a name within `root`, with its extension) atomically.
/// `kind` brings batches to the kind's logical schema first (and enables the Kura layout).
pub async fn write_batches(
    root: &Root,
    file: &str,
    kind: Option<CheckpointKind>,
    opts: &WriteOptions,
    schema: SchemaRef,
    stream: BatchStream,
    progress: Option<Progress>,
) -> Result<WriteStats> {
    let format = opts
        .format
        .or_else(|| crate::format::strip_extension(file).1)
        .ok_or_else(|| {
            Error::invalid_name(file, "no format: give a .jsonl or .parquet name, or --to")
        })?;
    if format == FileFormat::Hf {
        let stream = stream.map_err(Error::from).and_then(move |b| {
            let r = match kind {
                Some(k) => conform(&b, &k.schema()).map_err(Error::from),
                None => Ok(b),
            };
            futures::future::ready(r)
        });
        return hf::write_hf(root, file, kind, stream.boxed(), progress).await;
    }
    let mut out = root.writer(file)?;
    let what = root.describe(file);
    let schema = match kind {
        Some(k) => k.schema(),
        None => schema,
    };
    let stream = stream.map_err(Error::from).and_then(move |b| {
        let r = match kind {
            Some(k) => conform(&b, &k.schema()).map_err(Error::from),
            None => Ok(b),
        };
        futures::future::ready(r)
    });
    let res = match format {
        FileFormat::Jsonl => write_jsonl(&mut out, stream.boxed(), progress).await,
        FileFormat::Parquet => {
            write_parquet(&mut out, kind, opts, schema, stream.boxed(), progress).await
        }
        FileFormat::Hf => unreachable!("datasets are written above"),
    };
    match res {
        Ok(rows) => {
            let bytes = out.commit().await?;
            tracing::debug!(file = %what, rows, bytes, "checkpoint written");
            Ok(WriteStats { rows, bytes })
        }
        Err(e) => {
            out.abort().await;
            Err(e)
        }
    }
}

async fn write_jsonl(
    out: &mut crate::storage::AtomicWriter,
    stream: BoxStream<'static, Result<RecordBatch>>,
    progress: Option<Progress>,
) -> Result<u64> {
    // Encoding is CPU work: batches are encoded on blocking threads, two at a time, and
    // written in order, each as pieces that go to the store without a copy.
    let mut encoded = stream
        .map(|batch| async move {
            let batch = batch?;
            tokio::task::spawn_blocking(move || {
                let pieces = encode_jsonl_pieces(&batch)?;
                Ok::<_, Error>((batch.num_rows() as u64, pieces))
            })
            .await
            .map_err(|e| Error::internal(format!("encoder task failed: {e}")))?
        })
        .buffered(2);
    let mut rows = 0u64;
    while let Some(item) = encoded.next().await {
        let (n, pieces) = item?;
        rows += n;
        for piece in pieces {
            out.write(piece).await?;
        }
        if let Some(p) = &progress {
            p(rows);
        }
    }
    Ok(rows)
}

/// Bytes of JSON in one encoded piece. Pieces stay below glibc's largest mmap threshold
/// (32 MiB), so the allocator can reuse the memory of pieces already written rather than
/// map and clear fresh pages for each: a 4096-row batch of summaries is ~35 MB of JSON.
const JSONL_PIECE_BYTES: usize = 8 << 20;

/// `batch` as JSON lines, in pieces of about [`JSONL_PIECE_BYTES`], each allocated once at
/// its size (estimated from the lines before it).
fn encode_jsonl_pieces(batch: &RecordBatch) -> Result<Vec<Bytes>> {
    let rows = batch.num_rows();
    let mut pieces = Vec::new();
    // A first guess from the Arrow size (a float is 8 bytes in Arrow, up to 24 in JSON),
    // then the width of the lines written.
    let mut line_bytes = batch.get_array_memory_size() * 3 / rows.max(1) + 64;
    let mut start = 0;
    while start < rows {
        let n = (JSONL_PIECE_BYTES / line_bytes).clamp(1, rows - start);
        let mut buf = Vec::with_capacity(n * line_bytes);
        JsonlEncoder.encode(&batch.slice(start, n), &mut buf)?;
        line_bytes = buf.len() / n + buf.len() / n / 16 + 64;
        start += n;
        pieces.push(Bytes::from(buf));
    }
    Ok(pieces)
}

/// Writer settings: the codec, dictionary encoding only where it pays (not for floats:
/// embeddings and coordinates are all distinct), and statistics for pruning.
pub fn writer_properties(
    schema: &SchemaRef,
    opts: &WriteOptions,
    kind: Option<CheckpointKind>,
) -> Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(opts.compression.to_parquet()?)
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_created_by(format!("ckpt {}", env!("CARGO_PKG_VERSION")));
    let descr = ArrowSchemaConverter::new().convert(schema)?;
    for col in descr.columns() {
        if matches!(
            col.physical_type(),
            PhysicalType::DOUBLE | PhysicalType::FLOAT
        ) {
            // Floats (embeddings, coordinates) are nearly all distinct: no dictionary.
            // BYTE_STREAM_SPLIT groups the bytes of each position, so the zero low bytes of
            // float32-valued doubles and the shared exponents compress well, and fast.
            b = b
                .set_column_dictionary_enabled(col.path().clone(), false)
                .set_column_encoding(col.path().clone(), Encoding::BYTE_STREAM_SPLIT);
        }
    }
    let mut kv = vec![KeyValue::new("ckpt.layout".into(), opts.layout.to_string())];
    if let Some(k) = kind {
        kv.push(KeyValue::new("ckpt.kind".into(), k.to_string()));
    }
    Ok(b.set_key_value_metadata(Some(kv)).build())
}

async fn write_parquet(
    out: &mut crate::storage::AtomicWriter,
    kind: Option<CheckpointKind>,
    opts: &WriteOptions,
    schema: SchemaRef,
    mut stream: BoxStream<'static, Result<RecordBatch>>,
    progress: Option<Progress>,
) -> Result<u64> {
    let kura = match (kind, opts.layout) {
        (Some(k), Layout::Kura) => Some(k),
        (None, Layout::Kura) => {
            return Err(Error::config(
                "the kura layout is for the known checkpoint kinds; this data has no kind",
            ));
        }
        _ => None,
    };
    let file_schema = match kura {
        Some(k) => kura_schema(k),
        None => schema,
    };
    let file_schema = if opts.float32_embeddings {
        float32_embedding_schema(&file_schema)?
    } else {
        file_schema
    };
    let props = writer_properties(&file_schema, opts, kind)?;
    let mut writer = ArrowWriter::try_new(Vec::<u8>::new(), file_schema.clone(), Some(props))?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let batch = match kura {
            Some(k) => to_kura(k, &batch)?,
            None => batch,
        };
        let batch = if opts.float32_embeddings {
            to_float32_embedding(&batch, &file_schema)?
        } else {
            batch
        };
        rows += batch.num_rows() as u64;
        // Encoding runs on this task; the upload of earlier row groups overlaps with it.
        writer.write(&batch)?;
        if writer.in_progress_size() > ROW_GROUP_BYTES {
            writer.flush()?;
        }
        drain(&mut writer, out).await?;
        if let Some(p) = &progress {
            p(rows);
        }
    }
    writer.finish()?;
    drain(&mut writer, out).await?;
    Ok(rows)
}

async fn drain(
    writer: &mut ArrowWriter<Vec<u8>>,
    out: &mut crate::storage::AtomicWriter,
) -> Result<()> {
    let buf = std::mem::take(writer.inner_mut());
    if !buf.is_empty() {
        out.write(Bytes::from(buf)).await?;
    }
    Ok(())
}

/// The schema with `embedding` as a list of float32.
fn float32_embedding_schema(schema: &SchemaRef) -> Result<SchemaRef> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let idx = schema.index_of("embedding").map_err(|_| {
        Error::config("float32 embeddings: this checkpoint has no embedding column")
    })?;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let f = &fields[idx];
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    fields[idx] = Field::new(f.name(), DataType::List(item), f.is_nullable())
        .with_metadata(f.metadata().clone());
    Ok(Arc::new(
        Schema::new(fields).with_metadata(schema.metadata().clone()),
    ))
}

/// Casts `embedding` to float32, refusing any value that float32 cannot hold exactly.
fn to_float32_embedding(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Float64Type;
    let idx = schema.index_of("embedding")?;
    let col = batch.column(idx);
    let list = col.as_list::<i32>();
    let values = list.values().as_primitive::<Float64Type>();
    for (i, v) in values.values().iter().enumerate() {
        if values.is_valid(i) && (*v as f32) as f64 != *v && !v.is_nan() {
            return Err(Error::config(format!(
                "embedding value {v} is not exactly representable as float32; write without float32 embeddings to keep it"
            )));
        }
    }
    let cast = datafusion::arrow::compute::cast(col, schema.field(idx).data_type())?;
    let mut cols = batch.columns().to_vec();
    cols[idx] = cast;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
