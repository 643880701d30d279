//! Where checkpoints live: a [`Root`] is a directory or bucket prefix behind an
//! `object_store`, built from a path or URL with object_store's own URL parsing and config
//! keys. Local disk is the default; `s3://`, `gs://`, `az://`/`abfss://`, `http(s)://` (read)
//! and `memory://` (tests) work the same way.
//!
//! Every write goes through [`Root::writer`]: a single put for small checkpoints, a
//! multipart upload for large ones, completed only when the whole checkpoint is written
//! and aborted otherwise. So a checkpoint is replaced whole or not at all, on every store.
//! (An upload whose start was answered with a response cut short cannot be aborted, its id
//! never having arrived: see `CutBodiesRetried`.)

pub use listing::{Listing, Unreadable, name_under};
pub use options::{RetryOptions, StorageOptions, redact_url};
pub use writer::AtomicWriter;

mod listing;
mod options;
mod providers;
mod retry;
mod targets;
mod writer;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};
use ckpt_core::format::validate_name;
use providers::{local_store, parse_scheme};

/// A directory or bucket prefix holding checkpoints.
#[derive(Clone)]
pub struct Root {
    /// `scheme://authority/prefix/` with a trailing slash (credentials never stored here).
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The canonical directory, for local roots (used to refuse symlinks that leave it).
    local_dir: Option<std::path::PathBuf>,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root({})", self.display())
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl Root {
    /// A root from a local path or URL, configured from the environment.
    pub fn parse(location: &str) -> Result<Root> {
        Self::with_options(location, &StorageOptions::default())
    }

    /// A local directory root. Nothing is created here: a root that does not exist yet
    /// comes into being with the first write into it ([`Root::writer`],
    /// a COPY target), and readers open roots with [`Root::open_existing`],
    /// which refuses a missing one.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Root> {
        let dir = dir.as_ref();
        let canon = resolve_local(dir)?;
        let mut url = Url::from_directory_path(&canon).map_err(|_| {
            Error::config(format!(
                "{} is not a usable directory path",
                canon.display()
            ))
        })?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let prefix = Path::from_url_path(url.path())
            .map_err(|e| Error::config(format!("{}: {e}", canon.display())))?;
        Ok(Root {
            url,
            store: local_store(),
            prefix,
            local_dir: Some(canon),
        })
    }

    /// A root to read from: [`Root::with_options`], and a local root must be an existing
    /// directory (reading never creates one: `ckpt ls ./typo` fails instead of listing a
    /// new, empty directory). An object-store prefix exists as soon as it holds an object,
    /// so remote roots are not checked here.
    pub fn open_existing(location: &str, options: &StorageOptions) -> Result<Root> {
        let root = Self::with_options(location, options)?;
        root.check_exists_as(&shown_location(location))?;
        Ok(root)
    }

    /// Fails unless a local root's directory exists (remote roots always pass); see
    /// [`Root::open_existing`].
    pub fn check_exists(&self) -> Result<()> {
        self.check_exists_as(&self.display())
    }

