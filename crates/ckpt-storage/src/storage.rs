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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    ClientOptions, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme,
    PutPayload, RetryConfig,
};
use url::Url;

use ckpt_core::format::validate_name;
use ckpt_core::{Error, Result};

/// Options for building a store: object_store config keys (`aws_endpoint`,
/// `aws_allow_http`, `aws_access_key_id`, ...) plus ckpt's own retry settings.
/// Environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) are read first; these override.
#[derive(Clone, Default)]
pub struct StorageOptions {
    pub options: Vec<(String, String)>,
    pub retry: RetryOptions,
}

impl fmt::Debug for StorageOptions {
    // Values may be secrets: show the keys only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageOptions")
            .field(
                "keys",
                &self
                    .options
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .finish()
    }
}

/// Retries of transient faults (5xx, connection resets, timeouts), with exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryOptions {
    pub max_retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    pub init_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(30),
            init_backoff: Duration::from_millis(100),
        }
    }
}

impl StorageOptions {
    /// Parses `KEY=VALUE`; ckpt's own keys are `retry_max`, `retry_timeout` (seconds),
    /// `request_timeout` (seconds), `retry_backoff_ms`.
    pub fn set(&mut self, kv: &str) -> Result<()> {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Error::config(format!(
                "storage option {:?}: expected KEY=VALUE",
                redact_kv(kv)
            ))
        })?;
        let key = k.trim().to_ascii_lowercase();
        let num = |what: &str| -> Result<u64> {
            v.trim().parse().map_err(|_| {
                Error::config(format!(
                    "storage option {key}: {what} must be a whole number"
                ))
            })
        };
        match key.as_str() {
            "retry_max" | "max_retries" => self.retry.max_retries = num("retry_max")? as usize,
            "retry_timeout" => {
                self.retry.retry_timeout = Duration::from_secs(num("retry_timeout")?)
            }
            "request_timeout" | "timeout" => {
                self.retry.request_timeout = Duration::from_secs(num("request_timeout")?)
            }
            "retry_backoff_ms" => {
                self.retry.init_backoff = Duration::from_millis(num("retry_backoff_ms")?)
            }
            _ => self.options.push((key, v.to_owned())),
        }
        Ok(())
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.retry.max_retries,
            retry_timeout: self.retry.retry_timeout,
            backoff: object_store::BackoffConfig {
                init_backoff: self.retry.init_backoff,
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
        }
    }

    /// The user's options after ckpt's timeout defaults, as config keys: applying options
    /// one by one keeps `allow_http` and friends (a whole `ClientOptions` would reset them).
    fn with_timeouts(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "timeout".to_owned(),
                format!("{}ms", self.retry.request_timeout.as_millis()),
            ),
            ("connect_timeout".to_owned(), "10s".to_owned()),
        ];
        v.extend(self.options.iter().cloned());
        v
    }
}

fn redact_kv(kv: &str) -> String {
    match kv.split_once('=') {
        Some((k, _)) => format!("{k}=***"),
        // Without '=' this may be a value given alone (`-S <secret>`): show it only when it
        // looks like an option key.
        None if kv.len() <= 64
            && kv
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            kv.to_owned()
        }
        None => "*** (not shown: it may be a secret)".to_owned(),
    }
}

/// Shows a URL without any password or query (which may hold a signature or token).
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        u.set_query(Some("***"));
    }
    u.to_string()
}

