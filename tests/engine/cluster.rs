//! Scale-out on loopback: `ckpt worker` processes on 127.0.0.1:0, and queries run through
//! a coordinator given them, whose answers must equal a single process's.
//!
//! - every file of `queries/` and the cluster conformance queries below (every kind and
//!   column, filters, aggregations, joins, windows, sorts, an appended checkpoint) on
//!   local roots in each format and layout, and on an S3 root (moto);
//! - COPY under a coordinator: the files it writes hold what a single process writes;
//! - each worker ran tasks (its log), and a query spread over several tasks per stage;
//! - workers read storage with their own credentials: a worker without them fails the
//!   query, naming the problem, and no credential is sent (or printed);
//! - a worker killed mid-query fails the query with a clear error, within a time bound;
//! - SIGTERM stops a worker cleanly; `ckpt query --workers` prints what `ckpt query` does.
//!
//! Small files are split into many tasks by a low `distributed.file_scan_config_bytes_per_partition`
//! (a session setting, `SET` like any other), so the sample data exercises real shuffles.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ckpt::{CheckpointSession, SessionOptions, StorageOptions};
use serde_json::Value;

use crate::common::{self, S3, ckpt, ckpt_cmd};

// ---- workers ------------------------------------------------------------------------------

/// A `ckpt worker` process, killed when dropped.
struct WorkerProc {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProc {
    /// Starts `ckpt worker --listen 127.0.0.1:0 ARGS` and waits for its address.
    fn start(args: &[String]) -> WorkerProc {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let mut child = ckpt_cmd()
            .args(["worker", "--listen", "127.0.0.1:0"])
            .args(args)
            // The worker's own environment: no AWS variables from the test's.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("ckpt worker starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "worker printed {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        WorkerProc {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Tasks the worker logged as started.
    fn tasks_started(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("task ") && l.contains(" started: "))
            .count()
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_workers(n: usize, args: &[String]) -> Vec<WorkerProc> {
    (0..n).map(|_| WorkerProc::start(args)).collect()
}

fn addrs(workers: &[WorkerProc]) -> String {
    workers
        .iter()
        .map(|w| w.addr.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

// ---- sessions and answers -------------------------------------------------------------------

/// A task per this many bytes of files: the sample's files become several tasks each.
const TASK_BYTES: usize = 8 * 1024;

async fn session(
    root: &str,
    storage: &StorageOptions,
    workers: &[WorkerProc],
) -> CheckpointSession {
    let options = SessionOptions {
        storage: storage.clone(),
        workers: match workers.is_empty() {
            true => Vec::new(),
            false => ckpt::cluster::parse_workers(&addrs(workers)).unwrap(),
        },
        ..Default::default()
    };
    let s = CheckpointSession::new(vec![("root".into(), root.into())], options)
        .await
        .unwrap();
    if !workers.is_empty() {
        s.sql(&format!(
            "SET distributed.file_scan_config_bytes_per_partition = {TASK_BYTES}"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    }
    s
}

/// The rows of each statement of `sql`, as JSON objects.
async fn answers(session: &CheckpointSession, sql: &str, what: &str) -> Vec<Vec<Value>> {
    common::statement_rows(session, sql, what)
        .await
        .into_iter()
        .map(|rows| rows.into_iter().map(Value::Object).collect())
        .collect()
}

/// Equal, but for the last bits of floats: sums and averages add up in another order when
/// the rows are split across tasks.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, p), (l, q))| k == l && same(p, q))
        }
        _ => a == b,
    }
}

/// `rows` in a canonical order (for answers whose order the SQL does not fix).
fn sorted(rows: &[Value]) -> Vec<Value> {
    let mut rows = rows.to_vec();
    rows.sort_by_cached_key(|r| r.to_string());
    rows
}

fn assert_same_answers(single: &[Vec<Value>], spread: &[Vec<Value>], ordered: bool, what: &str) {
    assert_eq!(single.len(), spread.len(), "{what}: statements");
    for (i, (a, b)) in single.iter().zip(spread).enumerate() {
        let (a, b) = match ordered {
            true => (a.clone(), b.clone()),
            false => (sorted(a), sorted(b)),
        };
        assert_eq!(a.len(), b.len(), "{what}: statement {i}: row count");
        for (r, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                same(x, y),
                "{what}: statement {i}, row {r}:\nsingle: {x}\nspread: {y}"
            );
        }
    }
}

/// The cluster conformance queries: (SQL, whether its order is fixed).
const CONFORMANCE: &[(&str, bool)] = &[
    // Every column of every kind, through every scan (JSONL, Parquet, Kura's layout).
    ("SELECT * FROM summaries ORDER BY chat_id", true),
    ("SELECT * FROM conversations ORDER BY chat_id", true),
    ("SELECT * FROM clusters ORDER BY id", true),
    ("SELECT * FROM meta_clusters ORDER BY id", true),
    ("SELECT * FROM dimensionality ORDER BY id", true),
    // Unordered scans: every row once, whichever task read it.
    ("SELECT chat_id, embedding, metadata FROM summaries", false),
    // Filters pushed into the scans, projections, limits.
    (
        "SELECT chat_id, user_frustration FROM summaries WHERE user_frustration >= 3 AND topic IS NOT NULL",
        false,
    ),
    (
        "SELECT count(*) AS n FROM summaries WHERE concerning_score > 2",
        true,
    ),
    // Aggregations across tasks (partial, shuffle, final).
    (
        "SELECT topic, count(*) AS n, avg(user_frustration) AS f, max(concerning_score) AS c, \
         sum(cardinality(embedding)) AS dims FROM summaries GROUP BY topic",
        false,
    ),
    (
        "SELECT count(DISTINCT topic) AS topics, approx_distinct(chat_id) AS chats FROM summaries",
        true,
    ),
    // Joins across kinds.
    (
        "WITH m AS (SELECT id, unnest(chat_ids) AS chat_id FROM clusters) \
         SELECT m.id, count(*) AS n, avg(s.user_frustration) AS f FROM m \
         JOIN summaries s ON s.chat_id = m.chat_id GROUP BY m.id",
        false,
    ),
    (
        "SELECT d.id, d.x_coord, d.y_coord, m.name FROM dimensionality d \
         LEFT JOIN meta_clusters m ON m.id = d.parent_id",
        false,
    ),
    (
        "SELECT s.chat_id, cardinality(v.messages) AS messages FROM summaries s \
         JOIN conversations v ON v.chat_id = s.chat_id",
        false,
    ),
    // Windows and sorts across tasks.
    (
        "SELECT chat_id, topic, row_number() OVER (PARTITION BY topic ORDER BY chat_id) AS r \
         FROM summaries",
        false,
    ),
    (
        "SELECT chat_id, concerning_score FROM summaries ORDER BY concerning_score DESC NULLS LAST, chat_id LIMIT 7",
        true,
    ),
    // ckpt's and the JSON functions on workers.
    (
        "SELECT metadata->>'model' AS model, json_get_int(metadata, 'conversation_turns') AS turns, \
         cosine_similarity(embedding, embedding) AS self FROM summaries",
        false,
    ),
];

/// Runs every `queries/` file (but the one that writes) and the conformance queries on
/// `root`, single and spread, and compares.
async fn compare_everything(
    root: &str,
    storage: &StorageOptions,
    workers: &[WorkerProc],
    what: &str,
) {
    let single = session(root, storage, &[]).await;
    let spread = session(root, storage, workers).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::repo_dir().join("queries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut ran = 0;
    for file in files {
        let sql = std::fs::read_to_string(&file).unwrap();
        if sql.contains("COPY ") {
            continue; // writes: see copy_under_a_coordinator_writes_what_one_process_writes
        }
        let what = format!("{what}: {}", file.display());
        let a = answers(&single, &sql, &what).await;
        let b = answers(&spread, &sql, &what).await;
        assert!(a.iter().any(|rows| !rows.is_empty()), "{what}: no rows");
        assert_same_answers(&a, &b, true, &what);
        ran += 1;
    }
    assert!(ran >= 7, "{what}: only {ran} query files");
    for (sql, ordered) in CONFORMANCE {
        let what = format!("{what}: {sql}");
        let a = answers(&single, sql, &what).await;
        let b = answers(&spread, sql, &what).await;
        assert!(!a[0].is_empty(), "{what}: no rows");
        assert_same_answers(&a, &b, *ordered, &what);
    }
}

/// A root holding the sample in `form`: "jsonl", "parquet" (native), "kura" (Kura's
/// Parquet layout), or "appended": JSONL with `summaries` appended to (base + two parts
/// that replace rows of the base), read in one task.
fn sample_root(form: &str) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    common::copy_sample(src.path(), true);
    let dir = tempfile::tempdir().unwrap();
    match form {
        "jsonl" | "appended" => {
            common::copy_sample(dir.path(), true);
        }
        "parquet" | "kura" => {
            ckpt([
                "convert",
                src.path().to_str().unwrap(),
                dir.path().to_str().unwrap(),
                "--to",
                "parquet",
                "--layout",
                if form == "kura" { "kura" } else { "native" },
            ])
            .expect_ok("convert the sample");
        }
        other => panic!("no form {other}"),
    }
    if form != "appended" {
        return dir;
    }
    // Two appended parts: new rows, and rows replacing some of the base.
    let text = std::fs::read_to_string(src.path().join("summaries.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let batch = src.path().join("batch.jsonl");
    let replaced: String = lines[..5]
        .iter()
        .map(|l| l.replace("\"summary\":\"", "\"summary\":\"(again) ") + "\n")
        .collect();
    std::fs::write(&batch, replaced).unwrap();
    for _ in 0..2 {
        ckpt([
            "append",
            dir.path().to_str().unwrap(),
            "summaries",
            batch.to_str().unwrap(),
        ])
        .expect_ok("append");
    }
    dir
}

fn local() -> StorageOptions {
    StorageOptions::default()
}

// ---- tests ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_gives_the_single_process_answer_on_local_roots() {
    let workers = start_workers(3, &[]);
    for form in ["jsonl", "parquet", "kura", "appended"] {
        let root = sample_root(form);
        compare_everything(root.path().to_str().unwrap(), &local(), &workers, form).await;
    }
    for (i, w) in workers.iter().enumerate() {
        assert!(
            w.tasks_started() > 0,
            "worker {i} ran no task; log:\n{}",
            w.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_is_split_into_tasks_on_several_workers() {
    let workers = start_workers(2, &[]);
    let root = tempfile::tempdir().unwrap();
    common::copy_sample(root.path(), true);
    let s = session(root.path().to_str().unwrap(), &local(), &workers).await;
    let before: Vec<usize> = workers.iter().map(WorkerProc::tasks_started).collect();
    answers(
        &s,
        "SELECT topic, count(*) FROM summaries GROUP BY topic",
        "group by",
    )
    .await;
    for (i, w) in workers.iter().enumerate() {
        assert!(
            w.tasks_started() >= before[i] + 2,
            "worker {i}: {} tasks before, {} after\n{}",
            before[i],
            w.tasks_started(),
            w.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_gives_the_single_process_answer_on_s3() {
    let s3 = S3::from_env();
    let url = sample_on_s3(&s3, "appended");
    // Each worker gets the server's options on its own command line.
    let workers = start_workers(2, &s3.cli_args());
    compare_everything(&url, &s3.options(), &workers, "s3").await;
    for (i, w) in workers.iter().enumerate() {
        assert!(
            w.tasks_started() > 0,
            "worker {i} ran no task:\n{}",
            w.log()
        );
        assert!(
            !w.log().contains(&s3.secret),
            "worker {i} logged the secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_use_their_own_credentials_and_none_is_sent() {
    let s3 = S3::from_env();
    let url = sample_on_s3(&s3, "jsonl");
    // The worker knows the endpoint but has no credentials: the coordinator's must not
    // reach it, so the query fails, saying what the worker lacked.
    let endpoint_only = vec![
        "-S".to_owned(),
        format!("aws_endpoint={}", s3.endpoint),
        "-S".into(),
        "aws_allow_http=true".into(),
        "-S".into(),
        format!("aws_region={}", s3.region),
        "-S".into(),
        "retry_max=1".into(),
    ];
    let workers = start_workers(2, &endpoint_only);
    let spread = session(&url, &s3.options(), &workers).await;
    let err = tokio::time::timeout(Duration::from_secs(120), async {
        let df = spread
            .sql("SELECT topic, count(*) FROM summaries GROUP BY topic")
            .await?;
        df.collect().await.map_err(ckpt::Error::from)
    })
    .await
    .expect("the query ends")
    .expect_err("a worker without credentials cannot read the bucket");
    let text = err.to_string();
    assert!(!text.contains(&s3.secret), "{text}");
    assert!(
        text.to_lowercase().contains("credential")
            || text.contains("403")
            || text.to_lowercase().contains("denied")
            || text.to_lowercase().contains("unauthenticated")
            || text.to_lowercase().contains("signature"),
        "the error says the worker could not authenticate: {text}"
    );
    for w in &workers {
        assert!(!w.log().contains(&s3.secret));
    }
}

/// A fresh prefix of the bucket holding the sample in `form` (see [`sample_root`]; the
/// parts of "appended" are appended there again, since convert copies checkpoints).
fn sample_on_s3(s3: &S3, form: &str) -> String {
    let root = sample_root(form);
    let url = s3.url(&common::unique("cluster"));
    let local = root.path().to_str().unwrap();
    ckpt_cmd_ok(["convert", local, &url, "--to", "jsonl"], s3);
    if form == "appended" {
        let text = std::fs::read_to_string(common::sample_dir().join("summaries.jsonl")).unwrap();
        let batch = root.path().join("batch-s3.jsonl");
        let head: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        std::fs::write(&batch, head).unwrap();
        ckpt_cmd_ok(["append", &url, "summaries", batch.to_str().unwrap()], s3);
    }
    url
}

fn ckpt_cmd_ok<const N: usize>(args: [&str; N], s3: &S3) {
    let mut cmd = ckpt_cmd();
    cmd.args(s3.cli_args()).args(args);
    common::run(&mut cmd).expect_ok(&format!("{args:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_under_a_coordinator_writes_what_one_process_writes() {
    let workers = start_workers(2, &[]);
    let sql = std::fs::read_to_string(common::repo_dir().join("queries/to_parquet.sql")).unwrap();
    let single_root = sample_root("jsonl");
    let spread_root = sample_root("jsonl");
    let single = session(single_root.path().to_str().unwrap(), &local(), &[]).await;
    let spread = session(spread_root.path().to_str().unwrap(), &local(), &workers).await;
    let a = answers(&single, &sql, "COPY single").await;
    let b = answers(&spread, &sql, "COPY spread").await;
    // The row counts COPY reports.
    assert_same_answers(&a, &b, true, "COPY counts");
    // And the files: read back by a single process from each root.
    let read = |dir: &Path| dir.join("parquet").to_str().unwrap().to_owned();
    let a_out = session(&read(single_root.path()), &local(), &[]).await;
    let b_out = session(&read(spread_root.path()), &local(), &[]).await;
    for (table, id) in [
        ("summaries", "chat_id"),
        ("conversations", "chat_id"),
        ("clusters", "id"),
        ("meta_clusters", "id"),
        ("dimensionality", "id"),
    ] {
        let sql = format!("SELECT * FROM {table} ORDER BY {id}");
        let x = answers(&a_out, &sql, table).await;
        let y = answers(&b_out, &sql, table).await;
        assert!(!x[0].is_empty(), "{table}: nothing written");
        assert_same_answers(&x, &y, true, &format!("COPY {table}"));
    }
}

#[test]
fn ckpt_query_with_workers_prints_what_ckpt_query_prints() {
    let workers = start_workers(2, &[]);
    let root = tempfile::tempdir().unwrap();
    common::copy_sample(root.path(), true);
    let root = root.path().to_str().unwrap();
    let sql = "SELECT topic, count(*) AS n, round(avg(user_frustration), 6) AS f FROM summaries GROUP BY topic ORDER BY n DESC, topic";
    let single = ckpt(["query", root, sql, "--format", "csv"]).expect_ok("single");
    // A session setting makes the sample's small files several tasks each.
    let split =
        format!("SET distributed.file_scan_config_bytes_per_partition = {TASK_BYTES}; {sql}");
    let spread = ckpt([
        "query",
        root,
        &split,
        "--format",
        "csv",
        "--workers",
        &addrs(&workers),
    ])
    .expect_ok("spread");
    assert!(single.stdout.lines().count() > 3, "{}", single.stdout);
    assert_eq!(single.stdout, spread.stdout);
    // A bad worker list is a usage error, and an address nobody listens on a clear failure.
    let bad = ckpt(["query", root, "SELECT 1", "--workers", "nohost"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--workers"), "{}", bad.stderr);
    // Two addresses nobody listens on (with one worker, every stage is one task, which
    // runs here).
    let free: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let gone: Vec<String> = free
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    drop(free);
    let gone = gone.join(",");
    let start = Instant::now();
    let down = ckpt(["query", root, &split, "--workers", &gone]).expect_err("no worker there");
    assert!(start.elapsed() < Duration::from_secs(120));
    assert!(
        down.stderr.to_lowercase().contains("connect"),
        "the error says no worker could be reached: {}",
        down.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_fails_the_query_clearly_and_in_bounded_time() {
    let workers = start_workers(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    ckpt([
        "generate",
        root,
        "--summaries",
        "6000",
        "--dim",
        "64",
        "--no-conversations",
    ])
    .expect_ok("generate");
    let spread = session(root, &local(), &workers).await;
    // Many tasks, each slow enough (a self-join of each topic's summaries) that the
    // worker dies while the query runs.
    spread
        .sql("SET distributed.file_scan_config_bytes_per_partition = 65536")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let query = spread
        .sql(
            "SELECT a.topic, count(*) AS pairs, avg(cosine_similarity(a.embedding, b.embedding)) AS sim \
             FROM summaries a JOIN summaries b ON a.topic = b.topic GROUP BY a.topic",
        )
        .await
        .unwrap();
    let victim = &workers[0];
    let started = victim.tasks_started();
    let run = tokio::spawn(async move { query.collect().await });
    let t0 = Instant::now();
    while victim.tasks_started() == started {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no task reached the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.signal("-KILL");
    let result = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the query ends, not hangs, when a worker dies")
        .unwrap();
    let err = result.expect_err("the query lost a worker mid-way");
    let text = err.to_string();
    assert!(!text.is_empty());
    // It names the worker that was lost, by its address, not only the transport's words.
    assert!(
        text.contains(&format!("worker {}", victim.addr)) && text.contains("stopped answering"),
        "the error names the lost worker {}: {text}",
        victim.addr
    );
}

#[test]
fn sigterm_stops_a_worker_cleanly() {
    let mut w = WorkerProc::start(&[]);
    w.signal("-TERM");
    let log = w.log.clone();
    let status = common::wait_exit(&mut w.child, Duration::from_secs(30), "the worker", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert!(w.log().contains("worker stopped"), "{}", w.log());
    assert!(!w.log().contains("panicked"), "{}", w.log());
}
