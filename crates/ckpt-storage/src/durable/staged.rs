//! Staged files of writers that are gone: how a cleaner tells a dead writer's `name#N`
//! from a live one's (the advisory lock; see the parent module's docs) and removes it,
//! beside one target or through a whole root.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, SystemTime};

use super::names_file;

/// How long an empty, unlocked staged file is left alone by cleaners: its writer may have
/// created it and not yet locked it (a matter of microseconds; see the module docs).
pub const EMPTY_STAGED_GRACE: Duration = Duration::from_secs(5);

/// Whether a file name is a staged file's, `BASE#<digits>` with a non-empty base.
pub fn is_staged_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(base, n)| !base.is_empty() && all_digits(n))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Removes the staged files `dest#<digits>` that writers which are gone left beside
/// `dest` (no other name is touched); a live writer's file is left. Never fails: what
/// cannot be checked or removed is logged at debug level. Returns the paths removed.
pub(crate) fn clean_staged_siblings(dest: &FsPath) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name().and_then(OsStr::to_str)) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        FsPath::new(".")
    } else {
        dir
    };
    let mut removed = Vec::new();
    for (entry, is_file, _) in entries(dir) {
        let ours = entry
            .file_name()
            .and_then(OsStr::to_str)
            .and_then(|n| n.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix('#'))
            .is_some_and(all_digits);
        if ours && is_file && clean_one(&entry) {
            removed.push(entry);
        } else if is_file && let Some((pid, staged)) = copy_staging_of(&entry, name) {
            // A hidden COPY staging file of this name: its own staged `#N` is told dead by
            // its lock as above; the complete staging file, which no one locks, by its
            // writer's process being gone.
            let gone = if staged {
                clean_one(&entry)
            } else {
                process_gone(pid) && std::fs::remove_file(&entry).is_ok()
            };
            if gone {
                tracing::debug!("removed {}, left by a COPY that is gone", entry.display());
                removed.push(entry);
            }
        }
    }
    removed
}

/// For a hidden COPY staging file of `name` (`.NAME.ckpt-staging-PID-NANOS`, as the COPY
/// writer names it, or a staged `#N` of one): the writer's process id, and whether it is
/// the staged `#N`.
fn copy_staging_of(entry: &FsPath, name: &str) -> Option<(u32, bool)> {
    let rest = entry
        .file_name()?
        .to_str()?
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix(".ckpt-staging-")?;
    let (rest, staged) = match rest.rsplit_once('#') {
        Some((r, n)) if all_digits(n) => (r, true),
        _ => (rest, false),
    };
    let (pid, nanos) = rest.split_once('-')?;
    (all_digits(pid) && all_digits(nanos)).then_some((pid.parse().ok()?, staged))
}

/// Whether no process `pid` exists on this machine. Only Linux answers (through
/// `/proc`); elsewhere a process is never known to be gone, and its files are left.
fn process_gone(pid: u32) -> bool {
    if cfg!(target_os = "linux") && FsPath::new("/proc/self").exists() {
        !FsPath::new(&format!("/proc/{pid}")).exists()
    } else {
        false
    }
}

/// Removes every staged checkpoint file (`NAME.EXT#<digits>`, EXT a checkpoint format:
/// `jsonl`, `parquet`, ...) that writers which are gone left in a root directory and in its
/// subdirectories one level down (the part directories the catalog reads; names not
/// starting with `.` or `_`); symlinks are never followed, and other files that merely
/// look staged (`notes#1`) are never touched. A live writer's file is left. Never fails
/// (errors are logged at debug level). Returns the paths removed.
pub(crate) fn clean_staged_tree(dir: &FsPath) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut dirs = vec![(dir.to_owned(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        for (entry, is_file, is_dir) in entries(&d) {
            let Some(name) = entry.file_name().and_then(OsStr::to_str) else {
                continue;
            };
            if is_file && is_staged_checkpoint_name(name) {
                if clean_one(&entry) {
                    removed.push(entry);
                }
            } else if is_dir && depth == 0 && !name.starts_with(['.', '_']) && !name.contains('#') {
                dirs.push((entry, depth + 1));
            }
        }
    }
    removed
}

/// A staged name whose base is a checkpoint file: `summaries.jsonl#3`.
fn is_staged_checkpoint_name(name: &str) -> bool {
    is_staged_name(name)
        && name.rsplit_once('#').is_some_and(|(base, _)| {
            let (_, format) = ckpt_core::format::strip_extension(base);
            format.is_some()
        })
}

/// The entries of a directory as (path, is a regular file, is a directory), symlinks
/// being neither; an unreadable directory is logged and has none.
fn entries(dir: &FsPath) -> Vec<(PathBuf, bool, bool)> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::debug!("cannot look for staged files in {}: {e}", dir.display());
            return Vec::new();
        }
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            // `DirEntry::file_type` does not follow symlinks.
            let t = e.file_type().ok()?;
            Some((e.path(), t.is_file(), t.is_dir()))
        })
        .collect()
}

/// Removes one staged file if its writer is gone (the rule is in the module docs).
/// Returns whether it was removed.
fn clean_one(path: &FsPath) -> bool {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("cannot check the staged file {}: {e}; left", path.display());
            return false;
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            tracing::debug!("{} is being written (locked); left", path.display());
            return false;
        }
        Err(TryLockError::Error(e)) => {
            tracing::debug!("cannot lock the staged file {}: {e}; left", path.display());
            return false;
        }
    }
    let held = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!("cannot check the staged file {}: {e}; left", path.display());
            return false;
        }
    };
    // Replaced since it was opened (or a symlink now): not the file this lock is on.
    if !held.is_file() || !names_file(path, &held) {
        return false;
    }
    if held.len() == 0 {
        let age = held
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if age < EMPTY_STAGED_GRACE {
            tracing::debug!(
                "{} is empty and new: its writer may be about to lock it; left",
                path.display()
            );
            return false;
        }
    }
    // Removed while the lock is held: no writer can lock, verify and fill it meanwhile.
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::debug!(
                "removed {} ({} bytes), staged by a writer that is gone",
                path.display(),
                held.len()
            );
            true
        }
        Err(e) => {
            tracing::debug!(
                "cannot remove the staged file {}: {e}; left",
                path.display()
            );
            false
        }
    }
}
