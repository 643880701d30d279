//! Appended checkpoints: one checkpoint, many parts, read as one DataFusion table.
//!
//! A pipeline step that takes hours appends its results batch by batch
//! ([`CheckpointManager::append`](crate::CheckpointManager::append), `ckpt append`), so a
//! crash loses at most the batch in flight and a rerun computes only what is missing.
//!
//! # Layout
//!
//! ```text
//! summaries.jsonl                                   the base: a save, or a compaction
//! summaries.jsonl.parts/0001864c2f1a3b40-9e1f....jsonl   one appended batch each
//! summaries.jsonl.parts/0001864c2f1b0070-03a7....jsonl
//! ```
//!
//! - Each append writes **one new object** through the same atomic writer as every save
//!   (local disk: staged, fsynced, renamed; S3: one PUT or a completed multipart upload),
//!   so a batch is there whole or not at all, and a killed appender loses only its own
//!   batch.
//! - An append first writes its rows whole under a hidden name in the parts directory
//!   (`_staged-...`, which listings skip), then **publishes** them by renaming that file to
//!   the part's name, `<nanoseconds since the epoch, 16 hex digits>-<64 random bits>.<ext>`,
//!   taken at that moment: unique without any lock or coordination (appenders in several
//!   processes, on S3 where there are no locks), and sorted by name in the order the
//!   appends were published. (Named when an append *started*, a long append published
//!   after a compaction would have sorted before parts that compaction had merged: the
//!   row that won would change with the compaction.)
//! - The base keeps the checkpoint's ordinary name, and the parts sit in a directory
//!   beside it whose name is not a checkpoint file name (`*.jsonl.parts`), so Kura and
//!   other readers of plain files see the base and nothing else; after `ckpt compact`
//!   the base is the whole checkpoint, in a form Kura loads.
//!
//! # Duplicates: the last row wins
//!
//! An id (the kind's [`id_column`](CheckpointKind::id_column): `chat_id`, or `id` for
//! clusters) appended twice — a batch stored, then computed and appended again after a
//! crash before the caller knew — is resolved by one rule, in the table itself, so every
//! reader (typed loads, streams, SQL, `ckpt ls`, convert, COPY, compaction) applies it:
//! files are ordered base first, then parts by name (the order they were published);
//! rows within a file in file order; of all the rows that share an id — in the base, in
//! the parts, or both — the last one in that order is kept, at its own place. A base
//! written by another tool may hold an id twice: once the checkpoint has parts, that id
//! too is resolved by the rule (a checkpoint stored as one file, with no parts, is read
//! as it is, every row, as Kura reads it).
//!
//! The rule lives in a table provider ([`AppendedTable`]) and its execution plan
//! ([`LastWinsExec`]) rather than in a SQL view with `ROW_NUMBER()`: a window over the id
//! would sort every row (embeddings included) and lose the file order. The plan reads the
//! id column of every file first (a map from id to the position of its last row: memory
//! for the ids), then streams every file in order and drops the rows that a later row
//! replaces; memory holds one batch plus that map.
//!
//! # Reads never mix two states
//!
//! A reader lists the base, then the parts (in that order), and reads exactly those
//! files. When it has read them, it checks that they are still what it listed: the base
//! the same version (ETag, size), every part still there. If not — a compaction or a save
//! replaced the base or removed parts meanwhile — the read fails with "changed while it
//! was being read", which a manager's load answers by reading again (SQL reports it).
//! Rows already streamed by then may have been consumed; a load collects them only when
//! the read succeeds.
//!
//! # Compaction
//!
//! `ckpt compact` reads the table (the rule above applied) and writes it as the base,
//! atomically, then removes the parts it read, **oldest first**. Every state a reader can
//! list is then equal, row for row after the rule, to the checkpoint before or after:
//! - base old + parts: before;
//! - base new + the parts not yet removed: those are the newest of the parts compacted,
//!   and the last row of each of their ids is in the new base too, so the rule keeps the
//!   same rows; a part appended during the compaction stays a part and still wins;
//! - base new alone: after.
//!
//! A reader whose listing mixes the old base with removed parts fails its final check and
//! reads again. Compactions of one checkpoint must not run at the same time (two could
//! each replace the base with what it read); on local disk a lock file beside the parts
//! makes the second wait, on object stores run one at a time. Appends may run during a
//! compaction.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectMeta;

use super::{Entry, TableOptions, single_file_table};
use crate::Result;
use crate::format::{FileFormat, strip_extension};
use crate::kind::CheckpointKind;
use crate::parts::{is_part_of, list_parts, remove_listed_parts};
use crate::scan::SkipLog;
use crate::scan::{LastWinsExec, Listed};
use crate::storage::Root;

