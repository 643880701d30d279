//! SIGKILL at random moments never costs the previous checkpoint.
//!
//! `ckpt convert` (JSONL → Parquet and Parquet → JSONL, over an existing destination) and
//! `ckpt generate` (whose writes are the library's manager saves) are killed after a seeded
//! random delay between 0 and the time a normal run takes, measured first. After every
//! kill each destination checkpoint is byte for byte the previous one or the complete new
//! one, loads whole through the library, and no temporary shows up in `ckpt ls`, in the
//! catalog (`information_schema.tables`) or in `CheckpointManager::list`. Local temporaries
//! left by a kill (staged `name#N` files) never outlive the next write of their checkpoint
//! and `ckpt ls`, and a later save still succeeds.
//! At least 50 kills on local disk and 20 on S3 (moto) for convert, plus kills of
//! `ckpt generate` on both.
//!
//! A kill counts as landed in the middle of a write only by evidence looked at after the
//! process is dead: on local disk, a staged file the killed run created itself (`NAME#N`,
//! or COPY's `.NAME.ckpt-staging-PID-NANOS` with its process id) still there, with data;
//! on S3, its multipart upload still pending on the server. The counts are printed; kills
//! aimed at the write must land there at least 30 % of the time.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ckpt::{Cluster, Conversation, ConversationSummary, FileFormat, ProjectedCluster};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{self, Place, S3, ckpt, s, unique};

/// What the crash tests also ask of a place.
impl Place {
    fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }
    async fn get(&self, name: &str) -> Option<Vec<u8>> {
        let root = self.root();
        root.head(name).await.unwrap()?;
        Some(root.get(name).await.unwrap().to_vec())
    }
    /// Puts `bytes` back as `name` (atomically, through the same writer as every save).
    async fn restore(&self, name: &str, bytes: &[u8]) {
        let mut w = self.root().writer(name).unwrap();
        w.write(bytes::Bytes::copy_from_slice(bytes)).await.unwrap();
        w.commit().await.unwrap();
    }
    /// On S3: the multipart uploads under the root that were started and neither
    /// completed nor aborted, each then aborted by this call (so each is seen once, and
    /// the next run starts with none); returns the file name (relative to the root) of
    /// each one this call aborted. One whose abort fails (it was completed meanwhile by a
    /// request its killed writer had sent whole) is not returned. Local disk: none.
    fn abandoned_uploads(&self) -> Vec<String> {
        let Some((s3, prefix)) = &self.s3 else {
            return vec![];
        };
        let script = r#"
prefix = os.environ["PREFIX"]
r = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
for u in r.get("Uploads", []):
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    except botocore.exceptions.ClientError:
        continue
    print(u["Key"][len(prefix):])
"#;
        s3.boto3(script, &[("PREFIX", format!("{prefix}/"))])
    }
    /// Files in the local directory that are not checkpoints: temporaries left by a kill.
    fn leftovers(&self, expected: &[&str]) -> Vec<String> {
        let Some(dir) = &self.local else {
            return vec![];
        };
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !expected.contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }
}

/// On local disk, no staged file (`name#N`) outlives the next write of its checkpoint and
/// `ckpt ls` (which [`assert_only_checkpoints`] runs): what killed writers left is gone.
/// An empty one younger than the grace may stay a moment (a writer between creating and
/// locking its file looks the same); it goes with the next `ckpt ls` after the grace.
async fn assert_no_staged_left(place: &Place, what: &str) {
    let Some(dir) = &place.local else {
        return;
    };
    let staged = || -> Vec<(String, u64)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| ckpt::durable::is_staged_name(&e.file_name().to_string_lossy()))
            .map(|e| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect()
    };
    let left = staged();
    assert!(
        left.iter().all(|(_, len)| *len == 0),
        "{what}: staged files outlived the next write and ckpt ls: {left:?}"
    );
    if !left.is_empty() {
        tokio::time::sleep(ckpt::durable::EMPTY_STAGED_GRACE + Duration::from_secs(1)).await;
        let mut args = place.cli.clone();
        args.extend(["ls".into(), place.root.clone()]);
        ckpt(&args).expect_ok(what);
        let left = staged();
        assert!(
            left.is_empty(),
            "{what}: empty staged files outlived the grace: {left:?}"
        );
    }
}

