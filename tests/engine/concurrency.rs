//! Two writers save the same checkpoint at once, over and over, with different content,
//! while readers read it in a loop (SQL through a session, typed loads, the CLI). Every
//! read sees one whole version — the row count and a checksum match version A or version
//! B exactly — and the final checkpoint is one writer's whole output. Local disk and S3
//! (moto), JSONL and Parquet.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ckpt::ops::generate::summary;
use ckpt::{
    CheckpointManager, CheckpointSession, ConversationSummary, FileFormat, SessionOptions,
    StorageOptions,
};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;

use crate::common::{S3, ckpt_cmd, run, unique};

/// The two versions and how often each writer saves its own.
#[derive(Clone, Copy)]
struct Size {
    rows_a: usize,
    rows_b: usize,
    dim: usize,
    saves: usize,
    /// Whether reads may stop with "changed while it was being read": files read range by
    /// range cannot always be read while they are replaced, but never give a mixed result.
    may_stop: bool,
}

/// Checkpoints of a few dozen kilobytes, saved 40 times by each writer.
const SMALL: Size = Size {
    rows_a: 300,
    rows_b: 500,
    dim: 8,
    saves: 40,
    may_stop: false,
};

/// Parquet files over 8 MiB, which readers read range by range (each range pinned to the
/// version listed) instead of whole.
const BIG: Size = Size {
    rows_a: 6000,
    rows_b: 7000,
    dim: 384,
    saves: 4,
    may_stop: true,
};

/// Version `tag` of the checkpoint: `n` rows whose topic is the tag and whose scores sum
/// to a value of their own.
fn version(tag: &str, n: usize, dim: usize, seed: u64) -> Vec<ConversationSummary> {
    (0..n)
        .map(|i| {
            let mut s = summary(i, dim, seed);
            s.chat_id = format!("{tag}-{i}");
            s.topic = Some(tag.to_owned());
            s.concerning_score = Some((i % 5) as i32 + 1);
            s
        })
        .collect()
}

/// (rows, sum of concerning_score, min topic, max topic): what a reader sees.
type Seen = (i64, i64, String, String);

fn signature(rows: &[ConversationSummary]) -> Seen {
    let topic = rows[0].topic.clone().unwrap();
    (
        rows.len() as i64,
        rows.iter()
            .map(|r| r.concerning_score.unwrap() as i64)
            .sum(),
        topic.clone(),
        topic,
    )
}

const SQL: &str = "SELECT count(*) AS n, sum(concerning_score) AS s, min(topic) AS lo, \
                   max(topic) AS hi FROM summaries";

async fn sql_read(session: &CheckpointSession) -> ckpt::Result<Seen> {
    let batches = session.sql(SQL).await?.collect().await?;
    let b = &batches[0];
    let n = b.column(0).as_primitive::<Int64Type>().value(0);
    let sum = {
        let c = b.column(1);
        let c =
            datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Int64)?;
        c.as_primitive::<Int64Type>().value(0)
    };
    let lo = b.column(2).as_string::<i32>();
    let hi = b.column(3).as_string::<i32>();
    assert!(
        lo.is_valid(0) && hi.is_valid(0),
        "an empty checkpoint was seen"
    );
    Ok((n, sum, lo.value(0).to_owned(), hi.value(0).to_owned()))
}

