//! `COPY ... TO ... STORED AS JSON` (or to a `.jsonl`/`.json` target) through ckpt's JSONL
//! writer: the lines Kura loads (metadata as an object, nulls written out), committed
//! atomically like every save. Reading JSON stays DataFusion's.
//!
//! COPY to one Parquet, CSV or Arrow file keeps DataFusion's writers, staged: they close
//! the file they write when the query fails and report the error after, so the target is
//! written under a hidden name beside it and renamed over it only once every row is in.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{GetExt, Statistics};
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::file_format::arrow::ArrowFormatFactory;
use datafusion::datasource::file_format::csv::CsvFormatFactory;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormatFactory;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSinkConfig, FileSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::LexRequirement;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::format::{FileFormat, WriteOptions};
use crate::kind::CheckpointKind;
use crate::storage::{Root, StorageOptions};

/// Registers the COPY writers: ckpt's JSONL writer for `STORED AS JSON` and `.jsonl`
/// targets, and DataFusion's Parquet, CSV and Arrow writers, staged.
pub fn register(
    ctx: &datafusion::prelude::SessionContext,
    storage: StorageOptions,
) -> crate::Result<()> {
    let state = ctx.state_ref();
    let mut state = state.write();
    let staged: [Arc<dyn FileFormatFactory>; 3] = [
        Arc::new(ParquetFormatFactory::new()),
        Arc::new(CsvFormatFactory::new()),
        Arc::new(ArrowFormatFactory::new()),
    ];
    for inner in staged {
        let factory = CopyFormatFactory {
            inner,
            writer: CopyWriter::Staged,
        };
        state.register_file_format(Arc::new(factory), true)?;
    }
    for ext in ["json", "jsonl"] {
        let writer = CopyWriter::Jsonl {
            ext,
            storage: storage.clone(),
        };
        let factory = CopyFormatFactory {
            inner: Arc::new(JsonFormatFactory::new()),
            writer,
        };
        state.register_file_format(Arc::new(factory), true)?;
    }
    Ok(())
}

/// How COPY writes through a [`CopyFormat`]; reading is always the inner format's.
#[derive(Clone)]
enum CopyWriter {
    /// The inner format's writer, with single-file targets staged and renamed into place.
    Staged,
    /// ckpt's JSONL sink (atomic by itself), under the extension `ext`.
    Jsonl {
        ext: &'static str,
        storage: StorageOptions,
    },
}

impl fmt::Debug for CopyWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyWriter::Staged => f.write_str("Staged"),
            CopyWriter::Jsonl { ext, .. } => write!(f, "Jsonl({ext})"),
        }
    }
}

/// One of DataFusion's file formats with ckpt's COPY writer.
#[derive(Debug)]
struct CopyFormatFactory {
    inner: Arc<dyn FileFormatFactory>,
    writer: CopyWriter,
}

impl GetExt for CopyFormatFactory {
    fn get_ext(&self) -> String {
        match &self.writer {
            CopyWriter::Jsonl { ext, .. } => (*ext).to_owned(),
            CopyWriter::Staged => self.inner.get_ext(),
        }
    }
}

impl FileFormatFactory for CopyFormatFactory {
    fn create(
        &self,
        state: &dyn Session,
        options: &HashMap<String, String>,
    ) -> DfResult<Arc<dyn DfFileFormat>> {
        let inner = self.inner.create(state, options)?;
        Ok(Arc::new(CopyFormat {
            inner,
            writer: self.writer.clone(),
        }))
    }

    fn default(&self) -> Arc<dyn DfFileFormat> {
        Arc::new(CopyFormat {
            inner: self.inner.default(),
            writer: self.writer.clone(),
        })
    }
}

#[derive(Debug)]
struct CopyFormat {
    inner: Arc<dyn DfFileFormat>,
    writer: CopyWriter,
}

