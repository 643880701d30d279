//! The `ckpt` command line end to end (plus the library where a test needs a
//! CheckpointSession that outlives one command): query output formats, scripts, COPY,
//! convert, sizes, ls, several roots, the live catalog, declared schemas, memory limits and
//! the shell. Expected values come from the sample's JSONL files, read here with serde_json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Map, Value};

use crate::common::{self, sample_dir};

type Row = Map<String, Value>;

fn ckpt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ckpt"));
    c.env_remove("CKPT_LOG");
    c
}

/// Runs `ckpt ARGS`, asserts success, returns stdout.
fn stdout_of<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = ckpt().args(args).assert().success().get_output().clone();
    String::from_utf8(out.stdout).unwrap()
}

/// A root holding `n` generated summaries with `dim`-dimensional embeddings (no
/// conversations).
async fn generated_summaries(n: usize, dim: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ckpt::ops::generate::generate(
        &ckpt::Root::local(dir.path()).unwrap(),
        &ckpt::ops::generate::GenerateOptions {
            summaries: n,
            dim,
            conversations: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    dir
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn read_jsonl(path: &Path) -> Vec<Row> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summaries() -> Vec<Row> {
    read_jsonl(&sample_dir().join("summaries.jsonl"))
}

/// The answer to [`TOPICS`], from the JSONL: (topic or "(none)", count), by count then topic.
fn topic_counts() -> Vec<(String, i64)> {
    let mut m: BTreeMap<String, i64> = BTreeMap::new();
    for r in summaries() {
        let t = r["topic"].as_str().unwrap_or("(none)").to_owned();
        *m.entry(t).or_default() += 1;
    }
    let mut v: Vec<(String, i64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

const TOPICS: &str = "SELECT coalesce(topic, '(none)') AS topic, count(*) AS n FROM summaries \
                      GROUP BY 1 ORDER BY n DESC, topic";

fn rows_of_json_array(text: &str) -> Vec<Row> {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON value ({e}):\n{text}"));
    v.as_array()
        .expect("one JSON array")
        .iter()
        .map(|r| r.as_object().expect("rows are objects").clone())
        .collect()
}

fn topic_pairs(rows: &[Row]) -> Vec<(String, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap().to_owned(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn parquet_meta(path: &Path) -> datafusion::parquet::file::metadata::ParquetMetaData {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let f = std::fs::File::open(path).unwrap();
    SerializedFileReader::new(f).unwrap().metadata().clone()
}

fn all_zstd(path: &Path) -> bool {
    use datafusion::parquet::basic::Compression;
    let meta = parquet_meta(path);
    meta.num_row_groups() > 0
        && meta.row_groups().iter().all(|rg| {
            rg.columns()
                .iter()
                .all(|c| matches!(c.compression(), Compression::ZSTD(_)))
        })
}

/// Every file in `dir` (hidden ones too) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let bytes = if e.path().is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (name, bytes)
        })
        .collect()
}

async fn count(session: &ckpt::CheckpointSession, sql: &str) -> i64 {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn help_shows_examples() {
    ckpt().arg("--help").assert().success().stdout(
        predicate::str::contains("Examples:")
            .and(predicate::str::contains("ckpt query data \"SELECT"))
            .and(predicate::str::contains("ckpt convert"))
            .and(predicate::str::contains("--root run1=")),
    );
    for cmd in ["query", "convert", "ls"] {
        ckpt()
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn query_prints_every_output_format() {
    let data = sample_dir();
    let expected = topic_counts();

    // table: a bordered grid with a header and one line per row.
    let table = stdout_of(["query", p(&data), TOPICS, "--format", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("+-") && lines[1].contains("| topic"));
    assert!(lines[1].contains("| n "));
    let body: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .copied()
        .collect();
    assert_eq!(body.len(), expected.len());
    for (line, (t, n)) in body.iter().zip(&expected) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells, [t.as_str(), &n.to_string()]);
    }

    // csv: header, then the rows.
    let csv = stdout_of(["query", p(&data), TOPICS, "--format", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("topic,n"));
    let got: Vec<(String, i64)> = lines
        .map(|l| {
            let (t, n) = l.rsplit_once(',').unwrap();
            (t.to_owned(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got, expected);

    // json: one array of row objects.
    let json = stdout_of(["query", p(&data), TOPICS, "--format", "json"]);
    assert_eq!(topic_pairs(&rows_of_json_array(&json)), expected);

    // ndjson: one object per line.
    let nd = stdout_of(["query", p(&data), TOPICS, "--format", "ndjson"]);
    let rows: Vec<Row> = nd
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(topic_pairs(&rows), expected);

    // markdown: a pipe table.
    let md = stdout_of(["query", p(&data), TOPICS, "--format", "markdown"]);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "| topic | n |");
    assert_eq!(lines[1], "|---|---|");
    let want: Vec<String> = expected
        .iter()
        .map(|(t, n)| format!("| {t} | {n} |"))
        .collect();
    assert_eq!(&lines[2..], want.as_slice());

    // An empty result is still one (empty) JSON array.
    let empty = stdout_of([
        "query",
        p(&data),
        "SELECT chat_id FROM summaries WHERE false",
        "--format",
        "json",
    ]);
    assert!(rows_of_json_array(&empty).is_empty());

    // An unknown format is a usage error, reported by clap with the choices.
    ckpt()
        .args(["query", p(&data), "SELECT 1", "--format", "yaml"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("invalid value 'yaml'").and(predicate::str::contains(
                "table, csv, json, ndjson, markdown",
            )),
        );
}

#[test]
fn json_output_keeps_values_as_json() {
    let data = sample_dir();
    let first = &summaries()[0];
    let id = first["chat_id"].as_str().unwrap();
    let sql = format!(
        "SELECT chat_id, languages, metadata, embedding, user_frustration, \
         metadata->'model' AS model, metadata->'tags' AS tags, metadata->'winner' AS winner, \
         json_get_int(metadata, 'conversation_turns') AS turns \
         FROM summaries WHERE chat_id = '{id}'"
    );
    let rows = rows_of_json_array(&stdout_of(["query", p(&data), &sql, "--format", "json"]));
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    // Lists are arrays, metadata is the object itself, embeddings read back bit for bit.
    assert_eq!(r["languages"], first["languages"]);
    assert!(r["metadata"].is_object());
    assert_eq!(r["metadata"], first["metadata"]);
    assert_eq!(r["embedding"], first["embedding"]);
    assert_eq!(r["user_frustration"], first["user_frustration"]);
    // JSON values picked out of metadata are JSON values too, not their debug form.
    let m = first["metadata"].as_object().unwrap();
    assert_eq!(r["model"], m["model"]);
    assert_eq!(r["winner"], m["winner"]);
    assert_eq!(r["tags"], m.get("tags").cloned().unwrap_or(Value::Null));
    assert_eq!(r["turns"], m["conversation_turns"]);
    // The same in the text formats: JSON text, not `{str=...}`.
    let csv = stdout_of(["query", p(&data), &sql, "--format", "csv"]);
    assert!(!csv.contains("{str=") && !csv.contains("{bool="), "{csv}");
    // CSV writes lists as JSON, so they read back.
    let many = summaries()
        .into_iter()
        .find(|r| r["languages"].as_array().is_some_and(|a| a.len() > 1))
        .unwrap();
    let id = many["chat_id"].as_str().unwrap();
    let csv = stdout_of([
        "query",
        p(&data),
        &format!("SELECT chat_id, languages FROM summaries WHERE chat_id = '{id}'"),
        "--format",
        "csv",
    ]);
    let quoted = format!("\"{}\"", many["languages"].to_string().replace('"', "\"\""));
    assert_eq!(csv, format!("chat_id,languages\n{id},{quoted}\n"));
}

#[test]
fn max_rows_cuts_the_output_and_says_so() {
    ckpt()
        .args([
            "query",
            p(&sample_dir()),
            "SELECT chat_id FROM summaries ORDER BY chat_id",
            "--format",
            "csv",
            "--max-rows",
            "3",
        ])
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| s.lines().count() == 4))
        .stderr(predicate::str::contains("250 rows, 3 shown"));
    let mut ids: Vec<String> = summaries()
        .iter()
        .map(|r| r["chat_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let out = stdout_of([
        "query",
        p(&sample_dir()),
        "SELECT chat_id FROM summaries ORDER BY chat_id",
        "--format",
        "csv",
        "--max-rows",
        "3",
    ]);
    assert_eq!(out.lines().skip(1).collect::<Vec<_>>(), ids[..3].to_vec());
}

#[test]
fn timing_reports_each_statement() {
    let assert = ckpt()
        .args([
            "query",
            p(&sample_dir()),
            "SELECT count(*) FROM summaries; SELECT chat_id FROM summaries LIMIT 7",
            "--timing",
        ])
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let re = predicate::str::is_match(
        r"^\d+ rows in (\d+(\.\d)? ms|\d+\.\d{2} s|\d+ min \d+ s|\d+ h \d+ min)$",
    )
    .unwrap();
    let timings: Vec<&str> = stderr.lines().filter(|l| re.eval(l)).collect();
    assert_eq!(timings.len(), 2, "{stderr}");
    assert!(timings[0].starts_with("1 rows in "));
    assert!(timings[1].starts_with("7 rows in "));
    // Without --timing: nothing on stderr.
    ckpt()
        .args(["query", p(&sample_dir()), "SELECT 1"])
        .assert()
        .success()
        .stderr(predicate::str::is_empty());
}

#[test]
fn sql_from_a_file_and_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("topics.sql");
    std::fs::write(&file, format!("-- counts by topic\n{TOPICS};\n")).unwrap();
    let expected = topic_counts();
    let from_file = stdout_of([
        "query",
        p(&sample_dir()),
        "-f",
        p(&file),
        "--format",
        "json",
    ]);
    assert_eq!(topic_pairs(&rows_of_json_array(&from_file)), expected);
    let out = ckpt()
        .args(["query", p(&sample_dir()), "--format", "json"])
        .write_stdin(format!("{TOPICS};\n"))
        .assert()
        .success()
        .get_output()
        .clone();
    let from_stdin = String::from_utf8(out.stdout).unwrap();
    assert_eq!(from_stdin, from_file);
    // Both at once is refused.
    ckpt()
        .args(["query", p(&sample_dir()), "SELECT 1", "-f", p(&file)])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not both"));
}

#[test]
fn several_statements_in_one_call() {
    let out = stdout_of([
        "query",
        p(&sample_dir()),
        "SELECT count(*) AS n FROM summaries; SELECT count(*) AS n FROM clusters;\n\
         CREATE VIEW angry AS SELECT * FROM summaries WHERE user_frustration = 5;\n\
         SELECT count(*) AS n FROM angry",
        "--format",
        "json",
    ]);
    // One array per statement that returns rows, in order (CREATE VIEW returns none).
    let values: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    let ns: Vec<i64> = values
        .iter()
        .filter_map(|v| v.as_array()?.first()?.get("n")?.as_i64())
        .collect();
    let angry = summaries()
        .iter()
        .filter(|r| r["user_frustration"] == 5)
        .count() as i64;
    let clusters = read_jsonl(&sample_dir().join("clusters.jsonl")).len() as i64;
    assert_eq!(ns, [250, clusters, angry]);
}

#[test]
fn a_failing_statement_stops_the_script_and_is_named() {
    let assert = ckpt()
        .args([
            "query",
            p(&sample_dir()),
            "SELECT 1 AS first_one; SELECT nope FROM summaries; SELECT 3 AS never_run",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "in statement: SELECT nope FROM summaries",
        ));
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("first_one"));
    assert!(!stdout.contains("never_run"));
    // A runtime error (a cast that fails on some row) is named the same way.
    ckpt()
        .args([
            "query",
            p(&sample_dir()),
            "SELECT CAST(chat_id AS INT) AS broken FROM summaries",
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("Cast error").and(predicate::str::contains(
                "in statement: SELECT CAST(chat_id",
            )),
        );
    // A syntax error too.
    ckpt()
        .args(["query", p(&sample_dir()), "SELEC 1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("syntax error"));
}

#[test]
fn copy_to_parquet_with_compression() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::copy_sample(&root, true);
    let out = stdout_of([
        "query",
        p(&root),
        "COPY summaries TO 'out/summaries.parquet' STORED AS PARQUET OPTIONS (compression 'zstd(3)')",
        "--format",
        "csv",
    ]);
    assert_eq!(out, "count\n250\n");
    let file = root.join("out/summaries.parquet");
    assert!(all_zstd(&file), "every column chunk is zstd");
    assert_eq!(parquet_meta(&file).file_metadata().num_rows(), 250);
    // Snappy when asked: a different codec, so the option is not ignored.
    stdout_of([
        "query",
        p(&root),
        "COPY clusters TO 'out/clusters.parquet' STORED AS PARQUET OPTIONS (compression 'snappy')",
    ]);
    assert!(!all_zstd(&root.join("out/clusters.parquet")));
    // The copy answers like the source, with the summaries' declared types.
    let json = stdout_of(["query", p(&root.join("out")), TOPICS, "--format", "json"]);
    assert_eq!(topic_pairs(&rows_of_json_array(&json)), topic_counts());
    let cols = stdout_of([
        "query",
        p(&root.join("out")),
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'summaries' \
         AND column_name = 'embedding'",
        "--format",
        "csv",
    ]);
    assert_eq!(cols, "data_type\nList(Float64)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_json_is_what_kura_loads() {
    use ckpt::{CheckpointManager, ConversationSummary};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::copy_sample(&root, false);
    // From the Parquet file (the bare name), to JSONL by extension and by STORED AS JSON.
    stdout_of([
        "query",
        p(&root),
        "COPY summaries TO 'export/summaries.jsonl'; \
         COPY summaries TO 'export/again.json' STORED AS JSON",
    ]);
    let original: Vec<ConversationSummary> = CheckpointManager::jsonl(p(&root))
        .unwrap()
        .load("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original.len(), 250);
    let exported: Vec<ConversationSummary> = CheckpointManager::jsonl(p(&root.join("export")))
        .unwrap()
        .load("summaries")
        .await
        .unwrap()
        .expect("summaries.jsonl was written");
    assert_eq!(exported, original);
    for file in ["summaries.jsonl", "again.json"] {
        let lines = read_jsonl(&root.join("export").join(file));
        assert_eq!(lines.len(), 250, "{file}");
        for (line, src) in lines.iter().zip(summaries()) {
            assert!(
                line["metadata"].is_object(),
                "{file}: metadata is an object"
            );
            assert_eq!(line["metadata"], src["metadata"]);
            // Nulls are written out, as pydantic does.
            assert!(line.contains_key("embedding") && line.contains_key("topic"));
        }
    }
}

#[test]
fn copy_of_a_query() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::copy_sample(&root, true);
    stdout_of([
        "query",
        p(&root),
        "COPY (SELECT chat_id, user_frustration, metadata FROM summaries \
               WHERE user_frustration >= 4 ORDER BY chat_id) TO 'frustrated.jsonl'; \
         COPY (SELECT coalesce(topic, '(none)') AS topic, count(*) AS n FROM summaries GROUP BY 1) \
              TO 'reports/topics.parquet' STORED AS PARQUET OPTIONS (compression 'zstd(3)')",
    ]);
    let mut want: Vec<Row> = summaries()
        .into_iter()
        .filter(|r| r["user_frustration"].as_i64().unwrap_or(0) >= 4)
        .collect();
    want.sort_by(|a, b| a["chat_id"].as_str().cmp(&b["chat_id"].as_str()));
    let got = read_jsonl(&root.join("frustrated.jsonl"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            ["chat_id", "user_frustration", "metadata"]
        );
        assert_eq!(g["chat_id"], w["chat_id"]);
        assert_eq!(g["user_frustration"], w["user_frustration"]);
        assert_eq!(g["metadata"], w["metadata"]);
    }
    let file = root.join("reports/topics.parquet");
    assert!(all_zstd(&file));
    // JSON values picked out of metadata (an Arrow union in DataFusion) are written as
    // JSON: embedded in JSONL, as JSON text in Parquet.
    stdout_of([
        "query",
        p(&root),
        "COPY (SELECT chat_id, metadata->'tags' AS tags FROM summaries ORDER BY chat_id) \
              TO 'json_values/tags.jsonl'; \
         COPY (SELECT chat_id, metadata->'tags' AS tags FROM summaries) \
              TO 'json_values/tags.parquet' STORED AS PARQUET",
    ]);
    let mut by_id = summaries();
    by_id.sort_by(|a, b| a["chat_id"].as_str().cmp(&b["chat_id"].as_str()));
    let lines = read_jsonl(&root.join("json_values/tags.jsonl"));
    assert_eq!(lines.len(), 250);
    let mut tagged = 0;
    for (line, src) in lines.iter().zip(&by_id) {
        let want = src["metadata"].get("tags").cloned().unwrap_or(Value::Null);
        tagged += want.is_array() as i64;
        assert_eq!(line["tags"], want, "{line:?}");
    }
    assert!(tagged > 0);
    let n = stdout_of([
        "query",
        p(&root.join("json_values")),
        "SELECT count(*) AS n FROM \"tags.parquet\" WHERE tags LIKE '[%]'",
        "--format",
        "csv",
    ]);
    assert_eq!(n, format!("n\n{tagged}\n"));
    let json = stdout_of([
        "query",
        p(&root.join("reports")),
        "SELECT topic, n FROM topics ORDER BY n DESC, topic",
        "--format",
        "json",
    ]);
    assert_eq!(topic_pairs(&rows_of_json_array(&json)), topic_counts());
}

/// Every file under `dir`, by path relative to it (`/`-separated), with its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `COPY ... PARTITIONED BY` writes one directory per value, `p=VALUE`, under the target
/// (one file in each, named at random by DataFusion). Partition values that look like
/// paths (`../x`, `a/b`, `/abs`, `..`) stay one directory name each: `/` is written as
/// `%2F` (and `%` as `%25`), so nothing leaves the target, with or without `--sandbox`.
/// NULL and the empty string both go to `p=`. A COPY to a directory writes `part-0`.
#[test]
fn copy_partitioned_by_keeps_every_value_inside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let values = "VALUES ('ok', 1), ('../x', 2), ('a/b', 3), ('..', 4), ('.', 5), ('', 6), \
                  ('/abs', 7), ('c%2Fd', 8), ('../../../escaped', 9), (NULL, 10)";
    // The directory of each row's value (NULL shares `p=` with the empty string).
    let dirs = [
        "p=ok",
        "p=..%2Fx",
        "p=a%2Fb",
        "p=..",
        "p=.",
        "p=",
        "p=%2Fabs",
        "p=c%252Fd",
        "p=..%2F..%2F..%2Fescaped",
        "p=",
    ];
    for (sandbox, target, stored, ext) in [
        (true, "out/", "CSV", "csv"),
        (false, "out_jsonl", "JSONL", "jsonl"),
    ] {
        let before = files_under(dir.path());
        let mut args = vec!["query", p(&root), "--format", "csv"];
        if sandbox {
            args.push("--sandbox");
        }
        let sql = format!(
            "COPY (SELECT * FROM ({values}) AS t(p, n)) TO '{target}' STORED AS {stored} PARTITIONED BY (p)"
        );
        args.push(&sql);
        assert_eq!(stdout_of(&args), "count\n10\n", "{sql}");
        let after = files_under(dir.path());
        let prefix = format!("root/{}/", target.trim_end_matches('/'));
        let mut got: BTreeMap<String, String> = BTreeMap::new();
        for (path, bytes) in &after {
            if before.contains_key(path) {
                assert_eq!(&before[path], bytes, "{path} changed");
                continue;
            }
            let rel = path
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{sql}: {path} written outside the target"));
            let (d, file) = rel
                .rsplit_once('/')
                .expect("a file in a partition directory");
            assert!(file.ends_with(&format!(".{ext}")), "{path}");
            let old = got.insert(d.to_owned(), String::from_utf8(bytes.clone()).unwrap());
            assert!(old.is_none(), "{sql}: two files in {d}");
        }
        // Directory → its file's content: a CSV file has its own header.
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        for (i, d) in dirs.iter().enumerate() {
            let file = want.entry((*d).to_owned()).or_default();
            if ext == "csv" && file.is_empty() {
                file.push_str("n\n");
            }
            match ext {
                "csv" => file.push_str(&format!("{}\n", i + 1)),
                _ => file.push_str(&format!("{{\"n\":{}}}\n", i + 1)),
            }
        }
        assert_eq!(got, want, "{sql}");
    }

    // A COPY to a directory, without partitions: one file, `part-0`, every row.
    stdout_of([
        "query",
        p(&root),
        "COPY (SELECT * FROM (VALUES ('a', 1), ('b', 2)) AS t(p, n)) TO 'plain/' STORED AS JSONL",
    ]);
    let plain: Vec<(String, String)> = files_under(&root.join("plain"))
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(
        plain,
        [(
            "part-0.jsonl".to_owned(),
            "{\"p\":\"a\",\"n\":1}\n{\"p\":\"b\",\"n\":2}\n".to_owned()
        )]
    );

    // Refused, with nothing written: a partitioned target outside the root under
    // --sandbox, and a partition column whose name is a path (DataFusion keeps the quotes
    // of `PARTITIONED BY ("../k")` and finds no such column).
    let before = files_under(dir.path());
    for (sql, error) in [
        (
            "COPY (SELECT * FROM (VALUES ('x', 1)) AS t(p, n)) TO '../up/' STORED AS CSV PARTITIONED BY (p)",
            "error: invalid checkpoint name \"../up/\": '.' and '..' would leave the root (--sandbox is on: COPY writes only inside the session's roots)\n",
        ),
        (
            "COPY (SELECT * FROM (VALUES ('v', 1)) AS t(\"../k\", n)) TO 'named/' STORED AS CSV PARTITIONED BY (\"../k\")",
            "error: Schema error: No field named \"\"\"../k\"\"\". Did you mean 't.\"../k\"'?\n",
        ),
    ] {
        let out = ckpt()
            .args(["query", "--sandbox", p(&root), sql])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sql}: {stderr}");
        assert!(stderr.starts_with(error), "{sql}: {stderr}");
        assert!(stderr.contains("in statement: COPY"), "{sql}: {stderr}");
        assert_eq!(files_under(dir.path()), before, "{sql}");
    }
    assert!(!dir.path().join("up").exists());
}

#[test]
fn a_failed_copy_leaves_the_previous_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::copy_sample(&root, false);
    stdout_of([
        "query",
        p(&root),
        "COPY (SELECT chat_id, user_frustration FROM summaries) TO 'report.csv'",
    ]);
    // Fails at run time, part-way: the cast only breaks on rows with user_frustration 5.
    let failing = "SELECT chat_id, CAST(CASE WHEN user_frustration = 5 THEN 'x' ELSE '1' END AS INT) AS x \
                   FROM \"summaries.jsonl\"";
    for (target, stored) in [
        ("summaries.parquet", "STORED AS PARQUET"),
        ("clusters.jsonl", ""),
        ("report.csv", "STORED AS CSV"),
        ("brand_new.parquet", "STORED AS PARQUET"),
    ] {
        let before = snapshot(&root);
        ckpt()
            .args([
                "query",
                p(&root),
                &format!("COPY ({failing}) TO '{target}' {stored}"),
            ])
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("Cast error")
                    .and(predicate::str::contains("in statement: COPY")),
            );
        // Same files, same bytes: no truncated target, no staging file left behind.
        assert_eq!(snapshot(&root), before, "COPY to {target}");
    }
    // The table still reads.
    let n = stdout_of([
        "query",
        p(&root),
        "SELECT count(*) AS n FROM summaries",
        "--format",
        "csv",
    ]);
    assert_eq!(n, "n\n250\n");
}

/// With `--sandbox`, COPY stays inside the root (see `copy_writes_where_the_target_says`
/// for the default).
#[test]
fn copy_outside_the_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::copy_sample(&root, true);
    let outside = dir.path();
    let url_up = format!("file://{}/../up.parquet", root.display());
    let url_encoded = format!("file://{}/%2e%2e/up.parquet", root.display());
    let absolute = format!("{}/abs.parquet", outside.display());
    for target in [
        absolute.as_str(),
        "../up.parquet",
        "sub/../../up.parquet",
        url_up.as_str(),
        url_encoded.as_str(),
    ] {
        ckpt()
            .args([
                "query",
                "--sandbox",
                p(&root),
                &format!("COPY clusters TO '{target}' STORED AS PARQUET"),
            ])
            .assert()
            .failure()
            .stderr(predicate::str::contains("invalid checkpoint name"));
    }
    // EXPLAIN ANALYZE runs the COPY: its target is resolved the same way.
    ckpt()
        .args([
            "query",
            "--sandbox",
            p(&root),
            "EXPLAIN ANALYZE COPY clusters TO '../up.parquet' STORED AS PARQUET",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid checkpoint name"));
    let mut left: Vec<String> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["root"], "nothing was written outside the root");
    // A relative EXPLAIN ANALYZE COPY lands inside the root, not in the working directory.
    ckpt()
        .current_dir(outside)
        .args([
            "query",
            p(&root),
            "EXPLAIN ANALYZE COPY clusters TO 'explained.parquet'",
        ])
        .assert()
        .success();
    assert!(root.join("explained.parquet").is_file());
    assert!(!outside.join("explained.parquet").exists());
    // Without --sandbox, writing outside is possible, here with a URL.
    let url = format!("file://{}/outside.parquet", outside.display());
    stdout_of([
        "query",
        p(&root),
        &format!("COPY clusters TO '{url}' STORED AS PARQUET"),
    ]);
    assert_eq!(
        parquet_meta(&outside.join("outside.parquet"))
            .file_metadata()
            .num_rows(),
        16
    );
}

/// Parses a `ckpt convert --bytes` line: (rows, bytes in, bytes out, ratio).
fn convert_line(line: &str) -> (u64, u64, u64, f64) {
    let parse = || -> Option<(u64, u64, u64, f64)> {
        let (_, rest) = line.split_once(": ")?;
        let parts: Vec<&str> = rest.split(", ").collect();
        let num = |s: &str, suffix: &str| s.strip_suffix(suffix)?.parse::<u64>().ok();
        Some((
            num(parts.first()?, " rows")?,
            num(parts.get(1)?, " bytes in")?,
            num(parts.get(2)?, " bytes out")?,
            parts
                .get(3)?
                .strip_prefix("ratio ")?
                .strip_suffix('x')?
                .parse()
                .ok()?,
        ))
    };
    parse().unwrap_or_else(|| panic!("not a convert line: {line}"))
}

#[test]
fn convert_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_dir().join("summaries.jsonl");
    let dst = dir.path().join("out/s.parquet");
    let out = stdout_of([
        "convert",
        p(&src),
        p(&dst),
        "--compression",
        "zstd(3)",
        "--quiet",
        "--bytes",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains(" -> ") && lines[0].contains("s.parquet"));
    let (rows, bytes_in, bytes_out, ratio) = convert_line(lines[0]);
    assert_eq!(rows, 250);
    assert_eq!(bytes_in, std::fs::metadata(&src).unwrap().len());
    assert_eq!(bytes_out, std::fs::metadata(&dst).unwrap().len());
    assert!((ratio - bytes_in as f64 / bytes_out as f64).abs() < 0.006);
    assert!(all_zstd(&dst));
    // s.parquet is a summaries checkpoint by its columns: same answers as the source.
    let json = stdout_of([
        "query",
        p(dst.parent().unwrap()),
        "SELECT coalesce(topic, '(none)') AS topic, count(*) AS n FROM s GROUP BY 1 ORDER BY n DESC, topic",
        "--format",
        "json",
    ]);
    assert_eq!(topic_pairs(&rows_of_json_array(&json)), topic_counts());
}

#[test]
fn convert_a_root_to_kura_parquet_and_query_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    common::copy_sample(&src, true);
    let dst = dir.path().join("dst");
    let out = stdout_of([
        "convert",
        p(&src),
        p(&dst),
        "--to",
        "parquet",
        "--compression",
        "zstd(3)",
        "--layout",
        "kura",
        "--quiet",
        "--bytes",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "five checkpoints and a total:\n{out}");
    let (mut rows_sum, mut in_sum, mut out_sum) = (0, 0, 0);
    for name in [
        "clusters",
        "conversations",
        "dimensionality",
        "meta_clusters",
        "summaries",
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("{name}.jsonl -> ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"));
        let (rows, bytes_in, bytes_out, _) = convert_line(line);
        let target = dst.join(format!("{name}.parquet"));
        assert_eq!(
            rows,
            read_jsonl(&src.join(format!("{name}.jsonl"))).len() as u64
        );
        assert_eq!(
            bytes_in,
            std::fs::metadata(src.join(format!("{name}.jsonl")))
                .unwrap()
                .len()
        );
        assert_eq!(bytes_out, std::fs::metadata(&target).unwrap().len());
        assert!(all_zstd(&target), "{name}");
        rows_sum += rows;
        in_sum += bytes_in;
        out_sum += bytes_out;
    }
    assert!(lines[5].starts_with(&format!(
        "total: 5 checkpoints, {rows_sum} rows, {in_sum} bytes in, {out_sum} bytes out, ratio "
    )));
    // ls sees Kura's layout.
    let ls: Vec<Value> =
        serde_json::from_str(&stdout_of(["ls", p(&dst), "--format", "json"])).unwrap();
    assert_eq!(ls.len(), 5);
    assert!(
        ls.iter()
            .all(|e| e["layout"] == "kura" && e["format"] == "parquet")
    );
    // Every example query answers the same on the source and on the conversion.
    let queries = common::repo_dir().join("queries");
    let mut compared = 0;
    for e in std::fs::read_dir(&queries).unwrap() {
        let file = e.unwrap().path();
        if file.file_name().unwrap() == "to_parquet.sql" {
            continue; // writes files rather than answering
        }
        let a = stdout_of(["query", p(&src), "-f", p(&file), "--format", "json"]);
        let b = stdout_of(["query", p(&dst), "-f", p(&file), "--format", "json"]);
        assert!(!rows_of_json_array(&a).is_empty(), "{}", file.display());
        assert_eq!(a, b, "{} differs after conversion", file.display());
        compared += 1;
    }
    assert!(compared >= 7);
}

/// A size as `ckpt sizes` and `ckpt ls` show it: powers of 1024, one decimal.
fn human(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < 3 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", ["KiB", "MiB", "GiB", "TiB"][unit])
}

#[test]
fn sizes_prints_the_compression_benefits_table() {
    let data = sample_dir();
    let out = stdout_of(["sizes", p(&data)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "| Data Type | JSONL Size | Parquet Size | Reduction | Ratio |"
    );
    assert!(lines[1].starts_with("|---"));
    assert_eq!(lines.len(), 2 + 5, "{out}");
    for name in [
        "clusters",
        "conversations",
        "dimensionality",
        "meta_clusters",
        "summaries",
    ] {
        let j = std::fs::metadata(data.join(format!("{name}.jsonl")))
            .unwrap()
            .len();
        let pq = std::fs::metadata(data.join(format!("{name}.parquet")))
            .unwrap()
            .len();
        let want = format!(
            "| {name} | {} | {} | {:.1}% | {:.1}x |",
            human(j),
            human(pq),
            100.0 * (1.0 - pq as f64 / j as f64),
            j as f64 / pq as f64
        );
        assert!(lines.contains(&want.as_str()), "no {want:?} in\n{out}");
    }
    // With JSONL only, the Parquet side is made by converting (and says so in JSON).
    let dir = tempfile::tempdir().unwrap();
    common::copy_sample(dir.path(), true);
    let json: Vec<Value> =
        serde_json::from_str(&stdout_of(["sizes", p(dir.path()), "--format", "json"])).unwrap();
    assert_eq!(json.len(), 5);
    for row in &json {
        assert_eq!(row["converted"], true);
        let (j, pq) = (
            row["jsonl_bytes"].as_u64().unwrap(),
            row["parquet_bytes"].as_u64().unwrap(),
        );
        assert!(pq > 0 && pq < j, "{row}");
    }
    // Only the JSONL files are there still.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
}

#[test]
fn ls_lists_checkpoints_as_a_table_and_as_json() {
    let data = sample_dir();
    let table = stdout_of(["ls", p(&data), "--bytes"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "checkpoint",
            "kind",
            "format",
            "layout",
            "rows",
            "bytes",
            "parts"
        ]
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 10);
    let json: Vec<Value> =
        serde_json::from_str(&stdout_of(["ls", p(&data), "--format", "json"])).unwrap();
    assert_eq!(json.len(), 10);
    for (cols, entry) in rows.iter().zip(&json) {
        let file = cols[0].as_str();
        let path = data.join(file);
        let (stem, ext) = file.rsplit_once('.').unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        let lines = if ext == "jsonl" {
            read_jsonl(&path).len() as u64
        } else {
            parquet_meta(&path).file_metadata().num_rows() as u64
        };
        let layout = if ext == "parquet" { "native" } else { "-" };
        assert_eq!(
            cols,
            &[
                file.to_owned(),
                stem.to_owned(),
                ext.to_owned(),
                layout.to_owned(),
                lines.to_string(),
                bytes.to_string(),
                "0".to_owned()
            ]
        );
        assert_eq!(entry["file"], file);
        assert_eq!(entry["name"], stem);
        assert_eq!(entry["kind"], stem);
        assert_eq!(entry["format"], ext);
        assert_eq!(entry["rows"], lines);
        assert_eq!(entry["bytes"], bytes);
        assert_eq!(entry["parts"], 0);
        if ext == "parquet" {
            assert_eq!(entry["layout"], "native");
        } else {
            assert!(entry["layout"].is_null());
        }
    }
}

#[test]
fn ls_lists_every_checkpoint_when_one_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sample(dir.path(), false);
    // Damage the footer of one Parquet file.
    let bad = dir.path().join("clusters.parquet");
    let mut bytes = std::fs::read(&bad).unwrap();
    let n = bytes.len();
    bytes[n - 12..n - 4].fill(0xAB);
    std::fs::write(&bad, bytes).unwrap();
    let out = ckpt()
        .args(["ls", p(dir.path()), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("clusters.parquet") && stderr.contains("Parquet"),
        "{stderr}"
    );
    let json: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.len(), 10, "every checkpoint is listed");
    for entry in &json {
        if entry["file"] == "clusters.parquet" {
            assert!(entry["rows"].is_null());
            assert!(
                entry["error"]
                    .as_str()
                    .unwrap()
                    .contains("clusters.parquet")
            );
        } else {
            assert!(entry["rows"].as_u64().unwrap() > 0, "{entry}");
            assert!(entry.get("error").is_none(), "{entry}");
        }
    }
    // The table shows it too, with its rows unknown.
    let out = ckpt().args(["ls", p(dir.path())]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    let line = table
        .lines()
        .find(|l| l.starts_with("clusters.parquet"))
        .unwrap();
    assert_eq!(line.split_whitespace().nth(4), Some("?"), "{table}");
    assert_eq!(table.lines().count(), 11, "{table}");
}

#[test]
fn two_roots_in_one_query() {
    let dir = tempfile::tempdir().unwrap();
    let (run1, run2) = (dir.path().join("run1"), dir.path().join("run2"));
    common::copy_sample(&run1, true);
    std::fs::create_dir_all(&run2).unwrap();
    // run2: the first 100 summaries, re-rated: everyone mildly frustrated.
    let mut lines = String::new();
    let mut changed = 0;
    for mut r in summaries().into_iter().take(100) {
        if r["user_frustration"] != 2 {
            changed += 1;
        }
        r.insert("user_frustration".into(), 2.into());
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    std::fs::write(run2.join("summaries.jsonl"), lines).unwrap();
    let spec1 = format!("run1={}", run1.display());
    let spec2 = format!("run2={}", run2.display());
    let out = stdout_of([
        "query",
        "--root",
        &spec1,
        "--root",
        &spec2,
        "SELECT (SELECT count(*) FROM run1.summaries) AS run1, \
                (SELECT count(*) FROM run2.summaries) AS run2, \
                (SELECT count(*) FROM summaries) AS default_root, \
                (SELECT count(*) FROM run1.summaries a JOIN run2.summaries b ON a.chat_id = b.chat_id) AS shared, \
                (SELECT count(*) FROM run1.summaries a JOIN run2.summaries b ON a.chat_id = b.chat_id \
                 WHERE a.user_frustration <> b.user_frustration) AS rerated",
        "--format",
        "json",
    ]);
    let rows = rows_of_json_array(&out);
    assert_eq!(rows[0]["run1"], 250);
    assert_eq!(rows[0]["run2"], 100);
    assert_eq!(
        rows[0]["default_root"], 250,
        "the first root is the default"
    );
    assert_eq!(rows[0]["shared"], 100);
    assert_eq!(rows[0]["rerated"], changed);
    assert!(changed > 0);
    // A positional root plus --root: the positional one is the default schema.
    let out = stdout_of([
        "query",
        p(&run2),
        "--root",
        &spec1,
        "SELECT (SELECT count(*) FROM summaries) AS d, (SELECT count(*) FROM run1.summaries) AS r",
        "--format",
        "csv",
    ]);
    assert_eq!(out, "d,r\n100,250\n");
    // No directory named after the SQL was created anywhere.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["run1", "run2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_follows_the_root() {
    use ckpt::{CheckpointManager, CheckpointSession, Cluster, ConversationSummary};
    let dir = tempfile::tempdir().unwrap();
    common::copy_sample(dir.path(), true);
    let session = CheckpointSession::open(p(dir.path())).await.unwrap();
    let err = session.sql("SELECT count(*) FROM late").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Error during planning: table 'ckpt.root.late' not found\n  in statement: SELECT count(*) FROM late"
    );

    // A checkpoint saved after the CheckpointSession opened is a table at the next query.
    let jsonl = CheckpointManager::jsonl(p(dir.path())).unwrap();
    let all: Vec<ConversationSummary> = jsonl.load("summaries").await.unwrap().unwrap();
    jsonl.save("late", &all[..7]).await.unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM late").await, 7);
    assert_eq!(
        count(
            &session,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'late'"
        )
        .await,
        1
    );
    // Rewritten: the new rows.
    let clusters: Vec<Cluster> = jsonl.load("clusters").await.unwrap().unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM clusters").await, 16);
    jsonl.save("clusters", &clusters[..3]).await.unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM clusters").await, 3);
    // A Parquet save of the same name takes the bare name; the JSONL stays reachable.
    let parquet = CheckpointManager::parquet(p(dir.path())).unwrap();
    parquet.save("summaries", &all[..10]).await.unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM summaries").await, 10);
    assert_eq!(
        count(&session, "SELECT count(*) FROM \"summaries.jsonl\"").await,
        250
    );
    // Deleted: gone from the catalog.
    assert!(jsonl.delete("late").await.unwrap());
    let err = session.sql("SELECT count(*) FROM late").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Error during planning: table 'ckpt.root.late' not found\n  in statement: SELECT count(*) FROM late"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_wins_and_jsonl_stays_reachable() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sample(dir.path(), true);
    // summaries.parquet: only the first 100 rows, so the two are told apart.
    let small = tempfile::tempdir().unwrap();
    let head: Vec<String> = std::fs::read_to_string(sample_dir().join("summaries.jsonl"))
        .unwrap()
        .lines()
        .take(100)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(small.path().join("summaries.jsonl"), head.concat()).unwrap();
    stdout_of([
        "convert",
        p(&small.path().join("summaries.jsonl")),
        p(&dir.path().join("summaries.parquet")),
        "--quiet",
    ]);
    let out = stdout_of([
        "query",
        p(dir.path()),
        "SELECT (SELECT count(*) FROM summaries) AS bare, \
                (SELECT count(*) FROM \"summaries.jsonl\") AS jsonl, \
                (SELECT count(*) FROM \"summaries.parquet\") AS parquet",
        "--format",
        "csv",
    ]);
    assert_eq!(out, "bare,jsonl,parquet\n100,250,100\n");
    // The catalog lists the bare name and the JSONL file's name, and each listed name
    // is a table with the kind's columns.
    let session = ckpt::CheckpointSession::open(p(dir.path())).await.unwrap();
    let batches = session
        .sql(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = 'root' ORDER BY table_name",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    use datafusion::arrow::array::Array;
    let names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let a = datafusion::arrow::array::AsArray::as_string::<i32>(b.column(0)).clone();
            (0..a.len()).map(move |i| a.value(i).to_owned())
        })
        .collect();
    assert!(names.contains(&"summaries".to_owned()), "{names:?}");
    assert!(names.contains(&"summaries.jsonl".to_owned()), "{names:?}");
    for name in &names {
        let n = count(&session, &format!("SELECT count(*) FROM \"{name}\"")).await;
        assert!(n > 0, "{name}");
    }
    assert_eq!(
        count(
            &session,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'summaries.jsonl'"
        )
        .await,
        11
    );
}

/// Kura-like JSONL, as pydantic's model_dump_json writes it: every field present,
/// embeddings null throughout (Kura's sample has none), `count` beside chat_ids.
fn write_kura_like(dir: &Path) {
    let summary = |id: &str, topic: Value, langs: Value, errors: Value, f: i64| {
        serde_json::json!({
            "summary": format!("The user asked about {id}."),
            "request": "The user's overall request for the assistant is to help.",
            "topic": topic,
            "languages": langs,
            "task": "The task is to answer.",
            "concerning_score": 1,
            "user_frustration": f,
            "assistant_errors": errors,
            "chat_id": id,
            "metadata": {"conversation_turns": 4, "model": "claude-v1", "winner": true, "question_id": 90, "opponent_model": "llama-13b"},
            "embedding": null
        })
    };
    let lines = [
        summary(
            "90_claude-v1_352",
            Value::Null,
            serde_json::json!(["english"]),
            serde_json::json!([]),
            1,
        ),
        summary(
            "91_gpt-4_353",
            "poetry".into(),
            Value::Null,
            serde_json::json!(["Misread the rhyme scheme."]),
            3,
        ),
        summary(
            "92_alpaca-13b_354",
            Value::Null,
            serde_json::json!([]),
            Value::Null,
            2,
        ),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("summaries.jsonl"), &text).unwrap();
    // The same rows under a name that says nothing: the kind comes from the keys.
    std::fs::write(dir.join("run_a_output.jsonl"), &text).unwrap();
    let cluster = |id: &str, parent: Value, ids: &[&str]| {
        serde_json::json!({
            "id": id, "name": format!("Cluster {id}"), "description": "Users asked for help.",
            "slug": format!("slug_{id}"), "chat_ids": ids, "parent_id": parent, "count": ids.len()
        })
    };
    let clusters = [
        cluster("c1", Value::Null, &["90_claude-v1_352", "91_gpt-4_353"]),
        cluster("c2", Value::Null, &["92_alpaca-13b_354"]),
    ];
    let meta = [
        cluster("c1", "root".into(), &["90_claude-v1_352", "91_gpt-4_353"]),
        cluster("c2", "root".into(), &["92_alpaca-13b_354"]),
        cluster(
            "root",
            Value::Null,
            &["90_claude-v1_352", "91_gpt-4_353", "92_alpaca-13b_354"],
        ),
    ];
    let dims: Vec<Value> = meta
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut m = c.as_object().unwrap().clone();
            let count = m.remove("count").unwrap();
            m.insert("x_coord".into(), (i as f64 * 1.5).into());
            m.insert("y_coord".into(), (-0.25).into());
            m.insert("level".into(), (if i == 2 { 0 } else { 1 }).into());
            m.insert("count".into(), count);
            Value::Object(m)
        })
        .collect();
    let conv = serde_json::json!({
        "chat_id": "90_claude-v1_352", "created_at": "2025-06-12T11:04:56.965428",
        "messages": [
            {"created_at": "2025-06-12T11:04:56.965433", "role": "user", "content": "Hello"},
            {"created_at": "2025-06-12T11:04:56.965490", "role": "assistant", "content": "Hi"}
        ],
        "metadata": {"model": "claude-v1"}
    });
    let write = |name: &str, rows: &[Value]| {
        let t: String = rows.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join(name), t).unwrap();
    };
    write("clusters.jsonl", &clusters);
    write("meta_clusters.jsonl", &meta);
    write("dimensionality.jsonl", &dims);
    write("conversations.jsonl", &[conv]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_kinds_get_their_declared_schema() {
    use ckpt::CheckpointKind;
    let dir = tempfile::tempdir().unwrap();
    write_kura_like(dir.path());
    let session = ckpt::CheckpointSession::open(p(dir.path())).await.unwrap();
    for (table, kind) in [
        ("summaries", CheckpointKind::Summaries),
        ("run_a_output", CheckpointKind::Summaries),
        ("clusters", CheckpointKind::Clusters),
        ("meta_clusters", CheckpointKind::MetaClusters),
        ("dimensionality", CheckpointKind::Dimensionality),
        ("conversations", CheckpointKind::Conversations),
    ] {
        let want: Vec<(String, String, String)> = kind
            .schema()
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name().clone(),
                    f.data_type().to_string(),
                    if f.is_nullable() { "YES" } else { "NO" }.to_owned(),
                )
            })
            .collect();
        // The kind's column order (Kura's field order), not alphabetical.
        let df = session
            .sql(&format!(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE table_name = '{table}' ORDER BY ordinal_position"
            ))
            .await
            .unwrap();
        let mut got = Vec::new();
        for b in df.collect().await.unwrap() {
            use datafusion::arrow::array::AsArray;
            for i in 0..b.num_rows() {
                let col = |c: usize| b.column(c).as_string::<i32>().value(i).to_owned();
                got.push((col(0), col(1), col(2)));
            }
        }
        assert_eq!(got, want, "{table}");
        // The DataFrame has the same types.
        let schema = session
            .table(table)
            .await
            .unwrap()
            .schema()
            .as_arrow()
            .clone();
        let types: Vec<_> = schema.fields().iter().map(|f| f.data_type()).collect();
        let kinds = kind.schema();
        let want_types: Vec<_> = kinds.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(types, want_types, "{table}");
    }
    // Embeddings are typed even though every one is null, and values read as declared.
    let emb = session
        .table("summaries")
        .await
        .unwrap()
        .schema()
        .field_with_unqualified_name("embedding")
        .unwrap()
        .data_type()
        .clone();
    assert_eq!(emb, ckpt::kind::float_list_type());
    assert_eq!(
        count(
            &session,
            "SELECT count(*) FROM summaries WHERE embedding IS NULL AND (metadata->>'model') = 'claude-v1'"
        )
        .await,
        3
    );
    assert_eq!(
        count(&session, "SELECT sum(count) FROM dimensionality").await,
        6
    );
    // The same through the command line.
    let out = stdout_of([
        "query",
        p(dir.path()),
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_name = 'summaries' ORDER BY ordinal_position",
        "--format",
        "csv",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "summary,Utf8");
    assert_eq!(lines[11], "embedding,List(Float64)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_spills_instead_of_failing() {
    let dir = generated_summaries(30_000, 64).await;
    let file = dir.path().join("summaries.jsonl");
    let limit: u64 = 64 << 20;
    assert!(std::fs::metadata(&file).unwrap().len() > limit);

    // What the GROUP BY must find, from the file itself.
    #[derive(serde::Deserialize)]
    struct S {
        summary: String,
        chat_id: String,
    }
    let mut groups: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let s: S = serde_json::from_str(line).unwrap();
        let e = groups.entry(s.summary).or_insert((0, s.chat_id.clone()));
        e.0 += 1;
        if s.chat_id < e.1 {
            e.1 = s.chat_id;
        }
    }
    let mut want: Vec<(String, i64, String)> = groups
        .into_iter()
        .map(|(summary, (n, first))| (summary, n, first))
        .collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let assert = ckpt()
        .args([
            "query",
            p(dir.path()),
            "--memory-limit",
            "64M",
            "--max-rows",
            "5",
            "--format",
            "ndjson",
            "SELECT summary, count(*) AS n, min(chat_id) AS first_chat FROM summaries \
             GROUP BY summary ORDER BY n DESC, summary",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{} rows, 5 shown",
            want.len()
        )));
    let got: Vec<(String, i64, String)> = String::from_utf8(assert.get_output().stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let r: Row = serde_json::from_str(l).unwrap();
            (
                r["summary"].as_str().unwrap().to_owned(),
                r["n"].as_i64().unwrap(),
                r["first_chat"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want[..5].to_vec());

    // A full sort of every column needs more than the pool: it spills, and succeeds.
    let out = stdout_of([
        "query",
        p(dir.path()),
        "--memory-limit",
        "64M",
        "--format",
        "ndjson",
        "EXPLAIN ANALYZE SELECT * FROM summaries ORDER BY summary, chat_id",
    ]);
    let plan: Row = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let plan = plan["plan"].as_str().unwrap();
    let sort = plan
        .lines()
        .find(|l| l.trim_start().starts_with("SortExec"))
        .unwrap_or_else(|| panic!("no SortExec in\n{plan}"));
    let spills: u64 = sort
        .split("spill_count=")
        .nth(1)
        .and_then(|s| s.split([',', ']']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spill_count in {sort}"));
    assert!(spills > 0, "{sort}");
    assert!(sort.contains("output_rows=30.00 K"), "{sort}");
}

/// Small pools: at any limit a query completes (spilling where it must) or fails with the
/// pool's own message (who holds what, the hint) — never another error from deep inside
/// (a torn spill file's "Ipc error", as when the JSONL scan's blocks outgrew their share
/// and a repartition had to spill). Counts and aggregations always complete; a full sort
/// completes from 4 MB on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_memory_limits_complete_or_fail_with_the_memory_message() {
    let dir = generated_summaries(30_000, 64).await;
    let root = p(dir.path());
    for limit in ["1M", "2M", "4M", "8M", "16M", "20M"] {
        let run = |sql: &str| {
            let out = ckpt()
                .args([
                    "query",
                    root,
                    "--memory-limit",
                    limit,
                    "--format",
                    "csv",
                    sql,
                ])
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, out, err) = run("SELECT count(*) AS n FROM summaries");
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "n\n30000\n"),
            "{limit}: {err}"
        );
        let (code, out, err) = run("SELECT count(*) AS groups, sum(n) AS rows FROM \
             (SELECT topic, count(*) AS n FROM summaries GROUP BY topic)");
        assert_eq!(code, Some(0), "{limit}: {err}");
        assert!(out.ends_with(",30000\n"), "{limit}: {out}");
        let (code, out, err) = run("SELECT chat_id FROM summaries ORDER BY summary, chat_id");
        match code {
            Some(0) => assert_eq!(out.lines().count(), 30_001, "{limit}"),
            _ => {
                assert!(
                    ["1M", "2M"].contains(&limit),
                    "{limit}: a full sort fails: {err}"
                );
                assert_eq!(code, Some(1), "{limit}: {err}");
                assert!(
                    err.starts_with("error: Resources exhausted"),
                    "{limit}: {err}"
                );
                assert!(
                    err.contains(ckpt::ops::query::OUT_OF_MEMORY_HINT),
                    "{limit}: {err}"
                );
            }
        }
        assert!(!err.contains("Ipc error"), "{limit}: {err}");
    }
}

/// An aggregate without GROUP BY (`array_agg` of every embedding) holds all its input and
/// cannot spill: over the limit the query fails, exit 1, with DataFusion's account of who
/// holds the memory, what to do, and the statement; no row on stdout. The same query
/// without a limit succeeds: the limit, not the query, is what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_that_cannot_spill_fails_clearly() {
    let dir = generated_summaries(3000, 64).await;
    let sql = "SELECT array_agg(embedding) AS e FROM summaries";
    let out = ckpt()
        .args([
            "query",
            p(dir.path()),
            "--memory-limit",
            "1M",
            "--format",
            "csv",
            sql,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Results stream: the header goes out before the first row is computed; no row does.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "e\n");
    assert!(
        stderr.starts_with(
            "error: Resources exhausted: Additional allocation failed for AggregateStream["
        ),
        "{stderr}"
    );
    assert!(stderr.contains("(can spill: false)"), "{stderr}");
    assert!(
        stderr.contains("for the total memory pool: fair(pool_size: 976.6 KB)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "\n  hint: {}\n  in statement: {sql}\n",
            ckpt::ops::query::OUT_OF_MEMORY_HINT
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");

    let lines = stdout_of(["query", p(dir.path()), "--format", "csv", sql]);
    assert_eq!(lines.lines().count(), 2, "one header, one row");
}

/// Under `--memory-limit` the binary runs with glibc's mmap and trim thresholds set (it
/// restarts itself with `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_`,
/// `src/cli/malloc.rs`), so freed memory goes back to the system; a setting of the user's is kept, and without a limit nothing is set. Read
/// from `/proc/PID/environ` of a running shell, after it answered a statement (the
/// restart comes before anything else).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_memory_limit_makes_the_allocator_give_freed_memory_back() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let root = tempfile::tempdir().unwrap();
    common::copy_sample(root.path(), true);
    let environ_of_shell = |extra: &[&str], user_setting: Option<&str>| -> Vec<String> {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ckpt"));
        cmd.env_remove("CKPT_LOG")
            .env_remove("MALLOC_TRIM_THRESHOLD_")
            .env_remove("MALLOC_MMAP_THRESHOLD_")
            .env_remove("MALLOC_TOP_PAD_")
            .env_remove("GLIBC_TUNABLES")
            .args(["shell", p(root.path()), "--format", "csv"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(v) = user_setting {
            cmd.env("MALLOC_TRIM_THRESHOLD_", v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "SELECT count(*) AS n FROM summaries;").unwrap();
        // The banner, then the answer: a header and the count.
        let mut lines = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map(Result::unwrap)
            .skip_while(|l| l != "n");
        assert_eq!(lines.next().as_deref(), Some("n"));
        assert!(lines.next().unwrap().parse::<u64>().is_ok());
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MALLOC_"))
            .collect()
    };
    let mut set = environ_of_shell(&["--memory-limit", "256M"], None);
    set.sort();
    assert_eq!(
        set,
        [
            "MALLOC_MMAP_THRESHOLD_=2097152",
            "MALLOC_TRIM_THRESHOLD_=2097152"
        ]
    );
    assert_eq!(
        environ_of_shell(&["--memory-limit", "256M"], Some("1048576")),
        ["MALLOC_TRIM_THRESHOLD_=1048576"]
    );
    assert!(environ_of_shell(&[], None).is_empty());
}

#[test]
fn shell_driven_through_stdin() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    common::copy_sample(root.path(), false);
    let expected = topic_counts();
    let input = "\\d\n\
                 \\d summaries\n\
                 \\timing\n\
                 \\format csv\n\
                 SELECT coalesce(topic, '(none)') AS topic,\n\
                 \x20      count(*) AS n\n\
                 FROM summaries\n\
                 GROUP BY 1\n\
                 ORDER BY n DESC, topic\n\
                 LIMIT 3;\n\
                 SELECT nope FROM summaries;\n\
                 SELECT 7 AS seven; SELECT 8 AS eight;\n\
                 \\q\n\
                 SELECT 'after quit' AS never;\n";
    let assert = ckpt()
        .env("HOME", home.path())
        .args(["shell", p(root.path())])
        .write_stdin(input)
        .assert()
        .success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    // \d: the tables, with the JSONL file under its own name.
    assert!(out.contains("| root         | summaries "), "{out}");
    assert!(out.contains("| summaries.jsonl "), "{out}");
    // \d summaries: the kind's columns.
    assert!(
        out.lines()
            .any(|l| l.contains("| embedding ") && l.contains("List(Float64)")),
        "{out}"
    );
    assert!(out.contains("timing on"));
    assert!(out.contains("format csv"));
    // The multi-line statement, in CSV.
    let mut want = String::from("topic,n\n");
    for (t, n) in &expected[..3] {
        want.push_str(&format!("{t},{n}\n"));
    }
    assert!(out.contains(&want), "{want} not in\n{out}");
    // An error does not end the shell; two statements on one line both run.
    assert!(err.contains("error:") && err.contains("nope"), "{err}");
    assert!(
        out.contains("seven\n7\n") && out.contains("eight\n8\n"),
        "{out}"
    );
    // \timing: one time per line of statements.
    let re =
        predicate::str::is_match(r"^\((\d+(\.\d)? ms|\d+\.\d{2} s|\d+ min \d+ s|\d+ h \d+ min)\)$")
            .unwrap();
    assert!(err.lines().filter(|l| re.eval(l)).count() >= 2, "{err}");
    // \q ends it.
    assert!(!out.contains("after quit") && !out.contains("never"));
}

#[test]
fn shell_describes_tables_by_file_name_and_runs_a_last_statement_without_semicolon() {
    let home = tempfile::tempdir().unwrap();
    let assert = ckpt()
        .env("HOME", home.path())
        .args(["shell", p(&sample_dir()), "--format", "csv"])
        .write_stdin(
            "\\d summaries.jsonl\n\\d root.clusters\n\\d nothing\nSELECT 41 + 1\n  AS answer",
        )
        .assert()
        .success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    // The JSONL file's table (a name with a dot) and a schema-qualified one.
    assert!(
        out.lines()
            .any(|l| l.contains("| embedding ") && l.contains("List(Float64)")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("| chat_ids ") && l.contains("List(Utf8)")),
        "{out}"
    );
    assert!(out.contains("no table named nothing"), "{out}");
    // Input ended without ';': the statement still ran.
    assert!(out.ends_with("answer\n42\n"), "{out}");
}

#[test]
fn ddl_prints_nothing_and_leaves_checkpoints_alone() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sample(dir.path(), true);
    std::fs::write(
        dir.path().join("notes.csv"),
        "chat_id,note\na,x\nb,y\nc,z\n",
    )
    .unwrap();
    // A relative LOCATION is inside the root, wherever ckpt runs from.
    let out = stdout_of([
        "query",
        p(dir.path()),
        "CREATE VIEW angry AS SELECT chat_id FROM summaries WHERE user_frustration = 5; \
         CREATE EXTERNAL TABLE notes STORED AS CSV LOCATION 'notes.csv' OPTIONS ('format.has_header' 'true'); \
         SELECT (SELECT count(*) FROM angry) AS angry, (SELECT count(*) FROM notes) AS notes; \
         DROP VIEW angry",
    ]);
    let angry = summaries()
        .iter()
        .filter(|r| r["user_frustration"] == 5)
        .count();
    // Only the SELECT printed anything.
    let want = format!(
        "+-------+-------+\n| angry | notes |\n+-------+-------+\n| {angry:<5} | 3     |\n+-------+-------+\n"
    );
    assert_eq!(out, want);
    // DROP TABLE on a checkpoint fails, and the file stays.
    let before = snapshot(dir.path());
    ckpt()
        .args(["query", p(dir.path()), "DROP TABLE summaries"])
        .assert()
        .failure();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn metadata_arrow_operators_compare_without_parentheses() {
    // `->>` binds tighter than `=`: the filter means "the model is gpt-4".
    let out = stdout_of([
        "query",
        p(&sample_dir()),
        "SELECT count(*) AS n FROM summaries WHERE metadata->>'model' = 'gpt-4'",
        "--format",
        "ndjson",
    ]);
    let want = summaries()
        .iter()
        .filter(|r| r["metadata"]["model"] == "gpt-4")
        .count();
    assert!(want > 0);
    assert_eq!(out.trim(), format!("{{\"n\":{want}}}"));
}

// ---- exit codes, closed pipes, missing roots, COPY targets ------------------------------

/// A root of 2000 generated summaries: any listing of them overfills a pipe's buffer.
fn generated_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    stdout_of([
        "generate",
        p(dir.path()),
        "--summaries",
        "2000",
        "--dim",
        "4",
        "--no-conversations",
    ]);
    dir
}

/// Runs `ckpt ARGS` with stdout piped, reads one line, closes the pipe, and returns the
/// exit code and stderr.
fn run_and_close_stdout_after_one_line(args: &[&str]) -> (Option<i32>, String) {
    use std::io::{BufRead, Read};
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .env_remove("CKPT_LOG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "{args:?}: no output");
    drop(stdout); // `| head -1`
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code(), stderr)
}

#[test]
fn a_closed_stdout_ends_quietly_in_every_output_format() {
    let root = generated_root();
    let sql = "SELECT chat_id, summary FROM summaries";
    for format in ["table", "csv", "json", "ndjson", "markdown"] {
        let (code, stderr) = run_and_close_stdout_after_one_line(&[
            "query",
            p(root.path()),
            sql,
            "--format",
            format,
        ]);
        assert_eq!(code, Some(0), "--format {format}: stderr: {stderr}");
        assert_eq!(stderr, "", "--format {format}");
    }
    // A statement after the one whose output was cut does not run either.
    let two = format!("{sql}; COPY summaries TO 'after.parquet'");
    let (code, stderr) =
        run_and_close_stdout_after_one_line(&["query", p(root.path()), &two, "--format", "csv"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    assert!(!root.path().join("after.parquet").exists());
}

#[test]
fn a_closed_stdout_ends_ls_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Enough checkpoints for the listing to overfill the pipe.
    for i in 0..1200 {
        std::fs::write(dir.path().join(format!("t{i:04}.jsonl")), "{\"a\": 1}\n").unwrap();
    }
    for format in ["table", "json"] {
        let (code, stderr) =
            run_and_close_stdout_after_one_line(&["ls", p(dir.path()), "--format", format]);
        assert_eq!(code, Some(0), "ls --format {format}: stderr: {stderr}");
        assert_eq!(stderr, "", "ls --format {format}");
    }
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let data = sample_dir();
    let d = p(&data);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = p(&out);
    let usage: Vec<(Vec<&str>, &str)> = vec![
        (vec!["query", d, "SELECT 1", "--format", "yaml"], "'yaml'"),
        (
            vec!["query", d, "SELECT 1", "--on-error", "maybe"],
            "'maybe'",
        ),
        (
            vec!["query", d, "SELECT 1", "--memory-limit", "lots"],
            "not a size",
        ),
        (
            vec!["query", "--root", "run1", "SELECT 1"],
            "expected NAME=LOCATION",
        ),
        (
            vec!["query", "--root", "r-1=./x", "SELECT 1"],
            "letters, digits or _",
        ),
        (
            vec!["query", "--root", "r1=", "SELECT 1"],
            "location is empty",
        ),
        (vec!["shell", d, "--format", "xml"], "'xml'"),
        (
            vec!["convert", d, o, "--compression", "zip"],
            "unknown compression",
        ),
        (vec!["convert", d, o, "--compression", "zstd(99)"], "zstd"),
        (vec!["convert", d, o, "--to", "csv"], "'csv'"),
        (vec!["convert", d, o, "--layout", "duckdb"], "'duckdb'"),
        (vec!["convert", d, o, "--on-error", "ignore"], "'ignore'"),
        (
            vec!["sizes", d, "--compression", "lzma"],
            "unknown compression",
        ),
        (vec!["ls", d, "--format", "csv"], "'csv'"),
        (vec!["generate", o, "--layout", "x"], "'x'"),
        (
            vec!["generate", o, "--compression", "snappy(1)"],
            "takes no level",
        ),
        (vec!["ls", d, "-S", "no_equals_sign"], "KEY=VALUE"),
        (vec!["query", d, "SELECT 1", "-f", "x.sql"], "not both"),
        (vec!["shell"], "no root"),
        (vec!["frobnicate"], "unrecognized subcommand"),
        // No SQL at all: standard input here is /dev/null, an empty argument, or comments
        // only. Nothing to run is a usage error, like a missing argument.
        (vec!["query", d], "no SQL"),
        (vec!["query", d, ""], "no SQL"),
        (vec!["query", d, "  -- just a comment\n"], "no SQL"),
    ];
    for (args, word) in &usage {
        let r = common::ckpt(args);
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(word),
            "{args:?}: no {word:?} in {}",
            r.stderr
        );
    }
    assert!(!out.exists(), "a usage error wrote something");
    // Values are case-insensitive, and the documented aliases work.
    for format in ["CSV", "md", "jsonl"] {
        stdout_of(["query", d, "SELECT 1 AS one", "--format", format]);
    }
    // A --root value with a password is never shown, even when it is malformed.
    let r = common::ckpt([
        "query",
        "--root",
        "s3://key:pw-not-shown@bucket/x",
        "SELECT 1",
    ]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(!r.stderr.contains("pw-not-shown"), "{}", r.stderr);
    // Failures exit 1.
    for args in [
        vec!["query", d, "SELECT nope FROM summaries"],
        vec!["query", d, "SELEC 1"],
        vec!["query", d, "-f", "/no/such/file.sql"],
    ] {
        let r = common::ckpt(&args);
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn read_commands_never_create_a_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["ls".into(), "typo".into()], "typo"),
        (vec!["ls".into(), "./typo".into()], "./typo"),
        (
            vec![
                "ls".into(),
                "a/b/c".into(),
                "--format".into(),
                "json".into(),
            ],
            "a/b/c",
        ),
        (
            vec!["query".into(), "nowhere".into(), "SELECT 1".into()],
            "nowhere",
        ),
        (
            vec![
                "query".into(),
                "--root".into(),
                format!("run1={}", p(&sample_dir())),
                "--root".into(),
                "run2=missing_run".into(),
                "SELECT 1".into(),
            ],
            "missing_run",
        ),
        (vec!["shell".into(), "nowhere".into()], "nowhere"),
        (vec!["sizes".into(), "typo".into()], "typo"),
        (vec!["convert".into(), "typo".into(), "out".into()], "typo"),
        (
            vec![
                "convert".into(),
                "typo/summaries.jsonl".into(),
                "out.parquet".into(),
            ],
            "summaries.jsonl",
        ),
    ];
    for (args, shown) in &cases {
        let r = common::run(common::ckpt_cmd().current_dir(dir.path()).args(args));
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        if args[0] == "convert" && shown.ends_with(".jsonl") {
            assert!(
                r.stderr.contains("does not exist"),
                "{args:?}: {}",
                r.stderr
            );
        } else {
            let want = format!("no such root: {shown} (a directory or URL of checkpoints)");
            assert!(
                r.stderr.contains(&want),
                "{args:?}: no {want:?} in {}",
                r.stderr
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
    // An absolute path too; and a file is not a root.
    let missing = dir.path().join("gone");
    let r = common::ckpt(["query", p(&missing), "SELECT 1"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains(&format!("no such root: {}", p(&missing))),
        "{}",
        r.stderr
    );
    assert!(!missing.exists());
    let file = sample_dir().join("summaries.jsonl");
    let r = common::ckpt(["ls", p(&file)]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is a file"), "{}", r.stderr);
    // An existing empty directory is a root with no checkpoints.
    stdout_of(["ls", p(dir.path())]);
}

#[test]
fn writes_create_their_target_root() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("new/run1");
    stdout_of(["generate", p(&generated), "--summaries", "10", "--dim", "4"]);
    assert!(generated.join("summaries.jsonl").is_file());
    let converted = dir.path().join("converted/deeper");
    stdout_of([
        "convert",
        p(&generated),
        p(&converted),
        "--to",
        "parquet",
        "-q",
    ]);
    assert!(converted.join("summaries.parquet").is_file());
    let one = dir.path().join("one/s.parquet");
    stdout_of([
        "convert",
        p(&generated.join("summaries.jsonl")),
        p(&one),
        "-q",
    ]);
    assert!(one.is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_create_their_directory_on_save_and_sessions_need_one() {
    use ckpt::{CheckpointManager, CheckpointSession, ConversationSummary};
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("checkpoints/run1");
    let m = CheckpointManager::jsonl(p(&missing)).unwrap();
    // Loading from a directory that is not there is "no checkpoint", and creates nothing.
    assert!(
        m.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!dir.path().join("checkpoints").exists());
    // A session reads: it needs the directory.
    let err = CheckpointSession::open(p(&missing))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such root"), "{err}");
    assert!(!dir.path().join("checkpoints").exists());
    // A save creates it, as Kura's setup_checkpoint_dir does.
    let rows = vec![ckpt::ops::generate::summary(0, 4, 1)];
    m.save("summaries", &rows).await.unwrap();
    assert!(missing.join("summaries.jsonl").is_file());
    let session = CheckpointSession::open(p(&missing)).await.unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM summaries").await, 1);
}

#[test]
fn copy_writes_where_the_target_says() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::copy_sample(&root, true);
    let r = p(&root);
    let rows = |path: &Path| parquet_meta(path).file_metadata().num_rows();

    // An absolute path, into directories that do not exist yet.
    let abs = dir.path().join("elsewhere/deeper/abs.parquet");
    stdout_of(["query", r, &format!("COPY clusters TO '{}'", p(&abs))]);
    assert_eq!(rows(&abs), 16);
    // A directory target given as an absolute path.
    let parts = dir.path().join("parts");
    stdout_of([
        "query",
        r,
        &format!("COPY clusters TO '{}/' STORED AS PARQUET", p(&parts)),
    ]);
    let written: i64 = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| rows(&e.unwrap().path()))
        .sum();
    assert_eq!(written, 16);
    // `..`: relative to the root, out of it.
    stdout_of(["query", r, "COPY clusters TO '../up.parquet'"]);
    assert_eq!(rows(&dir.path().join("up.parquet")), 16);
    stdout_of([
        "query",
        r,
        "COPY summaries TO 'sub/../../up/s.jsonl' STORED AS JSON",
    ]);
    assert_eq!(read_jsonl(&dir.path().join("up/s.jsonl")), summaries());
    // EXPLAIN ANALYZE runs the COPY, to the same place.
    stdout_of([
        "query",
        r,
        "EXPLAIN ANALYZE COPY clusters TO '../explained.parquet'",
    ]);
    assert_eq!(rows(&dir.path().join("explained.parquet")), 16);
    // Relative paths without `..` stay in the root, as before.
    stdout_of(["query", r, "COPY clusters TO 'in/root.parquet'"]);
    assert_eq!(rows(&root.join("in/root.parquet")), 16);
    // `~` is not expanded: said, not written.
    let e = common::ckpt(["query", r, "COPY clusters TO '~/ckpt-test.parquet'"]);
    assert_eq!(e.code, Some(1), "{e:?}");
    assert!(e.stderr.contains("'~' is not expanded"), "{}", e.stderr);
    assert!(!root.join("~").exists());
    // The shell writes the same way.
    let shell_target = dir.path().join("from_shell.parquet");
    let home = tempfile::tempdir().unwrap();
    ckpt()
        .env("HOME", home.path())
        .args(["shell", r])
        .write_stdin(format!("COPY clusters TO '{}';\n", p(&shell_target)))
        .assert()
        .success();
    assert_eq!(rows(&shell_target), 16);
}

#[test]
fn sandbox_confines_copy_to_the_roots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let other = dir.path().join("other");
    common::copy_sample(&root, true);
    std::fs::create_dir_all(&other).unwrap();
    let r = p(&root);
    let snapshot_of_dir = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let before = snapshot_of_dir();
    let root_files = snapshot(&root);
    let abs = format!("{}/abs.parquet", dir.path().display());
    let outside_url = format!("file://{}/url.parquet", dir.path().display());
    let other_url = format!("file://{}/o.parquet", other.display());
    for target in [
        abs.as_str(),
        "../up.parquet",
        "a/../../up.parquet",
        &outside_url,
    ] {
        let sql = format!("COPY clusters TO '{target}' STORED AS PARQUET");
        let e = common::ckpt(["query", "--sandbox", r, &sql]);
        assert_eq!(e.code, Some(1), "{sql}: {e:?}");
        assert!(
            e.stderr.contains("invalid checkpoint name") && e.stderr.contains("--sandbox is on"),
            "{sql}: {}",
            e.stderr
        );
    }
    let e = common::ckpt([
        "query",
        "--sandbox",
        r,
        &format!("COPY clusters TO '{outside_url}'"),
    ]);
    assert!(e.stderr.contains("outside the roots"), "{}", e.stderr);
    // The shell, too: the statement fails, the shell goes on.
    let home = tempfile::tempdir().unwrap();
    let assert = ckpt()
        .env("HOME", home.path())
        .args(["shell", "--sandbox", r])
        .write_stdin(format!("COPY clusters TO '{abs}';\nSELECT 5 AS five;\n"))
        .assert()
        .success();
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(err.contains("--sandbox is on"), "{err}");
    assert!(out.contains("five"), "{out}");
    assert_eq!(snapshot_of_dir(), before, "written outside the root");
    assert_eq!(snapshot(&root), root_files, "written in the root");
    assert!(std::fs::read_dir(&other).unwrap().next().is_none());

    // Inside the roots: a relative name, a URL into the default root, a URL into another
    // root of the session.
    let inside_url = format!("file://{}/by_url.parquet", root.display());
    let spec = format!("other={}", p(&other));
    for sql in [
        "COPY clusters TO 'sub/rel.parquet'".to_owned(),
        format!("COPY clusters TO '{inside_url}'"),
        format!("COPY clusters TO '{other_url}'"),
    ] {
        stdout_of(["query", "--sandbox", r, "--root", &spec, &sql]);
    }
    assert!(root.join("sub/rel.parquet").is_file());
    assert!(root.join("by_url.parquet").is_file());
    assert!(other.join("o.parquet").is_file());
}

/// The JSONL scan is DataFusion's own data source: `EXPLAIN ANALYZE` shows it as a
/// `DataSourceExec` of file type jsonl with its metrics, and a file larger than
/// DataFusion's repartition threshold (10 MB) is read as several byte ranges in parallel,
/// with the same answer as an order-keeping single-partition read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_shows_the_jsonl_scan_split_into_partitions() {
    let dir = generated_summaries(12_000, 64).await;
    let file = dir.path().join("summaries.jsonl");
    assert!(std::fs::metadata(&file).unwrap().len() > 10 << 20);

    let out = stdout_of([
        "query",
        p(dir.path()),
        "--format",
        "ndjson",
        "EXPLAIN ANALYZE SELECT topic, count(*) FROM summaries GROUP BY topic",
    ]);
    let plan: Row = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let plan = plan["plan"].as_str().unwrap();
    let scan = plan
        .lines()
        .find(|l| l.trim_start().starts_with("DataSourceExec"))
        .unwrap_or_else(|| panic!("no DataSourceExec in\n{plan}"));
    assert!(scan.contains("file_type=jsonl"), "{scan}");
    assert!(scan.contains("kind=summaries"), "{scan}");
    for metric in [
        "output_rows=12.00 K",
        "bytes_scanned=",
        "decode_time=",
        "lines=12.00 K",
    ] {
        assert!(scan.contains(metric), "{metric} missing in {scan}");
    }
    // Several byte ranges of the one file: `file_groups={N groups: [[.../summaries.jsonl:0..M], ...`.
    let groups: usize = scan
        .split("file_groups={")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file_groups in {scan}"));
    assert!(groups >= 2, "one partition only: {scan}");
    assert!(scan.contains("summaries.jsonl:0.."), "{scan}");

    // The split read counts what a single-partition read counts.
    let split = stdout_of([
        "query",
        p(dir.path()),
        "--format",
        "csv",
        "SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY topic",
    ]);
    let whole = ckpt::CheckpointSession::new(
        vec![("root".into(), p(dir.path()).into())],
        ckpt::SessionOptions {
            target_partitions: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let batches = whole
        .sql("SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY topic")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    let mut want = vec!["topic,n".to_owned()];
    for b in &batches {
        let (topic, n) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            let t = if topic.is_null(i) { "" } else { topic.value(i) };
            want.push(format!("{t},{}", n.value(i)));
        }
    }
    assert!(want.len() > 2, "{want:?}");
    assert_eq!(split.lines().collect::<Vec<_>>(), want);
}

/// A size as `ls`, `sizes` and the write commands print it: `329.3 KiB`, `512 B`.
const HUMAN_SIZE: &str = r"\d+(\.\d)? (B|KiB|MiB|GiB)";
/// A duration as `--timing` and the summary lines print it: `12 ms`, `1.23 s`, `2 min 3 s`.
const HUMAN_DURATION: &str = r"(\d+(\.\d)? ms|\d+\.\d{2} s|\d+ min \d+ s|\d+ h \d+ min)";

fn matches(re: &str, text: &str) -> bool {
    predicate::str::is_match(re).unwrap().eval(text)
}

#[test]
fn ls_and_sizes_print_sizes_for_people_and_exact_bytes_with_bytes() {
    let data = sample_dir();
    let sizes: BTreeMap<String, u64> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .filter(|(f, _)| f.ends_with(".jsonl") || f.ends_with(".parquet"))
        .collect();
    assert_eq!(sizes.len(), 10);

    // ls: `size` for people by default, `bytes` exact with --bytes.
    let table = stdout_of(["ls", p(&data)]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[5], "size", "{table}");
    let exact = stdout_of(["ls", p(&data), "--bytes"]);
    assert_eq!(
        exact.lines().next().unwrap().split_whitespace().nth(5),
        Some("bytes")
    );
    for (file, bytes) in &sizes {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(file))
            .unwrap_or_else(|| panic!("no {file} in\n{table}"));
        let shown = human(*bytes);
        assert!(matches(HUMAN_SIZE, &shown), "{shown}");
        assert!(line.contains(&format!(" {shown} ")), "{line:?}: no {shown}");
        assert!(!line.contains(&bytes.to_string()), "{line:?}");
        let line = exact
            .lines()
            .find(|l| l.split_whitespace().next() == Some(file))
            .unwrap();
        assert_eq!(
            line.split_whitespace().nth(5),
            Some(bytes.to_string().as_str())
        );
    }
    // listed_names reads the names whatever the size column holds.
    let mut want: Vec<&str> = sizes.keys().map(String::as_str).collect();
    want.sort();
    assert_eq!(common::listed_names(&table), want);
    // JSON keeps bytes as integers, with or without --bytes.
    let json = stdout_of(["ls", p(&data), "--format", "json"]);
    assert_eq!(
        json,
        stdout_of(["ls", p(&data), "--format", "json", "--bytes"])
    );
    for entry in serde_json::from_str::<Vec<Value>>(&json).unwrap() {
        let file = entry["file"].as_str().unwrap();
        assert_eq!(entry["bytes"].as_u64(), Some(sizes[file]), "{entry}");
    }

    // sizes: the same two forms, and JSON in bytes.
    let table = stdout_of(["sizes", p(&data)]);
    let exact = stdout_of(["sizes", p(&data), "--bytes"]);
    for name in [
        "clusters",
        "conversations",
        "dimensionality",
        "meta_clusters",
        "summaries",
    ] {
        let (j, pq) = (
            sizes[&format!("{name}.jsonl")],
            sizes[&format!("{name}.parquet")],
        );
        let want = format!("| {name} | {} | {} | ", human(j), human(pq));
        assert!(
            table.lines().any(|l| l.starts_with(&want)),
            "{want:?} in\n{table}"
        );
        let want = format!("| {name} | {j} | {pq} | ");
        assert!(
            exact.lines().any(|l| l.starts_with(&want)),
            "{want:?} in\n{exact}"
        );
    }
    let json = stdout_of(["sizes", p(&data), "--format", "json"]);
    assert_eq!(
        json,
        stdout_of(["sizes", p(&data), "--format", "json", "--bytes"])
    );
    for row in serde_json::from_str::<Vec<Value>>(&json).unwrap() {
        let name = row["checkpoint"].as_str().unwrap();
        assert_eq!(
            row["jsonl_bytes"].as_u64(),
            Some(sizes[&format!("{name}.jsonl")])
        );
        assert_eq!(
            row["parquet_bytes"].as_u64(),
            Some(sizes[&format!("{name}.parquet")])
        );
    }
}

#[test]
fn convert_summary_lines_show_sizes_and_times_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_dir().join("summaries.jsonl");
    let bytes_in = std::fs::metadata(&src).unwrap().len();
    let out = stdout_of(["convert", p(&src), p(&dir.path().join("s.parquet"))]);
    let bytes_out = std::fs::metadata(dir.path().join("s.parquet"))
        .unwrap()
        .len();
    let line = out.lines().next().unwrap();
    let re = format!(
        r"^.+summaries\.jsonl -> .+s\.parquet: 250 rows, {HUMAN_SIZE} in, {HUMAN_SIZE} out, ratio \d+\.\d\dx, {HUMAN_DURATION}$"
    );
    assert!(matches(&re, line), "{line:?} is not {re}");
    assert!(
        line.contains(&format!(
            ": 250 rows, {} in, {} out, ",
            human(bytes_in),
            human(bytes_out)
        )),
        "{line:?}"
    );
    // A root: a line per checkpoint, and the total.
    let root = dir.path().join("root");
    common::copy_sample(&root, true);
    let out = stdout_of(["convert", p(&root), p(&dir.path().join("pq"))]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let total = format!(
        r"^total: 5 checkpoints, \d+ rows, {HUMAN_SIZE} in, {HUMAN_SIZE} out, ratio \d+\.\d\dx, {HUMAN_DURATION}$"
    );
    assert!(matches(&total, lines[5]), "{:?} is not {total}", lines[5]);
    // --bytes: the exact numbers.
    let out = stdout_of([
        "convert",
        p(&src),
        p(&dir.path().join("s2.parquet")),
        "--bytes",
    ]);
    assert!(
        out.contains(&format!(": 250 rows, {bytes_in} bytes in, ")),
        "{out}"
    );
}

#[test]
fn long_writes_show_no_progress_when_stderr_is_not_a_terminal() {
    // Every command that draws a bar at a terminal, with stderr piped (as here): nothing on
    // stderr, only the summary lines on stdout.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("gen");
    let quiet_run = |args: &[&str]| -> String {
        let out = ckpt().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.is_empty(), "{args:?} wrote on stderr: {stderr:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let out = quiet_run(&["generate", p(&root), "--summaries", "300", "--dim", "8"]);
    let re = format!(r"^.+summaries\.jsonl: 300 rows, {HUMAN_SIZE}$");
    assert!(out.lines().any(|l| matches(&re, l)), "{out}");
    let out = quiet_run(&["convert", p(&root), p(&dir.path().join("pq"))]);
    assert_eq!(out.lines().count(), 6, "{out}");
    let batch = dir.path().join("batch.jsonl");
    std::fs::copy(sample_dir().join("summaries.jsonl"), &batch).unwrap();
    let out = quiet_run(&["append", p(&root), "summaries", p(&batch)]);
    let re =
        format!(r"appended 250 rows from .+ as a new part \({HUMAN_SIZE}, {HUMAN_DURATION}\)$");
    assert!(matches(&re, out.trim_end()), "{out}");
    let out = quiet_run(&["compact", p(&root), "summaries"]);
    let re = format!(r"compacted 1 parts into \d+ rows, {HUMAN_SIZE}, {HUMAN_DURATION}$");
    assert!(matches(&re, out.trim_end()), "{out}");
}

/// The cells of each body line of a `table` grid (the lines between the header's rule and
/// the closing rule), trimmed.
fn grid_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn null_and_the_empty_string_print_differently() {
    let data = sample_dir();
    let sql = "SELECT CAST(NULL AS VARCHAR) AS a, '' AS b, 'x' AS c";
    let run = |extra: &[&str]| {
        let mut args = vec!["query", p(&data), sql];
        args.extend_from_slice(extra);
        stdout_of(args)
    };

    // table and markdown: NULL by default, the --null text when given; '' stays empty.
    assert_eq!(grid_rows(&run(&[])), [["NULL", "", "x"]]);
    assert_eq!(grid_rows(&run(&["--null", "∅"])), [["∅", "", "x"]]);
    let md = run(&["--format", "markdown"]);
    assert_eq!(md.lines().nth(2), Some("| NULL |  | x |"), "{md}");
    let md = run(&["--format", "markdown", "--null", ""]);
    assert_eq!(md.lines().nth(2), Some("|  |  | x |"), "{md}");

    // csv: an empty field for both (--null is for the grids); json: null and "".
    let csv = run(&["--format", "csv", "--null", "NULL"]);
    assert_eq!(csv, "a,b,c\n,,x\n");
    let json = rows_of_json_array(&run(&["--format", "json"]));
    assert_eq!(json[0]["a"], Value::Null);
    assert_eq!(json[0]["b"], Value::from(""));
    let nd = run(&["--format", "ndjson", "--null", "-"]);
    let row: Row = serde_json::from_str(nd.trim_end()).unwrap();
    assert_eq!(
        (row["a"].clone(), row["b"].clone()),
        (Value::Null, Value::from(""))
    );

    // The shell: --null, and \null to change it.
    let home = tempfile::tempdir().unwrap();
    let out = ckpt()
        .env("HOME", home.path())
        .args(["shell", p(&data), "--null", "(null)"])
        .write_stdin(format!("{sql};\n\\null n/a\n{sql};\n\\null ''\n{sql};\n"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("null \"n/a\"") && out.contains("null \"\""),
        "{out}"
    );
    let firsts: Vec<String> = grid_rows(&out)
        .into_iter()
        .filter(|r| r.len() == 3 && r[2] == "x")
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(firsts, ["(null)", "n/a", ""], "{out}");
}

#[test]
fn help_shows_shell_commands_with_one_backslash() {
    for args in [&["--help"][..], &["shell", "--help"]] {
        let out = stdout_of(args);
        assert!(out.contains(r"\d"), "{args:?}:\n{out}");
        assert!(!out.contains(r"\\"), "{args:?}:\n{out}");
    }
    let shell = stdout_of(["shell", "--help"]);
    for option in ["--null <TEXT>", "--max-width <N>", "--wide"] {
        assert!(shell.contains(option), "{option} not in\n{shell}");
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(["completions", shell]);
        assert!(script.len() > 100, "{shell}: {script}");
        assert!(script.contains("ckpt"), "{shell}: {script}");
        for sub in ["query", "convert", "completions"] {
            assert!(script.contains(sub), "{shell}: no {sub} in\n{script}");
        }
    }
    // An option of a subcommand is completed too.
    assert!(stdout_of(["completions", "bash"]).contains("--max-width"));
    ckpt()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'tcsh'"));
    ckpt().arg("completions").assert().code(2);
}

#[test]
fn max_width_cuts_long_cells_and_wide_keeps_them() {
    let data = sample_dir();
    let long = "abcdefghij".repeat(10);
    let accents = "é".repeat(60);
    let sql = format!(
        "SELECT * FROM (VALUES (1, '{long}', 'short'), (2, '{accents}', NULL)) AS t(id, text, s)"
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["query", p(&data), &sql];
        args.extend_from_slice(extra);
        stdout_of(args)
    };

    // Piped without options: nothing is cut (what scripts read does not change).
    let full = run(&[]);
    assert!(full.contains(&long) && full.contains(&accents), "{full}");
    assert!(!full.contains('…'), "{full}");

    let cut = run(&["--max-width", "40"]);
    for line in cut.lines() {
        assert!(
            line.chars().count() <= 40,
            "{line:?} is wider than 40:\n{cut}"
        );
    }
    assert_eq!(cut.lines().next().unwrap().chars().count(), 40, "{cut}");
    let rows = grid_rows(&cut);
    assert_eq!(rows.len(), 2, "{cut}");
    // The narrow columns stay whole; the long text is cut, at a character boundary.
    assert_eq!((rows[0][0].as_str(), rows[0][2].as_str()), ("1", "short"));
    assert_eq!((rows[1][0].as_str(), rows[1][2].as_str()), ("2", "NULL"));
    for (row, text) in rows.iter().zip([&long, &accents]) {
        let kept = row[1]
            .strip_suffix('…')
            .unwrap_or_else(|| panic!("not cut: {row:?}"));
        assert!(!kept.is_empty() && text.starts_with(kept), "{row:?}");
    }

    // --wide turns the cut off, also over --max-width.
    assert_eq!(run(&["--max-width", "40", "--wide"]), full);
    assert_eq!(run(&["--wide"]), full);
    // Wide enough: the grid as it is.
    assert_eq!(run(&["--max-width", "1000"]), full);
    // Only the table is cut.
    let csv = run(&["--format", "csv", "--max-width", "40"]);
    assert!(csv.contains(&long), "{csv}");

    ckpt()
        .args(["query", p(&data), "SELECT 1", "--max-width", "0"])
        .assert()
        .code(2);
}

// ---- ckpt check: is a pipeline run consistent ----

/// A small consistent run, as Kura writes one: four summaries (and their conversations),
/// two base clusters under one meta cluster, every meta cluster projected. Each check test
/// breaks one thing in it.
struct Run {
    summaries: Vec<ckpt::ConversationSummary>,
    conversations: Vec<ckpt::Conversation>,
    clusters: Vec<ckpt::Cluster>,
    meta: Vec<ckpt::Cluster>,
    dims: Vec<ckpt::ProjectedCluster>,
}

fn check_cluster(id: &str, chat_ids: &[&str], parent: Option<&str>) -> ckpt::Cluster {
    ckpt::Cluster {
        id: id.into(),
        name: format!("cluster {id}"),
        description: format!("what {id} is about"),
        slug: id.into(),
        chat_ids: chat_ids.iter().map(|c| c.to_string()).collect(),
        parent_id: parent.map(str::to_owned),
    }
}

fn check_projection(c: &ckpt::Cluster, level: i32) -> ckpt::ProjectedCluster {
    ckpt::ProjectedCluster {
        cluster: c.clone(),
        x_coord: 0.5,
        y_coord: -1.5,
        level,
    }
}

fn consistent_run() -> Run {
    let chats = ["a", "b", "c", "d"];
    let at = chrono::NaiveDate::from_ymd_opt(2025, 1, 2)
        .unwrap()
        .and_hms_opt(3, 4, 5)
        .unwrap();
    let summaries = chats
        .iter()
        .map(|c| ckpt::ConversationSummary {
            chat_id: c.to_string(),
            summary: format!("summary of {c}"),
            embedding: Some(vec![0.1, 0.2, 0.3]),
            ..Default::default()
        })
        .collect();
    let conversations = chats
        .iter()
        .map(|c| ckpt::Conversation {
            chat_id: c.to_string(),
            created_at: at,
            messages: vec![ckpt::Message {
                created_at: at,
                role: ckpt::Role::User,
                content: format!("hello from {c}"),
            }],
            metadata: Default::default(),
        })
        .collect();
    let clusters = vec![
        check_cluster("c1", &["a", "b"], None),
        check_cluster("c2", &["c", "d"], None),
    ];
    // Kura's meta_clusters: every level, base clusters with their parent set.
    let meta = vec![
        check_cluster("m1", &["a", "b", "c", "d"], None),
        check_cluster("c1", &["a", "b"], Some("m1")),
        check_cluster("c2", &["c", "d"], Some("m1")),
    ];
    let dims = meta
        .iter()
        .map(|m| check_projection(m, if m.parent_id.is_none() { 0 } else { 1 }))
        .collect();
    Run {
        summaries,
        conversations,
        clusters,
        meta,
        dims,
    }
}

/// Saves a run (broken by `breaking`) as JSONL checkpoints in a new directory.
async fn saved_run(breaking: impl FnOnce(&mut Run)) -> tempfile::TempDir {
    let mut run = consistent_run();
    breaking(&mut run);
    let dir = tempfile::tempdir().unwrap();
    let m = ckpt::CheckpointManager::jsonl(p(dir.path())).unwrap();
    m.save("summaries", &run.summaries).await.unwrap();
    m.save("conversations", &run.conversations).await.unwrap();
    m.save("clusters", &run.clusters).await.unwrap();
    m.save("meta_clusters", &run.meta).await.unwrap();
    m.save("dimensionality", &run.dims).await.unwrap();
    dir
}

/// `ckpt check ARGS --format json`: the exit code and the report.
fn check_json<I, S>(args: I) -> (i32, Value)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = ckpt()
        .arg("check")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

/// Checks the root `dir`: it must fail (exit 1) with exactly one problem, returned.
fn the_one_problem(dir: &Path) -> Value {
    let (code, report) = check_json([p(dir)]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["consistent"], false);
    let problems = report["roots"][0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    problems[0].clone()
}

fn assert_problem(p: &Value, checkpoint: &str, problem: &str, ids: &[&str]) {
    assert_eq!(p["checkpoint"], checkpoint, "{p:#}");
    assert_eq!(p["problem"], problem, "{p:#}");
    assert_eq!(p["ids"], serde_json::json!(ids), "{p:#}");
    assert_eq!(p["count"], ids.len(), "{p:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_the_sample_and_a_consistent_run_consistent() {
    let run = saved_run(|_| {}).await;
    for dir in [sample_dir(), run.path().to_path_buf()] {
        let (code, report) = check_json([p(&dir)]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["consistent"], true);
        let root = &report["roots"][0];
        assert_eq!(root["problems"], serde_json::json!([]), "{report:#}");
        assert_eq!(root["skipped"], serde_json::json!([]), "{report:#}");
        assert_eq!(root["checked"].as_array().unwrap().len(), 11, "{report:#}");
    }
    // data/ holds every checkpoint in both formats: each is checked.
    let (_, report) = check_json([p(&sample_dir())]);
    assert_eq!(
        report["roots"][0]["checkpoints"].as_array().unwrap().len(),
        10
    );
    let table = stdout_of(["check", p(&sample_dir())]);
    assert!(
        table.contains("consistent (11 rules over 10 checkpoints)"),
        "{table}"
    );
}

#[test]
fn check_finds_kuras_own_output_consistent() {
    let test = "check_finds_kuras_own_output_consistent";
    let Some(dir) = std::env::var_os("CKPT_KURA_SAMPLE").filter(|d| !d.is_empty()) else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "\nSKIPPED: {test} (CKPT_KURA_SAMPLE is unset)"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.is_dir(),
        "CKPT_KURA_SAMPLE={} is not a folder",
        dir.display()
    );
    let (code, report) = check_json([p(&dir)]);
    assert_eq!(code, 0, "{report:#}");
    let root = &report["roots"][0];
    assert_eq!(root["problems"], serde_json::json!([]), "{report:#}");
    // Kura's run stores all five kinds: every rule ran.
    assert_eq!(root["checked"].as_array().unwrap().len(), 11, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_cluster_chat_ids_that_no_summary_has() {
    let dir = saved_run(|r| {
        r.clusters[1].chat_ids.push("ghost".into());
        r.clusters[1].chat_ids.push("phantom".into());
    })
    .await;
    // Several roots: each is checked on its own.
    let (code, report) = check_json([
        "--root",
        &format!("good={}", p(&sample_dir())),
        "--root",
        &format!("bad={}", p(dir.path())),
    ]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["roots"][0]["root"], "good");
    assert_eq!(report["roots"][0]["consistent"], true, "{report:#}");
    let bad = &report["roots"][1];
    assert_eq!(bad["root"], "bad");
    let problems = bad["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    assert_problem(
        &problems[0],
        "clusters.jsonl",
        "unknown_chat_id",
        &["ghost", "phantom"],
    );
    assert_eq!(problems[0]["against"], "summaries.jsonl");
    // The table names the checkpoint, the problem and the ids.
    let out = ckpt().args(["check", p(dir.path())]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("clusters.jsonl: unknown_chat_id"), "{table}");
    assert!(table.contains("ids: ghost, phantom"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_summaries_without_a_conversation() {
    let dir = saved_run(|r| {
        r.conversations.retain(|c| c.chat_id != "d");
    })
    .await;
    let problem = the_one_problem(dir.path());
    assert_problem(
        &problem,
        "summaries.jsonl",
        "summary_without_conversation",
        &["d"],
    );
    assert_eq!(problem["against"], "conversations.jsonl");

    // Without a conversations checkpoint the rule does not apply.
    std::fs::remove_file(dir.path().join("conversations.jsonl")).unwrap();
    let (code, report) = check_json([p(dir.path())]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["roots"][0]["skipped"],
        serde_json::json!([{"rule": "summary_without_conversation", "reason": "no conversations checkpoint"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_summaries_in_no_base_cluster() {
    let dir = saved_run(|r| {
        let mut e = r.summaries[0].clone();
        e.chat_id = "e".into();
        r.summaries.push(e);
        let mut c = r.conversations[0].clone();
        c.chat_id = "e".into();
        r.conversations.push(c);
    })
    .await;
    let problem = the_one_problem(dir.path());
    assert_problem(&problem, "summaries.jsonl", "unclustered_summary", &["e"]);
    assert_eq!(problem["against"], "clusters.jsonl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_parent_id_that_names_no_meta_cluster() {
    let dir = saved_run(|r| {
        r.meta[2].parent_id = Some("nowhere".into());
        r.dims[2].cluster.parent_id = Some("nowhere".into());
        // m1 is left with c1 alone: its chat ids are c1's.
        r.meta[0].chat_ids = vec!["a".into(), "b".into()];
    })
    .await;
    let problem = the_one_problem(dir.path());
    assert_problem(&problem, "meta_clusters.jsonl", "unknown_parent", &["c2"]);
    assert!(
        problem["message"].as_str().unwrap().contains("nowhere"),
        "{problem:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_cycles_in_the_parent_chain() {
    let dir = saved_run(|r| {
        // x and y are each other's parent (same chat ids, so each is its child's union).
        let x = check_cluster("x", &["a"], Some("y"));
        let y = check_cluster("y", &["a"], Some("x"));
        r.dims.push(check_projection(&x, 2));
        r.dims.push(check_projection(&y, 2));
        r.meta.extend([x, y]);
    })
    .await;
    let problem = the_one_problem(dir.path());
    assert_problem(&problem, "meta_clusters.jsonl", "parent_cycle", &["x", "y"]);
    assert!(
        problem["message"].as_str().unwrap().contains("x -> y -> x"),
        "{problem:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_parent_that_is_not_the_union_of_its_children() {
    let dir = saved_run(|r| {
        r.meta[0].chat_ids = vec!["a".into(), "b".into(), "c".into(), "zz".into()];
    })
    .await;
    let problem = the_one_problem(dir.path());
    assert_problem(&problem, "meta_clusters.jsonl", "parent_chat_ids", &["m1"]);
    let message = problem["message"].as_str().unwrap();
    assert!(
        message
            .contains("1 children's chat id(s) missing from their parent, 1 of a parent's in none"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_projections_of_unknown_clusters_and_missing_ones() {
    let unknown = saved_run(|r| {
        let z = check_cluster("z", &["a"], None);
        r.dims.push(check_projection(&z, 0));
    })
    .await;
    let problem = the_one_problem(unknown.path());
    assert_problem(
        &problem,
        "dimensionality.jsonl",
        "projection_of_unknown_cluster",
        &["z"],
    );
    assert_eq!(problem["against"], "meta_clusters.jsonl");

    let missing = saved_run(|r| r.dims.retain(|d| d.cluster.id != "c2")).await;
    let problem = the_one_problem(missing.path());
    assert_problem(
        &problem,
        "meta_clusters.jsonl",
        "missing_projection",
        &["c2"],
    );
    assert_eq!(problem["against"], "dimensionality.jsonl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_duplicate_ids_within_a_checkpoint() {
    let dir = saved_run(|r| {
        r.summaries.push(r.summaries[1].clone());
        r.clusters.push(r.clusters[0].clone());
    })
    .await;
    let (code, report) = check_json([p(dir.path())]);
    assert_eq!(code, 1, "{report:#}");
    let problems = report["roots"][0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{report:#}");
    let of = |checkpoint: &str| {
        problems
            .iter()
            .find(|p| p["checkpoint"] == checkpoint)
            .unwrap_or_else(|| panic!("no problem in {checkpoint}: {report:#}"))
    };
    assert_problem(
        of("summaries.jsonl"),
        "summaries.jsonl",
        "duplicate_id",
        &["b"],
    );
    assert_problem(
        of("clusters.jsonl"),
        "clusters.jsonl",
        "duplicate_id",
        &["c1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_embeddings_of_different_lengths() {
    let dir = saved_run(|r| {
        r.summaries[2].embedding = Some(vec![0.5, 0.5]);
        // No embedding is no length: not a problem.
        r.summaries[3].embedding = None;
    })
    .await;
    let problem = the_one_problem(dir.path());
    assert_problem(&problem, "summaries.jsonl", "embedding_length", &["c"]);
    let message = problem["message"].as_str().unwrap();
    assert!(message.contains("3 (2 rows), 2 (1 rows)"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_checkpoints_that_do_not_read() {
    let dir = saved_run(|_| {}).await;
    // A JSONL line that does not decode (the listing counts lines; the scan fails) ...
    let clusters = dir.path().join("clusters.jsonl");
    let mut text = std::fs::read_to_string(&clusters).unwrap();
    text.push_str("{\"id\": \"c3\", \"name\": 7}\n");
    std::fs::write(&clusters, text).unwrap();
    // ... and a Parquet file whose footer is garbage (the listing fails); as the Parquet
    // file, it is the `dimensionality` that SQL names.
    std::fs::write(
        dir.path().join("dimensionality.parquet"),
        b"not parquet at all",
    )
    .unwrap();
    let (code, report) = check_json([p(dir.path())]);
    assert_eq!(code, 1, "{report:#}");
    let root = &report["roots"][0];
    let problems = root["problems"].as_array().unwrap();
    let unreadable: Vec<&str> = problems
        .iter()
        .map(|p| {
            assert_eq!(p["problem"], "unreadable", "{report:#}");
            p["checkpoint"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        unreadable,
        ["clusters.jsonl", "dimensionality.parquet"],
        "{report:#}"
    );
    // The rules that need them did not run, and say why.
    let skipped: Vec<(&str, &str)> = root["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["rule"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert!(
        skipped.contains(&("unknown_chat_id", "clusters.jsonl does not read")),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("missing_projection", "dimensionality.parquet does not read")),
        "{skipped:?}"
    );
}

#[test]
fn check_usage_errors_exit_2_and_a_missing_root_1() {
    ckpt()
        .arg("check")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no root"));
    ckpt()
        .args(["check", p(&sample_dir()), "--format", "yaml"])
        .assert()
        .code(2);
    ckpt()
        .args(["check", "--root", "nameless"])
        .assert()
        .code(2);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    ckpt()
        .args(["check", p(&missing)])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no such root"));
    assert!(
        !missing.exists(),
        "check created the root it was asked to read"
    );
}