/// How many of an entry's files are appended parts.
pub fn part_count(entry: &Entry) -> usize {
    entry
        .files
        .iter()
        .filter(|m| is_part_of(&entry.file, m))
        .count()
}

/// Checkpoint file `file` as it is now: its base (listed first) and its parts (listed
/// after); None when it has neither.
pub async fn find_checkpoint(
    root: &Root,
    file: &str,
    format: FileFormat,
    kind: Option<CheckpointKind>,
) -> Result<Option<Entry>> {
    if format == FileFormat::Hf {
        // A dataset directory: the data files its state.json lists (none: no checkpoint).
        let dir = file.trim_end_matches('/');
        let listed = root.list_dir(dir).await?;
        let Some(files) = crate::scan::hf::data_files(root, dir, &listed).await? else {
            return Ok(None);
        };
        return Ok(Some(Entry {
            name: dir.to_owned(),
            file: format!("{dir}/"),
            format,
            kind: kind.or_else(|| CheckpointKind::from_name(dir)),
            files,
            problem: None,
        }));
    }
    let base = root.head(file).await?;
    let parts = list_parts(root, file, format).await?;
    if base.is_none() && parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(Entry {
        name: strip_extension(file).0.to_owned(),
        file: file.to_owned(),
        format,
        kind: kind.or_else(|| CheckpointKind::from_name(file)),
        files: base.into_iter().chain(parts).collect(),
        problem: None,
    }))
}

/// An appended checkpoint as one table: its files (base, then parts) with the rule of the
/// module docs applied.
#[derive(Debug)]
pub struct AppendedTable {
    kind: CheckpointKind,
    /// One table per file, in order, as a single-file checkpoint would be read.
    files: Vec<Arc<dyn TableProvider>>,
    /// The same files read for their ids (with a skip log of their own, so a skipped line
    /// is reported once): every file, the base too, which may hold an id twice.
    ids: Vec<Arc<dyn TableProvider>>,
    /// Index in `files` of the first file read for ids (0: all of them).
    first_part: usize,
    listed: Listed,
}

impl AppendedTable {
    pub async fn new(
        root: &Root,
        entry: &Entry,
        kind: CheckpointKind,
        opts: &TableOptions,
    ) -> Result<Self> {
        let id_opts = TableOptions {
            decode: opts.decode,
            skips: SkipLog::default(),
        };
        let mut files = Vec::new();
        let mut ids = Vec::new();
        let mut base = None;
        let mut parts = Vec::new();
        for meta in &entry.files {
            let part = is_part_of(&entry.file, meta);
            if part {
                parts.push(meta.location.clone());
            } else {
                base = Some(meta.clone());
            }
            let name = root
                .name_of(&meta.location)
                .unwrap_or_else(|| meta.location.to_string());
            let one = Entry {
                name: entry.name.clone(),
                file: name,
                format: entry.format,
                kind: Some(kind),
                files: vec![meta.clone()],
                problem: None,
            };
            files.push(single_file_table(root, &one, Some(kind), opts).await?);
            ids.push(single_file_table(root, &one, Some(kind), &id_opts).await?);
        }
        Ok(AppendedTable {
            kind,
            first_part: files.len() - ids.len(),
            files,
            ids,
            listed: Listed {
                root: root.clone(),
                file: entry.file.clone(),
                format: entry.format,
                base,
                parts,
            },
        })
    }
}

#[async_trait]
impl TableProvider for AppendedTable {
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
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let id = self.kind.schema().index_of(self.kind.id_column())?;
        let mut files = Vec::with_capacity(self.files.len());
        for t in &self.files {
            files.push(t.scan(state, None, &[], None).await?);
        }
        let mut ids = Vec::with_capacity(self.ids.len());
        for t in &self.ids {
            ids.push(t.scan(state, Some(&vec![id]), &[], None).await?);
        }
        Ok(Arc::new(LastWinsExec::new(
            self.kind,
            files,
            ids,
            self.first_part,
            projection.cloned(),
            self.listed.clone(),
        )?))
    }
}

/// Removes the parts of an entry (as listed in it), oldest first.
pub async fn remove_parts(root: &Root, entry: &Entry) -> Result<usize> {
    let parts: Vec<ObjectMeta> = entry
        .files
        .iter()
        .filter(|m| is_part_of(&entry.file, m))
        .cloned()
        .collect();
    Ok(remove_listed_parts(root, &parts).await?)
}
