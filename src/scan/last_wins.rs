//! The rule of appended checkpoints, as an execution plan: of all the rows that share an
//! id, the last one in file order wins (the rule and why it is a plan, not a SQL window:
//! `ckpt::catalog::appended`). Also the check that a read saw one state of the
//! checkpoint: the base still the version listed, every part still there.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::ObjectMeta;
use object_store::path::Path;

use crate::format::FileFormat;
use crate::kind::CheckpointKind;
use crate::parts::list_parts;
use crate::storage::Root;
use crate::{Error, Result};

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

/// Streams the files of an appended checkpoint in order, keeping for each id of the parts
/// only its last row (the rule, in the docs of the catalog's `appended` module), then checks that what was read is
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
