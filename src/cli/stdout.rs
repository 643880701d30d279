//! Standard output that notices a closed pipe. `ckpt query ... | head -1` closes the pipe
//! while ckpt is still writing; the write fails with `BrokenPipe`, and whatever error the
//! printer makes of it (arrow's CSV writer turns it into a string) ends the command. The
//! watcher records the `io::ErrorKind` itself, so `main` can tell such an ending from a
//! failure and exit 0 without a message, as ripgrep does.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a watched writer has seen its reader go away. Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct PipeState(Arc<AtomicBool>);

impl PipeState {
    /// True once a write or flush through [`PipeState::watch`] failed with `BrokenPipe`.
    pub fn closed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `inner`, with its `BrokenPipe` errors recorded here (and still returned).
    pub fn watch<W: Write>(&self, inner: W) -> Watched<W> {
        Watched {
            inner,
            state: self.clone(),
        }
    }

    fn note<T>(&self, res: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &res
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.0.store(true, Ordering::Relaxed);
        }
        res
    }
}

/// A writer whose `BrokenPipe` errors are recorded in a [`PipeState`].
#[derive(Debug)]
pub struct Watched<W> {
    inner: W,
    state: PipeState,
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.state.note(self.inner.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.state.note(self.inner.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state.note(self.inner.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_a_broken_pipe_and_nothing_else() {
        let pipe = PipeState::default();
        assert!(pipe.watch(Full).write_all(b"x").is_err());
        assert!(
            !pipe.closed(),
            "another error is a failure, not a closed pipe"
        );
        let mut w = pipe.watch(Closed);
        assert!(!pipe.closed());
        assert!(writeln!(w, "x").is_err());
        assert!(pipe.clone().closed());
    }
}
