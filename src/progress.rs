//! How far a long write has got, for progress bars: `ckpt convert`, `append`, `compact`
//! (input bytes consumed of the source's size), `generate` (rows made of rows to make)
//! and a `COPY` run by `ckpt query` ([`execute_with_progress`]: bytes of the files its
//! scans read).
//!
//! Bytes consumed are read from the running plan's own metrics, so nothing is added to
//! the read path:
//!
//! - JSONL: the scan's `bytes_scanned`, the bytes it has taken from the store. Its reads
//!   run ahead of the decoder by the blocks in flight only (a few MB, fewer under a
//!   memory limit), so this follows the rows.
//! - Parquet: rows the scan has produced (its `output_rows`) × the files' bytes per row
//!   (rows from the footers). Bytes fetched would not do: a row group's column chunks are
//!   fetched together before any of it is decoded (the bar would jump from 0 to 100% and
//!   wait), and ckpt's pinned Parquet reads do not count into DataFusion's
//!   `bytes_scanned`. Without readable footers the bar stays at 0 and the summary line
//!   still comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext, execute_stream};
use futures::{Stream, StreamExt};
use object_store::ObjectMeta;
use parking_lot::Mutex;

use crate::Result;
use crate::catalog::Entry;
use crate::format::FileFormat;
use crate::scan::LastWinsExec;
use crate::scan::jsonl::JsonlSource;
use crate::sink::BatchStream;
use crate::storage::Root;

/// Where a long write is, as passed to a [`ProgressFn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressUpdate<'a> {
    /// The checkpoint being written (`summaries`).
    pub checkpoint: &'a str,
    /// Rows read (or made) so far, over the whole operation.
    pub rows: u64,
    /// Work done so far: bytes of the input consumed; for `generate`, rows made.
    pub done: u64,
    /// Work in all: the input's size (the sum of its files' sizes); for `generate`, the
    /// rows to make.
    pub total: u64,
}

/// A progress callback; called after each batch read, and every 100 ms while reading.
pub type ProgressFn = Arc<dyn Fn(&ProgressUpdate<'_>) + Send + Sync>;

/// Progress of one checkpoint's read within an operation that may read several.
pub(crate) struct Meter {
    pub progress: ProgressFn,
    pub checkpoint: String,
    /// Bytes of the checkpoints read before this one, and of all of them.
    pub before: u64,
    pub total: u64,
    /// Rows of the checkpoints read before this one.
    pub rows_before: u64,
}

/// Runs `df` (a scan of `entry` in `root`), reporting to `meter` as its batches are read.
pub(crate) async fn execute_metered(
    df: DataFrame,
    root: &Root,
    entry: &Entry,
    meter: Option<Meter>,
) -> Result<BatchStream> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let stream = execute_stream(plan.clone(), task)?;
    let Some(m) = meter else {
        return Ok(stream.boxed());
    };
    let size = entry.bytes();
    let entry_format = entry.format;
    let rows_in_files = match entry.format {
        FileFormat::Jsonl | FileFormat::Hf => None,
        FileFormat::Parquet => parquet_rows(root, entry).await,
    };
    let rows = Arc::new(AtomicU64::new(0));
    let report = {
        let rows = rows.clone();
        move || {
            let done = match (entry_format, rows_in_files) {
                (FileFormat::Jsonl, _) => scanned(&plan, &bytes_scanned),
                (FileFormat::Parquet, Some(n)) if n > 0 => {
                    let read = scanned(&plan, &output_rows);
                    share(size, read, n)
                }
                // Arrow streams say their rows only as they are read.
                (FileFormat::Parquet | FileFormat::Hf, _) => 0,
            };
            (m.progress)(&ProgressUpdate {
                checkpoint: &m.checkpoint,
                rows: m.rows_before + rows.load(Ordering::Relaxed),
                done: m.before + done.min(size),
                total: m.total,
            });
        }
    };
    let stream = stream.inspect(move |batch| {
        if let Ok(b) = batch {
            rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
    });
    Ok(reporting(stream, report).boxed())
}

/// Runs `df`, an already-planned statement (a `COPY`, say), reporting to `progress` as
/// its file scans read, under `label`: the total is the size of the files its scans read
/// (each file once per scan, however DataFusion splits it into byte ranges), done is
/// measured as for a convert's read: JSONL scans' bytes taken from the store, Parquet
/// scans' rows produced × their files' bytes per row. Scans whose progress cannot be
/// measured (other formats; Parquet files whose rows are unknown) are left out of both,
/// and without any measurable scan nothing is reported.
///
/// The rows reported are the rows the measured scans have produced (a `COPY` yields a
/// single row, its count, at its end).
pub async fn execute_with_progress(
    df: DataFrame,
    label: &str,
    progress: ProgressFn,
) -> Result<SendableRecordBatchStream> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let scans = measured_scans(&plan, &task).await;
    let stream = execute_stream(plan, task)?;
    let total: u64 = scans.iter().map(|s| s.bytes).sum();
    if total == 0 {
        return Ok(stream);
    }
    let label = label.to_owned();
    let report = move || {
        let (mut done, mut rows) = (0u64, 0u64);
        for s in &scans {
            let produced = scanned(&s.plan, &output_rows);
            rows += produced;
            done += match s.measure {
                Measure::BytesScanned => scanned(&s.plan, &bytes_scanned),
                Measure::Rows(n) => share(s.bytes, produced, n),
            }
            .min(s.bytes);
        }
        progress(&ProgressUpdate {
            checkpoint: &label,
            rows,
            done: done.min(total),
            total,
        });
    };
    let schema = stream.schema();
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        reporting(stream, report),
    )))
}

