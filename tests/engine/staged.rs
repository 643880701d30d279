//! Staged files (`name#N`) that killed writers leave beside a checkpoint on local disk are
//! removed by the next write of that checkpoint and by `ckpt ls` of the root; a live
//! writer's staged file is never touched (another process holds its lock), and a write of
//! one checkpoint leaves the staged files of the others alone. The rule is in
//! `crates/ckpt-storage/src/durable.rs`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ckpt::durable::is_staged_name;
use ckpt::{CheckpointManager, ConversationSummary};

use crate::common::{self, ckpt, ckpt_cmd, s};

/// The staged files in `dir`, with their sizes.
fn staged(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| is_staged_name(&e.file_name().to_string_lossy()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn plant(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"half a checkpoint: its writer was killed").unwrap();
    p
}

/// `ckpt ls ROOT`, which must succeed and list exactly `files`.
fn ls(dir: &Path, files: &[&str]) -> String {
    let r = ckpt(["ls", &s(dir)]).expect_ok("ckpt ls");
    let listed = common::listed_names(&r.stdout);
    let mut want = files.to_vec();
    want.sort();
    assert_eq!(listed, want, "ckpt ls shows\n{}", r.stdout);
    r.stderr
}

/// Sources: `big` (large enough that a convert to JSONL runs for a while, writing as it
/// goes) and `small`, both Parquet; and `dst` holding `summaries.jsonl` from `small`.
struct Setup {
    _work: tempfile::TempDir,
    big: PathBuf,
    small: PathBuf,
    dst: PathBuf,
}

fn setup(big_summaries: usize) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big");
    let small = work.path().join("small");
    let dst = work.path().join("dst");
    for (dir, n, dim) in [(&big, big_summaries, 384), (&small, 40, 8)] {
        ckpt([
            "generate",
            &s(dir),
            "--summaries",
            &n.to_string(),
            "--dim",
            &dim.to_string(),
            "--no-conversations",
            "--format",
            "parquet",
        ])
        .expect_ok("generate");
    }
    std::fs::create_dir_all(&dst).unwrap();
    ckpt([
        "convert",
        "-q",
        &s(&small.join("summaries.parquet")),
        &s(&dst.join("summaries.jsonl")),
    ])
    .expect_ok("the previous checkpoint");
    Setup {
        _work: work,
        big,
        small,
        dst,
    }
}