/// What the visible checkpoints of a place must be, seen three ways.
async fn assert_only_checkpoints(place: &Place, files: &[&str], what: &str) {
    // ckpt ls
    let mut args = place.cli.clone();
    args.extend(["ls".into(), place.root.clone()]);
    let r = ckpt(&args).expect_ok(what);
    let listed = common::listed_names(&r.stdout);
    let mut want = files.to_vec();
    want.sort();
    assert_eq!(listed, want, "{what}: ckpt ls shows\n{}", r.stdout);

    // the catalog
    let session = place.session().await;
    let batches = session
        .sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'root'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut tables: Vec<String> = Vec::new();
    for b in &batches {
        let col = datafusion::arrow::array::AsArray::as_string::<i32>(b.column(0));
        tables.extend(col.iter().map(|v| v.unwrap().to_owned()));
    }
    assert_eq!(tables.len(), files.len(), "{what}: catalog has {tables:?}");
    for t in &tables {
        assert!(
            !t.contains('#') && !t.starts_with('.') && !t.contains("staging"),
            "{what}: a temporary in the catalog: {tables:?}"
        );
    }

    // CheckpointManager::list
    for format in [FileFormat::Jsonl, FileFormat::Parquet] {
        let mut want: Vec<String> = files
            .iter()
            .filter(|f| f.ends_with(&format!(".{}", format.extension())))
            .map(|f| f.to_string())
            .collect();
        want.sort();
        let got = place.manager(format).list().await.unwrap();
        assert_eq!(got, want, "{what}: {format} manager list");
    }
}

/// Starts `ckpt ARGS` and SIGKILLs it after `delay`. Returns whether the kill hit it (as
/// opposed to the run finishing first, successfully).
async fn run_and_kill(args: &[String], delay: Duration) -> bool {
    run_and_kill_watching(args, delay, None).await.killed
}

/// As [`run_and_kill`]; with `watch` (a local directory and the checkpoint files written
/// there), also tells whether the kill cut a write: a staged file of one of them that
/// this run created (see [`own_staged_with_data`]) is still there, with data, once the
/// process is dead.
async fn run_and_kill_watching(
    args: &[String],
    delay: Duration,
    watch: Option<(&Path, &[&str])>,
) -> AimedKill {
    let before = watch.map(|(dir, files)| staged_snapshot(dir, files));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .env_remove("CKPT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().expect("a child that was just started has an id");
    let finished = tokio::time::timeout(delay, child.wait()).await;
    let status = match finished {
        Ok(status) => status.unwrap(),
        Err(_) => {
            child.start_kill().unwrap();
            child.wait().await.unwrap()
        }
    };
    if status.signal() == Some(9) {
        // Looked at only now that the process is dead and reaped: a write it finished
        // (renamed into place) in the last moment before the signal leaves nothing here.
        let mid_write = match (watch, &before) {
            (Some((dir, files)), Some(before)) => {
                !own_staged_with_data(dir, files, before, pid).is_empty()
            }
            _ => false,
        };
        return AimedKill {
            killed: true,
            mid_write,
        };
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        e.read_to_string(&mut err).await.unwrap();
    }
    assert!(
        status.success(),
        "{args:?} failed on its own: {status:?}\n{err}"
    );
    AimedKill {
        killed: false,
        mid_write: false,
    }
}

/// The median time of three complete runs.
async fn typical_run(args: &[String]) -> Duration {
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        assert!(!run_and_kill(args, Duration::from_secs(120)).await);
        times.push(t.elapsed());
    }
    times.sort();
    times[1]
}

/// One destination checkpoint: its previous version and the one a complete run writes.
struct Versions {
    file: &'static str,
    old: Vec<u8>,
    new: Vec<u8>,
    old_rows: Vec<ConversationSummary>,
    new_rows: Vec<ConversationSummary>,
}

async fn load_summaries(place: &Place, file: &str) -> Vec<ConversationSummary> {
    let format = ckpt::format::strip_extension(file).1.unwrap();
    place
        .manager(format)
        .load::<ConversationSummary>(file)
        .await
        .unwrap_or_else(|e| panic!("{file} does not load: {e}"))
        .unwrap_or_else(|| panic!("{file} is gone"))
}

