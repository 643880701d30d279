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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::catalog::{Entry, TableOptions, single_file_table};
use crate::format::{FileFormat, strip_extension};
use crate::kind::CheckpointKind;
use crate::scan::SkipLog;
use crate::storage::Root;
use crate::{Error, Result};

/// What the directory of a checkpoint's parts is called: the checkpoint's file name and this.
pub const PARTS_SUFFIX: &str = ".parts";

/// The directory of the parts of checkpoint file `file`: `summaries.jsonl.parts`.
pub fn parts_dir(file: &str) -> String {
    format!("{file}{PARTS_SUFFIX}")
}

/// The checkpoint file (and its format) whose parts a directory holds, if it is one.
pub fn parts_dir_base(dir: &str) -> Option<(&str, FileFormat)> {
    let base = dir.trim_end_matches('/').strip_suffix(PARTS_SUFFIX)?;
    match strip_extension(base) {
        (_, Some(format)) => Some((base, format)),
        _ => None,
    }
}

/// A new part's name within the root: unique, sorted by the moment it is taken, which is
/// the moment the part is published.
pub fn new_part_name(file: &str, format: FileFormat) -> String {
    format!(
        "{}/{}.{}",
        parts_dir(file),
        unique_stamp(),
        format.extension()
    )
}

/// Where an append writes its rows before publishing them: a hidden name (`_`, which
/// listings skip) in the parts directory, so no reader sees a part before it is whole
/// and named in publication order.
pub fn staged_part_name(file: &str, format: FileFormat) -> String {
    format!(
        "{}/_staged-{}.{}",
        parts_dir(file),
        unique_stamp(),
        format.extension()
    )
}

/// `<nanoseconds since the epoch, 16 hex digits>-<64 random bits>`: sorted by time, unique
/// without coordination.
/// Within one process the times only go up: two parts published one after the other
/// sort in that order even where the clock's steps are coarse, or it is set back.
fn unique_stamp() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or_default();
    let nanos = now.max(previous + 1);
    let unique: u64 = rand::random();
    format!("{nanos:016x}-{unique:016x}")
}

/// Removes the parts directory of checkpoint file `file` when it is empty (local disk;
/// object stores have no directories): what an append that failed, or a compaction,
/// leaves. A directory holding anything (another appender's staged part) stays.
pub fn remove_empty_parts_dir(root: &Root, file: &str) {
    if let Some(path) = root.local_path(&parts_dir(file)) {
        let _ = std::fs::remove_dir(path);
    }
}

/// Whether `meta` is one of the parts of checkpoint file `file` (not its base).
pub fn is_part_of(file: &str, meta: &ObjectMeta) -> bool {
    let dir = parts_dir(file);
    meta.location
        .as_ref()
        .rsplit_once('/')
        .is_some_and(|(parent, _)| parent == dir || parent.ends_with(&format!("/{dir}")))
}

/// How many of an entry's files are appended parts.
pub fn part_count(entry: &Entry) -> usize {
    entry
        .files
        .iter()
        .filter(|m| is_part_of(&entry.file, m))
        .count()
}

/// The parts of checkpoint file `file`, oldest first. A missing directory has none.
pub async fn list_parts(root: &Root, file: &str, format: FileFormat) -> Result<Vec<ObjectMeta>> {
    let dir = parts_dir(file);
    let mut parts = root.list_dir(&dir).await?;
    parts.retain(|m| {
        // Parts directly in the directory, of the checkpoint's format; anything else
        // (a stray file, a deeper directory) is not a part.
        root.name_of(&m.location).is_some_and(|n| {
            n.strip_prefix(&dir)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| !r.contains('/'))
        }) && m.location.extension().and_then(FileFormat::from_extension) == Some(format)
    });
    parts.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(parts)
}

/// Checkpoint file `file` as it is now: its base (listed first) and its parts (listed
/// after); None when it has neither.
pub async fn find_checkpoint(
    root: &Root,
    file: &str,
    format: FileFormat,
    kind: Option<CheckpointKind>,
) -> Result<Option<Entry>> {
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

// ---- The table ---------------------------------------------------------------------------

/// The versions a reader listed, checked again once it has read them.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) root: Root,
    /// The checkpoint's file name in the root.
    pub(crate) file: String,
    pub(crate) format: FileFormat,
    pub(crate) base: Option<ObjectMeta>,
    pub(crate) parts: Vec<Path>,
}

