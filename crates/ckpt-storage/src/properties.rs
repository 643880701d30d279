//! The properties of names, COPY targets and root URLs that fuzzing checks, in one place
//! for both fuzzers: `tests/engine/fuzz.rs` (randomized, seeded, run with every
//! `cargo test`) and the cargo-fuzz targets under `fuzz/`. Each function panics when a
//! property fails; otherwise it returns what it observed. (The decoder's properties are in
//! `ckpt_core::properties`.)
//!
//! Not part of the stable API: the functions take raw fuzzer input.

use crate::Root;

/// Checks a checkpoint name and a COPY target against a local `root`: an accepted name
/// has no `.`/`..`/empty component, is relative, has no NUL or backslash, and maps to a
/// URL inside the root; a COPY target accepted by the sandboxed resolution
/// ([`Root::resolve_target`], what `--sandbox` enforces) resolves inside the root, whether
/// it was written as a relative path or a URL, and the unconfined resolution (the CLI's
/// default, which may write anywhere) puts a relative target the sandbox accepts at the
/// same place. Returns whether the name was accepted.
pub fn check_name(root: &Root, name: &str) -> bool {
    let accepted = ckpt_core::format::validate_name(name).is_ok();
    if accepted {
        assert!(
            !name
                .split('/')
                .any(|p| p == ".." || p == "." || p.is_empty()),
            "{name:?} accepted"
        );
        assert!(
            !name.starts_with('/') && !name.contains('\0') && !name.contains('\\'),
            "{name:?} accepted"
        );
        let url = root.url_of(name).expect("an accepted name has a URL");
        assert!(
            url.as_str().starts_with(root.url().as_str()),
            "{name:?} -> {url} leaves the root"
        );
        root.path(name).expect("an accepted name has a store path");
    }
    if let Ok(target) = root.resolve_target(name) {
        assert!(
            target.starts_with(root.url().as_str()),
            "{name:?} -> {target} leaves the root"
        );
        let is_url = url::Url::parse(name)
            .map(|u| u.scheme().len() > 1)
            .unwrap_or(false);
        if !is_url {
            let unconfined = root
                .resolve_target_unconfined(name)
                .expect("what the sandbox accepts, the unconfined resolution accepts");
            assert_eq!(unconfined, target, "{name:?}: the two resolutions differ");
        }
    }
    accepted
}

/// Parses `location` as a root when it is a URL of a remote or in-memory scheme (local
/// paths are the file system's business): either a root or an error with a message, and the
/// root's display never shows a password. Returns whether a root was made.
pub fn check_root_url(location: &str) -> bool {
    match url::Url::parse(location) {
        Ok(u) if u.scheme().len() > 1 && u.scheme() != "file" => {}
        _ => return false,
    }
    // A password that also appears elsewhere in the URL (as the bucket, say) cannot be
    // told apart in the output, so only a distinct one is checked.
    let password = url::Url::parse(location).ok().and_then(|mut u| {
        let p = u.password()?.to_owned();
        u.set_password(None).ok()?;
        (p.len() >= 4 && !u.as_str().contains(&p)).then_some(p)
    });
    match Root::parse(location) {
        Ok(root) => {
            let shown = root.to_string();
            if let Some(p) = password {
                assert!(!shown.contains(&p), "{shown} shows the password");
            }
            true
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            if let Some(p) = password {
                assert!(!text.contains(&p), "{text} shows the password");
            }
            false
        }
    }
}
