//! The `ckpt` command line: parse (`args`), dispatch (here), print (`commands`). Every
//! command is a library operation (`ckpt::ops`); nothing here is reachable only from
//! `main`, and nothing here decides what a command does.

pub mod args;
pub mod commands;
pub mod human;
pub mod malloc;
pub mod print;
pub mod progress;
pub mod shell;
pub mod stdout;

use std::io::{IsTerminal, Write};

use clap::Parser;

use args::{Cli, Command};
use ckpt::Error;
use ckpt::storage::StorageOptions;
use stdout::PipeState;

/// Entry point of the binary: parses, runs, prints errors, returns the exit code: 0 on
/// success, 1 on failure, 2 on a usage error (clap's own parse errors exit 2 too). A
/// closed standard output (`ckpt query ... | head -1`) ends the command quietly, with 0.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cli = Cli::parse();
    malloc::trim_freed_memory_under(cli.command.memory_limit());
    init_tracing(cli.verbose, matches!(cli.command, Command::Worker(_)));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pipe = PipeState::default();
    match rt.block_on(run(cli, &pipe)) {
        Ok(code) => ExitCode::from(code),
        // Whatever error the printer made of it, the reader went away: nothing to report.
        Err(_) if pipe.closed() => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log filter: `CKPT_LOG` if set, else by `-v`. A worker logs its tasks by default (info):
/// it has no other output.
fn init_tracing(verbose: u8, worker: bool) {
    let default = match verbose {
        0 if worker => "ckpt=info",
        0 => "warn",
        1 => "ckpt=info",
        _ => "ckpt=debug,datafusion=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| RedactingStderr)
        .try_init();
}

/// Standard error for log lines, without the credentials a server's answer may echo: a
/// dependency's log line (a retried request, its error) can quote it whole. Each log
/// line comes in one write, so a credential is never split between two.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(ckpt::error::redact_secrets(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs a parsed command line; returns the exit code. Standard output goes through
/// `pipe`, which records a reader that went away.
pub async fn run(cli: Cli, pipe: &PipeState) -> std::result::Result<u8, Failure> {
    let storage = storage_options(&cli)?;
    let mut out = pipe.watch(std::io::stdout().lock());
    let code = run_command(&cli, storage, pipe, &mut out).await?;
    out.flush().map_err(io)?;
    Ok(code)
}

async fn run_command(
    cli: &Cli,
    storage: StorageOptions,
    pipe: &PipeState,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    match &cli.command {
        Command::Ls(args) => commands::ls(args, storage, out).await,
        Command::Query(args) => commands::query(args, storage, out).await,
        Command::Shell(args) => commands::shell(args, storage, pipe).await,
        Command::Convert(args) => commands::convert(args, storage, out).await,
        Command::Sizes(args) => commands::sizes(args, storage, out).await,
        Command::Check(args) => commands::check(args, storage, out).await,
        Command::Append(args) => commands::append(args, storage, out).await,
        Command::Compact(args) => commands::compact(args, storage, out).await,
        Command::Worker(args) => commands::worker(args, storage, out).await,
        Command::Serve(args) => commands::serve(args, storage, out).await,
        Command::Generate(args) => commands::generate(args, storage, out).await,
        Command::Completions(args) => commands::completions(args, out).await,
    }
}

fn io(e: std::io::Error) -> Error {
    Error::io("cannot write the output", e)
}

/// How a command ended badly: the exit code is 2 for a usage error, 1 for a failure.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments: a missing root or SQL, a malformed `--storage-option`.
    Usage(Error),
    /// The command ran and failed.
    Failed(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Failed(e)
    }
}

impl From<ckpt::CheckpointError> for Failure {
    fn from(e: ckpt::CheckpointError) -> Self {
        Failure::Failed(e.into())
    }
}

impl From<ckpt::StorageError> for Failure {
    fn from(e: ckpt::StorageError) -> Self {
        Failure::Failed(e.into())
    }
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(Error::config(message))
    }
}

fn storage_options(cli: &Cli) -> std::result::Result<StorageOptions, Failure> {
    // Parsed here rather than by clap: clap would quote the value, which may be a secret
    // given without its key (`-S <secret>`); these messages never show one.
    let mut o = StorageOptions::default();
    for kv in &cli.storage_option {
        o.set(kv).map_err(|e| Failure::Usage(e.into()))?;
    }
    Ok(o)
}
