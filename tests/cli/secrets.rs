//! Secrets never reach the output. With the secret access key in the environment and on
//! the command line (`-S aws_secret_access_key=...`) and a session token in the
//! environment, every command (ls, query with SELECT and COPY, convert both ways, sizes,
//! generate, shell through stdin) runs quiet, with `-v`, `-vv` and `CKPT_LOG=trace`, both
//! succeeding against the S3 server and failing (closed port, missing bucket, rejected
//! or unknown options); stdout and stderr never contain the secret or the token. Debug and
//! Display of the library's option, root and manager types do not either.

use std::io::Write;
use std::process::{Command, Stdio};

use ckpt::{CheckpointManager, FileFormat, Root, StorageOptions};

use crate::common::{Run, S3, ckpt_cmd, run, unique};

const TOKEN: &str = "FAKE-SESSION-TOKEN-q8Zr3-NEVER-PRINT";
const WRONG_SECRET: &str = "wrong-secret-Xy7-NEVER-PRINT";

/// The ways ckpt is asked to talk.
const VERBOSITY: [(&str, Option<&str>); 4] = [
    ("quiet", None),
    ("-v", None),
    ("-vv", None),
    ("CKPT_LOG=trace", Some("trace")),
];

struct Env {
    s3: S3,
    prefix: String,
    local: tempfile::TempDir,
}

impl Env {
    fn secrets(&self) -> [&str; 3] {
        [self.s3.secret.as_str(), TOKEN, WRONG_SECRET]
    }

