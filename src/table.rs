//! DataFusion tables over checkpoint files of the known kinds.
//!
//! - [`JsonlTable`]: JSONL files decoded by ckpt's own decoder into the kind's declared
//!   schema (never an inferred one), only the projected columns, in parallel over
//!   newline-aligned byte ranges.
//! - [`KuraParquetTable`]: Parquet files in Kura's layout (JSON text columns), read by
//!   DataFusion's Parquet scan and mapped column by column to the logical schema.
//!
//! Native-layout Parquet needs neither: it is a plain DataFusion listing table with the
//! kind's schema (see `catalog`).

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use object_store::{GetOptions, ObjectMeta, ObjectStore};

use crate::jsonl::{DecodeOptions, JsonlDecoder, SkippedLine};
use crate::kind::CheckpointKind;
use crate::{Error, Result};

/// Lines dropped under `--on-error skip`, with the file they came from; shared by every
/// partition of a scan so the caller can report them after the query.
#[derive(Debug, Default, Clone)]
pub struct SkipLog(Arc<Mutex<Vec<(String, SkippedLine)>>>);

impl SkipLog {
    pub fn take(&self) -> Vec<(String, SkippedLine)> {
        let mut v = std::mem::take(&mut *self.0.lock().expect("skip log"));
        v.sort_by(|a, b| (&a.0, a.1.line).cmp(&(&b.0, b.1.line)));
        v
    }
    fn push(&self, file: &str, lines: Vec<SkippedLine>) {
        if !lines.is_empty() {
            self.0
                .lock()
                .expect("skip log")
                .extend(lines.into_iter().map(|l| (file.to_owned(), l)));
        }
    }
}

/// One file of a table: where it is and how it is named in messages.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub meta: ObjectMeta,
    /// The name shown in errors: `summaries.jsonl`, `parts/part-0.jsonl`.
    pub display: String,
}

/// JSONL checkpoint files of a known kind.
#[derive(Debug)]
pub struct JsonlTable {
    kind: CheckpointKind,
    store: Arc<dyn ObjectStore>,
    files: Vec<SourceFile>,
    decode: DecodeOptions,
    skips: SkipLog,
}

impl JsonlTable {
    pub fn new(
        kind: CheckpointKind,
        store: Arc<dyn ObjectStore>,
        files: Vec<SourceFile>,
        decode: DecodeOptions,
        skips: SkipLog,
    ) -> Self {
        JsonlTable {
            kind,
            store,
            files,
            decode,
            skips,
        }
    }
}

#[async_trait]
impl TableProvider for JsonlTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let full = self.kind.schema();
        let output = match projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full.clone(),
        };
        if self.files.is_empty() {
            return Ok(Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                output,
            )));
        }
        // One partition, in file order: row order is the checkpoint's order (a convert or a
        // typed load keeps it). Parallelism comes from decoding blocks concurrently inside.
        let stream: Arc<dyn PartitionStream> = Arc::new(JsonlPartition {
            output: output.clone(),
            full,
            store: self.store.clone(),
            files: self.files.clone(),
            decode: self.decode,
            skips: self.skips.clone(),
            // Decoding threads follow the machine, not target_partitions: an order-keeping
            // read (convert, typed load) runs with one partition but still decodes in parallel.
            parallelism: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(state.config().target_partitions()),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            output,
            vec![stream],
            None,
            vec![],
            false,
            limit,
        )?))
    }
}

/// The files of a JSONL table, decoded in order.
struct JsonlPartition {
    output: SchemaRef,
    full: SchemaRef,
    store: Arc<dyn ObjectStore>,
    files: Vec<SourceFile>,
    decode: DecodeOptions,
    skips: SkipLog,
    parallelism: usize,
}

impl fmt::Debug for JsonlPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<&str> = self.files.iter().map(|f| f.display.as_str()).collect();
        write!(f, "JsonlPartition({})", files.join(", "))
    }
}

