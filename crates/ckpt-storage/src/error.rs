//! The error of the storage layer: an object store's or the disk's failure (with a hint
//! for the common misconfigurations), a root, URL or storage option that cannot be used,
//! a read that raced a save, or the codec layer's error ([`ckpt_core::Error`]: a name
//! refused, a format that does not parse) where storage code checks names and formats.
//!
//! Storage errors are classified by object_store's variants (`NotFound`,
//! `PermissionDenied`, `Unauthenticated`, ...) and by the `std::io::ErrorKind` found in
//! their cause chain, never by searching their text. Every error that can carry a
//! server's text is redacted when it is made (see [`crate::redact`]).

use crate::redact::{redact_io, redact_object_store};

/// What went wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The codec layer's error: a name refused, a format that does not parse.
    #[error(transparent)]
    Core(#[from] ckpt_core::Error),

    /// A root, URL or storage option that cannot be used.
    #[error("{0}")]
    Config(String),

    /// The object store failed; `context` names the location, `hint` the likely fix.
    #[error("{context}: {source}{}", hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Storage {
        /// What was being done, and where.
        context: String,
        /// object_store's error, without any credentials.
        #[source]
        source: object_store::Error,
        /// What to do next, for the common misconfigurations.
        hint: Option<String>,
    },

    /// A local file system (or an upload's) I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and where.
        context: String,
        /// The I/O error, without any credentials.
        #[source]
        source: std::io::Error,
    },

    /// A file was replaced (saved again) while it was being read: the read stopped
    /// rather than mix two versions. Reading it again gives the new version.
    #[error("{file} changed while it was being read (saved again meanwhile); read it again")]
    ChangedWhileRead {
        /// The file, as shown to the user.
        file: String,
    },
}

/// The storage layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A root, URL or storage option that cannot be used.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    /// A name refused for `reason` (the codec layer's error).
    pub fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        ckpt_core::Error::invalid_name(name, reason).into()
    }

    /// A bug or a lost worker, not a problem with the input (the codec layer's error).
    pub fn internal(message: impl Into<String>) -> Self {
        ckpt_core::Error::internal(message).into()
    }

    /// An I/O failure; one that carries a server's answer (an upload's, through
    /// object_store) is kept without any credentials the answer echoed.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: redact_io(source),
        }
    }

    /// Wraps an object_store error with the location it concerns and a hint for the
    /// common misconfigurations. Any request credentials the server's answer echoed are
    /// removed from it (see [`crate::redact_secrets`]).
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        let hint = storage_hint(&source).map(str::to_owned);
        Error::Storage {
            context: context.into(),
            source: redact_object_store(source),
            hint,
        }
    }

    /// A read stopped because a save replaced `file` meanwhile.
    pub fn changed_while_read(file: impl Into<String>) -> Self {
        Error::ChangedWhileRead { file: file.into() }
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

    /// The codec layer's error, when this is one.
    pub fn core(&self) -> Option<&ckpt_core::Error> {
        match self {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }

    /// A copy of a changed-while-read error or of a codec error that
    /// [`ckpt_core::Error::try_clone`] copies; `None` for the others.
    pub fn try_clone(&self) -> Option<Error> {
        match self {
            Error::Core(e) => e.try_clone().map(Error::Core),
            Error::ChangedWhileRead { file } => Some(Error::changed_while_read(file.clone())),
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

#[cfg(test)]
mod redaction_tests {
    use super::*;

    use crate::redact::redaction_tests::ECHOED;

    #[test]
    fn a_storage_error_is_redacted_in_its_message_debug_and_chain() {
        let source = object_store::Error::PermissionDenied {
            path: "p/summaries.jsonl".into(),
            source: ECHOED.into(),
        };
        let err = Error::storage("cannot write s3://bucket/p/summaries.jsonl", source);
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = cur {
            texts.push(e.to_string());
            cur = e.source();
        }
        for t in &texts {
            assert!(!t.contains("73e1297a6e1e0c0d"), "{t}");
            assert!(!t.contains("SESSIONTOKEN"), "{t}");
        }
        assert!(err.to_string().contains("403 Forbidden"), "{err}");
        // The variant is kept: the hint still says the credentials were refused.
        assert!(
            err.to_string().contains("hint: the server refused"),
            "{err}"
        );

        let io = std::io::Error::other(object_store::Error::Generic {
            store: "S3",
            source: ECHOED.into(),
        });
        let err = Error::io("cannot complete the write of s3://bucket/k", io);
        assert!(
            !format!("{err} {err:?}").contains("73e1297a6e1e0c0d"),
            "{err:?}"
        );
        assert!(err.to_string().contains("AccessDenied"), "{err}");
    }
}
