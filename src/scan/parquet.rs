//! Parquet checkpoints: DataFusion's own Parquet scan, with reads that never mix two
//! versions of a file ([`SnapshotParquetFormat`]), and the footer reads the catalog uses
//! to tell kinds and layouts apart ([`parquet_footer`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;
use object_store::{GetOptions, ObjectMeta, ObjectStore};
use parking_lot::Mutex;

use crate::{Error, Result};

/// What the footer of a stored Parquet file says, as the catalog uses it.
#[derive(Debug, Clone)]
pub struct ParquetFooter {
    /// The Arrow schema of the file.
    pub schema: Schema,
    /// The file's key-value metadata (ckpt writes `ckpt.kind`).
    pub key_value: Vec<(String, String)>,
    /// Rows in the file.
    pub rows: u64,
}

/// Footers are read from the end of the file in one request of this size: ckpt's and
/// Kura's footers are about 10 KB for 100 000 rows; a larger one costs a second request.
pub const FOOTER_READ_BYTES: usize = 64 << 10;

/// Reads the footer of a stored Parquet file, in one request for most files.
#[allow(deprecated)] // ParquetObjectReader: still the simplest footer reader over object_store
pub async fn parquet_footer(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    display: &str,
) -> Result<ParquetFooter> {
    use datafusion::parquet::arrow::async_reader::{
        ParquetObjectReader, ParquetRecordBatchStreamBuilder,
    };
    // From the end of the file as it is now (a suffix request): the listed size is stale
    // when a save replaced the file since.
    let reader = ParquetObjectReader::new(store.clone(), meta.location.clone())
        .with_footer_size_hint(FOOTER_READ_BYTES);
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
    let file = builder.metadata().file_metadata();
    let key_value = file
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Ok(ParquetFooter {
        rows: u64::try_from(file.num_rows()).unwrap_or(0),
        key_value,
        schema: builder.schema().as_ref().clone(),
    })
}

// ---- Parquet reads of one version ------------------------------------------------------------

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
            // The footer in one request of FOOTER_READ_BYTES, not DataFusion's 512 KiB
            // (the session's setting does not reach a format made outside a session).
            inner: datafusion::datasource::file_format::parquet::ParquetFormat::default()
                .with_metadata_size_hint(Some(FOOTER_READ_BYTES)),
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
        let store = state
            .runtime_env()
            .object_store(conf.object_store_url.clone())?;
        let plan = self.inner.create_physical_plan(state, conf).await?;
        // The inner format sets its own (caching) reader factory: replace it.
        Ok(snapshot_reads(&plan, store).unwrap_or(plan))
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

/// `plan` reading through a [`SnapshotReaderFactory`], if it is a Parquet scan.
fn snapshot_reads(
    plan: &Arc<dyn ExecutionPlan>,
    store: Arc<dyn ObjectStore>,
) -> Option<Arc<dyn ExecutionPlan>> {
    use datafusion::datasource::physical_plan::{
        FileScanConfig, FileScanConfigBuilder, ParquetSource,
    };
    use datafusion::datasource::source::DataSourceExec;
    let exec = plan.downcast_ref::<DataSourceExec>()?;
    let conf = exec.data_source().downcast_ref::<FileScanConfig>()?;
    let source = conf.file_source().downcast_ref::<ParquetSource>()?;
    let source = source
        .clone()
        .with_parquet_file_reader_factory(Arc::new(SnapshotReaderFactory {
            store,
            files: Default::default(),
        }));
    let conf = FileScanConfigBuilder::from(conf.clone())
        .with_source(Arc::new(source))
        .build();
    Some(DataSourceExec::from_data_source(conf))
}

