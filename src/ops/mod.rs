//! The commands, as library operations: each an options struct and a typed report, one
//! file per command (the shape of delta-rs's `operations/`). The `ckpt` binary parses
//! arguments, calls one of these and prints its report; the Python package and
//! `ckpt serve` call the same functions, so a command behaves the same from every door.
//!
//! | command | operation |
//! |---|---|
//! | `ckpt ls` | [`ls::ls`] |
//! | `ckpt query`, `ckpt shell` | [`query`]: statements planned and run on a session |
//! | `ckpt convert` | [`convert::convert`] |
//! | `ckpt sizes` | [`sizes::sizes`] |
//! | `ckpt append` | [`append::append_file`] |
//! | `ckpt compact` | [`compact::compact`] |
//! | `ckpt generate` | [`generate::generate`] |
//! | `ckpt check` | [`check::check`] |
//!
//! This is the top layer of the library: an operation may use any module below it, and
//! nothing below uses an operation.

pub mod append;
pub mod check;
pub mod compact;
pub mod convert;
pub mod generate;
pub mod ls;
pub mod query;
pub mod sizes;