#[async_trait]
impl DfFileFormat for CopyFormat {
    fn get_ext(&self) -> String {
        match &self.writer {
            CopyWriter::Jsonl { ext, .. } => (*ext).to_owned(),
            CopyWriter::Staged => self.inner.get_ext(),
        }
    }
    fn get_ext_with_compression(&self, c: &FileCompressionType) -> DfResult<String> {
        let base = self.inner.get_ext_with_compression(c)?;
        Ok(match &self.writer {
            CopyWriter::Jsonl { ext, .. } => base.replacen("json", ext, 1),
            CopyWriter::Staged => base,
        })
    }
    fn compression_type(&self) -> Option<FileCompressionType> {
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
    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> DfResult<Statistics> {
        self.inner
            .infer_stats(state, store, table_schema, object)
            .await
    }
    async fn infer_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> DfResult<Option<datafusion::physical_expr::LexOrdering>> {
        self.inner
            .infer_ordering(state, store, table_schema, object)
            .await
    }
    async fn infer_stats_and_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> DfResult<datafusion::datasource::file_format::FileMeta> {
        self.inner
            .infer_stats_and_ordering(state, store, table_schema, object)
            .await
    }
    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.create_physical_plan(state, conf).await
    }
    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
        conf: FileSinkConfig,
        order: Option<LexRequirement>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match &self.writer {
            // Hive-partitioned output: DataFusion's own writer handles the directory layout.
            CopyWriter::Jsonl { .. } if !conf.table_partition_cols.is_empty() => {
                self.inner
                    .create_writer_physical_plan(input, state, conf, order)
                    .await
            }
            CopyWriter::Jsonl { ext, storage } => {
                let sink = Arc::new(JsonlSink {
                    conf,
                    ext,
                    storage: storage.clone(),
                });
                Ok(Arc::new(DataSinkExec::new(input, sink, order)))
            }
            CopyWriter::Staged => self.staged_writer(input, state, conf, order).await,
        }
    }
    fn file_source(
        &self,
        table_schema: datafusion::datasource::table_schema::TableSchema,
    ) -> Arc<dyn FileSource> {
        self.inner.file_source(table_schema)
    }
}

impl CopyFormat {
    /// The inner writer aimed at a hidden staging file; [`StagedSink`] renames it over
    /// the target once every row is in. Directory and partitioned targets are left as
    /// they are.
    async fn staged_writer(
        &self,
        input: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
        conf: FileSinkConfig,
        order: Option<LexRequirement>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let single = match conf.table_paths.as_slice() {
            [t] => {
                conf.table_partition_cols.is_empty() && conf.file_output_mode.single_file_output(t)
            }
            _ => false,
        };
        let Some((target, staging, staged_url)) =
            single.then(|| staging_of(&conf.table_paths[0])).flatten()
        else {
            return self
                .inner
                .create_writer_physical_plan(input, state, conf, order)
                .await;
        };
        let store_url = conf.object_store_url.clone();
        let staged_conf = FileSinkConfig {
            original_url: staged_url.as_str().to_owned(),
            table_paths: vec![staged_url],
            file_output_mode: datafusion::datasource::physical_plan::FileOutputMode::SingleFile,
            ..conf
        };
        let plan = self
            .inner
            .create_writer_physical_plan(input.clone(), state, staged_conf, order.clone())
            .await?;
        if plan.downcast_ref::<DataSinkExec>().is_none() {
            return Err(DataFusionError::Internal(format!(
                "the {} writer did not plan a DataSinkExec",
                self.inner.get_ext()
            )));
        }
        let sink = Arc::new(StagedSink {
            writer: plan,
            store_url,
            staging,
            target,
        });
        Ok(Arc::new(DataSinkExec::new(input, sink, order)))
    }
}

struct JsonlSink {
    conf: FileSinkConfig,
    ext: &'static str,
    storage: StorageOptions,
}

impl fmt::Debug for JsonlSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonlSink({})", self.conf.original_url)
    }
}

impl DisplayAs for JsonlSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonlSink(file={})", self.conf.original_url)
    }
}

/// The kind whose logical schema has exactly these columns, so `COPY summaries TO ...`
/// writes Kura's lines (metadata as an object) even where DataFusion dropped field metadata.
fn kind_of_schema(schema: &SchemaRef) -> Option<CheckpointKind> {
    CheckpointKind::ALL.into_iter().find(|k| {
        let ks = k.schema();
        ks.fields().len() == schema.fields().len()
            && ks
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
    })
}