/// Every Parquet scan of a plan decoded from another process, reading through a
/// snapshot reader factory (`SnapshotReaderFactory`): DataFusion's plan message keeps neither the reader factory
/// nor the listed ETags, so a file too big to read whole is pinned to the version a HEAD
/// finds when the task starts, checked against the planned size.
pub fn pin_parquet_reads(
    plan: Arc<dyn ExecutionPlan>,
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    plan.transform_up(|node| {
        let Some(url) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|e| e.data_source().downcast_ref::<FileScanConfig>())
            .map(|c| c.object_store_url.clone())
        else {
            return Ok(Transformed::no(node));
        };
        let store = runtime.object_store(url)?;
        Ok(match snapshot_reads(&node, store) {
            Some(pinned) => Transformed::yes(pinned),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
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

/// What the partitions reading one file share: its version, and its footer once read
/// (each partition would read it again: on an object store, a request and 64 KiB each).
#[derive(Debug, Default)]
struct SharedFile {
    snapshot: tokio::sync::OnceCell<Snapshot>,
    metadata: tokio::sync::OnceCell<Arc<datafusion::parquet::file::metadata::ParquetMetaData>>,
}

/// Readers for one scan; the partitions reading one file share its [`SharedFile`].
#[derive(Debug)]
struct SnapshotReaderFactory {
    store: Arc<dyn ObjectStore>,
    files: Mutex<std::collections::HashMap<object_store::path::Path, Arc<SharedFile>>>,
}

impl datafusion::datasource::physical_plan::ParquetFileReaderFactory for SnapshotReaderFactory {
    fn create_reader(
        &self,
        _partition_index: usize,
        file: datafusion::datasource::listing::PartitionedFile,
        metadata_size_hint: Option<usize>,
        _metrics: &datafusion::physical_plan::metrics::ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn datafusion::parquet::arrow::async_reader::AsyncFileReader + Send>> {
        let shared = self
            .files
            .lock()
            .entry(file.object_meta.location.clone())
            .or_default()
            .clone();
        Ok(Box::new(SnapshotReader {
            store: self.store.clone(),
            split: file.range.is_some(),
            meta: file.object_meta,
            shared,
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
    /// The file's version and footer, shared with the other partitions that read it.
    shared: Arc<SharedFile>,
    hint: Option<usize>,
}

impl SnapshotReader {
    fn changed(&self) -> datafusion::parquet::errors::ParquetError {
        datafusion::parquet::errors::ParquetError::External(Box::new(
            crate::StorageError::changed_while_read(self.meta.location.to_string()),
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
            .shared
            .snapshot
            .get_or_try_init(|| async {
                if self.meta.size > READ_WHOLE_BYTES {
                    let e_tag = match &self.meta.e_tag {
                        Some(tag) => Some(tag.clone()),
                        // Planned elsewhere (the ETag did not travel with the plan): the
                        // version there now, if it is the size the ranges were planned from.
                        None => {
                            let now = object_store::ObjectStoreExt::head(
                                &self.store,
                                &self.meta.location,
                            )
                            .await
                            .map_err(|e| self.store_err(e))?;
                            if now.size != self.meta.size {
                                return Err(self.changed());
                            }
                            now.e_tag
                        }
                    };
                    return Ok(Snapshot::Pinned {
                        size: self.meta.size,
                        e_tag,
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
            // Read once per file and scan: the partitions of one scan ask with the same
            // options.
            let shared = self.shared.clone();
            let metadata = shared
                .metadata
                .get_or_try_init(|| async {
                    let size = self.size().await?;
                    // The page index too, where the file has one: it lies just before the
                    // footer, so it mostly comes with the footer's request, where DataFusion
                    // would ask for it again in each partition.
                    let at_least_optional = |p: PageIndexPolicy| match p {
                        PageIndexPolicy::Skip => PageIndexPolicy::Optional,
                        p => p,
                    };
                    let (column, offset) = options
                        .map_or((PageIndexPolicy::Skip, PageIndexPolicy::Skip), |o| {
                            (o.column_index_policy(), o.offset_index_policy())
                        });
                    let reader = ParquetMetaDataReader::new()
                        .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                        .with_prefetch_hint(self.hint)
                        .with_column_index_policy(at_least_optional(column))
                        .with_offset_index_policy(at_least_optional(offset));
                    Ok::<_, datafusion::parquet::errors::ParquetError>(Arc::new(
                        reader.load_and_finish(self, size).await?,
                    ))
                })
                .await?;
            Ok(metadata.clone())
        })
    }
}
