//! What a root holds: its files and directories, with the entries that cannot be read
//! named rather than failing the listing, and the files below a directory.

use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::Root;
use super::retry::again_if_cut;
use crate::error::{Error, Result};
use ckpt_core::format::validate_name;

/// The name of `path` under `prefix` (`summaries.jsonl`, `parts/part-0.jsonl`): how a file
/// of a root is named in messages and listings. None outside the prefix, or for the
/// prefix itself.
pub fn name_under(prefix: &Path, path: &Path) -> Option<String> {
    let rel: Vec<_> = path
        .prefix_match(prefix)?
        .map(|p| p.as_ref().to_owned())
        .collect();
    (!rel.is_empty()).then(|| rel.join("/"))
}

/// What [`Root::list_checked`] finds directly in a root.
#[derive(Debug, Default)]
pub struct Listing {
    /// The files, as the store describes them.
    pub files: Vec<ObjectMeta>,
    /// The names of directories (no trailing `/`).
    pub dirs: Vec<String>,
    /// Entries that cannot be read, with why.
    pub unreadable: Vec<Unreadable>,
}

/// An entry of a root that cannot be read (a symlink loop, a dangling symlink, a name
/// that is not UTF-8), named with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The entry's name in the root.
    pub name: String,
    /// Why it cannot be read.
    pub reason: String,
}

impl Unreadable {
    fn new(name: &str, reason: impl Into<String>) -> Self {
        Unreadable {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

impl Root {
    /// Files directly in the root and the names of the directories beside them.
    /// Temporaries (local staging files, dot files) are never listed, nor are entries that
    /// cannot be read (see [`Root::list_checked`], which names them).
    pub async fn list(&self) -> Result<(Vec<ObjectMeta>, Vec<String>)> {
        let listing = self.list_checked().await?;
        Ok((listing.files, listing.dirs))
    }

    /// [`Root::list`], with the entries that cannot be read (a symlink loop, a dangling
    /// symlink, a name that is not UTF-8) named with their reason instead of failing the
    /// whole listing: one bad entry never hides the others. Only a root that cannot be
    /// listed at all is an error.
    pub async fn list_checked(&self) -> Result<Listing> {
        if let Some(dir) = &self.local_dir {
            return self.list_local(dir.clone()).await;
        }
        let (files, dirs) = self.list_store().await?;
        Ok(Listing {
            files,
            dirs,
            unreadable: Vec::new(),
        })
    }

    /// A local root, entry by entry: object_store's local listing fails as a whole on the
    /// first entry it cannot follow (a symlink loop). Files are then described by the
    /// store itself (`head`), so their versions (ETags) are the ones every read compares.
    async fn list_local(&self, dir: std::path::PathBuf) -> Result<Listing> {
        enum Seen {
            File(String),
            Dir(String),
            Bad(String, String),
        }
        let shown = dir.display().to_string();
        let seen = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Seen>> {
            let entries = match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                r => r?,
            };
            let mut seen = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = match entry.file_name().into_string() {
                    Ok(n) => n,
                    Err(raw) => {
                        let n = raw.to_string_lossy().into_owned();
                        seen.push(Seen::Bad(n, "the name is not UTF-8".to_owned()));
                        continue;
                    }
                };
                if !is_visible(&name) {
                    continue;
                }
                // Followed, as every read follows it.
                match std::fs::metadata(entry.path()) {
                    Ok(m) if m.is_dir() => seen.push(Seen::Dir(name)),
                    Ok(m) if m.is_file() => seen.push(Seen::File(name)),
                    Ok(_) => {} // sockets, fifos, devices: never checkpoints
                    Err(e) => seen.push(Seen::Bad(name, e.to_string())),
                }
            }
            Ok(seen)
        })
        .await
        .map_err(|e| Error::internal(format!("listing {shown} failed: {e}")))?
        .map_err(|e| Error::io(format!("cannot list {shown}"), e))?;
        let mut listing = Listing::default();
        for s in seen {
            match s {
                Seen::Dir(name) => match validate_name(&name) {
                    Ok(()) => listing.dirs.push(name),
                    Err(e) => listing
                        .unreadable
                        .push(Unreadable::new(&name, e.to_string())),
                },
                Seen::File(name) => {
                    let meta = match self.path(&name) {
                        Ok(path) => self.store.head(&path).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match meta {
                        Ok(m) => listing.files.push(m),
                        Err(why) => listing.unreadable.push(Unreadable::new(&name, why)),
                    }
                }
                Seen::Bad(name, why) => listing.unreadable.push(Unreadable::new(&name, why)),
            }
        }
        Ok(listing)
    }

    async fn list_store(&self) -> Result<(Vec<ObjectMeta>, Vec<String>)> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        // (Cut responses are listed again by the cloud stores' wrapper, CutBodiesRetried.)
        let res = match self.store.list_with_delimiter(prefix).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok((vec![], vec![])),
            Err(e) => return Err(Error::storage(format!("cannot list {}", self.display()), e)),
        };
        let files = res
            .objects
            .into_iter()
            .filter(|m| self.name_of(&m.location).is_some_and(|n| is_visible(&n)))
            .collect();
        let dirs = res
            .common_prefixes
            .iter()
            .filter_map(|p| self.name_of(p))
            .filter(|n| is_visible(n))
            .collect();
        Ok((files, dirs))
    }

    /// Every file below a directory of the root, recursively.
    pub async fn list_dir(&self, dir: &str) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        let path = self.path(dir)?;
        let mut v: Vec<ObjectMeta> = again_if_cut(|| self.store.list(Some(&path)).try_collect())
            .await
            .map_err(|e| Error::storage(format!("cannot list {}", self.describe(dir)), e))?;
        v.retain(|m| m.location.filename().is_some_and(is_visible));
        v.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(v)
    }
}

fn is_visible(name: &str) -> bool {
    let last = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(name);
    !last.starts_with('.') && !last.starts_with('_') && !last.contains('#')
}
