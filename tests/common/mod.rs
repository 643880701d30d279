//! The fixtures every integration-test binary shares (`tests/engine`, `tests/cli`, each
//! including this file as its `common` module): running the `ckpt` binary, the S3 server
//! that `scripts/test` starts (moto on 127.0.0.1), unique names, the sample checkpoints of
//! `data/`, places (a local directory or an S3 prefix) that tests write checkpoints to.
//! One copy, so a fixture fixed here is fixed for every test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use ckpt::{
    CheckpointManager, CheckpointSession, FileFormat, Root, SessionOptions, StorageOptions,
};

/// The `ckpt` binary built for these tests.
pub fn ckpt_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ckpt"));
    c.env_remove("CKPT_LOG").stdin(Stdio::null());
    c
}

/// What a finished `ckpt` run printed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Panics with the whole output unless the run succeeded.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(
            self.ok(),
            "{what}: expected success, got {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
    /// Panics unless the run failed with a non-zero exit code (not a signal).
    pub fn expect_err(self, what: &str) -> Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "{what}: expected a non-zero exit, got {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs a command to completion; asserts that it did not panic (no "panicked" on stderr,
/// no death by signal such as a stack overflow's SIGSEGV/SIGABRT).
pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("ckpt runs");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("stack overflow"),
        "{cmd:?} panicked:\n{}",
        run.stderr
    );
    assert!(
        run.code.is_some(),
        "{cmd:?} was killed by a signal ({:?}):\n{}",
        out.status,
        run.stderr
    );
    run
}

/// `ckpt ARGS...` run to completion (see [`run`]).
pub fn ckpt<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(ckpt_cmd().args(args))
}

/// A path as a command-line argument (the tests' paths are UTF-8).
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The S3 server of `scripts/test` (moto on 127.0.0.1).
#[derive(Debug, Clone)]
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    pub region: String,
}

impl S3 {
    /// From the CKPT_TEST_S3_* variables; panics (never skips) when they are missing.
    pub fn from_env() -> S3 {
        S3 {
            endpoint: required_env("CKPT_TEST_S3_ENDPOINT"),
            bucket: required_env("CKPT_TEST_S3_BUCKET"),
            key_id: required_env("CKPT_TEST_S3_KEY_ID"),
            secret: required_env("CKPT_TEST_S3_SECRET"),
            region: required_env("CKPT_TEST_S3_REGION"),
        }
    }

    /// The same server's second bucket (`CKPT_TEST_S3_BUCKET2`).
    pub fn second_bucket(&self) -> S3 {
        S3 {
            bucket: required_env("CKPT_TEST_S3_BUCKET2"),
            ..self.clone()
        }
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// The same server reached through another endpoint (a proxy).
    pub fn via(&self, endpoint: &str) -> S3 {
        S3 {
            endpoint: endpoint.to_owned(),
            ..self.clone()
        }
    }

    /// `KEY=VALUE` storage options for this server.
    pub fn option_args(&self) -> Vec<String> {
        vec![
            format!("aws_endpoint={}", self.endpoint),
            "aws_allow_http=true".into(),
            format!("aws_access_key_id={}", self.key_id),
            format!("aws_secret_access_key={}", self.secret),
            format!("aws_region={}", self.region),
            "aws_virtual_hosted_style_request=false".into(),
        ]
    }

    /// The options as `-S KEY=VALUE` arguments.
    pub fn cli_args(&self) -> Vec<String> {
        self.option_args()
            .into_iter()
            .flat_map(|kv| ["-S".to_owned(), kv])
            .collect()
    }

    /// Runs `script` (Python) against this server, after `s3` (a boto3 client for it) and
    /// `bucket` are defined; `env` is in its environment. Returns the lines it printed. For
    /// what object_store cannot do: list (and abort) pending multipart uploads.
    pub fn boto3(&self, script: &str, env: &[(&str, String)]) -> Vec<String> {
        let python = std::env::var("CKPT_PYTHON").expect(
            "CKPT_PYTHON is not set: run scripts/test, which sets it to a Python with boto3",
        );
        let script = format!(
            "import os, boto3, botocore.exceptions\n\
             s3 = boto3.client('s3', endpoint_url=os.environ['ENDPOINT'], \
             region_name=os.environ['REGION'], aws_access_key_id=os.environ['KEY_ID'], \
             aws_secret_access_key=os.environ['SECRET'])\n\
             bucket = os.environ['BUCKET']\n{script}"
        );
        let mut cmd = Command::new(python);
        cmd.args(["-c", &script])
            .env("ENDPOINT", &self.endpoint)
            .env("REGION", &self.region)
            .env("KEY_ID", &self.key_id)
            .env("SECRET", &self.secret)
            .env("BUCKET", &self.bucket);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("CKPT_PYTHON runs");
        assert!(
            out.status.success(),
            "boto3 against the S3 server failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The multipart uploads under `prefix` (a key prefix, `/` not added) that were started
    /// and neither completed nor aborted, as `key upload-id` lines, asked of the server by
    /// boto3 over its own connection. With `abort`, each one listed is then aborted, as a
    /// bucket's lifecycle rule would.
    pub fn pending_uploads(&self, prefix: &str, abort: bool) -> Vec<String> {
        let script = r#"
r = s3.list_multipart_uploads(Bucket=bucket, Prefix=os.environ["PREFIX"])
for u in r.get("Uploads", []):
    print(u["Key"], u["UploadId"])
    if os.environ["ABORT"] == "1":
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
"#;
        self.boto3(
            script,
            &[
                ("PREFIX", prefix.to_owned()),
                ("ABORT", if abort { "1" } else { "0" }.to_owned()),
            ],
        )
    }

    /// The options of [`S3::option_args`], parsed.
    pub fn options(&self) -> StorageOptions {
        let mut o = StorageOptions::default();
        for kv in self.option_args() {
            o.set(&kv).unwrap();
        }
        o
    }
}

/// A variable `scripts/test` exports; panics (never skips) when it is missing or empty.
fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run scripts/test, which starts the S3 server (moto) and exports the CKPT_TEST_S3_* variables"
        ),
    }
}

