//! Typed checkpoint managers with Kura's API: save, load, list, delete, exists, size,
//! on a root that is a local directory (the default) or any object store URL.
//!
//! A manager is a thin layer over the SQL path: `load` scans the same table the catalog
//! gives SQL (`catalog::table_for`), `save` writes through the same sink as COPY and
//! `ckpt convert` (`sink::write_batches`). Values become record batches and back
//! ([`Checkpoint`]); nothing else is added.

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::catalog::find_checkpoint;
use crate::catalog::{TableOptions, table_for};
use crate::context::{CheckpointSession, SessionOptions};
use crate::format::{Compression, FileFormat, Layout, WriteOptions, file_name};
use crate::kind::CheckpointKind;
use crate::sink::{BatchStream, WriteStats, write_batches};
use crate::storage::{Root, StorageOptions};
use crate::types::Checkpoint;
use crate::{Error, Result};

/// Rows per batch when saving typed values.
pub(crate) const SAVE_BATCH_ROWS: usize = 4096;

/// How often a load reads again when a save or compaction changed the checkpoint under it.
const READ_AGAIN: u32 = 10;

mod given_rows;
mod incremental;
pub use given_rows::{arrow_batches, jsonl_batches, save_decoder};
pub use incremental::{CompactStats, StagedAppend};

/// Saves and loads checkpoints of one format in one root.
#[derive(Clone)]
pub struct CheckpointManager {
    root: Root,
    write: WriteOptions,
    format: FileFormat,
    enabled: bool,
    table_options: TableOptions,
    session: Arc<OnceCell<CheckpointSession>>,
    /// What made the checkpoints (see [`CheckpointManager::with_fingerprint`]).
    fingerprint: Option<String>,
}

