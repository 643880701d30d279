//! The DataFusion session of ckpt: checkpoint roots registered as schemas, object stores
//! resolved from URLs, ckpt's SQL functions, the JSONL writer behind COPY, and a memory
//! pool with spilling.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::common::config::MaxRowGroupBytes;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

pub mod sql;

use crate::catalog::{CheckpointSchema, TableOptions};
use crate::jsonl::DecodeOptions;
use crate::scan::SkipLog;
use crate::storage::{Root, StorageOptions};
use crate::store_registry::StoreRegistry;
use crate::{Error, Result};

/// The catalog the roots' schemas live in.
pub const CATALOG: &str = "ckpt";

/// How a session is set up.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Memory pool size in bytes; operators spill to disk beyond it.
    pub memory_limit: Option<usize>,
    /// Parallelism (defaults to the number of cores).
    pub target_partitions: Option<usize>,
    /// How JSONL lines that do not decode are handled (fail, or skip and report).
    pub decode: DecodeOptions,
    /// How to reach the roots' stores (credentials, endpoint, ...).
    pub storage: StorageOptions,
    /// Confine writes to the session's roots, for SQL that comes from others: a COPY
    /// target must be a name inside the default root or a URL inside one of the roots;
    /// absolute paths and `..` are refused. Off by default: then a COPY writes where its
    /// target says (see `crate::context::sql`).
    pub sandbox: bool,
    /// Workers to run queries on (`crate::cluster`); empty: everything runs here.
    pub workers: Vec<url::Url>,
}

/// A DataFusion session over one or more checkpoint roots.
#[derive(Clone)]
pub struct CheckpointSession {
    ctx: SessionContext,
    schemas: Vec<(String, Arc<CheckpointSchema>)>,
    skips: SkipLog,
    options: SessionOptions,
}