impl Listed {
    /// Fails with "changed while it was being read" unless the base is the version listed
    /// and every part listed is still there.
    async fn verify(&self) -> Result<()> {
        let changed = || -> Error { Error::changed_while_read(self.file.clone()) };
        if let Some(listed) = &self.base {
            match self.root.head(&self.file).await? {
                Some(now) if same_version(listed, &now) => {}
                _ => return Err(changed()),
            }
        }
        if !self.parts.is_empty() {
            let now: HashSet<Path> = list_parts(&self.root, &self.file, self.format)
                .await?
                .into_iter()
                .map(|m| m.location)
                .collect();
            if self.parts.iter().any(|p| !now.contains(p)) {
                return Err(changed());
            }
        }
        Ok(())
    }
}

/// Whether two listings of one object describe the same version: by ETag (quotes and a
/// weak marker aside: a listing and a HEAD may quote it differently) and size; without
/// ETags, by size and modification time to the second (HEAD's precision on S3).
fn same_version(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    fn tag(m: &ObjectMeta) -> Option<&str> {
        m.e_tag
            .as_deref()
            .map(|t| t.trim_start_matches("W/").trim_matches('"'))
    }
    if a.size != b.size {
        return false;
    }
    match (tag(a), tag(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.last_modified.timestamp() == b.last_modified.timestamp(),
    }
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

/// Streams the files of an appended checkpoint in order, keeping for each id of the parts
/// only its last row (the rule of the module docs), then checks that what was read is
/// still what was listed. One output partition: the rows come in file order.
#[derive(Debug)]
pub struct LastWinsExec {
    kind: CheckpointKind,
    /// Full scans, one per file, in order.
    files: Vec<Arc<dyn ExecutionPlan>>,
    /// Scans of the id column, one per file from `first_part` on (every file).
    ids: Vec<Arc<dyn ExecutionPlan>>,
    first_part: usize,
    /// The id column in the files' schema.
    id: usize,
    projection: Option<Vec<usize>>,
    output: SchemaRef,
    properties: Arc<PlanProperties>,
    listed: Listed,
}

impl LastWinsExec {
    /// The plan over `files` (full scans, in order) and `ids` (scans of the id column of
    /// `files[first_part..]`), projected to `projection` of the
    /// kind's columns.
    pub(crate) fn new(
        kind: CheckpointKind,
        files: Vec<Arc<dyn ExecutionPlan>>,
        ids: Vec<Arc<dyn ExecutionPlan>>,
        first_part: usize,
        projection: Option<Vec<usize>>,
        listed: Listed,
    ) -> DfResult<Self> {
        let schema = kind.schema();
        let id = schema.index_of(kind.id_column())?;
        let output = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        Ok(LastWinsExec {
            kind,
            files,
            ids,
            first_part,
            id,
            projection,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(output.clone()),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            output,
            listed,
        })
    }

    /// How many of the children are full scans of the files (the rest scan parts' ids).
    pub(crate) fn file_count(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn kind(&self) -> CheckpointKind {
        self.kind
    }

    pub(crate) fn first_part(&self) -> usize {
        self.first_part
    }

    pub(crate) fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    pub(crate) fn listed(&self) -> &Listed {
        &self.listed
    }
}

impl DisplayAs for LastWinsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LastWinsExec: files={}, parts={}, id={}",
            self.files.len(),
            self.ids.len(),
            self.id
        )
    }
}

/// The ids of a batch's column as text (the kinds' ids are Utf8; other string types are
/// cast).
fn id_strings(batch: &RecordBatch, idx: usize) -> DfResult<Arc<dyn Array>> {
    let col = batch.column(idx);
    Ok(match col.data_type() {
        DataType::Utf8 => col.clone(),
        _ => datafusion::arrow::compute::cast(col, &DataType::Utf8)?,
    })
}

/// Runs every partition of `plan` in order (a file split into byte ranges comes back in
/// file order) and hands each batch to `f`.
async fn for_each_batch(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &Arc<TaskContext>,
    mut f: impl FnMut(RecordBatch) -> DfResult<()>,
) -> DfResult<()> {
    for p in 0..plan.properties().partitioning.partition_count() {
        let mut s = plan.execute(p, ctx.clone())?;
        while let Some(b) = s.next().await {
            f(b?)?;
        }
    }
    Ok(())
}

