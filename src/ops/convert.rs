//! Format migration as DataFusion plans: `ckpt convert` and `ckpt sizes`.
//!
//! A conversion scans the source checkpoint's table (the same table SQL sees) and streams
//! its batches into the sink every save uses, so it runs in bounded memory, keeps row
//! order, and commits atomically.

use std::sync::Arc;

use crate::catalog::{Entry, TableOptions, list_checkpoints, table_for};
use crate::context::{CheckpointSession, SessionOptions};
use crate::format::{FileFormat, WriteOptions, strip_extension};
use crate::kind::CheckpointKind;
use crate::progress::{Meter, execute_metered};
use crate::sink::{WriteStats, write_batches};
use crate::storage::{Root, StorageOptions};
use crate::{Error, Result};

#[derive(Clone, Default)]
/// How `ckpt convert` reads and writes.
pub struct ConvertOptions {
    /// Target format; by default the other one (JSONL → Parquet, Parquet → JSONL), or the
    /// destination file's extension.
    pub to: Option<FileFormat>,
    /// Parquet codec, layout and float32 embeddings of what is written.
    pub write: WriteOptions,
    /// Memory limit, decoding and storage of the session the source is read in.
    pub session: SessionOptions,
    /// Called as batches are read: bytes of the sources consumed of their total size.
    pub progress: Option<ConvertProgress>,
}

/// A progress callback of a conversion (see [`crate::progress`]).
pub type ConvertProgress = crate::progress::ProgressFn;

/// One converted checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The checkpoint's name (`summaries`).
    pub name: String,
    /// The file read, as a path or URL.
    pub source: String,
    /// The file written, as a path or URL.
    pub target: String,
    /// The checkpoint's kind, when it has a known one.
    pub kind: Option<CheckpointKind>,
    /// Rows converted.
    pub rows: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// How long reading and writing it took.
    pub elapsed: std::time::Duration,
    /// Lines dropped under `--on-error skip`: (file, line).
    pub skipped: Vec<(String, crate::jsonl::SkippedLine)>,
}

impl Converted {
    /// bytes_in / bytes_out.
    pub fn ratio(&self) -> f64 {
        if self.bytes_out == 0 {
            0.0
        } else {
            self.bytes_in as f64 / self.bytes_out as f64
        }
    }
}

/// Splits `location` into (root, file) when it names one checkpoint file.
async fn as_file(location: &str, storage: &StorageOptions) -> Result<Option<(Root, String)>> {
    let trimmed = location.trim_end_matches('/');
    let (dir, file) = match trimmed.rsplit_once('/') {
        Some((d, f)) => (
            if d.is_empty() {
                "/".to_owned()
            } else {
                d.to_owned()
            },
            f.to_owned(),
        ),
        None => (".".to_owned(), trimmed.to_owned()),
    };
    if strip_extension(&file).1.is_none() || location.ends_with('/') {
        return Ok(None);
    }
    let root = Root::with_options(&dir, storage)?;
    Ok(Some((root, file)))
}