#[async_trait]
impl DataSink for JsonlSink {
    fn schema(&self) -> &SchemaRef {
        self.conf.output_schema()
    }
    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _ctx: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let table_path = self.conf.table_paths.first();
        let url = table_path
            .map(|u| u.as_str().to_owned())
            .unwrap_or_else(|| self.conf.original_url.clone());
        // A target with an extension is one file; otherwise a directory gets one part.
        let (dir, file) = match url.rsplit_once('/') {
            Some((d, f)) if f.contains('.') => {
                // The name as stored: the URL's text is percent-encoded (`my%20file.jsonl`),
                // the table path's store path is not (`my file.jsonl`).
                let name = table_path
                    .and_then(|t| t.prefix().filename().map(str::to_owned))
                    .unwrap_or_else(|| f.to_owned());
                (format!("{d}/"), name)
            }
            _ => (
                format!("{}/", url.trim_end_matches('/')),
                format!("part-0.{}", self.ext),
            ),
        };
        let root = Root::with_options(&dir, &self.storage).map_err(crate::Error::from)?;
        let schema = self.conf.output_schema().clone();
        let kind = kind_of_schema(&schema);
        let opts = WriteOptions {
            format: Some(FileFormat::Jsonl),
            ..Default::default()
        };
        let stream = data.map(|b| b).boxed();
        let stats = crate::sink::write_batches(&root, &file, kind, &opts, schema, stream, None)
            .await
            .map_err(DataFusionError::from)?;
        Ok(stats.rows)
    }
}

/// (target path, staging path, staging URL) for a single-file target: the staging file
/// is hidden (a dot name, which listings skip) in the target's directory.
fn staging_of(target: &ListingTableUrl) -> Option<(Path, Path, ListingTableUrl)> {
    let path = target.prefix().clone();
    let name = path.filename()?.to_owned();
    let (dir_url, _) = target.as_str().rsplit_once('/')?;
    let unique = format!(
        ".{name}.ckpt-staging-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    // Raw, as the table path is (`Path::parse`, not `Path::from`, which would percent-encode
    // a non-ASCII name: the writer would then stage under one name and the rename look for
    // another, leaving the staging file behind).
    let staging = match path.as_ref().rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{unique}"),
        None => unique.clone(),
    };
    let staging = Path::parse(staging).ok()?;
    let url = ListingTableUrl::parse(format!("{dir_url}/{unique}")).ok()?;
    Some((path, staging, url))
}

/// Runs the inner writer into the staging file, then renames it over the target; on
/// failure the staging file is removed and the target is left as it was.
struct StagedSink {
    /// The inner format's DataSinkExec, writing to `staging`.
    writer: Arc<dyn ExecutionPlan>,
    store_url: ObjectStoreUrl,
    staging: Path,
    target: Path,
}

impl StagedSink {
    fn inner(&self) -> &dyn DataSink {
        self.writer
            .downcast_ref::<DataSinkExec>()
            .expect("checked when planned")
            .sink()
    }
}

impl fmt::Debug for StagedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StagedSink({})", self.target)
    }
}

impl DisplayAs for StagedSink {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StagedSink(target={}, ", self.target)?;
        self.inner().fmt_as(t, f)?;
        write!(f, ")")
    }
}

#[async_trait]
impl DataSink for StagedSink {
    fn schema(&self) -> &SchemaRef {
        self.inner().schema()
    }
    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.inner().metrics()
    }
    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        ctx: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let store = ctx.runtime_env().object_store(&self.store_url)?;
        let written = self.inner().write_all(data, ctx).await;
        let committed = match written {
            Ok(rows) => store
                .rename(&self.staging, &self.target)
                .await
                .map(|()| rows)
                .map_err(|e| DataFusionError::ObjectStore(Box::new(e))),
            Err(e) => Err(e),
        };
        if committed.is_err()
            && let Err(e) = store.delete(&self.staging).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!("cannot remove the staging file {}: {e}", self.staging);
        }
        committed
    }
}
