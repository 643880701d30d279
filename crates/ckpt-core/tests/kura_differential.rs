//! ckpt's JSONL codec against Kura's own models, line by line: seeded lines of every kind
//! (`tests/python/kura_differential.py generate`) are decoded and re-encoded by ckpt, and
//! Kura's `model_validate_json` judges both the line and ckpt's output. What Kura accepts,
//! ckpt accepts with the same values; what Kura rejects, ckpt rejects (README,
//! "Validation", lists the two deliberate differences). Every disagreement ever found is
//! kept in `tests/kura_differential/corpus.jsonl` and replayed on every run.
//!
//! Needs `CKPT_PYTHON` (a Python with Kura, set by `scripts/test`); fails without it.
//! `CKPT_DIFF_SEED` replays a seed, `CKPT_DIFF_LINES` sets the lines per kind (default and
//! minimum 10 000).

use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt_core::CheckpointKind;
use ckpt_core::jsonl::{DecodeOptions, JsonlDecoder, JsonlEncoder};

const MIN_LINES: usize = 10_000;

fn python() -> String {
    match std::env::var("CKPT_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!("CKPT_PYTHON is not set: run scripts/test, which sets up Python with Kura"),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(py: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(
        out.status.success(),
        "{py} {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// ckpt's verdict on one line: its JSONL output, or its error.
fn verdict(kind: CheckpointKind, line: &str) -> serde_json::Value {
    let schema = kind.schema();
    let mut d = JsonlDecoder::new(
        schema.clone(),
        &schema,
        "diff.jsonl",
        DecodeOptions::default(),
    );
    if let Err(e) = d.decode_line(line.as_bytes(), 1) {
        let text = e.to_string();
        assert!(
            text.starts_with("diff.jsonl:1:"),
            "an error names file and line: {text}"
        );
        return serde_json::json!({ "error": text });
    }
    let Some(batch) = d.flush().expect("decoded rows flush") else {
        return serde_json::json!({ "error": "blank line" });
    };
    let mut out = Vec::new();
    JsonlEncoder
        .encode(&batch, &mut out)
        .expect("a decoded batch encodes");
    let text = String::from_utf8(out).expect("JSONL is UTF-8");
    serde_json::json!({ "ok": text.trim_end_matches('\n') })
}

#[test]
fn ckpt_reads_each_line_as_kuras_models_do() {
    let py = python();
    let seed: u64 = match std::env::var("CKPT_DIFF_SEED") {
        Ok(s) => s.parse().expect("CKPT_DIFF_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        }
    };
    let lines: usize = std::env::var("CKPT_DIFF_LINES")
        .ok()
        .map(|s| s.parse().expect("CKPT_DIFF_LINES is a number"))
        .unwrap_or(MIN_LINES)
        .max(MIN_LINES);
    println!("differential seed {seed} (replay: CKPT_DIFF_SEED={seed}), {lines} lines per kind");
    let script = repo().join("tests/python/kura_differential.py");
    let corpus = repo().join("tests/kura_differential/corpus.jsonl");
    let dir = std::env::temp_dir().join(format!("ckpt-diff-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (script, corpus_s, dir_s) = (
        script.to_str().unwrap(),
        corpus.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    run(
        &py,
        &[
            script,
            "generate",
            &seed.to_string(),
            &lines.to_string(),
            dir_s,
            corpus_s,
        ],
    );
    let kinds = [
        ("summaries", CheckpointKind::Summaries),
        ("clusters", CheckpointKind::Clusters),
        ("meta_clusters", CheckpointKind::MetaClusters),
        ("dimensionality", CheckpointKind::Dimensionality),
        ("conversations", CheckpointKind::Conversations),
    ];
    for (name, kind) in kinds {
        let input = std::fs::read_to_string(dir.join(format!("{name}.lines"))).unwrap();
        let mut out = String::new();
        for l in input.lines() {
            let line: String = serde_json::from_str(l).unwrap();
            out.push_str(&verdict(kind, &line).to_string());
            out.push('\n');
        }
        std::fs::write(dir.join(format!("{name}.ckpt")), out).unwrap();
    }
    let report: serde_json::Value =
        serde_json::from_str(&run(&py, &[script, "check", dir_s, corpus_s])).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let mut failures = Vec::new();
    for (name, _) in kinds {
        let counts = &report[name]["counts"];
        println!("{name}: {counts}");
        assert!(counts["lines"].as_u64().unwrap() >= lines as u64);
        if counts["disagree"].as_u64() != Some(0) {
            failures.push(format!(
                "{name}: {} disagreements, e.g.\n{}",
                counts["disagree"],
                serde_json::to_string_pretty(&report[name]["examples"]).unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "ckpt and Kura disagree (seed {seed}; {} new lines added to the corpus):\n{}",
        report["corpus_added"],
        failures.join("\n")
    );
}