/// `ckpt convert big/summaries.parquet dst/summaries.jsonl`, running.
fn start_convert(st: &Setup) -> Child {
    ckpt_cmd()
        .args([
            "convert",
            "-q",
            &s(&st.big.join("summaries.parquet")),
            &s(&st.dst.join("summaries.jsonl")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether another process holds the lock of a staged file: its writer is alive.
fn locked(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Waits until the running convert has a staged file with data in it (locked: not one a
/// dead writer left); None if it finished first.
fn wait_for_staged(child: &mut Child, dir: &Path) -> Option<String> {
    let start = Instant::now();
    loop {
        for (name, len) in staged(dir) {
            if len > 0 && locked(&dir.join(&name)) {
                return Some(name);
            }
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no staged file appeared"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGKILLs a convert while it writes; returns the staged file it leaves (checked to be
/// there, with data, after the process is gone).
fn kill_mid_write(st: &Setup) -> String {
    for _ in 0..5 {
        let mut child = start_convert(st);
        let Some(name) = wait_for_staged(&mut child, &st.dst) else {
            continue;
        };
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            continue; // finished just before the kill
        }
        if staged(&st.dst)
            .iter()
            .any(|(n, len)| *n == name && *len > 0)
        {
            return name;
        }
        // Killed after its rename: it left nothing. Again.
    }
    panic!("no convert was killed while its staged file held data");
}

fn rows(dir: &Path) -> Vec<ConversationSummary> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        CheckpointManager::parquet(&s(dir))
            .unwrap()
            .load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap()
    })
}

fn save_jsonl(dir: &Path, name: &str, rows: &[ConversationSummary]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        CheckpointManager::jsonl(&s(dir))
            .unwrap()
            .save(name, rows)
            .await
            .unwrap();
    });
}

#[test]
fn a_killed_converts_staged_file_goes_with_the_next_write_and_with_ls() {
    let st = setup(3000);
    let small_rows = rows(&st.small);

    // Killed twice: the second convert, a write of the same checkpoint, removed what the
    // first left (with the defect both stay, and every kill adds one).
    let first = kill_mid_write(&st);
    assert_eq!(staged(&st.dst).len(), 1, "{:?}", staged(&st.dst));
    // Renamed out of the way, so that the second writer's file is told from it by name.
    std::fs::rename(st.dst.join(&first), st.dst.join("summaries.jsonl#90")).unwrap();
    let second = kill_mid_write(&st);
    let left = staged(&st.dst);
    assert_eq!(
        left.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [second.as_str()],
        "the first killed writer's file outlived the second write"
    );

    // The next save of that checkpoint removes them.
    save_jsonl(&st.dst, "summaries", &small_rows);
    assert_eq!(staged(&st.dst), [], "after the next save");

    // So does the next convert onto it.
    kill_mid_write(&st);
    ckpt([
        "convert",
        "-q",
        &s(&st.small.join("summaries.parquet")),
        &s(&st.dst.join("summaries.jsonl")),
    ])
    .expect_ok("a later convert");
    assert_eq!(staged(&st.dst), [], "after the next convert");

    // And `ckpt ls` of the root, which reports what it removed at debug level.
    let name = kill_mid_write(&st);
    let r = ckpt_cmd()
        .args(["ls", &s(&st.dst)])
        .env("CKPT_LOG", "ckpt_storage=debug")
        .output()
        .unwrap();
    assert!(r.status.success());
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("removed") && stderr.contains(&name),
        "ls logs the removal of {name}:\n{stderr}"
    );
    assert_eq!(staged(&st.dst), [], "after ckpt ls");
    ls(&st.dst, &["summaries.jsonl"]);

    // A simulated dead writer (data, no lock) goes the same ways.
    plant(&st.dst, "summaries.jsonl#7");
    save_jsonl(&st.dst, "summaries", &small_rows);
    assert_eq!(staged(&st.dst), [], "a planted one, after a save");
    plant(&st.dst, "summaries.jsonl#7");
    ls(&st.dst, &["summaries.jsonl"]);
    assert_eq!(staged(&st.dst), [], "a planted one, after ckpt ls");
}

/// A staged file as a live writer holds it: created, locked, then written.
fn hold(dir: &Path, name: &str) -> (File, PathBuf) {
    let p = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    f.lock().unwrap();
    f.write_all(b"being written by a live writer").unwrap();
    (f, p)
}

#[test]
fn a_live_writers_staged_file_survives_a_concurrent_save_convert_and_ls() {
    let st = setup(10);
    let small_rows = rows(&st.small);
    let (held, p) = hold(&st.dst, "summaries.jsonl#1");

    save_jsonl(&st.dst, "summaries", &small_rows); // in this process
    ckpt([
        "convert",
        "-q",
        &s(&st.small.join("summaries.parquet")),
        &s(&st.dst.join("summaries.jsonl")),
    ])
    .expect_ok("a convert beside a live writer"); // in another
    ls(&st.dst, &["summaries.jsonl"]);
    assert_eq!(
        std::fs::read(&p).unwrap(),
        b"being written by a live writer",
        "a live writer's staged file was touched"
    );

    // Its writer gone (the lock released with it), the next ls removes it.
    drop(held);
    ls(&st.dst, &["summaries.jsonl"]);
    assert!(!p.exists());
}

#[test]
fn a_paused_convert_survives_ls_and_a_concurrent_save_and_then_lands() {
    let st = setup(3000);
    // What the convert writes, for comparison.
    let reference = tempfile::tempdir().unwrap();
    ckpt([
        "convert",
        "-q",
        &s(&st.big.join("summaries.parquet")),
        &s(&reference.path().join("summaries.jsonl")),
    ])
    .expect_ok("the reference convert");
    let want = std::fs::read(reference.path().join("summaries.jsonl")).unwrap();

    let small_rows = rows(&st.small);
    for attempt in 0.. {
        assert!(
            attempt < 5,
            "the convert always finished before it was paused"
        );
        let mut child = start_convert(&st);
        let Some(name) = wait_for_staged(&mut child, &st.dst) else {
            continue;
        };
        let pid = child.id().to_string();
        let signal = |sig: &str| {
            let ok = std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig} {pid}");
        };
        signal("-STOP");
        if !staged(&st.dst).iter().any(|(n, _)| *n == name) {
            // Paused after its rename: nothing staged to watch. Again.
            signal("-CONT");
            assert!(child.wait().unwrap().success());
            continue;
        }
        // Paused mid-write, alive: its staged file stays through a save and an ls.
        save_jsonl(&st.dst, "summaries", &small_rows);
        ls(&st.dst, &["summaries.jsonl"]);
        assert!(
            staged(&st.dst).iter().any(|(n, _)| *n == name),
            "a paused writer's staged file {name} was removed: {:?}",
            staged(&st.dst)
        );
        signal("-CONT");
        assert!(
            child.wait().unwrap().success(),
            "the resumed convert failed"
        );
        assert!(
            std::fs::read(st.dst.join("summaries.jsonl")).unwrap() == want,
            "the resumed convert did not land whole"
        );
        assert_eq!(staged(&st.dst), []);
        break;
    }
}

#[test]
fn a_write_leaves_the_staged_files_of_other_checkpoints() {
    let st = setup(10);
    let small_rows = rows(&st.small);
    let others = [
        "clusters.jsonl#1",
        "summaries.parquet#2",
        "meta_clusters.jsonl#5",
        "summaries.jsonl.bak#1",
    ];
    for n in others {
        plant(&st.dst, n);
    }
    plant(&st.dst, "summaries.jsonl#3");

    save_jsonl(&st.dst, "summaries", &small_rows);
    let mut want: Vec<String> = others.iter().map(|n| n.to_string()).collect();
    want.sort();
    let names = |dir: &Path| -> Vec<String> { staged(dir).into_iter().map(|(n, _)| n).collect() };
    assert_eq!(names(&st.dst), want, "after a save of summaries.jsonl");
    ckpt([
        "convert",
        "-q",
        &s(&st.small.join("summaries.parquet")),
        &s(&st.dst.join("summaries.jsonl")),
    ])
    .expect_ok("a convert");
    assert_eq!(names(&st.dst), want, "after a convert to summaries.jsonl");

    // `ckpt ls` cleans the whole root, of staged checkpoint files only: a name that merely
    // looks staged (`summaries.jsonl.bak#1` is no checkpoint file) is the user's.
    ls(&st.dst, &["summaries.jsonl"]);
    let left: Vec<String> = staged(&st.dst).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, ["summaries.jsonl.bak#1"]);
}
