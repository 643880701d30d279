//! Local disk with durable atomic replacement.
//!
//! object_store's `LocalFileSystem` already writes to a staging file beside the target
//! (`name#N`, which its listings hide) and renames it into place, but it never calls
//! fsync: after a power cut the renamed file can be empty. A checkpoint tool must not lose
//! the previous checkpoint that way, so writes here stage, fsync the file, rename, and
//! fsync the directory; a failure of any of the three fails the write (what each leaves
//! is in `commit`). Everything else is delegated to `LocalFileSystem`.
//!
//! Written by hand because object_store has no durability option and this is the one
//! place the guarantee lives; every local write (typed saves, convert, COPY) passes here.
//! The three system calls go through a table of function pointers (`CommitOps`) so that
//! the unit tests below can make each one fail, without a special file system.
//!
//! # Staged files of writers that are gone
//!
//! A writer killed mid-write (SIGKILL, power cut) leaves its `name#N` behind: nothing in
//! the dead process can remove it. Such files are removed by the next write of the same
//! name (`stage` cleans `name#<digits>` beside its target, and so do renames and copies
//! onto a name) and by `ckpt ls` of the root (`clean_staged_tree`). A live writer's file
//! is told from a dead one's by an advisory lock, which the kernel drops when the
//! process dies, however it dies:
//!
//! - **Writer.** It creates `name#N` (`create_new`), takes an exclusive lock on it
//!   (`File::lock`, blocking: a cleaner holds it only for a moment), then checks that the
//!   path still names the file it holds (same device and inode); if not, a cleaner removed
//!   it between create and lock, and the writer takes another `N`. Only then is a byte
//!   written. The lock is held until the file is renamed into place or removed (the `File`
//!   stays open until after the rename), so a staged file with data is locked for as long
//!   as its writer lives.
//! - **Cleaner.** For each regular file `NAME#<digits>` it opens the file and takes
//!   `try_lock`. Locked by someone else: a live writer, left alone. Not lockable (an
//!   error, e.g. a file system without locks): left alone. Lock obtained: the writer is
//!   gone, or is between creating and locking the file. The cleaner then checks, still
//!   holding the lock, that the path names the file it locked (else someone replaced it:
//!   left), and leaves a file that is **empty and younger than [`EMPTY_STAGED_GRACE`]**:
//!   that is the one state a writer between create and lock can be in (it writes only
//!   after locking). Everything else is removed, by path, while the lock is held — no
//!   writer can lock, verify and fill that file meanwhile, and a writer whose file was
//!   removed before its lock notices at the verification above. An empty file of a writer
//!   killed right after creating it is removed once older than the grace.
//! - COPY writes a single-file target through a hidden `.NAME.ckpt-staging-PID-NANOS`
//!   (itself staged as above) that it renames over `NAME`; a COPY killed after that file is
//!   complete leaves it unlocked. The next write of `NAME` removes it once process `PID`
//!   is gone (Linux, through `/proc`; elsewhere it is left).
//! - Symlinks and directories named `NAME#N` are never touched; names with `#` are
//!   refused as checkpoint names, so `NAME#<digits>` is only ever a staged file.
//! - Cleaning never fails a write or a listing: a read-only root, a permission error or a
//!   file that vanished meanwhile is logged (debug) and skipped. What is removed is
//!   reported at debug level (`-vv`).
//! - Writes that object_store's own `LocalFileSystem` would stage unlocked are done here
//!   too: a put that must create (`PutMode::Create`) stages like every other put, and a
//!   copy holds a shared lock on its source while its hard link `to#N` exists (the link
//!   is the same inode, so a cleaner's `try_lock` on it fails).
//! - Locks are advisory `flock`-style locks on local disk. On a file system where the
//!   writer cannot lock (it logs and writes unlocked) and a cleaner can, a cleaner may
//!   remove a live writer's file: that write then fails at its rename, and the previous
//!   checkpoint stays as it was.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result, UploadPart,
};

mod read;
mod staged;

use read::large_chunks;
pub use staged::{EMPTY_STAGED_GRACE, is_staged_name};
pub(crate) use staged::{clean_staged_siblings, clean_staged_tree};

/// object_store's local file system with writes staged, synced and renamed into place.
#[derive(Debug)]
pub struct DurableLocalFileSystem {
    inner: LocalFileSystem,
    ops: &'static CommitOps,
}

impl DurableLocalFileSystem {
    /// A store over the whole local file system (paths are absolute).
    pub fn new() -> Self {
        DurableLocalFileSystem {
            inner: LocalFileSystem::new(),
            ops: &SYSTEM_COMMIT,
        }
    }

    /// The same store committing through other system calls: tests put in ones that fail,
    /// to watch what each step's failure leaves.
    #[cfg(test)]
    fn with_commit_ops(ops: &'static CommitOps) -> Self {
        DurableLocalFileSystem {
            inner: LocalFileSystem::new(),
            ops,
        }
    }
}

