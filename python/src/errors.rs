//! The exception classes of `ckpt._native` and the mapping of ckpt's errors onto them:
//! the class says what kind of failure it is, the message is the command line's.

use ckpt::{CheckpointError, Error, StorageError as StorageLayerError};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _native,
    CkptError,
    PyException,
    "An error of ckpt; its message says what failed and where."
);
create_exception!(
    _native,
    DataError,
    CkptError,
    "A row that does not fit its checkpoint's kind: the message names file, line and field."
);
create_exception!(
    _native,
    StorageError,
    CkptError,
    "The storage (local disk or object store) failed; the message says what to do next."
);
create_exception!(
    _native,
    ConfigError,
    CkptError,
    "A root, name, option or SQL statement that cannot be used."
);
create_exception!(
    _native,
    StaleCheckpoint,
    CkptError,
    "The checkpoint was made from other inputs: its fingerprint is not the manager's."
);
create_exception!(
    _native,
    ChangedWhileRead,
    StorageError,
    "The checkpoint was replaced while it was read; reading it again gives the new version."
);

/// The Python exception for an error: its class says what kind of failure it is, its
/// message is the one the command line prints.
pub(crate) fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    if e.is_changed_while_read() {
        return ChangedWhileRead::new_err(message);
    }
    if e.is_stale() {
        return StaleCheckpoint::new_err(message);
    }
    if let Some(core) = e.checkpoint() {
        return match core {
            CheckpointError::Data { .. } => DataError::new_err(message),
            CheckpointError::Config(_) | CheckpointError::InvalidName { .. } => {
                ConfigError::new_err(message)
            }
            _ => CkptError::new_err(message),
        };
    }
    match &e {
        Error::Storage(StorageLayerError::Config(_)) => ConfigError::new_err(message),
        Error::Storage(
            StorageLayerError::Storage { .. }
            | StorageLayerError::Io { .. }
            | StorageLayerError::ChangedWhileRead { .. },
        ) => StorageError::new_err(message),
        _ => CkptError::new_err(message),
    }
}

/// The Python exception for an error of a layer below the engine (the codec's or
/// storage's), classified as the engine's error it becomes.
pub(crate) fn to_py_core(e: impl Into<Error>) -> PyErr {
    to_py(e.into())
}
