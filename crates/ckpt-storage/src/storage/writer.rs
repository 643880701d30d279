//! Atomic writes to any store: one PUT for a small object, a multipart upload for a large
//! one, completed only when the whole object is written and aborted on every failure.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

use super::Root;
use crate::error::{Error, Result};

impl Root {
    /// An atomic writer for `name`: nothing is visible under that name until
    /// [`AtomicWriter::commit`], and the previous content stays until then.
    pub fn writer(&self, name: &str) -> Result<AtomicWriter> {
        let path = self.path(name)?;
        self.prepare_target(name, false)?;
        Ok(AtomicWriter {
            store: self.store.clone(),
            path,
            buffer: VecDeque::new(),
            buffered: 0,
            upload: None,
            parts: futures::stream::FuturesOrdered::new(),
            bytes: 0,
            what: self.describe(name),
            done: false,
        })
    }
}

/// Bytes of each upload part (the last may be shorter), and below which a write is one
/// PUT. Parts are all of one size because some S3-compatible stores require it. A part
/// is made of the written pieces, the last one split without a copy (`Bytes::split_to`):
/// bytes are not copied on their way to the store.
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
    /// Pieces not yet sent (less than a part in all).
    buffer: VecDeque<Bytes>,
    /// Their length.
    buffered: usize,
    /// The upload, once the object outgrew one part.
    upload: Option<Box<dyn MultipartUpload>>,
    parts: futures::stream::FuturesOrdered<object_store::UploadPart>,
    bytes: u64,
    what: String,
    /// Committed or aborted: nothing is left to abort.
    done: bool,
}

impl AtomicWriter {
    /// Appends bytes; a full part is uploaded as soon as there is one.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        assert!(!self.done, "write after commit");
        self.bytes += data.len() as u64;
        self.buffered += data.len();
        self.buffer.push_back(data);
        while self.buffered >= PART_BYTES {
            let part = self.take(PART_BYTES);
            if let Err(e) = self.send_part(part).await {
                self.abort().await;
                return Err(Error::storage(format!("cannot write {}", self.what), e));
            }
        }
        Ok(())
    }

    /// The first `len` bytes written and not sent (at most what there is), as one
    /// payload of the pieces, without a copy.
    fn take(&mut self, len: usize) -> PutPayload {
        let mut pieces = Vec::new();
        let mut need = len.min(self.buffered);
        self.buffered -= need;
        while need > 0 {
            let first = self.buffer.front_mut().expect("buffered counts the pieces");
            if first.len() <= need {
                need -= first.len();
                pieces.extend(self.buffer.pop_front());
            } else {
                pieces.push(first.split_to(need));
                need = 0;
            }
        }
        pieces.into_iter().collect()
    }

    /// Starts the upload if needed and sends one part, waiting while too many are in
    /// flight.
    async fn send_part(&mut self, part: PutPayload) -> object_store::Result<()> {
        use futures::StreamExt;
        if self.upload.is_none() {
            self.upload = Some(self.store.put_multipart(&self.path).await?);
        }
        let upload = self.upload.as_mut().expect("started above");
        self.parts.push_back(upload.put_part(part));
        while self.parts.len() >= PARTS_IN_FLIGHT {
            if let Some(sent) = self.parts.next().await {
                sent?;
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Makes the object visible, replacing the previous one. Returns the bytes written.
    pub async fn commit(mut self) -> Result<u64> {
        use futures::StreamExt;
        let what = format!("cannot complete the write of {}", self.what);
        if self.upload.is_none() {
            // One PUT: the object is replaced whole or not at all.
            let body = self.take(self.buffered);
            self.done = true;
            self.store
                .put(&self.path, body)
                .await
                .map_err(|e| Error::storage(what, e))?;
            return Ok(self.bytes);
        }
        if self.buffered > 0 {
            let last = self.take(self.buffered);
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
                    crate::redact::redact_secrets(&abort.to_string())
                );
                Err(Error::storage(what, e))
            }
        }
    }

    /// Discards everything written; the previous object stays.
    pub async fn abort(&mut self) {
        self.done = true;
        self.buffer.clear();
        self.buffered = 0;
        // Parts in flight are dropped (cancelled) before the upload is aborted.
        self.parts = futures::stream::FuturesOrdered::new();
        if let Some(mut upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            tracing::warn!(
                "aborting the write of {} failed: {}",
                self.what,
                crate::redact::redact_secrets(&e.to_string())
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
