//! Hugging Face dataset directories, Kura's third checkpoint format: datasets Kura saved
//! (tests/corpus/hf_kura, with what Kura loads from them) read equal by the CLI, SQL and
//! the managers; ckpt's own datasets read back exactly; atomic replacement, locally and
//! on S3 (moto, started by `scripts/test`).

use std::path::{Path, PathBuf};

use crate::common::{self, S3, ckpt};
use ckpt::{CheckpointManager, Cluster, ConversationSummary, Root};
use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Kura's datasets in a fresh directory.
fn kura_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&corpus().join("hf_kura"), dir.path());
    dir
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(corpus().join("hf_kura.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn jsonl_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Kura drops `count` on load; JSONL has it (computed): compare without it.
fn without_count(mut rows: Vec<Value>) -> Vec<Value> {
    for r in &mut rows {
        if let Some(o) = r.as_object_mut() {
            o.remove("count");
        }
    }
    rows
}

/// The rows of `sql` over `root`, as JSON; `pre` are arguments before the command.
fn query(root: &str, sql: &str, pre: &[String]) -> Value {
    let mut args: Vec<String> = pre.to_vec();
    args.extend(["query", root, sql, "--format", "json"].map(String::from));
    let out = ckpt(&args).expect_ok(sql);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn count(root: &str, table: &str, pre: &[String]) -> u64 {
    let rows = query(root, &format!("SELECT count(*) AS n FROM {table}"), pre);
    rows[0]["n"].as_u64().unwrap()
}

#[test]
fn kura_datasets_are_listed_with_kind_format_and_rows() {
    let root = kura_root();
    let out = ckpt(["ls", root.path().to_str().unwrap(), "--format", "json"]).expect_ok("ls");
    let listed: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let by_name = |n: &str| {
        listed
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {}", out.stdout))
    };
    for (name, kind, rows) in [
        ("summaries", "summaries", 2),
        ("my_summaries", "summaries", 2),
        ("sharded", "summaries", 2),
        ("conversations", "conversations", 2),
        ("clusters", "clusters", 2),
        ("meta_clusters", "meta_clusters", 2),
        ("dimensionality", "dimensionality", 1),
    ] {
        let e = by_name(name);
        assert_eq!(e["kind"], kind, "{name}");
        assert_eq!(e["format"], "hf", "{name}");
        assert_eq!(e["rows"], rows, "{name}: the cache file beside is not read");
    }
    // A dataset without state.json is a save that did not finish.
    assert!(
        !listed.iter().any(|e| e["name"] == "unfinished"),
        "{}",
        out.stdout
    );
}

#[test]
fn sizes_passes_over_datasets() {
    let root = kura_root();
    std::fs::copy(corpus().join("good.jsonl"), root.path().join("good.jsonl")).unwrap();
    let out = ckpt(["sizes", root.path().to_str().unwrap()]).expect_ok("sizes");
    assert!(out.stdout.contains("good"), "{}", out.stdout);
    assert!(!out.stdout.contains("sharded"), "{}", out.stdout);
}

#[test]
fn kura_datasets_read_as_kura_loads_them() {
    let root = kura_root();
    let out = tempfile::tempdir().unwrap();
    ckpt([
        "convert",
        root.path().to_str().unwrap(),
        out.path().to_str().unwrap(),
        "--to",
        "jsonl",
    ])
    .expect_ok("convert hf -> jsonl");
    let expected = expected();
    for (name, rows) in &expected {
        let got = without_count(jsonl_rows(&out.path().join(format!("{name}.jsonl"))));
        let want = without_count(rows.as_array().unwrap().clone());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn sql_plans_decode_over_the_arrow_scan() {
    let root = kura_root();
    let r = root.path().to_str().unwrap();
    let out = ckpt([
        "query",
        r,
        "EXPLAIN SELECT request FROM summaries WHERE request IS NULL",
    ])
    .expect_ok("explain");
    assert!(out.stdout.contains("hf_column(request"), "{}", out.stdout);
    assert!(
        out.stdout.contains("file_type=arrow_stream"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("cache-"), "{}", out.stdout);
    let rows = query(
        r,
        "SELECT chat_id, user_frustration, languages, metadata->>'s' AS s FROM summaries ORDER BY chat_id",
        &[],
    );
    assert_eq!(
        rows,
        serde_json::json!([
            {"chat_id": "a", "user_frustration": null, "languages": ["en", "fr"], "s": "x"},
            {"chat_id": "b", "user_frustration": null, "languages": null, "s": null},
        ])
    );
    // Two shards: both read.
    assert_eq!(count(r, "sharded", &[]), 2);
}

#[test]
fn by_one_name_parquet_then_jsonl_then_the_dataset() {
    let root = kura_root();
    let r = root.path().to_str().unwrap();
    // A JSONL `summaries` of one row beside the dataset of two.
    let one = jsonl_rows(&corpus().join("good.jsonl"))[0].to_string();
    std::fs::write(root.path().join("summaries.jsonl"), format!("{one}\n")).unwrap();
    assert_eq!(count(r, "summaries", &[]), 1);
    assert_eq!(count(r, "\"summaries/\"", &[]), 2);
}

fn summaries() -> Vec<ConversationSummary> {
    vec![
        ConversationSummary {
            chat_id: "a".into(),
            summary: "".into(),
            request: Some("".into()),
            topic: None,
            languages: Some(vec![]),
            task: Some("t ✓".into()),
            concerning_score: Some(1),
            user_frustration: None,
            assistant_errors: None,
            embedding: Some(vec![0.5, -1.25]),
            ..Default::default()
        },
        ConversationSummary {
            chat_id: "b".into(),
            summary: "s".into(),
            ..Default::default()
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manager_saves_and_loads_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let m = CheckpointManager::hf(dir.path().to_str().unwrap()).unwrap();
    let rows = summaries();
    m.save("summaries", &rows).await.unwrap();
    assert!(dir.path().join("summaries/state.json").is_file());
    // Nulls stay nulls, and "", [] stay themselves, in what ckpt reads of its own files.
    let back: Vec<ConversationSummary> = m.load("summaries").await.unwrap().unwrap();
    assert_eq!(back, rows);
    let clusters = vec![Cluster {
        id: "c".into(),
        name: "n".into(),
        description: "d".into(),
        slug: "s".into(),
        chat_ids: vec!["a".into()],
        parent_id: None,
    }];
    m.save("clusters", &clusters).await.unwrap();
    assert_eq!(m.list().await.unwrap(), vec!["clusters", "summaries"]);
    assert_eq!(
        m.load::<Cluster>("clusters").await.unwrap().unwrap(),
        clusters
    );
    assert!(m.delete("clusters").await.unwrap());
    assert!(!dir.path().join("clusters").exists());
    assert!(m.load::<Cluster>("clusters").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().to_str().unwrap();
    let m = CheckpointManager::hf(r).unwrap();
    m.save("summaries", &summaries()).await.unwrap();
    // A source whose last line is bad: the convert fails after writing rows.
    let src = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(corpus().join("good.jsonl")).unwrap();
    std::fs::write(
        src.path().join("summaries.jsonl"),
        format!("{good}{{\"chat_id\": 5}}\n"),
    )
    .unwrap();
    ckpt([
        "convert",
        src.path().join("summaries.jsonl").to_str().unwrap(),
        r,
        "--to",
        "hf",
    ])
    .expect_err("bad line");
    let back: Vec<ConversationSummary> = m.load("summaries").await.unwrap().unwrap();
    assert_eq!(back, summaries());
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["summaries"], "no staging directory is left");
    // And a good one replaces it whole.
    std::fs::write(src.path().join("summaries.jsonl"), &good).unwrap();
    ckpt([
        "convert",
        src.path().join("summaries.jsonl").to_str().unwrap(),
        r,
        "--to",
        "hf",
    ])
    .expect_ok("convert");
    let back: Vec<ConversationSummary> = m.load("summaries").await.unwrap().unwrap();
    assert_eq!(back.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn datasets_on_s3() {
    let s3 = S3::from_env();
    let prefix = common::unique("hf");
    let url = s3.url(&prefix);
    let root = Root::with_options(&url, &s3.options()).unwrap();
    let m = CheckpointManager::new(root.clone(), ckpt::FileFormat::Hf).unwrap();
    m.save("summaries", &summaries()).await.unwrap();
    let back: Vec<ConversationSummary> = m.load("summaries").await.unwrap().unwrap();
    assert_eq!(back, summaries());
    // Saved again: the data file the committed state.json lists is not overwritten, and
    // the previous one goes once the new state.json is in.
    let more = vec![summaries()[1].clone()];
    m.save("summaries", &more).await.unwrap();
    assert_eq!(
        m.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap(),
        more
    );
    let arrows = root
        .list_dir("summaries")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.location.extension() == Some("arrow"))
        .count();
    assert_eq!(arrows, 1);
    // Data without state.json (a write that died before its commit) is no checkpoint.
    root.delete("summaries/state.json").await.unwrap();
    assert!(
        m.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .is_none()
    );
    // Kura's own datasets, uploaded, read as locally.
    let local = kura_root();
    let out = ckpt(
        s3.cli_args()
            .into_iter()
            .chain([
                "convert".to_owned(),
                local.path().to_str().unwrap().to_owned(),
                s3.url(&format!("{prefix}/copy")),
                "--to".to_owned(),
                "hf".to_owned(),
            ])
            .collect::<Vec<_>>(),
    )
    .expect_ok("convert to s3");
    assert!(out.stdout.contains("conversations"), "{}", out.stdout);
    let copy = s3.url(&format!("{prefix}/copy"));
    assert_eq!(count(&copy, "conversations", &s3.cli_args()), 2);
}
