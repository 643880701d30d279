//! Checkpoint names and COPY targets against a local root: nothing accepted leaves it.
#![no_main]
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

/// One root for the whole run; the checks only compute paths and URLs, nothing is written.
static ROOT: LazyLock<(tempfile::TempDir, ckpt_storage::Root)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = ckpt_storage::Root::local(dir.path()).expect("a local root");
    (dir, root)
});

fuzz_target!(|name: &str| {
    ckpt_storage::properties::check_name(&ROOT.1, name);
});