    fn check_exists_as(&self, shown: &str) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::config(format!(
                "not a root: {shown} is a file (a root is a directory or URL of checkpoints; \
                 name its directory, or convert the file with `ckpt convert`)"
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::config(format!(
                "no such root: {shown} (a directory or URL of checkpoints)"
            ))),
            Err(e) => Err(Error::io(format!("cannot open the root {shown}"), e)),
        }
    }

    /// A root from a local path or URL, with explicit options over the environment's.
    pub fn with_options(location: &str, options: &StorageOptions) -> Result<Root> {
        let location = location.trim();
        if location.is_empty() {
            return Err(Error::config(
                "the root is empty: give a directory or a URL such as s3://bucket/prefix",
            ));
        }
        let url = match Url::parse(location) {
            // A Windows drive letter parses as a scheme; treat one-letter schemes as paths.
            Ok(u) if u.scheme().len() > 1 => u,
            _ => return Root::local(location),
        };
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| {
                Error::config(format!("{}: not a local file path", redact_url(&url)))
            })?;
            return Root::local(path);
        }
        let shown = redact_url(&url);
        // Builders and the scheme parser see the URL without password, query or fragment:
        // none of them uses those parts, and their errors quote the URL they were given.
        let url = {
            let mut clean = url;
            let _ = clean.set_password(None);
            clean.set_query(None);
            clean.set_fragment(None);
            clean
        };
        let (scheme, _) = parse_scheme(&url).map_err(|e| {
            Error::config(format!(
                "{shown}: {e}; supported: local paths, file://, s3://, gs://, az://, abfss://, http(s)://, memory://"
            ))
        })?;
        let store = providers::build_store(scheme, &url, options, &shown)?;
        Root::over_store(&url, &shown, store)
    }

    /// A root at `url` (`scheme://authority/prefix`) over a store the caller built: one
    /// wrapped to count or throttle requests, say. The URL names the root in messages and
    /// plans (credentials, query and fragment are dropped from it); the store serves every
    /// read and write. Local directories are [`Root::local`].
    pub fn with_store(url: &str, store: Arc<dyn ObjectStore>) -> Result<Root> {
        let base = Url::parse(url.trim())
            .map_err(|e| Error::config(format!("the root URL does not parse ({e})")))?;
        let shown = redact_url(&base);
        if base.scheme() == "file" {
            return Err(Error::config(format!(
                "{shown}: a local directory is opened with Root::local"
            )));
        }
        Root::over_store(&base, &shown, store)
    }

    /// A root at `url` over `store`. The root URL keeps scheme, host and path only (no
    /// credentials, no query), with a trailing slash; `shown` names it in errors.
    fn over_store(url: &Url, shown: &str, store: Arc<dyn ObjectStore>) -> Result<Root> {
        let mut base = url.clone();
        let _ = base.set_password(None);
        let _ = base.set_username("");
        base.set_query(None);
        base.set_fragment(None);
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{path}/"));
        let (_, prefix) =
            parse_scheme(&base).map_err(|e| Error::config(format!("{shown}: {e}")))?;
        Ok(Root {
            url: base,
            store,
            prefix,
            local_dir: None,
        })
    }

    /// The root as a URL with a trailing slash, e.g. `s3://bucket/run1/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// For messages: a local root as its path, a remote one as its URL.
    pub fn display(&self) -> String {
        match &self.local_dir {
            Some(d) => d.display().to_string(),
            None => redact_url(&self.url),
        }
    }

    /// The store that serves the root's reads and writes.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether the root is a local directory.
    pub fn is_local(&self) -> bool {
        self.local_dir.is_some()
    }

    /// The root's directory, for a local root (None for object stores).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// The path of `name` on local disk, for a local root (None for object stores).
    pub fn local_path(&self, name: &str) -> Option<std::path::PathBuf> {
        let dir = self.local_dir.as_ref()?;
        validate_name(name).ok()?;
        Some(dir.join(name))
    }

    /// `scheme://authority`, the key under which DataFusion finds this root's store.
    pub fn store_url(&self) -> Url {
        Url::parse(&format!("{}://{}", self.url.scheme(), self.url.authority())).expect("valid URL")
    }

    /// The store path of a file (or directory) within the root. The name is validated.
    ///
    /// The name is stored as written (`Path::parse`), never percent-encoded: `Path::from`
    /// would store `résumé` as the key (or local file) `r%C3%A9sum%C3%A9`, which listings
    /// then give back under that other name, and which Kura and other tools would not find.
    /// Listings (local and object stores) and DataFusion's table URLs give names back in
    /// this raw form, so what is written is what is listed and read.
    pub fn path(&self, name: &str) -> Result<Path> {
        validate_name(name)?;
        let full = match self.prefix.as_ref() {
            "" => name.to_owned(),
            prefix => format!("{prefix}/{name}"),
        };
        Path::parse(&full).map_err(|e| Error::invalid_name(name, e.to_string()))
    }

    /// The full URL of a file within the root.
    pub fn url_of(&self, name: &str) -> Result<Url> {
        validate_name(name)?;
        // Segment by segment, percent-encoded: `Url::join` would read `%2e%2e` as `..`.
        let mut url = self.url.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|_| {
                Error::config(format!("{}: not a hierarchical URL", self.display()))
            })?;
            segments.pop_if_empty();
            for part in name.split('/') {
                segments.push(part);
            }
        }
        Ok(url)
    }

    /// The name of a store path relative to the root.
    /// The root's prefix in its store (empty for a bucket root).
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The name within the root of a store path; `None` outside it.
    pub fn name_of(&self, path: &Path) -> Option<String> {
        name_under(&self.prefix, path)
    }

    /// Metadata of one file, or None when it does not exist.
    pub async fn head(&self, name: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(name)?;
        match self.store.head(&path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(
                format!("cannot read {}", self.describe(name)),
                e,
            )),
        }
    }

    /// Reads a whole file.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name)?;
        let r = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::storage(format!("cannot read {}", self.describe(name)), e))?;
        r.bytes()
            .await
            .map_err(|e| Error::storage(format!("cannot read {}", self.describe(name)), e))
    }

    /// Deletes a file; deleting one that does not exist is not an error.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        // A directory on the way that is a symlink out of the root would make this delete
        // a file outside it. (The last component may be a symlink: deleting removes the
        // link, not what it points to.)
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.check_stays_inside(parent)?;
        }
        match self.store.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage(
                format!("cannot delete {}", self.describe(name)),
                e,
            )),
        }
    }

    /// Renames file `from` to `to` within the root, replacing `to`: atomic on local disk
    /// (a rename, then a directory fsync); on object stores a server-side copy, then the
    /// delete of `from` (the copy is whole or absent; a crash between the two leaves `from`
    /// as well).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        self.prepare_target(to, false)?;
        self.store.rename(&src, &dst).await.map_err(|e| {
            Error::storage(
                format!(
                    "cannot rename {} to {}",
                    self.describe(from),
                    self.describe(to)
                ),
                e,
            )
        })
    }

    /// `name` as users see it: `./data/summaries.jsonl`, `s3://bucket/x/summaries.jsonl`.
    pub fn describe(&self, name: &str) -> String {
        match &self.local_dir {
            Some(d) => d.join(name).display().to_string(),
            None => format!("{}{name}", redact_url(&self.url)),
        }
    }
}

