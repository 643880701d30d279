//! ckpt against a real S3-compatible server (moto, started by `scripts/test` on
//! 127.0.0.1): the CLI over `s3://` roots, configuration the AWS way, COPY between local
//! disk and the bucket, multipart uploads of a checkpoint larger than one part, aborted
//! uploads leaving nothing behind, and errors that say what to fix.

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use ckpt::{CheckpointManager, ConversationSummary, FileFormat, Root};
use futures::StreamExt;

use crate::common::{self, S3};

fn s3() -> S3 {
    S3::from_env()
}

/// How the CLI is pointed at the server: `-S` options, or the AWS environment.
impl S3 {
    /// `ckpt` with the options given as `-S KEY=VALUE`.
    fn ckpt(&self) -> Command {
        let mut c = Command::cargo_bin("ckpt").unwrap();
        for kv in self.option_args() {
            c.arg("-S").arg(kv);
        }
        c
    }
    /// `ckpt` configured through the standard AWS environment variables only.
    fn ckpt_env(&self) -> Command {
        let mut c = Command::cargo_bin("ckpt").unwrap();
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", &self.region)
            .env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false");
        c
    }
}

fn unique(tag: &str) -> String {
    format!("s3test/{}", common::unique(tag))
}

fn run(mut c: Command) -> (String, String) {
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "command failed: {c:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout, stderr)
}

/// A local root of generated checkpoints (120 summaries).
fn generated_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let root = Root::local(dir.path()).unwrap();
        let opts = ckpt::ops::generate::GenerateOptions {
            summaries: 120,
            dim: 8,
            ..Default::default()
        };
        ckpt::ops::generate::generate(&root, &opts).await.unwrap();
    });
    dir
}

#[test]
fn cli_convert_ls_query_over_s3_with_options_and_with_env() {
    let s = s3();
    let local = generated_root();
    let prefix = unique("cli");
    let url = s.url(&prefix);
    let mut c = s.ckpt();
    c.args([
        "convert",
        local.path().to_str().unwrap(),
        &url,
        "--to",
        "parquet",
        "--compression",
        "zstd(3)",
    ]);
    let (out, _) = run(c);
    assert!(out.contains("summaries.parquet: 120 rows"), "{out}");

    // Configured only through AWS_* variables.
    let mut c = s.ckpt_env();
    c.args(["ls", &url, "--format", "json"]);
    let (out, _) = run(c);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "clusters.parquet",
            "conversations.parquet",
            "dimensionality.parquet",
            "meta_clusters.parquet",
            "summaries.parquet"
        ]
    );
    let rows = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "summaries")
        .unwrap()["rows"]
        .as_u64();
    assert_eq!(rows, Some(120));

    // The same answer from the bucket as from the local JSONL.
    let sql =
        "SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY topic NULLS FIRST";
    let mut c = s.ckpt();
    c.args(["query", &url, sql, "--format", "csv"]);
    let (remote, _) = run(c);
    let mut c = Command::cargo_bin("ckpt").unwrap();
    c.args([
        "query",
        local.path().to_str().unwrap(),
        sql,
        "--format",
        "csv",
    ]);
    let (here, _) = run(c);
    assert_eq!(remote, here);
    assert!(remote.lines().count() > 5);

    // Back from the bucket to a local root, as JSONL, equal to the original.
    let back = tempfile::tempdir().unwrap();
    let mut c = s.ckpt_env();
    c.args([
        "convert",
        &url,
        back.path().to_str().unwrap(),
        "--to",
        "jsonl",
    ]);
    run(c);
    for kind in [
        "summaries",
        "clusters",
        "meta_clusters",
        "dimensionality",
        "conversations",
    ] {
        let a = std::fs::read(local.path().join(format!("{kind}.jsonl"))).unwrap();
        let b = std::fs::read(back.path().join(format!("{kind}.jsonl"))).unwrap();
        assert!(
            a == b,
            "{kind}.jsonl differs after local -> s3 parquet -> local jsonl"
        );
    }
}

