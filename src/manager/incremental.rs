//! The incremental side of a manager: append a batch, see what is missing, compute only
//! that (resuming a step killed part-way), compact, and fingerprints that tell a
//! checkpoint made from other inputs. The layout and the reading rule (the last row of an
//! id wins) are `crate::catalog::appended`'s.

use std::collections::HashSet;
use std::future::Future;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use futures::stream::StreamExt;

use super::{CheckpointManager, READ_AGAIN, kind_for, typed_batches};
use crate::catalog::{find_checkpoint, part_count, remove_parts};
use crate::catalog::{resolve_kind, table_for};
use crate::format::{FileFormat, Layout};
use crate::kind::CheckpointKind;
use crate::parts::{
    is_part_of, new_part_name, read_fingerprint, remove_empty_parts_dir, remove_fingerprint,
    staged_part_name, write_fingerprint,
};
use crate::sink::{BatchStream, WriteStats};
use crate::storage::Root;
use crate::types::Checkpoint;
use crate::{Error, Result};

/// An append written whole but not yet published: no reader sees its rows until
/// [`publish`](Self::publish). See [`CheckpointManager::stage_record_batches`].
#[derive(Debug)]
#[must_use = "a staged append is seen by no reader until it is published"]
pub struct StagedAppend {
    root: Root,
    /// The checkpoint's file name.
    file: String,
    format: FileFormat,
    /// The hidden name its rows were written under.
    staged: String,
    stats: WriteStats,
}

impl StagedAppend {
    /// Makes the rows a part of the checkpoint: renamed to a part named at this moment, so
    /// the parts are ordered as they were published (the order "the last row wins"
    /// follows, before and after any compaction). Atomic: the part is there whole or not
    /// at all.
    pub async fn publish(self) -> Result<WriteStats> {
        let part = new_part_name(&self.file, self.format);
        match self.root.rename(&self.staged, &part).await {
            Ok(()) => Ok(self.stats),
            Err(e) => {
                let _ = self.root.delete(&self.staged).await;
                remove_empty_parts_dir(&self.root, &self.file);
                Err(e.into())
            }
        }
    }

    /// Drops the rows: nothing of this append stays.
    pub async fn discard(self) -> Result<()> {
        self.root.delete(&self.staged).await?;
        remove_empty_parts_dir(&self.root, &self.file);
        Ok(())
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Parts folded into the checkpoint's file (0: there was nothing to compact).
    pub parts: usize,
    /// Rows of the compacted file.
    pub rows: u64,
    /// Bytes of the compacted file.
    pub bytes: u64,
}

impl CheckpointManager {
    /// Records `fingerprint` (of inputs, model, prompt, parameters: whatever made the
    /// checkpoint, as the caller computes it) with every save and append of this manager,
    /// and makes every load check it: a checkpoint recorded with another fingerprint, or
    /// with none, fails with a "stale" error ([`Error::is_stale`]) instead of returning
    /// results made from other inputs.
    pub fn with_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// The fingerprint recorded with checkpoint `name`, if any.
    pub async fn fingerprint(&self, name: &str) -> Result<Option<String>> {
        Ok(read_fingerprint(&self.root, &self.file_name(name)?).await?)
    }

    /// Fails with a stale error when checkpoint file `file` exists and was recorded with
    /// another fingerprint than this manager's (none set: no check).
    pub(super) async fn check_fingerprint(&self, file: &str, exists: bool) -> Result<()> {
        let Some(expected) = &self.fingerprint else {
            return Ok(());
        };
        if !exists {
            return Ok(());
        }
        let recorded = read_fingerprint(&self.root, file).await?;
        if recorded.as_deref() == Some(expected.as_str()) {
            return Ok(());
        }
        Err(Error::Stale {
            file: self.root.describe(file),
            recorded,
            expected: expected.clone(),
        })
    }

    /// Before a save replaces `file`: the old fingerprint goes first, so a crash before
    /// the new one is recorded leaves a checkpoint that no fingerprint matches (stale, never
    /// wrongly fresh).
    pub(super) async fn before_save(&self, file: &str) -> Result<()> {
        if self.fingerprint.is_some() {
            remove_fingerprint(&self.root, file).await?;
        }
        Ok(())
    }