/// A scan leaf of a plan whose progress can be measured.
struct MeasuredScan {
    plan: Arc<dyn ExecutionPlan>,
    /// The size of the files it reads.
    bytes: u64,
    measure: Measure,
}

/// How far a scan has read.
enum Measure {
    /// JSONL: the bytes it has taken from the store (its `bytes_scanned`).
    BytesScanned,
    /// Parquet: the rows it has produced, of this many in its files.
    Rows(u64),
}

/// The file scans among the leaves of `plan` (as [`scanned`] walks them) whose progress
/// can be measured.
async fn measured_scans(plan: &Arc<dyn ExecutionPlan>, task: &TaskContext) -> Vec<MeasuredScan> {
    let mut out = Vec::new();
    for leaf in scan_leaves(plan) {
        let Some(conf) = leaf
            .downcast_ref::<DataSourceExec>()
            .and_then(|e| e.data_source().downcast_ref::<FileScanConfig>())
        else {
            continue;
        };
        // A big file may be split into byte ranges over several partitions of the same
        // scan: each file counts once.
        let mut files: Vec<&ObjectMeta> = Vec::new();
        for f in conf.file_groups.iter().flat_map(|g| g.iter()) {
            if !files.iter().any(|m| m.location == f.object_meta.location) {
                files.push(&f.object_meta);
            }
        }
        let bytes = files.iter().map(|m| m.size).sum();
        let source = conf.file_source();
        let measure = if source.downcast_ref::<JsonlSource>().is_some() {
            Measure::BytesScanned
        } else if source.downcast_ref::<ParquetSource>().is_some() {
            match parquet_scan_rows(&leaf, conf, &files, task).await {
                Some(n) if n > 0 => Measure::Rows(n),
                _ => continue,
            }
        } else {
            continue;
        };
        out.push(MeasuredScan {
            plan: leaf,
            bytes,
            measure,
        });
    }
    out
}

