//! Cloud responses cut short, tried again: object_store retries a request until its
//! response starts, but not a listing's or an upload start's body that breaks off.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

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
pub(super) async fn again_if_cut<T, F, Fut>(mut list: F) -> object_store::Result<T>
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
                    crate::redact::redact_secrets(&e.to_string())
                );
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            res => return res,
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
/// rule (`AbortIncompleteMultipartUpload`) removes them; `tests/engine/faults.rs` counts them.
#[derive(Debug)]
pub(super) struct CutBodiesRetried {
    pub(super) inner: Arc<dyn ObjectStore>,
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
