//! The error of the codec layer: what is wrong with a checkpoint's content (a row that
//! does not fit its kind, with its [`Position`]), a name that is not allowed, a format or
//! option that does not parse, and Arrow's or Parquet's own errors. Every message says
//! what failed and where (file, line, field or column).
//!
//! Storage has its own error (`ckpt_storage::Error`: object stores, I/O, roots, reads
//! that raced a save) which wraps this one; the engine (`ckpt::Error`) wraps both and
//! adds DataFusion's. This crate reads no storage, so its errors hold no server's text.

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

/// What went wrong in the codec layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint's content does not match its kind: bad JSON, wrong type, missing field.
    #[error("{position}: {message}")]
    Data {
        /// Where the problem is.
        position: Position,
        /// What is wrong there.
        message: String,
    },

    /// A checkpoint name or target that is not allowed (escapes the root, NUL, too long).
    #[error("invalid checkpoint name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// A format, compression, layout or kind that cannot be used.
    #[error("{0}")]
    Config(String),

    /// Arrow's error (building or casting a batch).
    #[error(transparent)]
    Arrow(arrow::error::ArrowError),

    /// Parquet's error (reading or writing a file's bytes).
    #[error(transparent)]
    Parquet(parquet::errors::ParquetError),

    /// A bug or a lost worker thread, not a problem with the input: a decode task that
    /// panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The codec layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A data error at `file`, `line` (JSONL) and `field`.
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

    /// A format, compression, layout or kind that cannot be used.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    /// A name refused for `reason`.
    pub fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidName {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// A bug or a lost worker, not a problem with the input.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// The position, when this is a data error.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Error::Data { position, .. } => Some(position),
            _ => None,
        }
    }

    /// A copy of a data, name or config error (errors are not `Clone`: Arrow's and
    /// Parquet's are not); `None` for the others. The engine uses it to bring an error of
    /// ours back out of a chain of DataFusion's errors that holds it by reference.
    pub fn try_clone(&self) -> Option<Error> {
        Some(match self {
            Error::Data { position, message } => Error::Data {
                position: position.clone(),
                message: message.clone(),
            },
            Error::InvalidName { name, reason } => Error::InvalidName {
                name: name.clone(),
                reason: reason.clone(),
            },
            _ => return None,
        })
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Arrow(e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Parquet(e)
    }
}
