//! Names and targets that would write outside the root are refused, and nothing is written
//! outside it: `..`, absolute paths, NUL and control characters, names longer than 512
//! bytes, percent-encoded dots, reserved temporary names, and symlinks inside the root that
//! lead out of it (for COPY, manager saves, deletes, `ckpt generate` and `ckpt convert`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ckpt::ops::generate::summary;
use ckpt::{CheckpointError, CheckpointManager, ConversationSummary, Error, Root};

use crate::common::{Run, S3, ckpt, ckpt_cmd, run, s, unique, write_jsonl};

/// A root beside a directory that must stay as it is: `outside` holds one victim file and
/// `root/link` is a symlink to `outside`, `root/victim.parquet` and `root/victim.jsonl`
/// symlinks to the victim.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    victim: PathBuf,
    victim_bytes: Vec<u8>,
}

const VICTIM: &[u8] = b"{\"not\": \"yours\"}\n";

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let victim = outside.join("victim.jsonl");
        std::fs::write(&victim, VICTIM).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("victim.parquet")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("victim.jsonl")).unwrap();
        // Something to COPY from.
        ckpt([
            "generate",
            &s(&root),
            "--summaries",
            "10",
            "--dim",
            "4",
            "--no-conversations",
        ])
        .expect_ok("generate");
        Sandbox {
            _dir: dir,
            root,
            outside,
            victim,
            victim_bytes: VICTIM.to_vec(),
        }
    }

    /// Everything below `outside`, recursively (the victim only, unchanged), and nothing
    /// beside the sandbox's two directories.
    fn assert_outside_untouched(&self, what: &str) {
        let mut found = Vec::new();
        let mut stack = vec![self.outside.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                found.push(p);
            }
        }
        assert_eq!(found, vec![self.victim.clone()], "{what}: written outside");
        assert_eq!(
            std::fs::read(&self.victim).unwrap(),
            self.victim_bytes,
            "{what}: the file outside changed"
        );
        let parent = self.root.parent().unwrap();
        let mut siblings: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        siblings.sort();
        assert_eq!(
            siblings,
            ["outside", "root"],
            "{what}: written beside the root"
        );
        // The symlinks are still symlinks (not replaced by files).
        for l in ["link", "victim.parquet", "victim.jsonl"] {
            let m = std::fs::symlink_metadata(self.root.join(l)).unwrap();
            assert!(m.file_type().is_symlink(), "{what}: {l} was replaced");
        }
    }

    fn abs_outside(&self, file: &str) -> String {
        s(&self.outside.join(file))
    }
}

fn long_name(len: usize) -> String {
    let mut n = String::new();
    while n.len() < len {
        n.push_str("abcdefghij/");
    }
    n.push('x');
    n
}

/// Names a manager must refuse, with a word of the reason.
fn hostile_names(sb: &Sandbox) -> Vec<(String, &'static str)> {
    vec![
        ("../x".into(), "'..'"),
        ("../outside/x".into(), "'..'"),
        ("a/../../x".into(), "'..'"),
        ("a/./x".into(), "'.'"),
        ("%2e%2e/x".into(), "'%'"),
        ("%2E%2E/outside/x".into(), "'%'"),
        ("..%2fx".into(), "'%'"),
        (sb.abs_outside("x"), "absolute"),
        ("/etc/ckpt-test".into(), "absolute"),
        ("C:/x".into(), "absolute"),
        ("\\\\server\\share\\x".into(), ""),
        ("..\\x".into(), "backslash"),
        ("a\0b".into(), "NUL"),
        ("a\nb".into(), "control"),
        ("a//b".into(), "empty"),
        ("a/".into(), "empty"),
        ("".into(), "empty"),
        (long_name(600), "512"),
        ("y".repeat(300), "255"),
        ("summaries#1".into(), "#"),
        (".hidden".into(), "'.'"),
        ("link/x".into(), "symlink"),
        ("link/deeper/x".into(), "symlink"),
        ("victim".into(), "symlink"),
    ]
}

