//! Bad input never panics, never loses rows silently and never leaves partial output.
//!
//! Every file of `tests/corpus/` (made by `tests/corpus/make.py`; see its README) and a few
//! generated ones (a 50 MB line, 100 000 levels of nesting, damaged Parquet files) has one
//! defined outcome, checked through the CLI (`ckpt query`, `ckpt convert`) and the library:
//! accepted as documented (BOM, CRLF, blank lines, unknown fields), or refused with a
//! non-zero exit and an error naming the file, the line (or column) and the field. A failed
//! `convert` leaves no destination file (and no temporary) behind, and an existing
//! destination byte for byte as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ckpt::jsonl::{DecodeOptions, OnError};
use ckpt::{CheckpointManager, ConversationSummary, Error};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::common::{Run, ckpt, ckpt_cmd, s};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(CORPUS).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A fresh root holding `bytes` as `file`.
fn root_with(file: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), bytes).unwrap();
    dir
}

/// The names of every entry of a directory, temporaries included, sorted.
fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn count_rows(root: &Path, on_error: &str) -> Run {
    ckpt([
        "query",
        &s(root),
        "--on-error",
        on_error,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM summaries",
    ])
}

fn csv_count(run: &Run) -> usize {
    run.stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", run.stdout))
}

async fn load_jsonl(root: &Path, on_error: OnError) -> ckpt::Result<Vec<ConversationSummary>> {
    let m = CheckpointManager::jsonl(&s(root))?.decode_options(DecodeOptions {
        on_error,
        ..Default::default()
    });
    Ok(m.load::<ConversationSummary>("summaries")
        .await?
        .expect("the checkpoint exists"))
}

async fn load_file(path: &Path) -> ckpt::Result<Vec<ConversationSummary>> {
    let dir = s(path.parent().unwrap());
    let name = path.file_name().unwrap().to_str().unwrap();
    let m = if name.ends_with(".parquet") {
        CheckpointManager::parquet(&dir)?
    } else {
        CheckpointManager::jsonl(&dir)?
    };
    Ok(m.load::<ConversationSummary>(name).await?.expect("exists"))
}

async fn good_rows() -> Vec<ConversationSummary> {
    let dir = root_with("summaries.jsonl", &corpus("good.jsonl"));
    let rows = load_jsonl(dir.path(), OnError::Fail).await.unwrap();
    assert_eq!(rows.len(), 20);
    rows
}

/// A converted destination that must survive failed conversions byte for byte.
struct Previous {
    dir: tempfile::TempDir,
    file: PathBuf,
    bytes: Vec<u8>,
}