/// The system calls of a commit (see `commit`): fsync of the staged file, rename over
/// the destination, fsync of the directory; and the early flushes of a large staged file
/// while it is written (see `DurableUpload`). Plain function pointers, set once per store,
/// because the one thing tests need to change is which call fails, and a commit costs two
/// fsyncs, next to which an indirect call is nothing.
#[derive(Debug)]
struct CommitOps {
    sync_file: fn(&File) -> std::io::Result<()>,
    /// The early flush of a staged file being written (see `DurableUpload`).
    sync_ahead: fn(&File) -> std::io::Result<()>,
    rename: fn(&FsPath, &FsPath) -> std::io::Result<()>,
    sync_dir: fn(&FsPath) -> std::io::Result<()>,
}

/// What every store uses outside tests.
static SYSTEM_COMMIT: CommitOps = CommitOps {
    sync_file: File::sync_all,
    sync_ahead: File::sync_data,
    rename: |from, to| std::fs::rename(from, to),
    sync_dir: fsync_dir,
};

impl Default for DurableLocalFileSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for DurableLocalFileSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableLocalFileSystem")
    }
}

fn io_err(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {source}", path.display()).into(),
    }
}

/// Creates `dest#N` (first free N), creating parent directories as needed, and returns it
/// open and locked (see the module docs); staged files of dead writers of `dest` are
/// removed first.
fn stage(dest: &FsPath) -> Result<(File, PathBuf)> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    clean_staged_siblings(dest);
    for n in 1u64.. {
        let mut p = dest.as_os_str().to_owned();
        p.push(format!("#{n}"));
        let p = PathBuf::from(p);
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => {
                if lock_staged(&f, &p).map_err(|e| io_err(&p, e))? {
                    return Ok((f, p));
                }
                // A cleaner removed it between create and lock: take another name.
                tracing::debug!(
                    "{} was removed before it was locked; staging anew",
                    p.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // The directory was removed meanwhile (a compaction removes a checkpoint's
            // emptied parts directory): make it again and take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n < 100 => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
                }
            }
            Err(e) => return Err(io_err(&p, e)),
        }
    }
    unreachable!("an unbounded counter finds a free name")
}

/// Locks a staged file just created at `path`, before anything is written to it. False
/// when `path` no longer names it: a cleaner removed it before the lock was taken.
fn lock_staged(file: &File, path: &FsPath) -> std::io::Result<bool> {
    if let Err(e) = file.lock() {
        // No locks on this file system: cleaners cannot lock it either, so they leave it.
        tracing::debug!(
            "cannot lock the staged file {}: {e}; writing it unlocked",
            path.display()
        );
        return Ok(true);
    }
    Ok(names_file(path, &file.metadata()?))
}

/// Whether `path` names the file whose metadata (from an open handle) is `held`: same
/// device and inode, symlinks not followed. Without inodes (not Unix), whether it exists.
fn names_file(path: &FsPath, held: &Metadata) -> bool {
    let Ok(now) = std::fs::symlink_metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        now.dev() == held.dev() && now.ino() == held.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = held;
        now.file_type().is_file()
    }
}

/// fsync the staged file, rename it over the destination, fsync the directory.
///
/// - fsync or rename fails: the staged file is removed and the destination is untouched
///   (the previous version, or nothing).
/// - The directory fsync fails: the rename is done, so the new version is in place and
///   readable, but whether it survives a power cut is unknown; that is an error, not a
///   success (a caller told "saved" must be able to rely on it). The staged name is not
///   removed then: it no longer names this write's file, and may already name another
///   writer's.
fn commit(ops: &CommitOps, file: &File, staged: &FsPath, dest: &FsPath) -> Result<PutResult> {
    let renamed = (ops.sync_file)(file)
        .map_err(|e| io_err(staged, e))
        .and_then(|()| (ops.rename)(staged, dest).map_err(|e| io_err(dest, e)));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(staged);
        return Err(e);
    }
    sync_dir(ops, dest)?;
    Ok(PutResult {
        e_tag: None,
        version: None,
    })
}

/// As `commit`, for a put that must not replace an existing file (`PutMode::Create`):
/// the staged file is hard-linked as the destination, which fails if that exists, and
/// then removed (the staged name still names this write's file until then).
fn commit_new(ops: &CommitOps, file: &File, staged: &FsPath, dest: &FsPath) -> Result<PutResult> {
    let linked = (ops.sync_file)(file)
        .map_err(|e| io_err(staged, e))
        .and_then(|()| {
            std::fs::hard_link(staged, dest).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
                    path: dest.display().to_string(),
                    source: Box::new(e),
                },
                _ => io_err(dest, e),
            })
        });
    let _ = std::fs::remove_file(staged);
    linked?;
    sync_dir(ops, dest)?;
    Ok(PutResult {
        e_tag: None,
        version: None,
    })
}