fn assert_invalid_name(err: &Error, name: &str, word: &str, what: &str) {
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::InvalidName { .. })),
        "{what} {name:?}: not an invalid-name error: {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("invalid checkpoint name"),
        "{what} {name:?}: {msg}"
    );
    assert!(msg.contains(word), "{what} {name:?}: no {word:?} in {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_refuse_names_that_leave_the_root() {
    let sb = Sandbox::new();
    let rows: Vec<ConversationSummary> = (0..3).map(|i| summary(i, 4, 1)).collect();
    for m in [
        CheckpointManager::jsonl(&s(&sb.root)).unwrap(),
        CheckpointManager::parquet(&s(&sb.root)).unwrap(),
    ] {
        let fmt = m.format();
        for (name, word) in hostile_names(&sb) {
            let what = format!("{fmt} save");
            match m.save(&name, &rows).await {
                Err(err) => assert_invalid_name(&err, &name, word, &what),
                Ok(_) => panic!("{what} {name:?} was accepted"),
            }
            sb.assert_outside_untouched(&format!("{what} {name:?}"));

            // Reads, deletes and probes refuse the same names, or find nothing.
            assert!(
                !matches!(m.load::<ConversationSummary>(&name).await, Ok(Some(_))),
                "{fmt} load {name:?}"
            );
            if name == "victim" {
                continue; // a symlink inside the root: deleting it is checked below
            }
            let deleted = m.delete(&name).await;
            assert!(
                deleted.is_err() || deleted.as_ref().ok() == Some(&false),
                "{fmt} delete {name:?}: {deleted:?}"
            );
            let _ = m.exists(&name).await;
            let _ = m.size(&name).await;
            sb.assert_outside_untouched(&format!("{fmt} delete {name:?}"));
        }
        // A delete through `..` of the file outside is refused; so is one through the link.
        for name in ["../outside/victim", "link/victim"] {
            let res = m.delete(name).await;
            assert!(
                res.is_err() || res.as_ref().ok() == Some(&false),
                "{fmt} delete {name:?}: {res:?}; the file outside exists: {}",
                sb.victim.exists()
            );
        }
        sb.assert_outside_untouched("deletes");
        // Deleting the symlink `victim.<ext>` itself removes the link (an entry of the
        // root), never the file it points to.
        if m.delete("victim").await.unwrap() {
            let link = sb.root.join(m.file_name("victim").unwrap());
            assert!(std::fs::symlink_metadata(&link).is_err());
            std::os::unix::fs::symlink(&sb.victim, &link).unwrap();
        }
        sb.assert_outside_untouched("deleting a symlink");
        // Ordinary names still work.
        m.save("run1/summaries", &rows).await.unwrap();
        assert_eq!(
            m.load::<ConversationSummary>("run1/summaries")
                .await
                .unwrap()
                .unwrap(),
            rows
        );
    }
    sb.assert_outside_untouched("the end");
}

