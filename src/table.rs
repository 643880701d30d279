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
/// small enough that the blocks in flight keep memory flat.
const BLOCK: usize = 4 << 20;

/// Newline-aligned pieces of a file. Each piece is a run of whole lines (the last piece
/// of a file may lack its final newline); pieces are slices of the chunks read, so bytes
/// are copied only for a line split across chunks.
///
/// Lines are numbered within the block while decoding, and the file's line numbers are
/// put in afterwards, in file order: the reader never scans a block just to count lines.
struct Block {
    pieces: Vec<Bytes>,
    /// The block holds the file's first line (where a BOM is allowed).
    file_start: bool,
}

/// What decoding a block gave: batches, lines skipped (`--on-error skip`, numbered within
/// the block), and how many lines it held.
struct DecodedBlock {
    batches: Vec<RecordBatch>,
    skipped: Vec<SkippedLine>,
    lines: u64,
}

impl JsonlPartition {
    /// Reads one file as a stream of blocks, decodes them on blocking threads (up to
    /// twice `parallelism` in flight), and sends the batches in file order.
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
            // Twice the cores: results come in file order, so one slow block would
            // otherwise leave a core idle until it is done.
            .buffered(2 * self.parallelism);
        // Lines before the block at hand, to turn block line numbers into file ones.
        let mut lines_before = 0u64;
        while let Some(res) = decoded.next().await {
            let DecodedBlock {
                batches,
                mut skipped,
                lines,
            } = res.map_err(|mut e| {
                if let Error::Data { position, .. } = &mut e {
                    if let Some(line) = &mut position.line {
                        *line += lines_before;
                    }
                }
                e
            })?;
            for s in &mut skipped {
                s.line += lines_before;
            }
            lines_before += lines;
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

/// Cuts a byte stream into blocks of about [`BLOCK`] bytes of whole lines. A last line
/// without a newline is its own end.
fn blocks(
    bytes: futures::stream::BoxStream<'static, Result<Bytes>>,
) -> impl futures::Stream<Item = Result<Block>> + Send {
    struct State {
        bytes: futures::stream::BoxStream<'static, Result<Bytes>>,
        /// Whole lines gathered for the next block, and their size.
        pieces: Vec<Bytes>,
        size: usize,
        /// The start of a line whose end has not been read yet.
        partial: BytesMut,
        file_start: bool,
        done: bool,
    }
    impl State {
        fn take_block(&mut self) -> Block {
            self.size = 0;
            Block {
                pieces: std::mem::take(&mut self.pieces),
                file_start: std::mem::replace(&mut self.file_start, false),
            }
        }
    }
    let state = State {
        bytes,
        pieces: Vec::new(),
        size: 0,
        partial: BytesMut::new(),
        file_start: true,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.bytes.next().await {
                Some(Ok(chunk)) => {
                    let Some(first) = memchr::memchr(b'\n', &chunk) else {
                        st.partial.extend_from_slice(&chunk);
                        continue;
                    };
                    let last = memchr::memrchr(b'\n', &chunk).expect("a newline was found");
                    let mut body_start = 0;
                    if !st.partial.is_empty() {
                        st.partial.extend_from_slice(&chunk[..=first]);
                        let line = std::mem::take(&mut st.partial).freeze();
                        st.size += line.len();
                        st.pieces.push(line);
                        body_start = first + 1;
                    }
                    if last + 1 > body_start {
                        st.size += last + 1 - body_start;
                        st.pieces.push(chunk.slice(body_start..=last));
                    }
                    st.partial.extend_from_slice(&chunk[last + 1..]);
                    if st.size >= BLOCK {
                        let block = st.take_block();
                        return Some((Ok(block), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    if !st.partial.is_empty() {
                        let line = std::mem::take(&mut st.partial).freeze();
                        st.pieces.push(line);
                    }
                    if st.pieces.is_empty() {
                        return None;
                    }
                    let block = st.take_block();
                    return Some((Ok(block), st));
                }
            }
        }
    })
}

/// Decodes one block into batches, with the lines skipped under `--on-error skip`.
fn decode_block(
    output: SchemaRef,
    full: &Schema,
    file: String,
    decode: DecodeOptions,
    block: Block,
) -> Result<DecodedBlock> {
    let mut decoder = JsonlDecoder::new(output, full, file, decode);
    if !block.file_start {
        decoder.starts_mid_file();
    }
    let mut batches = Vec::new();
    let mut line = 0;
    for body in &block.pieces {
        // Lines found with memchr (SIMD), not a byte-by-byte split: this loop sees every byte.
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', body).chain(
            // A last line without a newline.
            (body.last().is_some_and(|b| *b != b'\n')).then_some(body.len()),
        );
        for end in ends {
            line += 1;
            decoder.decode_line(&body[start..end], line)?;
            start = end + 1;
            if decoder.is_full() {
                batches.extend(decoder.flush()?);
            }
        }
    }
    batches.extend(decoder.flush()?);
    Ok(DecodedBlock {
        batches,
        skipped: decoder.take_skipped(),
        lines: line,
    })
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
    // From the end of the file as it is now, in one request for most footers: the listed
    // size is stale when a save replaced the file since.
    let reader = ParquetObjectReader::new(store.clone(), meta.location.clone())
        .with_footer_size_hint(256 << 10);
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

// ---- Parquet reads of one version ------------------------------------------------------------

/// What a reader says when the file it reads was replaced under it (a concurrent save):
/// the read stops rather than mix two versions. [`crate::manager::CheckpointManager::load`]
/// reads again when it sees this.
pub const CHANGED_WHILE_READ: &str = "changed while it was being read";

/// Whether an error is a read stopped by a concurrent save (see [`CHANGED_WHILE_READ`]).
pub fn is_changed_while_read(e: &Error) -> bool {
    e.to_string().contains(CHANGED_WHILE_READ)
}

/// Files up to this size are read whole, in one request (one version, whatever happens to
/// the file meanwhile); bigger ones range by range, each pinned to the listed version.
const READ_WHOLE_BYTES: u64 = 8 << 20;

/// DataFusion's Parquet format with reads that never mix two versions of a file.
///
/// A save replaces a checkpoint by renaming (local disk) or by a new object (S3) while
/// readers may be reading it. DataFusion's Parquet reader reads the footer, then pages at
/// the footer's offsets, each a request of its own, sized from the listing: over a replaced
/// file it fails, or worse, decodes pages of the new version with the old footer. Here a
/// small file is read whole by its first reader (partitions of one scan share that copy),
/// and a big one with every range request conditional on the listed ETag.
#[derive(Debug)]
pub struct SnapshotParquetFormat {
    inner: datafusion::datasource::file_format::parquet::ParquetFormat,
}

impl SnapshotParquetFormat {
    pub fn new() -> Self {
        SnapshotParquetFormat {
            inner: Default::default(),
        }
    }
}

impl Default for SnapshotParquetFormat {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl datafusion::datasource::file_format::FileFormat for SnapshotParquetFormat {
    fn get_ext(&self) -> String {
        self.inner.get_ext()
    }
    fn get_ext_with_compression(
        &self,
        c: &datafusion::datasource::file_format::file_compression_type::FileCompressionType,
    ) -> DfResult<String> {
        self.inner.get_ext_with_compression(c)
    }
    fn compression_type(
        &self,
    ) -> Option<datafusion::datasource::file_format::file_compression_type::FileCompressionType>
    {
        self.inner.compression_type()
    }
    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> DfResult<SchemaRef> {
        self.inner.infer_schema(state, store, objects).await
    }
    // No statistics: they would come from the file as listed when the query is planned,
    // the rows from the file as read when it runs, and a save in between would answer
    // `min(topic)` from one version and `count(*)` from the other. The reader still prunes
    // row groups with the statistics of the version it reads.
    // Ordering and `infer_stats_and_ordering` keep the trait's defaults (no ordering; this
    // method's unknown statistics), not the inner format's footer reads.
    async fn infer_stats(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        _object: &ObjectMeta,
    ) -> DfResult<datafusion::common::Statistics> {
        Ok(datafusion::common::Statistics::new_unknown(&table_schema))
    }
    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: datafusion::datasource::physical_plan::FileScanConfig,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        use datafusion::datasource::physical_plan::{
            FileScanConfig, FileScanConfigBuilder, ParquetSource,
        };
        use datafusion::datasource::source::DataSourceExec;
        let store = state
            .runtime_env()
            .object_store(conf.object_store_url.clone())?;
        let plan = self.inner.create_physical_plan(state, conf).await?;
        // The inner format sets its own (caching) reader factory: replace it.
        let Some(exec) = plan.downcast_ref::<DataSourceExec>() else {
            return Ok(plan);
        };
        let Some(conf) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(plan);
        };
        let Some(source) = conf.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(plan);
        };
        let source =
            source
                .clone()
                .with_parquet_file_reader_factory(Arc::new(SnapshotReaderFactory {
                    store,
                    snapshots: Default::default(),
                }));
        let conf = FileScanConfigBuilder::from(conf.clone())
            .with_source(Arc::new(source))
            .build();
        Ok(DataSourceExec::from_data_source(conf))
    }
    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
        conf: datafusion::datasource::physical_plan::FileSinkConfig,
        order: Option<datafusion::physical_expr::LexRequirement>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner
            .create_writer_physical_plan(input, state, conf, order)
            .await
    }
    fn file_source(
        &self,
        table_schema: datafusion::datasource::table_schema::TableSchema,
    ) -> Arc<dyn datafusion::datasource::physical_plan::FileSource> {
        self.inner.file_source(table_schema)
    }
}

