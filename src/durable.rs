//! Local disk with durable atomic replacement.
//!
//! object_store's `LocalFileSystem` already writes to a staging file beside the target
//! (`name#N`, which its listings hide) and renames it into place, but it never calls
//! fsync: after a power cut the renamed file can be empty. A checkpoint tool must not lose
//! the previous checkpoint that way, so writes here stage, fsync the file, rename, and
//! fsync the directory. Everything else is delegated to `LocalFileSystem`.
//!
//! Written by hand because object_store has no durability option and this is the one
//! place the guarantee lives; every local write (typed saves, convert, COPY) passes here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result, UploadPart,
};

#[derive(Debug)]
pub struct DurableLocalFileSystem {
    inner: LocalFileSystem,
}

impl DurableLocalFileSystem {
    pub fn new() -> Self {
        DurableLocalFileSystem {
            inner: LocalFileSystem::new(),
        }
    }
}

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

/// Creates `dest#N` (first free N), creating parent directories as needed.
fn stage(dest: &FsPath) -> Result<(File, PathBuf)> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    for n in 1u64.. {
        let mut p = dest.as_os_str().to_owned();
        p.push(format!("#{n}"));
        let p = PathBuf::from(p);
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&p, e)),
        }
    }
    unreachable!("an unbounded counter finds a free name")
}

/// fsync the staged file, rename it over the destination, fsync the directory. On any
/// failure the staged file is removed: nothing half-written stays behind.
fn commit(file: &File, staged: &FsPath, dest: &FsPath) -> Result<PutResult> {
    let res = (|| {
        file.sync_all().map_err(|e| io_err(staged, e))?;
        std::fs::rename(staged, dest).map_err(|e| io_err(dest, e))?;
        if let Some(dir) = dest.parent() {
            // A directory fsync makes the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(staged);
    }
    res
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
        if !matches!(opts.mode, PutMode::Overwrite) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        blocking(move || {
            let (mut file, staged) = stage(&dest)?;
            for chunk in payload.iter() {
                if let Err(e) = file.write_all(chunk) {
                    let _ = std::fs::remove_file(&staged);
                    return Err(io_err(&staged, e));
                }
            }
            commit(&file, &staged, &dest)
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let dest = self.inner.path_to_filesystem(location)?;
        let (file, staged) = stage(&dest)?;
        Ok(Box::new(DurableUpload {
            state: Arc::new(Mutex::new(Some((file, staged)))),
            dest,
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
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Parts are appended in the order `put_part` is called (the write happens in the call,
/// not in the returned future), which is the order object_store's writers use.
#[derive(Debug)]
struct DurableUpload {
    state: Arc<Mutex<Option<(File, PathBuf)>>>,
    dest: PathBuf,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let res = {
            let mut guard = self.state.lock().expect("upload state");
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
        Box::pin(futures::future::ready(res))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let taken = self.state.lock().expect("upload state").take();
        let Some((file, staged)) = taken else {
            return Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: "upload already finished".into(),
            });
        };
        let dest = self.dest.clone();
        blocking(move || commit(&file, &staged, &dest)).await
    }

    async fn abort(&mut self) -> Result<()> {
        if let Some((_, staged)) = self.state.lock().expect("upload state").take() {
            std::fs::remove_file(&staged).map_err(|e| io_err(&staged, e))?;
        }
        Ok(())
    }
}

impl Drop for DurableUpload {
    fn drop(&mut self) {
        // Dropped without complete or abort (an error or a cancelled task): the staged
        // file is garbage.
        if let Ok(mut guard) = self.state.lock() {
            if let Some((_, staged)) = guard.take() {
                let _ = std::fs::remove_file(staged);
            }
        }
    }
}

/// Bytes read from a file at a time: large reads amortise the hand-off to a blocking thread.
const READ_CHUNK: u64 = 4 << 20;

/// Read buffers a stream keeps for reuse: as many as its reader holds at once, about.
const POOLED_CHUNKS: usize = 8;

/// A full-size read buffer that goes back to its stream's pool when the last `Bytes`
/// pointing into it is dropped: a large file is read through a few buffers, not one fresh
/// (page-faulted, zeroed) allocation per 4 MiB.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: std::sync::Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            if let Ok(mut pool) = pool.lock() {
                if pool.len() < POOLED_CHUNKS {
                    pool.push(std::mem::take(&mut self.buf));
                }
            }
        }
    }
}

fn large_chunks(
    file: File,
    path: PathBuf,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, Result<bytes::Bytes>> {
    use std::io::{Read, Seek, SeekFrom};
    let state = Arc::new(Mutex::new((file, range.start)));
    let pool = Arc::new(Mutex::new(Vec::new()));
    let end = range.end;
    let seek_to = range.start;
    let mut first = true;
    // Fused: object_store polls a stream again after its end (`collect_bytes` of an
    // empty range), which a bare `unfold` answers with a panic.
    Box::pin(futures::StreamExt::fuse(futures::stream::unfold(
        (),
        move |()| {
            let state = state.clone();
            let path = path.clone();
            let pool = pool.clone();
            let seek = std::mem::take(&mut first);
            async move {
                let res = blocking(move || -> Result<Option<bytes::Bytes>> {
                    let mut guard = state.lock().expect("file state");
                    let (file, pos) = &mut *guard;
                    if seek {
                        file.seek(SeekFrom::Start(seek_to))
                            .map_err(|e| io_err(&path, e))?;
                    }
                    if *pos >= end {
                        return Ok(None);
                    }
                    let want = (end - *pos).min(READ_CHUNK) as usize;
                    let mut buf = if want == READ_CHUNK as usize {
                        pool.lock()
                            .expect("buffer pool")
                            .pop()
                            .unwrap_or_else(|| vec![0u8; want])
                    } else {
                        vec![0u8; want]
                    };
                    let mut got = 0;
                    while got < want {
                        match file.read(&mut buf[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(io_err(&path, e)),
                        }
                    }
                    if got == 0 {
                        return Ok(None);
                    }
                    *pos += got as u64;
                    if want == READ_CHUNK as usize {
                        return Ok(Some(bytes::Bytes::from_owner(PooledChunk {
                            buf,
                            len: got,
                            pool: Arc::downgrade(&pool),
                        })));
                    }
                    buf.truncate(got);
                    Ok(Some(bytes::Bytes::from(buf)))
                })
                .await;
                match res {
                    Ok(Some(b)) => Some((Ok(b), ())),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), ())),
                }
            }
        },
    )))
}