/// COPY targets through the CLI with `--sandbox` (and stdin, for a NUL). Without it, the
/// person at the shell may write anywhere (tests/cli.rs, `copy_writes_where_the_target_says`).
#[test]
fn copy_refuses_targets_that_leave_the_root() {
    let sb = Sandbox::new();
    let root = s(&sb.root);
    let outside_abs = sb.abs_outside("x.parquet");
    let long = format!("{}.parquet", long_name(600));
    let long_component = format!("{}.parquet", "z".repeat(300));
    let targets: Vec<(&str, &str)> = vec![
        ("../x.parquet", "'..'"),
        ("../outside/x.parquet", "'..'"),
        ("a/../../x.parquet", "'..'"),
        ("%2e%2e/outside/x.parquet", "'%'"),
        ("%2e%2e%2foutside%2fx.parquet", "'%'"),
        (&outside_abs, "absolute"),
        ("~/ckpt-test-x.parquet", "absolute"),
        ("..\\x.parquet", "backslash"),
        (&long, "512"),
        (&long_component, "255"),
        ("x#1.parquet", "#"),
        (".x.parquet", "'.'"),
        ("link/x.parquet", "symlink"),
        ("link/deeper/x.parquet", "symlink"),
        ("link/", "symlink"),
        ("victim.parquet", "symlink"),
    ];
    for (target, word) in &targets {
        for stored in ["PARQUET", "JSON", "CSV"] {
            let t = if *target == "victim.parquet" && stored == "JSON" {
                "victim.jsonl"
            } else {
                target
            };
            let sql = format!("COPY (SELECT chat_id FROM summaries) TO '{t}' STORED AS {stored}");
            let r = ckpt(["query", "--sandbox", &root, &sql]).expect_err(&sql);
            assert!(
                r.stderr.contains("invalid checkpoint name") && r.stderr.contains(word),
                "{sql}: no {word:?} in:\n{}",
                r.stderr
            );
            sb.assert_outside_untouched(&sql);
        }
    }
    // A NUL in the target, through standard input.
    let mut child = ckpt_cmd()
        .args(["query", "--sandbox", &root])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"COPY (SELECT 1 AS a) TO 'a\0b.parquet' STORED AS PARQUET;\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NUL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    sb.assert_outside_untouched("NUL target");

    // Inside the root, a COPY still works.
    ckpt([
        "query",
        "--sandbox",
        &root,
        "COPY (SELECT chat_id FROM summaries) TO 'sub/ok.parquet' STORED AS PARQUET",
    ])
    .expect_ok("a normal COPY");
    assert!(sb.root.join("sub/ok.parquet").is_file());
    sb.assert_outside_untouched("the end");
}

/// The writers of `ckpt generate` and `ckpt convert` refuse a destination that is a symlink
/// out of the root.
#[test]
fn generate_and_convert_do_not_follow_symlinks_out() {
    let sb = Sandbox::new();
    // generate writes summaries.jsonl first: make it a link to the victim.
    let gen_root = sb.root.join("gen");
    std::fs::create_dir_all(&gen_root).unwrap();
    std::os::unix::fs::symlink(&sb.victim, gen_root.join("summaries.jsonl")).unwrap();
    let r = ckpt(["generate", &s(&gen_root), "--summaries", "5"]).expect_err("generate");
    assert!(r.stderr.contains("symlink"), "{}", r.stderr);
    sb.assert_outside_untouched("generate");

    // convert into a root whose summaries.parquet links out.
    let dst = sb.root.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::os::unix::fs::symlink(&sb.victim, dst.join("summaries.parquet")).unwrap();
    let src = s(&sb.root.join("summaries.jsonl"));
    let r: Run = ckpt(["convert", "-q", &src, &s(&dst.join("summaries.parquet"))]);
    let r = r.expect_err("convert to a file");
    assert!(r.stderr.contains("symlink"), "{}", r.stderr);
    let r = ckpt(["convert", "-q", &s(&sb.root), &s(&dst), "--to", "parquet"]);
    r.expect_err("convert a root");
    sb.assert_outside_untouched("convert");
}

