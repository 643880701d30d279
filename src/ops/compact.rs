//! `ckpt compact`: an appended checkpoint's parts merged into its base, atomically (the
//! guarantees: `CheckpointManager::compact`).

use crate::catalog::find_checkpoint;
use crate::format::{Layout, WriteOptions, file_name};
use crate::manager::CompactStats;
use crate::progress::ProgressFn;
use crate::storage::{Root, StorageOptions};
use crate::{CheckpointManager, Error, Result};

use super::append::format_of;

/// How `ckpt compact` writes.
#[derive(Clone, Default)]
pub struct CompactOptions {
    /// The Parquet codec of the new base (the format is the checkpoint's own).
    pub write: WriteOptions,
    /// The Parquet layout of the new base; None keeps the checkpoint's own.
    pub layout: Option<Layout>,
    /// How to reach the root's store.
    pub storage: StorageOptions,
    /// Told the bytes of the checkpoint and its parts read so far.
    pub progress: Option<ProgressFn>,
}

/// What `ckpt compact` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The checkpoint, as a path or URL.
    pub checkpoint: String,
    /// Parts merged, rows and bytes of the new base (no parts: nothing was done).
    pub stats: CompactStats,
}

/// Compacts checkpoint `name` of `root` (which must exist): its base and parts, the last
/// row of each id kept, written as the new base; then the parts are removed.
pub async fn compact(root: &str, name: &str, opts: &CompactOptions) -> Result<Compacted> {
    let root = Root::open_existing(root, &opts.storage)?;
    let format = format_of(&root, name, None).await?;
    let file = file_name(name, format)?;
    if find_checkpoint(&root, &file, format, None).await?.is_none() {
        return Err(Error::config(format!(
            "no checkpoint {name} in {}",
            root.display()
        )));
    }
    let manager = CheckpointManager::new(root.clone(), format)?
        .compression(opts.write.compression)
        .layout(opts.write.layout);
    let stats = manager
        .compact_with(name, opts.layout, opts.progress.clone())
        .await?;
    Ok(Compacted {
        checkpoint: root.describe(&file),
        stats,
    })
}
