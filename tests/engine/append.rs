//! Appended checkpoints: one checkpoint of many parts, read as one table everywhere.
//!
//! - Every reader (typed load, stream, SQL, `ckpt ls`, convert, COPY, `missing`) sees the
//!   base and its parts as one table, the last row of an id winning.
//! - `ckpt append` checks every row with the kind's codec; a bad file stores nothing.
//! - 4 appender processes × 50 batches at once: exactly 200 batches readable.
//! - SIGKILL of an appender at random moments: every acknowledged batch is there whole,
//!   the batch in flight is there whole or not at all, and the resumed step computes only
//!   what is missing (counted).
//! - Compaction while readers read: every read sees the checkpoint before or after.
//! - All of it on local disk and on the S3 server (moto) of `scripts/test`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ckpt::ops::generate::summary;
use ckpt::{CheckpointManager, CheckpointSession, ConversationSummary, FileFormat};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{Place, S3, ckpt, unique, write_jsonl};

/// Summary `i` of batch `tag`: chat_id `tag-i`, topic `topic`.
fn item(tag: &str, i: usize, topic: &str) -> ConversationSummary {
    let mut s = summary(i, 8, 7);
    s.chat_id = format!("{tag}-{i}");
    s.topic = Some(topic.to_owned());
    s
}

fn batch(tag: &str, n: usize, topic: &str) -> Vec<ConversationSummary> {
    (0..n).map(|i| item(tag, i, topic)).collect()
}

/// (chat_id → topic) of a load, failing on a duplicate id.
fn by_id(rows: &[ConversationSummary]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for r in rows {
        let prev = m.insert(r.chat_id.clone(), r.topic.clone().unwrap_or_default());
        assert!(prev.is_none(), "{} read twice", r.chat_id);
    }
    m
}

async fn sql_i64(session: &CheckpointSession, sql: &str) -> ckpt::Result<i64> {
    let batches = session.sql(sql).await?.collect().await?;
    Ok(batches[0].column(0).as_primitive::<Int64Type>().value(0))
}

fn ls_json(place: &Place) -> Vec<serde_json::Value> {
    let r = ckpt(place.args(&["ls", &place.root, "--format", "json"])).expect_ok("ls");
    serde_json::from_str(&r.stdout).unwrap()
}

fn ls_entry(place: &Place, file: &str) -> serde_json::Value {
    ls_json(place)
        .into_iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} not listed"))
}

// ---- One table, every reader ----------------------------------------------------------