/// On S3 the same names are refused and nothing appears beside the root's prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_roots_refuse_the_same_names() {
    let s3 = S3::from_env();
    let base = unique("hostile");
    let root_url = s3.url(&format!("{base}/root"));
    let m =
        CheckpointManager::with_storage(&root_url, ckpt::FileFormat::Jsonl, &s3.options()).unwrap();
    let rows: Vec<ConversationSummary> = (0..2).map(|i| summary(i, 4, 1)).collect();
    for name in [
        "../x",
        "../outside/x",
        "a/../../x",
        "%2e%2e/x",
        "/abs/x",
        "a\0b",
        "x#1",
        &long_name(600),
    ] {
        let err = m.save(name, &rows).await.unwrap_err();
        assert!(
            matches!(err, Error::Checkpoint(CheckpointError::InvalidName { .. })),
            "s3 save {name:?}: {err}"
        );
    }
    // COPY targets on an S3 root.
    m.save("summaries", &rows).await.unwrap();
    let mut args = s3.cli_args();
    args.extend([
        "query".to_owned(),
        "--sandbox".to_owned(),
        root_url.clone(),
        "COPY (SELECT chat_id FROM summaries) TO '../x.parquet' STORED AS PARQUET".to_owned(),
    ]);
    let r = run(ckpt_cmd().args(&args)).expect_err("s3 COPY ..");
    assert!(r.stderr.contains("invalid checkpoint name"), "{}", r.stderr);

    // Only root/summaries.jsonl exists under the test's prefix.
    let all = Root::with_options(&s3.url(&base), &s3.options()).unwrap();
    let mut keys: Vec<String> = Vec::new();
    {
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from(base.as_str());
        let listed: Vec<object_store::ObjectMeta> =
            all.store().list(Some(&prefix)).try_collect().await.unwrap();
        keys.extend(listed.into_iter().map(|m| m.location.to_string()));
    }
    assert_eq!(keys, vec![format!("{base}/root/summaries.jsonl")]);
}

// ---- Names a user types: accepted means visible everywhere, refused means nothing written --

/// Every file (local) or key (S3) under a root, as names relative to it, sorted.
async fn everything_under(root: &Root) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = root.prefix().clone();
    let listed: Vec<object_store::ObjectMeta> = root
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .unwrap_or_default();
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|m| root.name_of(&m.location))
        .collect();
    if let Some(dir) = root
        .local_path("x")
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        // Directories too (an empty parts directory is something left behind), and hidden
        // files, which the store's listing skips.
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                if path.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(&path, base, out);
                } else {
                    out.push(rel);
                }
            }
        }
        names.clear();
        walk(&dir, &dir, &mut names);
    }
    names.sort();
    names.dedup();
    names
}

/// `ckpt ls ROOT --format json` as JSON entries (the exit code is checked by the caller).
fn ls_entries(cli: &[String], root: &str) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut args = cli.to_vec();
    args.extend(["ls".into(), root.into(), "--format".into(), "json".into()]);
    let r = run(ckpt_cmd().args(&args));
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("ls json: {e}: {r:?}"));
    (r.code, v)
}

fn query(cli: &[String], root: &str, sql: &str) -> Run {
    let mut args = cli.to_vec();
    args.extend([
        "query".into(),
        root.into(),
        sql.into(),
        "--format".into(),
        "csv".into(),
    ]);
    run(ckpt_cmd().args(&args))
}