/// Rows in the Parquet files a scan reads: from DataFusion's statistics when they are
/// exact, else from the footers; None when a footer cannot be read.
async fn parquet_scan_rows(
    leaf: &Arc<dyn ExecutionPlan>,
    conf: &FileScanConfig,
    files: &[&ObjectMeta],
    task: &TaskContext,
) -> Option<u64> {
    // Exact only without a filter or limit pushed into the scan; then no footer is read.
    let exact = StatisticsContext::new()
        .compute(leaf.as_ref(), &StatisticsArgs::new())
        .ok()
        .and_then(|s| match s.num_rows {
            Precision::Exact(n) => Some(n as u64),
            _ => None,
        });
    if exact.is_some() {
        return exact;
    }
    let store = task
        .runtime_env()
        .object_store(&conf.object_store_url)
        .ok()?;
    let mut rows = 0;
    for meta in files {
        let footer = crate::scan::parquet::parquet_footer(&store, meta, meta.location.as_ref())
            .await
            .ok()?;
        rows += footer.rows;
    }
    Some(rows)
}

/// `size` × `part` / `whole`, without overflow: the bytes of `part` rows of `whole`.
fn share(size: u64, part: u64, whole: u64) -> u64 {
    (size as u128 * part as u128 / whole.max(1) as u128) as u64
}

fn bytes_scanned(m: &MetricsSet) -> usize {
    m.sum_by_name("bytes_scanned").map_or(0, |v| v.as_usize())
}

fn output_rows(m: &MetricsSet) -> usize {
    m.output_rows().unwrap_or(0)
}

/// `stream`, calling `report` after each batch read and every [`TICK`] until it is
/// dropped. Reported on a clock as well: a batch of wide rows (8192 summaries with
/// embeddings are tens of MB) takes seconds to read, and the scans' counters move
/// meanwhile.
fn reporting<S>(
    stream: S,
    report: impl Fn() + Send + Sync + 'static,
) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
{
    let reporter = Arc::new(Reporter {
        report: Box::new(report),
        stopped: Mutex::new(false),
    });
    let ticker = {
        let reporter = reporter.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            loop {
                every.tick().await;
                reporter.report();
            }
        })
    };
    let ticking = Ticking { reporter, ticker };
    stream.inspect(move |batch| {
        // The stream owns the clock: it stops when the stream is dropped.
        if batch.is_ok() {
            ticking.reporter.report();
        }
    })
}

/// How often the input read so far is reported while batches are being read.
const TICK: Duration = Duration::from_millis(100);

/// A report callback that can be stopped for good.
struct Reporter {
    report: Box<dyn Fn() + Send + Sync>,
    /// Held while reporting: once it is set, no report is running or will run (a bar
    /// cleared after its stream is dropped is not drawn again by a late tick).
    stopped: Mutex<bool>,
}

impl Reporter {
    fn report(&self) {
        let stopped = self.stopped.lock();
        if !*stopped {
            (self.report)();
        }
    }
}

/// The clock of a [`reporting`] stream; stops it, and every report, when dropped.
struct Ticking {
    reporter: Arc<Reporter>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        *self.reporter.stopped.lock() = true;
        self.ticker.abort();
    }
}

/// Rows in the Parquet files of `entry`, from their footers; None when one cannot be read.
async fn parquet_rows(root: &Root, entry: &Entry) -> Option<u64> {
    let mut rows = 0;
    for meta in &entry.files {
        let footer =
            crate::scan::parquet::parquet_footer(root.store(), meta, &root.describe(&entry.file))
                .await
                .ok()?;
        rows += footer.rows;
    }
    Some(rows)
}

/// The sum of `metric` over the scans of the files' rows in `plan` ([`scan_leaves`]).
fn scanned(plan: &Arc<dyn ExecutionPlan>, metric: &dyn Fn(&MetricsSet) -> usize) -> u64 {
    scan_leaves(plan)
        .iter()
        .map(|l| l.metrics().map_or(0, |m| metric(&m) as u64))
        .sum()
}

/// The scans of the files' rows in `plan`: its leaves, except the scans an appended
/// checkpoint makes of its parts' ids before reading them (they read the same bytes a
/// second time).
fn scan_leaves(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let children = plan.children();
    if children.is_empty() {
        return vec![plan.clone()];
    }
    let full_scans = match plan.downcast_ref::<LastWinsExec>() {
        Some(last_wins) => last_wins.file_count(),
        None => children.len(),
    };
    children
        .into_iter()
        .take(full_scans)
        .flat_map(scan_leaves)
        .collect()
}
