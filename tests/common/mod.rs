//! Helpers shared by the integration tests: running the `ckpt` binary, the S3 server
//! that `scripts/test` starts (moto on 127.0.0.1), unique names.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use ckpt::StorageOptions;

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
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: run scripts/test, which starts the S3 server (moto)")
            })
        };
        S3 {
            endpoint: var("CKPT_TEST_S3_ENDPOINT"),
            bucket: var("CKPT_TEST_S3_BUCKET"),
            key_id: var("CKPT_TEST_S3_KEY_ID"),
            secret: var("CKPT_TEST_S3_SECRET"),
            region: var("CKPT_TEST_S3_REGION"),
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

    pub fn options(&self) -> StorageOptions {
        let mut o = StorageOptions::default();
        for kv in self.option_args() {
            o.set(&kv).unwrap();
        }
        o
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

/// `data/` of this repository.
pub fn sample_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
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
    let frames = ckpt::context::sql::plan_statements(session, sql)
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