    /// `ckpt` with the credentials in the environment and on the command line.
    fn cmd(&self, verbosity: &(&str, Option<&str>), options: &[String]) -> Command {
        let mut c = ckpt_cmd();
        c.env("AWS_ACCESS_KEY_ID", &self.s3.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.s3.secret)
            .env("AWS_SESSION_TOKEN", TOKEN)
            .env("AWS_REGION", &self.s3.region)
            .env("AWS_ENDPOINT_URL", &self.s3.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("RUST_BACKTRACE", "1");
        match verbosity {
            (flag, None) if flag.starts_with('-') => {
                c.arg(flag);
            }
            (_, Some(filter)) => {
                c.env("CKPT_LOG", filter);
            }
            _ => {}
        }
        for kv in options {
            c.arg("-S").arg(kv);
        }
        c
    }

    fn url(&self, rest: &str) -> String {
        self.s3.url(&format!("{}/{rest}", self.prefix))
    }

    fn check(&self, what: &str, r: &Run) {
        for secret in self.secrets() {
            for (stream, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                assert!(
                    !text.contains(secret),
                    "{what}: the secret {secret:?} appears on {stream}:\n{text}"
                );
            }
        }
    }
}

fn setup() -> Env {
    let s3 = S3::from_env();
    let env = Env {
        s3,
        prefix: unique("secrets"),
        local: tempfile::tempdir().unwrap(),
    };
    // Something to read, in the bucket and on disk.
    let mut c = env.cmd(&VERBOSITY[0], &env.s3.option_args());
    c.args([
        "generate",
        &env.url("data"),
        "--summaries",
        "30",
        "--dim",
        "4",
        "--no-conversations",
    ]);
    run(&mut c).expect_ok("generate");
    let local = env.local.path().to_str().unwrap();
    let mut c = ckpt_cmd();
    c.args([
        "generate",
        local,
        "--summaries",
        "30",
        "--dim",
        "4",
        "--no-conversations",
    ]);
    run(&mut c).expect_ok("generate locally");
    env
}

/// One command line: (label, args, stdin, expected to succeed, to fail, or either).
type Case = (String, Vec<String>, Option<&'static str>, Option<bool>);

fn commands(env: &Env, n: usize) -> Vec<(String, Vec<String>, Option<&'static str>)> {
    let data = env.url("data");
    let local = env.local.path().to_str().unwrap().to_owned();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        ("ls".into(), s(&["ls", &data]), None),
        (
            "query".into(),
            s(&[
                "query",
                &data,
                "SELECT count(*), min(chat_id) FROM summaries",
            ]),
            None,
        ),
        (
            "query COPY".into(),
            s(&[
                "query",
                &data,
                &format!(
                    "COPY summaries TO 'copy-{n}.parquet' STORED AS PARQUET; COPY (SELECT chat_id FROM summaries) TO '{}' STORED AS JSON",
                    env.url(&format!("copies/c-{n}.jsonl"))
                ),
            ]),
            None,
        ),
        (
            "convert from S3".into(),
            s(&[
                "convert",
                "-q",
                &format!("{data}/summaries.jsonl"),
                &format!("{local}/from-s3-{n}.parquet"),
            ]),
            None,
        ),
        (
            "convert to S3".into(),
            s(&[
                "convert",
                "-q",
                &format!("{local}/summaries.jsonl"),
                &env.url(&format!("up/s-{n}.parquet")),
            ]),
            None,
        ),
        ("sizes".into(), s(&["sizes", &data]), None),
        (
            "generate".into(),
            s(&[
                "generate",
                &env.url(&format!("gen-{n}")),
                "--summaries",
                "10",
                "--dim",
                "2",
            ]),
            None,
        ),
        (
            "shell".into(),
            s(&["shell", &data]),
            Some(
                "SELECT count(*) FROM summaries;\n\\d\n\\d summaries\nSELECT nope FROM nowhere;\n\\q\n",
            ),
        ),
    ]
}

fn run_case(env: &Env, verbosity: &(&str, Option<&str>), options: &[String], case: &Case) {
    let (label, args, stdin, should_succeed) = case;
    let what = format!("{label} ({}) {args:?}", verbosity.0);
    let mut c = env.cmd(verbosity, options);
    c.args(args);
    let r = match stdin {
        None => run(&mut c),
        Some(input) => {
            let mut child = c
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let r = Run {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
            assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
            r
        }
    };
    env.check(&what, &r);
    match should_succeed {
        Some(true) => {
            r.expect_ok(&what);
        }
        // The shell reports a failed statement and goes on; other commands exit non-zero.
        Some(false) if stdin.is_none() => {
            r.expect_err(&what);
        }
        _ => {}
    }
}

#[test]
fn successful_commands_print_no_secret() {
    let env = setup();
    let mut n = 0;
    for verbosity in &VERBOSITY {
        for (label, args, stdin) in commands(&env, n) {
            n += 1;
            let case = (label, args, stdin, Some(true));
            run_case(&env, verbosity, &env.s3.option_args(), &case);
        }
    }
}

#[test]
fn failing_commands_print_no_secret() {
    let env = setup();
    let quick = ["retry_max=1".to_owned(), "retry_timeout=2".to_owned()];
    let with = |extra: &[String]| -> Vec<String> {
        let mut o = env.s3.option_args();
        o.extend(quick.iter().cloned());
        o.extend(extra.iter().cloned());
        o
    };
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let option_sets: Vec<(&str, Vec<String>)> = vec![
        (
            "closed port",
            with(&[format!("aws_endpoint=http://127.0.0.1:{closed}")]),
        ),
        (
            "wrong secret",
            with(&[format!("aws_secret_access_key={WRONG_SECRET}")]),
        ),
        (
            "unknown option key",
            with(&[format!("aws_secrett={}", env.s3.secret)]),
        ),
        (
            "option without a key",
            with(&[env.s3.secret.clone(), format!("={TOKEN}")]),
        ),
    ];
    let mut n = 1000;
    for verbosity in &VERBOSITY {
        for (set, options) in &option_sets {
            for (label, args, stdin) in commands(&env, n) {
                n += 1;
                // The test server does not check secrets: with the wrong one, runs may pass.
                let expect = (*set != "wrong secret").then_some(false);
                let case = (format!("{label}, {set}"), args, stdin, expect);
                run_case(&env, verbosity, options, &case);
            }
        }
        // A bucket that does not exist.
        let mut c = env.cmd(verbosity, &with(&[]));
        c.args(["ls", "s3://ckpt-no-such-bucket-for-secrets/x"]);
        let r = run(&mut c).expect_err("missing bucket");
        env.check("missing bucket", &r);
        let mut c = env.cmd(verbosity, &with(&[]));
        c.args([
            "query",
            "s3://ckpt-no-such-bucket-for-secrets/x",
            "SELECT 1",
        ]);
        let r = run(&mut c);
        env.check("query on a missing bucket", &r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_types_do_not_show_secrets() {
    let s3 = S3::from_env();
    let mut options = s3.options();
    options.set(&format!("aws_session_token={TOKEN}")).unwrap();
    let shown = format!("{options:?}");
    assert!(
        !shown.contains(&s3.secret) && !shown.contains(TOKEN),
        "{shown}"
    );
    assert!(
        shown.contains("aws_secret_access_key"),
        "keys are shown: {shown}"
    );

    let url = s3.url(&unique("secrets-lib"));
    let root = Root::with_options(&url, &options).unwrap();
    for shown in [format!("{root:?}"), format!("{root}"), root.display()] {
        assert!(
            !shown.contains(&s3.secret) && !shown.contains(TOKEN),
            "{shown}"
        );
    }
    let m = CheckpointManager::with_storage(&url, FileFormat::Jsonl, &options).unwrap();
    let shown = format!("{m:?}");
    assert!(
        !shown.contains(&s3.secret) && !shown.contains(TOKEN),
        "{shown}"
    );

    // Credentials written into the URL itself are not shown either.
    let with_creds = format!(
        "s3://{}:{}@{}/p?token={TOKEN}",
        s3.key_id, s3.secret, s3.bucket
    );
    match Root::with_options(&with_creds, &options) {
        Ok(root) => {
            for shown in [
                format!("{root:?}"),
                format!("{root}"),
                root.describe("x.jsonl"),
            ] {
                assert!(
                    !shown.contains(&s3.secret) && !shown.contains(TOKEN),
                    "{shown}"
                );
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                !shown.contains(&s3.secret) && !shown.contains(TOKEN),
                "{shown}"
            );
        }
    }

    // Errors: a bad option, a value without a key, a closed port.
    let mut o = StorageOptions::default();
    let e = o.set(&s3.secret).unwrap_err().to_string();
    assert!(!e.contains(&s3.secret), "{e}");
    let mut bad = s3.options();
    bad.set(&format!("aws_secrett={}", s3.secret)).unwrap();
    let e = Root::with_options(&url, &bad).unwrap_err().to_string();
    assert!(!e.contains(&s3.secret) && e.contains("aws_secrett"), "{e}");
    let mut closed = s3.via("http://127.0.0.1:9").options();
    for kv in ["retry_max=1", "retry_timeout=2", "request_timeout=2"] {
        closed.set(kv).unwrap();
    }
    closed.set(&format!("aws_session_token={TOKEN}")).unwrap();
    let m = CheckpointManager::with_storage(&url, FileFormat::Jsonl, &closed).unwrap();
    let e = m
        .save("summaries", &[ckpt::ops::generate::summary(0, 2, 1)])
        .await
        .unwrap_err();
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(
            !shown.contains(&s3.secret) && !shown.contains(TOKEN),
            "{shown}"
        );
    }
}