    pub(super) async fn after_save(&self, file: &str) -> Result<()> {
        if let Some(fp) = &self.fingerprint {
            write_fingerprint(&self.root, file, fp).await?;
        }
        Ok(())
    }

    /// Appends `items` to checkpoint `name` as one new part, durably and atomically: the
    /// batch is stored whole or not at all, whatever other appenders (in this or other
    /// processes, on local disk or S3) do meanwhile. Every reader sees the checkpoint and
    /// its parts as one table; an id appended again replaces its earlier row (the last row
    /// wins, see `crate::catalog::appended`). An empty batch stores nothing.
    pub async fn append<T: Checkpoint + Clone>(
        &self,
        name: &str,
        items: &[T],
    ) -> Result<WriteStats> {
        if items.is_empty() {
            return Ok(WriteStats::default());
        }
        self.append_record_batches(name, kind_for::<T>(name), typed_batches(items))
            .await
    }

    /// [`append`](Self::append) of record batches of `kind`'s schema (the untyped form,
    /// for rows held as Arrow or decoded from a file: `ckpt append`, the Python package).
    /// A batch that fails (a bad row) stores nothing.
    pub async fn append_record_batches(
        &self,
        name: &str,
        kind: CheckpointKind,
        stream: BatchStream,
    ) -> Result<WriteStats> {
        match self.stage_record_batches(name, kind, stream).await? {
            Some(staged) => staged.publish().await,
            None => Ok(WriteStats::default()),
        }
    }

    /// The first half of [`append`](Self::append), for callers that publish later (or
    /// not at all): see [`stage_record_batches`](Self::stage_record_batches).
    pub async fn stage_append<T: Checkpoint + Clone>(
        &self,
        name: &str,
        items: &[T],
    ) -> Result<Option<StagedAppend>> {
        self.stage_record_batches(name, kind_for::<T>(name), typed_batches(items))
            .await
    }

    /// The first half of [`append_record_batches`](Self::append_record_batches): the rows
    /// are checked and written whole under a hidden name beside the parts, and become a
    /// part only when [`StagedAppend::publish`] is called (None when the manager is
    /// disabled). Parts are ordered by when they were published, whatever their size or
    /// when their writing began. A batch that fails stores nothing: no staged file, no
    /// parts directory made for it, no fingerprint recorded for it.
    pub async fn stage_record_batches(
        &self,
        name: &str,
        kind: CheckpointKind,
        stream: BatchStream,
    ) -> Result<Option<StagedAppend>> {
        if !self.enabled {
            return Ok(None);
        }
        let file = self.file_name(name)?;
        let mut recorded = false;
        if let Some(fp) = &self.fingerprint {
            let exists = find_checkpoint(&self.root, &file, self.format, Some(kind))
                .await?
                .is_some();
            if exists {
                // Never mix rows made from other inputs into one checkpoint.
                self.check_fingerprint(&file, true).await?;
            } else {
                write_fingerprint(&self.root, &file, fp).await?;
                recorded = true;
            }
        }
        let staged = staged_part_name(&file, self.format);
        // Logged at debug level: a test that kills appenders tells from it that a kill
        // landed while the part was being written.
        tracing::debug!(part = %staged, "writing an appended part");
        match self.write_kind(&staged, kind, stream).await {
            Ok(stats) => Ok(Some(StagedAppend {
                root: self.root.clone(),
                file,
                format: self.format,
                staged,
                stats,
            })),
            Err(e) => {
                if recorded {
                    let _ = remove_fingerprint(&self.root, &file).await;
                }
                remove_empty_parts_dir(&self.root, &file);
                Err(e)
            }
        }
    }

    /// The ids of `ids` that checkpoint `name` does not hold yet (by the kind's id column:
    /// `chat_id`, or `id` for clusters), in the order given, each once. All of them when
    /// there is no checkpoint.
    pub async fn missing<S: AsRef<str>>(&self, name: &str, ids: &[S]) -> Result<Vec<String>> {
        let have = self.ids(name).await?;
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .map(AsRef::as_ref)
            .filter(|id| !have.contains(*id) && seen.insert(*id))
            .map(str::to_owned)
            .collect())
    }

