//! Under `--memory-limit`, glibc's allocator is told to give freed memory back to the
//! system, so the process stays near the limit the user set.
//!
//! Why: DataFusion's pool counts what operators hold, not what the allocator keeps. By
//! default glibc serves blocks from 128 KiB up to 32 MiB from its heaps once such a block
//! has been freed (its mmap threshold moves up as big blocks are freed), and keeps freed
//! heap memory for reuse. A sort that spills allocates and frees hundreds of megabytes
//! in blocks of a few megabytes across a dozen heaps; they fragment, glibc keeps them,
//! and `ORDER BY` of every column under `--memory-limit 256M` peaked at 410–440 MB (the
//! benchmark's B6). With blocks of 2 MiB and more always mapped on their own (so they go
//! back when freed) and heaps trimmed beyond 2 MiB free, it peaks at 290–310 MB, in the
//! same time (5.0 s both, three runs each). Thresholds of 64 KiB gave 275 MB for 15 %
//! more time; 4 MiB let the scan's 4 MiB blocks back into the heaps (410–450 MB).
//!
//! Why an exec: glibc reads these settings once, at start, from the environment
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`); setting them from inside the
//! process means `mallopt`, an `unsafe` foreign call, and this crate forbids `unsafe`. So
//! when a command is given a memory limit and the environment has no malloc setting of
//! the user's, the binary replaces itself (`execv`: same process id, arguments and
//! streams) with the same command and the variables set. Only argument parsing has run by
//! then; no thread, file or socket exists yet. If the exec fails the command runs as it
//! is: the limit still holds for the pool, only the allocator's slack is larger. The
//! Python package runs inside Python's process and cannot do this; the same variables in
//! the environment of the Python process do the same there.

/// The variables glibc reads, and their values: 2 MiB each.
const SETTINGS: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "2097152"),
    ("MALLOC_TRIM_THRESHOLD_", "2097152"),
];

/// Variables through which a user already chose glibc's malloc behaviour: left as they are.
const USER_SETTINGS: [&str; 3] = [
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Restarts the process with the settings made when `memory_limit` is set and the
/// user chose no malloc setting; returns (and the command goes on) otherwise, or when the
/// restart fails. Call it first thing after argument parsing.
pub fn trim_freed_memory_under(memory_limit: Option<usize>) {
    if memory_limit.is_none() || !applies(|name| std::env::var_os(name)) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        // `exec` returns only on failure; the command then runs without the setting.
        let _ = command.args(args).envs(SETTINGS).exec();
    }
}

/// Whether the setting is ours to make: no malloc variable of the user's, and no
/// `glibc.malloc` tunable. Its presence is also what stops the restarted process from
/// restarting again.
fn applies(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let tunables_touch_malloc =
        env("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."));
    !tunables_touch_malloc && USER_SETTINGS.iter().all(|name| env(name).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn the_setting_is_made_only_where_the_user_made_none() {
        assert!(applies(env_of(&[])));
        assert!(applies(env_of(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0"
        )])));
        assert!(!applies(env_of(&[("MALLOC_TRIM_THRESHOLD_", "1048576")])));
        assert!(!applies(env_of(&[("MALLOC_MMAP_THRESHOLD_", "65536")])));
        assert!(!applies(env_of(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2"
        )])));
        // What the restarted process sees: it does not restart again.
        assert!(!applies(env_of(&SETTINGS)));
    }
}