impl PartitionStream for JsonlPartition {
    fn schema(&self) -> &SchemaRef {
        &self.output
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.output.clone(), 2);
        let tx = builder.tx();
        let this = JsonlPartition {
            output: self.output.clone(),
            full: self.full.clone(),
            store: self.store.clone(),
            files: self.files.clone(),
            decode: self.decode,
            skips: self.skips.clone(),
            parallelism: self.parallelism,
        };
        builder.spawn(async move {
            for file in &this.files {
                if let Err(e) = this.read_file(file, &tx).await {
                    let _ = tx.send(Err(DataFusionError::from(e))).await;
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// Bytes decoded per block: big enough to amortise the hand-off to a blocking thread,
/// small enough that `parallelism` blocks in flight keep memory flat.
const BLOCK: usize = 4 << 20;

/// A newline-aligned piece of a file with the number of its first line.
struct Block {
    bytes: Bytes,
    first_line: u64,
}

impl JsonlPartition {
    /// Reads one file as a stream of blocks, decodes up to `parallelism` blocks at once on
    /// blocking threads, and sends the batches in file order.
    async fn read_file(
        &self,
        file: &SourceFile,
        tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    ) -> Result<()> {
        let res = self
            .store
            .get_opts(&file.meta.location, GetOptions::default())
            .await
            .map_err(|e| Error::storage(format!("cannot read {}", file.display), e))?;
        let display = file.display.clone();
        let bytes = res
            .into_stream()
            .map(move |c| c.map_err(|e| Error::storage(format!("cannot read {display}"), e)));
        let blocks = blocks(bytes.boxed()).boxed();
        let (output, full, decode, name) = (
            self.output.clone(),
            self.full.clone(),
            self.decode,
            file.display.clone(),
        );
        let mut decoded = blocks
            .map(move |block| {
                let (output, full, name) = (output.clone(), full.clone(), name.clone());
                async move {
                    let block = block?;
                    tokio::task::spawn_blocking(move || {
                        decode_block(output, &full, name, decode, block)
                    })
                    .await
                    .map_err(|e| Error::config(format!("decoder task failed: {e}")))?
                }
            })
            .buffered(self.parallelism);
        while let Some(res) = decoded.next().await {
            let (batches, skipped) = res?;
            self.skips.push(&file.display, skipped);
            for b in batches {
                if tx.send(Ok(b)).await.is_err() {
                    return Ok(()); // the consumer is gone (LIMIT reached, query cancelled)
                }
            }
        }
        Ok(())
    }
}

/// Cuts a byte stream into newline-aligned blocks of about [`BLOCK`] bytes, numbering
/// their first lines. A last line without a newline is its own end.
fn blocks(
    bytes: futures::stream::BoxStream<'static, Result<Bytes>>,
) -> impl futures::Stream<Item = Result<Block>> + Send {
    // `scanned`: how much of `carry` is known to hold no newline, so that a line longer
    // than a block (a 50 MB summary) is scanned once, not again for every chunk.
    futures::stream::unfold(
        (bytes, BytesMut::new(), 1u64, false, 0usize),
        move |(mut bytes, mut carry, mut line, eof, mut scanned)| async move {
            if eof {
                return None;
            }
            loop {
                match bytes.next().await {
                    Some(Ok(chunk)) => {
                        carry.extend_from_slice(&chunk);
                        if carry.len() < BLOCK {
                            continue;
                        }
                        let Some(j) = memchr::memrchr(b'\n', &carry[scanned..]) else {
                            scanned = carry.len();
                            continue;
                        };
                        let block = carry.split_to(scanned + j + 1).freeze();
                        scanned = carry.len();
                        let first = line;
                        line += memchr::memchr_iter(b'\n', &block).count() as u64;
                        return Some((
                            Ok(Block {
                                bytes: block,
                                first_line: first,
                            }),
                            (bytes, carry, line, false, scanned),
                        ));
                    }
                    Some(Err(e)) => return Some((Err(e), (bytes, carry, line, true, scanned))),
                    None => {
                        if carry.is_empty() {
                            return None;
                        }
                        let block = std::mem::take(&mut carry).freeze();
                        return Some((
                            Ok(Block {
                                bytes: block,
                                first_line: line,
                            }),
                            (bytes, carry, line, true, 0),
                        ));
                    }
                }
            }
        },
    )
}

/// Decodes one block into batches, with the lines skipped under `--on-error skip`.
fn decode_block(
    output: SchemaRef,
    full: &Schema,
    file: String,
    decode: DecodeOptions,
    block: Block,
) -> Result<(Vec<RecordBatch>, Vec<SkippedLine>)> {
    let mut decoder = JsonlDecoder::new(output, full, file, decode);
    let mut batches = Vec::new();
    let mut line = block.first_line;
    let body: &[u8] = &block.bytes;
    // Without this, `split` would yield an empty piece after the final newline.
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    for raw in body.split(|b| *b == b'\n') {
        decoder.decode_line(raw, line)?;
        line += 1;
        if decoder.is_full() {
            batches.extend(decoder.flush()?);
        }
    }
    batches.extend(decoder.flush()?);
    Ok((batches, decoder.take_skipped()))
}

/// Parquet files in Kura's layout, shown with the kind's logical schema.
#[derive(Debug)]
pub struct KuraParquetTable {
    kind: CheckpointKind,
    /// A listing table over the files with their stored schema.
    inner: Arc<dyn TableProvider>,
    display: String,
}

impl KuraParquetTable {
    pub fn new(kind: CheckpointKind, inner: Arc<dyn TableProvider>, display: String) -> Self {
        KuraParquetTable {
            kind,
            inner,
            display,
        }
    }
}

#[async_trait]
impl TableProvider for KuraParquetTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let full = self.kind.schema();
        let logical: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..full.fields().len()).collect());
        let output = Arc::new(full.project(&logical)?);
        let stored_schema = self.inner.schema();
        let stored: Vec<usize> = crate::layout::stored_columns_for(self.kind, &logical)
            .iter()
            .filter_map(|n| stored_schema.index_of(n).ok())
            .collect();
        let plan = self.inner.scan(state, Some(&stored), &[], limit).await?;
        let n = plan.properties().partitioning.partition_count();
        let streams: Vec<Arc<dyn PartitionStream>> = (0..n)
            .map(|i| {
                Arc::new(MappedPartition {
                    input: plan.clone(),
                    partition: i,
                    output: output.clone(),
                    display: self.display.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            output,
            streams,
            None,
            vec![],
            false,
            limit,
        )?))
    }
}

/// One partition of a stored-layout scan, mapped to logical columns.
struct MappedPartition {
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    output: SchemaRef,
    display: String,
}

impl fmt::Debug for MappedPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KuraLayout({}, partition {})",
            self.display, self.partition
        )
    }
}

