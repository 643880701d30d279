//! The command line's integration tests: what `ckpt` prints and exits with, at a terminal
//! and in a pipe; commands killed at random moments; secrets never printed.
//!
//! One test binary of modules rather than a binary per file: every test binary links
//! DataFusion whole, so each one more costs a link and hundreds of megabytes. The tests
//! share nothing in the process but what `common` gives; the commands run as child
//! processes, each with the environment its test gives it, and no test sets a variable
//! or changes the current directory of its own process, so they run side by side as they
//! did in separate binaries.
//!
//! - `commands`: every command end to end (output formats, COPY, convert, ls, sizes,
//!   check, the shell through stdin, memory limits, exit codes).
//! - `shell_tty`: the shell and progress bars under a pseudo-terminal.
//! - `crash`: SIGKILL of convert, generate and COPY never costs the previous checkpoint.
//! - `secrets`: no command, at any verbosity, prints a secret.
//! - `serve`: `ckpt serve`'s API, its refusals and limits, and its page in a real browser.

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod crash;
mod secrets;
mod serve;
mod shell_tty;
