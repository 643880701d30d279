//! [`JsonlFormat`], the [`FileFormat`] of a JSONL table: what a listing table or a
//! checkpoint's catalog entry is made with, and what plans its scans.
//!
//! Planning only, as in DataFusion's own formats (`file_format.rs` beside `source.rs`):
//! the schema is the kind's, statistics are unknown, and the plan is a `DataSourceExec`
//! over a [`JsonlSource`], which does the reading.

use std::sync::Arc;

use async_trait::async_trait;
use ckpt_core::jsonl::DecodeOptions;
use ckpt_core::kind::CheckpointKind;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{Statistics, internal_err, not_impl_err};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, FileSinkConfig, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::LexRequirement;
use datafusion::physical_plan::ExecutionPlan;
use object_store::{ObjectMeta, ObjectStore};

use super::settings::{FileNames, ReadTuning, SkipLog};
use super::source::{JsonlSource, check_declared_schema};

/// The file format of a JSONL checkpoint of a known kind.
///
/// Planning only: it declares the kind's schema (never inferred), no statistics (they would
/// describe the file as listed, not the version read), and plans a `DataSourceExec` with a
/// [`JsonlSource`]. Writing is not its job: COPY and saves have their own writer.
#[derive(Debug, Clone)]
pub struct JsonlFormat {
    pub(super) kind: CheckpointKind,
    decode: DecodeOptions,
    pub(super) skips: SkipLog,
    names: FileNames,
    tuning: ReadTuning,
}

impl JsonlFormat {
    pub fn new(kind: CheckpointKind, decode: DecodeOptions, skips: SkipLog) -> Self {
        JsonlFormat {
            kind,
            decode,
            skips,
            names: FileNames::default(),
            tuning: ReadTuning::default(),
        }
    }

    /// Files are named relative to this root in messages.
    pub fn with_file_names(mut self, names: FileNames) -> Self {
        self.names = names;
        self
    }

    /// The source of a scan of this format, over `table_schema` (the kind's schema, and the
    /// table's partition columns if any).
    pub fn source(&self, table_schema: impl Into<TableSchema>) -> JsonlSource {
        let mut source = JsonlSource::new(self.kind, table_schema, self.decode, self.skips.clone())
            .with_file_names(self.names.clone());
        source.tuning = self.tuning;
        source
    }

    #[cfg(test)]
    pub(super) fn with_tuning(mut self, tuning: ReadTuning) -> Self {
        self.tuning = tuning;
        self
    }
}

#[async_trait]
impl FileFormat for JsonlFormat {
    fn get_ext(&self) -> String {
        "jsonl".to_owned()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> DfResult<String> {
        if compression.is_compressed() {
            return not_impl_err!("compressed JSONL checkpoints are not supported");
        }
        Ok(self.get_ext())
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        Some(FileCompressionType::UNCOMPRESSED)
    }

    async fn infer_schema(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        _objects: &[ObjectMeta],
    ) -> DfResult<SchemaRef> {
        Ok(self.kind.schema())
    }

    async fn infer_stats(
        &self,
        _state: &dyn Session,
        _store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        _object: &ObjectMeta,
    ) -> DfResult<Statistics> {
        Ok(Statistics::new_unknown(&table_schema))
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if conf.file_compression_type.is_compressed() {
            return not_impl_err!("compressed JSONL checkpoints are not supported");
        }
        check_declared_schema(self.kind, conf.file_schema())?;
        // DataFusion builds the configuration around this format's `file_source`.
        let Some(source) = conf.file_source().downcast_ref::<JsonlSource>().cloned() else {
            return internal_err!(
                "a JSONL scan planned with a {} source",
                conf.file_source().file_type()
            );
        };
        // The opener has no TaskContext: the session's pool is taken here, where the plan
        // is made for it, so the scan's blocks count against `--memory-limit`.
        let source = source.with_memory_pool(Arc::clone(&state.runtime_env().memory_pool));
        // Rows per batch: the decode options' setting, unless the scan was given one.
        let batch_size = conf.batch_size.unwrap_or(self.decode.batch_rows);
        let conf = FileScanConfigBuilder::from(conf)
            .with_source(Arc::new(source))
            .with_batch_size(Some(batch_size))
            .build();
        Ok(DataSourceExec::from_data_source(conf))
    }

    async fn create_writer_physical_plan(
        &self,
        _input: Arc<dyn ExecutionPlan>,
        _state: &dyn Session,
        _conf: FileSinkConfig,
        _order_requirements: Option<LexRequirement>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        not_impl_err!("JSONL checkpoints are written by COPY and the managers, not by this format")
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(self.source(table_schema))
    }
}