impl std::fmt::Debug for CheckpointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointManager")
            .field("root", &self.root)
            .field("format", &self.format)
            .field("compression", &self.write.compression)
            .field("layout", &self.write.layout)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl CheckpointManager {
    /// A JSONL manager (Kura's `CheckpointManager`) on a local path or URL.
    pub fn jsonl(root: &str) -> Result<Self> {
        Self::new(Root::parse(root)?, FileFormat::Jsonl)
    }

    /// A Parquet manager (Kura's `ParquetCheckpointManager`), snappy by default.
    pub fn parquet(root: &str) -> Result<Self> {
        Self::new(Root::parse(root)?, FileFormat::Parquet)
    }

    /// A Hugging Face datasets manager (Kura's `HFDatasetCheckpointManager`): each
    /// checkpoint a dataset directory `root/NAME/`.
    pub fn hf(root: &str) -> Result<Self> {
        Self::new(Root::parse(root)?, FileFormat::Hf)
    }

    /// A manager of the checkpoints of `root`, saving in `format`.
    pub fn new(root: Root, format: FileFormat) -> Result<Self> {
        Ok(CheckpointManager {
            root,
            write: WriteOptions {
                format: Some(format),
                ..Default::default()
            },
            format,
            enabled: true,
            table_options: TableOptions::default(),
            fingerprint: None,
            session: Arc::new(OnceCell::new()),
        })
    }

    /// A manager on a root URL with explicit storage options (endpoint, credentials...).
    pub fn with_storage(root: &str, format: FileFormat, options: &StorageOptions) -> Result<Self> {
        Self::new(Root::with_options(root, options)?, format)
    }

    /// `enabled = false` makes `save` a no-op and `load` return None, as in Kura.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Parquet compression (ignored for JSONL).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.write.compression = compression;
        self
    }

    /// Parquet layout: native types, or Kura's JSON-text columns (ignored for JSONL).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.write.layout = layout;
        self
    }

    /// Parquet: store embeddings as float32 (lossless for model output; a value that is
    /// not float32-exact fails the save and stores nothing).
    pub fn float32_embeddings(mut self, on: bool) -> Self {
        self.write.float32_embeddings = on;
        self
    }

    /// Decoding options (e.g. skip bad lines) for loads.
    pub fn decode_options(mut self, decode: crate::jsonl::DecodeOptions) -> Self {
        self.table_options.decode = decode;
        self
    }

    /// Whether saves and loads happen (a disabled manager saves nothing and loads None, as Kura's).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The root the checkpoints are kept in.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The format new checkpoints are saved in.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The file a checkpoint name is saved under: `summaries` → `summaries.jsonl`.
    pub fn file_name(&self, name: &str) -> Result<String> {
        Ok(file_name(name, self.format)?)
    }

    /// Where a checkpoint lives, for messages: a path or URL.
    pub fn checkpoint_path(&self, name: &str) -> Result<String> {
        Ok(self.root.describe(&self.file_name(name)?))
    }

    /// The checkpoint file `name` stands for, with its appended parts; None when absent.
    async fn find(&self, name: &str) -> Result<Option<crate::catalog::Entry>> {
        find_checkpoint(&self.root, &self.file_name(name)?, self.format, None).await
    }

    async fn session(&self) -> Result<&CheckpointSession> {
        self.session
            .get_or_try_init(|| async {
                CheckpointSession::with_roots(
                    vec![("root".to_owned(), self.root.clone())],
                    SessionOptions {
                        decode: self.table_options.decode,
                        // One partition per scan: a load gives the rows in the file's order.
                        // With more, DataFusion splits a large Parquet file by row groups
                        // over partitions and merges them as they come.
                        target_partitions: Some(1),
                        ..Default::default()
                    },
                )
                .await
            })
            .await
    }

    /// Saves `items` as checkpoint `name`, replacing any previous one atomically.
    pub async fn save<T: Checkpoint + Clone>(&self, name: &str, items: &[T]) -> Result<WriteStats> {
        self.save_batches::<T>(name, typed_batches(items)).await
    }

    /// Saves from a stream of values without collecting it: memory holds one batch.
    pub async fn save_stream<T, S>(&self, name: &str, items: S) -> Result<WriteStats>
    where
        T: Checkpoint,
        S: futures::Stream<Item = T> + Send + 'static,
    {
        let stream = items
            .chunks(SAVE_BATCH_ROWS)
            .map(|chunk| T::to_batch(&chunk).map_err(|e| Error::from(e).into()))
            .boxed();
        self.save_batches::<T>(name, stream).await
    }

    async fn save_batches<T: Checkpoint>(
        &self,
        name: &str,
        stream: BatchStream,
    ) -> Result<WriteStats> {
        self.save_record_batches(name, kind_for::<T>(name), stream)
            .await
    }

    /// Saves record batches of `kind`'s schema as checkpoint `name`, replacing any
    /// previous one atomically: the untyped form of [`save`](Self::save), for callers that
    /// hold rows as Arrow or JSON (the Python package).
    pub async fn save_record_batches(
        &self,
        name: &str,
        kind: CheckpointKind,
        stream: BatchStream,
    ) -> Result<WriteStats> {
        let file = self.file_name(name)?;
        self.save_file_batches(&file, kind, stream).await
    }

    /// Writes `stream` as `file` (atomically) in this manager's format, compression and
    /// layout, as rows of `kind`: the one write of saves, appended parts and compaction.
    async fn write_kind(
        &self,
        file: &str,
        kind: CheckpointKind,
        stream: BatchStream,
    ) -> Result<WriteStats> {
        write_batches(
            &self.root,
            file,
            Some(kind),
            &self.write,
            kind.schema(),
            stream,
            None,
        )
        .await
    }

    /// [`save_record_batches`](Self::save_record_batches) to a file named exactly `file`
    /// (in this manager's format whatever its extension): for Kura's own naming rules,
    /// which a drop-in manager must follow (`x.jsonl` saved by Kura's JSONL manager is
    /// `x.jsonl.jsonl`).
    pub async fn save_file_batches(
        &self,
        file: &str,
        kind: CheckpointKind,
        stream: BatchStream,
    ) -> Result<WriteStats> {
        if !self.enabled {
            return Ok(WriteStats::default());
        }
        crate::format::validate_checkpoint_name(file)?;
        // A save replaces the whole checkpoint: the parts appended before it go once the
        // new file is in place (see `crate::catalog::appended` on the moment between the two).
        let appended = crate::parts::list_parts(&self.root, file, self.format).await?;
        self.before_save(file).await?;
        let stats = self.write_kind(file, kind, stream).await?;
        crate::parts::remove_listed_parts(&self.root, &appended).await?;
        self.after_save(file).await?;
        Ok(stats)
    }

    /// Loads checkpoint `name`; None when it does not exist or the manager is disabled.
    pub async fn load<T: Checkpoint>(&self, name: &str) -> Result<Option<Vec<T>>> {
        // A save replacing the checkpoint while it is read stops the read (it never mixes
        // two versions); the values are collected here, so read the new version instead.
        let mut attempt = 0;
        loop {
            let res = match self.load_stream::<T>(name).await {
                Ok(None) => return Ok(None),
                Ok(Some(s)) => s.try_collect().await.map(Some),
                Err(e) => Err(e),
            };
            match res {
                Err(e) if attempt < READ_AGAIN && e.is_changed_while_read() => {
                    attempt += 1;
                    // A compaction removing parts takes a moment: wait a little longer
                    // each time.
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(6)))
                        .await;
                    tracing::debug!(checkpoint = name, "read again: {e}");
                }
                res => return res,
            }
        }
    }

    /// Loads as a stream of values: memory holds one batch at a time.
    pub async fn load_stream<T: Checkpoint>(
        &self,
        name: &str,
    ) -> Result<Option<BoxStream<'static, Result<T>>>> {
        let Some(batches) = self.load_batches(name, Some(kind_for::<T>(name))).await? else {
            return Ok(None);
        };
        // Batches become values on blocking threads, a few at once and in order, so the
        // conversion runs beside the decoding instead of after it on one thread.
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Some(
            batches
                .map_err(Error::from)
                .map_ok(|b| async move {
                    tokio::task::spawn_blocking(move || T::from_batch(&b).map_err(Error::from))
                        .await
                        .map_err(|e| Error::internal(format!("conversion task failed: {e}")))?
                })
                .try_buffered(parallelism)
                .map_ok(|values| futures::stream::iter(values.into_iter().map(Ok)))
                .try_flatten()
                .boxed(),
        ))
    }

    /// The checkpoint's rows as record batches of its kind's schema (or its own schema
    /// for a checkpoint of no known kind).
    pub async fn load_batches(
        &self,
        name: &str,
        kind: Option<CheckpointKind>,
    ) -> Result<Option<BatchStream>> {
        let file = self.file_name(name)?;
        self.load_file_batches(&file, kind).await
    }

    /// [`load_batches`](Self::load_batches) of the file named exactly `file`, read in
    /// this manager's format (see [`save_file_batches`](Self::save_file_batches)).
    pub async fn load_file_batches(
        &self,
        file: &str,
        kind: Option<CheckpointKind>,
    ) -> Result<Option<BatchStream>> {
        Ok(self
            .load_file_stream(file, kind)
            .await?
            .map(StreamExt::boxed))
    }

    /// [`load_file_batches`](Self::load_file_batches) as the plan's own stream, which
    /// knows its schema before the first batch (what an Arrow C stream must give first).
    pub async fn load_file_stream(
        &self,
        file: &str,
        kind: Option<CheckpointKind>,
    ) -> Result<Option<datafusion::execution::SendableRecordBatchStream>> {
        if !self.enabled {
            return Ok(None);
        }
        // The file and its appended parts, if any (one table: see `crate::catalog::appended`).
        let Some(entry) = find_checkpoint(&self.root, file, self.format, kind).await? else {
            return Ok(None);
        };
        self.check_fingerprint(file, true).await?;
        let session = self.session().await?;
        let table = table_for(&self.root, &entry, &self.table_options).await?;
        let df = session.context().read_table(table)?;
        Ok(Some(df.execute_stream().await?))
    }

    /// Checkpoint names (with extension) of this manager's format, sorted; a checkpoint
    /// of appended parts only is listed by the name it is loaded by.
    pub async fn list(&self) -> Result<Vec<String>> {
        if self.format == FileFormat::Hf {
            // Datasets are directories named by the checkpoint name.
            let entries = crate::catalog::list_checkpoints(&self.root).await?;
            return Ok(entries
                .into_iter()
                .filter(|e| e.format == FileFormat::Hf && e.problem.is_none())
                .map(|e| e.name)
                .collect());
        }
        let (files, dirs) = self.root.list().await?;
        let ext = format!(".{}", self.format.extension());
        let mut names: Vec<String> = files
            .iter()
            .filter_map(|m| self.root.name_of(&m.location))
            .filter(|n| n.ends_with(&ext))
            .collect();
        for dir in dirs {
            if let Some((base, format)) = crate::parts::parts_dir_base(&dir)
                && base.ends_with(&ext)
                && !names.iter().any(|n| n == base)
                && !crate::parts::list_parts(&self.root, base, format)
                    .await?
                    .is_empty()
            {
                names.push(base.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether checkpoint `name` exists (its file, or appended parts).
    pub async fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.find(name).await?.is_some())
    }

    /// Size in bytes (the file and its appended parts), or None when the checkpoint does
    /// not exist.
    pub async fn size(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.find(name).await?.map(|e| e.bytes()))
    }

    /// Deletes a checkpoint (its file and its appended parts, oldest first); returns
    /// whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let Some(entry) = self.find(name).await? else {
            return Ok(false);
        };
        if self.format == FileFormat::Hf {
            return self.delete_dataset(&entry.name).await.map(|()| true);
        }
        let has_base = entry
            .files
            .iter()
            .any(|m| !crate::parts::is_part_of(&entry.file, m));
        let mut any = false;
        if has_base {
            any |= self.root.delete(&entry.file).await?;
        }
        any |= crate::catalog::remove_parts(&self.root, &entry).await? > 0;
        Ok(any)
    }

    /// Removes the dataset directory `dir`: `state.json` first, so that no reader takes
    /// what remains for a dataset, then the rest.
    async fn delete_dataset(&self, dir: &str) -> Result<()> {
        let state = format!("{dir}/{}", crate::scan::hf::STATE_FILE);
        self.root.delete(&state).await?;
        if let Some(path) = self.root.local_path(dir) {
            return std::fs::remove_dir_all(&path)
                .map_err(|e| Error::io(format!("cannot delete {}", path.display()), e));
        }
        for meta in self.root.list_dir(dir).await? {
            if let Some(name) = self.root.name_of(&meta.location) {
                self.root.delete(&name).await?;
            }
        }
        Ok(())
    }

    /// The resume pattern: the checkpoint if present, else `compute()`, saved, returned.
    pub async fn load_or_compute<T, F, Fut>(&self, name: &str, compute: F) -> Result<Vec<T>>
    where
        T: Checkpoint + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        if let Some(v) = self.load::<T>(name).await? {
            tracing::info!(checkpoint = name, rows = v.len(), "resumed from checkpoint");
            return Ok(v);
        }
        let v = compute().await?;
        self.save(name, &v).await?;
        Ok(v)
    }
}