/// The version of one file a scan reads.
#[derive(Debug)]
enum Snapshot {
    Whole(Bytes),
    /// Range requests conditional on this ETag (None: the store gives none).
    Pinned {
        size: u64,
        e_tag: Option<String>,
    },
}

type SnapshotCell = Arc<tokio::sync::OnceCell<Snapshot>>;

/// Readers for one scan; the partitions reading one file share its snapshot.
#[derive(Debug)]
struct SnapshotReaderFactory {
    store: Arc<dyn ObjectStore>,
    snapshots: Mutex<std::collections::HashMap<object_store::path::Path, SnapshotCell>>,
}

impl datafusion::datasource::physical_plan::ParquetFileReaderFactory for SnapshotReaderFactory {
    fn create_reader(
        &self,
        _partition_index: usize,
        file: datafusion::datasource::listing::PartitionedFile,
        metadata_size_hint: Option<usize>,
        _metrics: &datafusion::physical_plan::metrics::ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn datafusion::parquet::arrow::async_reader::AsyncFileReader + Send>> {
        let cell = self
            .snapshots
            .lock()
            .expect("snapshots")
            .entry(file.object_meta.location.clone())
            .or_default()
            .clone();
        Ok(Box::new(SnapshotReader {
            store: self.store.clone(),
            split: file.range.is_some(),
            meta: file.object_meta,
            cell,
            hint: metadata_size_hint,
        }))
    }
}

struct SnapshotReader {
    store: Arc<dyn ObjectStore>,
    /// As listed when the scan was planned.
    meta: ObjectMeta,
    /// Whether this partition reads a byte range of the file (planned from the listed size).
    split: bool,
    cell: SnapshotCell,
    hint: Option<usize>,
}

impl SnapshotReader {
    fn changed(&self) -> datafusion::parquet::errors::ParquetError {
        datafusion::parquet::errors::ParquetError::General(format!(
            "{} {CHANGED_WHILE_READ} (saved again meanwhile); read it again",
            self.meta.location
        ))
    }