impl Previous {
    /// `good.jsonl` converted (by the CLI) to `name` in a directory of its own.
    fn new(name: &str) -> Previous {
        let src = root_with("summaries.jsonl", &corpus("good.jsonl"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        ckpt([
            "convert",
            "-q",
            &s(&src.path().join("summaries.jsonl")),
            &s(&file),
        ])
        .expect_ok("converting good.jsonl");
        let bytes = std::fs::read(&file).unwrap();
        Previous { dir, file, bytes }
    }

    fn assert_intact(&self, what: &str) {
        assert_eq!(
            std::fs::read(&self.file).unwrap(),
            self.bytes,
            "{what}: the previous destination changed"
        );
        assert_eq!(
            dir_entries(self.dir.path()),
            vec![
                self.file
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            ],
            "{what}: something was left beside the previous destination"
        );
    }
}

/// `ckpt convert SRC DST` must fail with `expect` in its message and leave nothing: no
/// DST in a fresh directory, and an existing DST unchanged.
fn assert_convert_fails(src: &Path, dst_name: &str, expect: &[&str], what: &str) {
    let fresh = tempfile::tempdir().unwrap();
    let r = ckpt(["convert", "-q", &s(src), &s(&fresh.path().join(dst_name))]).expect_err(what);
    for e in expect {
        assert!(
            r.stderr.contains(e),
            "{what}: convert error lacks {e:?}:\n{}",
            r.stderr
        );
    }
    assert!(
        dir_entries(fresh.path()).is_empty(),
        "{what}: a failed convert left {:?}",
        dir_entries(fresh.path())
    );

    let prev = Previous::new(dst_name);
    ckpt(["convert", "-q", &s(src), &s(&prev.file)]).expect_err(what);
    prev.assert_intact(what);
}

// ---- JSONL corpus -------------------------------------------------------------------------

/// Accepted files and the rows they hold (`true`: exactly good.jsonl's rows).
const ACCEPTED: &[(&str, usize, bool)] = &[
    ("good.jsonl", 20, true),
    ("bom.jsonl", 20, true),
    ("crlf.jsonl", 20, true),
    ("blank_lines.jsonl", 20, true),
    ("no_final_newline.jsonl", 20, true),
    ("extra_fields.jsonl", 20, true),
    ("deep_metadata.jsonl", 20, false),
    ("empty.jsonl", 0, false),
    ("only_blank_lines.jsonl", 0, false),
    // As Kura reads them: an infinite embedding value, and a duplicated key (the last wins).
    ("infinity.jsonl", 20, false),
    ("duplicate_key.jsonl", 20, false),
];

/// Refused files: (file, line, field, words of the message).
const REFUSED: &[(&str, u64, Option<&str>, &str)] = &[
    (
        "truncated_last_line.jsonl",
        20,
        Some("embedding"),
        "(column ",
    ),
    (
        "invalid_json_middle.jsonl",
        7,
        Some("topic"),
        "expected value",
    ),
    ("not_an_object.jsonl", 6, None, "expected a JSON object"),
    (
        "wrong_type_int.jsonl",
        5,
        Some("concerning_score"),
        "expected an integer",
    ),
    (
        "wrong_type_list.jsonl",
        9,
        Some("languages"),
        "expected a list of strings",
    ),
    ("wrong_type_embedding.jsonl", 12, Some("embedding"), "\"x\""),
    (
        "wrong_type_metadata.jsonl",
        3,
        Some("metadata"),
        "expected a JSON object",
    ),
    (
        "missing_required.jsonl",
        4,
        Some("chat_id"),
        "required field is missing",
    ),
    (
        "missing_summary.jsonl",
        15,
        Some("summary"),
        "required field is missing",
    ),
    ("invalid_utf8.jsonl", 6, Some("summary"), "unicode"),
    (
        "control_char.jsonl",
        13,
        Some("summary"),
        "control character",
    ),
    // Kura's parser reads NaN and Infinity; an integer score refuses them, as Kura does.
    (
        "nan.jsonl",
        3,
        Some("concerning_score"),
        "expected a finite number",
    ),
    (
        "neg_infinity.jsonl",
        11,
        Some("user_frustration"),
        "expected a finite number",
    ),
    (
        "null_required.jsonl",
        14,
        Some("chat_id"),
        "required field is null",
    ),
    ("skip_3_bad.jsonl", 5, Some("chat_id"), "expected a string"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_jsonl_files_load_whole() {
    let good = good_rows().await;
    for &(file, rows, same_as_good) in ACCEPTED {
        let root = root_with("summaries.jsonl", &corpus(file));

        // SQL: count(*), and a query reading every column.
        let r = count_rows(root.path(), "fail").expect_ok(file);
        assert_eq!(csv_count(&r), rows, "{file}: count(*)");
        ckpt([
            "query",
            &s(root.path()),
            "SELECT * FROM summaries ORDER BY chat_id",
        ])
        .expect_ok(file);

        // The library.
        let loaded = load_jsonl(root.path(), OnError::Fail).await.unwrap();
        assert_eq!(loaded.len(), rows, "{file}: rows loaded");
        if same_as_good {
            assert_eq!(loaded, good, "{file}: rows differ from good.jsonl");
        }
        for row in &loaded {
            assert!(
                !row.summary.contains('\r') && !row.chat_id.contains('\r'),
                "{file}: a CR came through"
            );
            assert!(
                !row.summary.starts_with('\u{feff}'),
                "{file}: the BOM came through"
            );
        }

        // convert to Parquet and back: the same rows.
        let out = tempfile::tempdir().unwrap();
        let pq = out.path().join("summaries.parquet");
        let back = out.path().join("back.jsonl");
        let r = ckpt([
            "convert",
            "-q",
            &s(&root.path().join("summaries.jsonl")),
            &s(&pq),
        ])
        .expect_ok(file);
        assert!(
            r.stdout.contains(&format!("{rows} rows")),
            "{file}: {}",
            r.stdout
        );
        ckpt(["convert", "-q", &s(&pq), &s(&back)]).expect_ok(file);
        assert_eq!(load_file(&pq).await.unwrap(), loaded, "{file}: via Parquet");
        assert_eq!(
            load_file(&back).await.unwrap(),
            loaded,
            "{file}: round trip"
        );
    }

    // The 64-deep metadata object is kept as it was written.
    let root = root_with("summaries.jsonl", &corpus("deep_metadata.jsonl"));
    let loaded = load_jsonl(root.path(), OnError::Fail).await.unwrap();
    let mut v = &loaded[1].metadata["deep"];
    let mut depth = 0;
    while let Some(inner) = v.get("level") {
        v = inner;
        depth += 1;
    }
    assert_eq!((depth, v.clone()), (64, serde_json::json!(1)));
    assert_eq!(loaded[0], good[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_jsonl_files_name_file_line_and_field() {
    for &(file, line, field, words) in REFUSED {
        let root = root_with("summaries.jsonl", &corpus(file));
        let at = match field {
            Some(f) => format!("summaries.jsonl:{line}: {f}: "),
            None => format!("summaries.jsonl:{line}: "),
        };
        for sql in [
            "SELECT count(*) FROM summaries",
            "SELECT chat_id, summary, embedding, metadata FROM summaries",
        ] {
            let r = ckpt(["query", &s(root.path()), sql]).expect_err(file);
            assert!(
                r.stderr.contains(&at) && r.stderr.contains(words),
                "{file}: {sql}: expected {at:?} and {words:?} in:\n{}",
                r.stderr
            );
            assert!(
                r.stdout.is_empty(),
                "{file}: printed a result: {}",
                r.stdout
            );
        }

        assert_convert_fails(
            &root.path().join("summaries.jsonl"),
            "summaries.parquet",
            &[&at, words],
            file,
        );

        let err = load_jsonl(root.path(), OnError::Fail).await.unwrap_err();
        let pos = err
            .position()
            .unwrap_or_else(|| panic!("{file}: not a data error: {err}"));
        assert_eq!(pos.file, "summaries.jsonl", "{file}");
        assert_eq!(pos.line, Some(line), "{file}: {err}");
        assert_eq!(pos.field.as_deref(), field, "{file}: {err}");
        assert!(err.to_string().contains(words), "{file}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_mode_salvages_the_good_lines_and_reports_the_bad_ones() {
    let good = good_rows().await;
    let root = root_with("summaries.jsonl", &corpus("skip_3_bad.jsonl"));
    let reported = |stderr: &str| {
        assert!(stderr.contains("skipped 3"), "no 'skipped 3' in:\n{stderr}");
        for (line, what) in [
            (5, "chat_id: expected a string"),
            (12, "invalid JSON: expected value (column 1)"),
            (18, "chat_id: required field is missing"),
        ] {
            let needle = format!("summaries.jsonl:{line}: {what}");
            assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
        }
    };

    let r = count_rows(root.path(), "skip").expect_ok("query --on-error skip");
    assert_eq!(csv_count(&r), 20);
    reported(&r.stderr);

    let out = tempfile::tempdir().unwrap();
    let pq = out.path().join("summaries.parquet");
    let r = ckpt([
        "convert",
        "-q",
        "--on-error",
        "skip",
        &s(&root.path().join("summaries.jsonl")),
        &s(&pq),
    ])
    .expect_ok("convert --on-error skip");
    assert!(r.stdout.contains("20 rows"), "{}", r.stdout);
    reported(&r.stderr);
    assert_eq!(load_file(&pq).await.unwrap(), good);

    assert_eq!(load_jsonl(root.path(), OnError::Skip).await.unwrap(), good);
    // Without skip the first bad line stops everything.
    let err = load_jsonl(root.path(), OnError::Fail).await.unwrap_err();
    assert_eq!(err.position().unwrap().line, Some(5), "{err}");
}

/// Line numbers stay exact past the decoder's 4 MiB blocks, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_numbers_are_exact_across_blocks() {
    let good = corpus("good.jsonl");
    let lines: Vec<&[u8]> = good
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // ~12 MiB: 13 000 lines of ~950 bytes, the `bad` ones missing their chat_id.
    let body_with = |bad: &[u64]| {
        let mut body = Vec::new();
        for n in 1..=13_000u64 {
            if bad.contains(&n) {
                body.extend_from_slice(br#"{"summary":"bad line","chat_id":null}"#);
            } else {
                let l = lines[(n % 20) as usize];
                let pad = "p".repeat(550);
                body.extend_from_slice(&l[..l.len() - 1]);
                body.extend_from_slice(format!(r#","padding":"{pad}"}}"#).as_bytes());
            }
            body.push(b'\n');
        }
        assert!(body.len() > 2 * (4 << 20));
        body
    };
    let bad = [777u64, 3001, 9999];
    let root = root_with("summaries.jsonl", &body_with(&bad));

    let r = count_rows(root.path(), "fail").expect_err("bad lines");
    assert!(
        r.stderr.contains("summaries.jsonl:777: chat_id"),
        "{}",
        r.stderr
    );
    // The first bad line in a later block is named with its line in the file.
    let late = root_with("summaries.jsonl", &body_with(&[9999]));
    let r = count_rows(late.path(), "fail").expect_err("a bad line");
    assert!(
        r.stderr.contains("summaries.jsonl:9999: chat_id"),
        "{}",
        r.stderr
    );

    let r = count_rows(root.path(), "skip").expect_ok("skip");
    assert_eq!(csv_count(&r), 13_000 - 3);
    assert!(r.stderr.contains("skipped 3"), "{}", r.stderr);
    for l in bad {
        let needle = format!("summaries.jsonl:{l}: chat_id: required field is null");
        assert!(
            r.stderr.contains(&needle),
            "no {needle:?} in:\n{}",
            r.stderr
        );
    }
    let rows = load_jsonl(root.path(), OnError::Skip).await.unwrap();
    assert_eq!(rows.len(), 13_000 - 3);
}

// ---- big and pathological JSONL -------------------------------------------------------------

/// Runs `cmd`, sampling its peak resident memory (VmHWM) until it exits.
fn run_measured(cmd: &mut std::process::Command) -> (Run, Duration, u64) {
    use std::process::Stdio;
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            for l in status.lines() {
                if let Some(v) = l.strip_prefix("VmHWM:") {
                    let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap();
                    peak_kb = peak_kb.max(kb);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !r.stderr.contains("panicked"),
        "{cmd:?} panicked:\n{}",
        r.stderr
    );
    (r, elapsed, peak_kb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_line_is_accepted_in_bounded_time_and_memory() {
    let good = corpus("good.jsonl");
    let lines: Vec<&[u8]> = good.split(|b| *b == b'\n').collect();
    // 50 MB of text with quotes, newlines and non-ASCII characters every kilobyte.
    let chunk = format!("{}\"\n\u{e9}\u{1F600}", "x".repeat(1000));
    let huge: String = chunk.repeat(50_000_000 / chunk.len() + 1);
    let mut row: serde_json::Value = serde_json::from_slice(lines[1]).unwrap();
    row["summary"] = serde_json::Value::String(huge.clone());
    let mut body = lines[0].to_vec();
    body.push(b'\n');
    body.extend(serde_json::to_vec(&row).unwrap());
    body.push(b'\n');
    body.extend_from_slice(lines[2]);
    body.push(b'\n');
    assert!(body.len() > 50_000_000);
    let root = root_with("summaries.jsonl", &body);
    drop(body);

    let limit = Duration::from_secs(60);
    let mem_limit_kb = 1024 * 1024; // the line is 50 MB; a few copies are fine, 1 GiB is not
    let (r, t, peak) = run_measured(ckpt_cmd().args([
        "query",
        &s(root.path()),
        "--format",
        "csv",
        "SELECT count(*) AS n, max(length(summary)) AS longest FROM summaries",
    ]));
    let r = r.expect_ok("query");
    assert_eq!(
        r.stdout.lines().nth(1).unwrap(),
        format!("3,{}", huge.chars().count())
    );
    assert!(t < limit && peak < mem_limit_kb, "query: {t:?}, {peak} kB");

    let out = tempfile::tempdir().unwrap();
    let pq = out.path().join("summaries.parquet");
    let (r, t, peak) = run_measured(ckpt_cmd().args([
        "convert",
        "-q",
        &s(&root.path().join("summaries.jsonl")),
        &s(&pq),
    ]));
    r.expect_ok("convert");
    assert!(
        t < limit && peak < mem_limit_kb,
        "convert: {t:?}, {peak} kB"
    );
    let back = out.path().join("back.jsonl");
    let (r, t, peak) = run_measured(ckpt_cmd().args(["convert", "-q", &s(&pq), &s(&back)]));
    r.expect_ok("convert back");
    assert!(
        t < limit && peak < mem_limit_kb,
        "convert back: {t:?}, {peak} kB"
    );

    let loaded = load_file(&back).await.unwrap();
    assert_eq!(loaded.len(), 3);
    assert!(loaded[1].summary == huge, "the 50 MB summary changed");
}

/// 100 000 levels of nesting: refused cleanly as Kura's parser refuses them (its recursion
/// limit, 200 levels inside a line), naming the field they are in, wherever they are;
/// never a stack overflow. At the limit, the line is accepted and kept whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_nesting_never_crashes() {
    const N: usize = 100_000;
    let good = corpus("good.jsonl");
    let lines: Vec<&[u8]> = good.split(|b| *b == b'\n').collect();
    let arrays = format!("{}{}", "[".repeat(N), "]".repeat(N));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(N), "}".repeat(N));
    // The line's object, metadata, and 199 lists: 201 levels, Kura's most.
    let at_limit = format!("{}{}", "[".repeat(199), "]".repeat(199));
    let second = String::from_utf8(lines[1].to_vec()).unwrap();
    // (case, line 2, Some(field) when refused)
    let cases: Vec<(&str, String, Option<Option<&str>>)> = vec![
        (
            "in metadata, at the limit",
            second.replacen(
                r#""metadata":{"#,
                &format!(r#""metadata":{{"deep":{at_limit},"#),
                1,
            ),
            None,
        ),
        (
            "in metadata",
            second.replacen(
                r#""metadata":{"#,
                &format!(r#""metadata":{{"deep":{arrays},"#),
                1,
            ),
            Some(Some("metadata")),
        ),
        (
            "in an unknown field",
            second.replacen(
                r#""chat_id""#,
                &format!(r#""unknown":{objects},"chat_id""#),
                1,
            ),
            Some(Some("unknown")),
        ),
        (
            "in languages",
            second.replacen(r#""languages":["#, &format!(r#""languages":[{arrays},"#), 1),
            Some(Some("languages")),
        ),
        (
            "in embedding",
            second.replacen(r#""embedding":["#, &format!(r#""embedding":[{arrays},"#), 1),
            Some(Some("embedding")),
        ),
        ("as the whole line", "[".repeat(N), Some(None)),
        ("unclosed objects", r#"{"a":"#.repeat(N), Some(Some("a"))),
    ];
    for (what, line2, refused) in cases {
        let body = [lines[0], line2.as_bytes(), lines[2], b""].join(&b'\n');
        let root = root_with("summaries.jsonl", &body);
        let q = count_rows(root.path(), "fail");
        match refused {
            None => {
                let q = q.expect_ok(what);
                assert_eq!(csv_count(&q), 3, "{what}");
                let out = tempfile::tempdir().unwrap();
                let pq = out.path().join("summaries.parquet");
                ckpt([
                    "convert",
                    "-q",
                    &s(&root.path().join("summaries.jsonl")),
                    &s(&pq),
                ])
                .expect_ok(what);
                let back = out.path().join("back.jsonl");
                ckpt(["convert", "-q", &s(&pq), &s(&back)]).expect_ok(what);
                // SQL keeps the metadata text whole.
                let r = ckpt([
                    "query",
                    &s(out.path()),
                    "--format",
                    "csv",
                    "SELECT length(metadata) AS n FROM back ORDER BY chat_id",
                ])
                .expect_ok(what);
                assert!(r.stdout.lines().count() == 4, "{what}: {}", r.stdout);
                // A typed load either keeps the value or says why it cannot: serde_json
                // stops at 128 levels in a Rust value.
                match load_jsonl(root.path(), OnError::Fail).await {
                    Ok(rows) => assert_eq!(rows.len(), 3, "{what}"),
                    Err(e) => assert!(
                        e.to_string().contains("recursion limit"),
                        "{what}: unexpected error {e}"
                    ),
                }
            }
            Some(field) => {
                let q = q.expect_err(what);
                let at = match field {
                    Some(f) => format!("summaries.jsonl:2: {f}: "),
                    None => "summaries.jsonl:2: ".to_owned(),
                };
                let words = "recursion limit exceeded";
                assert!(
                    q.stderr.contains(&at) && q.stderr.contains(words),
                    "{what}: no {at:?} and {words:?} in {}",
                    q.stderr
                );
                assert_convert_fails(
                    &root.path().join("summaries.jsonl"),
                    "summaries.parquet",
                    &[&at, words],
                    what,
                );
                let err = load_jsonl(root.path(), OnError::Fail).await.unwrap_err();
                let pos = err.position().unwrap();
                assert_eq!(pos.line, Some(2), "{what}: {err}");
                assert_eq!(pos.field.as_deref(), field, "{what}: {err}");
            }
        }
    }
}

// ---- Parquet ------------------------------------------------------------------------------

fn good_parquet() -> Vec<u8> {
    Previous::new("summaries.parquet").bytes
}

/// A summaries Parquet file with `concerning_score` as text or without `chat_id`.
fn parquet_with(change: &str) -> Vec<u8> {
    let kind = ckpt::CheckpointKind::Summaries.schema();
    let mut fields: Vec<Field> = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    let n = 3;
    for f in kind.fields() {
        let name = f.name().as_str();
        if change == "no chat_id" && name == "chat_id" {
            continue;
        }
        if change == "score as text" && name == "concerning_score" {
            fields.push(Field::new(name, DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from(vec!["high", "low", "1"])));
            continue;
        }
        fields.push(f.as_ref().clone());
        cols.push(match name {
            "summary" | "chat_id" => Arc::new(StringArray::from(vec!["a", "b", "c"])),
            "metadata" => Arc::new(StringArray::from(vec!["{}"; n])),
            _ => datafusion::arrow::array::new_null_array(f.data_type(), n),
        });
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let mut buf = Vec::new();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_parquet_files_fail_cleanly() {
    let good = good_parquet();
    let n = good.len();
    let mut footer_flipped = good.clone();
    for b in &mut footer_flipped[n - 40..n - 8] {
        *b ^= 0x5a;
    }
    let mut huge_footer_len = good.clone();
    huge_footer_len[n - 8..n - 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let mut pages_zeroed = good.clone();
    for b in &mut pages_zeroed[4..n / 2] {
        *b = 0;
    }
    // (case, bytes, words in the error)
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("truncated", good[..n / 2].to_vec(), &["summaries.parquet"]),
        ("corrupt footer", footer_flipped, &["summaries.parquet"]),
        (
            "huge footer length",
            huge_footer_len,
            &["summaries.parquet"],
        ),
        ("zeroed data pages", pages_zeroed, &["summaries.parquet"]),
        ("really JSON", corpus("good.jsonl"), &["summaries.parquet"]),
        ("empty", Vec::new(), &["summaries.parquet"]),
        ("magic only", b"PAR1".to_vec(), &["summaries.parquet"]),
        (
            "concerning_score as text",
            parquet_with("score as text"),
            &["summaries.parquet", "concerning_score"],
        ),
        (
            "no chat_id column",
            parquet_with("no chat_id"),
            &["summaries.parquet", "chat_id"],
        ),
    ];
    for (what, bytes, words) in cases {
        let root = root_with("summaries.parquet", &bytes);
        for sql in [
            "SELECT count(*) FROM summaries",
            "SELECT * FROM summaries",
            "SELECT sum(concerning_score) FROM summaries",
        ] {
            let r = ckpt(["query", &s(root.path()), sql]).expect_err(what);
            for w in words {
                assert!(
                    r.stderr.contains(w),
                    "{what}: {sql}: no {w:?} in:\n{}",
                    r.stderr
                );
            }
        }
        assert_convert_fails(
            &root.path().join("summaries.parquet"),
            "summaries.jsonl",
            words,
            what,
        );
        let m = CheckpointManager::parquet(&s(root.path())).unwrap();
        let err: Error = m
            .load::<ConversationSummary>("summaries")
            .await
            .unwrap_err();
        for w in words {
            assert!(err.to_string().contains(w), "{what}: library: {err}");
        }
        // The other checkpoints of the root stay usable.
        std::fs::write(root.path().join("other.jsonl"), corpus("good.jsonl")).unwrap();
        ckpt(["query", &s(root.path()), "SELECT count(*) FROM other"]).expect_ok(what);
    }
}

/// Converting a whole root stops at the bad checkpoint: the ones already written are
/// complete, the bad one leaves nothing, and no temporary is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converting_a_root_with_one_bad_checkpoint() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a_good.jsonl"), corpus("good.jsonl")).unwrap();
    std::fs::write(src.path().join("summaries.jsonl"), corpus("nan.jsonl")).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let r = ckpt(["convert", "-q", &s(src.path()), &s(dst.path())]).expect_err("root");
    assert!(
        r.stderr.contains("summaries.jsonl:3: concerning_score"),
        "{}",
        r.stderr
    );
    let left = dir_entries(dst.path());
    assert!(
        left.is_empty() || left == ["a_good.parquet"],
        "unexpected output {left:?}"
    );
    if !left.is_empty() {
        assert_eq!(
            load_file(&dst.path().join("a_good.parquet")).await.unwrap(),
            good_rows().await
        );
    }
}
