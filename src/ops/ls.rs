//! `ckpt ls`: the checkpoints of a root with kind, format, layout, rows, bytes and parts.
//! Reading only: a root that does not exist is an error, and nothing is created (but the
//! staged files of writers that are gone, see [`describe_root`]).

use object_store::{ObjectMeta, ObjectStoreExt};

use crate::catalog::{
    Entry, FIRST_LINE_MAX, TableOptions, check_stored_columns, display_name, kind_of_first_line,
    kind_of_footer, list_checkpoints, part_count, resolve_kind, table_for,
};
use crate::context::{CheckpointSession, SessionOptions};
use crate::format::FileFormat;
use crate::kind::CheckpointKind;
use crate::layout::detect_layout;
use crate::scan::parquet::parquet_footer;
use crate::storage::{Root, StorageOptions};
use crate::{Error, Result};

/// What `ckpt ls` lists.
#[derive(Debug, Clone, Default)]
pub struct LsOptions {
    /// How to reach the root's store (credentials, endpoint, ...).
    pub storage: StorageOptions,
}

/// A root's checkpoints, as `ckpt ls` shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LsReport {
    /// The root, as a path or a URL without credentials.
    pub root: String,
    /// One per checkpoint, in name order; a checkpoint that does not read has its `error`.
    pub checkpoints: Vec<CheckpointInfo>,
}

impl LsReport {
    /// The checkpoints that could not be read (each with its error).
    pub fn unreadable(&self) -> impl Iterator<Item = &CheckpointInfo> {
        self.checkpoints.iter().filter(|i| i.error.is_some())
    }
}

/// Lists the checkpoints of `location` (a directory or URL; it must exist).
pub async fn ls(location: &str, opts: &LsOptions) -> Result<LsReport> {
    let root = Root::open_existing(location, &opts.storage)?;
    let checkpoints = describe_root(&root).await?;
    Ok(LsReport {
        root: root.display(),
        checkpoints,
    })
}

/// What `ckpt ls` shows of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointInfo {
    /// The checkpoint's name (`summaries`).
    pub name: String,
    /// Its file (or parts directory) in the root.
    pub file: String,
    /// The kind's default name, or null for a checkpoint of no known kind.
    pub kind: Option<String>,
    /// `jsonl` or `parquet`.
    pub format: String,
    /// `native` or `kura` for Parquet of a known kind.
    pub layout: Option<String>,
    /// Null when the checkpoint could not be read (see `error`).
    pub rows: Option<u64>,
    /// Bytes stored, parts included.
    pub bytes: u64,
    /// Appended parts not yet compacted (0 for a checkpoint stored as one file).
    pub parts: usize,
    /// Why the checkpoint could not be read (a damaged Parquet footer, say); the other
    /// checkpoints of the root are listed all the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How many checkpoints [`describe_root`] reads at once: on an object store each costs a
/// request's latency, and a root may hold thousands of files.
const DESCRIBE_CONCURRENCY: usize = 16;

/// Describes every checkpoint of a root: kind, format, rows and bytes. Rows come from
/// the Parquet footer (one ranged read per file, which also gives kind and layout), or
/// from counting the JSONL lines that are not blank (one read of the file, whose first
/// line gives the kind). A checkpoint that cannot be read is listed with its error; only
/// a root that cannot be listed fails. On local disk it first removes the staged files
/// (`name#N`) of writers that are gone.
pub async fn describe_root(root: &Root) -> Result<Vec<CheckpointInfo>> {
    use futures::StreamExt;
    // `ckpt ls` reclaims the disk that killed writers left (see `Root::clean_staged`).
    root.clean_staged().await;
    let entries = list_checkpoints(root).await?;
    // Each read owns its entry and root: futures that borrowed them could not be sent
    // between threads by callers that spawn this (the Python package).
    let reads = entries.iter().cloned().map(|entry| {
        let root = root.clone();
        async move { describe_entry(&root, &entry).await }
    });
    let described: Vec<_> = futures::stream::iter(reads)
        .buffered(DESCRIBE_CONCURRENCY)
        .collect()
        .await;
    Ok(entries
        .iter()
        .zip(described)
        .map(|(entry, described)| {
            let (kind, layout, rows, error) = match described {
                Ok((kind, layout, rows)) => (kind, layout, Some(rows), None),
                Err(e) => (entry.kind, None, None, Some(e.to_string())),
            };
            CheckpointInfo {
                name: entry.name.clone(),
                file: entry.file.clone(),
                kind: kind.map(|k| k.to_string()),
                format: entry.format.to_string(),
                layout,
                rows,
                bytes: entry.bytes(),
                parts: part_count(entry),
                error,
            }
        })
        .collect())
}

