//! [`JsonlOpener`], the [`FileOpener`] of one partition of a JSONL scan, and the stream
//! it opens per file (or byte range): the span's lines read from the listed version,
//! cut into blocks, decoded on blocking threads, `in_flight` at once, and handed on in
//! file order with the file's line numbers in errors and skips.
//!
//! This is where a partition's memory (blocks in flight) and metrics (bytes, lines,
//! decode time) are counted; what the bytes are and how they become rows are the
//! `boundary` and `blocks` modules' business.

use std::sync::Arc;

use bytes::Bytes;
use ckpt_core::jsonl::DecodeOptions;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricCategory, MetricType, Time,
};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;

use super::blocks::{blocks, decode_block};
use super::boundary::{LineSpan, PinnedFile};
use super::settings::{FileNames, ReadTuning, SkipLog};
use crate::error::CheckpointError;
use crate::{Error, Result};

/// Opens the files (or byte ranges of files) of one partition.
pub struct JsonlOpener {
    pub(super) reader: Arc<PartitionReader>,
}

impl FileOpener for JsonlOpener {
    fn open(&self, file: PartitionedFile) -> DfResult<FileOpenFuture> {
        let reader = Arc::clone(&self.reader);
        Ok(async move { reader.open(file).await.map_err(DataFusionError::from) }.boxed())
    }
}

/// What one partition needs to read its files.
pub(super) struct PartitionReader {
    pub(super) store: Arc<dyn ObjectStore>,
    /// The file columns decoded (a projection of `full`).
    pub(super) output: SchemaRef,
    /// The kind's schema: every field of a line is validated against it.
    pub(super) full: SchemaRef,
    pub(super) decode: DecodeOptions,
    pub(super) skips: SkipLog,
    pub(super) names: FileNames,
    /// Blocks read and decoding at once.
    pub(super) in_flight: usize,
    /// Bytes of each block already held by the partition's standing reservation (0: none,
    /// blocks are accounted whole).
    pub(super) block_share: usize,
    pub(super) tuning: ReadTuning,
    /// `JsonlScan[partition]` in the session's pool: the bytes of the blocks in flight.
    pub(super) reservation: Arc<MemoryReservation>,
    pub(super) metrics: ScanMetrics,
}

impl PartitionReader {
    /// Starts reading `file`: the first request is made here (a missing file or a file
    /// replaced since the listing fails the open), the rest on a task of its own, which
    /// sends batches in file order through a short channel.
    async fn open(
        self: Arc<Self>,
        file: PartitionedFile,
    ) -> Result<BoxStream<'static, DfResult<RecordBatch>>> {
        let Some(span) = LineSpan::of(&file)? else {
            return Ok(futures::stream::empty().boxed());
        };
        let pinned = PinnedFile {
            store: Arc::clone(&self.store),
            display: self.names.display(&file.object_meta.location).into(),
            meta: file.object_meta,
            bytes_scanned: self.metrics.bytes_scanned.clone(),
        };
        let lines = pinned
            .clone()
            .span_bytes(span, self.tuning.end_lookahead)
            .await?;
        let mut builder = RecordBatchReceiverStreamBuilder::new(Arc::clone(&self.output), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            if let Err(e) = self.decode_span(&pinned, span, lines, &tx).await {
                // Through the channel, behind the batches already sent: the consumer sees
                // the rows before the bad line, then the error.
                let _ = tx.send(Err(e.into())).await;
            }
            Ok(())
        });
        Ok(builder.build().boxed())
    }

    /// Cuts the span's lines into blocks, decodes them on blocking threads (up to
    /// `in_flight` at once), and sends the batches in file order, with line numbers of the
    /// whole file in errors and in the skip log.
    async fn decode_span(
        self: &Arc<Self>,
        file: &PinnedFile,
        span: LineSpan,
        lines: BoxStream<'static, Result<Bytes>>,
        tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    ) -> Result<()> {
        let reader = Arc::clone(self);
        let name = Arc::clone(&file.display);
        let mut decoded = blocks(lines, span.at_file_start(), self.tuning.block_bytes)
            .map(move |block| {
                let reader = Arc::clone(&reader);
                let name = Arc::clone(&name);
                async move {
                    let block = block?;
                    let beyond_share = block.bytes.saturating_sub(reader.block_share);
                    let memory = BlockMemory::hold(&reader.reservation, beyond_share);
                    let decode_time = reader.metrics.decode_time.clone();
                    let (output, full, decode) = (
                        Arc::clone(&reader.output),
                        Arc::clone(&reader.full),
                        reader.decode,
                    );
                    let file = Arc::clone(&name);
                    let decoded = tokio::task::spawn_blocking(move || {
                        let _timer = decode_time.timer();
                        decode_block(output, &full, &file, decode, block)
                    })
                    .await
                    .map_err(|e| Error::internal(format!("decoding {name} failed: {e}")))?;
                    Ok::<_, Error>((decoded, memory))
                }
            })
            .buffered(self.in_flight);
        // Lines of the file before the span (counted only when a message needs them) and
        // lines of the span before the block at hand: block line numbers become file ones.
        let mut lines_before_span = span.at_file_start().then_some(0);
        let mut lines_before_block = 0u64;
        while let Some(next) = decoded.next().await {
            // The block's memory is released once its batches are handed on.
            let (decoded, _memory) = next?;
            let mut block = match decoded {
                Ok(block) => block,
                Err(mut e) => {
                    if let Some(line) = data_error_line(&mut e) {
                        let before = file.lines_before(span, &mut lines_before_span).await?;
                        *line += before + lines_before_block;
                    }
                    return Err(e.into());
                }
            };
            self.metrics.lines.add(block.lines as usize);
            if !block.skipped.is_empty() {
                let before = file.lines_before(span, &mut lines_before_span).await?;
                self.metrics.lines_skipped.add(block.skipped.len());
                for s in &mut block.skipped {
                    s.line += before + lines_before_block;
                }
                self.skips.push(&file.display, block.skipped);
            }
            lines_before_block += block.lines;
            for batch in block.batches {
                if tx.send(Ok(batch)).await.is_err() {
                    return Ok(()); // the consumer is gone (LIMIT reached, query cancelled)
                }
            }
        }
        Ok(())
    }
}