/// The sample checkpoints committed in `data/`: the five kinds, each as JSONL and Parquet.
/// Tests copy these by name, never the whole folder: running the examples writes more
/// into `data/` (`queries/to_parquet.sql` writes `data/parquet/`), and that must not change
/// what a test sees.
pub const SAMPLE_CHECKPOINTS: [&str; 5] = [
    "summaries",
    "conversations",
    "clusters",
    "meta_clusters",
    "dimensionality",
];

/// This repository's top directory (`data/`, `queries/`, `tests/` are in it).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `data/` of this repository.
pub fn sample_dir() -> PathBuf {
    repo_dir().join("data")
}

/// Copies the sample checkpoints into `dst` (created if missing): JSONL only, or JSONL and
/// Parquet. Returns the file names copied.
pub fn copy_sample(dst: &std::path::Path, jsonl_only: bool) -> Vec<String> {
    std::fs::create_dir_all(dst).unwrap();
    let exts: &[&str] = if jsonl_only {
        &["jsonl"]
    } else {
        &["jsonl", "parquet"]
    };
    let mut copied = Vec::new();
    for name in SAMPLE_CHECKPOINTS {
        for ext in exts {
            let file = format!("{name}.{ext}");
            std::fs::copy(sample_dir().join(&file), dst.join(&file))
                .unwrap_or_else(|e| panic!("copy data/{file}: {e}"));
            copied.push(file);
        }
    }
    copied
}

/// The checkpoint names `ckpt ls` printed (its table's first column, header skipped),
/// sorted.
pub fn listed_names(ls_stdout: &str) -> Vec<&str> {
    let mut names: Vec<&str> = ls_stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names.sort();
    names
}

/// Waits for `child` to end, at most `within`; panics naming `what` (and showing `log`)
/// when it does not.
pub fn wait_exit(
    child: &mut std::process::Child,
    within: std::time::Duration,
    what: &str,
    log: impl Fn() -> String,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "{what} did not end within {within:?}:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs every statement of `sql` in `session`, in order; returns the rows of each as JSON
/// objects (as ckpt's JSONL writer writes them). Panics naming `what` and the statement.
pub async fn statement_rows(
    session: &ckpt::CheckpointSession,
    sql: &str,
    what: &str,
) -> Vec<Vec<serde_json::Map<String, serde_json::Value>>> {
    let frames = ckpt::ops::query::plan_statements(session, sql)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut out = Vec::new();
    for (text, df) in frames {
        let batches = df
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: {text}: {e}"));
        let mut buf = Vec::new();
        for b in &batches {
            ckpt::jsonl::JsonlEncoder.encode(b, &mut buf).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        out.push(
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        );
    }
    out
}

/// Where a test's checkpoints live: a local directory or a prefix in the S3 server's
/// bucket; the same test runs on either.
#[derive(Clone)]
pub struct Place {
    /// The root as the CLI and the library take it: a path or `s3://BUCKET/PREFIX`.
    pub root: String,
    /// `-S KEY=VALUE` arguments for the CLI (empty for local disk).
    pub cli: Vec<String>,
    pub storage: StorageOptions,
    /// The directory, on local disk.
    pub local: Option<PathBuf>,
    /// The S3 server and the prefix of `root` there (None for local disk): to ask the
    /// server what object_store cannot tell, such as pending multipart uploads.
    pub s3: Option<(S3, String)>,
}

impl Place {
    pub fn local(dir: &Path) -> Place {
        Place {
            root: s(dir),
            cli: vec![],
            storage: StorageOptions::default(),
            local: Some(dir.to_owned()),
            s3: None,
        }
    }

    pub fn s3(s3: &S3, prefix: &str) -> Place {
        Place {
            root: s3.url(prefix),
            cli: s3.cli_args(),
            storage: s3.options(),
            local: None,
            s3: Some((s3.clone(), prefix.to_owned())),
        }
    }

    pub fn root(&self) -> Root {
        Root::with_options(&self.root, &self.storage).unwrap()
    }

    pub fn manager(&self, format: FileFormat) -> CheckpointManager {
        CheckpointManager::with_storage(&self.root, format, &self.storage).unwrap()
    }

    /// A session whose catalog `root` is this place.
    pub async fn session(&self) -> CheckpointSession {
        CheckpointSession::new(
            vec![("root".into(), self.root.clone())],
            SessionOptions {
                storage: self.storage.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    /// `ckpt [-S ...] ARGS`.
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut v = self.cli.clone();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }
}

/// `n` generated summaries with `dim`-dimensional embeddings (`ckpt::ops::generate::summary`).
pub fn summaries(n: usize, dim: usize, seed: u64) -> Vec<ckpt::ConversationSummary> {
    (0..n)
        .map(|i| ckpt::ops::generate::summary(i, dim, seed))
        .collect()
}

/// Writes `rows` to `path` as JSON lines, bypassing ckpt's writers (an input file of
/// `ckpt append` or `convert`, as another program would write it).
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}