impl ExecutionPlan for LastWinsExec {
    fn name(&self) -> &str {
        "LastWinsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.files.iter().chain(&self.ids).collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    // Each child is read partition after partition, in order: repartitioning a child would
    // shuffle its rows and break "the last row wins".
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.files.len() + self.ids.len()]
    }

    // The output is the files one after another, less replaced rows: no child's order is
    // the output's (were it claimed, the optimizer would push an ORDER BY into each file's
    // scan, and into the id scans, whose one column it does not have).
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false; self.files.len() + self.ids.len()]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != self.files.len() + self.ids.len() {
            return Err(DataFusionError::Internal(format!(
                "LastWinsExec: {} children given, {} expected",
                children.len(),
                self.files.len() + self.ids.len()
            )));
        }
        let ids = children.split_off(self.files.len());
        Ok(Arc::new(LastWinsExec {
            kind: self.kind,
            files: children,
            ids,
            first_part: self.first_part,
            id: self.id,
            projection: self.projection.clone(),
            output: self.output.clone(),
            properties: self.properties.clone(),
            listed: self.listed.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "LastWinsExec has one partition, not {partition}"
            )));
        }
        let (files, ids, first_part, id) = (
            self.files.clone(),
            self.ids.clone(),
            self.first_part,
            self.id,
        );
        let (projection, output, listed) = (
            self.projection.clone(),
            self.output.clone(),
            self.listed.clone(),
        );
        let mut builder = RecordBatchReceiverStreamBuilder::new(output.clone(), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            let checked = listed.clone();
            let res = last_wins(
                files, ids, first_part, id, projection, output, listed, tx, ctx,
            )
            .await;
            match res {
                // A part removed or a base replaced under the read (a compaction) makes the
                // scan fail in many ways; it is reported as what it is, to read again.
                Err(e) => match checked.verify().await {
                    Err(changed) => Err(DataFusionError::from(changed)),
                    Ok(()) => Err(e),
                },
                ok => ok,
            }
        });
        Ok(builder.build())
    }
}

