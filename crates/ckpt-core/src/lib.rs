//! # ckpt-core — what a Kura checkpoint is, without an engine
//!
//! The checkpoint kinds and their one Arrow schema each ([`kind`]), the Rust values and
//! their conversion to record batches ([`types`]), formats, compression and names
//! ([`mod@format`]), datetimes as Kura writes them (`datetime`), any stored batch brought
//! to its kind's schema ([`mod@conform`]), Kura's Parquet layout ([`layout`]), and the JSONL
//! codec ([`jsonl`]). Errors are the codec's ([`Error`]); storage has its own.
//!
//! The modules are layered, each using only those listed before it: `error`, `format`,
//! `kind`, `datetime`, `conform`, `jsonl`, `layout`, `types`.
//!
//! It depends on arrow, not on DataFusion: the fuzz targets and any tool that only reads
//! or writes checkpoint files link this crate alone. The engine (`ckpt`) builds its
//! DataFusion data sources and sinks on it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conform;
pub(crate) mod datetime;
pub mod error;
pub mod format;
pub mod jsonl;
pub mod kind;
pub mod layout;
#[doc(hidden)]
pub mod properties;
pub mod types;

pub use error::{Error, Position, Result};
pub use format::{Compression, FileFormat, Layout, WriteOptions};
pub use kind::CheckpointKind;
pub use types::{
    Checkpoint, Cluster, Conversation, ConversationSummary, Message, Metadata, ProjectedCluster,
    Role,
};