/// Names with spaces and any Unicode work everywhere (append, COPY in both formats, saves):
/// stored under the name as typed, listed by `ls` with their rows, queryable by that name;
/// names that listings would hide (a leading `_`) or that table paths read as patterns are
/// refused before anything is written. A refused or failed write leaves nothing behind.
async fn names_users_type(root_url: &str, cli: &[String], storage: &ckpt::StorageOptions) {
    let root = Root::with_options(root_url, storage).unwrap();
    let m = CheckpointManager::with_storage(root_url, ckpt::FileFormat::Jsonl, storage).unwrap();
    let rows: Vec<ConversationSummary> = (0..3).map(|i| summary(i, 4, 1)).collect();
    m.save("summaries", &rows).await.unwrap();
    let input = tempfile::tempdir().unwrap();
    let file = input.path().join("batch.jsonl");
    write_jsonl(&file, &rows);
    let bad = input.path().join("bad.jsonl");
    std::fs::write(&bad, b"{\"chat_id\": \"x\"}\n").unwrap();
    let with = |args: &[&str]| -> Vec<String> {
        let mut v = cli.to_vec();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };

    for name in ["my file", "résumé", "日本語 要約", "a-b.c d"] {
        let what = format!("{root_url}: {name:?}");
        run(ckpt_cmd().args(with(&["append", root_url, name, file.to_str().unwrap()])))
            .expect_ok(&format!("{what}: append"));
        m.save(&format!("{name} saved"), &rows).await.unwrap();
        let copied = format!("{name} copied");
        for ext in ["jsonl", "parquet"] {
            query(
                cli,
                root_url,
                &format!("COPY summaries TO '{copied}.{ext}'"),
            )
            .expect_ok(&format!("{what}: COPY to .{ext}"));
        }
        // Stored under the name as typed: no percent-encoded twin, no staging file left.
        let stored = everything_under(&root).await;
        assert!(
            stored
                .iter()
                .any(|k| k.starts_with(&format!("{name}.jsonl.parts/"))),
            "{what}: the part is not stored under its name: {stored:?}"
        );
        assert!(
            stored
                .iter()
                .all(|k| !k.contains('%') && !k.contains("ckpt-staging")),
            "{what}: {stored:?}"
        );
        // Listed, with rows and no error; queryable by the name.
        let (code, listed) = ls_entries(cli, root_url);
        assert_eq!(code, Some(0), "{what}: ls {listed:?}");
        for (table, file) in [
            (name.to_owned(), format!("{name}.jsonl")),
            (format!("{name} saved"), format!("{name} saved.jsonl")),
            (format!("{copied}.jsonl"), format!("{copied}.jsonl")),
            (format!("{copied}.parquet"), format!("{copied}.parquet")),
        ] {
            let e = listed
                .iter()
                .find(|e| e["file"] == file.as_str())
                .unwrap_or_else(|| panic!("{what}: {file} not listed: {listed:?}"));
            assert_eq!(e["rows"], 3, "{what}: {e}");
            assert!(e.get("error").is_none(), "{what}: {e}");
            let r = query(
                cli,
                root_url,
                &format!("SELECT count(*) AS n FROM \"{table}\""),
            )
            .expect_ok(&format!("{what}: query {table}"));
            assert_eq!(r.stdout.trim(), "n\n3", "{what}: {table}");
        }
        let loaded: Vec<ConversationSummary> =
            m.load(&format!("{name} saved")).await.unwrap().unwrap();
        assert_eq!(loaded.len(), 3, "{what}");
    }

    // Refused up front, by every writer: nothing stored, nothing made.
    let before = everything_under(&root).await;
    for name in ["_batch", "sub/_x", "star*", "what?", "set[1]"] {
        let what = format!("{root_url}: {name:?}");
        let r = run(ckpt_cmd().args(with(&["append", root_url, name, file.to_str().unwrap()])))
            .expect_err(&format!("{what}: append"));
        assert!(
            r.stderr.contains("invalid checkpoint name"),
            "{what}: {}",
            r.stderr
        );
        let err = m.save(name, &rows).await.unwrap_err();
        assert!(
            matches!(err, Error::Checkpoint(CheckpointError::InvalidName { .. })),
            "{what}: save: {err}"
        );
        let r = query(
            cli,
            root_url,
            &format!("COPY summaries TO '{name}.parquet'"),
        )
        .expect_err(&format!("{what}: COPY"));
        assert!(
            r.stderr.contains("invalid checkpoint name"),
            "{what}: {}",
            r.stderr
        );
    }
    // A failed append (a row Kura would refuse) leaves no parts directory behind.
    run(ckpt_cmd().args(with(&[
        "append",
        root_url,
        "summaries",
        bad.to_str().unwrap(),
    ])))
    .expect_err("a bad row");
    assert_eq!(
        everything_under(&root).await,
        before,
        "{root_url}: a refused write left something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_users_type_work_everywhere_or_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    names_users_type(
        root.to_str().unwrap(),
        &[],
        &ckpt::StorageOptions::default(),
    )
    .await;
    // On disk, under the names as typed.
    assert!(root.join("résumé.jsonl.parts").is_dir());
    assert!(root.join("日本語 要約 copied.parquet").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_users_type_work_everywhere_or_are_refused_up_front_on_s3() {
    let s3 = S3::from_env();
    let root_url = s3.url(&unique("names"));
    names_users_type(&root_url, &s3.cli_args(), &s3.options()).await;
}

// ---- One bad entry never breaks a root; `ls` says what a read would say -------------------

#[test]
fn one_bad_entry_is_listed_with_its_error_and_the_rest_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = s(&root);
    ckpt([
        "generate",
        &r,
        "--summaries",
        "20",
        "--dim",
        "4",
        "--no-conversations",
    ])
    .expect_ok("generate");
    // A symlink to itself, a directory link to the root (a loop when walked), a link to
    // nothing.
    std::os::unix::fs::symlink("loop.jsonl", root.join("loop.jsonl")).unwrap();
    std::os::unix::fs::symlink(".", root.join("cyc")).unwrap();
    std::os::unix::fs::symlink("missing.parquet", root.join("gone.parquet")).unwrap();
    let (code, listed) = ls_entries(&[], &r);
    assert_eq!(
        code,
        Some(1),
        "ls exits 1 when an entry cannot be read: {listed:?}"
    );
    for file in ["loop.jsonl", "cyc/", "gone.parquet"] {
        let e = listed
            .iter()
            .find(|e| e["file"] == file)
            .unwrap_or_else(|| panic!("{file} not listed: {listed:?}"));
        let error = e["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no error: {e}"));
        assert!(
            error.contains(file.trim_end_matches('/')),
            "{file}: {error}"
        );
    }
    for file in ["summaries.jsonl", "clusters.jsonl", "meta_clusters.jsonl"] {
        let e = listed.iter().find(|e| e["file"] == file).unwrap();
        assert!(e.get("error").is_none(), "{e}");
    }
    let q = query(&[], &r, "SELECT count(*) AS n FROM summaries").expect_ok("query");
    assert_eq!(q.stdout.trim(), "n\n20");
    let q = query(&[], &r, "SELECT count(*) FROM loop").expect_err("query of the loop");
    assert!(q.stderr.contains("loop.jsonl"), "{}", q.stderr);
    // The text listing too.
    let t = ckpt(["ls", &r]);
    assert_eq!(t.code, Some(1), "{t:?}");
    assert!(t.stdout.contains("summaries"), "{}", t.stdout);
}

