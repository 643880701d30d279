//! [`JsonlSource`], the [`FileSource`] of a JSONL scan inside a `DataSourceExec`: what
//! DataFusion repartitions into byte ranges, pushes projections into, shows in `EXPLAIN`,
//! and asks for one opener per partition.
//!
//! The opener is sized here, where the partition count and the memory pool are known: how
//! many blocks each partition has in flight and how large they may be, and the share of
//! the pool it reserves for them.

use std::fmt;
use std::sync::Arc;

use ckpt_core::jsonl::DecodeOptions;
use ckpt_core::kind::CheckpointKind;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::plan_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::physical_plan::{FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, UnboundedMemoryPool,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, apply_expression_roots};
use object_store::ObjectStore;

use super::opener::{JsonlOpener, PartitionReader, ScanMetrics};
use super::settings::{FileNames, MIN_BLOCK_BYTES, ReadTuning, SkipLog, on_error_name};

/// The [`FileSource`] of a JSONL scan: the kind, the projection (only the projected
/// columns are built; every field is still validated), decode options, where skipped lines
/// go, and the memory pool the scan accounts its blocks in.
///
/// Files can be split into byte ranges (`supports_repartitioning`): with
/// `target_partitions > 1` DataFusion reads a big file in several partitions; with 1 (a
/// convert or a typed load, which keep the checkpoint's row order) one partition reads the
/// files whole, in order.
#[derive(Clone)]
pub struct JsonlSource {
    kind: CheckpointKind,
    table_schema: TableSchema,
    /// The projection DataFusion pushed down: its file columns are decoded, then the rest
    /// (renames, partition columns, expressions) is applied by a [`ProjectionOpener`].
    projection: SplitProjection,
    decode: DecodeOptions,
    skips: SkipLog,
    names: FileNames,
    /// The session's pool, captured when the plan was made (None: a source that was not
    /// planned by [`JsonlFormat`](super::JsonlFormat); its memory is then not accounted anywhere).
    memory_pool: Option<Arc<dyn MemoryPool>>,
    pub(super) tuning: ReadTuning,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for JsonlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlSource")
            .field("kind", &self.kind)
            .field("decode", &self.decode)
            .field("file_columns", &self.projection.file_indices)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl JsonlSource {
    pub fn new(
        kind: CheckpointKind,
        table_schema: impl Into<TableSchema>,
        decode: DecodeOptions,
        skips: SkipLog,
    ) -> Self {
        let table_schema = table_schema.into();
        JsonlSource {
            kind,
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            decode,
            skips,
            names: FileNames::default(),
            memory_pool: None,
            tuning: ReadTuning::default(),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn with_file_names(mut self, names: FileNames) -> Self {
        self.names = names;
        self
    }

    /// The pool the scan's blocks in flight are accounted in.
    pub fn with_memory_pool(mut self, pool: Arc<dyn MemoryPool>) -> Self {
        self.memory_pool = Some(pool);
        self
    }

    pub fn kind(&self) -> CheckpointKind {
        self.kind
    }

    pub fn decode_options(&self) -> DecodeOptions {
        self.decode
    }

    pub fn file_names(&self) -> &FileNames {
        &self.names
    }

    /// This source with `projection` applied on top of its own.
    fn projected(&self, projection: &ProjectionExprs) -> DfResult<JsonlSource> {
        let merged = self.projection.source.try_merge(projection)?;
        let mut source = self.clone();
        source.projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(source)
    }
}

impl FileSource for JsonlSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> DfResult<Arc<dyn FileOpener>> {
        let file_schema = self.table_schema.file_schema();
        check_declared_schema(self.kind, file_schema)?;
        let output = Arc::new(file_schema.project(&self.projection.file_indices)?);
        // Twice the cores in flight over all partitions: results are taken in file order,
        // so one slow block would otherwise leave a core idle until it is done. A single
        // partition (an order-keeping read) still decodes on every core.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let partitions = base_config.file_groups.len().max(1);
        let mut in_flight = (2 * cores / partitions).max(2);
        let pool = self
            .memory_pool
            .clone()
            .unwrap_or_else(|| Arc::new(UnboundedMemoryPool::default()));
        // Under a memory limit the blocks of all partitions in flight (and the one each
        // hands on) take at most an eighth of the pool, so that sorts and aggregations,
        // which can spill, have the rest. Blocks shrink with the pool, down to one line
        // each; under a pool too small for 256 KiB blocks fewer are in flight (2).
        //
        // That share is reserved whole while the partition reads, not block by block: a
        // reservation that shrank as blocks were handed on and grew again as new ones came
        // would let a sort take the room between, then fill the pool when it came back,
        // and a merge asking for a few bytes then fails ("resources exhausted"). Blocks are
        // accounted on top of it only for what exceeds a block's share (a line longer than
        // a block).
        let mut tuning = self.tuning;
        let reservation = MemoryConsumer::new(format!("JsonlScan[{partition}]")).register(&pool);
        let mut block_share = 0;
        if let MemoryLimit::Finite(limit) = pool.memory_limit() {
            let share = |in_flight: usize| limit / 8 / (partitions * (in_flight + 2));
            if share(in_flight) < MIN_BLOCK_BYTES {
                in_flight = 2;
            }
            tuning.block_bytes = tuning.block_bytes.min(share(in_flight).max(1));
            block_share = tuning.block_bytes;
            reservation.grow(block_share * (in_flight + 2));
        }
        let reader = PartitionReader {
            store: object_store,
            output,
            full: self.kind.schema(),
            decode: self.decode,
            skips: self.skips.clone(),
            names: self.names.clone(),
            in_flight,
            tuning,
            reservation: Arc::new(reservation),
            block_share,
            metrics: ScanMetrics::new(&self.metrics, partition),
        };
        let opener: Arc<dyn FileOpener> = Arc::new(JsonlOpener {
            reader: Arc::new(reader),
        });
        ProjectionOpener::try_new(self.projection.clone(), opener, file_schema)
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        let mut source = self.clone();
        source.decode.batch_rows = batch_size;
        Arc::new(source)
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> DfResult<Option<Arc<dyn FileSource>>> {
        Ok(Some(Arc::new(self.projected(projection)?)))
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "jsonl"
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let on_error = on_error_name(self.decode.on_error);
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, ", kind={}, on_error={on_error}", self.kind)
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "kind={}", self.kind)?;
                writeln!(f, "on_error={on_error}")
            }
        }
    }

    fn supports_repartitioning(&self) -> bool {
        // Byte ranges are cut at line boundaries by the opener (files are uncompressed).
        true
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        apply_expression_roots(self.projection.source.iter(), f)
    }
}

/// A scan reads the kind's declared schema: the decoder learns from its fields' metadata
/// which columns are computed and which hold JSON text, and every line is validated
/// against it.
pub(super) fn check_declared_schema(kind: CheckpointKind, file_schema: &Schema) -> DfResult<()> {
    let declared = kind.schema();
    if file_schema.fields() == declared.fields() {
        return Ok(());
    }
    let differs = declared
        .fields()
        .iter()
        .zip(file_schema.fields())
        .find(|(d, f)| d != f)
        .map_or_else(
            || "in its number of columns".to_owned(),
            |(d, _)| format!("at column {}", d.name()),
        );
    plan_err!("a JSONL scan of {kind} reads the kind's declared schema; this one differs {differs}")
}
