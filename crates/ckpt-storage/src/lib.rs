//! # ckpt-storage — where checkpoints live
//!
//! A checkpoint root is a directory or an object-store URL ([`storage`]: roots, URLs,
//! options with secrets redacted, atomic writers); on local disk a save is staged, synced
//! and renamed into place ([`durable`]); appended checkpoints' parts are named, listed
//! and removed by [`parts`].
//!
//! No DataFusion: the engine registers these stores with its runtime, and the fuzz
//! targets check names and URLs against this crate alone.
#![forbid(unsafe_code)]

pub mod durable;
pub mod parts;
#[doc(hidden)]
pub mod properties;
pub mod storage;

pub use storage::{Root, StorageOptions};