/// Typed values as a stream of record batches of `SAVE_BATCH_ROWS` rows.
pub(crate) fn typed_batches<T: Checkpoint>(items: &[T]) -> BatchStream {
    let batches: Vec<Result<RecordBatch>> = items
        .chunks(SAVE_BATCH_ROWS)
        .map(|c| T::to_batch(c).map_err(Error::from))
        .collect();
    futures::stream::iter(batches)
        .map_err(datafusion::error::DataFusionError::from)
        .boxed()
}

/// The kind to read and write `name` as: the name's kind when the type fits it
/// (`meta_clusters` for a `Cluster`), else the type's.
fn kind_for<T: Checkpoint>(name: &str) -> CheckpointKind {
    kind_of_rows(name, T::KIND)
}

/// The kind rows of kind `rows` are saved and loaded as under `name`: the name's kind
/// when its schema is the rows' (`meta_clusters` for clusters), else `rows`.
pub fn kind_of_rows(name: &str, rows: CheckpointKind) -> CheckpointKind {
    CheckpointKind::from_name(name)
        .filter(|k| k.schema() == rows.schema())
        .unwrap_or(rows)
}

/// Copies checkpoint `name` from one manager to another (JSONL ↔ Parquet, local ↔ S3),
/// streaming record batches: no typed values, no full load. Returns None when the source
/// has no such checkpoint.
pub async fn migrate(
    from: &CheckpointManager,
    to: &CheckpointManager,
    name: &str,
) -> Result<Option<WriteStats>> {
    let kind = CheckpointKind::from_name(name);
    let Some(stream) = from.load_batches(name, kind).await? else {
        return Ok(None);
    };
    if !to.enabled {
        return Ok(Some(WriteStats::default()));
    }
    let file = to.file_name(crate::format::strip_extension(name).0)?;
    let schema = match kind {
        Some(k) => k.schema(),
        None => {
            return Err(Error::config(format!(
                "{name}: migrate needs a known checkpoint kind; use `ckpt convert` for other files"
            )));
        }
    };
    Ok(Some(
        write_batches(&to.root, &file, kind, &to.write, schema, stream, None).await?,
    ))
}

