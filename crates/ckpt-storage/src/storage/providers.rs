//! One store per URL scheme, built from the environment and the user's options: S3, GCS
//! and Azure through object_store's builders (one path for all three: the config keys
//! parsed by the builder's own key type, ckpt's timeouts and retries, the cut-response
//! wrapper), HTTP(S) for reading, named in-memory stores for tests, and the durable local
//! file system.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreScheme, RetryConfig};
use parking_lot::Mutex;
use url::Url;

use super::options::StorageOptions;
use super::retry::CutBodiesRetried;
use crate::error::{Error, Result};

/// The store for a URL of `scheme` (not a local one: those are [`local_store`]). `shown`
/// names the root in errors.
pub(super) fn build_store(
    scheme: ObjectStoreScheme,
    url: &Url,
    options: &StorageOptions,
    shown: &str,
) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;
    let cloud = match scheme {
        ObjectStoreScheme::Memory => return Ok(memory_store(url.host_str().unwrap_or(""))),
        ObjectStoreScheme::AmazonS3 => configured(
            AmazonS3Builder::from_env().with_url(url.as_str()),
            options,
            shown,
            "aws_",
            AmazonS3Builder::with_config,
            |b, retry| b.with_retry(retry).build(),
        )?,
        ObjectStoreScheme::GoogleCloudStorage => configured(
            GoogleCloudStorageBuilder::from_env().with_url(url.as_str()),
            options,
            shown,
            "google_",
            GoogleCloudStorageBuilder::with_config,
            |b, retry| b.with_retry(retry).build(),
        )?,
        ObjectStoreScheme::MicrosoftAzure => configured(
            MicrosoftAzureBuilder::from_env().with_url(url.as_str()),
            options,
            shown,
            "azure_",
            MicrosoftAzureBuilder::with_config,
            |b, retry| b.with_retry(retry).build(),
        )?,
        ObjectStoreScheme::Http => {
            let base = format!("{}://{}", url.scheme(), url.authority());
            return configured(
                ClientOptions::new(),
                options,
                shown,
                "",
                ClientOptions::with_config,
                |client, retry| {
                    object_store::http::HttpBuilder::new()
                        .with_url(base)
                        .with_retry(retry)
                        .with_client_options(client)
                        .build()
                },
            );
        }
        ObjectStoreScheme::Local => unreachable!("local roots are opened as directories"),
        other => {
            return Err(Error::config(format!(
                "{shown}: the {other:?} store is not supported"
            )));
        }
    };
    // The cloud stores' listings and upload starts are tried again when cut short.
    Ok(Arc::new(CutBodiesRetried { inner: cloud }))
}

/// A store from `builder` with the user's options after ckpt's timeouts, each key parsed
/// by the builder's own key type `K` (an unknown key is refused, naming the store's key
/// `prefix`), and ckpt's retries.
fn configured<B, K, S>(
    builder: B,
    options: &StorageOptions,
    shown: &str,
    prefix: &str,
    with_config: impl Fn(B, K, String) -> B,
    build: impl FnOnce(B, RetryConfig) -> object_store::Result<S>,
) -> Result<Arc<dyn ObjectStore>>
where
    K: FromStr,
    S: ObjectStore,
{
    let mut b = builder;
    for (k, v) in options.with_timeouts() {
        let key = k.parse().map_err(|_| unknown_key(&k, shown, prefix))?;
        b = with_config(b, key, v);
    }
    let store = build(b, options.retry_config())
        .map_err(|e| Error::storage(format!("cannot open {shown}"), e))?;
    Ok(Arc::new(store))
}

/// In-memory stores by URL authority, so that every `memory://name` in one process is the
/// same store (tests open a root twice and expect to see what they wrote).
pub(super) fn memory_store(authority: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock();
    stores
        .entry(authority.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// object_store's URL parsing, plus `memory://name/...`: object_store only knows `memory:///`,
/// while ckpt keeps one in-memory store per name (see [`memory_store`]).
pub(super) fn parse_scheme(url: &Url) -> std::result::Result<(ObjectStoreScheme, Path), String> {
    if url.scheme() == "memory" {
        let path = Path::from_url_path(url.path()).map_err(|e| e.to_string())?;
        return Ok((ObjectStoreScheme::Memory, path));
    }
    ObjectStoreScheme::parse(url).map_err(|e| e.to_string())
}

fn unknown_key(key: &str, shown: &str, prefix: &str) -> Error {
    Error::config(format!(
        "{shown}: unknown storage option {key:?}; use object_store's keys (e.g. {prefix}endpoint, {prefix}region, allow_http) or retry_max, retry_timeout, request_timeout"
    ))
}

/// Local disk: writes are staged beside the target, fsynced and renamed into place
/// (see [`crate::durable`]).
pub(super) fn local_store() -> Arc<dyn ObjectStore> {
    static LOCAL: OnceLock<Arc<dyn ObjectStore>> = OnceLock::new();
    LOCAL
        .get_or_init(|| Arc::new(crate::durable::DurableLocalFileSystem::new()))
        .clone()
}