#[test]
fn ls_applies_the_checks_a_read_applies_and_counts_as_a_read_counts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let r = s(&root);
    // A summaries Parquet file whose columns are no summaries' (a score stored as text).
    query(
        &[],
        &r,
        "COPY (SELECT 'c1' AS chat_id, 's' AS summary, 'high' AS concerning_score) \
         TO 'summaries.parquet' STORED AS PARQUET",
    )
    .expect_ok("a foreign Parquet file");
    // A JSONL file holding only a byte order mark, and an empty one of no kind.
    std::fs::write(root.join("clusters.jsonl"), "\u{feff}").unwrap();
    std::fs::write(root.join("notes.jsonl"), "").unwrap();
    let (code, listed) = ls_entries(&[], &r);
    assert_eq!(code, Some(1), "{listed:?}");
    let entry = |file: &str| listed.iter().find(|e| e["file"] == file).unwrap().clone();
    let bad = entry("summaries.parquet");
    assert!(
        bad["error"].as_str().is_some(),
        "ls lists a file no query reads: {bad}"
    );
    let q = query(&[], &r, "SELECT count(*) FROM summaries").expect_err("query");
    assert!(q.stderr.contains("summaries.parquet"), "{}", q.stderr);
    // One count: what ls says is what count(*) says.
    for (file, table) in [("clusters.jsonl", "clusters"), ("notes.jsonl", "notes")] {
        let e = entry(file);
        assert!(e.get("error").is_none(), "{e}");
        assert_eq!(e["rows"], 0, "{e}");
        let q = query(&[], &r, &format!("SELECT count(*) AS n FROM \"{table}\"")).expect_ok(file);
        assert_eq!(q.stdout.trim(), "n\n0", "{file}");
    }
}
