//! The engine's error: one of the layers below ([`CheckpointError`], the codec's: data,
//! names, formats; [`StorageError`], storage's: object stores, I/O, roots, reads that
//! raced a save), a checkpoint made from other inputs ([`Error::Stale`]), or DataFusion's.
//! Our errors that travel through DataFusion (a decode error inside a scan) come back out
//! as themselves, so the CLI prints `summaries.jsonl:17: field: ...`, not a stack of
//! wrappers. Each layer's error wraps the one below it, as object_store's stores' errors
//! are wrapped by its own.

use datafusion::error::DataFusionError;

pub use ckpt_core::error::Position;
pub use ckpt_storage::redact::redact_secrets;

/// The codec layer's error (data, names, formats, Arrow, Parquet), re-exported under a
/// name that says so.
pub use ckpt_core::Error as CheckpointError;

/// The storage layer's error (object stores, I/O, roots and options, changed while read).
pub use ckpt_storage::Error as StorageError;

/// What went wrong: a checkpoint's content or name, its storage, its inputs, or a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint's content, a name, a format.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),

    /// Storage: an object store, the disk, a root or option, a read that raced a save.
    /// (A storage error that holds a codec error is unwrapped into [`Error::Checkpoint`].)
    #[error(transparent)]
    Storage(StorageError),

    /// The checkpoint was made from other inputs than the caller's: the fingerprint
    /// recorded with it (inputs, model, prompt, parameters, as the caller computes it) is
    /// not the one expected, or none was recorded.
    #[error(
        "{file} is stale: it was made with fingerprint {}, not {expected:?}; delete it (or load it without a fingerprint) to use it",
        recorded.as_deref().map_or("(none recorded)".to_owned(), |r| format!("{r:?}"))
    )]
    Stale {
        /// The checkpoint file, as shown to the user.
        file: String,
        /// The fingerprint recorded with it, if any.
        recorded: Option<String>,
        /// The caller's fingerprint.
        expected: String,
    },

    /// The query engine: SQL, planning, execution, memory.
    #[error("{0}")]
    DataFusion(Box<DataFusionError>),
}

/// The engine's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A data error at `file`, `line` (JSONL) and `field`.
    pub fn data(
        file: impl Into<String>,
        line: Option<u64>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        CheckpointError::data(file, line, field, message).into()
    }

    /// Something the user asked for that cannot be used (an option, a format, a root).
    pub fn config(message: impl Into<String>) -> Self {
        CheckpointError::config(message).into()
    }

    /// A bug or a lost worker, not a problem with the input.
    pub fn internal(message: impl Into<String>) -> Self {
        CheckpointError::internal(message).into()
    }

    /// A name refused for `reason`.
    pub fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        CheckpointError::invalid_name(name, reason).into()
    }

    /// An I/O failure (redacted, see [`StorageError::io`]).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::io(context, source).into()
    }

    /// An object store's failure, with a hint (redacted, see [`StorageError::storage`]).
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        StorageError::storage(context, source).into()
    }

    /// A read stopped because a save replaced `file` meanwhile.
    pub fn changed_while_read(file: impl Into<String>) -> Self {
        StorageError::changed_while_read(file).into()
    }

    /// The codec layer's error, when this is one.
    pub fn checkpoint(&self) -> Option<&CheckpointError> {
        match self {
            Error::Checkpoint(e) => Some(e),
            Error::Storage(e) => e.core(),
            _ => None,
        }
    }

    /// The storage layer's error, when this is one.
    pub fn storage_error(&self) -> Option<&StorageError> {
        match self {
            Error::Storage(e) => Some(e),
            _ => None,
        }
    }

    /// The position, when this is a data error.
    pub fn position(&self) -> Option<&Position> {
        self.checkpoint()?.position()
    }

    /// Whether a read stopped because a concurrent save replaced the file (read again).
    pub fn is_changed_while_read(&self) -> bool {
        self.storage_error()
            .is_some_and(StorageError::is_changed_while_read)
    }

    /// Whether this is a storage error saying the object (or its bucket) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.storage_error().is_some_and(StorageError::is_not_found)
    }

    /// Whether a checkpoint was made from other inputs (its fingerprint differs).
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale { .. })
    }

    /// Whether the query ran out of its memory limit (`--memory-limit`).
    pub fn is_resources_exhausted(&self) -> bool {
        matches!(self, Error::DataFusion(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)))
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Core(core) => Error::Checkpoint(core),
            other => Error::Storage(other),
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        use datafusion::arrow::error::ArrowError;
        // An Arrow error from a scan may hold an object store's answer, which may echo the
        // request's credentials.
        if let Some(text) = ckpt_storage::Redacted::needed(&e) {
            return CheckpointError::Arrow(ArrowError::ExternalError(Box::new(text))).into();
        }
        CheckpointError::Arrow(e).into()
    }
}

impl From<datafusion::parquet::errors::ParquetError> for Error {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        use datafusion::parquet::errors::ParquetError;
        // A Parquet reader over an object store holds its answers: redacted as Arrow's.
        if let Some(text) = ckpt_storage::Redacted::needed(&e) {
            return CheckpointError::Parquet(ParquetError::External(Box::new(text))).into();
        }
        CheckpointError::Parquet(e).into()
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        use DataFusionError as D;
        let e = match e {
            D::Context(_, inner) => return Error::from(*inner),
            D::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(inner) => return Error::from(inner),
                Err(shared) => D::Shared(shared),
            },
            D::External(ext) => match ext.downcast::<Error>() {
                Ok(ours) => return *ours,
                Err(ext) => match ext.downcast::<CheckpointError>() {
                    Ok(ours) => return Error::Checkpoint(*ours),
                    Err(ext) => match ext.downcast::<StorageError>() {
                        Ok(ours) => return Error::from(*ours),
                        Err(ext) => D::External(ext),
                    },
                },
            },
            D::ObjectStore(os) => return Error::storage("object store", *os),
            other => other,
        };
        if let Some(ours) = find_ours(&e) {
            return ours;
        }
        // A server's answer (an object store's, through a scan or a sink) may echo the
        // request's credentials.
        if let Some(redacted) = ckpt_storage::Redacted::needed(&e) {
            return Error::DataFusion(Box::new(D::External(Box::new(redacted))));
        }
        Error::DataFusion(Box::new(e))
    }
}

/// Our data, name or changed-while-read error may sit deeper in a chain (e.g. inside
/// `ArrowError::ExternalError`), held by reference: it is rebuilt from its parts.
fn find_ours(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let ours = if let Some(core) = err.downcast_ref::<CheckpointError>() {
            core.try_clone().map(Error::Checkpoint)
        } else if let Some(storage) = err.downcast_ref::<StorageError>() {
            storage.try_clone().map(Error::from)
        } else if let Some(engine) = err.downcast_ref::<Error>() {
            match engine {
                Error::Checkpoint(core) => core.try_clone().map(Error::Checkpoint),
                Error::Storage(storage) => storage.try_clone().map(Error::from),
                _ => None,
            }
        } else {
            None
        };
        if ours.is_some() {
            return ours;
        }
        cur = err.source();
    }
    None
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => *inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<Error> for datafusion::arrow::error::ArrowError {
    fn from(e: Error) -> Self {
        datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))
    }
}
