//! Where checkpoints live: a [`Root`] is a directory or bucket prefix behind an
//! `object_store`, built from a path or URL with object_store's own URL parsing and config
//! keys. Local disk is the default; `s3://`, `gs://`, `az://`/`abfss://`, `http(s)://` (read)
//! and `memory://` (tests) work the same way.
//!
//! Every write goes through [`Root::writer`]: a single put for small checkpoints, a
//! multipart upload for large ones, completed only when the whole checkpoint is written
//! and aborted otherwise. So a checkpoint is replaced whole or not at all, on every store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig,
};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::format::validate_name;
use crate::{Error, Result};

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
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .expect("memory store registry");
    stores
        .entry(authority.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
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

    /// A local directory root; created if missing.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Root> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::io(
                format!("cannot create the root directory {}", dir.display()),
                e,
            )
        })?;
        let canon = dir.canonicalize().map_err(|e| {
            Error::io(
                format!("cannot resolve the root directory {}", dir.display()),
                e,
            )
        })?;
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
        // The root URL keeps scheme, host and path only: no credentials, no query.
        let mut base = url.clone();
        let _ = base.set_username("");
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

    /// `scheme://authority`, the key under which DataFusion finds this root's store.
    pub fn store_url(&self) -> Url {
        Url::parse(&format!("{}://{}", self.url.scheme(), self.url.authority())).expect("valid URL")
    }

    /// The store path of a file (or directory) within the root. The name is validated.
    pub fn path(&self, name: &str) -> Result<Path> {
        validate_name(name)?;
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_owned()).collect();
        parts.extend(name.split('/').map(str::to_owned));
        Ok(Path::from_iter(parts))
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
    pub fn name_of(&self, path: &Path) -> Option<String> {
        let rel: Vec<_> = path
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_owned())
            .collect();
        (!rel.is_empty()).then(|| rel.join("/"))
    }

    /// Refuses a target whose parent directories are symlinks leading out of a local root.
    fn check_stays_inside(&self, name: &str) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let mut cur = dir.clone();
        for part in name.split('/') {
            cur.push(part);
            if let Ok(meta) = std::fs::symlink_metadata(&cur) {
                if meta.file_type().is_symlink() {
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
        }
        Ok(())
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

    /// Files directly in the root and the directories beside them (as names ending in `/`).
    /// Temporaries (local staging files, dot files) are never listed.
    pub async fn list(&self) -> Result<(Vec<ObjectMeta>, Vec<String>)> {
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
        // 8 MiB parts, 4 in flight: memory stays near 40 MiB whatever the checkpoint's size.
        let inner =
            BufWriter::with_capacity(self.store.clone(), path, 8 << 20).with_max_concurrency(4);
        Ok(AtomicWriter {
            inner: Some(inner),
            bytes: 0,
            what: self.describe(name),
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

/// object_store's URL parsing, plus `memory://name/...`: object_store only knows `memory:///`,
/// while ckpt keeps one in-memory store per name (see [`memory_store`]).
fn parse_scheme(url: &Url) -> std::result::Result<(ObjectStoreScheme, Path), String> {
    if url.scheme() == "memory" {
        let path = Path::from_url_path(url.path()).map_err(|e| e.to_string())?;
        return Ok((ObjectStoreScheme::Memory, path));
    }
    ObjectStoreScheme::parse(url).map_err(|e| e.to_string())
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
            Err(e @ object_store::Error::Generic { .. })
                if attempt < 3 && e.to_string().contains("response body") =>
            {
                attempt += 1;
                tracing::debug!("listing again after a cut response ({e})");
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

/// Writes one object atomically; see [`Root::writer`]. Dropping it without
/// [`commit`](Self::commit) leaves the previous object in place.
pub struct AtomicWriter {
    inner: Option<BufWriter>,
    bytes: u64,
    what: String,
}

impl AtomicWriter {
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        self.bytes += data.len() as u64;
        let w = self.inner.as_mut().expect("not committed");
        if let Err(e) = w.put(data).await {
            self.abort().await;
            return Err(Error::storage(format!("cannot write {}", self.what), e));
        }
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Makes the object visible, replacing the previous one. Returns the bytes written.
    pub async fn commit(mut self) -> Result<u64> {
        let mut w = self.inner.take().expect("not committed");
        if let Err(e) = w.shutdown().await {
            // The upload was not completed, so nothing became visible; the writer is spent
            // and must not be aborted again (object_store panics on that).
            return Err(Error::io(
                format!("cannot complete the write of {}", self.what),
                e,
            ));
        }
        Ok(self.bytes)
    }

    /// Discards everything written; the previous object stays.
    pub async fn abort(&mut self) {
        if let Some(mut w) = self.inner.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!("aborting the write of {} failed: {e}", self.what);
            }
        }
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if let Some(mut w) = self.inner.take() {
            // An abandoned upload (error or cancellation): abort it so no parts linger.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

/// A cloud store whose multipart-upload creation and listings are tried again when their
/// response body is cut short (see [`again_if_cut`]); everything else is the store's own.
/// Creating another upload is harmless: one never completed is never visible.
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
