//! JSON Lines for the known kinds: a schema-driven decoder (JSON bytes straight into Arrow
//! columns, with file/line/field errors) and an encoder that writes the lines Kura writes.
//!
//! Why our own codec and not arrow-json: Kura's `metadata` is a free-form object that must
//! stay JSON (arrow-json would need a fixed struct type), `count` is computed, nulls are
//! written explicitly as pydantic does, a bad line must name its line number and field, and
//! `--on-error skip` must drop a bad line whole. Decoding only the projected columns is
//! also what makes `SELECT topic ... FROM summaries` fast on JSONL.

pub mod decode;
pub mod encode;
pub(crate) mod lax;
mod number_block;
pub mod value;

pub use decode::{DecodeOptions, JsonlDecoder, OnError, SkippedLine};
pub use encode::JsonlEncoder;