/// A directory fsync makes a rename (or link) in it durable; its failure is an error
/// naming the directory.
fn sync_dir(ops: &CommitOps, dest: &FsPath) -> Result<()> {
    let Some(dir) = dest.parent() else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        FsPath::new(".")
    } else {
        dir
    };
    (ops.sync_dir)(dir).map_err(|e| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!(
            "{}: written, but the directory fsync failed, so the write may not survive a crash: {e}",
            dir.display()
        )
        .into(),
    })
}

/// fsync of a directory. Where directories cannot be synced at all (not Unix; or a file
/// system answering EINVAL, "does not support synchronization") there is nothing to wait
/// for and nothing is lost by skipping it, as PostgreSQL does; every other error counts.
fn fsync_dir(dir: &FsPath) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir)?.sync_all() {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::debug!("{}: directory fsync not supported: {e}", dir.display());
                Ok(())
            }
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Runs file work on a blocking thread, off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?
}

#[async_trait]
impl ObjectStore for DurableLocalFileSystem {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let create = match opts.mode {
            PutMode::Overwrite => false,
            // Staged here too (LocalFileSystem would stage it unlocked), then hard-linked.
            PutMode::Create => true,
            PutMode::Update(_) => return self.inner.put_opts(location, payload, opts).await,
        };
        let dest = self.inner.path_to_filesystem(location)?;
        let ops = self.ops;
        blocking(move || {
            let (mut file, staged) = stage(&dest)?;
            for chunk in payload.iter() {
                if let Err(e) = file.write_all(chunk) {
                    let _ = std::fs::remove_file(&staged);
                    return Err(io_err(&staged, e));
                }
            }
            match create {
                false => commit(ops, &file, &staged, &dest),
                true => commit_new(ops, &file, &staged, &dest),
            }
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let dest = self.inner.path_to_filesystem(location)?;
        let (file, staged) = {
            let dest = dest.clone();
            blocking(move || stage(&dest)).await?
        };
        Ok(Box::new(DurableUpload {
            state: Arc::new(Mutex::new(Some((file, staged)))),
            dest,
            ops: self.ops,
            unsynced: 0,
            syncing: None,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut r = self.inner.get_opts(location, options).await?;
        // LocalFileSystem streams a file in 8 KiB reads, each a hop to a blocking thread:
        // on a checkpoint of hundreds of MB that is most of the time. Read the same open
        // file (one version, even if it is replaced meanwhile) in large chunks instead.
        if let GetResultPayload::File(file, path) = r.payload {
            r.payload = GetResultPayload::Stream(large_chunks(file, path, r.range.clone()));
        }
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        // A write of `to`: dead writers' staged files beside it go. LocalFileSystem copies
        // by hard-linking `from` as `to#N` and renaming that over `to`; the link is the
        // same file as `from`, so a shared lock on `from` keeps cleaners off it meanwhile.
        let src = self.inner.path_to_filesystem(from)?;
        let dst = self.inner.path_to_filesystem(to)?;
        let held = blocking(move || {
            clean_staged_siblings(&dst);
            Ok(File::open(&src)
                .ok()
                .filter(|f| f.try_lock_shared().is_ok()))
        })
        .await?;
        let res = self.inner.copy_opts(from, to, options).await;
        drop(held);
        res
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        // A write of `to` (COPY renames its staged result into place): dead writers'
        // staged files beside it go.
        let dst = self.inner.path_to_filesystem(to)?;
        let synced = dst.clone();
        blocking(move || {
            clean_staged_siblings(&dst);
            Ok(())
        })
        .await?;
        self.inner.rename_opts(from, to, options).await?;
        // Durable like a put: an appended part is published by a rename, and a part
        // acknowledged to its caller must not fall back to its staged name after a crash.
        let ops = self.ops;
        blocking(move || sync_dir(ops, &synced)).await
    }
}

/// Parts are appended in the order `put_part` is called (the write happens in the call,
/// not in the returned future), which is the order object_store's writers use.
///
/// While parts come in, what is written is flushed to disk ahead of the commit
/// ([`SYNC_AHEAD_BYTES`] at a time, on a thread of its own), so that the commit's fsync
/// waits for the last bytes only, not for a whole checkpoint of hundreds of MB. The commit
/// syncs the file as before; an early flush's error fails the write (the kernel reports a
/// write-back error once per open file, and the early flush shares the commit's).
#[derive(Debug)]
struct DurableUpload {
    state: Arc<Mutex<Option<(File, PathBuf)>>>,
    dest: PathBuf,
    ops: &'static CommitOps,
    /// Bytes written since the last early flush started.
    unsynced: usize,
    /// The early flush running, if any.
    syncing: Option<std::thread::JoinHandle<Result<()>>>,
}

/// Bytes written between two early flushes of a staged file (see [`DurableUpload`]).
const SYNC_AHEAD_BYTES: usize = 64 << 20;

impl DurableUpload {
    /// Counts `written` bytes and starts an early flush when enough are unsynced and none
    /// is running; reports the error of the one that ended.
    fn sync_ahead(&mut self, written: usize) -> Result<()> {
        self.unsynced += written;
        if self.unsynced < SYNC_AHEAD_BYTES
            || self.syncing.as_ref().is_some_and(|h| !h.is_finished())
        {
            return Ok(());
        }
        join_sync(self.syncing.take())?;
        let file = match self.state.lock().as_ref() {
            Some((file, staged)) => (
                file.try_clone().map_err(|e| io_err(staged, e))?,
                staged.clone(),
            ),
            None => return Ok(()),
        };
        self.unsynced = 0;
        let sync = self.ops.sync_ahead;
        self.syncing = Some(std::thread::spawn(move || {
            let (file, staged) = file;
            sync(&file).map_err(|e| io_err(&staged, e))
        }));
        Ok(())
    }
}

/// Waits for an early flush, and gives its outcome.
fn join_sync(syncing: Option<std::thread::JoinHandle<Result<()>>>) -> Result<()> {
    match syncing.map(std::thread::JoinHandle::join) {
        None => Ok(()),
        Some(Ok(res)) => res,
        Some(Err(_)) => Err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: "the thread flushing a staged file to disk panicked".into(),
        }),
    }
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let res = {
            let mut guard = self.state.lock();
            match guard.as_mut() {
                Some((file, staged)) => data
                    .iter()
                    .try_for_each(|c| file.write_all(c))
                    .map_err(|e| io_err(staged, e)),
                None => Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: "upload already finished".into(),
                }),
            }
        };
        let res = res.and_then(|()| self.sync_ahead(data.content_length()));
        Box::pin(futures::future::ready(res))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let taken = self.state.lock().take();
        let Some((file, staged)) = taken else {
            return Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: "upload already finished".into(),
            });
        };
        let dest = self.dest.clone();
        let ops = self.ops;
        let syncing = self.syncing.take();
        blocking(move || {
            if let Err(e) = join_sync(syncing) {
                // As a failed commit: the staged file goes, the previous version stays.
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
            commit(ops, &file, &staged, &dest)
        })
        .await
    }

    async fn abort(&mut self) -> Result<()> {
        let taken = self.state.lock().take();
        if let Some((file, staged)) = taken {
            // Removed while its lock is held (the file is closed after): see the module docs.
            let res = std::fs::remove_file(&staged);
            drop(file);
            res.map_err(|e| io_err(&staged, e))?;
        }
        Ok(())
    }
}

