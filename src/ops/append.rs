//! `ckpt append`: the rows of a JSONL or Parquet file appended to a checkpoint as one
//! new part (the layout and the rule of appended checkpoints: `CheckpointManager::append`).

use crate::catalog::{Entry, TableOptions, find_checkpoint, single_file_table};
use crate::format::WriteOptions;
use crate::format::{FileFormat, strip_extension};
use crate::kind::CheckpointKind;
use crate::progress::ProgressFn;
use crate::storage::Root;
use crate::storage::StorageOptions;
use crate::{Error, Result};

/// How `ckpt append` reads and writes.
#[derive(Clone, Default)]
pub struct AppendOptions {
    /// The Parquet codec and layout of the new part (the format is the checkpoint's own).
    pub write: WriteOptions,
    /// How to reach the stores of the checkpoint and of the input file.
    pub storage: StorageOptions,
    /// Told the bytes of the input file read so far.
    pub progress: Option<ProgressFn>,
}

/// What `ckpt append` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedFile {
    /// The checkpoint appended to, as a path or URL.
    pub checkpoint: String,
    /// The input file.
    pub source: String,
    /// Rows appended.
    pub rows: u64,
    /// Bytes of the new part.
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
pub(crate) async fn format_of(
    root: &Root,
    name: &str,
    fallback: Option<FileFormat>,
) -> Result<FileFormat> {
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
    opts: &AppendOptions,
) -> Result<AppendedFile> {
    let (write, storage, progress) = (&opts.write, &opts.storage, opts.progress.clone());
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
