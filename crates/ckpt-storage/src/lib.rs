//! # ckpt-storage — where checkpoints live
//!
//! A checkpoint root is a directory or an object-store URL ([`storage`]: roots, URLs,
//! options with secrets redacted, atomic writers); on local disk a save is staged, synced
//! and renamed into place ([`durable`]); appended checkpoints' parts are named, listed
//! and removed by [`parts`]. Its errors ([`Error`]) wrap the codec layer's and never hold
//! a credential a server echoed ([`redact_secrets`]).
//!
//! No DataFusion: the engine registers these stores with its runtime, and the fuzz
//! targets check names and URLs against this crate alone.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod durable;
pub mod error;
pub mod parts;
#[doc(hidden)]
pub mod properties;
pub mod redact;
pub mod storage;

pub use error::{Error, Result};
pub use redact::{Redacted, redact_secrets};
pub use storage::{Root, StorageOptions};