struct Counts {
    sql: AtomicUsize,
    typed: AtomicUsize,
    cli: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

async fn race(
    root: String,
    storage: StorageOptions,
    cli: Vec<String>,
    format: FileFormat,
    size: Size,
) {
    let a = version("A", size.rows_a, size.dim, 1);
    let b = version("B", size.rows_b, size.dim, 2);
    let (sig_a, sig_b) = (signature(&a), signature(&b));
    let manager = |o: &StorageOptions| CheckpointManager::with_storage(&root, format, o).unwrap();
    manager(&storage).save("summaries", &a).await.unwrap();
    if size.may_stop {
        let bytes = manager(&storage).size("summaries").await.unwrap().unwrap();
        assert!(bytes > 8 << 20, "the big version is only {bytes} bytes");
    }

    let done = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts {
        sql: AtomicUsize::new(0),
        typed: AtomicUsize::new(0),
        cli: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let started = Instant::now();

    // Writers: A and B, each saving its version again and again.
    let mut writers = Vec::new();
    for rows in [a.clone(), b.clone()] {
        let m = manager(&storage);
        writers.push(tokio::spawn(async move {
            for _ in 0..size.saves {
                m.save("summaries", &rows).await.unwrap();
            }
        }));
    }

    // Readers.
    let mut readers = Vec::new();
    {
        // SQL through one long-lived session (the listing is read again by each query).
        let (done, counts, root, storage) =
            (done.clone(), counts.clone(), root.clone(), storage.clone());
        let (sig_a, sig_b) = (sig_a.clone(), sig_b.clone());
        readers.push(tokio::spawn(async move {
            let session = CheckpointSession::new(
                vec![("root".into(), root)],
                SessionOptions {
                    storage,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            while !done.load(Ordering::SeqCst) {
                match sql_read(&session).await {
                    Ok(seen) => {
                        assert!(
                            seen == sig_a || seen == sig_b,
                            "SQL saw a mixed or partial version: {seen:?}"
                        );
                        counts.sql.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => counts.errors.lock().unwrap().push(format!("SQL: {e}")),
                }
            }
        }));
    }
    {
        // Typed loads through a manager.
        let (done, counts) = (done.clone(), counts.clone());
        let m = manager(&storage);
        let (a, b) = (a.clone(), b.clone());
        readers.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                match m.load::<ConversationSummary>("summaries").await {
                    Ok(Some(rows)) => {
                        assert!(
                            rows == a || rows == b,
                            "a load saw a mixed or partial version ({} rows)",
                            rows.len()
                        );
                        counts.typed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(None) => panic!("the checkpoint vanished during a save"),
                    Err(e) => counts
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("typed load: {e}")),
                }
            }
        }));
    }
    {
        // The CLI, as another process.
        let (done, counts, root) = (done.clone(), counts.clone(), root.clone());
        let (sig_a, sig_b) = (sig_a.clone(), sig_b.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            while !done.load(Ordering::SeqCst) {
                let mut args = cli.clone();
                args.extend([
                    "query".to_owned(),
                    root.clone(),
                    "--format".to_owned(),
                    "csv".to_owned(),
                    SQL.to_owned(),
                ]);
                let r = run(ckpt_cmd().args(&args));
                if !r.ok() {
                    counts
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("CLI: {}", r.stderr));
                    continue;
                }
                let line = r.stdout.lines().nth(1).unwrap().to_owned();
                let f: Vec<&str> = line.split(',').collect();
                let seen: Seen = (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].to_owned(),
                    f[3].to_owned(),
                );
                assert!(
                    seen == sig_a || seen == sig_b,
                    "the CLI saw a mixed or partial version: {seen:?}"
                );
                counts.cli.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let (sql, typed, cli_reads, errors) = (
        counts.sql.load(Ordering::SeqCst),
        counts.typed.load(Ordering::SeqCst),
        counts.cli.load(Ordering::SeqCst),
        counts.errors.lock().unwrap().clone(),
    );
    eprintln!(
        "{root} ({format}): {} saves in {:.1?}; reads: {sql} SQL, {typed} typed, {cli_reads} CLI, {} stopped",
        2 * size.saves,
        started.elapsed(),
        errors.len()
    );
    if size.may_stop {
        for e in &errors {
            assert!(
                e.contains("changed while it was being read"),
                "a read failed otherwise than by stopping cleanly: {e}"
            );
        }
    } else {
        assert!(
            errors.is_empty(),
            "reads failed while the checkpoint was being replaced: {errors:#?}"
        );
    }
    assert!(sql > 0 && typed > 0 && cli_reads > 0, "a reader never read");

    // The final state is one writer's whole output, and nothing else is there.
    let m = manager(&storage);
    let last = m
        .load::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    assert!(last == a || last == b, "the final checkpoint is mixed");
    assert_eq!(m.list().await.unwrap(), vec![format!("summaries.{format}")]);
}

fn local() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    (dir, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_jsonl() {
    let (_dir, root) = local();
    race(
        root,
        StorageOptions::default(),
        vec![],
        FileFormat::Jsonl,
        SMALL,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_parquet() {
    let (_dir, root) = local();
    race(
        root,
        StorageOptions::default(),
        vec![],
        FileFormat::Parquet,
        SMALL,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_parquet_read_by_ranges() {
    let (_dir, root) = local();
    race(
        root,
        StorageOptions::default(),
        vec![],
        FileFormat::Parquet,
        BIG,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_jsonl() {
    let s3 = S3::from_env();
    let root = s3.url(&unique("concurrency"));
    race(root, s3.options(), s3.cli_args(), FileFormat::Jsonl, SMALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_parquet() {
    let s3 = S3::from_env();
    let root = s3.url(&unique("concurrency"));
    race(
        root,
        s3.options(),
        s3.cli_args(),
        FileFormat::Parquet,
        SMALL,
    )
    .await;
}
