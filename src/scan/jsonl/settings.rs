//! What every scan of a JSONL table shares, set once where the table is made: where
//! skipped lines go ([`SkipLog`]), how files are named in messages ([`FileNames`]), and
//! the sizes of blocks and reads ([`ReadTuning`]).
//!
//! They sit below the format, the source and the opener, which all carry them, so that
//! none of those has to reach into another for them.

use std::sync::Arc;

use ckpt_core::jsonl::{OnError, SkippedLine};
use object_store::path::Path;
use parking_lot::Mutex;

/// Lines dropped under `--on-error skip`, with the file they came from; shared by every
/// partition of a scan (and every scan of a session) so the caller can report them after
/// the query.
#[derive(Debug, Default, Clone)]
pub struct SkipLog(Arc<Mutex<Vec<(String, SkippedLine)>>>);

impl SkipLog {
    /// The lines skipped so far, by file and line (partitions finish in any order), and
    /// forgets them.
    pub fn take(&self) -> Vec<(String, SkippedLine)> {
        let mut v = std::mem::take(&mut *self.0.lock());
        v.sort_by(|a, b| (&a.0, a.1.line).cmp(&(&b.0, b.1.line)));
        v
    }

    pub(super) fn push(&self, file: &str, lines: Vec<SkippedLine>) {
        if !lines.is_empty() {
            self.0
                .lock()
                .extend(lines.into_iter().map(|l| (file.to_owned(), l)));
        }
    }
}

/// How files are named in messages: relative to the checkpoint root
/// (`summaries.jsonl`, `parts/part-0.jsonl`), or by their store path when outside it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileNames {
    root: Option<Path>,
}

impl FileNames {
    /// Names relative to `root`, the root's prefix in its store.
    pub fn relative_to(root: Path) -> Self {
        FileNames { root: Some(root) }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_ref()
    }

    /// The name of `location` in messages (as `Root::name_of` names it).
    pub fn display(&self, location: &Path) -> String {
        self.root
            .as_ref()
            .and_then(|root| ckpt_storage::storage::name_under(root, location))
            .unwrap_or_else(|| location.to_string())
    }
}

/// `fail` or `skip`, as `--on-error` spells them.
pub(crate) fn on_error_name(on_error: OnError) -> &'static str {
    match on_error {
        OnError::Fail => "fail",
        OnError::Skip => "skip",
    }
}

/// Sizes of blocks and reads: these defaults but in tests, whose tiny ones make a small
/// file cross every boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadTuning {
    /// Bytes of whole lines decoded per block: big enough to amortise the hand-off to a
    /// blocking thread, small enough that the blocks in flight keep memory flat.
    pub(super) block_bytes: usize,
    /// Bytes read past a range's end by its first request, to find the newline ending its
    /// last line without a second request for most lines (a summary with a 384-d
    /// embedding is about 8 KiB). Later windows double, up to [`MAX_WINDOW`].
    pub(super) end_lookahead: u64,
}

/// Blocks are this large at least unless the memory pool is too small for it (then fewer
/// are in flight, and smaller).
pub(super) const MIN_BLOCK_BYTES: usize = 256 << 10;

/// The largest window requested while looking for the newline ending a range.
pub(super) const MAX_WINDOW: u64 = 8 << 20;

impl Default for ReadTuning {
    fn default() -> Self {
        ReadTuning {
            block_bytes: 4 << 20,
            end_lookahead: 64 << 10,
        }
    }
}
