//! A checkpoint root as a DataFusion schema: every checkpoint is a table named by its
//! checkpoint name.
//!
//! - Known kinds (`summaries`, `clusters`, `meta_clusters`, `dimensionality`,
//!   `conversations`, or a file whose columns are one of those) get the kind's declared
//!   schema, in every format and layout, so one query works on JSONL, native Parquet and
//!   Kura-layout Parquet alike.
//! - Other `*.jsonl`/`*.json`/`*.parquet` files and directories of parts are inferred.
//! - A directory holding `state.json` (and `dataset_info.json`) is a Hugging Face dataset
//!   (Kura's `HFDatasetCheckpointManager`), format `hf`, named by the directory; it is read
//!   from exactly the data files `state.json` lists. A directory without `state.json` is an
//!   unfinished save (ckpt writes it last) and is not listed.
//! - When one name exists in several formats, the bare name is the **Parquet** file (typed,
//!   faster), then the JSONL file, then the HF dataset; the others stay reachable by their
//!   file names (`"summaries.jsonl"`, quoted; a dataset as `"summaries/"`, its directory).
//!   Every file is also reachable by its file name.
//! - The listing is read again when a query names a table, so a checkpoint saved after
//!   start-up is visible to the next query.

use object_store::{ObjectMeta, ObjectStoreExt};

use crate::format::{FileFormat, strip_extension};
use crate::kind::{CheckpointKind, kind_of_columns};
use crate::scan::hf::INFO_FILE;
use crate::scan::parquet::{ParquetFooter, parquet_footer};
use crate::storage::Root;
use crate::{Error, Result};

mod appended;
mod schema;
mod table;

pub use appended::{AppendedTable, find_checkpoint, part_count, remove_parts};
pub use schema::CheckpointSchema;
pub use table::{TableOptions, table_for};
pub(crate) use table::{check_stored_columns, single_file_table};

/// One checkpoint found in a root.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The checkpoint name: the file name without extension (`summaries`).
    pub name: String,
    /// The file (or directory, ending in `/`) name within the root.
    pub file: String,
    pub format: FileFormat,
    /// The kind, when the name says it (the contents may tell more: see [`resolve_kind`]).
    pub kind: Option<CheckpointKind>,
    /// The files holding the rows (one, or the parts of a directory).
    pub files: Vec<ObjectMeta>,
    /// Why the checkpoint cannot be read (a symlink loop, a directory that cannot be
    /// listed): it is listed all the same, its error reported by `ckpt ls` and by any
    /// query that names it, while the root's other checkpoints read as usual.
    pub problem: Option<String>,
}

impl Entry {
    /// An entry of `root` that cannot be read: `file` as listed (a directory ends in `/`).
    fn unreadable(root: &Root, file: &str, reason: &str) -> Entry {
        let trimmed = file.trim_end_matches('/');
        let (stem, format) = strip_extension(trimmed);
        Entry {
            name: stem.to_owned(),
            file: file.to_owned(),
            format: format.unwrap_or(FileFormat::Jsonl),
            kind: CheckpointKind::from_name(stem),
            files: Vec::new(),
            problem: Some(format!("cannot read {}: {reason}", root.describe(trimmed))),
        }
    }

