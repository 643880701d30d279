//! Checkpoints as DataFusion data sources: every scan is a `DataSourceExec` (or a plan over
//! one), so DataFusion splits files into partitions, accounts memory in its pool, shows
//! metrics in `EXPLAIN ANALYZE`, and can ship the plan to another process.
//!
//! - [`jsonl`]: JSONL checkpoints of a known kind, ckpt-core's decoder over byte ranges.
//! - [`parquet`]: DataFusion's Parquet scan with reads pinned to one version of a file.
//! - [`kura`]: Kura's Parquet layout as that scan plus a projection of conversions.
//! - [`hf`]: Hugging Face dataset directories as DataFusion's Arrow scan plus a projection
//!   of Kura's decodings.
//! - [`codec`]: ships plans holding these scans to another process.

pub mod codec;
pub mod hf;
pub mod jsonl;
pub mod kura;
mod last_wins;
pub mod parquet;

pub use codec::CkptCodec;
pub use jsonl::{FileNames, JsonlFormat, SkipLog};
pub use last_wins::LastWinsExec;
pub(crate) use last_wins::Listed;