/// The line number of a data error (relative to its block), to be made the file's.
fn data_error_line(e: &mut CheckpointError) -> Option<&mut u64> {
    match e {
        CheckpointError::Data { position, .. } => position.line.as_mut(),
        _ => None,
    }
}

/// Bytes of a block counted in the partition's reservation (beyond its standing share, under
/// a memory limit), from when it enters the in-flight window until its batches are handed
/// on (or the read is dropped).
struct BlockMemory {
    reservation: Arc<MemoryReservation>,
    bytes: usize,
}

impl BlockMemory {
    /// Always granted (`grow`, not `try_grow`): a scan must make progress, one block at
    /// least; the pool sees the memory all the same, so sorts and aggregations spill
    /// sooner.
    fn hold(reservation: &Arc<MemoryReservation>, bytes: usize) -> Self {
        reservation.grow(bytes);
        BlockMemory {
            reservation: Arc::clone(reservation),
            bytes,
        }
    }
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        self.reservation.shrink(self.bytes);
    }
}

/// Per-partition metrics of a scan, beside the ones `DataSourceExec` and its file stream
/// keep (output rows, files opened, file open and scan errors, times).
#[derive(Debug, Clone)]
pub(super) struct ScanMetrics {
    /// Bytes received from the store, the look-ahead past a range's end and the prefix
    /// read to number lines included.
    bytes_scanned: Count,
    /// Lines read, blank ones included.
    lines: Count,
    /// Lines dropped under `--on-error skip`.
    lines_skipped: Count,
    /// Time spent decoding, summed over the blocking threads.
    decode_time: Time,
}

impl ScanMetrics {
    pub(super) fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        ScanMetrics {
            bytes_scanned: MetricBuilder::new(metrics)
                .with_type(MetricType::Summary)
                .with_category(MetricCategory::Bytes)
                .counter("bytes_scanned", partition),
            lines: MetricBuilder::new(metrics)
                .with_category(MetricCategory::Rows)
                .counter("lines", partition),
            lines_skipped: MetricBuilder::new(metrics)
                .with_type(MetricType::Summary)
                .with_category(MetricCategory::Rows)
                .counter("lines_skipped", partition),
            decode_time: MetricBuilder::new(metrics).subset_time("decode_time", partition),
        }
    }
}