    /// The entry's problem as an error, when it has one.
    pub(crate) fn check_readable(&self) -> Result<()> {
        match &self.problem {
            Some(p) => Err(Error::config(p.clone())),
            None => Ok(()),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    pub fn is_dir(&self) -> bool {
        self.file.ends_with('/')
    }
}

/// Lists the checkpoints of a root, sorted by name (then JSONL before Parquet).
///
/// An entry that cannot be read (see [`Root::list_checked`]) is listed with its
/// [`problem`](Entry::problem) when it could be a checkpoint (a directory, or a file with a
/// checkpoint's extension); only a root that cannot be listed fails.
pub async fn list_checkpoints(root: &Root) -> Result<Vec<Entry>> {
    let listing = root.list_checked().await?;
    let (files, dirs) = (listing.files, listing.dirs);
    let mut out = Vec::new();
    for bad in &listing.unreadable {
        if strip_extension(&bad.name).1.is_some() {
            out.push(Entry::unreadable(root, &bad.name, &bad.reason));
        }
    }
    for meta in files {
        let Some(file) = root.name_of(&meta.location) else {
            continue;
        };
        let (stem, Some(format)) = strip_extension(&file) else {
            continue;
        };
        out.push(Entry {
            name: stem.to_owned(),
            kind: CheckpointKind::from_name(stem),
            format,
            file: file.clone(),
            files: vec![meta],
            problem: None,
        });
    }
    for dir in dirs {
        // The parts of an appended checkpoint belong to its entry (made here when it has
        // no base yet): listed after the base, as every reader lists them.
        if let Some((base, format)) = crate::parts::parts_dir_base(&dir) {
            let parts = match crate::parts::list_parts(root, base, format).await {
                Ok(parts) => parts,
                Err(e) => {
                    out.retain(|e| e.file != base);
                    out.push(Entry::unreadable(root, base, &e.to_string()));
                    continue;
                }
            };
            if parts.is_empty() {
                continue;
            }
            match out.iter_mut().find(|e| e.file == base) {
                Some(e) => e.files.extend(parts),
                None => out.push(Entry {
                    name: strip_extension(base).0.to_owned(),
                    kind: CheckpointKind::from_name(strip_extension(base).0),
                    format,
                    file: base.to_owned(),
                    files: parts,
                    problem: None,
                }),
            }
            continue;
        }
        let parts = match root.list_dir(&dir).await {
            Ok(parts) => parts,
            Err(e) => {
                out.push(Entry::unreadable(root, &format!("{dir}/"), &e.to_string()));
                continue;
            }
        };
        let name = dir.trim_end_matches('/').to_owned();
        if parts
            .iter()
            .any(|m| root.name_of(&m.location).as_deref() == Some(&format!("{name}/{INFO_FILE}")))
        {
            // A Hugging Face dataset: its rows are the files `state.json` lists.
            match crate::scan::hf::data_files(root, &name, &parts).await {
                Ok(Some(files)) => out.push(Entry {
                    kind: CheckpointKind::from_name(&name),
                    name: name.clone(),
                    format: FileFormat::Hf,
                    file: format!("{name}/"),
                    files,
                    problem: None,
                }),
                // No state.json yet: a save under way or one that died; not a checkpoint.
                Ok(None) => {}
                Err(e) => {
                    let mut entry = Entry::unreadable(root, &format!("{name}/"), &e.to_string());
                    entry.format = FileFormat::Hf;
                    entry.name = name.clone();
                    out.push(entry);
                }
            }
            continue;
        }
        // A directory is a checkpoint when its files share one checkpoint format.
        let formats: Vec<FileFormat> = parts
            .iter()
            .filter_map(|m| m.location.extension().and_then(FileFormat::from_extension))
            .collect();
        let Some(&format) = formats.first() else {
            continue;
        };
        if formats.iter().any(|f| *f != format) || formats.len() != parts.len() {
            continue;
        }
        // Files named as different kinds (parquet/summaries.parquet, parquet/clusters.parquet)
        // are a root of their own, not one checkpoint in parts.
        let mut kinds: Vec<CheckpointKind> = parts
            .iter()
            .filter_map(|m| m.location.filename().and_then(CheckpointKind::from_name))
            .collect();
        kinds.dedup();
        if kinds.len() > 1 {
            continue;
        }
        let name = dir.trim_end_matches('/').to_owned();
        out.push(Entry {
            kind: CheckpointKind::from_name(strip_extension(&name).0),
            name: strip_extension(&name).0.to_owned(),
            format,
            file: format!("{name}/"),
            files: parts,
            problem: None,
        });
    }
    out.sort_by(|a, b| (&a.name, a.format.extension()).cmp(&(&b.name, b.format.extension())));
    Ok(out)
}

/// The kind of a checkpoint: from its name, else from its columns (Parquet footer or
/// the keys of the first JSONL line).
pub async fn resolve_kind(root: &Root, entry: &Entry) -> Result<Option<CheckpointKind>> {
    if entry.kind.is_some() {
        return Ok(entry.kind);
    }
    let Some(first) = entry.files.first() else {
        return Ok(None);
    };
    let display = display_name(root, first);
    match entry.format {
        FileFormat::Parquet => Ok(kind_of_footer(
            &parquet_footer(root.store(), first, &display).await?,
        )),
        FileFormat::Jsonl => Ok(kind_of_first_line(&first_line(root, first).await?)),
        FileFormat::Hf => crate::scan::hf::kind_of_dataset(root, &entry.files).await,
    }
}

/// The kind a Parquet footer says: ckpt's `ckpt.kind` key, else the columns.
pub(crate) fn kind_of_footer(footer: &ParquetFooter) -> Option<CheckpointKind> {
    if let Some((_, k)) = footer.key_value.iter().find(|(k, _)| k == "ckpt.kind")
        && let Some(kind) = CheckpointKind::from_name(k)
    {
        return Some(kind);
    }
    kind_of_columns(footer.schema.fields().iter().map(|f| f.name().as_str()))
}

/// The kind the keys of a JSONL file's first line say.
pub(crate) fn kind_of_first_line(line: &[u8]) -> Option<CheckpointKind> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let keys: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    kind_of_columns(keys.keys().map(String::as_str))
}

/// A first line longer than this is not read further (its keys then say no kind).
pub(crate) const FIRST_LINE_MAX: usize = 64 << 20;

pub(crate) async fn first_line(root: &Root, meta: &ObjectMeta) -> Result<Vec<u8>> {
    // An empty file has no first line (and stores refuse a read of zero bytes).
    if meta.size == 0 {
        return Ok(Vec::new());
    }
    let mut len = 64 * 1024u64;
    loop {
        let end = len.min(meta.size);
        let bytes = root
            .store()
            .get_range(&meta.location, 0..end)
            .await
            .map_err(|e| Error::storage(format!("cannot read {}", display_name(root, meta)), e))?;
        let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        if let Some(i) = memchr::memchr(b'\n', b) {
            return Ok(b[..i].to_vec());
        }
        if end == meta.size || len > FIRST_LINE_MAX as u64 {
            return Ok(b.to_vec());
        }
        len *= 4;
    }
}

pub(crate) fn display_name(root: &Root, meta: &ObjectMeta) -> String {
    root.name_of(&meta.location)
        .unwrap_or_else(|| meta.location.to_string())
}
