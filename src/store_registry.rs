//! Object stores resolved by URL for DataFusion: the roots' stores (ckpt's own, with
//! durable local writes and ETag-pinned reads), and any other URL a query names (a COPY
//! target in another bucket) opened on first use with the session's storage options.
//! Shared by the sessions (`context`) and the workers (`cluster`) above it.

use std::sync::Arc;

use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;

use crate::Error;
use crate::storage::{Root, StorageOptions};

/// Resolves object stores by URL: the roots' stores first, then any other URL (a COPY
/// target in another bucket, say) is opened on first use with the session's options.
#[derive(Debug)]
pub(crate) struct StoreRegistry {
    known: DefaultObjectStoreRegistry,
    options: StorageOptions,
}

impl StoreRegistry {
    pub(crate) fn new(options: StorageOptions) -> Self {
        let known = DefaultObjectStoreRegistry::new();
        // DataFusion's registry starts with a plain `LocalFileSystem` for `file://`; local
        // roots are ckpt's own store (durable writes, reads in large chunks: the plain one
        // reads 8 KiB at a time, a task switch each).
        if let Ok(local) = Root::with_options("/", &options) {
            known.register_store(&local.store_url(), local.store().clone());
        }
        StoreRegistry { known, options }
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(s) = self.known.get_store(url) {
            return Ok(s);
        }
        let root = Root::with_options(url.as_str(), &self.options).map_err(Error::from)?;
        let store = root.store().clone();
        self.known.register_store(&root.store_url(), store.clone());
        Ok(store)
    }
}