#[test]
fn copy_from_local_to_s3_and_from_s3_to_local() {
    let s = s3();
    let local = generated_root();
    let prefix = unique("copy");
    let target = format!("{}/frustrated.parquet", s.url(&prefix));
    let mut c = s.ckpt();
    c.args([
        "query",
        local.path().to_str().unwrap(),
        &format!("COPY (SELECT * FROM summaries WHERE user_frustration >= 4) TO '{target}' STORED AS PARQUET OPTIONS (compression 'zstd(3)')"),
    ]);
    run(c);
    let mut c = Command::cargo_bin("ckpt").unwrap();
    c.args([
        "query",
        local.path().to_str().unwrap(),
        "SELECT count(*) AS n FROM summaries WHERE user_frustration >= 4",
        "--format",
        "ndjson",
    ]);
    let (expected, _) = run(c);

    // From the bucket: count there, and COPY to the local disk as Kura JSONL.
    let out_dir = tempfile::tempdir().unwrap();
    let local_target = format!("file://{}/frustrated.jsonl", out_dir.path().display());
    let mut c = s.ckpt();
    c.args([
        "query",
        &s.url(&prefix),
        &format!("SELECT count(*) AS n FROM frustrated; COPY frustrated TO '{local_target}'"),
        "--format",
        "ndjson",
    ]);
    let (out, _) = run(c);
    assert!(out.starts_with(expected.trim()), "{out} vs {expected}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let loaded = rt.block_on(async {
        CheckpointManager::jsonl(out_dir.path().to_str().unwrap())
            .unwrap()
            .load::<ConversationSummary>("frustrated")
            .await
            .unwrap()
            .unwrap()
    });
    let n: serde_json::Value = serde_json::from_str(expected.trim()).unwrap();
    assert_eq!(loaded.len() as u64, n["n"].as_u64().unwrap());
    assert!(loaded.iter().all(|s| s.user_frustration.unwrap() >= 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_larger_than_a_part_goes_up_as_multipart_and_reads_back() {
    let s = s3();
    let prefix = unique("multipart");
    let root = Root::with_options(&s.url(&prefix), &s.options()).unwrap();
    let m = CheckpointManager::new(root, FileFormat::Jsonl).unwrap();
    // ~20 MB of JSONL: more than two 8 MiB parts.
    let n = 9000;
    let items = futures::stream::iter(0..n).map(|i| ckpt::ops::generate::summary(i, 128, 5));
    let stats = m.save_stream("summaries", items).await.unwrap();
    assert!(stats.bytes > 16 << 20, "only {} bytes", stats.bytes);
    assert_eq!(m.size("summaries").await.unwrap(), Some(stats.bytes));
    let mut loaded = m
        .load_stream::<ConversationSummary>("summaries")
        .await
        .unwrap()
        .unwrap();
    let mut i = 0;
    while let Some(v) = loaded.next().await {
        let v = v.unwrap();
        if i % 997 == 0 {
            assert_eq!(v, ckpt::ops::generate::summary(i, 128, 5));
        }
        i += 1;
    }
    assert_eq!(i, n);
    assert_eq!(s.pending_uploads(&prefix, false).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multipart_upload_is_aborted_and_the_previous_checkpoint_stays() {
    let s = s3();
    let prefix = unique("abort");
    let root = Root::with_options(&s.url(&prefix), &s.options()).unwrap();
    let m = CheckpointManager::new(root.clone(), FileFormat::Jsonl).unwrap();
    let before: Vec<ConversationSummary> = (0..50)
        .map(|i| ckpt::ops::generate::summary(i, 4, 1))
        .collect();
    m.save("summaries", &before).await.unwrap();
    let size_before = m.size("summaries").await.unwrap();

    // A stream that fails after ~20 MB: the multipart upload has parts in flight.
    let batches = (0..40).map(|b| {
        if b == 39 {
            Err(datafusion::error::DataFusionError::Execution(
                "the source broke".into(),
            ))
        } else {
            let items: Vec<_> = (0..200)
                .map(|i| ckpt::ops::generate::summary(b * 200 + i, 256, 2))
                .collect();
            Ok(<ConversationSummary as ckpt::Checkpoint>::to_batch(&items).unwrap())
        }
    });
    let stream = futures::stream::iter(batches).boxed();
    let kind = ckpt::CheckpointKind::Summaries;
    let err = ckpt::sink::write_batches(
        &root,
        "summaries.jsonl",
        Some(kind),
        &Default::default(),
        kind.schema(),
        stream,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("the source broke"), "{err}");
    let after: Vec<ConversationSummary> = m.load("summaries").await.unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(m.size("summaries").await.unwrap(), size_before);
    assert_eq!(m.list().await.unwrap(), ["summaries.jsonl"]);
    // The abort runs before write_batches returns.
    assert_eq!(
        s.pending_uploads(&prefix, false).len(),
        0,
        "an incomplete multipart upload was left behind"
    );
}

#[test]
fn errors_name_the_bucket_and_the_fix_and_never_the_secret() {
    let s = s3();
    // A bucket that does not exist.
    let mut c = s.ckpt();
    c.args(["ls", "s3://no-such-bucket-ckpt/run1"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("s3://no-such-bucket-ckpt/run1"), "{err}");
    assert!(err.contains("bucket does not exist"), "{err}");
    assert!(!err.contains(&s.secret), "{err}");

    // An endpoint where nothing listens (retries kept short).
    let mut c = Command::cargo_bin("ckpt").unwrap();
    c.args(["ls", &s.url("x")])
        .args([
            "-S",
            "aws_endpoint=http://127.0.0.1:9",
            "-S",
            "aws_allow_http=true",
            "-S",
            "aws_region=us-east-1",
        ])
        .args([
            "-S",
            &format!("aws_access_key_id={}", s.key_id),
            "-S",
            &format!("aws_secret_access_key={}", s.secret),
        ])
        .args([
            "-S",
            "retry_max=1",
            "-S",
            "retry_timeout=2",
            "-S",
            "request_timeout=2",
        ]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&s.bucket), "{err}");
    assert!(err.contains("endpoint"), "{err}");
    assert!(!err.contains(&s.secret), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A misspelt option key is refused, naming the key, not its value.
    let mut c = s.ckpt();
    c.args([
        "ls",
        &s.url("x"),
        "-S",
        &format!("aws_secret_acess_key={}", s.secret),
    ]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("aws_secret_acess_key"), "{err}");
    assert!(!err.contains(&s.secret), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sees_checkpoints_saved_to_the_bucket_after_it_opened() {
    let s = s3();
    let prefix = unique("follow");
    let session = ckpt::CheckpointSession::new(
        vec![("run".into(), s.url(&prefix))],
        ckpt::SessionOptions {
            storage: s.options(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = session
        .sql("SELECT count(*) FROM summaries")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Error during planning: table 'ckpt.run.summaries' not found\n"),
        "{err}"
    );
    let m = CheckpointManager::with_storage(&s.url(&prefix), FileFormat::Parquet, &s.options())
        .unwrap();
    let items: Vec<_> = (0..7)
        .map(|i| ckpt::ops::generate::summary(i, 2, 3))
        .collect();
    m.save("summaries", &items).await.unwrap();
    let batches = session
        .sql("SELECT count(*) AS n FROM summaries")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 7);
}