/// How a [`MultiCheckpointManager`] saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveStrategy {
    /// To every enabled manager.
    #[default]
    AllEnabled,
    /// To the first enabled manager only.
    PrimaryOnly,
}

/// How a [`MultiCheckpointManager`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadStrategy {
    /// From the first enabled manager (in order) that has the checkpoint.
    #[default]
    FirstFound,
    /// From the first enabled manager only.
    Priority,
}

/// Several managers as one (Kura's `MultiCheckpointManager`): e.g. JSONL locally for
/// debugging plus Parquet in a bucket for the record.
#[derive(Debug, Clone)]
pub struct MultiCheckpointManager {
    managers: Vec<CheckpointManager>,
    /// Which managers a save writes to.
    pub save_strategy: SaveStrategy,
    /// Which manager a load reads from.
    pub load_strategy: LoadStrategy,
}

impl MultiCheckpointManager {
    /// A manager over several managers (at least one), each saving in its own format or root.
    pub fn new(managers: Vec<CheckpointManager>) -> Result<Self> {
        if managers.is_empty() {
            return Err(Error::config(
                "a MultiCheckpointManager needs at least one manager",
            ));
        }
        Ok(MultiCheckpointManager {
            managers,
            save_strategy: SaveStrategy::default(),
            load_strategy: LoadStrategy::default(),
        })
    }

