//! The engine's integration tests: the library's behaviour on every backend, format and
//! kind, and what stays true when many readers, writers and processes meet.
//!
//! One test binary of modules rather than a binary per file: every test binary links
//! DataFusion whole, so each one more costs a link and hundreds of megabytes. The tests
//! share nothing in the process but what `common` gives (unique names, the S3 server's
//! settings); none sets environment variables or changes the current directory, so they
//! run side by side as they did in separate binaries. Some drive the `ckpt` binary where
//! separate processes are the point (appenders killed mid-write, concurrent writers,
//! workers of a coordinator).
//!
//! - `conformance`: one set of checks over local disk, `memory://` and S3, every format,
//!   layout, codec and kind; Kura compatibility.
//! - `queries`: every file of `queries/`, its answer computed here.
//! - `append`, `staged`, `concurrency`: appended checkpoints, staged files, racing writers.
//! - `malformed`, `hostile_names`, `fuzz`: bad input, names that would leave the root,
//!   randomized properties shared with `fuzz/`.
//! - `parquet_options`, `s3`, `faults`: Parquet writing options, a real S3 server, and
//!   storage faults injected between the two.
//! - `cluster`: scale-out over `ckpt worker` processes.
//! - `hf`: Hugging Face dataset directories (Kura's third format), read and written.

#[path = "../common/mod.rs"]
mod common;

mod append;
mod cluster;
mod concurrency;
mod conformance;
mod faults;
mod fuzz;
mod hf;
mod hostile_names;
mod malformed;
mod parquet_options;
mod queries;
mod s3;
mod staged;
