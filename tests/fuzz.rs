//! Bounded randomized fuzzing, run with every `cargo test`: mutated JSONL lines of every
//! kind through the decoder, and random names and URLs through the name and root parsers.
//! The properties: no panic, every line is either decoded or reported (skip mode), and an
//! accepted name never leaves its root.
//!
//! Seeds are fixed so a failure reproduces; `CKPT_FUZZ_ITERS` raises the iteration count
//! for a longer local run.

use std::sync::Arc;

use ckpt::jsonl::{DecodeOptions, JsonlDecoder, OnError};
use ckpt::{Checkpoint, CheckpointKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn iters(default: usize) -> usize {
    std::env::var("CKPT_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Valid lines of each kind, encoded by ckpt itself.
fn seed_lines(kind: CheckpointKind) -> Vec<Vec<u8>> {
    let batch = match kind {
        CheckpointKind::Summaries => {
            let v: Vec<_> = (0..20).map(|i| ckpt::generate::summary(i, 4, 7)).collect();
            ckpt::ConversationSummary::to_batch(&v).unwrap()
        }
        CheckpointKind::Conversations => {
            let v: Vec<_> = (0..10)
                .map(|i| ckpt::generate::conversation(i, 7))
                .collect();
            ckpt::Conversation::to_batch(&v).unwrap()
        }
        CheckpointKind::Dimensionality => {
            let (_, meta) = ckpt::generate::clusters(40, 7);
            ckpt::ProjectedCluster::to_batch(&ckpt::generate::projections(&meta, 7)).unwrap()
        }
        CheckpointKind::Clusters | CheckpointKind::MetaClusters => {
            let (_, meta) = ckpt::generate::clusters(40, 7);
            ckpt::Cluster::to_batch(&meta).unwrap()
        }
    };
    let mut out = Vec::new();
    ckpt::jsonl::JsonlEncoder.encode(&batch, &mut out).unwrap();
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"1e309",
    b"-0",
    b"NaN",
    b"Infinity",
    b"\"\\ud800\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b"\"chat_id\":\"x\"",
    b"\"embedding\":[1,2",
    b"\xff\xfe",
    b"\xEF\xBB\xBF",
    b"\r",
    b"\"\\u0000\"",
    b"99999999999999999999",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\"metadata\":{\"a\":{\"b\":[1,{\"c\":null}]}}",
];

fn mutate(rng: &mut ChaCha8Rng, line: &[u8]) -> Vec<u8> {
    let mut l = line.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if l.is_empty() {
            l.extend_from_slice(TOKENS[rng.random_range(0..TOKENS.len())]);
            continue;
        }
        let at = rng.random_range(0..l.len());
        match rng.random_range(0..6) {
            0 => l[at] = rng.random(),
            1 => l.truncate(at),
            2 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                l.splice(at..at, t.iter().copied());
            }
            3 => {
                let end = (at + rng.random_range(1..32)).min(l.len());
                l.drain(at..end);
            }
            4 => {
                // Duplicate a slice somewhere else (duplicate keys, repeated values).
                let end = (at + rng.random_range(1..64)).min(l.len());
                let piece = l[at..end].to_vec();
                let to = rng.random_range(0..l.len());
                l.splice(to..to, piece);
            }
            _ => {
                // Replace a digit run or a quote with a token of another type.
                if let Some(p) = l[at..]
                    .iter()
                    .position(|b| b.is_ascii_digit() || *b == b'"')
                {
                    let t = TOKENS[rng.random_range(0..TOKENS.len())];
                    let p = at + p;
                    l.splice(p..p + 1, t.iter().copied());
                }
            }
        }
    }
    l.retain(|b| *b != b'\n');
    l
}

#[test]
fn decoder_survives_mutated_lines_of_every_kind() {
    let n = iters(20000);
    let mut total = 0usize;
    for (k, kind) in CheckpointKind::ALL.into_iter().enumerate() {
        let seeds = seed_lines(kind);
        let schema = kind.schema();
        let mut rng = ChaCha8Rng::seed_from_u64(0xF022 + k as u64);
        for round in 0..n / 5 {
            let lines: Vec<Vec<u8>> = (0..8)
                .map(|_| {
                    let pick = rng.random_range(0..seeds.len());
                    mutate(&mut rng, &seeds[pick])
                })
                .collect();
            // Skip mode: every line is decoded or reported, and the batch is well formed.
            let opts = DecodeOptions {
                on_error: OnError::Skip,
                batch_rows: 3,
            };
            let mut d = JsonlDecoder::new(Arc::clone(&schema), &schema, "fuzz.jsonl", opts);
            let mut rows = 0;
            let mut blank = 0;
            for (i, l) in lines.iter().enumerate() {
                // Blank as the decoder sees it: a BOM on line 1 and whitespace are nothing.
                let body = if i == 0 {
                    l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l)
                } else {
                    l
                };
                if body.iter().all(u8::is_ascii_whitespace) {
                    blank += 1;
                }
                d.decode_line(l, i as u64 + 1)
                    .expect("skip mode never fails a line");
                if d.is_full() {
                    rows += d
                        .flush()
                        .expect("a flush of decoded rows succeeds")
                        .map_or(0, |b| b.num_rows());
                }
            }
            rows += d
                .flush()
                .expect("a flush of decoded rows succeeds")
                .map_or(0, |b| b.num_rows());
            let skipped = d.skipped().len();
            // Every line that is not blank is a row or a reported skip, never both or neither.
            assert_eq!(
                rows + skipped + blank,
                lines.len(),
                "round {round}: rows lost or doubled"
            );
            // Fail mode: an error names the file, a line and carries a message.
            let mut f = JsonlDecoder::new(
                Arc::clone(&schema),
                &schema,
                "fuzz.jsonl",
                DecodeOptions::default(),
            );
            for (i, l) in lines.iter().enumerate() {
                if let Err(e) = f.decode_line(l, i as u64 + 1) {
                    let text = e.to_string();
                    assert!(
                        text.starts_with(&format!("fuzz.jsonl:{}:", i + 1)),
                        "{text}"
                    );
                    break;
                }
            }
            total += lines.len();
        }
    }
    assert!(total >= n, "ran {total} lines");
}

