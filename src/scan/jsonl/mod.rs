//! JSONL checkpoints of a known kind as a DataFusion data source: [`JsonlFormat`] (the
//! table's [`FileFormat`]), [`JsonlSource`] (its [`FileSource`] inside a
//! `DataSourceExec`) and [`JsonlOpener`] (reads one file, or the lines of one byte range
//! of it, for one partition).
//!
//! Why ours and not DataFusion's `JsonSource` (arrow-json):
//! - a known kind is read into its declared schema (Kura's models, column order and types
//!   of `kind.rs`), never an inferred one;
//! - `metadata` is a free-form object, kept as its JSON text (arrow-json would need one
//!   struct type for every line);
//! - a bad line is reported as `summaries.jsonl:17: concerning_score: ...`, with the line
//!   number of the whole file even when a partition that started mid-file read it;
//! - `--on-error skip` drops a bad line whole and logs it ([`SkipLog`]);
//! - lines are validated exactly as pydantic does (required fields, no `NaN`, no duplicate
//!   keys), every field of every line whatever the projection, so `count(*)` counts what a
//!   full read (or Kura) accepts.
//!
//! The decoder is ckpt-core's; this module is how DataFusion drives it: byte ranges split
//! at line boundaries, blocks decoded in parallel on blocking threads and returned in file
//! order, every request pinned to the listed version of the file, memory accounted in the
//! session's pool, and per-partition metrics for `EXPLAIN ANALYZE`.
//!
//! Its files follow DataFusion's own data sources, each using only those listed after it:
//! - `format.rs`: [`JsonlFormat`], planning;
//! - `source.rs`: [`JsonlSource`], the opener of each partition sized to the pool;
//! - `opener.rs`: [`JsonlOpener`], the per-file stream, its memory and metrics;
//! - `boundary.rs`: byte ranges cut at line boundaries, read from the listed version;
//! - `blocks.rs`: lines cut into blocks and decoded;
//! - `settings.rs`: what every scan of a table shares ([`SkipLog`], [`FileNames`], sizes).
//!
//! [`FileFormat`]: datafusion::datasource::file_format::FileFormat
//! [`FileSource`]: datafusion::datasource::physical_plan::FileSource

mod blocks;
mod boundary;
mod format;
mod opener;
mod settings;
mod source;
#[cfg(test)]
mod tests;

pub use format::JsonlFormat;
pub(crate) use settings::on_error_name;
pub use settings::{FileNames, SkipLog};
pub use source::JsonlSource;