/// A file's bytes and what the library loads from it, read until both describe the same
/// version: on S3 a request the killed process had fully sent (the last part, the PUT) is
/// still applied by the server after the kill, atomically, a moment later. Fails if the
/// file does not settle within [`SETTLE_DEADLINE`].
async fn settled<T, F, Fut>(place: &Place, file: &str, load: F) -> (Option<Vec<u8>>, T)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let before = place.get(file).await;
        let loaded = load().await;
        let after = place.get(file).await;
        if before == after {
            return (before, loaded);
        }
        assert!(
            Instant::now() < deadline,
            "{file} kept changing for {SETTLE_DEADLINE:?} after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a file may keep changing after its writer was killed (a request the server
/// had received completes); far more than moto ever takes.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// How long any single run may take before the test fails instead of waiting on.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The seed of a randomized test: `CKPT_CRASH_SEED` replays a printed one, else `default`.
/// Printed either way, so a failure can be replayed.
fn crash_seed(test: &str, default: u64) -> u64 {
    let seed = match std::env::var("CKPT_CRASH_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("CKPT_CRASH_SEED={v:?} is not a number")),
        Err(_) => default,
    };
    eprintln!("{test}: seed {seed} (replay with CKPT_CRASH_SEED={seed})");
    seed
}

// ---- kills aimed at the write itself ----------------------------------------------------

/// A temporary of a write of `file` in its directory: the durable writer's staged file
/// (`file#N`) or COPY's hidden staging file (`.file.ckpt-staging-...`, itself written
/// through a staged `#N`).
fn is_temporary_of(name: &str, file: &str) -> bool {
    name.strip_prefix(file)
        .and_then(|r| r.strip_prefix('#'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        || name.starts_with(&format!(".{file}.ckpt-staging-"))
}

/// The temporaries of any of `files` in `dir`, each with its inode and size: what was
/// there before a run, to tell the files that run created (see
/// [`own_staged_with_data`]).
fn staged_snapshot(dir: &Path, files: &[&str]) -> BTreeMap<String, (u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok()?;
            files
                .iter()
                .any(|f| is_temporary_of(&name, f))
                .then_some((name, (meta.ino(), meta.len())))
        })
        .collect()
}

/// The temporaries of `files` in `dir` that the run with process id `pid` created and
/// that hold data: the evidence that a kill of that run cut one of its writes, when
/// looked at after its death (a live writer may still rename its file away).
///
/// A run's own file is one that was not in `before` (taken just before the run started),
/// told by name and inode: staged names are numbered from `#1` again once a cleaner has
/// removed an older file, so a name alone could be an earlier kill's. A COPY staging file
/// names its writer (`.NAME.ckpt-staging-PID-NANOS`), which must be `pid`. An empty file
/// is not counted: its writer was killed between creating it and writing a byte, before
/// the write itself.
fn own_staged_with_data(
    dir: &Path,
    files: &[&str],
    before: &BTreeMap<String, (u64, u64)>,
    pid: u32,
) -> Vec<(String, u64)> {
    staged_snapshot(dir, files)
        .into_iter()
        .filter(|(name, (ino, _))| before.get(name).is_none_or(|(was, _)| was != ino))
        .filter(|(name, _)| {
            files
                .iter()
                .filter_map(|f| name.strip_prefix(&format!(".{f}.ckpt-staging-")))
                .all(|rest| rest.split('-').next() == Some(pid.to_string().as_str()))
        })
        .filter(|(_, (_, len))| *len > 0)
        .map(|(name, (_, len))| (name, len))
        .collect()
}

/// The temporaries of `file` in `dir`, with their sizes.
fn temporaries(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            is_temporary_of(&name, file).then_some((name, len))
        })
        .collect()
}

/// What one run did to its writes.
#[derive(Debug)]
struct AimedKill {
    /// Killed (SIGKILL), as opposed to finished first.
    killed: bool,
    /// Killed in the middle of a write, by evidence looked at after its death: its own
    /// staged file still there with data (local disk; see [`own_staged_with_data`]), or
    /// its multipart upload still pending on the server (S3). A staged file merely seen
    /// before the signal is no such evidence: the write may finish (rename) in between.
    mid_write: bool,
}

/// Starts `ckpt ARGS`, waits until a temporary of `file` appears in `dir` that was not
/// there before (the write has begun), then SIGKILLs it after `delay`. Every wait has a
/// deadline; a run that finishes first must have succeeded.
fn run_and_kill_mid_write(args: &[String], dir: &Path, file: &str, delay: Duration) -> AimedKill {
    let before = temporaries(dir, file);
    let staged_before = staged_snapshot(dir, &[file]);
    let new_temporary = || {
        temporaries(dir, file)
            .keys()
            .any(|n| !before.contains_key(n))
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .env_remove("CKPT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{args:?} failed on its own: {status:?}");
            return AimedKill {
                killed: false,
                mid_write: false,
            };
        }
        if new_temporary() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: no temporary of {file} appeared within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(delay);
    // SIGKILL; an error means the run already ended, which its status tells.
    let _ = child.kill();
    let status = child.wait().unwrap();
    if status.signal() == Some(9) {
        // Only now, the process dead and reaped, and before anything writes `file`
        // again: its own staged file, with data, is what it was writing when it died.
        let mid_write = !own_staged_with_data(dir, &[file], &staged_before, pid).is_empty();
        return AimedKill {
            killed: true,
            mid_write,
        };
    }
    assert!(status.success(), "{args:?} failed on its own: {status:?}");
    AimedKill {
        killed: false,
        mid_write: false,
    }
}

/// How long temporaries of `file` exist in a complete run (from the first seen to the last
/// seen), the median of three: kills are aimed into that window.
fn write_window(args: &[String], dir: &Path, file: &str) -> Duration {
    write_windows(args, dir, &[file])[0]
}