impl std::fmt::Debug for CheckpointSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSession")
            .field(
                "roots",
                &self
                    .schemas
                    .iter()
                    .map(|(n, s)| (n, s.root().display()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CheckpointSession {
    /// A session over one root, which is also the default schema.
    pub async fn open(location: &str) -> Result<Self> {
        Self::new(
            vec![("root".to_owned(), location.to_owned())],
            SessionOptions::default(),
        )
        .await
    }

    /// A session over named roots (`run1` → `./a`, `run2` → `s3://b/x`). The first is the
    /// default schema, so its checkpoints need no qualifier. A local root must exist:
    /// opening a session reads, and reading creates nothing.
    pub async fn new(roots: Vec<(String, String)>, options: SessionOptions) -> Result<Self> {
        let mut opened = Vec::new();
        for (name, location) in roots {
            opened.push((name, Root::open_existing(&location, &options.storage)?));
        }
        Self::with_roots(opened, options).await
    }

    /// A session over roots already opened (`run1` → a [`Root`]); the first is the default schema.
    pub async fn with_roots(roots: Vec<(String, Root)>, options: SessionOptions) -> Result<Self> {
        if roots.is_empty() {
            return Err(Error::config(
                "no root given: name at least one directory or URL",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (n, _) in &roots {
            if !seen.insert(n.clone()) {
                return Err(Error::config(format!("the root name {n:?} is given twice")));
            }
        }
        let registry = Arc::new(StoreRegistry::new(options.storage.clone()));
        // No cache of directory listings: a checkpoint of parts saved again during the
        // session must be read as it is now, never from a listing whose files (and ETags)
        // are gone.
        let mut runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(registry)
            .with_object_list_cache_limit(0);
        if let Some(limit) = options.memory_limit {
            runtime = runtime.with_memory_pool(crate::memory::limited_pool(limit));
        }
        let runtime = runtime.build_arc()?;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, &roots[0].0)
            .with_create_default_catalog_and_schema(false);
        if let Some(n) = options.target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        // Under a memory limit, DataFusion's fixed sizes shrink with it, or a few
        // partitions' worth of them fill a small pool before any operator can spill:
        // - batches: a sort that spills holds a batch per spilled run while it merges, and
        //   8192 summaries with 384-d embeddings are 25 MB; one row in 256 KiB of the limit,
        //   1024 rows at the least;
        // - the memory each sort sets aside for merging its spills (10 MB by default):
        //   a thirty-second of the limit at most;
        // - files are not split into byte ranges: every partition of a scan is another
        //   sort and another merge holding batches (the JSONL scan still decodes on every
        //   core within its one partition per file);
        // - Parquet is written one row group at a time, not several in parallel, each
        //   buffered whole, and a row group is cut at a sixteenth of the limit (by default
        //   only at a million rows: 160 MB of summaries with embeddings, held until written).
        if let Some(limit) = options.memory_limit {
            let rows = (limit >> 18).clamp(1024, config.batch_size());
            config = config.with_batch_size(rows);
            let execution = &mut config.options_mut().execution;
            execution.sort_spill_reservation_bytes =
                execution.sort_spill_reservation_bytes.min(limit / 32);
            config.options_mut().optimizer.repartition_file_scans = false;
            let parquet = &mut config.options_mut().execution.parquet;
            parquet.allow_single_file_parallelism = false;
            parquet.max_row_group_bytes =
                Some(MaxRowGroupBytes::try_new((limit / 16).max(1 << 20))?);
        }
        // Parquet footers are read with one request of FOOTER_READ_BYTES from the end, not
        // DataFusion's 512 KiB: ckpt's and Kura's footers are about 10 KB per 100 000 rows,
        // and on an object store the rest is fetched for nothing (a filtered count over S3
        // fetched five times what polars fetched).
        config.options_mut().execution.parquet.metadata_size_hint =
            Some(crate::scan::parquet::FOOTER_READ_BYTES);
        // Parquet strings come back as Utf8, the type the kinds declare.
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime);
        if !options.workers.is_empty() {
            state = crate::cluster::coordinator(state, &options.workers);
        }
        let mut ctx = SessionContext::new_with_state(state.build());
        crate::functions::register(&mut ctx)?;
        crate::copy::register(&ctx, options.storage.clone())?;

        let skips = SkipLog::default();
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let mut schemas = Vec::new();
        for (name, root) in roots {
            ctx.register_object_store(&root.store_url(), root.store().clone());
            let schema = CheckpointSchema::open(
                root,
                TableOptions {
                    decode: options.decode,
                    skips: skips.clone(),
                },
            )
            .await?;
            catalog.register_schema(&name, schema.clone())?;
            schemas.push((name, schema));
        }
        ctx.register_catalog(CATALOG, catalog);
        Ok(CheckpointSession {
            ctx,
            schemas,
            skips,
            options,
        })
    }

    /// The DataFusion context, for DataFrame plans over the checkpoint tables.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The options the session was made with.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// The default root (the first one).
    pub fn root(&self) -> &Root {
        self.schemas[0].1.root()
    }

    /// The roots, by schema name, in the order given (the first is the default).
    pub fn schemas(&self) -> &[(String, Arc<CheckpointSchema>)] {
        &self.schemas
    }

    /// The schema of the default root.
    pub fn default_schema(&self) -> &Arc<CheckpointSchema> {
        &self.schemas[0].1
    }

    /// Lines dropped under `--on-error skip` since the last call.
    pub fn take_skipped(&self) -> Vec<(String, crate::jsonl::SkippedLine)> {
        self.skips.take()
    }

    /// Lists every root again (tables also refresh themselves when a query names them).
    pub async fn refresh(&self) -> Result<()> {
        for (_, s) in &self.schemas {
            s.refresh().await?;
        }
        Ok(())
    }

    /// A checkpoint of the default root as a DataFrame.
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        use datafusion::catalog::SchemaProvider;
        let schema = self.default_schema();
        let provider = schema.table(name).await?.ok_or_else(|| {
            Error::config(format!(
                "no checkpoint named {name:?} in {}",
                schema.root().display()
            ))
        })?;
        Ok(self.ctx.read_table(provider)?)
    }
}

/// `table_names` of every root, for completion and `\d`.
pub fn table_names(session: &CheckpointSession) -> HashMap<String, Vec<String>> {
    use datafusion::catalog::SchemaProvider;
    session
        .schemas
        .iter()
        .map(|(n, s)| (n.clone(), s.table_names()))
        .collect()
}