/// Converts a checkpoint file or a whole root. `dst` is a file (when `src` is one and
/// `dst` has an extension) or a root directory/prefix.
pub async fn convert(src: &str, dst: &str, opts: &ConvertOptions) -> Result<Vec<Converted>> {
    let storage = &opts.session.storage;
    let (src_root, only): (Root, Option<String>) = match as_file(src, storage).await? {
        Some((root, file)) if root.head(&file).await?.is_some() => (root, Some(file)),
        Some((root, file)) => {
            return Err(Error::config(format!(
                "{} does not exist",
                root.describe(&file)
            )));
        }
        // Reading creates nothing: a missing source root is an error, not an empty one.
        None => (Root::open_existing(src, storage)?, None),
    };
    let entries = list_checkpoints(&src_root).await?;
    let selected: Vec<Entry> = match &only {
        Some(file) => entries.into_iter().filter(|e| &e.file == file).collect(),
        None => one_per_name(entries, opts.to),
    };
    if selected.is_empty() {
        return Err(Error::config(format!(
            "no checkpoints found in {}",
            src_root.display()
        )));
    }
    // The destination: a file when converting one file to a name with an extension.
    let dst_file = match (&only, as_file(dst, storage).await?) {
        (Some(_), Some((root, file))) => Some((root, file)),
        _ => None,
    };
    let dst_root = match &dst_file {
        Some((r, _)) => r.clone(),
        None => Root::with_options(dst, storage)?,
    };
    // One partition: the rows are written in the source's order (a Parquet file of several
    // row groups would otherwise be read in pieces and merged as they come). JSONL decoding
    // stays parallel inside its single partition.
    let session_options = SessionOptions {
        target_partitions: Some(1),
        ..opts.session.clone()
    };
    let session =
        CheckpointSession::with_roots(vec![("source".into(), src_root.clone())], session_options)
            .await?;
    // The session's skip log, so the lines dropped under `--on-error skip` are reported.
    let table_opts = TableOptions {
        decode: opts.session.decode,
        skips: session.default_schema().options().skips.clone(),
    };
    // The bar's total: every source's size, known before anything is read.
    let total: u64 = selected.iter().map(Entry::bytes).sum();
    let (mut bytes_before, mut rows_before) = (0u64, 0u64);
    let mut out = Vec::new();
    for entry in selected {
        let target_format = opts
            .to
            .or_else(|| dst_file.as_ref().and_then(|(_, f)| strip_extension(f).1))
            .unwrap_or(match entry.format {
                FileFormat::Jsonl => FileFormat::Parquet,
                FileFormat::Parquet | FileFormat::Hf => FileFormat::Jsonl,
            });
        let target = match &dst_file {
            Some((_, f)) => f.clone(),
            // A dataset is a directory named by the checkpoint name.
            None if target_format == FileFormat::Hf => entry.name.clone(),
            None => format!("{}.{}", entry.name, target_format.extension()),
        };
        // The name rule of every write, before anything is created.
        crate::format::validate_checkpoint_name(&target)?;
        if src_root.url() == dst_root.url() && target == entry.file {
            return Err(Error::config(format!(
                "{} would be converted onto itself; choose another destination",
                src_root.describe(&entry.file)
            )));
        }
        let started = std::time::Instant::now();
        let kind = crate::catalog::resolve_kind(&src_root, &entry).await?;
        let table = table_for(&src_root, &entry, &table_opts).await?;
        let df = session.context().read_table(table)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let meter = opts.progress.as_ref().map(|p| Meter {
            progress: p.clone(),
            checkpoint: entry.name.clone(),
            before: bytes_before,
            total,
            rows_before,
        });
        let stream = execute_metered(df, &src_root, &entry, meter).await?;
        let write = WriteOptions {
            format: Some(target_format),
            ..opts.write
        };
        let WriteStats { rows, bytes } =
            write_batches(&dst_root, &target, kind, &write, schema, stream, None).await?;
        bytes_before += entry.bytes();
        rows_before += rows;
        let skipped = session.take_skipped();
        if !skipped.is_empty() {
            tracing::warn!(checkpoint = %entry.name, skipped = skipped.len(), "lines skipped");
        }
        out.push(Converted {
            name: entry.name.clone(),
            source: src_root.describe(&entry.file),
            target: dst_root.describe(&target),
            kind,
            rows,
            bytes_in: entry.bytes(),
            bytes_out: bytes,
            elapsed: started.elapsed(),
            skipped,
        });
    }
    Ok(out)
}

/// A root may hold a checkpoint in both formats; convert each name once, from the format
/// that is not the target (JSONL when no target is given).
fn one_per_name(entries: Vec<Entry>, to: Option<FileFormat>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for e in entries {
        let source_rank = |x: &Entry| match to {
            Some(t) if x.format == t => 1,
            Some(_) => 0,
            None => (x.format != FileFormat::Jsonl) as u8,
        };
        match out.iter_mut().find(|o| o.name == e.name) {
            Some(o) if source_rank(&e) < source_rank(o) => *o = e,
            Some(_) => {}
            None => out.push(e),
        }
    }
    out
}
