//! The error type of the DataFusion-free layers (codec, kinds, names, storage). Every
//! message says what failed, where (file, line, field or column), and — where there is
//! one — what to do next. The engine (`ckpt::Error`) wraps it and adds DataFusion's.
//!
//! Storage errors are classified by object_store's variants (`NotFound`,
//! `PermissionDenied`, `Unauthenticated`, ...) and by the `std::io::ErrorKind` found in
//! their cause chain, never by searching their text.

use std::fmt;

/// Where in a checkpoint a problem was found: `summaries.jsonl:17: concerning_score`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file (its name within the root, or a URL).
    pub file: String,
    /// 1-based line number for JSONL; `None` for Parquet.
    pub line: Option<u64>,
    /// The field or column, when known.
    pub field: Option<String>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint's content does not match its kind: bad JSON, wrong type, missing field.
    #[error("{position}: {message}")]
    Data { position: Position, message: String },

    /// A checkpoint name or target that is not allowed (escapes the root, NUL, too long).
    #[error("invalid checkpoint name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// A root, URL or storage option that cannot be used.
    #[error("{0}")]
    Config(String),

    /// The storage layer failed; `context` names the location, `hint` the likely fix.
    #[error("{context}: {source}{}", hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Storage {
        context: String,
        #[source]
        source: object_store::Error,
        hint: Option<String>,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),

    /// A file was replaced (saved again) while it was being read: the read stopped
    /// rather than mix two versions. Reading it again gives the new version.
    #[error("{file} changed while it was being read (saved again meanwhile); read it again")]
    ChangedWhileRead { file: String },

    /// A bug or a lost worker thread, not a problem with the input: a decode task that
    /// panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn data(
        file: impl Into<String>,
        line: Option<u64>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Error::Data {
            position: Position {
                file: file.into(),
                line,
                field: field.map(str::to_owned),
            },
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    pub fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidName {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an object_store error with the location it concerns and a hint for the
    /// common misconfigurations. object_store's own messages never contain secrets.
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        let hint = storage_hint(&source).map(str::to_owned);
        Error::Storage {
            context: context.into(),
            source,
            hint,
        }
    }

    /// Whether a read stopped because a concurrent save replaced the file.
    pub fn is_changed_while_read(&self) -> bool {
        matches!(self, Error::ChangedWhileRead { .. })
    }

    /// Whether this is a storage error saying the object (or its bucket) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// The position, when this is a data error.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Error::Data { position, .. } => Some(position),
            _ => None,
        }
    }
}

/// What to do next, by the kind of storage failure.
fn storage_hint(err: &object_store::Error) -> Option<&'static str> {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Some(
            "no such object: check the path, or for a bucket URL the bucket name (it must exist)",
        ),
        E::PermissionDenied { .. } => Some(
            "the server refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or --storage-option aws_access_key_id=...) and the bucket's policy",
        ),
        E::Unauthenticated { .. } => Some(
            "no valid credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --storage-option",
        ),
        E::UnknownConfigurationKey { .. } => {
            Some("see `ckpt --help` for the storage option keys of each store")
        }
        _ => match io_kind(err)? {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::AddrNotAvailable => Some(
                "the endpoint cannot be reached: check AWS_ENDPOINT_URL / --storage-option aws_endpoint=..., and aws_allow_http=true for http:// endpoints",
            ),
            _ => None,
        },
    }
}

/// The kind of the first `std::io::Error` in an error's cause chain (a refused connection
/// sits a few layers below object_store's error).
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}
