//! The parts layout of appended checkpoints: where an append stages and publishes its
//! batch, how parts are named (sorted in the order they were published), listed and
//! removed, and where a checkpoint's fingerprint is recorded.
//!
//! ```text
//! summaries.jsonl                                          the base: a save, or a compaction
//! summaries.jsonl.parts/0001864c2f1a3b40-9e1f....jsonl     one appended batch each
//! summaries.jsonl.parts/_staged-0001864c2f1b0070-....jsonl an append being written (hidden)
//! summaries.jsonl.parts/_fingerprint                       what the batches were computed from
//! ```
//!
//! Only names and objects live here; what the parts *mean* when read (the last row wins)
//! is the engine's (`ckpt::scan::LastWinsExec`, and the module docs of `ckpt::manager`).

use std::time::{SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::{Error, Result};
use ckpt_core::format::FileFormat;

use crate::storage::Root;

/// What the directory of a checkpoint's parts is called: the checkpoint's file name and this.
pub const PARTS_SUFFIX: &str = ".parts";

/// The directory of the parts of checkpoint file `file`: `summaries.jsonl.parts`.
pub fn parts_dir(file: &str) -> String {
    format!("{file}{PARTS_SUFFIX}")
}

/// The checkpoint file (and its format) whose parts a directory holds, if it is one.
pub fn parts_dir_base(dir: &str) -> Option<(&str, FileFormat)> {
    let base = dir.trim_end_matches('/').strip_suffix(PARTS_SUFFIX)?;
    match ckpt_core::format::strip_extension(base) {
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
        Err(e) => Err(e),
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
