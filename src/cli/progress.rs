//! The progress bar of the long writes (`convert`, `append`, `compact`, `generate`, and a
//! COPY run by `query` or the shell): on
//! standard error when it is a terminal, like DuckDB's:
//!
//! ` 42% ▕██████████▏             ▏ 1.21 GiB/2.88 GiB, 96.40 MiB/s, ETA 18s  summaries`

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use ckpt::progress::{ProgressFn, ProgressUpdate};
use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};

/// What the bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of the input consumed, of its size.
    Bytes,
    /// Rows made, of the rows to make (`generate`: there is no input).
    Rows,
}

/// A bar on standard error, or nothing (`--quiet`, or standard error is not a terminal:
/// a log file or a pipe gets no redrawn lines).
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(unit: Unit, quiet: bool) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let counts = match unit {
            Unit::Bytes => "{bytes}/{total_bytes}, {binary_bytes_per_sec}",
            Unit::Rows => "{human_pos}/{human_len} rows, {rows_per_sec}",
        };
        // The checkpoint's name last: on a narrow terminal it is what gets cut.
        let template = format!("{{percent:>3}}% ▕{{bar:24}}▏ {counts}, ETA {{eta}}  {{wide_msg}}");
        let style = ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("█▉▊▋▌▍▎▏ ")
            .with_key(
                "rows_per_sec",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{} rows/s", HumanCount(state.per_sec() as u64));
                },
            );
        // No length (and nothing drawn) until the library says how much there is to do.
        let bar = ProgressBar::no_length().with_style(style);
        Bar(Some(bar))
    }

    /// The callback the library calls as it reads; None without a bar.
    pub fn callback(&self) -> Option<ProgressFn> {
        let bar = self.0.clone()?;
        Some(Arc::new(move |u: &ProgressUpdate<'_>| {
            // The name first: the first frame is drawn when the length is set.
            if bar.message() != u.checkpoint {
                bar.set_message(u.checkpoint.to_owned());
            }
            match bar.length() {
                Some(total) if total == u.total => {}
                Some(_) => bar.set_length(u.total),
                None => {
                    bar.set_length(u.total);
                    // Redrawn between updates too, so the rate and the ETA stay current.
                    bar.enable_steady_tick(Duration::from_millis(200));
                }
            }
            bar.set_position(u.done);
        }))
    }

    /// Clears the bar: the summary lines take its place.
    pub fn finish(self) {
        drop(self);
    }
}

/// Cleared however it ends: a statement cancelled in the shell (Ctrl-C) or an error
/// returned early leaves no bar on the screen.
impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