/// In-memory stores by URL authority, so that every `memory://name` in one process is the
/// same store (tests open a root twice and expect to see what they wrote).
fn memory_store(authority: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock();
    stores
        .entry(authority.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

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
    pub name: String,
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
    /// [`Root::prepare_target`]), and readers open roots with [`Root::open_existing`],
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
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Memory => memory_store(url.host_str().unwrap_or("")),
            ObjectStoreScheme::AmazonS3 => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
                for (k, v) in options.with_timeouts() {
                    let key = k.parse().map_err(|_| unknown_key(&k, &shown, "aws_"))?;
                    b = b.with_config(key, v);
                }
                let b = b.with_retry(options.retry_config());
                Arc::new(
                    b.build()
                        .map_err(|e| Error::storage(format!("cannot open {shown}"), e))?,
                )
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut b =
                    object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
                for (k, v) in options.with_timeouts() {
                    let key = k.parse().map_err(|_| unknown_key(&k, &shown, "google_"))?;
                    b = b.with_config(key, v);
                }
                let b = b.with_retry(options.retry_config());
                Arc::new(
                    b.build()
                        .map_err(|e| Error::storage(format!("cannot open {shown}"), e))?,
                )
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut b =
                    object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
                for (k, v) in options.with_timeouts() {
                    let key = k.parse().map_err(|_| unknown_key(&k, &shown, "azure_"))?;
                    b = b.with_config(key, v);
                }
                let b = b.with_retry(options.retry_config());
                Arc::new(
                    b.build()
                        .map_err(|e| Error::storage(format!("cannot open {shown}"), e))?,
                )
            }
            ObjectStoreScheme::Http => {
                let base = format!("{}://{}", url.scheme(), url.authority());
                let mut client = ClientOptions::new();
                for (k, v) in options.with_timeouts() {
                    let key = k.parse().map_err(|_| unknown_key(&k, &shown, ""))?;
                    client = client.with_config(key, v);
                }
                let b = object_store::http::HttpBuilder::new()
                    .with_url(base)
                    .with_retry(options.retry_config())
                    .with_client_options(client);
                Arc::new(
                    b.build()
                        .map_err(|e| Error::storage(format!("cannot open {shown}"), e))?,
                )
            }
            ObjectStoreScheme::Local => unreachable!("handled above"),
            other => {
                return Err(Error::config(format!(
                    "{shown}: the {other:?} store is not supported"
                )));
            }
        };
        let store = match scheme {
            ObjectStoreScheme::AmazonS3
            | ObjectStoreScheme::GoogleCloudStorage
            | ObjectStoreScheme::MicrosoftAzure => {
                Arc::new(CutBodiesRetried { inner: store }) as Arc<dyn ObjectStore>
            }
            _ => store,
        };
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

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

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

    pub fn name_of(&self, path: &Path) -> Option<String> {
        name_under(&self.prefix, path)
    }

    /// Refuses a target whose parent directories are symlinks leading out of a local root.
    fn check_stays_inside(&self, name: &str) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let mut cur = dir.clone();
        for part in name.split('/') {
            cur.push(part);
            if let Ok(meta) = std::fs::symlink_metadata(&cur)
                && meta.file_type().is_symlink()
            {
                let target = cur.canonicalize().unwrap_or_else(|_| cur.clone());
                if !target.starts_with(dir) {
                    return Err(Error::invalid_name(
                        name,
                        format!(
                            "{} is a symlink to {}, outside the root",
                            cur.display(),
                            target.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where a COPY target goes when writes are confined to this root (a sandbox); see
    /// [`Root::resolve_target_within`]. Nothing accepted leaves the root.
    pub fn resolve_target(&self, target: &str) -> Result<String> {
        self.resolve_target_within(target, &[])
    }

    /// Where a COPY target goes when writes are confined to this root and `others` (the
    /// roots of a sandboxed session). A relative path is a name inside this root (so
    /// `COPY summaries TO 'summaries.parquet'` writes beside the source, locally or in the
    /// bucket), checked like every checkpoint name: no `..`, no absolute path, no symlink
    /// out. A URL (`s3://...`, `file:///...`) must lie inside one of the roots and is
    /// checked as the name it has there. On local disk, parent directories are created.
    pub fn resolve_target_within(&self, target: &str, others: &[&Root]) -> Result<String> {
        if target.contains('\0') {
            return Err(Error::invalid_name(target, "contains a NUL character"));
        }
        if let Some(url) = parse_target_url(target) {
            // The parsed URL has its dot segments (`..`, `%2e%2e`) already applied: look at
            // the text as written.
            let path = target.split(['?', '#']).next().unwrap_or(target);
            if path
                .split('/')
                .any(|p| p.to_ascii_lowercase().replace("%2e", ".") == "..")
            {
                return Err(Error::invalid_name(
                    target,
                    "'..' is not allowed in a target",
                ));
            }
            let dir_target = url.path().ends_with('/');
            for root in std::iter::once(self).chain(others.iter().copied()) {
                if let Some(name) = root.name_in(&url) {
                    return root.resolve_name(target, &name, dir_target);
                }
            }
            let roots: Vec<String> = std::iter::once(self)
                .chain(others.iter().copied())
                .map(|r| redact_url(r.url()))
                .collect();
            return Err(Error::invalid_name(
                target,
                format!(
                    "the URL is outside the roots ({}); write inside one of them",
                    roots.join(", ")
                ),
            ));
        }
        if target.starts_with('/') || target.starts_with('~') {
            return Err(Error::invalid_name(
                target,
                "absolute paths would leave the root; give a name relative to it",
            ));
        }
        let name = target.trim_end_matches('/');
        self.resolve_name(target, name, target.ends_with('/'))
    }

    /// Where a COPY target goes when the person at the shell decides (the CLI without
    /// `--sandbox`). A relative path is relative to this root: while it stays inside, it is
    /// a name there, checked like every checkpoint name; with `..` it may lead out of the
    /// root, and that is where it is written. An absolute local path becomes a `file://`
    /// URL; a URL is used as given. Parent directories are created by the write (local
    /// disk); resolving a target outside the root creates nothing.
    pub fn resolve_target_unconfined(&self, target: &str) -> Result<String> {
        if target.contains('\0') {
            return Err(Error::invalid_name(target, "contains a NUL character"));
        }
        if parse_target_url(target).is_some() {
            return Ok(target.to_owned());
        }
        if target.starts_with('~') {
            return Err(Error::invalid_name(
                target,
                "'~' is not expanded here: give the full path (/home/...), or a path relative to the root",
            ));
        }
        let dir_target = target.ends_with('/');
        if target.starts_with('/') {
            let path = resolve_local(std::path::Path::new(target))?;
            if let Some(name) = self
                .local_dir
                .as_ref()
                .and_then(|d| relative_name(&path, d))
            {
                return self.resolve_name(target, &name, dir_target);
            }
            return file_url(target, &path, dir_target);
        }
        // `.` and `..` applied to the path as written, relative to the root.
        let mut inside: Vec<&str> = Vec::new();
        let mut up = 0usize;
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if inside.pop().is_none() {
                        up += 1;
                    }
                }
                p => inside.push(p),
            }
        }
        if up == 0 {
            return self.resolve_name(target, &inside.join("/"), dir_target);
        }
        match &self.local_dir {
            Some(dir) => {
                let mut path = dir.clone();
                for _ in 0..up {
                    path.pop();
                }
                path.extend(&inside);
                file_url(target, &path, dir_target)
            }
            None => {
                if up > self.prefix.parts().count() {
                    return Err(Error::invalid_name(
                        target,
                        format!(
                            "'..' leads above the top of {}",
                            redact_url(&self.store_url())
                        ),
                    ));
                }
                let mut url = self.url.clone();
                {
                    let mut segments = url.path_segments_mut().map_err(|_| {
                        Error::config(format!("{}: not a hierarchical URL", self.display()))
                    })?;
                    segments.pop_if_empty();
                    for _ in 0..up {
                        segments.pop();
                    }
                    segments.extend(&inside);
                    if dir_target {
                        segments.push("");
                    }
                }
                Ok(url.to_string())
            }
        }
    }

    /// A target that is the name `name` inside this root: checked like every checkpoint
    /// name (errors name `target`), parent directories created, as a URL.
    fn resolve_name(&self, target: &str, name: &str, dir_target: bool) -> Result<String> {
        let as_target = |e: Error| match e {
            Error::InvalidName { reason, .. } => Error::invalid_name(target, reason),
            other => other,
        };
        // The rule of every checkpoint name (no hidden `_` names, no glob characters),
        // checked before anything is created.
        ckpt_core::format::validate_checkpoint_name(name).map_err(as_target)?;
        let url = self.url_of(name)?;
        // Parent directories must exist for the local store, and must not be symlinks out.
        self.prepare_target(name, dir_target).map_err(as_target)?;
        Ok(if dir_target {
            format!("{url}/")
        } else {
            url.to_string()
        })
    }

    /// The name a URL has inside this root, when it lies inside (symlinks resolved on
    /// local disk: a link out of the root is not inside).
    fn name_in(&self, url: &Url) -> Option<String> {
        match &self.local_dir {
            Some(dir) => {
                if url.scheme() != "file" {
                    return None;
                }
                let path = resolve_local(&url.to_file_path().ok()?).ok()?;
                relative_name(&path, dir)
            }
            None => {
                if url.scheme() != self.url.scheme()
                    || url.host_str() != self.url.host_str()
                    || url.port_or_known_default() != self.url.port_or_known_default()
                {
                    return None;
                }
                self.name_of(&Path::from_url_path(url.path()).ok()?)
            }
        }
    }

    /// Checks that a write to `name` stays inside the root and, on local disk, creates its
    /// parent directories (or `name` itself when it is a directory target).
    pub fn prepare_target(&self, name: &str, is_dir: bool) -> Result<()> {
        validate_name(name)?;
        self.check_stays_inside(name)?;
        if let Some(dir) = &self.local_dir {
            let d = if is_dir {
                Some(dir.join(name))
            } else {
                std::path::Path::new(name).parent().map(|p| dir.join(p))
            };
            if let Some(d) = d {
                std::fs::create_dir_all(&d)
                    .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
            }
            self.check_stays_inside(name)?;
        }
        Ok(())
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

    /// An atomic writer for `name`: nothing is visible under that name until
    /// [`AtomicWriter::commit`], and the previous content stays until then.
    pub fn writer(&self, name: &str) -> Result<AtomicWriter> {
        let path = self.path(name)?;
        self.prepare_target(name, false)?;
        Ok(AtomicWriter {
            store: self.store.clone(),
            path,
            buffer: Vec::new(),
            upload: None,
            parts: futures::stream::FuturesOrdered::new(),
            bytes: 0,
            what: self.describe(name),
            done: false,
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

/// A COPY target that is a URL (a one-letter scheme is a Windows drive, not a URL).
fn parse_target_url(target: &str) -> Option<Url> {
    Url::parse(target).ok().filter(|u| u.scheme().len() > 1)
}

/// `path` relative to the directory `dir`, as a name (`a/b.parquet`); None when it is not
/// below `dir`, is `dir` itself, or is not UTF-8.
fn relative_name(path: &std::path::Path, dir: &std::path::Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            std::path::Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A local path as a `file://` URL COPY can write to (`dir_target`: with a trailing `/`).
fn file_url(target: &str, path: &std::path::Path, dir_target: bool) -> Result<String> {
    let url = Url::from_file_path(path).map_err(|_| {
        Error::invalid_name(target, format!("{} is not a usable path", path.display()))
    })?;
    let mut s = url.to_string();
    if dir_target && !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
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

/// object_store's URL parsing, plus `memory://name/...`: object_store only knows `memory:///`,
/// while ckpt keeps one in-memory store per name (see [`memory_store`]).
fn parse_scheme(url: &Url) -> std::result::Result<(ObjectStoreScheme, Path), String> {
    if url.scheme() == "memory" {
        let path = Path::from_url_path(url.path()).map_err(|e| e.to_string())?;
        return Ok((ObjectStoreScheme::Memory, path));
    }
    ObjectStoreScheme::parse(url).map_err(|e| e.to_string())
}

/// Whether a request failed in its response body (the connection closed or reset, the
/// body incomplete), by the kind object_store gives its HTTP error.
fn is_cut_short(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Request | HttpErrorKind::Interrupted | HttpErrorKind::Decode
            );
        }
        cur = err.source();
    }
    false
}

/// object_store retries a request until its response starts, and re-reads an object's
/// body that breaks off, but not a listing's body cut short: as transient a fault as a
/// reset connection. Lists again a few times before giving up.
async fn again_if_cut<T, F, Fut>(mut list: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match list().await {
            Err(e @ object_store::Error::Generic { .. }) if attempt < 3 && is_cut_short(&e) => {
                attempt += 1;
                tracing::debug!(
                    "listing again after a cut response ({})",
                    ckpt_core::error::redact_secrets(&e.to_string())
                );
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            res => return res,
        }
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

fn unknown_key(key: &str, shown: &str, prefix: &str) -> Error {
    Error::config(format!(
        "{shown}: unknown storage option {key:?}; use object_store's keys (e.g. {prefix}endpoint, {prefix}region, allow_http) or retry_max, retry_timeout, request_timeout"
    ))
}

/// Local disk: writes are staged beside the target, fsynced and renamed into place
/// (see [`crate::durable`]).
fn local_store() -> Arc<dyn ObjectStore> {
    static LOCAL: OnceLock<Arc<dyn ObjectStore>> = OnceLock::new();
    LOCAL
        .get_or_init(|| Arc::new(crate::durable::DurableLocalFileSystem::new()))
        .clone()
}

/// Bytes of each upload part, and below which a write is one PUT.
const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once: memory stays near 40 MiB whatever the checkpoint's size.
const PARTS_IN_FLIGHT: usize = 4;

/// Writes one object atomically; see [`Root::writer`]. Dropping it without
/// [`commit`](Self::commit) leaves the previous object in place.
///
/// Written over object_store's multipart upload rather than its `BufWriter`, whose
/// completion drops an upload without aborting it when a part failed (the parts then stay
/// on the server, billed, until a lifecycle rule removes them), and reports an upload the
/// server did complete, but whose answer was lost, as failed. Here every failure after an
/// upload started aborts it, and a completion whose answer was lost is checked against
/// the object itself.
pub struct AtomicWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// Bytes not yet sent (less than a part).
    buffer: Vec<u8>,
    /// The upload, once the object outgrew one part.
    upload: Option<Box<dyn MultipartUpload>>,
    parts: futures::stream::FuturesOrdered<object_store::UploadPart>,
    bytes: u64,
    what: String,
    /// Committed or aborted: nothing is left to abort.
    done: bool,
}

impl AtomicWriter {
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        assert!(!self.done, "write after commit");
        self.bytes += data.len() as u64;
        self.buffer.extend_from_slice(&data);
        while self.buffer.len() >= PART_BYTES {
            let rest = self.buffer.split_off(PART_BYTES);
            let part = std::mem::replace(&mut self.buffer, rest);
            if let Err(e) = self.send_part(part).await {
                self.abort().await;
                return Err(Error::storage(format!("cannot write {}", self.what), e));
            }
        }
        Ok(())
    }

    /// Starts the upload if needed and sends one part, waiting while too many are in
    /// flight.
    async fn send_part(&mut self, part: Vec<u8>) -> object_store::Result<()> {
        use futures::StreamExt;
        if self.upload.is_none() {
            self.upload = Some(self.store.put_multipart(&self.path).await?);
        }
        let upload = self.upload.as_mut().expect("started above");
        self.parts
            .push_back(upload.put_part(PutPayload::from(part)));
        while self.parts.len() >= PARTS_IN_FLIGHT {
            if let Some(sent) = self.parts.next().await {
                sent?;
            }
        }
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Makes the object visible, replacing the previous one. Returns the bytes written.
    pub async fn commit(mut self) -> Result<u64> {
        use futures::StreamExt;
        let what = format!("cannot complete the write of {}", self.what);
        if self.upload.is_none() {
            // One PUT: the object is replaced whole or not at all.
            let body = PutPayload::from(std::mem::take(&mut self.buffer));
            self.done = true;
            self.store
                .put(&self.path, body)
                .await
                .map_err(|e| Error::storage(what, e))?;
            return Ok(self.bytes);
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            if let Err(e) = self.send_part(last).await {
                self.abort().await;
                return Err(Error::storage(what, e));
            }
        }
        while let Some(sent) = self.parts.next().await {
            if let Err(e) = sent {
                self.abort().await;
                return Err(Error::storage(what, e));
            }
        }
        let mut upload = self.upload.take().expect("started");
        self.done = true;
        let completed = upload.complete().await;
        let Err(e) = completed else {
            return Ok(self.bytes);
        };
        // Not completed, or completed with its answer lost. An abort tells them apart: an
        // upload the server no longer knows was completed (or, rarely, expired), and the
        // object then says whether it is this one.
        match upload.abort().await {
            Ok(()) => Err(Error::storage(what, e)),
            Err(object_store::Error::NotFound { .. }) => match self.store.head(&self.path).await {
                Ok(meta) if meta.size == self.bytes => {
                    tracing::debug!(
                        "{}: the completion's answer was lost; the object is there whole",
                        self.what
                    );
                    Ok(self.bytes)
                }
                _ => Err(Error::storage(what, e)),
            },
            Err(abort) => {
                tracing::warn!(
                    "aborting the write of {} failed: {}",
                    self.what,
                    ckpt_core::error::redact_secrets(&abort.to_string())
                );
                Err(Error::storage(what, e))
            }
        }
    }

    /// Discards everything written; the previous object stays.
    pub async fn abort(&mut self) {
        self.done = true;
        self.buffer = Vec::new();
        // Parts in flight are dropped (cancelled) before the upload is aborted.
        self.parts = futures::stream::FuturesOrdered::new();
        if let Some(mut upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            tracing::warn!(
                "aborting the write of {} failed: {}",
                self.what,
                ckpt_core::error::redact_secrets(&e.to_string())
            );
        }
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            // An abandoned upload (error or cancellation): abort it so no parts linger.
            self.parts = futures::stream::FuturesOrdered::new();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

/// A cloud store whose multipart-upload creation and listings are tried again when their
/// response body is cut short (see [`again_if_cut`]); everything else is the store's own.
/// Creating another upload is harmless: one never completed is never visible.
///
/// The upload whose creation answer was cut short stays pending on the server: its id,
/// which an abort needs, never arrived, and object_store has no call to list pending
/// uploads. Trying again does not add to that: each cut answer leaves exactly one (so at
/// most four per write), whether or not another is started. Only the bucket's lifecycle
/// rule (`AbortIncompleteMultipartUpload`) removes them; `tests/engine/faults.rs` counts
/// them.
#[derive(Debug)]
struct CutBodiesRetried {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Display for CutBodiesRetried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CutBodiesRetried {
    async fn put_opts(
        &self,
        location: &Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        again_if_cut(|| self.inner.put_multipart_opts(location, opts.clone())).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        again_if_cut(|| self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
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