/// The body of [`LastWinsExec::execute`]: both passes and the final check.
#[allow(clippy::too_many_arguments)]
async fn last_wins(
    files: Vec<Arc<dyn ExecutionPlan>>,
    ids: Vec<Arc<dyn ExecutionPlan>>,
    first_part: usize,
    id: usize,
    projection: Option<Vec<usize>>,
    output: SchemaRef,
    listed: Listed,
    tx: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    ctx: Arc<TaskContext>,
) -> DfResult<()> {
    // Pass 1: the position (file, row) of the last row of each id.
    let mut last: HashMap<String, (usize, u64)> = HashMap::new();
    for (k, plan) in ids.iter().enumerate() {
        let file = first_part + k;
        let mut row = 0u64;
        for_each_batch(plan, &ctx, |b| {
            let col = id_strings(&b, 0)?;
            let col = col.as_string::<i32>();
            for i in 0..col.len() {
                last.insert(col.value(i).to_owned(), (file, row));
                row += 1;
            }
            Ok(())
        })
        .await?;
    }
    // Pass 2: every file in order, without the rows a later one replaces.
    for (file, plan) in files.iter().enumerate() {
        let mut row = 0u64;
        for p in 0..plan.properties().partitioning.partition_count() {
            let mut s = plan.execute(p, ctx.clone())?;
            while let Some(b) = s.next().await {
                let b = b?;
                let col = id_strings(&b, id)?;
                let col = col.as_string::<i32>();
                let keep: BooleanArray = (0..col.len())
                    .map(|i| {
                        let here = (file, row + i as u64);
                        Some(last.get(col.value(i)).is_none_or(|at| *at == here))
                    })
                    .collect();
                row += col.len() as u64;
                let kept = filter_record_batch(&b, &keep)?;
                if kept.num_rows() == 0 {
                    continue;
                }
                let kept = match &projection {
                    Some(p) => kept.project(p)?,
                    None => kept,
                };
                let out = RecordBatch::try_new_with_options(
                    output.clone(),
                    kept.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(kept.num_rows())),
                )?;
                // A consumer that went away (a LIMIT satisfied) ends the scan.
                if tx.send(Ok(out)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    listed.verify().await.map_err(DataFusionError::from)?;
    Ok(())
}

// ---- Removing parts ----------------------------------------------------------------------

/// Removes the parts listed in `parts`, oldest first (the order the module docs rely on);
/// a part already gone is not an error. Returns how many were removed.
pub async fn remove_listed_parts(root: &Root, parts: &[ObjectMeta]) -> Result<usize> {
    let mut sorted: Vec<&ObjectMeta> = parts.iter().collect();
    sorted.sort_by(|a, b| a.location.cmp(&b.location));
    let mut removed = 0;
    for meta in sorted {
        match root.store().delete(&meta.location).await {
            Ok(()) => removed += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::storage(
                    format!("cannot remove the part {}", display(root, &meta.location)),
                    e,
                ));
            }
        }
    }
    // Local disk keeps directories that object stores do not have: remove a parts
    // directory left empty, so a compacted checkpoint is one file again. One that is not
    // empty (a new part, a fingerprint) stays; an appender that finds it gone makes it
    // again (see `durable`).
    let dirs: std::collections::BTreeSet<String> = parts
        .iter()
        .filter_map(|m| root.name_of(&m.location))
        .filter_map(|n| n.rsplit_once('/').map(|(d, _)| d.to_owned()))
        .collect();
    for dir in dirs {
        if let Some(path) = root.local_path(&dir) {
            let _ = std::fs::remove_dir(path);
        }
    }
    Ok(removed)
}

/// Removes the parts of an entry (as listed in it), oldest first.
pub async fn remove_parts(root: &Root, entry: &Entry) -> Result<usize> {
    let parts: Vec<ObjectMeta> = entry
        .files
        .iter()
        .filter(|m| is_part_of(&entry.file, m))
        .cloned()
        .collect();
    remove_listed_parts(root, &parts).await
}

fn display(root: &Root, location: &Path) -> String {
    root.name_of(location)
        .map(|n| root.describe(&n))
        .unwrap_or_else(|| location.to_string())
}

// ---- Fingerprints ------------------------------------------------------------------------

/// Where the fingerprint of checkpoint file `file` is recorded: beside its parts, under a
/// name listings hide (`_`), so Kura and the catalog never take it for data.
pub fn fingerprint_file(file: &str) -> String {
    format!("{}/_fingerprint", parts_dir(file))
}

/// The fingerprint recorded for checkpoint file `file`, if any.
pub async fn read_fingerprint(root: &Root, file: &str) -> Result<Option<String>> {
    let name = fingerprint_file(file);
    if root.head(&name).await?.is_none() {
        return Ok(None);
    }
    match root.get(&name).await {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Records `fingerprint` for checkpoint file `file` (atomically, as every write).
pub async fn write_fingerprint(root: &Root, file: &str, fingerprint: &str) -> Result<()> {
    let mut w = root.writer(&fingerprint_file(file))?;
    w.write(bytes::Bytes::copy_from_slice(fingerprint.as_bytes()))
        .await?;
    w.commit().await?;
    Ok(())
}

/// Forgets the fingerprint of checkpoint file `file`.
pub async fn remove_fingerprint(root: &Root, file: &str) -> Result<()> {
    root.delete(&fingerprint_file(file)).await?;
    Ok(())
}

// ---- `ckpt append` and `ckpt compact` ----------------------------------------------------

/// What `ckpt append` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedFile {
    /// The checkpoint appended to, as a path or URL.
    pub checkpoint: String,
    /// The input file.
    pub source: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Splits a file's location into its directory (a root) and its name.
fn split_location(location: &str) -> (String, String) {
    let trimmed = location.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", f)) => ("/".to_owned(), f.to_owned()),
        Some((d, f)) => (d.to_owned(), f.to_owned()),
        None => (".".to_owned(), trimmed.to_owned()),
    }
}

/// The format checkpoint `name` is kept in: its extension's; else the one format it
/// exists in; else `fallback`.
async fn format_of(root: &Root, name: &str, fallback: Option<FileFormat>) -> Result<FileFormat> {
    crate::format::validate_name(name)?;
    if let (_, Some(format)) = strip_extension(name) {
        return Ok(format);
    }
    let mut found = Vec::new();
    for format in [FileFormat::Jsonl, FileFormat::Parquet] {
        let file = crate::format::file_name(name, format)?;
        if find_checkpoint(root, &file, format, None).await?.is_some() {
            found.push(format);
        }
    }
    match (found.as_slice(), fallback) {
        ([one], _) => Ok(*one),
        ([_, _], _) => Err(Error::config(format!(
            "{name} exists as {name}.jsonl and {name}.parquet in {}: give the one you mean",
            root.display()
        ))),
        (_, Some(f)) => Ok(f),
        _ => Err(Error::config(format!(
            "no checkpoint {name} in {}",
            root.display()
        ))),
    }
}

/// `ckpt append ROOT NAME FILE`: the rows of a JSONL or Parquet file, each checked by the
/// kind's codec, appended to checkpoint `name` as one new part. A bad row fails the whole
/// append (naming file, line and field) and stores nothing. `progress` is told the bytes
/// of the file read so far.
pub async fn append_file(
    root: &str,
    name: &str,
    file: &str,
    write: &crate::format::WriteOptions,
    storage: &crate::storage::StorageOptions,
    progress: Option<crate::progress::ProgressFn>,
) -> Result<AppendedFile> {
    let (dir, input) = split_location(file);
    let src_root = Root::open_existing(&dir, storage)?;
    let src_format = strip_extension(&input).1.ok_or_else(|| {
        Error::config(format!(
            "{file}: expected a .jsonl or .parquet file of rows to append"
        ))
    })?;
    let meta = src_root
        .head(&input)
        .await?
        .ok_or_else(|| Error::config(format!("{} does not exist", src_root.describe(&input))))?;
    let dst_root = Root::with_options(root, storage)?;
    let format = format_of(&dst_root, name, Some(src_format)).await?;
    let mut src = Entry {
        name: strip_extension(&input).0.to_owned(),
        file: input.clone(),
        format: src_format,
        kind: None,
        files: vec![meta],
        problem: None,
    };
    // The checkpoint's kind: its name's, else the existing checkpoint's, else the input's
    // columns'.
    let target_file = crate::format::file_name(name, format)?;
    let existing = match find_checkpoint(&dst_root, &target_file, format, None).await? {
        Some(e) => crate::catalog::resolve_kind(&dst_root, &e).await?,
        None => None,
    };
    let kind = match CheckpointKind::from_name(name).or(existing) {
        Some(k) => k,
        None => crate::catalog::resolve_kind(&src_root, &src)
            .await?
            .ok_or_else(|| {
                Error::config(format!(
                    "{name}: cannot tell the checkpoint's kind from its name or from {file}; \
                     name it summaries, clusters, meta_clusters, dimensionality or conversations"
                ))
            })?,
    };
    src.kind = Some(kind);
    let session = crate::context::CheckpointSession::with_roots(
        vec![("source".to_owned(), src_root.clone())],
        crate::context::SessionOptions {
            target_partitions: Some(1),
            storage: storage.clone(),
            ..Default::default()
        },
    )
    .await?;
    let table = single_file_table(&src_root, &src, Some(kind), &TableOptions::default()).await?;
    let meter = progress.map(|progress| crate::progress::Meter {
        progress,
        checkpoint: strip_extension(name).0.to_owned(),
        before: 0,
        total: src.bytes(),
        rows_before: 0,
    });
    let df = session.context().read_table(table)?;
    let stream = crate::progress::execute_metered(df, &src_root, &src, meter).await?;
    let manager = crate::CheckpointManager::new(dst_root.clone(), format)?
        .compression(write.compression)
        .layout(write.layout);
    let stats = manager.append_record_batches(name, kind, stream).await?;
    Ok(AppendedFile {
        checkpoint: dst_root.describe(&target_file),
        source: src_root.describe(&input),
        rows: stats.rows,
        bytes: stats.bytes,
    })
}

/// `ckpt compact ROOT NAME`: see [`crate::CheckpointManager::compact`]; `layout` None keeps
/// the checkpoint's own layout. Returns the checkpoint (as a path or URL) and what was done.
/// `progress` is told the bytes of the checkpoint and its parts read so far.
pub async fn compact(
    root: &str,
    name: &str,
    write: &crate::format::WriteOptions,
    layout: Option<crate::format::Layout>,
    storage: &crate::storage::StorageOptions,
    progress: Option<crate::progress::ProgressFn>,
) -> Result<(String, crate::manager::CompactStats)> {
    let root = Root::open_existing(root, storage)?;
    let format = format_of(&root, name, None).await?;
    let file = crate::format::file_name(name, format)?;
    if find_checkpoint(&root, &file, format, None).await?.is_none() {
        return Err(Error::config(format!(
            "no checkpoint {name} in {}",
            root.display()
        )));
    }
    let manager = crate::CheckpointManager::new(root.clone(), format)?
        .compression(write.compression)
        .layout(write.layout);
    let stats = manager.compact_with(name, layout, progress).await?;
    Ok((root.describe(&file), stats))
}
