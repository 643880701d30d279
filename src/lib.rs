//! # ckpt — checkpoints of ML data pipelines as DataFusion tables
//!
//! ckpt reads and writes the checkpoints [Kura](https://github.com/567-labs/kura) saves at
//! each pipeline step (conversation summaries, clusters, meta clusters, 2-D projections,
//! conversations) as JSONL or Parquet, on local disk or any object store, and makes every
//! checkpoint a SQL table.
//!
//! Where things live (the public modules are linked; the others are the engine's own):
//! - [`kind`]: the checkpoint kinds and their one Arrow schema each; [`types`]: the Rust
//!   values and their conversion to record batches.
//! - [`mod@format`]: formats, compression, layouts, checkpoint names; [`layout`]: Kura's
//!   Parquet layout and schema conformance; [`jsonl`]: the JSONL codec.
//! - [`storage`]: roots on object stores and atomic writes ([`durable`]: fsync on local
//!   disk; [`parts`]: the parts of appended checkpoints); [`sink`]: the one write path.
//! - `scan`: each format a DataFusion data source (JSONL, Parquet, Kura's layout, Hugging
//!   Face dataset directories), and `LastWinsExec`, the rule of appended checkpoints;
//!   `functions`: ckpt's SQL functions; `memory`: the pool behind `--memory-limit`.
//! - `catalog`: a root's checkpoints as tables (an appended one: many parts, one table,
//!   the last row of an id wins); [`context`]: the one constructor of sessions
//!   ([`CheckpointSession`]) and its SQL; `copy`: `COPY ... TO` through the sink;
//!   [`cluster`]: scale-out — queries run on `ckpt worker`s (datafusion-distributed).
//! - [`manager`]: Kura's checkpoint manager API (saves, loads, appends, compaction);
//!   [`progress`]: how far a long write has got.
//! - [`ops`]: every command as a library operation — ls, query, convert, sizes, append,
//!   compact, generate, check — called by the CLI, the Python package and `ckpt serve`.
//! - [`serve`]: `ckpt serve`, a run explored in the browser (its page and JSON API).
//!
//! The layers below (re-exported here) are crates of their own: `ckpt-core` (kinds,
//! types, layouts, the JSONL codec; no DataFusion) and `ckpt-storage` (roots, object
//! stores, atomic writes). The `ckpt` binary (feature `cli`, on by default) is a thin
//! command line over this library; library users turn default features off.
//!
//! ## Save and load with a manager
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ckpt::{CheckpointManager, ConversationSummary};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let manager = CheckpointManager::jsonl(dir.path().to_str().unwrap()).unwrap();
//! let summaries = vec![ConversationSummary {
//!     chat_id: "abc123".into(),
//!     summary: "User seeks Python help".into(),
//!     embedding: Some(vec![0.1, 0.2, 0.3]),
//!     ..Default::default()
//! }];
//! manager.save("summaries", &summaries).await.unwrap();
//! let loaded: Vec<ConversationSummary> = manager.load("summaries").await.unwrap().unwrap();
//! assert_eq!(loaded, summaries);
//! assert!(manager.load::<ConversationSummary>("clusters").await.unwrap().is_none());
//! # });
//! ```
//!
//! ## Query with SQL
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ckpt::{CheckpointSession, ops::generate::{generate, GenerateOptions}, storage::Root};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = Root::local(dir.path()).unwrap();
//! generate(&root, &GenerateOptions { summaries: 100, ..Default::default() }).await.unwrap();
//!
//! let session = CheckpointSession::open(dir.path().to_str().unwrap()).await.unwrap();
//! let df = session.sql("SELECT count(*) AS n FROM summaries WHERE user_frustration >= 4").await.unwrap();
//! let batches = df.collect().await.unwrap();
//! assert_eq!(batches[0].num_rows(), 1);
//! # });
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The layers below the engine, re-exported so that `ckpt` is the one crate users name.
pub use ckpt_core::{format, jsonl, kind, layout, types};
pub use ckpt_storage::{durable, parts, storage};

// Bottom to top: each module uses only modules above it in this list.
// The public surface is what a Rust user needs: sessions, managers, operations, the
// write path, types and errors; how tables are scanned and listed is the engine's own.
pub(crate) mod catalog;
pub mod cluster;
pub mod context;
pub(crate) mod copy;
pub mod error;
pub(crate) mod functions;
pub mod manager;
pub(crate) mod memory;
pub mod ops;
pub mod progress;
pub(crate) mod scan;
pub mod serve;
pub mod sink;
mod store_registry;

pub use context::{CheckpointSession, SessionOptions};
pub use error::{CheckpointError, Error, Result, StorageError};
pub use format::{Compression, FileFormat, Layout, WriteOptions};
pub use kind::CheckpointKind;
pub use manager::{CheckpointManager, LoadStrategy, MultiCheckpointManager, SaveStrategy, migrate};
pub use storage::{Root, StorageOptions};
pub use types::{
    Checkpoint, Cluster, Conversation, ConversationSummary, Message, Metadata, ProjectedCluster,
    Role,
};

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
