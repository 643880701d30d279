//! `ckpt shell` at a terminal: Ctrl-C at the prompt drops the statement being typed,
//! Ctrl-C during a query cancels it, and in both cases the shell goes on; `\q` ends it
//! with exit 0.
//!
//! The shell runs under a pseudo-terminal made by `script` (util-linux), so the line
//! editor reads keys in raw mode as at a real terminal (Ctrl-C is a key there), and while
//! a query runs, Ctrl-C is the terminal's interrupt (SIGINT). `HOME` is a temporary
//! directory: the history file is written there, not in the user's home.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

/// The shell under a pseudo-terminal, and everything it has printed so far.
struct Terminal {
    child: Child,
    screen: Arc<Mutex<String>>,
    _home: tempfile::TempDir,
}

impl Terminal {
    fn start(root: &std::path::Path) -> Terminal {
        let home = tempfile::tempdir().unwrap();
        // `exec`: the shell `script` starts the command with is replaced by ckpt, not left
        // as its parent. A non-interactive dash left waiting would itself die of the
        // SIGINT that Ctrl-C sends the terminal's process group, and `script -e` would then
        // report 130 for a ckpt that ended with 0.
        let shell = format!(
            "exec {} shell {}",
            env!("CARGO_BIN_EXE_ckpt"),
            root.to_str().unwrap()
        );
        let mut child = Command::new("script")
            .args(["-qfec", &shell, "/dev/null"])
            .env("HOME", home.path())
            .env("SHELL", "/bin/sh")
            .env("TERM", "xterm")
            .env_remove("CKPT_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("`script` (util-linux) runs");
        let screen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            child,
            screen,
            _home: home,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    fn type_keys(&mut self, keys: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the screen, after its first `from` bytes, shows `text`.
    fn wait_for(&self, from: usize, text: &str, within: Duration) -> usize {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if let Some(at) = screen.get(from..).and_then(|s| s.find(text)) {
                return from + at + text.len();
            }
            assert!(
                start.elapsed() < within,
                "{text:?} did not appear within {within:?}; the screen after byte {from}:\n{}",
                screen.get(from..).unwrap_or("")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CTRL_C: &str = "\x03";
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn ctrl_c_drops_the_typed_statement_or_cancels_the_query_and_the_shell_goes_on() {
    let root = tempfile::tempdir().unwrap();
    common::copy_sample(root.path(), true);
    let mut t = Terminal::start(root.path());
    let mut at = t.wait_for(0, "ckpt> ", WAIT);

    // At the prompt: half a statement, then Ctrl-C. It is dropped: the next statement
    // runs alone (were the first kept, the two would make a syntax error).
    // (Keys are typed once the line editor shows its prompt: it drops input typed before
    // it takes the terminal back.)
    t.type_keys("SELECT 'dropped' AS");
    at = t.wait_for(at, "AS", WAIT);
    t.type_keys(CTRL_C);
    at = t.wait_for(at, "ckpt> ", WAIT);
    t.type_keys("SELECT 40 + 2 AS answer;\r");
    at = t.wait_for(at, "42", WAIT);
    assert!(!t.screen()[at..].contains("error"), "{}", t.screen());
    at = t.wait_for(at, "ckpt> ", WAIT);

    // During a query: a count over ten billion generated rows (minutes of work), cancelled.
    t.type_keys("SELECT count(*) AS n FROM generate_series(1, 10000000000);\r");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    t.type_keys(CTRL_C);
    at = t.wait_for(at, "cancelled", WAIT);
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "the cancel took {:?}",
        sent.elapsed()
    );
    assert!(
        !t.screen().contains("10000000000 |"),
        "the query ran to its end"
    );

    // The shell goes on, and \q ends it with exit 0.
    at = t.wait_for(at, "ckpt> ", WAIT);
    t.type_keys("SELECT 6 * 7 AS again;\r");
    t.wait_for(at, "42", WAIT);
    t.type_keys("\\q\r");
    let screen = t.screen.clone();
    let status = common::wait_exit(&mut t.child, WAIT, "the shell", || {
        screen.lock().unwrap().clone()
    });
    assert_eq!(status.code(), Some(0), "{}", t.screen());
    assert!(!t.screen().contains("panicked"), "{}", t.screen());
}

/// Runs `ckpt ARGS` under a pseudo-terminal (stdout and stderr both the terminal);
/// returns its exit code and everything it printed there.
fn run_at_a_terminal(args: &[&str]) -> (Option<i32>, String) {
    let mut line = format!("exec {}", env!("CARGO_BIN_EXE_ckpt"));
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut child = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh")
        .env_remove("CKPT_LOG")
        // Open and silent: `script` ends early when its input ends.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let status = common::wait_exit(&mut child, WAIT, "ckpt at a terminal", String::new);
    drop(child.stdin.take());
    (status.code(), reader.join().unwrap())
}

/// `DIR/src`: about 30 MB of JSONL summaries with 384-d embeddings, a second or more of
/// converting or copying in a debug build, so a bar is drawn with a rate and an ETA.
fn long_write_source(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    let made = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(["generate", src.to_str().unwrap(), "--summaries", "3500"])
        .args(["--dim", "384", "--no-conversations"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    src
}

#[test]
fn convert_at_a_terminal_shows_a_progress_bar_with_size_rate_and_eta_and_quiet_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = long_write_source(dir.path());

    let dst = dir.path().join("dst");
    let (code, screen) =
        run_at_a_terminal(&["convert", src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{screen}");
    // ` 42% ▕████▌   ▏ 16.25 MiB/38.70 MiB, 12.01 MiB/s, ETA 2s  summaries`
    let drawn = |s: &str| s.contains("% ▕") && s.contains("iB/s, ETA ") && s.contains(" MiB/");
    assert!(drawn(&screen), "no progress bar in:\n{screen}");
    assert!(screen.contains("total: 4 checkpoints"), "{screen}");

    // --quiet: the summary lines only.
    let dst = dir.path().join("quiet");
    let (code, screen) = run_at_a_terminal(&[
        "convert",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("total: 4 checkpoints"), "{screen}");
    assert!(
        !screen.contains('%') && !screen.contains("ETA") && !screen.contains("MiB/s"),
        "a progress bar under --quiet:\n{screen}"
    );
}

#[test]
fn copy_at_a_terminal_shows_a_progress_bar_and_quiet_or_a_pipe_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = long_write_source(dir.path());
    // The SQL from a file: its quotes would otherwise have to survive the command line
    // `script` hands to a shell.
    let copy_to = |target: &str| {
        let sql = dir.path().join(format!("{target}.sql"));
        std::fs::write(
            &sql,
            format!("COPY summaries TO '{target}' STORED AS PARQUET"),
        )
        .unwrap();
        sql.to_str().unwrap().to_owned()
    };
    let root = src.to_str().unwrap();

    let sql = copy_to("out.parquet");
    let (code, screen) = run_at_a_terminal(&["query", root, "-f", &sql]);
    assert_eq!(code, Some(0), "{screen}");
    // ` 42% ▕████▌   ▏ 12.00 MiB/28.79 MiB, 30.01 MiB/s, ETA 1s  out.parquet`
    let drawn = |s: &str| s.contains("% ▕") && s.contains("iB/s, ETA ") && s.contains(" MiB/");
    assert!(drawn(&screen), "no progress bar in:\n{screen}");
    assert!(screen.contains("| 3500"), "{screen}");
    // Cleared before the count is printed: nothing of the bar follows the result.
    let result = screen.find("| count").expect("the count");
    assert!(
        !screen[result..].contains('▕'),
        "a bar after the result:\n{screen}"
    );
    assert!(src.join("out.parquet").is_file());

    // -q: the result only.
    let sql = copy_to("quiet.parquet");
    let (code, screen) = run_at_a_terminal(&["query", "-q", root, "-f", &sql]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("| 3500"), "{screen}");
    assert!(
        !screen.contains('%') && !screen.contains("ETA") && !screen.contains("MiB/s"),
        "a progress bar under -q:\n{screen}"
    );

    // Standard error not a terminal: nothing on it.
    let sql = copy_to("piped.parquet");
    let piped = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(["query", root, "-f", &sql])
        .env_remove("CKPT_LOG")
        .output()
        .unwrap();
    assert!(piped.status.success(), "{piped:?}");
    assert!(
        String::from_utf8_lossy(&piped.stdout).contains("| 3500"),
        "{piped:?}"
    );
    assert!(piped.stderr.is_empty(), "{piped:?}");
}