impl PartitionStream for MappedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.output
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let output = self.output.clone();
        let display = self.display.clone();
        // The stored-layout scan is no child in the plan, so DataFusion never resets its
        // state between executions (a recursive CTE scans once per iteration); without
        // file work stealing the scan keeps no state and reads its files in full each time.
        let mut config = ctx.session_config().clone();
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let ctx = Arc::new(TaskContext::new(
            ctx.task_id(),
            ctx.session_id(),
            config,
            ctx.scalar_functions().clone(),
            ctx.higher_order_functions().clone(),
            ctx.aggregate_functions().clone(),
            ctx.window_functions().clone(),
            ctx.runtime_env(),
        ));
        let input = self.input.execute(self.partition, ctx);
        let stream = futures::stream::once(async move { input })
            .flat_map(move |input| match input {
                Ok(s) => s.boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .map(move |batch| {
                let batch = batch?;
                let cols = output
                    .fields()
                    .iter()
                    .map(|f| crate::layout::logical_column(f, &batch, &display))
                    .collect::<Result<Vec<_>>>()?;
                Ok(RecordBatch::try_new_with_options(
                    output.clone(),
                    cols,
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(batch.num_rows())),
                )?)
            });
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                self.output.clone(),
                stream,
            ),
        )
    }
}

/// The schema of a stored Parquet file, read from its footer.
#[allow(deprecated)] // ParquetObjectReader: still the simplest footer reader over object_store
pub async fn parquet_schema(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    display: &str,
) -> Result<(Schema, Vec<(String, String)>)> {
    use datafusion::parquet::arrow::async_reader::{
        ParquetObjectReader, ParquetRecordBatchStreamBuilder,
    };
    let reader =
        ParquetObjectReader::new(store.clone(), meta.location.clone()).with_file_size(meta.size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| {
            Error::data(
                display,
                None,
                None,
                format!("not a readable Parquet file ({e}); is it truncated, or another format?"),
            )
        })?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Ok((builder.schema().as_ref().clone(), kv))
}
