//! One error type for the library. Every message says what failed, where (file, line,
//! field or column), and — where there is one — what to do next.

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
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    #[error("{0}")]
    DataFusion(Box<datafusion::error::DataFusionError>),
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

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an object_store error with the location it concerns and a hint for the
    /// common misconfigurations. object_store's own messages never contain secrets.
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        let hint = storage_hint(&source);
        Error::Storage {
            context: context.into(),
            source,
            hint,
        }
    }

    /// The position, when this is a data error.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Error::Data { position, .. } => Some(position),
            _ => None,
        }
    }
}

fn storage_hint(err: &object_store::Error) -> Option<String> {
    // The cause is often further down the chain (reqwest -> hyper -> io).
    let mut text = err.to_string();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        text.push_str(" / ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("nosuchbucket")
        || lower.contains("bucket does not exist")
        || lower.contains("specified bucket does not exist")
    {
        Some("the bucket does not exist: create it, or check the bucket name in the URL".into())
    } else if lower.contains("invalidaccesskeyid")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("accessdenied")
        || lower.contains("403")
    {
        Some("the server refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or --storage-option aws_access_key_id=...)".into())
    } else if lower.contains("missing") && lower.contains("credential")
        || lower.contains("no credentials")
    {
        Some("no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --storage-option".into())
    } else if lower.contains("connect")
        || lower.contains("dns")
        || lower.contains("timed out")
        || lower.contains("connection refused")
    {
        Some("the endpoint cannot be reached: check AWS_ENDPOINT_URL / --storage-option aws_endpoint=..., and aws_allow_http=true for http:// endpoints".into())
    } else {
        None
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        // Unwrap our own errors that travelled through DataFusion, so the CLI prints
        // `summaries.jsonl:17: field: ...` and not a stack of wrappers.
        let e = match e {
            D::Context(_, inner) => return Error::from(*inner),
            D::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(inner) => return Error::from(inner),
                Err(shared) => D::Shared(shared),
            },
            D::External(ext) => match ext.downcast::<Error>() {
                Ok(ours) => return *ours,
                Err(ext) => D::External(ext),
            },
            D::ObjectStore(os) => return Error::storage("object store", *os),
            other => other,
        };
        if let Some(ours) = find_ours(&e) {
            return ours;
        }
        Error::DataFusion(Box::new(e))
    }
}

/// Our error may sit deeper in a chain (e.g. inside ArrowError::ExternalError).
fn find_ours(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(Error::Data { position, message }) = err.downcast_ref::<Error>() {
            return Some(Error::Data {
                position: position.clone(),
                message: message.clone(),
            });
        }
        if let Some(Error::InvalidName { name, reason }) = err.downcast_ref::<Error>() {
            return Some(Error::InvalidName {
                name: name.clone(),
                reason: reason.clone(),
            });
        }
        cur = err.source();
    }
    None
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => *inner,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<Error> for datafusion::arrow::error::ArrowError {
    fn from(e: Error) -> Self {
        datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))
    }
}