async fn one_table_everywhere(place: &Place) {
    let m = place.manager(FileFormat::Jsonl);
    let base = batch("s", 10, "old");
    m.save("summaries", &base).await.unwrap();
    m.append("summaries", &batch("t", 5, "second"))
        .await
        .unwrap();
    // s-3 again (an item stored twice), with a new value, and one more.
    let again = vec![item("s", 3, "new"), item("u", 0, "third")];
    m.append("summaries", &again).await.unwrap();

    // Typed load: the last row of s-3 wins; file order otherwise.
    let rows = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.chat_id.as_str()).collect();
    let mut want: Vec<String> = (0..10)
        .filter(|i| *i != 3)
        .map(|i| format!("s-{i}"))
        .collect();
    want.extend((0..5).map(|i| format!("t-{i}")));
    want.extend(["s-3".to_owned(), "u-0".to_owned()]);
    assert_eq!(ids, want);
    assert_eq!(by_id(&rows)["s-3"], "new");

    // Stream.
    use futures::TryStreamExt;
    let streamed: Vec<ConversationSummary> = m
        .load_stream::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, rows);

    // SQL.
    let session = place.session().await;
    assert_eq!(
        sql_i64(&session, "SELECT count(*) FROM summaries")
            .await
            .unwrap(),
        16
    );
    assert_eq!(
        sql_i64(&session, "SELECT count(DISTINCT chat_id) FROM summaries")
            .await
            .unwrap(),
        16
    );
    assert_eq!(
        sql_i64(
            &session,
            "SELECT count(*) FROM summaries WHERE chat_id = 's-3' AND topic = 'new'"
        )
        .await
        .unwrap(),
        1
    );

    // ORDER BY over the whole table: sorted after the rule, not file by file (the sort
    // was once pushed into each file's scan, and failed on the id scans).
    let sorted = session
        .sql("SELECT chat_id, topic FROM summaries ORDER BY chat_id DESC")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut got = Vec::new();
    for b in &sorted {
        let ids = b.column(0).as_string::<i32>();
        let topics = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            got.push((ids.value(i).to_owned(), topics.value(i).to_owned()));
        }
    }
    let mut want_sorted: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.chat_id.clone(), r.topic.clone().unwrap()))
        .collect();
    want_sorted.sort_by(|a, b| b.0.cmp(&a.0));
    assert_eq!(got, want_sorted);

    // ls: one checkpoint, its rows as read, and its parts.
    let e = ls_entry(place, "summaries.jsonl");
    assert_eq!(e["rows"], 16, "{e}");
    assert_eq!(e["parts"], 2, "{e}");
    assert_eq!(
        ls_json(place).len(),
        1,
        "the parts are not checkpoints of their own"
    );
    assert_eq!(m.list().await.unwrap(), ["summaries.jsonl"]);

    // missing.
    let missing = m
        .missing("summaries", &["s-0", "u-0", "x-1", "t-4", "x-1", "x-2"])
        .await
        .unwrap();
    assert_eq!(missing, ["x-1", "x-2"]);

    // COPY and convert read the same table.
    session
        .sql("COPY summaries TO 'copied.parquet' STORED AS PARQUET")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let copied = place
        .manager(FileFormat::Parquet)
        .load::<ConversationSummary>("copied")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id(&copied), by_id(&rows));
    let out = place.root.clone() + "/converted";
    let mut args = place.args(&["convert", "-q"]);
    args.push(format!("{}/summaries.jsonl", place.root));
    args.push(format!("{out}/summaries.parquet"));
    ckpt(&args).expect_ok("convert");
    let converted = CheckpointManager::with_storage(&out, FileFormat::Parquet, &place.storage)
        .unwrap()
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(converted, rows);

    // Compaction: one file, the same rows, no parts; a plain file Kura loads line by line.
    let r = ckpt(place.args(&["compact", &place.root, "summaries"])).expect_ok("compact");
    assert!(
        r.stdout.contains("compacted 2 parts into 16 rows"),
        "{}",
        r.stdout
    );
    let after = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, rows);
    let e = ls_entry(place, "summaries.jsonl");
    assert_eq!(
        (e["rows"].as_u64(), e["parts"].as_u64()),
        (Some(16), Some(0))
    );
    let root = ckpt::Root::with_options(&place.root, &place.storage).unwrap();
    let text = root.get("summaries.jsonl").await.unwrap();
    assert_eq!(
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        16
    );
    let r = ckpt(place.args(&["compact", &place.root, "summaries"])).expect_ok("compact again");
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);

    // A save replaces the whole checkpoint, parts included.
    m.append("summaries", &batch("v", 3, "x")).await.unwrap();
    m.save("summaries", &batch("w", 2, "y")).await.unwrap();
    let rows = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows, batch("w", 2, "y"));
    // And delete takes the parts too.
    m.append("summaries", &batch("v", 3, "x")).await.unwrap();
    assert!(m.delete("summaries").await.unwrap());
    assert!(!m.exists("summaries").await.unwrap());
    assert!(
        m.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appended_parts_are_one_table_for_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    one_table_everywhere(&Place::local(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appended_parts_are_one_table_for_every_reader_on_s3() {
    one_table_everywhere(&Place::s3(&S3::from_env(), &unique("append-one-table"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_only_parquet_and_kura_layout_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let place = Place::local(dir.path());
    let m = place.manager(FileFormat::Parquet);
    m.append("summaries", &batch("a", 4, "one")).await.unwrap();
    m.append("summaries", &batch("a", 2, "two")).await.unwrap();
    let rows = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    let got = by_id(&rows);
    assert_eq!(got.len(), 4);
    assert_eq!((got["a-0"].as_str(), got["a-3"].as_str()), ("two", "one"));
    let r = ckpt(["compact", &place.root, "summaries", "--layout", "kura"]).expect_ok("compact");
    assert!(
        r.stdout.contains("compacted 2 parts into 4 rows"),
        "{}",
        r.stdout
    );
    let e = ls_entry(&place, "summaries.parquet");
    assert_eq!(e["layout"], "kura");
    assert_eq!(e["parts"], 0);
    assert_eq!(
        by_id(
            &m.load::<ConversationSummary>("summaries")
                .await
                .unwrap()
                .unwrap()
        ),
        got
    );
}

// ---- ckpt append ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ckpt_append_checks_every_row_and_a_bad_file_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let good = inputs.path().join("good.jsonl");
    write_jsonl(&good, &batch("g", 3, "ok"));
    let r = ckpt(["append", root, "summaries", good.to_str().unwrap()]).expect_ok("append");
    assert!(r.stdout.contains("appended 3 rows"), "{}", r.stdout);

    // Line 2 has a score that is not an integer: the whole file is refused.
    let bad = inputs.path().join("bad.jsonl");
    let mut lines: Vec<serde_json::Value> = batch("b", 3, "bad")
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    lines[1]["concerning_score"] = serde_json::json!("high");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&bad, text).unwrap();
    let r = ckpt(["append", root, "summaries", bad.to_str().unwrap()]).expect_err("bad append");
    assert!(
        r.stderr.contains("bad.jsonl:2") && r.stderr.contains("concerning_score"),
        "{}",
        r.stderr
    );
    let parts: Vec<_> = std::fs::read_dir(dir.path().join("summaries.jsonl.parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(parts.len(), 1, "a refused file left something: {parts:?}");

    // A Parquet file of rows, into the same JSONL checkpoint.
    let pq_root = inputs.path().join("pq");
    CheckpointManager::parquet(pq_root.to_str().unwrap())
        .unwrap()
        .save("rows", &batch("p", 2, "parquet"))
        .await
        .unwrap();
    let pq = pq_root.join("rows.parquet");
    ckpt(["append", root, "summaries", pq.to_str().unwrap()]).expect_ok("append parquet");
    let place = Place::local(dir.path());
    let rows = place
        .manager(FileFormat::Jsonl)
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(ls_entry(&place, "summaries.jsonl")["parts"], 2);

    // A missing input, a missing root to compact: errors, nothing created.
    let missing = inputs.path().join("nope.jsonl");
    ckpt(["append", root, "summaries", missing.to_str().unwrap()]).expect_err("missing input");
    let nowhere = dir.path().join("nowhere");
    ckpt(["compact", nowhere.to_str().unwrap(), "summaries"]).expect_err("missing root");
    assert!(!nowhere.exists());
}

// ---- Concurrent appenders ------------------------------------------------------------------

/// `procs` appender processes append `batches` batches each (`ckpt append`, one process
/// per batch, the processes of different appenders overlapping); then exactly
/// procs × batches batches are readable, each whole.
async fn concurrent_appenders(place: &Place, procs: usize, batches: usize) {
    let inputs = tempfile::tempdir().unwrap();
    const ROWS: usize = 3;
    let mut threads = Vec::new();
    for p in 0..procs {
        let place = place.clone();
        let dir = inputs.path().to_owned();
        threads.push(std::thread::spawn(move || {
            for b in 0..batches {
                let tag = format!("p{p}b{b}");
                let file = dir.join(format!("{tag}.jsonl"));
                write_jsonl(&file, &batch(&tag, ROWS, &tag));
                ckpt(place.args(&["append", &place.root, "summaries", file.to_str().unwrap()]))
                    .expect_ok("append");
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let rows = place
        .manager(FileFormat::Jsonl)
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    let got = by_id(&rows);
    assert_eq!(got.len(), procs * batches * ROWS);
    let mut per_batch: BTreeMap<String, usize> = BTreeMap::new();
    for topic in got.values() {
        *per_batch.entry(topic.clone()).or_default() += 1;
    }
    assert_eq!(per_batch.len(), procs * batches, "batches readable");
    assert!(
        per_batch.values().all(|n| *n == ROWS),
        "a torn batch: {per_batch:?}"
    );
    let session = place.session().await;
    assert_eq!(
        sql_i64(&session, "SELECT count(DISTINCT topic) FROM summaries")
            .await
            .unwrap() as usize,
        procs * batches
    );
    assert_eq!(
        ls_entry(place, "summaries.jsonl")["parts"].as_u64(),
        Some((procs * batches) as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_appender_processes_times_fifty_batches() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_appenders(&Place::local(dir.path()), 4, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_appender_processes_times_fifty_batches_on_s3() {
    concurrent_appenders(
        &Place::s3(&S3::from_env(), &unique("append-concurrent")),
        4,
        50,
    )
    .await;
}

// ---- SIGKILL, then resume ------------------------------------------------------------------

/// Starts `ckpt ARGS` and SIGKILLs it after `delay` (a deadline of 60 s for a run that
/// finishes first). Returns whether the kill hit it.
/// Runs `ckpt ARGS`, SIGKILLed after `delay` if still running. Returns (killed, was writing
/// its part): the second from the run's own debug log, which says when it starts writing an
/// appended part.
async fn run_and_kill(args: &[String], delay: Duration) -> (bool, bool) {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .env("CKPT_LOG", "ckpt=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = match tokio::time::timeout(delay, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            child.start_kill().unwrap();
            tokio::time::timeout(Duration::from_secs(60), child.wait())
                .await
                .expect("a killed append ends within 60 s")
                .unwrap()
        }
    };
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut log).await;
    }
    let writing = log.contains("writing an appended part");
    if status.signal() == Some(9) {
        return (true, writing);
    }
    assert!(
        status.success(),
        "{args:?} failed on its own: {status:?}\n{log}"
    );
    (false, writing)
}

/// Batches of a step over `inputs` conversations, appended by `ckpt append`, with some
/// appends SIGKILLed at random moments; then the step resumes in-process with
/// `load_or_compute_each`, which must compute exactly the items not stored.
async fn kill_then_resume(place: &Place, kills: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let inputs = tempfile::tempdir().unwrap();
    const ROWS: usize = 40;
    let dim = 256;
    let make = |b: usize| -> Vec<ConversationSummary> {
        (0..ROWS)
            .map(|i| {
                let mut s = summary(b * ROWS + i, dim, 9);
                s.chat_id = format!("c{}", b * ROWS + i);
                s.topic = Some(format!("batch{b}"));
                s
            })
            .collect()
    };
    // A typical append, to spread the kills over it.
    let probe = inputs.path().join("probe.jsonl");
    write_jsonl(&probe, &make(10_000));
    let scratch = format!("{}/probe", place.root);
    let t = Instant::now();
    ckpt(place.args(&["append", &scratch, "summaries", probe.to_str().unwrap()]))
        .expect_ok("probe append");
    let typical = t.elapsed();

    let m = place.manager(FileFormat::Jsonl);
    // The batches stored (whole or not: checked below).
    let stored_batches = || async {
        let rows = m.load::<ConversationSummary>("summaries").await.unwrap();
        rows.unwrap_or_default()
            .iter()
            .map(|r| {
                r.topic.as_ref().unwrap()["batch".len()..]
                    .parse::<usize>()
                    .unwrap()
            })
            .collect::<BTreeSet<usize>>()
    };
    let mut acknowledged = BTreeSet::new();
    let mut killed = Vec::new();
    // Batches whose run was killed after it began writing its part, and how many of those
    // the kill stopped before the part was published (a fast store often publishes it
    // between the log line and the kill).
    let mut killed_writing = BTreeSet::new();
    let mut lost_writing = 0;
    let mut b = 0;
    // Go on until enough kills landed while a part was being written, one of them before
    // its part was published (bounded).
    while (killed.len() < kills || killed_writing.len() < 3 || lost_writing == 0) && b < 40 * kills
    {
        let file = inputs.path().join(format!("b{b}.jsonl"));
        write_jsonl(&file, &make(b));
        let args = place.args(&["append", &place.root, "summaries", file.to_str().unwrap()]);
        if rng.random_bool(0.5) {
            let delay = typical.mul_f64(rng.random_range(0.0..1.2));
            match run_and_kill(&args, delay).await {
                (true, writing) => {
                    killed.push(b);
                    if writing {
                        killed_writing.insert(b);
                        if !stored_batches().await.contains(&b) {
                            lost_writing += 1;
                        }
                    }
                }
                (false, _) => {
                    acknowledged.insert(b);
                }
            }
        } else {
            ckpt(&args).expect_ok("append");
            acknowledged.insert(b);
        }
        b += 1;
    }
    let total = b;

    // Every acknowledged batch is there whole; a killed one whole or not at all.
    let rows = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    let mut per_batch: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &rows {
        let n: usize = r.topic.as_ref().unwrap()["batch".len()..].parse().unwrap();
        *per_batch.entry(n).or_default() += 1;
    }
    for a in &acknowledged {
        assert_eq!(per_batch.get(a), Some(&ROWS), "acknowledged batch {a}");
    }
    for (n, count) in &per_batch {
        assert_eq!(*count, ROWS, "batch {n} is torn");
    }
    by_id(&rows);
    if let Some(dir) = &place.local {
        // `ckpt ls` removes what killed writers left.
        ckpt(["ls", dir.to_str().unwrap()]).expect_ok("ls");
    }

    // Resume: only the items of the batches not stored are computed.
    let stored: BTreeSet<usize> = per_batch.keys().copied().collect();
    let want_computed = (total - stored.len()) * ROWS;
    let conversations: Vec<usize> = (0..total * ROWS).collect();
    let computed = Arc::new(AtomicUsize::new(0));
    let c = computed.clone();
    let all = m
        .load_or_compute_each(
            "summaries",
            conversations,
            |i| format!("c{i}"),
            ROWS,
            move |todo: Vec<usize>| {
                let c = c.clone();
                async move {
                    c.fetch_add(todo.len(), Ordering::SeqCst);
                    Ok(todo
                        .into_iter()
                        .map(|i| {
                            let mut s = summary(i, dim, 9);
                            s.chat_id = format!("c{i}");
                            s.topic = Some(format!("batch{}", i / ROWS));
                            s
                        })
                        .collect::<Vec<_>>())
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(computed.load(Ordering::SeqCst), want_computed);
    assert_eq!(by_id(&all).len(), total * ROWS);
    // The kills proved something: some landed while a part was being written and lost
    // that part (it was not published), and the resume then computed exactly those.
    let lost_mid_write = killed_writing
        .iter()
        .filter(|k| !stored.contains(k))
        .count();
    println!(
        "{} kills, {} while writing a part, {lost_mid_write} of those lost their part; {want_computed} items recomputed",
        killed.len(),
        killed_writing.len()
    );
    assert!(
        lost_mid_write >= 1,
        "no kill landed while a part was being written"
    );
    assert!(want_computed >= lost_mid_write * ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_append_loses_at_most_the_batch_in_flight_and_resume_computes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    kill_then_resume(&Place::local(dir.path()), 12, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_append_and_resume_on_s3() {
    kill_then_resume(&Place::s3(&S3::from_env(), &unique("append-kill")), 6, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_resumes_computing_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let m = CheckpointManager::jsonl(dir.path().to_str().unwrap()).unwrap();
    let inputs: Vec<usize> = (0..100).collect();
    let step = |fail_at: Option<usize>, counter: Arc<AtomicUsize>| {
        let m = m.clone();
        let inputs = inputs.clone();
        async move {
            let batches = Arc::new(AtomicUsize::new(0));
            m.load_or_compute_each(
                "summaries",
                inputs,
                |i| format!("c-{i}"),
                10,
                move |todo: Vec<usize>| {
                    let (counter, batches) = (counter.clone(), batches.clone());
                    async move {
                        if Some(batches.fetch_add(1, Ordering::SeqCst)) == fail_at {
                            return Err(ckpt::Error::config("the model went away"));
                        }
                        counter.fetch_add(todo.len(), Ordering::SeqCst);
                        Ok(todo.into_iter().map(|i| item("c", i, "t")).collect())
                    }
                },
            )
            .await
        }
    };
    let first = Arc::new(AtomicUsize::new(0));
    // The step's own error comes back as it is, not another failure.
    let err = step(Some(4), first.clone()).await.unwrap_err();
    assert_eq!(err.to_string(), "the model went away");
    assert_eq!(first.load(Ordering::SeqCst), 40);
    // An item stored twice (appended again before the crash was noticed): read once.
    m.append("summaries", &[item("c", 5, "t")]).await.unwrap();
    let second = Arc::new(AtomicUsize::new(0));
    let all = step(None, second.clone()).await.unwrap();
    assert_eq!(second.load(Ordering::SeqCst), 60);
    assert_eq!(by_id(&all).len(), 100);
    let third = Arc::new(AtomicUsize::new(0));
    step(None, third.clone()).await.unwrap();
    assert_eq!(
        third.load(Ordering::SeqCst),
        0,
        "a finished step computes nothing"
    );
}

// ---- Compaction under concurrent reads -----------------------------------------------------

/// Readers (typed loads and SQL) run while the checkpoint is compacted, again and again;
/// every read that succeeds sees exactly the checkpoint (before and after are the same
/// rows), and SQL fails at most with "changed while it was being read".
async fn compaction_under_reads(place: &Place, rounds: usize) {
    let m = place.manager(FileFormat::Jsonl);
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    // 0 before the round's compaction, 1 while it runs, 2 after; reads that began before
    // it ended and ended after it began overlapped it, and only those prove anything.
    let phase = Arc::new(AtomicUsize::new(0));
    let overlapped_sql = Arc::new(AtomicUsize::new(0));
    let overlapped_loads = Arc::new(AtomicUsize::new(0));
    for round in 0..rounds {
        // Parts that replace earlier rows and add new ones.
        for p in 0..8 {
            let topic = format!("r{round}p{p}");
            let rows: Vec<ConversationSummary> = (0..6)
                .map(|i| item("k", (round * 3 + p * 2 + i) % 40, &topic))
                .collect();
            for r in &rows {
                want.insert(r.chat_id.clone(), topic.clone());
            }
            m.append("summaries", &rows).await.unwrap();
        }
        let expected = Arc::new(want.clone());
        stop.store(false, Ordering::SeqCst);
        phase.store(0, Ordering::SeqCst);
        let mut readers = Vec::new();
        for r in 0..3 {
            let (place, expected, stop, reads) =
                (place.clone(), expected.clone(), stop.clone(), reads.clone());
            let (phase, overlapped_sql, overlapped_loads) = (
                phase.clone(),
                overlapped_sql.clone(),
                overlapped_loads.clone(),
            );
            readers.push(tokio::spawn(async move {
                let m = place.manager(FileFormat::Jsonl);
                let session = place.session().await;
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) {
                    assert!(
                        Instant::now() < deadline,
                        "reader {r} ran past its deadline"
                    );
                    let began = phase.load(Ordering::SeqCst);
                    let succeeded = if r == 0 {
                        let n = sql_i64(&session, "SELECT count(*) FROM summaries").await;
                        match n {
                            Ok(n) => {
                                assert_eq!(n as usize, expected.len(), "SQL count");
                                true
                            }
                            Err(e) => {
                                assert!(e.is_changed_while_read(), "SQL: {e}");
                                false
                            }
                        }
                    } else {
                        let rows = m
                            .load::<ConversationSummary>("summaries")
                            .await
                            .unwrap_or_else(|e| panic!("load during compaction: {e}"))
                            .unwrap();
                        assert_eq!(by_id(&rows), *expected, "a load saw a mixed state");
                        true
                    };
                    let ended = phase.load(Ordering::SeqCst);
                    if succeeded && began <= 1 && ended >= 1 {
                        let n = if r == 0 {
                            &overlapped_sql
                        } else {
                            &overlapped_loads
                        };
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        phase.store(1, Ordering::SeqCst);
        let stats = tokio::time::timeout(Duration::from_secs(120), m.compact("summaries"))
            .await
            .expect("compaction within 120 s")
            .unwrap();
        phase.store(2, Ordering::SeqCst);
        assert_eq!(stats.parts, 8);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            tokio::time::timeout(Duration::from_secs(120), r)
                .await
                .expect("readers stop within 120 s")
                .unwrap();
        }
        let rows = m
            .load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_id(&rows), want);
    }
    assert!(
        reads.load(Ordering::SeqCst) >= rounds * 3,
        "the readers hardly ran"
    );
    let (sql, loads) = (
        overlapped_sql.load(Ordering::SeqCst),
        overlapped_loads.load(Ordering::SeqCst),
    );
    println!("reads that overlapped a compaction and succeeded: {sql} SQL, {loads} loads");
    assert!(
        sql >= 1 && loads >= rounds,
        "too few successful reads overlapped a compaction: {sql} SQL, {loads} loads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_under_concurrent_reads() {
    let dir = tempfile::tempdir().unwrap();
    compaction_under_reads(&Place::local(dir.path()), 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_under_concurrent_reads_on_s3() {
    compaction_under_reads(&Place::s3(&S3::from_env(), &unique("append-compact")), 3).await;
}

// ---- Fingerprints ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_made_from_other_inputs_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let v1 = CheckpointManager::jsonl(root)
        .unwrap()
        .with_fingerprint("inputs=abc model=m1");
    v1.append("summaries", &batch("a", 3, "t")).await.unwrap();
    v1.append("summaries", &batch("b", 2, "t")).await.unwrap();
    assert_eq!(
        v1.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        v1.fingerprint("summaries").await.unwrap().as_deref(),
        Some("inputs=abc model=m1")
    );

    let v2 = CheckpointManager::jsonl(root)
        .unwrap()
        .with_fingerprint("inputs=abc model=m2");
    let err = v2
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap_err();
    assert!(err.is_stale(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("model=m1") && text.contains("model=m2"),
        "{text}"
    );
    assert!(
        v2.missing("summaries", &["a-0"])
            .await
            .unwrap_err()
            .is_stale()
    );
    // Appending rows of other inputs is refused, and stores nothing.
    assert!(
        v2.append("summaries", &batch("c", 1, "t"))
            .await
            .unwrap_err()
            .is_stale()
    );
    let plain = CheckpointManager::jsonl(root).unwrap();
    assert_eq!(
        plain
            .load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap()
            .len(),
        5
    );
    // A save with the new fingerprint replaces it all.
    v2.save("summaries", &batch("d", 1, "t")).await.unwrap();
    assert_eq!(
        v2.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    assert!(
        v1.load::<ConversationSummary>("summaries")
            .await
            .unwrap_err()
            .is_stale()
    );
    // The fingerprint is no checkpoint of its own.
    assert_eq!(plain.list().await.unwrap(), ["summaries.jsonl"]);
}

// ---- The order of the last row ---------------------------------------------------------------

/// (chat_id → topic) as every reader sees it: a typed load, SQL rows and SQL's count agree.
async fn seen_by_readers(place: &Place, what: &str) -> BTreeMap<String, String> {
    let m = place.manager(FileFormat::Jsonl);
    let loaded = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap_or_else(|e| panic!("{what}: load: {e}"))
        .unwrap_or_default();
    let loaded = by_id(&loaded);
    let session = place.session().await;
    let df = session
        .sql("SELECT chat_id, topic FROM summaries")
        .await
        .unwrap_or_else(|e| panic!("{what}: SQL: {e}"));
    let batches = df
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{what}: SQL: {e}"));
    let mut sql = BTreeMap::new();
    for b in &batches {
        let (ids, topics) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            let prev = sql.insert(ids.value(i).to_owned(), topics.value(i).to_owned());
            assert!(
                prev.is_none(),
                "{what}: SQL returned {} twice",
                ids.value(i)
            );
        }
    }
    assert_eq!(sql, loaded, "{what}: SQL and a typed load disagree");
    let n = sql_i64(&session, "SELECT count(*) FROM summaries")
        .await
        .unwrap();
    assert_eq!(n as usize, loaded.len(), "{what}: count(*)");
    loaded
}

/// Random interleavings of appends (each written, then published at a random later step,
/// so appends overlap and are published in another order than they began), compactions
/// and discarded appends, over a base that holds ids twice. After every step every reader
/// sees, for each id, the row of the last write in publication order (the base first,
/// rows of one file in file order); a compaction never changes what they see.
async fn last_row_wins_in_publication_order(place: &Place, seed: u64, steps: usize) {
    println!("seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m = place.manager(FileFormat::Jsonl);
    let row = |id: usize, topic: &str| item("k", id, topic);
    // The base, as another tool may write it: ids 1 and 3 twice, the later row wins.
    let base: Vec<ConversationSummary> = (0..6)
        .map(|i| row(i, "base-a"))
        .chain([row(1, "base-b"), row(3, "base-b")])
        .collect();
    m.save("summaries", &base).await.unwrap();
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    for r in &base {
        model.insert(r.chat_id.clone(), r.topic.clone().unwrap());
    }
    // The base alone is read as it is, every row (as Kura reads it).
    let plain = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.len(), base.len());
    let mut pending: Vec<(ckpt::manager::StagedAppend, Vec<ConversationSummary>)> = Vec::new();
    let (mut published, mut compacted) = (0, 0);
    // Until a part is published the checkpoint is one file, read as it is (duplicates
    // too); from then on (and after every compaction) the rule applies to base and parts.
    let check = |published: usize, what: String, model: BTreeMap<String, String>| async move {
        if published == 0 {
            let rows = place
                .manager(FileFormat::Jsonl)
                .load::<ConversationSummary>("summaries")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(rows.len(), 8, "{what}: the base alone, every row");
        } else {
            assert_eq!(seen_by_readers(place, &what).await, model, "{what}");
        }
    };
    for step in 0..steps {
        let what = format!("seed {seed} step {step}");
        match rng.random_range(0..10) {
            0..=3 => {
                // A batch of 1-4 rows, an id possibly twice in it.
                let n = rng.random_range(1..=4);
                let rows: Vec<ConversationSummary> = (0..n)
                    .map(|j| row(rng.random_range(0..10), &format!("s{step}-{j}")))
                    .collect();
                let staged = m.stage_append("summaries", &rows).await.unwrap().unwrap();
                pending.push((staged, rows));
            }
            4..=6 if !pending.is_empty() => {
                let (staged, rows) = pending.remove(rng.random_range(0..pending.len()));
                staged.publish().await.unwrap();
                for r in &rows {
                    model.insert(r.chat_id.clone(), r.topic.clone().unwrap());
                }
                published += 1;
            }
            7 if !pending.is_empty() => {
                let (staged, _) = pending.remove(rng.random_range(0..pending.len()));
                staged.discard().await.unwrap();
            }
            _ if published > 0 => {
                let before = seen_by_readers(place, &format!("{what}: before compaction")).await;
                m.compact("summaries").await.unwrap();
                compacted += 1;
                let after = seen_by_readers(place, &format!("{what}: after compaction")).await;
                assert_eq!(
                    after, before,
                    "{what}: a compaction changed what readers see"
                );
            }
            _ => {}
        }
        check(published, what, model.clone()).await;
    }
    for (staged, rows) in pending {
        staged.publish().await.unwrap();
        for r in &rows {
            model.insert(r.chat_id.clone(), r.topic.clone().unwrap());
        }
    }
    m.compact("summaries").await.unwrap();
    assert_eq!(seen_by_readers(place, "the end").await, model);
    // A compacted checkpoint is one file, holding each id once.
    let rows = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), model.len());
    assert!(
        published > 0 && compacted > 0,
        "seed {seed}: {published} published, {compacted} compactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_row_wins_in_publication_order_over_random_interleavings() {
    let seed: u64 = std::env::var("CKPT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(27);
    for k in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        last_row_wins_in_publication_order(&Place::local(dir.path()), seed.wrapping_add(k), 30)
            .await;
        // Nothing of the checkpoint's appends is left beside it once compacted.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["summaries.jsonl"], "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_row_wins_in_publication_order_over_random_interleavings_on_s3() {
    let seed: u64 = std::env::var("CKPT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2027);
    last_row_wins_in_publication_order(
        &Place::s3(&S3::from_env(), &unique("append-order")),
        seed,
        20,
    )
    .await;
}

/// Compaction keeps the layout the checkpoint has: Kura's Parquet stays Kura's (which
/// Kura's Parquet manager loads), native stays native; `--layout` changes it on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_checkpoints_layout() {
    let dir = tempfile::tempdir().unwrap();
    let place = Place::local(dir.path());
    for layout in [ckpt::Layout::Kura, ckpt::Layout::Native] {
        let name = format!("summaries_{layout:?}").to_lowercase();
        let m = place.manager(FileFormat::Parquet).layout(layout);
        m.save(&name, &batch("a", 3, "one")).await.unwrap();
        // Appended (and compacted) by a manager of the other layout, and by the CLI.
        let other = place.manager(FileFormat::Parquet);
        other.append(&name, &batch("b", 2, "two")).await.unwrap();
        other.compact(&name).await.unwrap();
        let e = ls_entry(&place, &format!("{name}.parquet"));
        let want = if layout == ckpt::Layout::Kura {
            "kura"
        } else {
            "native"
        };
        assert_eq!(e["layout"], want, "{e}");
        assert_eq!(e["rows"], 5, "{e}");
        other.append(&name, &batch("c", 1, "three")).await.unwrap();
        ckpt(place.args(&["compact", &place.root, &name])).expect_ok("compact");
        assert_eq!(ls_entry(&place, &format!("{name}.parquet"))["layout"], want);
    }
    // --layout changes it.
    let m = place.manager(FileFormat::Parquet);
    m.append("summaries_kura", &batch("d", 1, "four"))
        .await
        .unwrap();
    ckpt(place.args(&[
        "compact",
        &place.root,
        "summaries_kura",
        "--layout",
        "native",
    ]))
    .expect_ok("compact --layout native");
    assert_eq!(
        ls_entry(&place, "summaries_kura.parquet")["layout"],
        "native"
    );
    // No lock file, no parts directory left behind.
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["summaries_kura.parquet", "summaries_native.parquet"]);
}
