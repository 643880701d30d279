//! Where a write may go: COPY targets resolved against a root (confined to it, to a set
//! of roots, or unconfined), and the check that a write stays inside a local root when
//! its directories are symlinks.

use object_store::path::Path;
use url::Url;

use super::{Root, redact_url, resolve_local};
use crate::error::{Error, Result};
use ckpt_core::format::validate_name;

impl Root {
    /// Refuses a target whose parent directories are symlinks leading out of a local root.
    pub(super) fn check_stays_inside(&self, name: &str) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let mut cur = dir.clone();
        for part in name.split('/') {
            cur.push(part);
            if let Ok(meta) = std::fs::symlink_metadata(&cur)
                && meta.file_type().is_symlink()
            {
                let target = cur.canonicalize().unwrap_or_else(|_| cur.clone());
                if !target.starts_with(dir) {
                    return Err(Error::invalid_name(
                        name,
                        format!(
                            "{} is a symlink to {}, outside the root",
                            cur.display(),
                            target.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where a COPY target goes when writes are confined to this root (a sandbox); see
    /// [`Root::resolve_target_within`]. Nothing accepted leaves the root.
    pub fn resolve_target(&self, target: &str) -> Result<String> {
        self.resolve_target_within(target, &[])
    }

    /// Where a COPY target goes when writes are confined to this root and `others` (the
    /// roots of a sandboxed session). A relative path is a name inside this root (so
    /// `COPY summaries TO 'summaries.parquet'` writes beside the source, locally or in the
    /// bucket), checked like every checkpoint name: no `..`, no absolute path, no symlink
    /// out. A URL (`s3://...`, `file:///...`) must lie inside one of the roots and is
    /// checked as the name it has there. On local disk, parent directories are created.
    pub fn resolve_target_within(&self, target: &str, others: &[&Root]) -> Result<String> {
        if target.contains('\0') {
            return Err(Error::invalid_name(target, "contains a NUL character"));
        }
        if let Some(url) = parse_target_url(target) {
            // The parsed URL has its dot segments (`..`, `%2e%2e`) already applied: look at
            // the text as written.
            let path = target.split(['?', '#']).next().unwrap_or(target);
            if path
                .split('/')
                .any(|p| p.to_ascii_lowercase().replace("%2e", ".") == "..")
            {
                return Err(Error::invalid_name(
                    target,
                    "'..' is not allowed in a target",
                ));
            }
            let dir_target = url.path().ends_with('/');
            for root in std::iter::once(self).chain(others.iter().copied()) {
                if let Some(name) = root.name_in(&url) {
                    return root.resolve_name(target, &name, dir_target);
                }
            }
            let roots: Vec<String> = std::iter::once(self)
                .chain(others.iter().copied())
                .map(|r| redact_url(r.url()))
                .collect();
            return Err(Error::invalid_name(
                target,
                format!(
                    "the URL is outside the roots ({}); write inside one of them",
                    roots.join(", ")
                ),
            ));
        }
        if target.starts_with('/') || target.starts_with('~') {
            return Err(Error::invalid_name(
                target,
                "absolute paths would leave the root; give a name relative to it",
            ));
        }
        let name = target.trim_end_matches('/');
        self.resolve_name(target, name, target.ends_with('/'))
    }

    /// Where a COPY target goes when the person at the shell decides (the CLI without
    /// `--sandbox`). A relative path is relative to this root: while it stays inside, it is
    /// a name there, checked like every checkpoint name; with `..` it may lead out of the
    /// root, and that is where it is written. An absolute local path becomes a `file://`
    /// URL; a URL is used as given. Parent directories are created by the write (local
    /// disk); resolving a target outside the root creates nothing.
    pub fn resolve_target_unconfined(&self, target: &str) -> Result<String> {
        if target.contains('\0') {
            return Err(Error::invalid_name(target, "contains a NUL character"));
        }
        if parse_target_url(target).is_some() {
            return Ok(target.to_owned());
        }
        if target.starts_with('~') {
            return Err(Error::invalid_name(
                target,
                "'~' is not expanded here: give the full path (/home/...), or a path relative to the root",
            ));
        }
        let dir_target = target.ends_with('/');
        if target.starts_with('/') {
            let path = resolve_local(std::path::Path::new(target))?;
            if let Some(name) = self
                .local_dir
                .as_ref()
                .and_then(|d| relative_name(&path, d))
            {
                return self.resolve_name(target, &name, dir_target);
            }
            return file_url(target, &path, dir_target);
        }
        // `.` and `..` applied to the path as written, relative to the root.
        let mut inside: Vec<&str> = Vec::new();
        let mut up = 0usize;
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if inside.pop().is_none() {
                        up += 1;
                    }
                }
                p => inside.push(p),
            }
        }
        if up == 0 {
            return self.resolve_name(target, &inside.join("/"), dir_target);
        }
        match &self.local_dir {
            Some(dir) => {
                let mut path = dir.clone();
                for _ in 0..up {
                    path.pop();
                }
                path.extend(&inside);
                file_url(target, &path, dir_target)
            }
            None => {
                if up > self.prefix.parts().count() {
                    return Err(Error::invalid_name(
                        target,
                        format!(
                            "'..' leads above the top of {}",
                            redact_url(&self.store_url())
                        ),
                    ));
                }
                let mut url = self.url.clone();
                {
                    let mut segments = url.path_segments_mut().map_err(|_| {
                        Error::config(format!("{}: not a hierarchical URL", self.display()))
                    })?;
                    segments.pop_if_empty();
                    for _ in 0..up {
                        segments.pop();
                    }
                    segments.extend(&inside);
                    if dir_target {
                        segments.push("");
                    }
                }
                Ok(url.to_string())
            }
        }
    }

    /// A target that is the name `name` inside this root: checked like every checkpoint
    /// name (errors name `target`), parent directories created, as a URL.
    fn resolve_name(&self, target: &str, name: &str, dir_target: bool) -> Result<String> {
        let as_target = |e: Error| match e {
            Error::Core(ckpt_core::Error::InvalidName { reason, .. }) => {
                Error::invalid_name(target, reason)
            }
            other => other,
        };
        // The rule of every checkpoint name (no hidden `_` names, no glob characters),
        // checked before anything is created.
        ckpt_core::format::validate_checkpoint_name(name).map_err(|e| as_target(e.into()))?;
        let url = self.url_of(name)?;
        // Parent directories must exist for the local store, and must not be symlinks out.
        self.prepare_target(name, dir_target).map_err(as_target)?;
        Ok(if dir_target {
            format!("{url}/")
        } else {
            url.to_string()
        })
    }

    /// The name a URL has inside this root, when it lies inside (symlinks resolved on
    /// local disk: a link out of the root is not inside).
    fn name_in(&self, url: &Url) -> Option<String> {
        match &self.local_dir {
            Some(dir) => {
                if url.scheme() != "file" {
                    return None;
                }
                let path = resolve_local(&url.to_file_path().ok()?).ok()?;
                relative_name(&path, dir)
            }
            None => {
                if url.scheme() != self.url.scheme()
                    || url.host_str() != self.url.host_str()
                    || url.port_or_known_default() != self.url.port_or_known_default()
                {
                    return None;
                }
                self.name_of(&Path::from_url_path(url.path()).ok()?)
            }
        }
    }

    /// Checks that a write to `name` stays inside the root and, on local disk, creates its
    /// parent directories (or `name` itself when it is a directory target).
    pub(crate) fn prepare_target(&self, name: &str, is_dir: bool) -> Result<()> {
        validate_name(name)?;
        self.check_stays_inside(name)?;
        if let Some(dir) = &self.local_dir {
            let d = if is_dir {
                Some(dir.join(name))
            } else {
                std::path::Path::new(name).parent().map(|p| dir.join(p))
            };
            if let Some(d) = d {
                std::fs::create_dir_all(&d)
                    .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
            }
            self.check_stays_inside(name)?;
        }
        Ok(())
    }
}

/// A COPY target that is a URL (a one-letter scheme is a Windows drive, not a URL).
fn parse_target_url(target: &str) -> Option<Url> {
    Url::parse(target).ok().filter(|u| u.scheme().len() > 1)
}

/// `path` relative to the directory `dir`, as a name (`a/b.parquet`); None when it is not
/// below `dir`, is `dir` itself, or is not UTF-8.
fn relative_name(path: &std::path::Path, dir: &std::path::Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            std::path::Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A local path as a `file://` URL COPY can write to (`dir_target`: with a trailing `/`).
fn file_url(target: &str, path: &std::path::Path, dir_target: bool) -> Result<String> {
    let url = Url::from_file_path(path).map_err(|_| {
        Error::invalid_name(target, format!("{} is not a usable path", path.display()))
    })?;
    let mut s = url.to_string();
    if dir_target && !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}
