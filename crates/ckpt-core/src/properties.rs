//! The decoder's properties that fuzzing checks, in one place for both fuzzers:
//! `tests/engine/fuzz.rs` (randomized, seeded, run with every `cargo test`) and the
//! coverage-guided cargo-fuzz targets under `fuzz/` (a bounded run in CI). Each function
//! panics when a property fails, which is what both fuzzers detect; otherwise it returns
//! what it observed so a caller can count.
//!
//! Not part of the stable API: the functions take raw fuzzer input.

use std::borrow::Cow;
use std::sync::Arc;

use crate::CheckpointKind;
use crate::jsonl::value::{self, Value};
use crate::jsonl::{DecodeOptions, JsonlDecoder, OnError};

/// Decodes line `i` (0-based) of a file into the decoder: as a line, or as its values.
type DecodeOne<'a> = dyn Fn(&mut JsonlDecoder, usize, &[u8]) -> crate::Result<()> + 'a;

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
/// - fail mode accepts exactly the files skip mode skips nothing of;
/// - the decoder's fast paths (the embedding list cut out of the line and parsed apart)
///   give exactly what its general path gives: the same rows, every column equal (compared
///   bit for bit, so NaN equals NaN), the same skips;
/// - rows given as values ([`JsonlDecoder::decode_values`]) give exactly what their lines
///   give;
/// - a projection (each column alone, the others only checked) accepts and skips the same
///   lines as the full decode, with the same messages, and its column equals the full
///   decode's.
///
/// `batch_rows` is small so the batch-boundary code runs too.
pub fn decode_lines(kind: CheckpointKind, lines: &[&[u8]]) -> DecodeOutcome {
    const FILE: &str = "fuzz.jsonl";
    let schema = kind.schema();
    let opts = DecodeOptions {
        on_error: OnError::Skip,
        batch_rows: 3,
    };
    // Every line through `decode` (a line, or the values it parses to), in skip mode.
    let decode_with = |mut d: JsonlDecoder, decode: &DecodeOne| {
        let mut batches = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            decode(&mut d, i, line).expect("skip mode never fails a line");
            if d.is_full() {
                batches.extend(d.flush().expect("a flush of decoded rows succeeds"));
            }
        }
        batches.extend(d.flush().expect("a flush of decoded rows succeeds"));
        (batches, d.take_skipped())
    };
    let decode_all =
        |d: JsonlDecoder| decode_with(d, &|d, i, line| d.decode_line(line, i as u64 + 1));
    // Ids a row lacks are counted, not random, so both decoders make the same ones.
    let (batches, skipped) =
        decode_all(JsonlDecoder::new(Arc::clone(&schema), &schema, FILE, opts).sequential_ids());
    let general = decode_all(
        JsonlDecoder::new(Arc::clone(&schema), &schema, FILE, opts)
            .sequential_ids()
            .general_path_only(),
    );
    assert!(
        general.0 == batches && general.1 == skipped,
        "the fast path and the general path disagree on {:?}",
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
    // The values route (`decode_values`: each row given as the values its line parses
    // to, the embedding as numbers where they are finite floats, as the Python package
    // gives Kura's models) gives exactly what the lines give; a line that does not parse
    // goes as a line, as the package sends a model whose JSON is not plain.
    let by_values = decode_with(
        JsonlDecoder::new(Arc::clone(&schema), &schema, FILE, opts).sequential_ids(),
        &|d, i, line| {
            let n = i as u64 + 1;
            let parsed = std::str::from_utf8(line)
                .ok()
                .filter(|_| !(i == 0 && line.starts_with(b"\xEF\xBB\xBF")))
                .and_then(|t| value::parse(t).ok());
            match parsed {
                Some(Value::Object(mut entries)) => {
                    let floats = d
                        .float_list_field()
                        .and_then(|name| take_float_list(name, &mut entries));
                    d.decode_values(&entries, floats.as_deref(), n)
                }
                _ => d.decode_line(line, n),
            }
        },
    );
    assert!(
        by_values.0 == batches && by_values.1 == skipped,
        "the values route and the lines disagree on {:?}",
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
    // A projection decodes only some columns and checks the others without building them
    // (the number list only scanned, metadata not written): each column decoded alone
    // must accept and skip the same lines, and equal the column of the full decode.
    for (c, field) in schema.fields().iter().enumerate() {
        let output = Arc::new(schema.project(&[c]).expect("a column of the schema"));
        let (projected, projected_skipped) = decode_all(
            JsonlDecoder::new(Arc::clone(&output), &schema, FILE, opts).sequential_ids(),
        );
        let expected: Vec<_> = batches
            .iter()
            .map(|b| b.project(&[c]).expect("a column of the batch"))
            .collect();
        assert!(
            projected == expected && projected_skipped == skipped,
            "the projection on {} disagrees with the full decode on {:?}",
            field.name(),
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
    }
    let mut out = DecodeOutcome {
        rows: batches.iter().map(|b| b.num_rows()).sum(),
        ..Default::default()
    };
    out.blank = lines
        .iter()
        .enumerate()
        .filter(|(i, line)| is_blank(line, *i == 0))
        .count();
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

/// The value of field `name` taken out of `entries` as numbers, when it is a list of
/// finite floats (numbers written with a fraction or an exponent); else left in place.
fn take_float_list(name: &str, entries: &mut Vec<(Cow<'_, str>, Value<'_>)>) -> Option<Vec<f64>> {
    let at = entries.iter().position(|(k, _)| k.as_ref() == name)?;
    let Value::Array(items) = &entries[at].1 else {
        return None;
    };
    let numbers = items
        .iter()
        .map(|v| match v {
            Value::Number { text, float: true } => {
                text.parse::<f64>().ok().filter(|f| f.is_finite())
            }
            _ => None,
        })
        .collect::<Option<Vec<f64>>>()?;
    entries.remove(at);
    Some(numbers)
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

/// The seed of a randomized property test: `PROPTEST_RNG_SEED` when set (a replay), else
/// a new one. Printed (a test's output shows when it fails), so every failure can be run
/// again exactly: `PROPTEST_RNG_SEED=N cargo test NAME`.
pub fn replay_seed() -> u64 {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::UNIX_EPOCH
                .elapsed()
                .map_or(1, |t| t.as_nanos() as u64)
        });
    eprintln!("property test seed {seed}: replay with PROPTEST_RNG_SEED={seed}");
    seed
}
