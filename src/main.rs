//! The `ckpt` binary: argument parsing and printing over the library (`src/cli/`).
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