    /// The same managers with other save and load strategies.
    pub fn with_strategies(mut self, save: SaveStrategy, load: LoadStrategy) -> Self {
        self.save_strategy = save;
        self.load_strategy = load;
        self
    }

    /// The managers, in the order given.
    pub fn managers(&self) -> &[CheckpointManager] {
        &self.managers
    }

    fn enabled(&self) -> impl Iterator<Item = &CheckpointManager> {
        self.managers.iter().filter(|m| m.enabled)
    }

    /// Saves to the managers the strategy names; one stats entry per manager written.
    ///
    /// In order, stopping at the first failure: the managers before it hold the new
    /// version, the failing one and those after it keep what they had (each save is
    /// whole or nothing), and the error is the failing manager's, naming its location.
    /// A load then finds the new version in the first manager; saving again completes
    /// the rest. Not transactional across backends: no store offers that.
    pub async fn save<T: Checkpoint + Clone>(
        &self,
        name: &str,
        items: &[T],
    ) -> Result<Vec<WriteStats>> {
        let base = crate::format::strip_extension(name).0;
        let mut out = Vec::new();
        for m in self.enabled() {
            out.push(m.save(base, items).await?);
            if self.save_strategy == SaveStrategy::PrimaryOnly {
                break;
            }
        }
        Ok(out)
    }

    /// Loads checkpoint `name` as the load strategy says; None when no manager has it.
    pub async fn load<T: Checkpoint>(&self, name: &str) -> Result<Option<Vec<T>>> {
        let base = crate::format::strip_extension(name).0;
        for m in self.enabled() {
            let found = m.load::<T>(base).await?;
            if found.is_some() || self.load_strategy == LoadStrategy::Priority {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Whether any of the managers has checkpoint `name`.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        let base = crate::format::strip_extension(name).0;
        for m in self.enabled() {
            if m.exists(base).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes from every manager; returns whether any had it.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let base = crate::format::strip_extension(name).0;
        let mut any = false;
        for m in &self.managers {
            any |= m.delete(base).await?;
        }
        Ok(any)
    }

    /// Loads checkpoint `name`, or computes it with `compute` and saves it when none has it.
    pub async fn load_or_compute<T, F, Fut>(&self, name: &str, compute: F) -> Result<Vec<T>>
    where
        T: Checkpoint + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        if let Some(v) = self.load::<T>(name).await? {
            return Ok(v);
        }
        let v = compute().await?;
        self.save(name, &v).await?;
        Ok(v)
    }
}