/// A root's location as given, for messages: a path as typed, a URL without password or
/// query.
fn shown_location(location: &str) -> String {
    let location = location.trim();
    match Url::parse(location) {
        Ok(u) if u.scheme().len() > 1 => redact_url(&u),
        _ => location.to_owned(),
    }
}

/// A local path made absolute without creating anything: the longest existing ancestor
/// is canonicalized (symlinks resolved, as the kernel will), and the part that does not
/// exist yet is appended with `.` and `..` applied to the path as written (none of its
/// components is a symlink: none exists). Creating the directories later yields this
/// very path.
fn resolve_local(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    use std::path::{Component, PathBuf};
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("cannot read the working directory", e))?
            .join(dir)
    };
    let parts: Vec<Component> = abs.components().collect();
    for keep in (1..=parts.len()).rev() {
        let ancestor: PathBuf = parts[..keep].iter().collect();
        match ancestor.canonicalize() {
            Ok(mut out) => {
                for part in &parts[keep..] {
                    match part {
                        Component::Normal(p) => out.push(p),
                        Component::ParentDir => {
                            out.pop();
                        }
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("cannot resolve the directory {}", dir.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::config(format!(
        "cannot resolve the directory {}: none of its ancestors exists",
        dir.display()
    )))
}

// ---- Staged files of writers that are gone ---------------------------------------------

impl Root {
    /// On local disk, removes the staged files (`name#N`) that writers which are gone
    /// (killed mid-write) left in the root and in the directories the catalog reads; a
    /// live writer's file is left (the rule is in [`crate::durable`]). Never fails: what
    /// cannot be removed (a read-only root, say) is logged at debug level. Returns the
    /// paths removed. Object stores have nothing to clean: an unfinished upload is never
    /// visible.
    pub async fn clean_staged(&self) -> Vec<std::path::PathBuf> {
        let Some(dir) = self.local_dir.clone() else {
            return Vec::new();
        };
        tokio::task::spawn_blocking(move || crate::durable::clean_staged_tree(&dir))
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_root_is_created_by_its_first_write_not_by_opening_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = Root::local(tmp.path().join("a/b/../c")).unwrap();
        assert_eq!(root.display(), base.join("a/c").display().to_string());
        assert!(!base.join("a").exists(), "opening created the root");
        let missing = base.join("a/c").display().to_string();
        let err = Root::open_existing(&missing, &StorageOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("no such root: {missing} (a directory or URL of checkpoints)")
        );
        assert!(root.check_exists().is_err());
        assert!(!base.join("a").exists(), "checking created the root");
        // A file is not a root.
        std::fs::write(base.join("f.jsonl"), b"").unwrap();
        let err = Root::open_existing(
            base.join("f.jsonl").to_str().unwrap(),
            &StorageOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is a file"), "{err}");
        // The first write creates the directory, and only it.
        let _writer = root.writer("x.jsonl").unwrap();
        assert!(base.join("a/c").is_dir());
        assert!(!base.join("a/b").exists());
        root.check_exists().unwrap();
    }

    #[test]
    fn copy_targets_sandboxed_and_unconfined() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("root")).unwrap();
        let root = Root::local(base.join("root")).unwrap();
        let inside = root.url().to_string();
        let parent = Url::from_directory_path(&base).unwrap().to_string();
        let confined = |t: &str| root.resolve_target(t);
        let open = |t: &str| root.resolve_target_unconfined(t).unwrap();

        // Names inside the root: the same place either way.
        assert_eq!(
            confined("a/x.parquet").unwrap(),
            format!("{inside}a/x.parquet")
        );
        assert_eq!(open("a/x.parquet"), format!("{inside}a/x.parquet"));
        assert_eq!(open("out/"), format!("{inside}out/"));
        assert_eq!(open("./b/../y.parquet"), format!("{inside}y.parquet"));
        // Still checked as names while inside.
        assert!(root.resolve_target_unconfined("x#1.parquet").is_err());

        // `..` and absolute paths: refused confined, written there unconfined.
        for t in ["../x.parquet", "a/../../x.parquet"] {
            let e = confined(t).unwrap_err().to_string();
            assert!(e.contains("'..'"), "{t}: {e}");
            assert_eq!(open(t), format!("{parent}x.parquet"), "{t}");
        }
        assert_eq!(open("../new/dir/"), format!("{parent}new/dir/"));
        let abs = base.join("abs/deeper/x.parquet");
        let abs_text = abs.to_str().unwrap();
        let e = confined(abs_text).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        assert_eq!(
            open(abs_text),
            Url::from_file_path(&abs).unwrap().to_string()
        );
        assert!(!base.join("abs").exists(), "resolving created directories");
        // An absolute path into the root is a name there.
        let into = base.join("root/z.parquet");
        assert_eq!(open(into.to_str().unwrap()), format!("{inside}z.parquet"));
        // `~` is not expanded, in either mode.
        assert!(confined("~/x.parquet").is_err());
        assert!(root.resolve_target_unconfined("~/x.parquet").is_err());

        // URLs: used as given unconfined; confined, only inside one of the roots.
        let elsewhere = format!("{parent}elsewhere.parquet");
        assert_eq!(open(&elsewhere), elsewhere);
        let e = confined(&elsewhere).unwrap_err().to_string();
        assert!(e.contains("outside the roots"), "{e}");
        assert_eq!(
            confined(&format!("{inside}sub/u.parquet")).unwrap(),
            format!("{inside}sub/u.parquet")
        );
        std::fs::create_dir(base.join("other")).unwrap();
        let other = Root::local(base.join("other")).unwrap();
        let in_other = format!("{}v.parquet", other.url());
        assert!(confined(&in_other).is_err());
        assert_eq!(
            root.resolve_target_within(&in_other, &[&other]).unwrap(),
            in_other
        );
        // A symlink in the root that leads out is not inside.
        std::os::unix::fs::symlink(base.join("other"), base.join("root/link")).unwrap();
        assert!(confined(&format!("{inside}link/w.parquet")).is_err());
        assert!(confined("link/w.parquet").is_err());
    }

    #[test]
    fn copy_targets_on_an_object_store_root() {
        let root = Root::parse("memory://targets/run1").unwrap();
        assert_eq!(
            root.resolve_target_unconfined("../x.parquet").unwrap(),
            "memory://targets/x.parquet"
        );
        assert!(root.resolve_target_unconfined("../../x.parquet").is_err());
        assert!(root.resolve_target("../x.parquet").is_err());
        assert_eq!(
            root.resolve_target("memory://targets/run1/a.parquet")
                .unwrap(),
            "memory://targets/run1/a.parquet"
        );
        for outside in [
            "memory://targets/run2/a.parquet",
            "memory://other/run1/a.parquet",
            "s3://targets/run1/a.parquet",
        ] {
            assert!(root.resolve_target(outside).is_err(), "{outside}");
        }
    }
}
