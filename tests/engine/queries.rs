//! Every example in `queries/` run against a copy of `data/` through the library
//! (`CheckpointSession` + `exec::plan_statements`), its answer checked against values
//! computed here from the JSONL files with serde_json alone.
//!
//! Each query runs on three roots: a copy of `data/` as it is (where `summaries` is the
//! Parquet file), a copy holding only the JSONL files, and those converted to Parquet in
//! Kura's layout, so every reader gives the same answer.
//! A new file in `queries/` fails `every_query_file_is_checked` until it gets a check here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ckpt::CheckpointSession;
use serde_json::{Map, Value};

use crate::common;

/// The files of `queries/`, each with its check below.
const CHECKED: &[&str] = &[
    "cluster_sizes.sql",
    "frustrated.sql",
    "hierarchy.sql",
    "metadata.sql",
    "nearest.sql",
    "summaries_by_cluster.sql",
    "to_parquet.sql",
    "topics.sql",
];

type Row = Map<String, Value>;

/// Reads a JSONL file of `data/` as JSON objects.
fn jsonl(name: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(common::repo_dir().join("data").join(name)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The sample checkpoints, parsed once per test.
struct Data {
    summaries: Vec<Row>,
    clusters: Vec<Row>,
    meta_clusters: Vec<Row>,
    dimensionality: Vec<Row>,
    conversations: usize,
}

fn data() -> Data {
    Data {
        summaries: jsonl("summaries.jsonl"),
        clusters: jsonl("clusters.jsonl"),
        meta_clusters: jsonl("meta_clusters.jsonl"),
        dimensionality: jsonl("dimensionality.jsonl"),
        conversations: jsonl("conversations.jsonl").len(),
    }
}

/// The roots every query runs on.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// `data/` as it is: JSONL and native Parquet; bare names are the Parquet files.
    Both,
    /// Only the JSONL files.
    Jsonl,
    /// The JSONL files converted to Parquet in Kura's layout (lists and metadata as text).
    KuraParquet,
}

const VARIANTS: [Variant; 3] = [Variant::Both, Variant::Jsonl, Variant::KuraParquet];

/// A copy of `data/` in a temporary directory, in the form `variant` says.
async fn copy_of_data(variant: Variant) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copied = common::copy_sample(dir.path(), !matches!(variant, Variant::Both)).len();
    if !matches!(variant, Variant::KuraParquet) {
        return dir;
    }
    let kura = tempfile::tempdir().unwrap();
    let opts = ckpt::ops::convert::ConvertOptions {
        to: Some(ckpt::FileFormat::Parquet),
        write: ckpt::WriteOptions {
            layout: ckpt::Layout::Kura,
            ..Default::default()
        },
        ..Default::default()
    };
    let done = ckpt::ops::convert::convert(
        dir.path().to_str().unwrap(),
        kura.path().to_str().unwrap(),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(done.len(), copied);
    kura
}

fn query_text(file: &str) -> String {
    std::fs::read_to_string(common::repo_dir().join("queries").join(file)).unwrap()
}

/// Runs every statement of `queries/FILE` in `root`; returns the rows of each.
async fn run_file(root: &Path, file: &str) -> Vec<Vec<Row>> {
    let session = CheckpointSession::open(root.to_str().unwrap())
        .await
        .unwrap();
    common::statement_rows(&session, &query_text(file), file).await
}

/// Runs a one-statement file on every variant of `data/` and hands each answer to `check`.
async fn check_file(file: &str, check: impl Fn(&[Row], &str)) {
    for variant in VARIANTS {
        let dir = copy_of_data(variant).await;
        let mut results = run_file(dir.path(), file).await;
        assert_eq!(results.len(), 1, "{file} is one statement");
        check(&results.remove(0), &format!("{file} on {variant:?}"));
    }
}

fn s<'a>(row: &'a Row, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}
fn int(row: &Row, key: &str) -> Option<i64> {
    row.get(key).and_then(Value::as_i64)
}
fn float(row: &Row, key: &str) -> f64 {
    row.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} is a number in {row:?}"))
}
fn len(row: &Row, key: &str) -> usize {
    row.get(key)
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0)
}
fn strings(row: &Row, key: &str) -> Vec<String> {
    row[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}
fn floats(row: &Row, key: &str) -> Option<Vec<f64>> {
    row.get(key)?
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect())
}