impl Drop for DurableUpload {
    fn drop(&mut self) {
        // Dropped without complete or abort (an error or a cancelled task): the staged
        // file is garbage.
        let taken = self.state.lock().take();
        if let Some((file, staged)) = taken {
            let _ = std::fs::remove_file(staged);
            drop(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::read::*;
    use super::staged::*;
    use super::*;
    use object_store::ObjectStoreExt;

    /// A store over `dir` and the object path of `name` in it.
    fn store_and_path(dir: &FsPath, name: &str) -> (DurableLocalFileSystem, Path) {
        let path = Path::from_filesystem_path(dir).unwrap().join(name);
        (DurableLocalFileSystem::new(), path)
    }

    fn plant(dir: &FsPath, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A staged file as a live writer holds it: created, locked, written.
    fn live(dir: &FsPath, name: &str) -> (File, PathBuf) {
        let p = dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.lock().unwrap();
        f.write_all(b"half a checkpoint, still being written")
            .unwrap();
        (f, p)
    }

    fn names(dir: &FsPath) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn make_old(p: &FsPath) {
        let old = SystemTime::now() - EMPTY_STAGED_GRACE - Duration::from_secs(60);
        OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn staged_names() {
        for yes in [
            "summaries.jsonl#1",
            "a#0",
            "x.parquet#123",
            ".s.parquet.ckpt-staging-1-2#4",
        ] {
            assert!(is_staged_name(yes), "{yes}");
        }
        for no in ["summaries.jsonl", "#1", "a#", "a#1x", "a#x", "a#-1", "a#1 "] {
            assert!(!is_staged_name(no), "{no}");
        }
    }

    #[tokio::test]
    async fn a_put_removes_dead_writers_staged_files_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_and_path(dir.path(), "summaries.jsonl");
        store
            .put(&path, PutPayload::from_static(b"old\n"))
            .await
            .unwrap();
        plant(dir.path(), "summaries.jsonl#7", b"half a checkpoint");
        plant(dir.path(), "summaries.jsonl#1", b"half another");
        let empty_old = plant(dir.path(), "summaries.jsonl#2", b"");
        make_old(&empty_old);
        store
            .put(&path, PutPayload::from_static(b"new\n"))
            .await
            .unwrap();
        assert_eq!(names(dir.path()), ["summaries.jsonl"]);
        assert_eq!(
            std::fs::read(dir.path().join("summaries.jsonl")).unwrap(),
            b"new\n"
        );
    }

    #[tokio::test]
    async fn a_multipart_upload_removes_them_too_and_keeps_its_own_locked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_and_path(dir.path(), "summaries.parquet");
        plant(dir.path(), "summaries.parquet#1", b"dead");
        let mut up = store.put_multipart(&path).await.unwrap();
        up.put_part(PutPayload::from_static(b"part one "))
            .await
            .unwrap();
        // The dead one is gone; the upload's own staged file is there, and locked.
        let staged: Vec<String> = names(dir.path());
        assert_eq!(staged.len(), 1, "{staged:?}");
        assert!(is_staged_name(&staged[0]));
        assert!(clean_staged_tree(dir.path()).is_empty());
        // A concurrent write of the same name leaves it too.
        store
            .put(&path, PutPayload::from_static(b"other"))
            .await
            .unwrap();
        assert!(dir.path().join(&staged[0]).exists());
        up.put_part(PutPayload::from_static(b"part two"))
            .await
            .unwrap();
        up.complete().await.unwrap();
        assert_eq!(names(dir.path()), ["summaries.parquet"]);
        assert_eq!(
            std::fs::read(dir.path().join("summaries.parquet")).unwrap(),
            b"part one part two"
        );
    }

    #[tokio::test]
    async fn a_live_writers_staged_file_is_left_by_writes_and_by_cleaning() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_and_path(dir.path(), "summaries.jsonl");
        let (held, p) = live(dir.path(), "summaries.jsonl#1");
        store
            .put(&path, PutPayload::from_static(b"new\n"))
            .await
            .unwrap();
        assert!(p.exists(), "a write removed a live writer's file");
        assert!(clean_staged_tree(dir.path()).is_empty());
        assert!(p.exists(), "cleaning removed a live writer's file");
        // The writer dies (its lock goes with it): the next cleaning removes the file.
        drop(held);
        assert_eq!(clean_staged_tree(dir.path()), std::slice::from_ref(&p));
        assert!(!p.exists());
    }

    #[tokio::test]
    async fn a_write_leaves_staged_files_of_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_and_path(dir.path(), "summaries.jsonl");
        let others = [
            "clusters.jsonl#1",
            "summaries.parquet#2",
            "xsummaries.jsonl#2",
        ];
        // Not a staged checkpoint file: no cleaning ever removes these.
        let not_staged = [
            "summaries.jsonl#x",
            "summaries.jsonl#",
            "summaries.jsonl#1x",
            "summaries.jsonl.bak#1",
            "summaries#1",
            "notes#1",
        ];
        for n in others.iter().chain(&not_staged) {
            plant(dir.path(), n, b"something");
        }
        store
            .put(&path, PutPayload::from_static(b"new\n"))
            .await
            .unwrap();
        let mut want: Vec<&str> = others.iter().chain(&not_staged).copied().collect();
        want.push("summaries.jsonl");
        want.sort();
        assert_eq!(names(dir.path()), want);
        // Cleaning the root takes every staged file, and only those.
        let mut removed = clean_staged_tree(dir.path());
        removed.sort();
        let mut want_removed: Vec<PathBuf> = others.iter().map(|n| dir.path().join(n)).collect();
        want_removed.sort();
        assert_eq!(removed, want_removed);
        let mut left: Vec<&str> = not_staged.to_vec();
        left.push("summaries.jsonl");
        left.sort();
        assert_eq!(names(dir.path()), left);
    }

    #[test]
    fn an_empty_new_staged_file_is_left_until_the_grace_is_over() {
        let dir = tempfile::tempdir().unwrap();
        // As a writer leaves it between creating and locking it.
        let p = plant(dir.path(), "summaries.jsonl#1", b"");
        assert!(clean_staged_tree(dir.path()).is_empty());
        assert!(clean_staged_siblings(&dir.path().join("summaries.jsonl")).is_empty());
        assert!(p.exists());
        make_old(&p);
        assert_eq!(clean_staged_tree(dir.path()), std::slice::from_ref(&p));
    }

    #[test]
    fn a_writer_whose_file_went_before_its_lock_knows_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summaries.jsonl#1");
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .unwrap()
        };
        // Nothing happened between create and lock.
        let f = create();
        assert!(lock_staged(&f, &p).unwrap());
        drop(f);
        std::fs::remove_file(&p).unwrap();
        // A cleaner removed it.
        let f = create();
        std::fs::remove_file(&p).unwrap();
        assert!(!lock_staged(&f, &p).unwrap());
        // ... and another writer staged the same name since.
        let f = create();
        std::fs::remove_file(&p).unwrap();
        let (_other, _) = live(dir.path(), "summaries.jsonl#1");
        assert!(!lock_staged(&f, &p).unwrap());
    }

    #[test]
    fn staging_takes_another_name_while_a_live_writer_holds_one() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("summaries.jsonl");
        let (_held, p1) = live(dir.path(), "summaries.jsonl#1");
        let (f, p) = stage(&dest).unwrap();
        assert_eq!(p, dir.path().join("summaries.jsonl#2"));
        // Locked: a cleaner leaves it.
        assert!(clean_staged_siblings(&dest).is_empty());
        assert!(p.exists() && p1.exists());
        drop(f);
    }

    #[test]
    fn cleaning_follows_what_the_catalog_reads_and_never_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("parts")).unwrap();
        std::fs::create_dir_all(d.join("parts/deeper")).unwrap();
        std::fs::create_dir_all(d.join("_scratch")).unwrap();
        std::fs::create_dir_all(d.join(".hidden")).unwrap();
        std::fs::create_dir_all(d.join("dir#1")).unwrap();
        let removable = [
            plant(d, "summaries.jsonl#3", b"x"),
            plant(d, "parts/part-0.parquet#1", b"x"),
        ];
        // Deeper than the catalog reads, hidden, or not a checkpoint's name.
        let kept = [
            plant(d, "parts/deeper/part-1.parquet#2", b"x"),
            plant(d, "_scratch/a.jsonl#1", b"x"),
            plant(d, ".hidden/a.jsonl#1", b"x"),
            plant(d, "notes#1", b"x"),
        ];
        let target = plant(outside.path(), "victim#1", b"outside the root");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&target, d.join("link.jsonl#1")).unwrap();
            std::os::unix::fs::symlink(outside.path(), d.join("linkdir")).unwrap();
        }
        let mut removed = clean_staged_tree(d);
        removed.sort();
        let mut want = removable.to_vec();
        want.sort();
        assert_eq!(removed, want);
        for k in &kept {
            assert!(k.exists(), "{}", k.display());
        }
        assert!(target.exists());
        assert!(d.join("dir#1").is_dir());
        #[cfg(unix)]
        assert!(std::fs::symlink_metadata(d.join("link.jsonl#1")).is_ok());
    }

    #[tokio::test]
    async fn a_put_that_must_create_stages_locked_and_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_and_path(dir.path(), "summaries.jsonl");
        plant(dir.path(), "summaries.jsonl#4", b"dead");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store
            .put_opts(&path, PutPayload::from_static(b"first\n"), create.clone())
            .await
            .unwrap();
        let again = store
            .put_opts(&path, PutPayload::from_static(b"second\n"), create)
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{again:?}"
        );
        assert_eq!(names(dir.path()), ["summaries.jsonl"]);
        assert_eq!(
            std::fs::read(dir.path().join("summaries.jsonl")).unwrap(),
            b"first\n"
        );
    }

    #[tokio::test]
    async fn copies_and_renames_onto_a_name_clean_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a) = store_and_path(dir.path(), "a.jsonl");
        let (_, b) = store_and_path(dir.path(), "b.jsonl");
        let (_, c) = store_and_path(dir.path(), "c.jsonl");
        store
            .put(&a, PutPayload::from_static(b"a\n"))
            .await
            .unwrap();
        plant(dir.path(), "b.jsonl#1", b"dead");
        store.copy(&a, &b).await.unwrap();
        assert_eq!(names(dir.path()), ["a.jsonl", "b.jsonl"]);
        plant(dir.path(), "c.jsonl#2", b"dead");
        store.rename(&b, &c).await.unwrap();
        assert_eq!(names(dir.path()), ["a.jsonl", "c.jsonl"]);
        assert_eq!(std::fs::read(dir.path().join("c.jsonl")).unwrap(), b"a\n");
    }

    // ---- the commit sequence, with system calls that fail --------------------------------

    fn eio() -> std::io::Error {
        std::io::Error::from_raw_os_error(5)
    }

    static FAILING_FILE_SYNC: CommitOps = CommitOps {
        sync_file: |_| Err(eio()),
        ..SYSTEM_COMMIT
    };
    static FAILING_RENAME: CommitOps = CommitOps {
        rename: |_, _| Err(eio()),
        ..SYSTEM_COMMIT
    };
    static FAILING_DIR_SYNC: CommitOps = CommitOps {
        sync_dir: |_| Err(eio()),
        ..SYSTEM_COMMIT
    };
    static FAILING_EARLY_FLUSH: CommitOps = CommitOps {
        sync_ahead: |_| Err(eio()),
        ..SYSTEM_COMMIT
    };

    /// A multipart upload of `parts` parts of `part_bytes` each (byte `i` of the object is
    /// `i % 251`) over an existing `big.jsonl`, committed through `ops`.
    async fn put_big(
        ops: &'static CommitOps,
        dir: &FsPath,
        parts: usize,
        part_bytes: usize,
    ) -> (Result<PutResult>, Vec<u8>) {
        let store = DurableLocalFileSystem::with_commit_ops(ops);
        plant(dir, "big.jsonl", b"old\n");
        let (_, path) = store_and_path(dir, "big.jsonl");
        let data: Vec<u8> = (0..parts * part_bytes).map(|i| (i % 251) as u8).collect();
        let mut up = store.put_multipart(&path).await.unwrap();
        let mut res = Ok(());
        for part in data.chunks(part_bytes) {
            res = res.and(up.put_part(PutPayload::from(part.to_vec())).await);
        }
        let res = match res {
            Ok(()) => up.complete().await,
            Err(e) => Err(e),
        };
        (res, data)
    }

    #[tokio::test]
    async fn a_large_write_is_flushed_early_and_committed_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Three early flushes' worth, in parts that do not line up with them.
        let (res, data) = put_big(&SYSTEM_COMMIT, dir.path(), 7, 30 << 20).await;
        res.unwrap();
        assert_eq!(names(dir.path()), ["big.jsonl"]);
        assert!(std::fs::read(dir.path().join("big.jsonl")).unwrap() == data);
    }

    #[tokio::test]
    async fn a_failed_early_flush_fails_the_write_and_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let (res, _) = put_big(&FAILING_EARLY_FLUSH, dir.path(), 3, 40 << 20).await;
        let staged = dir.path().join("big.jsonl#1");
        assert_eq!(
            generic_message(res),
            format!("{}: Input/output error (os error 5)", staged.display())
        );
        assert_eq!(names(dir.path()), ["big.jsonl"]);
        assert_eq!(
            std::fs::read(dir.path().join("big.jsonl")).unwrap(),
            b"old\n"
        );
    }

    /// The calls [`RECORDING`] saw, in order; only one test uses it, so no other test's
    /// calls mix in.
    static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn file_name(p: &FsPath) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    static RECORDING: CommitOps = CommitOps {
        sync_file: |f| {
            CALLS
                .lock()
                .push(format!("sync_file {} bytes", f.metadata()?.len()));
            f.sync_all()
        },
        // Writes here are far below an early flush's size.
        sync_ahead: File::sync_data,
        rename: |from, to| {
            CALLS
                .lock()
                .push(format!("rename {} {}", file_name(from), file_name(to)));
            std::fs::rename(from, to)
        },
        sync_dir: |dir| {
            CALLS.lock().push(format!("sync_dir {}", dir.display()));
            fsync_dir(dir)
        },
    };

    /// The message of a failed write, after checking it is object_store's generic error.
    fn generic_message(res: Result<PutResult>) -> String {
        match res {
            Err(object_store::Error::Generic { store, source }) => {
                assert_eq!(store, "LocalFileSystem");
                source.to_string()
            }
            other => panic!("expected a LocalFileSystem error, got {other:?}"),
        }
    }

    /// A put and a multipart upload over an existing file, committed through `ops`:
    /// returns both results; the test checks what they left.
    async fn put_both_ways(ops: &'static CommitOps, dir: &FsPath) -> [Result<PutResult>; 2] {
        let store = DurableLocalFileSystem::with_commit_ops(ops);
        let mut out = Vec::new();
        for name in ["put.jsonl", "multipart.jsonl"] {
            plant(dir, name, b"old\n");
            let (_, path) = store_and_path(dir, name);
            let res = if name == "put.jsonl" {
                store.put(&path, PutPayload::from_static(b"new\n")).await
            } else {
                let mut up = store.put_multipart(&path).await.unwrap();
                up.put_part(PutPayload::from_static(b"ne")).await.unwrap();
                up.put_part(PutPayload::from_static(b"w\n")).await.unwrap();
                up.complete().await
            };
            out.push(res);
        }
        out.try_into().unwrap()
    }

    #[tokio::test]
    async fn a_commit_syncs_the_whole_file_then_renames_then_syncs_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        CALLS.lock().clear();
        for res in put_both_ways(&RECORDING, dir.path()).await {
            res.unwrap();
        }
        let d = dir.path().display();
        assert_eq!(
            *CALLS.lock(),
            [
                "sync_file 4 bytes".to_owned(),
                "rename put.jsonl#1 put.jsonl".to_owned(),
                format!("sync_dir {d}"),
                "sync_file 4 bytes".to_owned(),
                "rename multipart.jsonl#1 multipart.jsonl".to_owned(),
                format!("sync_dir {d}"),
            ]
        );
        assert_eq!(names(dir.path()), ["multipart.jsonl", "put.jsonl"]);
        for name in ["multipart.jsonl", "put.jsonl"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"new\n");
        }
    }

    #[tokio::test]
    async fn a_failed_file_fsync_fails_the_write_and_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        for (res, name) in put_both_ways(&FAILING_FILE_SYNC, dir.path())
            .await
            .into_iter()
            .zip(["put.jsonl", "multipart.jsonl"])
        {
            let msg = generic_message(res);
            let staged = dir.path().join(format!("{name}#1"));
            assert_eq!(
                msg,
                format!("{}: Input/output error (os error 5)", staged.display())
            );
        }
        assert_eq!(names(dir.path()), ["multipart.jsonl", "put.jsonl"]);
        for name in ["multipart.jsonl", "put.jsonl"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"old\n");
        }
    }

    #[tokio::test]
    async fn a_failed_rename_fails_the_write_and_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        for (res, name) in put_both_ways(&FAILING_RENAME, dir.path())
            .await
            .into_iter()
            .zip(["put.jsonl", "multipart.jsonl"])
        {
            let msg = generic_message(res);
            let dest = dir.path().join(name);
            assert_eq!(
                msg,
                format!("{}: Input/output error (os error 5)", dest.display())
            );
        }
        assert_eq!(names(dir.path()), ["multipart.jsonl", "put.jsonl"]);
        for name in ["multipart.jsonl", "put.jsonl"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"old\n");
        }
    }

    #[tokio::test]
    async fn a_failed_directory_fsync_is_an_error_though_the_file_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        for res in put_both_ways(&FAILING_DIR_SYNC, dir.path()).await {
            assert_eq!(
                generic_message(res),
                format!(
                    "{}: written, but the directory fsync failed, so the write may not survive a crash: Input/output error (os error 5)",
                    dir.path().display()
                )
            );
        }
        // The rename was done: the new version is what a reader sees, and nothing staged
        // is left.
        assert_eq!(names(dir.path()), ["multipart.jsonl", "put.jsonl"]);
        for name in ["multipart.jsonl", "put.jsonl"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"new\n");
        }
        // A put that must create fails the same way after its link.
        let store = DurableLocalFileSystem::with_commit_ops(&FAILING_DIR_SYNC);
        let (_, path) = store_and_path(dir.path(), "created.jsonl");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let res = store
            .put_opts(&path, PutPayload::from_static(b"c\n"), opts)
            .await;
        assert!(generic_message(res).contains("the directory fsync failed"));
        assert_eq!(
            names(dir.path()),
            ["created.jsonl", "multipart.jsonl", "put.jsonl"]
        );
    }

    #[tokio::test]
    async fn a_put_that_must_create_keeps_nothing_when_its_fsync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableLocalFileSystem::with_commit_ops(&FAILING_FILE_SYNC);
        let (_, path) = store_and_path(dir.path(), "created.jsonl");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let res = store
            .put_opts(&path, PutPayload::from_static(b"c\n"), opts)
            .await;
        assert_eq!(
            generic_message(res),
            format!(
                "{}: Input/output error (os error 5)",
                dir.path().join("created.jsonl#1").display()
            )
        );
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn the_directory_fsync_of_the_system_succeeds_and_reports_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        fsync_dir(dir.path()).unwrap();
        let gone = dir.path().join("gone");
        assert_eq!(
            fsync_dir(&gone).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn a_write_removes_the_staging_files_of_a_copy_that_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        // No process has id 0 in /proc; this one's is alive.
        plant(dir.path(), ".x.parquet.ckpt-staging-0-123", b"complete");
        let dead_staged = plant(dir.path(), ".x.parquet.ckpt-staging-0-123#1", b"half");
        make_old(&dead_staged);
        let alive = format!(".x.parquet.ckpt-staging-{}-5", std::process::id());
        plant(dir.path(), &alive, b"a live COPY's");
        plant(dir.path(), ".y.parquet.ckpt-staging-0-9", b"another name's");
        let (store, x) = store_and_path(dir.path(), "x.parquet");
        store.put(&x, PutPayload::from_static(b"x")).await.unwrap();
        let mut want = vec![
            alive,
            ".y.parquet.ckpt-staging-0-9".to_owned(),
            "x.parquet".to_owned(),
        ];
        want.sort();
        assert_eq!(names(dir.path()), want);
    }

    /// A file of several read chunks comes back whole and in order, and so does any range
    /// across chunk boundaries (chunks are read ahead, by position, and handed on in order).
    #[tokio::test]
    async fn large_reads_come_back_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let len = 2 * READ_CHUNK as usize + READ_CHUNK as usize / 2 + 17;
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        plant(dir.path(), "big.jsonl", &content);
        let (store, path) = store_and_path(dir.path(), "big.jsonl");
        let whole = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert!(whole[..] == content[..], "the whole file differs");
        let c = READ_CHUNK;
        for range in [
            c - 5..2 * c + 9,
            1..len as u64,
            c..2 * c,
            3..4,
            2 * c + 1..len as u64,
        ] {
            let got = store.get_range(&path, range.clone()).await.unwrap();
            assert!(
                got[..] == content[range.start as usize..range.end as usize],
                "range {range:?} differs"
            );
        }
    }

    /// A file cut short after it was opened (its listed size no longer holds) yields what
    /// it still has and ends, as a sequential read would: no error, no bytes from past
    /// the cut.
    #[tokio::test]
    async fn a_file_cut_short_while_read_ends_where_it_was_cut() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * READ_CHUNK as usize;
        let content: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
        let file = plant(dir.path(), "cut.jsonl", &content);
        let (store, path) = store_and_path(dir.path(), "cut.jsonl");
        let r = store.get(&path).await.unwrap();
        let cut = READ_CHUNK as usize + 1000;
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let mut got = Vec::new();
        let mut stream = r.into_stream();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got.len(), cut);
        assert!(got[..] == content[..cut]);
    }
}