    fn store_err(&self, e: object_store::Error) -> datafusion::parquet::errors::ParquetError {
        match e {
            object_store::Error::Precondition { .. } => self.changed(),
            e => datafusion::parquet::errors::ParquetError::External(Box::new(e)),
        }
    }

    async fn snapshot(&self) -> datafusion::parquet::errors::Result<&Snapshot> {
        let snap = self
            .cell
            .get_or_try_init(|| async {
                if self.meta.size > READ_WHOLE_BYTES {
                    return Ok(Snapshot::Pinned {
                        size: self.meta.size,
                        e_tag: self.meta.e_tag.clone(),
                    });
                }
                let res = self
                    .store
                    .get_opts(&self.meta.location, GetOptions::default())
                    .await
                    .map_err(|e| self.store_err(e))?;
                let bytes = res.bytes().await.map_err(|e| self.store_err(e))?;
                Ok::<_, datafusion::parquet::errors::ParquetError>(Snapshot::Whole(bytes))
            })
            .await?;
        if let Snapshot::Whole(b) = snap {
            // Byte ranges were planned from the listed size: another size is another
            // version, whose row groups would not fall into those ranges.
            if self.split && b.len() as u64 != self.meta.size {
                return Err(self.changed());
            }
        }
        Ok(snap)
    }

    async fn range(
        &self,
        range: std::ops::Range<u64>,
    ) -> datafusion::parquet::errors::Result<Bytes> {
        match self.snapshot().await? {
            Snapshot::Whole(b) => {
                if range.end > b.len() as u64 || range.start > range.end {
                    return Err(datafusion::parquet::errors::ParquetError::EOF(format!(
                        "{}: range {range:?} beyond its {} bytes",
                        self.meta.location,
                        b.len()
                    )));
                }
                Ok(b.slice(range.start as usize..range.end as usize))
            }
            Snapshot::Pinned { e_tag, .. } => {
                let opts = GetOptions {
                    range: Some(range.into()),
                    if_match: e_tag.clone(),
                    ..Default::default()
                };
                let res = self
                    .store
                    .get_opts(&self.meta.location, opts)
                    .await
                    .map_err(|e| self.store_err(e))?;
                res.bytes().await.map_err(|e| self.store_err(e))
            }
        }
    }

    async fn size(&self) -> datafusion::parquet::errors::Result<u64> {
        Ok(match self.snapshot().await? {
            Snapshot::Whole(b) => b.len() as u64,
            Snapshot::Pinned { size, .. } => *size,
        })
    }
}

impl datafusion::parquet::arrow::async_reader::AsyncFileReader for SnapshotReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        Box::pin(async move { self.range(range).await })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        datafusion::parquet::errors::Result<
            Arc<datafusion::parquet::file::metadata::ParquetMetaData>,
        >,
    > {
        use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
        Box::pin(async move {
            let size = self.size().await?;
            let mut reader = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(self.hint);
            if let Some(o) = options {
                if o.column_index_policy() != PageIndexPolicy::Skip
                    || o.offset_index_policy() != PageIndexPolicy::Skip
                {
                    reader = reader
                        .with_column_index_policy(o.column_index_policy())
                        .with_offset_index_policy(o.offset_index_policy());
                }
            }
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        })
    }
}