/// `got` is `exact` rounded to `decimals` places (by whatever rounding of halves).
fn assert_rounded(got: f64, exact: f64, decimals: i32, what: &str) {
    let half = 0.5 * 10f64.powi(-decimals) + 1e-9;
    assert!(
        (got - exact).abs() <= half,
        "{what}: {got} is not {exact} rounded to {decimals} places"
    );
    let scaled = got * 10f64.powi(decimals);
    assert!(
        (scaled - scaled.round()).abs() < 1e-6,
        "{what}: {got} has more than {decimals} decimals"
    );
}

#[test]
fn every_query_file_is_checked() {
    let mut found: Vec<String> = std::fs::read_dir(common::repo_dir().join("queries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    assert_eq!(
        found, CHECKED,
        "queries/ changed: every file needs a check in tests/queries.rs (and an entry in CHECKED)"
    );
}

#[test]
fn every_query_file_says_what_it_answers() {
    for file in CHECKED {
        let text = query_text(file);
        let header: Vec<&str> = text
            .lines()
            .take_while(|l| l.starts_with("--"))
            .map(|l| l.trim_start_matches('-').trim())
            .filter(|l| !l.is_empty())
            .collect();
        assert!(
            header.len() >= 2 && header.concat().len() > 60,
            "{file} must open with a comment saying what it answers, found {header:?}"
        );
        assert!(
            header
                .iter()
                .any(|l| l.starts_with("ckpt query data -f queries/")),
            "{file}: the header shows how to run it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics() {
    let d = data();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for r in &d.summaries {
        *counts
            .entry(s(r, "topic").unwrap_or("(none)").to_owned())
            .or_default() += 1;
    }
    let mut expected: Vec<(String, i64)> = counts.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert!(expected.len() > 10 && expected.iter().any(|(t, _)| t == "(none)"));
    check_file("topics.sql", |rows, what| {
        let got: Vec<(String, i64)> = rows
            .iter()
            .map(|r| {
                (
                    s(r, "topic").unwrap().to_owned(),
                    int(r, "conversations").unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{what}");
        assert_eq!(
            got.iter().map(|(_, n)| n).sum::<i64>(),
            d.summaries.len() as i64
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frustrated() {
    let d = data();
    let mut rated: Vec<&Row> = d
        .summaries
        .iter()
        .filter(|r| int(r, "user_frustration").is_some())
        .collect();
    // user_frustration desc, concerning_score desc (nulls last), chat_id.
    rated.sort_by(|a, b| {
        int(b, "user_frustration")
            .cmp(&int(a, "user_frustration"))
            .then(int(b, "concerning_score").cmp(&int(a, "concerning_score")))
            .then(s(a, "chat_id").cmp(&s(b, "chat_id")))
    });
    let expected: Vec<&Row> = rated.into_iter().take(20).collect();
    assert_eq!(int(expected[0], "user_frustration"), Some(5));
    check_file("frustrated.sql", |rows, what| {
        assert_eq!(rows.len(), 20, "{what}");
        for (got, want) in rows.iter().zip(&expected) {
            assert_eq!(s(got, "chat_id"), s(want, "chat_id"), "{what}");
            assert_eq!(
                int(got, "user_frustration"),
                int(want, "user_frustration"),
                "{what}"
            );
            assert_eq!(
                int(got, "concerning_score"),
                int(want, "concerning_score"),
                "{what}"
            );
            assert_eq!(
                int(got, "assistant_errors"),
                Some(len(want, "assistant_errors") as i64),
                "{what}"
            );
            assert_eq!(got["topic"], want["topic"], "{what}");
            assert_eq!(got["request"], want["request"], "{what}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sizes() {
    let d = data();
    let total: usize = d.clusters.iter().map(|c| len(c, "chat_ids")).sum();
    // Every summary is in exactly one base cluster.
    assert_eq!(total, d.summaries.len());
    let mut expected: Vec<(String, String, i64)> = d
        .clusters
        .iter()
        .map(|c| {
            // Kura's computed `count` is the number of chat_ids.
            assert_eq!(int(c, "count"), Some(len(c, "chat_ids") as i64));
            (
                s(c, "name").unwrap().to_owned(),
                s(c, "slug").unwrap().to_owned(),
                len(c, "chat_ids") as i64,
            )
        })
        .collect();
    expected.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    check_file("cluster_sizes.sql", |rows, what| {
        let got: Vec<(String, String, i64)> = rows
            .iter()
            .map(|r| {
                (
                    s(r, "name").unwrap().to_owned(),
                    s(r, "slug").unwrap().to_owned(),
                    int(r, "conversations").unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{what}");
        for (r, (_, _, n)) in rows.iter().zip(&expected) {
            let exact = 100.0 * *n as f64 / total as f64;
            assert_rounded(float(r, "share_pct"), exact, 1, what);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hierarchy() {
    let d = data();
    let by_id: HashMap<&str, &Row> = d
        .meta_clusters
        .iter()
        .map(|c| (s(c, "id").unwrap(), c))
        .collect();
    // Depth and path by following parent links up to the root.
    let mut expected: Vec<(String, i64, String, i64, String, Option<String>)> = d
        .meta_clusters
        .iter()
        .map(|c| {
            let mut names = vec![s(c, "name").unwrap()];
            let mut cur = c;
            while let Some(p) = s(cur, "parent_id") {
                cur = by_id[p];
                names.push(s(cur, "name").unwrap());
            }
            names.reverse();
            let depth = names.len() as i64 - 1;
            (
                names.join(" > "),
                depth,
                format!("{}{}", "  ".repeat(depth as usize), s(c, "name").unwrap()),
                len(c, "chat_ids") as i64,
                s(c, "id").unwrap().to_owned(),
                s(c, "parent_id").map(str::to_owned),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(expected.iter().map(|e| e.1).max(), Some(2), "three levels");
    // Kura's 2-D projection numbers the same levels, root = 0.
    let levels: HashMap<&str, i64> = d
        .dimensionality
        .iter()
        .map(|c| (s(c, "id").unwrap(), int(c, "level").unwrap()))
        .collect();
    for e in &expected {
        assert_eq!(levels[e.4.as_str()], e.1, "level of {}", e.0);
    }
    check_file("hierarchy.sql", |rows, what| {
        let got: Vec<(String, i64, String, i64, String, Option<String>)> = rows
            .iter()
            .map(|r| {
                (
                    s(r, "path").unwrap().to_owned(),
                    int(r, "depth").unwrap(),
                    s(r, "cluster").unwrap().to_owned(),
                    int(r, "conversations").unwrap(),
                    s(r, "id").unwrap().to_owned(),
                    s(r, "parent_id").map(str::to_owned),
                )
            })
            .collect();
        // Every meta cluster once, under a root, in path order.
        assert_eq!(got, expected, "{what}");
    })
    .await;
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest() {
    let d = data();
    let target = d
        .summaries
        .iter()
        .find(|r| s(r, "chat_id") == Some("81_claude-v1_0"))
        .expect("the sample has the summary nearest.sql asks about");
    let t = floats(target, "embedding").unwrap();
    let mut sims: Vec<(f64, &str)> = d
        .summaries
        .iter()
        .filter(|r| s(r, "chat_id") != s(target, "chat_id"))
        .filter_map(|r| Some((cosine(&t, &floats(r, "embedding")?), s(r, "chat_id")?)))
        .collect();
    sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    sims.truncate(10);
    check_file("nearest.sql", |rows, what| {
        assert_eq!(rows.len(), 10, "{what}");
        for (r, (sim, id)) in rows.iter().zip(&sims) {
            assert_eq!(s(r, "chat_id"), Some(*id), "{what}");
            let got = float(r, "similarity");
            assert!((got - sim).abs() < 1e-12, "{what}: {id}: {got} vs {sim}");
        }
        // Sorted, most similar first.
        let got: Vec<f64> = rows.iter().map(|r| float(r, "similarity")).collect();
        assert!(got.windows(2).all(|w| w[0] >= w[1]), "{what}: {got:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata() {
    let d = data();
    #[derive(Default)]
    struct Model {
        n: i64,
        turns: i64,
        wins: i64,
        tagged: i64,
    }
    let mut models: BTreeMap<String, Model> = BTreeMap::new();
    for r in &d.summaries {
        let m = r["metadata"].as_object().unwrap();
        let e = models
            .entry(m["model"].as_str().unwrap().to_owned())
            .or_default();
        e.n += 1;
        e.turns += m["conversation_turns"].as_i64().unwrap();
        e.wins += m["winner"].as_bool().unwrap() as i64;
        e.tagged += m.contains_key("tags") as i64;
    }
    let mut expected: Vec<(String, Model)> = models.into_iter().collect();
    expected.sort_by(|a, b| b.1.n.cmp(&a.1.n).then(a.0.cmp(&b.0)));
    assert!(expected.iter().any(|(_, m)| m.tagged > 0 && m.tagged < m.n));
    check_file("metadata.sql", |rows, what| {
        let names: Vec<&str> = rows.iter().map(|r| s(r, "model").unwrap()).collect();
        let want: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, want, "{what}");
        for (r, (name, m)) in rows.iter().zip(&expected) {
            assert_eq!(int(r, "conversations"), Some(m.n), "{what}: {name}");
            assert_eq!(int(r, "wins"), Some(m.wins), "{what}: {name}");
            assert_eq!(int(r, "tagged"), Some(m.tagged), "{what}: {name}");
            assert_rounded(float(r, "avg_turns"), m.turns as f64 / m.n as f64, 2, what);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_by_cluster() {
    let d = data();
    let by_chat: HashMap<&str, &Row> = d
        .summaries
        .iter()
        .map(|r| (s(r, "chat_id").unwrap(), r))
        .collect();
    struct Expected {
        cluster: String,
        n: i64,
        frustration: f64,
        concern: f64,
        errors: i64,
    }
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let mut expected: Vec<Expected> = d
        .clusters
        .iter()
        .map(|c| {
            let members: Vec<&Row> = strings(c, "chat_ids")
                .iter()
                .map(|id| by_chat[id.as_str()])
                .collect();
            let avg = |k: &str| {
                let v: Vec<i64> = members.iter().filter_map(|m| int(m, k)).collect();
                v.iter().sum::<i64>() as f64 / v.len() as f64
            };
            Expected {
                cluster: s(c, "name").unwrap().to_owned(),
                n: members.len() as i64,
                frustration: avg("user_frustration"),
                concern: avg("concerning_score"),
                errors: members
                    .iter()
                    .map(|m| len(m, "assistant_errors") as i64)
                    .sum(),
            }
        })
        .collect();
    expected.sort_by(|a, b| {
        round2(b.frustration)
            .total_cmp(&round2(a.frustration))
            .then(a.cluster.cmp(&b.cluster))
    });
    check_file("summaries_by_cluster.sql", |rows, what| {
        let names: Vec<&str> = rows.iter().map(|r| s(r, "cluster").unwrap()).collect();
        let want: Vec<&str> = expected.iter().map(|e| e.cluster.as_str()).collect();
        assert_eq!(names, want, "{what}");
        for (r, e) in rows.iter().zip(&expected) {
            assert_eq!(int(r, "conversations"), Some(e.n), "{what}: {}", e.cluster);
            assert_eq!(
                int(r, "assistant_errors"),
                Some(e.errors),
                "{what}: {}",
                e.cluster
            );
            assert_rounded(float(r, "avg_frustration"), e.frustration, 2, what);
            assert_rounded(float(r, "avg_concern"), e.concern, 2, what);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_parquet() {
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    let d = data();
    let expected_rows = [
        ("summaries", d.summaries.len()),
        ("conversations", d.conversations),
        ("clusters", d.clusters.len()),
        ("meta_clusters", d.meta_clusters.len()),
        ("dimensionality", d.dimensionality.len()),
    ];
    let mut topics: BTreeMap<String, i64> = BTreeMap::new();
    for r in &d.summaries {
        *topics
            .entry(s(r, "topic").unwrap_or("(none)").to_owned())
            .or_default() += 1;
    }
    for variant in VARIANTS {
        let dir = copy_of_data(variant).await;
        let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        let results = run_file(dir.path(), "to_parquet.sql").await;
        // One COPY per checkpoint, each reporting the rows it wrote.
        assert_eq!(results.len(), expected_rows.len());
        for (rows, (name, n)) in results.iter().zip(expected_rows) {
            assert_eq!(rows.len(), 1, "{name}");
            assert_eq!(int(&rows[0], "count"), Some(n as i64), "{name}");
        }
        // The sources are untouched; the copies are in parquet/ inside the root.
        for (p, bytes) in &before {
            assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
        }
        let out = dir.path().join("parquet");
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut want: Vec<String> = expected_rows
            .iter()
            .map(|(n, _)| format!("{n}.parquet"))
            .collect();
        want.sort();
        assert_eq!(files, want);
        // parquet/ is a root of its own, not one checkpoint of the source root.
        let listed = ckpt::ops::ls::describe_root(&ckpt::Root::local(dir.path()).unwrap())
            .await
            .unwrap();
        assert!(
            listed.iter().all(|i| !i.file.starts_with("parquet")),
            "{listed:?}"
        );
        for (name, n) in expected_rows {
            let f = std::fs::File::open(out.join(format!("{name}.parquet"))).unwrap();
            let reader = SerializedFileReader::new(f).unwrap();
            let meta = reader.metadata();
            assert_eq!(meta.file_metadata().num_rows(), n as i64, "{name}");
            for rg in meta.row_groups() {
                for col in rg.columns() {
                    assert!(
                        matches!(col.compression(), Compression::ZSTD(_)),
                        "{name}: {} is {:?}",
                        col.column_path(),
                        col.compression()
                    );
                }
            }
        }
        // The Parquet root answers the same questions, with the kinds' types.
        let session = CheckpointSession::open(out.to_str().unwrap())
            .await
            .unwrap();
        for (name, n) in expected_rows {
            let df = session
                .sql(&format!("SELECT count(*) AS n FROM {name}"))
                .await
                .unwrap();
            let batches = df.collect().await.unwrap();
            let got = datafusion::arrow::array::AsArray::as_primitive::<
                datafusion::arrow::datatypes::Int64Type,
            >(batches[0].column(0))
            .value(0);
            assert_eq!(got, n as i64, "{name}");
        }
        let schema = session.table("summaries").await.unwrap().schema().clone();
        let kind = ckpt::CheckpointKind::Summaries.schema();
        let got: Vec<(&String, &datafusion::arrow::datatypes::DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name(), f.data_type()))
            .collect();
        let want: Vec<(&String, &datafusion::arrow::datatypes::DataType)> = kind
            .fields()
            .iter()
            .map(|f| (f.name(), f.data_type()))
            .collect();
        assert_eq!(got, want);
        let mut topic_rows = run_file(&out, "topics.sql").await;
        let got: BTreeMap<String, i64> = topic_rows
            .remove(0)
            .iter()
            .map(|r| {
                (
                    s(r, "topic").unwrap().to_owned(),
                    int(r, "conversations").unwrap(),
                )
            })
            .collect();
        assert_eq!(got, topics);
    }
}