/// Kind, layout and rows of one checkpoint.
async fn describe_entry(
    root: &Root,
    entry: &Entry,
) -> Result<(Option<CheckpointKind>, Option<String>, u64)> {
    entry.check_readable()?;
    if part_count(entry) > 0 || entry.format == FileFormat::Hf {
        // A dataset's Arrow streams have no footer that counts their rows: counted by a
        // scan, like an appended checkpoint's.
        let kind = resolve_kind(root, entry).await?;
        return describe_appended(root, entry, kind).await;
    }
    let mut kind = entry.kind;
    let mut rows = 0u64;
    let mut layout = None;
    for (i, meta) in entry.files.iter().enumerate() {
        let display = display_name(root, meta);
        match entry.format {
            FileFormat::Parquet => {
                let footer = parquet_footer(root.store(), meta, &display).await?;
                rows += footer.rows;
                if i == 0 && kind.is_none() {
                    kind = kind_of_footer(&footer);
                }
                if let Some(k) = kind {
                    // What a read checks before its first row, `ls` checks too: a file it
                    // lists as fine is one a query reads.
                    check_stored_columns(k, &footer.schema, &display)?;
                    layout = Some(detect_layout(k, &footer.schema).to_string());
                }
            }
            FileFormat::Hf => unreachable!("datasets are described above"),
            FileFormat::Jsonl => {
                let want_head = i == 0 && kind.is_none();
                let (lines, head) = count_jsonl_rows(root, meta, &display, want_head).await?;
                rows += lines;
                if want_head {
                    kind = kind_of_first_line(&head);
                }
            }
        }
    }
    Ok((kind, layout, rows))
}

/// The lines of a JSONL file that are not blank, in one read; with `want_head`, also its
/// first line (up to [`FIRST_LINE_MAX`] bytes).
async fn count_jsonl_rows(
    root: &Root,
    meta: &ObjectMeta,
    display: &str,
    want_head: bool,
) -> Result<(u64, Vec<u8>)> {
    use futures::StreamExt;
    let cannot_read = |e| Error::storage(format!("cannot read {display}"), e);
    let mut s = root
        .store()
        .get(&meta.location)
        .await
        .map_err(cannot_read)?
        .into_stream();
    let mut rows = 0u64;
    let mut in_line = false;
    let mut head = Vec::new();
    let mut head_done = !want_head;
    // A byte order mark opens the file, as the scan reads it: it is no row (a file holding
    // only one has none). Its bytes may straddle chunks.
    let mut bom_left: &[u8] = b"\xEF\xBB\xBF";
    while let Some(chunk) = s.next().await {
        let mut chunk = chunk.map_err(cannot_read)?;
        while !bom_left.is_empty() && !chunk.is_empty() {
            if chunk[0] == bom_left[0] {
                chunk = chunk.slice(1..);
                bom_left = &bom_left[1..];
            } else {
                // Not a BOM after all: the bytes taken as one so far were a row's.
                if bom_left.len() < 3 {
                    in_line = true;
                }
                bom_left = &[];
            }
        }
        if !head_done {
            match memchr::memchr(b'\n', &chunk) {
                Some(j) => {
                    head.extend_from_slice(&chunk[..j]);
                    head_done = true;
                }
                None => {
                    head.extend_from_slice(&chunk);
                    head_done = head.len() > FIRST_LINE_MAX;
                }
            }
        }
        for b in chunk.iter() {
            match b {
                b'\n' => {
                    if in_line {
                        rows += 1;
                    }
                    in_line = false;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => in_line = true,
            }
        }
    }
    if in_line {
        rows += 1;
    }
    Ok((rows, head))
}

/// Kind, layout and rows of an appended checkpoint: rows as every reader sees them (the
/// last row of each id), counted by DataFusion over its table; the layout of its first
/// file.
async fn describe_appended(
    root: &Root,
    entry: &Entry,
    kind: Option<CheckpointKind>,
) -> Result<(Option<CheckpointKind>, Option<String>, u64)> {
    let layout = match (entry.format, kind, entry.files.first()) {
        (FileFormat::Parquet, Some(k), Some(first)) => {
            let footer = parquet_footer(root.store(), first, &display_name(root, first)).await?;
            Some(detect_layout(k, &footer.schema).to_string())
        }
        _ => None,
    };
    // Counted in a session like every read's, with ckpt's stores and configuration.
    let session = CheckpointSession::with_roots(
        vec![("root".to_owned(), root.clone())],
        SessionOptions::default(),
    )
    .await?;
    let table = table_for(root, entry, &TableOptions::default()).await?;
    let rows = session.context().read_table(table)?.count().await? as u64;
    Ok((kind, layout, rows))
}
