//! Bounded randomized fuzzing, run with every `cargo test`: mutated JSONL lines of every
//! kind through the decoder, and random names and URLs through the name and root parsers.
//! The properties: no panic, every line is either decoded or reported (skip mode), and an
//! accepted name never leaves its root.
//!
//! Seeds are fixed so a failure reproduces; `CKPT_FUZZ_ITERS` raises the iteration count
//! for a longer local run.

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
            let v: Vec<_> = (0..20)
                .map(|i| ckpt::ops::generate::summary(i, 4, 7))
                .collect();
            ckpt::ConversationSummary::to_batch(&v).unwrap()
        }
        CheckpointKind::Conversations => {
            let v: Vec<_> = (0..10)
                .map(|i| ckpt::ops::generate::conversation(i, 7))
                .collect();
            ckpt::Conversation::to_batch(&v).unwrap()
        }
        CheckpointKind::Dimensionality => {
            let (_, meta) = ckpt::ops::generate::clusters(40, 7);
            ckpt::ProjectedCluster::to_batch(&ckpt::ops::generate::projections(&meta, 7)).unwrap()
        }
        CheckpointKind::Clusters | CheckpointKind::MetaClusters => {
            let (_, meta) = ckpt::ops::generate::clusters(40, 7);
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
    let mut total = ckpt_core::properties::DecodeOutcome::default();
    for (k, kind) in CheckpointKind::ALL.into_iter().enumerate() {
        let seeds = seed_lines(kind);
        let mut rng = ChaCha8Rng::seed_from_u64(0xF022 + k as u64);
        for _ in 0..n / 5 {
            let lines: Vec<Vec<u8>> = (0..8)
                .map(|_| {
                    let pick = rng.random_range(0..seeds.len());
                    mutate(&mut rng, &seeds[pick])
                })
                .collect();
            let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            let seen = ckpt_core::properties::decode_lines(kind, &lines);
            total.rows += seen.rows;
            total.skipped += seen.skipped;
            total.blank += seen.blank;
        }
    }
    assert!(total.rows + total.skipped + total.blank >= n, "{total:?}");
    // The mutations must exercise both outcomes, or the property above says little.
    assert!(total.rows > n / 20 && total.skipped > n / 20, "{total:?}");
}

#[test]
fn decoder_survives_random_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xB17E5);
    for i in 0..iters(3000) {
        let len = rng.random_range(0..200);
        let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) {
            data.insert(0, b'{');
        }
        let kind = CheckpointKind::ALL[i % CheckpointKind::ALL.len()];
        ckpt_core::properties::decode_lines(kind, &ckpt_core::properties::split_lines(&data));
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
    let mut accepted = 0;
    for _ in 0..iters(100_000) {
        accepted += usize::from(ckpt_storage::properties::check_name(
            &root,
            &random_name(&mut rng),
        ));
    }
    assert!(accepted > 0);
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
        "user:s3cretpw@",
        "%00",
        ":9000",
        "\0",
        " ",
    ];
    let mut made = 0;
    for _ in 0..iters(5000) {
        let s: String = (0..rng.random_range(0..6))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect();
        made += usize::from(ckpt_storage::properties::check_root_url(&s));
    }
    assert!(made > 0);
}