    /// The ids checkpoint `name` holds (empty when there is none), read from its id
    /// column only; read again when a save or compaction changed it meanwhile.
    async fn ids(&self, name: &str) -> Result<HashSet<String>> {
        let file = self.file_name(name)?;
        let mut attempt = 0;
        loop {
            match self.ids_once(&file).await {
                Err(e) if attempt < READ_AGAIN && e.is_changed_while_read() => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(6)))
                        .await;
                }
                res => return res,
            }
        }
    }

    async fn ids_once(&self, file: &str) -> Result<HashSet<String>> {
        let mut have = HashSet::new();
        if !self.enabled {
            return Ok(have);
        }
        let Some(entry) = find_checkpoint(&self.root, file, self.format, None).await? else {
            return Ok(have);
        };
        self.check_fingerprint(file, true).await?;
        let kind = resolve_kind(&self.root, &entry).await?.ok_or_else(|| {
            Error::config(format!(
                "{}: not a checkpoint of a known kind, so it has no id column",
                self.root.describe(file)
            ))
        })?;
        let session = self.session().await?;
        let table = table_for(&self.root, &entry, &self.table_options).await?;
        let df = session
            .context()
            .read_table(table)?
            .select_columns(&[kind.id_column()])?;
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let col = match batch.column(0).data_type() {
                DataType::Utf8 => batch.column(0).clone(),
                _ => datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?,
            };
            let col = col.as_string::<i32>();
            for i in 0..col.len() {
                if col.is_valid(i) {
                    have.insert(col.value(i).to_owned());
                }
            }
        }
        Ok(have)
    }

    /// The per-item resume pattern: computes only the inputs whose id (`id_of`) checkpoint
    /// `name` does not hold yet, `batch_size` at a time with `compute`, appending each
    /// batch as soon as it is computed, and returns the whole checkpoint. A step killed
    /// part-way loses at most the batch in flight; run again, it computes what is missing.
    /// `compute` must return items whose id is their input's (a summary's `chat_id` is its
    /// conversation's).
    pub async fn load_or_compute_each<I, T, K, F, Fut>(
        &self,
        name: &str,
        inputs: Vec<I>,
        id_of: K,
        batch_size: usize,
        mut compute: F,
    ) -> Result<Vec<T>>
    where
        T: Checkpoint + Clone,
        K: Fn(&I) -> String,
        F: FnMut(Vec<I>) -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        let batch_size = batch_size.max(1);
        if !self.enabled {
            let mut out = Vec::new();
            let mut inputs = inputs.into_iter().peekable();
            while inputs.peek().is_some() {
                out.extend(compute(inputs.by_ref().take(batch_size).collect()).await?);
            }
            return Ok(out);
        }
        let ids: Vec<String> = inputs.iter().map(&id_of).collect();
        let missing: HashSet<String> = self.missing(name, &ids).await?.into_iter().collect();
        let todo: Vec<I> = inputs
            .into_iter()
            .filter(|i| missing.contains(&id_of(i)))
            .collect();
        if !todo.is_empty() {
            tracing::info!(
                checkpoint = name,
                done = ids.len() - todo.len(),
                todo = todo.len(),
                "computing the missing items"
            );
        }
        let mut todo = todo.into_iter().peekable();
        while todo.peek().is_some() {
            let batch: Vec<I> = todo.by_ref().take(batch_size).collect();
            let out = compute(batch).await?;
            self.append(name, &out).await?;
        }
        Ok(self.load::<T>(name).await?.unwrap_or_default())
    }

    /// Rewrites checkpoint `name` and its appended parts as one file (in this manager's
    /// format, compression and layout: JSONL, or `Layout::Kura` Parquet, loads in Kura),
    /// atomically, then removes the parts, oldest first. Readers meanwhile see the
    /// checkpoint before or after, never both or neither (see `crate::catalog::appended`). Run one
    /// compaction of a checkpoint at a time (on local disk a second one waits for the
    /// first); appends may go on meanwhile and stay parts.
    ///
    /// The compacted file keeps the layout its base has (Kura's or native Parquet), so a
    /// checkpoint Kura loaded before loads after; a checkpoint of parts alone takes the
    /// manager's. [`compact_as`](Self::compact_as) chooses the layout.
    pub async fn compact(&self, name: &str) -> Result<CompactStats> {
        self.compact_as(name, None).await
    }

    /// [`compact`](Self::compact), written in `layout` when given (Parquet).
    pub async fn compact_as(&self, name: &str, layout: Option<Layout>) -> Result<CompactStats> {
        self.compact_with(name, layout, None).await
    }

    /// [`compact_as`](Self::compact_as), telling `progress` the bytes read so far of the
    /// checkpoint and its parts (`ckpt compact`'s progress bar).
    pub async fn compact_with(
        &self,
        name: &str,
        layout: Option<Layout>,
        progress: Option<crate::progress::ProgressFn>,
    ) -> Result<CompactStats> {
        let file = self.file_name(name)?;
        if !self.enabled {
            return Ok(CompactStats::default());
        }
        let _lock = self.compaction_lock(&file).await?;
        let Some(entry) = find_checkpoint(&self.root, &file, self.format, None).await? else {
            return Ok(CompactStats::default());
        };
        let parts = part_count(&entry);
        if parts == 0 {
            return Ok(CompactStats::default());
        }
        let kind = resolve_kind(&self.root, &entry)
            .await?
            .ok_or_else(|| Error::config(format!("{file}: no known kind to compact by")))?;
        let layout = match layout {
            Some(l) => l,
            None => self.base_layout(&entry, kind).await?,
        };
        let writer = self.clone().layout(layout);
        let session = self.session().await?;
        let table = table_for(&self.root, &entry, &self.table_options).await?;
        let meter = progress.map(|progress| crate::progress::Meter {
            progress,
            checkpoint: name.to_owned(),
            before: 0,
            total: entry.bytes(),
            rows_before: 0,
        });
        let df = session.context().read_table(table)?;
        let stream = crate::progress::execute_metered(df, &self.root, &entry, meter).await?;
        // The read checks at its end that nothing it listed changed; if something did,
        // the stream fails and the write is abandoned: the checkpoint stays as it was.
        let written = writer.write_kind(&file, kind, stream).await?;
        remove_parts(&self.root, &entry).await?;
        remove_empty_parts_dir(&self.root, &file);
        tracing::info!(checkpoint = name, parts, rows = written.rows, "compacted");
        Ok(CompactStats {
            parts,
            rows: written.rows,
            bytes: written.bytes,
        })
    }

    /// The layout of the checkpoint's base (Parquet of a known kind); the manager's when
    /// it has no base or is JSONL.
    async fn base_layout(
        &self,
        entry: &crate::catalog::Entry,
        kind: CheckpointKind,
    ) -> Result<Layout> {
        let base = entry.files.iter().find(|m| !is_part_of(&entry.file, m));
        match (self.format, base) {
            (FileFormat::Parquet, Some(meta)) => {
                let footer = crate::scan::parquet::parquet_footer(
                    self.root.store(),
                    meta,
                    &self.root.describe(&entry.file),
                )
                .await?;
                Ok(crate::layout::detect_layout(kind, &footer.schema))
            }
            _ => Ok(self.write.layout),
        }
    }

    /// On local disk, an exclusive lock on the root directory for as long as the returned
    /// file is open: compactions in one root take turns. The directory itself is locked,
    /// not a lock file, so a compaction leaves nothing behind (a lock file could not be
    /// removed safely: a waiter would hold the lock of a file no one else opens).
    async fn compaction_lock(&self, _file: &str) -> Result<Option<std::fs::File>> {
        let Some(dir) = self.root.local_dir().map(|d| d.to_path_buf()) else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || -> Result<Option<std::fs::File>> {
            let f = std::fs::File::open(&dir)
                .map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
            f.lock()
                .map_err(|e| Error::io(format!("cannot lock {}", dir.display()), e))?;
            Ok(Some(f))
        })
        .await
        .map_err(|e| Error::internal(format!("lock task failed: {e}")))?
    }
}