#[test]
fn decoder_survives_random_bytes() {
    let schema = CheckpointKind::Summaries.schema();
    let mut rng = ChaCha8Rng::seed_from_u64(0xB17E5);
    for _ in 0..iters(3000) {
        let len = rng.random_range(0..200);
        let mut line: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) {
            line.insert(0, b'{');
        }
        line.retain(|b| *b != b'\n');
        let mut d = JsonlDecoder::new(
            Arc::clone(&schema),
            &schema,
            "r.jsonl",
            DecodeOptions::default(),
        );
        let _ = d.decode_line(&line, 1);
        let _ = d.flush();
    }
}

fn random_name(rng: &mut ChaCha8Rng) -> String {
    const PARTS: &[&str] = &[
        "..",
        ".",
        "/",
        "a",
        "summaries",
        ".jsonl",
        ".parquet",
        "\0",
        "\\",
        "#1",
        "~",
        " ",
        "é",
        "C:",
        "//",
        "%2e%2e",
    ];
    let long = "x".repeat(300);
    (0..rng.random_range(0..6))
        .map(|_| {
            let i = rng.random_range(0..=PARTS.len());
            if i == PARTS.len() {
                long.as_str()
            } else {
                PARTS[i]
            }
        })
        .collect()
}

#[test]
fn names_and_targets_never_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = ckpt::Root::local(dir.path()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x4A3E);
    for _ in 0..iters(100_000) {
        let name = random_name(&mut rng);
        if ckpt::format::validate_name(&name).is_ok() {
            assert!(
                !name
                    .split('/')
                    .any(|p| p == ".." || p == "." || p.is_empty()),
                "{name:?} accepted"
            );
            assert!(
                !name.starts_with('/') && !name.contains('\0') && !name.contains('\\'),
                "{name:?} accepted"
            );
            let url = root.url_of(&name).unwrap();
            assert!(
                url.as_str().starts_with(root.url().as_str()),
                "{name:?} -> {url}"
            );
        }
        if let Ok(target) = ckpt::exec::resolve_target(&root, &name) {
            // A relative target lands inside the root (URLs are used as given, by design).
            if url::Url::parse(&name)
                .map(|u| u.scheme().len() <= 1)
                .unwrap_or(true)
            {
                assert!(
                    target.starts_with(root.url().as_str()),
                    "{name:?} -> {target}"
                );
            }
        }
    }
    // Nothing was created outside the root's directory tree.
    let parent = dir.path().parent().unwrap();
    assert!(parent.join("summaries.jsonl").metadata().is_err());
}

#[test]
fn root_urls_parse_or_fail_cleanly() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x0A11);
    const PIECES: &[&str] = &[
        "s3://",
        "memory://",
        "file://",
        "gs://",
        "az://",
        "http://",
        "ftp://",
        "bucket",
        "/",
        "..",
        "?q=1",
        "#f",
        "user:pw@",
        "%00",
        ":9000",
        "\0",
        " ",
    ];
    for _ in 0..iters(5000) {
        let s: String = (0..rng.random_range(0..6))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect();
        // Only URLs: anything else is a local path, which would create directories.
        match url::Url::parse(&s) {
            Ok(u) if u.scheme().len() > 1 && u.scheme() != "file" => {}
            _ => continue,
        }
        match ckpt::Root::parse(&s) {
            Ok(root) => {
                let shown = root.to_string();
                assert!(!shown.contains("pw@"), "{shown} shows a password");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
