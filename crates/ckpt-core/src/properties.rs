//! The decoder's properties that fuzzing checks, in one place for both fuzzers: `tests/fuzz.rs`
//! (randomized, seeded, run with every `cargo test`) and the coverage-guided cargo-fuzz
//! targets under `fuzz/` (a bounded run in CI). Each function panics when a property
//! fails, which is what both fuzzers detect; otherwise it returns what it observed so a
//! caller can count.
//!
//! Not part of the stable API: the functions take raw fuzzer input.

use std::sync::Arc;

use crate::CheckpointKind;
use crate::jsonl::{DecodeOptions, JsonlDecoder, OnError};

/// What [`decode_lines`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOutcome {
    pub rows: usize,
    pub skipped: usize,
    pub blank: usize,
}

/// Decodes `lines` as one file of `kind`, in skip mode and in fail mode, and checks:
/// - nothing panics;
/// - skip mode never fails a line, and every line that is not blank is exactly one row
///   or one reported skip (never both, never neither);
/// - fail mode stops at the first skipped line, with an error that starts `file:line:`;
/// - fail mode accepts exactly the files skip mode skips nothing of.
///
/// `batch_rows` is small so the batch-boundary code runs too.
pub fn decode_lines(kind: CheckpointKind, lines: &[&[u8]]) -> DecodeOutcome {
    const FILE: &str = "fuzz.jsonl";
    let schema = kind.schema();
    let opts = DecodeOptions {
        on_error: OnError::Skip,
        batch_rows: 3,
    };
    let mut d = JsonlDecoder::new(Arc::clone(&schema), &schema, FILE, opts);
    let mut out = DecodeOutcome::default();
    let flushed_rows = |d: &mut JsonlDecoder| {
        d.flush()
            .expect("a flush of decoded rows succeeds")
            .map_or(0, |b| b.num_rows())
    };
    for (i, line) in lines.iter().enumerate() {
        if is_blank(line, i == 0) {
            out.blank += 1;
        }
        d.decode_line(line, i as u64 + 1)
            .expect("skip mode never fails a line");
        if d.is_full() {
            out.rows += flushed_rows(&mut d);
        }
    }
    out.rows += flushed_rows(&mut d);
    let skipped = d.take_skipped();
    out.skipped = skipped.len();
    assert_eq!(
        out.rows + out.skipped + out.blank,
        lines.len(),
        "rows lost or doubled: {out:?} for {} lines",
        lines.len()
    );

    let mut f = JsonlDecoder::new(Arc::clone(&schema), &schema, FILE, DecodeOptions::default());
    let mut failed_at = None;
    for (i, line) in lines.iter().enumerate() {
        if let Err(e) = f.decode_line(line, i as u64 + 1) {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("{FILE}:{}:", i + 1)),
                "an error must name file and line: {text}"
            );
            failed_at = Some(i as u64 + 1);
            break;
        }
    }
    assert_eq!(
        failed_at,
        skipped.first().map(|s| s.line),
        "fail mode and skip mode disagree about the first bad line"
    );
    if failed_at.is_none() {
        f.flush().expect("a flush of decoded rows succeeds");
    }
    out
}

/// Blank as the decoder sees it: whitespace only, after a BOM on the first line.
fn is_blank(line: &[u8], first: bool) -> bool {
    let body = if first {
        line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
    } else {
        line
    };
    body.iter().all(u8::is_ascii_whitespace)
}

/// Splits fuzzer bytes into lines as a JSONL file is split.
pub fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if data.ends_with(b"\n") || data.is_empty() {
        lines.pop();
    }
    lines
}
