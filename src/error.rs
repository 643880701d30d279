//! The engine's error: the checkpoint layers' error ([`ckpt_core::Error`]: data, names,
//! configuration, storage, I/O) or DataFusion's. Our errors that travel through
//! DataFusion (a decode error inside a scan) come back out as themselves, so the CLI
//! prints `summaries.jsonl:17: field: ...`, not a stack of wrappers.

use datafusion::error::DataFusionError;

pub use ckpt_core::error::{Position, redact_secrets};

/// The error of the layers below the engine, re-exported under a name that says so.
pub use ckpt_core::Error as CheckpointError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint's content, a name, a root, storage or I/O.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),

    /// The query engine: SQL, planning, execution, memory.
    #[error("{0}")]
    DataFusion(Box<DataFusionError>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn data(
        file: impl Into<String>,
        line: Option<u64>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        CheckpointError::data(file, line, field, message).into()
    }

    pub fn config(message: impl Into<String>) -> Self {
        CheckpointError::config(message).into()
    }

    pub fn internal(message: impl Into<String>) -> Self {
        CheckpointError::internal(message).into()
    }

    pub fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        CheckpointError::invalid_name(name, reason).into()
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CheckpointError::io(context, source).into()
    }

    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        CheckpointError::storage(context, source).into()
    }

    /// The checkpoint layers' error, when this is one.
    pub fn checkpoint(&self) -> Option<&CheckpointError> {
        match self {
            Error::Checkpoint(e) => Some(e),
            Error::DataFusion(_) => None,
        }
    }

    /// The position, when this is a data error.
    pub fn position(&self) -> Option<&Position> {
        self.checkpoint()?.position()
    }

    /// Whether a read stopped because a concurrent save replaced the file (read again).
    pub fn is_changed_while_read(&self) -> bool {
        self.checkpoint()
            .is_some_and(CheckpointError::is_changed_while_read)
    }

    /// Whether a checkpoint was made from other inputs (its fingerprint differs).
    pub fn is_stale(&self) -> bool {
        self.checkpoint().is_some_and(CheckpointError::is_stale)
    }

    /// Whether the query ran out of its memory limit (`--memory-limit`).
    pub fn is_resources_exhausted(&self) -> bool {
        matches!(self, Error::DataFusion(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)))
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        CheckpointError::from(e).into()
    }
}

impl From<datafusion::parquet::errors::ParquetError> for Error {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        CheckpointError::from(e).into()
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
                    Err(ext) => D::External(ext),
                },
            },
            D::ObjectStore(os) => return Error::storage("object store", *os),
            other => other,
        };
        if let Some(ours) = find_ours(&e) {
            return ours.into();
        }
        // A server's answer (an object store's, through a scan or a sink) may echo the
        // request's credentials.
        if let Some(redacted) = ckpt_core::error::Redacted::needed(&e) {
            return Error::DataFusion(Box::new(D::External(Box::new(redacted))));
        }
        Error::DataFusion(Box::new(e))
    }
}

/// Our data or name error may sit deeper in a chain (e.g. inside
/// `ArrowError::ExternalError`); it is rebuilt from its parts (errors are not `Clone`).
fn find_ours(e: &(dyn std::error::Error + 'static)) -> Option<CheckpointError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let ours = err
            .downcast_ref::<CheckpointError>()
            .or_else(|| err.downcast_ref::<Error>().and_then(Error::checkpoint));
        match ours {
            Some(CheckpointError::Data { position, message }) => {
                return Some(CheckpointError::Data {
                    position: position.clone(),
                    message: message.clone(),
                });
            }
            Some(CheckpointError::InvalidName { name, reason }) => {
                return Some(CheckpointError::InvalidName {
                    name: name.clone(),
                    reason: reason.clone(),
                });
            }
            Some(CheckpointError::ChangedWhileRead { file }) => {
                return Some(CheckpointError::ChangedWhileRead { file: file.clone() });
            }
            _ => {}
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