/// [`write_window`] of each of `files`, all measured in the same three runs.
fn write_windows(args: &[String], dir: &Path, files: &[&str]) -> Vec<Duration> {
    let mut windows = vec![Vec::new(); files.len()];
    for _ in 0..3 {
        let before: Vec<_> = files.iter().map(|f| temporaries(dir, f)).collect();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ckpt"))
            .args(args)
            .env_remove("CKPT_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + RUN_DEADLINE;
        let mut seen = vec![(None, None); files.len()];
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            for ((file, before), (first, last)) in files.iter().zip(&before).zip(&mut seen) {
                if temporaries(dir, file)
                    .keys()
                    .any(|n| !before.contains_key(n))
                {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    *last = Some(now);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{args:?} ran past {RUN_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_micros(100));
        };
        assert!(status.success(), "{args:?} failed on its own: {status:?}");
        for (w, seen) in windows.iter_mut().zip(seen) {
            w.push(match seen {
                (Some(f), Some(l)) => l - f,
                _ => Duration::ZERO,
            });
        }
    }
    windows
        .into_iter()
        .map(|mut w| {
            w.sort();
            w[1]
        })
        .collect()
}

/// Counts of kills aimed at writes.
#[derive(Debug, Default)]
struct MidWriteCounts {
    kills: usize,
    mid_write: usize,
    /// Of the kills mid-write: the previous version was left / the new one was.
    left_old: usize,
    left_new: usize,
}

impl MidWriteCounts {
    fn record(&mut self, kill: &AimedKill, is_new: bool) {
        if kill.killed {
            self.kills += 1;
            if kill.mid_write {
                self.mid_write += 1;
                if is_new {
                    self.left_new += 1;
                } else {
                    self.left_old += 1;
                }
            }
        }
    }

    /// At least 30 % of the kills landed while the file was being written (by the
    /// evidence of [`AimedKill::mid_write`]).
    fn assert_mid_write_share(&self, what: &str) {
        self.assert_mid_write_left_old(what);
        assert!(
            self.mid_write * 10 >= self.kills * 3 && self.kills > 0,
            "{what}: only {} of {} kills landed mid-write",
            self.mid_write,
            self.kills
        );
    }

    /// Prints the counts; every kill that cut a write left the previous version: the
    /// evidence (a staged file not renamed, an upload not completed) is of a write that
    /// never replaced anything.
    fn assert_mid_write_left_old(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert_eq!(
            self.left_new, 0,
            "{what}: a kill left its write unfinished and yet the new version: {self:?}"
        );
    }
}

/// After the next write of `file`: no temporary a killed writer left beside it holds data
/// (an empty one younger than the grace may be a live writer between create and lock).
fn assert_no_temporary_outlived_the_next_write(dir: &Path, file: &str, what: &str) {
    let left: Vec<_> = temporaries(dir, file)
        .into_iter()
        .filter(|(_, len)| *len > 0)
        .collect();
    assert!(
        left.is_empty(),
        "{what}: temporaries of {file} outlived its next write: {left:?}"
    );
}

/// Checks a destination after a kill; returns true when it holds the new version (which
/// is then replaced by the old one again).
async fn check_and_reset(place: &Place, v: &Versions, what: &str) -> bool {
    let (now, rows) = settled(place, v.file, || load_summaries(place, v.file)).await;
    let now = now.unwrap_or_else(|| panic!("{what}: {} disappeared", v.file));
    let is_new = if now == v.old {
        false
    } else if now == v.new {
        true
    } else {
        panic!(
            "{what}: {} is neither the previous nor the new version ({} bytes; old {}, new {})",
            v.file,
            now.len(),
            v.old.len(),
            v.new.len()
        );
    };
    let want = if is_new { &v.new_rows } else { &v.old_rows };
    assert!(rows == *want, "{what}: {} loads different rows", v.file);
    if is_new {
        place.restore(v.file, &v.old).await;
    }
    is_new
}

/// Kills `ckpt convert` at random moments into `place`, in both directions, until each
/// direction was killed `kills_each` times. Returns (kills, runs that finished first).
async fn convert_kills(place: &Place, kills_each: usize, seed: u64) -> (usize, usize) {
    let work = tempfile::tempdir().unwrap();
    // The new content (seed 1) as JSONL and Parquet sources; the old (seed 2) at `place`.
    let (dim, n) = if place.local.is_some() {
        ("128", "1500")
    } else {
        ("384", "1200") // 10 MB of JSONL: a multipart upload of two parts
    };
    let new_src = work.path().join("new");
    let old_src = work.path().join("old");
    for (dir, seed) in [(&new_src, "1"), (&old_src, "2")] {
        ckpt([
            "generate",
            &s(dir),
            "--summaries",
            n,
            "--dim",
            dim,
            "--seed",
            seed,
            "--no-conversations",
            "--format",
            "both",
        ])
        .expect_ok("generate");
    }
    let mut cli = place.cli.clone();
    cli.push("convert".into());
    cli.push("-q".into());
    for file in ["summaries.parquet", "summaries.jsonl"] {
        let mut a = cli.clone();
        a.extend([s(&old_src.join(file)), place.file(file)]);
        ckpt(&a).expect_ok("the previous checkpoint");
    }
    let jobs: Vec<(Vec<String>, &'static str)> = vec![
        (
            [
                cli.clone(),
                vec![
                    s(&new_src.join("summaries.jsonl")),
                    place.file("summaries.parquet"),
                ],
            ]
            .concat(),
            "summaries.parquet",
        ),
        (
            [
                cli.clone(),
                vec![
                    s(&new_src.join("summaries.parquet")),
                    place.file("summaries.jsonl"),
                ],
            ]
            .concat(),
            "summaries.jsonl",
        ),
    ];
    let old_rows = load_summaries(&Place::local(&old_src), "summaries.jsonl").await;
    let new_rows = load_summaries(&Place::local(&new_src), "summaries.jsonl").await;
    let mut versions = Vec::new();
    let mut typical = Vec::new();
    for (args, file) in &jobs {
        let old = place.get(file).await.unwrap();
        // A normal run, measured, gives the new version; runs are deterministic.
        let t = typical_run(args).await;
        let new = place.get(file).await.unwrap();
        assert_ne!(old, new);
        let v = Versions {
            file,
            old,
            new,
            old_rows: old_rows.clone(),
            new_rows: new_rows.clone(),
        };
        place.restore(file, &v.old).await;
        versions.push(v);
        typical.push(t);
    }
    eprintln!(
        "{}: a normal convert takes {:?} (to Parquet) and {:?} (to JSONL)",
        place.root, typical[0], typical[1]
    );

    let files = ["summaries.jsonl", "summaries.parquet"];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut kills, mut finished) = ([0usize; 2], 0usize);
    let mut aimed = MidWriteCounts::default();
    // The kills at random moments, per direction, with their evidence of a cut write.
    let mut random = [MidWriteCounts::default(), MidWriteCounts::default()];
    // On local disk, half the kills are aimed at the write: after its staged file appears,
    // within the time staged files exist in a normal run.
    let mut windows = Vec::new();
    if let Some(dir) = &place.local {
        for (j, (args, file)) in jobs.iter().enumerate() {
            let (a, d, f) = (args.clone(), dir.clone(), *file);
            let w = tokio::task::spawn_blocking(move || write_window(&a, &d, f));
            windows.push(w.await.unwrap());
            place.restore(file, &versions[j].old).await;
        }
    }
    if !windows.is_empty() {
        eprintln!(
            "{}: staged files exist for {:?} (to Parquet) and {:?} (to JSONL)",
            place.root, windows[0], windows[1]
        );
    }
    let mut runs = 0;
    while kills.iter().any(|k| *k < kills_each) {
        runs += 1;
        assert!(runs < 6 * kills_each, "too few runs were killed: {kills:?}");
        let j = runs % 2;
        if kills[j] >= kills_each {
            continue;
        }
        let aim = place.local.is_some() && runs % 4 < 2;
        let (killed, what) = if aim {
            let dir = place.local.clone().unwrap();
            let max = windows[j].as_micros() as u64;
            let delay = Duration::from_micros(rng.random_range(0..=max));
            let what = format!(
                "{} run {runs} killed {delay:?} after its write began",
                jobs[j].1
            );
            let (args, file) = (jobs[j].0.clone(), jobs[j].1);
            let kill = tokio::task::spawn_blocking(move || {
                run_and_kill_mid_write(&args, &dir, file, delay)
            })
            .await
            .unwrap();
            let is_new = check_and_reset(place, &versions[j], &what).await;
            aimed.record(&kill, is_new);
            // The next write of the file (the previous version, put back).
            place.restore(jobs[j].1, &versions[j].old).await;
            assert_no_temporary_outlived_the_next_write(
                place.local.as_ref().unwrap(),
                jobs[j].1,
                &what,
            );
            (kill.killed, what)
        } else {
            let max = typical[j].as_micros() as u64;
            let delay = Duration::from_micros(rng.random_range(0..=max));
            let what = format!("{} run {runs} killed after {delay:?}", jobs[j].1);
            let watch = place
                .local
                .as_deref()
                .map(|dir| (dir, std::slice::from_ref(&jobs[j].1)));
            let mut kill = run_and_kill_watching(&jobs[j].0, delay, watch).await;
            let is_new = check_and_reset(place, &versions[j], &what).await;
            // On S3 the evidence is the server's: the killed run's multipart upload (the
            // 10 MB JSONL goes as one) still pending once the target has settled, that is
            // after every request the run had sent whole was applied. A run that finished
            // completed its upload.
            let left = place.abandoned_uploads();
            if kill.killed {
                kill.mid_write |= left.iter().any(|f| f == jobs[j].1);
            } else {
                assert!(
                    left.is_empty(),
                    "{what}: a complete run left multipart uploads pending: {left:?}"
                );
            }
            random[j].record(&kill, is_new);
            (kill.killed, what)
        };
        if killed {
            kills[j] += 1;
        } else {
            finished += 1;
        }
        check_and_reset(place, &versions[1 - j], &what).await;
        assert_only_checkpoints(place, &files, &what).await;
    }
    if place.local.is_some() {
        aimed.assert_mid_write_share(&format!("{}: convert kills aimed at the write", place.root));
    }
    for (j, counts) in random.iter().enumerate() {
        counts.assert_mid_write_left_old(&format!(
            "{}: {} kills at random moments",
            place.root, jobs[j].1
        ));
    }

    // Whatever the kills left, a complete run still succeeds and lands whole.
    let leftovers = place.leftovers(&files);
    eprintln!(
        "{}: {} kills, {finished} runs finished first, temporaries left: {leftovers:?}",
        place.root,
        kills[0] + kills[1]
    );
    for (j, (args, _)) in jobs.iter().enumerate() {
        assert!(!run_and_kill(args, Duration::from_secs(120)).await);
        assert!(check_and_reset(place, &versions[j], "a later convert").await);
    }
    assert_only_checkpoints(place, &files, "after the later converts").await;
    assert_no_staged_left(place, "after the later converts").await;
    (kills[0] + kills[1], finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_converts_keep_the_previous_checkpoint_local() {
    let dst = tempfile::tempdir().unwrap();
    let place = Place::local(dst.path());
    let seed = crash_seed(
        "killed_converts_keep_the_previous_checkpoint_local",
        0xC0FFEE,
    );
    let (kills, _) = convert_kills(&place, 25, seed).await;
    assert!(kills >= 50);

    // Temporaries such as a kill leaves (object_store's `name#N` staging files, hidden
    // dot files) are never shown, and saves go on working beside them.
    let files = ["summaries.jsonl", "summaries.parquet"];
    for junk in [
        "summaries.parquet#1",
        "summaries.parquet#7",
        "summaries.jsonl#2",
        "clusters.jsonl#1",
        ".summaries.parquet.ckpt-staging-1-2",
    ] {
        std::fs::write(dst.path().join(junk), b"half a checkpoint").unwrap();
    }
    assert_only_checkpoints(&place, &files, "planted temporaries").await;
    let m = place.manager(FileFormat::Parquet);
    let rows = load_summaries(&place, "summaries.jsonl").await;
    m.save("summaries", &rows[..10]).await.unwrap();
    assert_eq!(
        m.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap(),
        rows[..10]
    );
    let j = place.manager(FileFormat::Jsonl);
    j.save("clusters", &Vec::<Cluster>::new()).await.unwrap();
    assert_only_checkpoints(
        &place,
        &["clusters.jsonl", "summaries.jsonl", "summaries.parquet"],
        "saves beside temporaries",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_converts_keep_the_previous_checkpoint_s3() {
    let s3 = S3::from_env();
    let place = Place::s3(&s3, &unique("crash-convert"));
    let seed = crash_seed("killed_converts_keep_the_previous_checkpoint_s3", 0xBADC0DE);
    let (kills, _) = convert_kills(&place, 10, seed).await;
    assert!(kills >= 20);
}

// ---- library saves: ckpt generate -------------------------------------------------------

/// Every checkpoint `ckpt generate --format both` writes, loaded through the library.
#[derive(PartialEq)]
enum Loaded {
    Summaries(Vec<ConversationSummary>),
    Conversations(Vec<Conversation>),
    Clusters(Vec<Cluster>),
    Projected(Vec<ProjectedCluster>),
}

const GENERATED: [&str; 10] = [
    "clusters.jsonl",
    "clusters.parquet",
    "conversations.jsonl",
    "conversations.parquet",
    "dimensionality.jsonl",
    "dimensionality.parquet",
    "meta_clusters.jsonl",
    "meta_clusters.parquet",
    "summaries.jsonl",
    "summaries.parquet",
];

async fn load_any(place: &Place, file: &str) -> Loaded {
    let (stem, format) = ckpt::format::strip_extension(file);
    let m = place.manager(format.unwrap());
    match stem {
        "summaries" => Loaded::Summaries(
            m.load(file)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .unwrap(),
        ),
        "conversations" => Loaded::Conversations(
            m.load(file)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .unwrap(),
        ),
        "dimensionality" => Loaded::Projected(
            m.load(file)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .unwrap(),
        ),
        _ => Loaded::Clusters(
            m.load(file)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .unwrap(),
        ),
    }
}

async fn generate_kills(place: &Place, kills_wanted: usize, seed: u64) -> usize {
    // On S3, summaries.jsonl of 10 MB, saved as a multipart upload: a kill in the middle
    // of that save leaves the upload pending, the evidence the server can show (the
    // smaller checkpoints go as one PUT each, which leaves none).
    let (n, dim) = if place.local.is_some() {
        ("800", "32")
    } else {
        ("1200", "384")
    };
    let gen_args = |seed: &str| -> Vec<String> {
        let mut a = place.cli.clone();
        a.extend(
            [
                "generate",
                &place.root,
                "--summaries",
                n,
                "--dim",
                dim,
                "--format",
                "both",
                "--seed",
                seed,
            ]
            .map(str::to_owned),
        );
        a
    };
    // The new version's bytes and rows: one complete run, measured.
    let typical = typical_run(&gen_args("8")).await;
    let mut new: BTreeMap<&str, (Vec<u8>, Loaded)> = BTreeMap::new();
    for f in GENERATED {
        new.insert(f, (place.get(f).await.unwrap(), load_any(place, f).await));
    }
    ckpt(gen_args("7")).expect_ok("the previous checkpoints");
    let mut old: BTreeMap<&str, (Vec<u8>, Loaded)> = BTreeMap::new();
    for f in GENERATED {
        old.insert(f, (place.get(f).await.unwrap(), load_any(place, f).await));
        assert!(
            old[f].0 != new[f].0,
            "{f}: the two seeds give the same bytes"
        );
    }
    eprintln!("{}: a normal generate takes {typical:?}", place.root);

    let args = gen_args("8");
    // On local disk, every other run is aimed at the save of one checkpoint (each in
    // turn): killed after its staged file appears, within the time staged files of it
    // exist in a normal run. Most of a run is spent making the rows, so kills at random
    // moments seldom land in a save.
    let mut windows = Vec::new();
    if let Some(dir) = &place.local {
        let (a, d) = (args.clone(), dir.clone());
        windows = tokio::task::spawn_blocking(move || write_windows(&a, &d, &GENERATED))
            .await
            .unwrap();
        // The measuring runs saved the new versions.
        for f in GENERATED {
            place.restore(f, &old[f].0).await;
        }
        eprintln!(
            "{}: staged files of each checkpoint exist for {:?}",
            place.root,
            GENERATED.iter().zip(&windows).collect::<Vec<_>>()
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut kills, mut runs, mut mid_write) = (0, 0, 0);
    let mut aimed = MidWriteCounts::default();
    // Enough aimed kills that their share says something (a handful could miss by chance).
    let aimed_wanted = if place.local.is_some() { 10 } else { 0 };
    while kills < kills_wanted || aimed.kills < aimed_wanted {
        runs += 1;
        assert!(
            runs < 6 * kills_wanted.max(2 * aimed_wanted),
            "too few runs were killed: {kills} kills, {aimed:?}"
        );
        let (mut kill, aimed_at, what) = if place.local.is_some() && runs % 2 == 0 {
            let k = (runs / 2) % GENERATED.len();
            let file = GENERATED[k];
            let delay = Duration::from_micros(rng.random_range(0..=windows[k].as_micros() as u64));
            let what =
                format!("generate run {runs} killed {delay:?} after its save of {file} began");
            let (a, d) = (args.clone(), place.local.clone().unwrap());
            let kill =
                tokio::task::spawn_blocking(move || run_and_kill_mid_write(&a, &d, file, delay))
                    .await
                    .unwrap();
            (kill, Some(file), what)
        } else {
            let delay = Duration::from_micros(rng.random_range(0..=typical.as_micros() as u64));
            let what = format!("generate run {runs} killed after {delay:?}");
            let watch = place.local.as_deref().map(|dir| (dir, &GENERATED[..]));
            (run_and_kill_watching(&args, delay, watch).await, None, what)
        };
        if kill.killed {
            kills += 1;
        }
        let mut aimed_is_new = false;
        for f in GENERATED {
            let (now, loaded) = settled(place, f, || load_any(place, f)).await;
            let now = now.unwrap_or_else(|| panic!("{what}: {f} disappeared"));
            let (version, which) = if now == old[f].0 {
                (&old[f], "old")
            } else if now == new[f].0 {
                (&new[f], "new")
            } else {
                panic!("{what}: {f} is neither version ({} bytes)", now.len());
            };
            assert!(loaded == version.1, "{what}: {f} loads other rows");
            if which == "new" {
                aimed_is_new |= aimed_at == Some(f);
                place.restore(f, &old[f].0).await;
            }
        }
        // On S3, once every checkpoint has settled: an upload of the killed run still
        // pending (see `convert_kills`). A run that finished left none.
        let left = place.abandoned_uploads();
        assert!(
            left.iter().all(|f| GENERATED.contains(&f.as_str())),
            "{what}: uploads pending for other files: {left:?}"
        );
        if kill.killed {
            kill.mid_write |= !left.is_empty();
        } else {
            assert!(
                left.is_empty(),
                "{what}: a complete run left multipart uploads pending: {left:?}"
            );
        }
        if aimed_at.is_some() {
            aimed.record(&kill, aimed_is_new);
        } else if kill.mid_write {
            mid_write += 1;
        }
        assert_only_checkpoints(place, &GENERATED, &what).await;
    }
    eprintln!(
        "{}: {kills} kills of generate in {runs} runs; of the {} at random moments, {mid_write} in the middle of a save (its staged file left with data, or its upload pending); temporaries left: {:?}",
        place.root,
        kills - aimed.kills,
        place.leftovers(&GENERATED)
    );
    if place.local.is_some() {
        aimed.assert_mid_write_share(&format!("{}: generate kills aimed at a save", place.root));
    }
    // A later save of everything succeeds.
    ckpt(&args).expect_ok("a later generate");
    for f in GENERATED {
        assert!(
            place.get(f).await.unwrap() == new[f].0,
            "{f} after a later generate"
        );
    }
    assert_only_checkpoints(place, &GENERATED, "after a later generate").await;
    assert_no_staged_left(place, "after a later generate").await;
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_library_saves_keep_the_previous_checkpoints_local() {
    let dst = tempfile::tempdir().unwrap();
    let seed = crash_seed(
        "killed_library_saves_keep_the_previous_checkpoints_local",
        0x5EED,
    );
    assert!(generate_kills(&Place::local(dst.path()), 15, seed).await >= 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_library_saves_keep_the_previous_checkpoints_s3() {
    let s3 = S3::from_env();
    let place = Place::s3(&s3, &unique("crash-generate"));
    let seed = crash_seed(
        "killed_library_saves_keep_the_previous_checkpoints_s3",
        0xFEED,
    );
    assert!(generate_kills(&place, 6, seed).await >= 6);
}

// ---- a single-file COPY -----------------------------------------------------------------

/// `ckpt query ROOT "COPY (...) TO '.../x.parquet'"` killed after its write began: the
/// target is the previous file or the complete new one, and the next COPY to it leaves no
/// temporary of the killed one behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_single_file_copies_keep_the_previous_file() {
    let seed = crash_seed("killed_single_file_copies_keep_the_previous_file", 0xC0B1);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    ckpt([
        "generate",
        &s(src.path()),
        "--summaries",
        "1500",
        "--dim",
        "128",
        "--seed",
        "1",
        "--no-conversations",
        "--format",
        "jsonl",
    ])
    .expect_ok("generate");
    let target = out.path().join("x.parquet");
    let copy = |limit: &str| -> Vec<String> {
        vec![
            "query".into(),
            s(src.path()),
            format!(
                "COPY (SELECT * FROM summaries ORDER BY chat_id {limit}) TO '{}'",
                s(&target)
            ),
        ]
    };
    let (old_copy, new_copy) = (copy("LIMIT 100"), copy(""));
    ckpt(&new_copy).expect_ok("a complete COPY");
    let new = std::fs::read(&target).unwrap();
    ckpt(&old_copy).expect_ok("the previous file");
    let old = std::fs::read(&target).unwrap();
    assert_ne!(old, new);
    let window = {
        let (a, d) = (new_copy.clone(), out.path().to_owned());
        tokio::task::spawn_blocking(move || write_window(&a, &d, "x.parquet"))
            .await
            .unwrap()
    };
    assert_eq!(
        std::fs::read(&target).unwrap(),
        new,
        "COPY is deterministic"
    );
    ckpt(&old_copy).expect_ok("the previous file again");
    eprintln!("COPY: temporaries exist for {window:?} of a complete run");

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = MidWriteCounts::default();
    let mut runs = 0;
    while counts.kills < 20 {
        runs += 1;
        assert!(runs < 120, "too few runs were killed: {counts:?}");
        let delay = Duration::from_micros(rng.random_range(0..=window.as_micros() as u64));
        let what = format!("COPY run {runs} killed {delay:?} after its write began");
        let (a, d) = (new_copy.clone(), out.path().to_owned());
        let kill =
            tokio::task::spawn_blocking(move || run_and_kill_mid_write(&a, &d, "x.parquet", delay))
                .await
                .unwrap();
        let now = std::fs::read(&target).unwrap_or_else(|e| panic!("{what}: {e}"));
        let is_new = if now == old {
            false
        } else if now == new {
            true
        } else {
            panic!(
                "{what}: x.parquet is neither version ({} bytes; old {}, new {})",
                now.len(),
                old.len(),
                new.len()
            );
        };
        counts.record(&kill, is_new);
        // The next write: a COPY of the previous version.
        ckpt(&old_copy).expect_ok(&what);
        assert_eq!(std::fs::read(&target).unwrap(), old, "{what}");
        assert_no_temporary_outlived_the_next_write(out.path(), "x.parquet", &what);
    }
    counts.assert_mid_write_share("COPY kills aimed at the write");
}
