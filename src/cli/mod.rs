//! The `ckpt` command line: argument parsing and printing only. Every command calls the
//! library (catalog, exec, convert, generate); nothing here is reachable only from `main`.

pub mod human;
pub mod malloc;
pub mod print;
pub mod progress;
pub mod shell;
pub mod stdout;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use ckpt::context::{CheckpointSession, SessionOptions};
use ckpt::convert::{ConvertOptions, convert, sizes};
use ckpt::exec;
use ckpt::format::{Compression, FileFormat, Layout, WriteOptions};
use ckpt::generate::{GenerateOptions, generate};
use ckpt::jsonl::{DecodeOptions, OnError};
use ckpt::storage::{Root, StorageOptions, redact_url};
use ckpt::{Error, Result};
use print::{MaxWidth, OutputFormat, Printer};
use stdout::PipeState;

const EXAMPLES: &str = "\
Examples:
  ckpt ls data
  ckpt query data \"SELECT topic, count(*) FROM summaries GROUP BY topic\"
  ckpt query data -f queries/cluster_sizes.sql --format markdown
  ckpt query --root run1=./a --root run2=s3://bucket/run2 \"SELECT count(*) FROM run2.summaries\"
  ckpt query data \"COPY summaries TO 'summaries.parquet' STORED AS PARQUET OPTIONS (compression 'zstd(3)')\"
  ckpt convert data/summaries.jsonl out/summaries.parquet --compression zstd
  ckpt convert s3://bucket/run1 ./local-copy --to jsonl
  ckpt generate /tmp/ckpt --summaries 1000 --dim 384 --format both
  ckpt append ./checkpoints summaries batch-0007.jsonl
  ckpt compact ./checkpoints summaries
  ckpt shell data
  ckpt worker --listen 0.0.0.0:50051
  ckpt query s3://bucket/run1 --workers 10.0.0.5:50051,10.0.0.6:50051 -f queries/topics.sql

Object stores: s3://, gs://, az://, http(s):// and memory:// roots work wherever a path does.
S3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP...;
--storage-option KEY=VALUE overrides them (e.g. aws_endpoint=http://127.0.0.1:9000).

Reading (ls, query, shell, sizes, convert's source) never creates a root: a missing one is an
error. COPY writes where its target says (a relative path is in the root); --sandbox keeps
writes inside the roots, for SQL that comes from others.
Exit codes: 0 success (also when the reader of the output goes away, as with `| head`),
1 failure, 2 usage (bad arguments or option values).";

#[derive(Debug, Parser)]
#[command(name = "ckpt", version, about = "Query, convert and store Kura pipeline checkpoints (JSONL, Parquet) with SQL", after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Object store option KEY=VALUE (repeatable): aws_endpoint, aws_region,
    /// aws_allow_http, aws_virtual_hosted_style_request, retry_max, retry_timeout, ...
    #[arg(
        long = "storage-option",
        short = 'S',
        global = true,
        value_name = "KEY=VALUE"
    )]
    pub storage_option: Vec<String>,
    /// Log what ckpt does on stderr (-v info, -vv debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the checkpoints of a root with kind, format, rows and bytes.
    #[command(after_help = "Example:\n  ckpt ls data\n  ckpt ls s3://bucket/run1 --format json")]
    Ls {
        /// Directory or URL (it must exist).
        root: String,
        #[arg(long, value_enum, default_value_t = LsFormat::Table, ignore_case = true)]
        format: LsFormat,
        /// Sizes as exact numbers of bytes, not `329.3 KiB` (JSON always has bytes).
        #[arg(long)]
        bytes: bool,
    },
    /// Run SQL over the checkpoints of one or more roots.
    #[command(
        after_help = "Examples:\n  ckpt query data \"SELECT topic, count(*) FROM summaries GROUP BY topic\"\n  echo 'SELECT 1' | ckpt query data\n  ckpt query data -f queries/hierarchy.sql --format json"
    )]
    Query(QueryArgs),
    /// Interactive SQL shell (\d tables, \d NAME schema, \timing, \format FMT, \null TEXT, \q).
    Shell(SessionArgs),
    /// Convert a checkpoint file or a whole root between JSONL and Parquet.
    #[command(
        after_help = "Examples:\n  ckpt convert data/summaries.jsonl out/summaries.parquet\n  ckpt convert data out --to parquet --compression zstd(3)\n  ckpt convert data out --layout kura   # Parquet that Kura's ParquetCheckpointManager loads"
    )]
    Convert(ConvertArgs),
    /// JSONL vs Parquet size of each checkpoint ("Compression Benefits").
    Sizes {
        /// Directory or URL (it must exist).
        root: String,
        /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
        #[arg(long, default_value = "snappy", value_parser = parse_compression)]
        compression: Compression,
        #[arg(long, value_enum, default_value_t = LsFormat::Table, ignore_case = true)]
        format: LsFormat,
        /// Sizes as exact numbers of bytes, not `329.3 KiB` (JSON always has bytes).
        #[arg(long)]
        bytes: bool,
    },
    /// Check that a pipeline run is consistent: ids, clusters, hierarchy, projections.
    #[command(
        after_help = "Checks each root on its own: duplicate ids, embeddings of different lengths,\nunreadable checkpoints, base clusters' chat ids against the summaries, summaries against\nthe conversations and the base clusters, the meta-cluster hierarchy (unknown parents,\ncycles, a parent's chat ids the union of its children's) and the projections.\nExit codes: 0 consistent, 1 problems found (or a root cannot be read), 2 usage.\n\nExamples:\n  ckpt check data\n  ckpt check s3://bucket/run1 --format json\n  ckpt check --root run1=./a --root run2=./b"
    )]
    Check(CheckArgs),
    /// Append the rows of a JSONL or Parquet file to a checkpoint as one new part.
    #[command(
        after_help = "Every row is checked by the checkpoint kind's codec first: a bad one fails the\nappend (naming file, line and field) and stores nothing. Several appenders may run at\nonce; an id appended again replaces its earlier row.\n\nExamples:\n  ckpt append ./checkpoints summaries batch-0007.jsonl\n  ckpt append s3://bucket/run1 summaries.parquet batch.parquet"
    )]
    Append {
        /// Directory or URL of the checkpoints (created if missing).
        root: String,
        /// Checkpoint name (`summaries`; with an extension to choose the format).
        name: String,
        /// The rows: a .jsonl or .parquet file (path or URL).
        file: String,
        /// Parquet codec of the new part: snappy, gzip, brotli, lz4, zstd(3), ...
        #[arg(long, default_value = "snappy", value_parser = parse_compression)]
        compression: Compression,
        /// Parquet layout of the new part: native or kura.
        #[arg(long, value_enum, default_value_t = LayoutArg::Native, ignore_case = true)]
        layout: LayoutArg,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Rewrite a checkpoint and its appended parts as one file, atomically.
    #[command(
        after_help = "Readers meanwhile see the checkpoint before or after, never both. The result loads\nin Kura (JSONL, or Parquet with --layout kura). Run one compaction of a checkpoint at a time.\n\nExamples:\n  ckpt compact ./checkpoints summaries\n  ckpt compact ./checkpoints summaries.parquet --layout kura"
    )]
    Compact {
        /// Directory or URL of the checkpoints (it must exist).
        root: String,
        /// Checkpoint name (`summaries`, or `summaries.parquet` when both formats exist).
        name: String,
        /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
        #[arg(long, default_value = "snappy", value_parser = parse_compression)]
        compression: Compression,
        /// Parquet layout: native (real types) or kura (what Kura's Parquet manager reads).
        /// Default: the layout the checkpoint has.
        #[arg(long, value_enum, ignore_case = true)]
        layout: Option<LayoutArg>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Serve as a worker: run the parts of queries that `ckpt query --workers` sends.
    #[command(
        after_help = "The worker reads every root a query names itself, with its own environment\n(AWS_*, ...) and --storage-option values: no credential is sent to it. It prints\n`listening on HOST:PORT` when ready and stops on SIGTERM or Ctrl-C, after the tasks it\nis running.\n\nExamples:\n  ckpt worker --listen 0.0.0.0:50051\n  ckpt query data --workers 10.0.0.5:50051,10.0.0.6:50051 \"SELECT topic, count(*) FROM summaries GROUP BY topic\""
    )]
    Worker {
        /// Address to listen on (port 0: any free port; the one chosen is printed).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
        listen: String,
        /// Memory pool of the worker (e.g. 2G), shared by its tasks; sorts spill beyond it.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        memory_limit: Option<usize>,
    },
    /// Write a deterministic, realistic sample of all five checkpoint kinds.
    #[command(after_help = "Example:\n  ckpt generate data --summaries 200 --dim 16 --format both")]
    Generate {
        /// Directory or URL (created if missing).
        root: String,
        #[arg(long, default_value_t = 1000)]
        summaries: usize,
        /// Embedding dimension (0: no embeddings).
        #[arg(long, default_value_t = 16)]
        dim: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = GenerateFormat::Jsonl, ignore_case = true)]
        format: GenerateFormat,
        /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
        #[arg(long, default_value = "snappy", value_parser = parse_compression)]
        compression: Compression,
        /// Parquet layout: native (real types) or kura (what Kura's Parquet manager reads).
        #[arg(long, value_enum, default_value_t = LayoutArg::Native, ignore_case = true)]
        layout: LayoutArg,
        /// Skip the raw conversations.
        #[arg(long)]
        no_conversations: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  ckpt completions bash > ~/.local/share/bash-completion/completions/ckpt\n  ckpt completions zsh > ~/.zfunc/_ckpt   # with fpath+=(~/.zfunc) before compinit\n  ckpt completions fish > ~/.config/fish/completions/ckpt.fish"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum, ignore_case = true)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LsFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenerateFormat {
    Jsonl,
    Parquet,
    Both,
}

/// `--on-error`: what to do with a JSONL line that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    /// Stop with an error naming file, line and field.
    Fail,
    /// Drop the line, report it on stderr, go on.
    Skip,
}

impl From<OnErrorArg> for OnError {
    fn from(a: OnErrorArg) -> OnError {
        match a {
            OnErrorArg::Fail => OnError::Fail,
            OnErrorArg::Skip => OnError::Skip,
        }
    }
}

/// `convert --to`: the target format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetFormat {
    #[value(alias = "json", alias = "ndjson")]
    Jsonl,
    #[value(alias = "pq")]
    Parquet,
}

impl From<TargetFormat> for FileFormat {
    fn from(t: TargetFormat) -> FileFormat {
        match t {
            TargetFormat::Jsonl => FileFormat::Jsonl,
            TargetFormat::Parquet => FileFormat::Parquet,
        }
    }
}

/// `--layout`: how known kinds are laid out in Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// Real types: lists, timestamps, message structs.
    Native,
    /// What Kura's ParquetCheckpointManager reads (lists and metadata as JSON text).
    Kura,
}

impl From<LayoutArg> for Layout {
    fn from(l: LayoutArg) -> Layout {
        match l {
            LayoutArg::Native => Layout::Native,
            LayoutArg::Kura => Layout::Kura,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Directory or URL whose checkpoints become tables (the default schema; it must exist).
    pub root: Option<String>,
    /// More roots as NAME=LOCATION (repeatable); each is a schema: NAME.summaries.
    #[arg(long = "root", value_name = "NAME=LOCATION", value_parser = RootSpecParser)]
    pub roots: Vec<(String, String)>,
    /// Memory pool (e.g. 512M, 2G); sorts and aggregations spill to disk beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_limit: Option<usize>,
    /// fail: stop at an undecodable JSONL line; skip: drop such lines and report them.
    #[arg(long, value_enum, default_value_t = OnErrorArg::Fail, ignore_case = true)]
    pub on_error: OnErrorArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, ignore_case = true)]
    pub format: OutputFormat,
    /// Print at most this many rows of each result.
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// How table and markdown output show NULL (csv leaves the field empty, json writes null).
    #[arg(long, value_name = "TEXT", default_value = "NULL")]
    pub null: String,
    /// Cut table cells, ending with …, so that lines are at most N characters (default: the
    /// terminal's width; no cut when the output is not a terminal).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_width: Option<u32>,
    /// Never cut table cells (overrides --max-width).
    #[arg(long)]
    pub wide: bool,
    /// Print each statement's time on stderr.
    #[arg(long)]
    pub timing: bool,
    /// Keep COPY inside the roots (for SQL from others): targets must be names inside the
    /// default root or URLs inside one of the roots; absolute paths and `..` are refused.
    #[arg(long)]
    pub sandbox: bool,
    /// Run queries on these workers (`ckpt worker`): HOST:PORT[,HOST:PORT...]. Each worker
    /// reads the roots itself, with its own credentials; results come back here.
    #[arg(long, value_name = "HOST:PORT,...", value_parser = parse_workers_arg)]
    pub workers: Option<WorkerList>,
    /// No progress bar (COPY shows one on stderr when it is a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--workers`: one value holding the list (a `Vec` would be taken by clap as repeats).
#[derive(Debug, Clone)]
pub struct WorkerList(pub Vec<url::Url>);

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// SQL statements (otherwise -f FILE, or standard input).
    #[arg(value_name = "SQL")]
    pub sql: Option<String>,
    /// Read SQL from a file.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Directory or URL of the checkpoints (it must exist).
    pub root: Option<String>,
    /// More roots as NAME=LOCATION (repeatable); each is checked on its own.
    #[arg(long = "root", value_name = "NAME=LOCATION", value_parser = RootSpecParser)]
    pub roots: Vec<(String, String)>,
    /// table: one line per problem; json: the report (`ckpt::check::CheckReport`).
    #[arg(long, value_enum, default_value_t = LsFormat::Table, ignore_case = true)]
    pub format: LsFormat,
    /// How many ids each problem lists (the count is always the total).
    #[arg(long, value_name = "N", default_value_t = ckpt::check::DEFAULT_SAMPLE)]
    pub sample: usize,
    /// Memory pool (e.g. 512M, 2G); joins and aggregations spill to disk beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// A checkpoint file or a root (directory or URL).
    pub src: String,
    /// A file (with extension) or a root.
    pub dst: String,
    /// Target format (default: the destination's extension, else the other format).
    #[arg(long, value_enum, ignore_case = true)]
    pub to: Option<TargetFormat>,
    /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
    #[arg(long, default_value = "snappy", value_parser = parse_compression)]
    pub compression: Compression,
    /// Parquet layout: native (real types) or kura (what Kura's Parquet manager reads).
    #[arg(long, value_enum, default_value_t = LayoutArg::Native, ignore_case = true)]
    pub layout: LayoutArg,
    /// Parquet: store embeddings as float32 (fails, storing nothing, if a value is not
    /// exactly a float32).
    #[arg(long)]
    pub float32_embeddings: bool,
    /// Memory pool (e.g. 512M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_limit: Option<usize>,
    /// fail: stop at an undecodable JSONL line; skip: drop such lines and report them.
    #[arg(long, value_enum, default_value_t = OnErrorArg::Fail, ignore_case = true)]
    pub on_error: OnErrorArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Sizes as exact numbers of bytes, not `329.3 KiB`.
    #[arg(long)]
    pub bytes: bool,
}

/// Parses `512M`, `2G`, `1048576`.
pub fn parse_size(s: &str) -> Result<usize> {
    let v: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| Error::config(format!("{s:?} is not a size ({e}); use e.g. 512M or 2G")))?;
    Ok(v.as_u64() as usize)
}

/// `--memory-limit`, for clap: a bad size is a usage error.
fn parse_size_arg(s: &str) -> std::result::Result<usize, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// `--workers`, for clap: a bad address is a usage error.
fn parse_workers_arg(s: &str) -> std::result::Result<WorkerList, String> {
    ckpt::cluster::parse_workers(s)
        .map(WorkerList)
        .map_err(|e| e.to_string())
}

/// `--compression`, for clap: a bad codec or level is a usage error.
fn parse_compression(s: &str) -> std::result::Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

/// `--root NAME=LOCATION`, for clap. Its own error text, not clap's `invalid value '...'`:
/// the value may be a URL with a password, which is never printed.
#[derive(Debug, Clone, Copy)]
struct RootSpecParser;

impl clap::builder::TypedValueParser for RootSpecParser {
    type Value = (String, String);

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<Self::Value, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{message}\n"),
            )
            .with_cmd(cmd)
        };
        let spec = value
            .to_str()
            .ok_or_else(|| invalid("--root: the value is not UTF-8".to_owned()))?;
        parse_root_spec(spec).map_err(invalid)
    }
}

/// `run1=./checkpoints` → (`run1`, `./checkpoints`).
fn parse_root_spec(spec: &str) -> std::result::Result<(String, String), String> {
    let Some((name, loc)) = spec.split_once('=') else {
        let shown = match url::Url::parse(spec) {
            Ok(u) if u.scheme().len() > 1 => redact_url(&u),
            _ => spec.to_owned(),
        };
        return Err(format!(
            "--root {shown:?}: expected NAME=LOCATION, e.g. run1=./checkpoints"
        ));
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "--root {name:?}=...: the name must be letters, digits or _ (it becomes the schema: NAME.summaries)"
        ));
    }
    if loc.trim().is_empty() {
        return Err(format!(
            "--root {name}=: the location is empty; give a directory or URL"
        ));
    }
    Ok((name.to_ascii_lowercase(), loc.to_owned()))
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
    fn usage(message: impl Into<String>) -> Self {
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

impl SessionArgs {
    pub fn session_options(&self, storage: StorageOptions) -> SessionOptions {
        SessionOptions {
            memory_limit: self.memory_limit,
            target_partitions: None,
            decode: DecodeOptions {
                on_error: self.on_error.into(),
                ..Default::default()
            },
            storage,
            sandbox: self.sandbox,
            workers: self.workers.clone().map(|w| w.0).unwrap_or_default(),
        }
    }

    pub fn roots(&self) -> std::result::Result<Vec<(String, String)>, Failure> {
        let mut roots = Vec::new();
        if let Some(r) = &self.root {
            roots.push(("root".to_owned(), r.clone()));
        }
        roots.extend(self.roots.iter().cloned());
        if roots.is_empty() {
            return Err(Failure::usage(
                "no root: give a directory or URL, e.g. `ckpt query data \"SELECT ...\"`",
            ));
        }
        Ok(roots)
    }

    pub async fn open(
        &self,
        storage: StorageOptions,
    ) -> std::result::Result<CheckpointSession, Failure> {
        Ok(CheckpointSession::new(self.roots()?, self.session_options(storage)).await?)
    }

    pub fn printer(&self) -> Printer {
        Printer {
            format: self.format,
            max_rows: self.max_rows,
            null: self.null.clone(),
            max_width: match (self.wide, self.max_width) {
                (true, _) => MaxWidth::Full,
                (false, Some(n)) => MaxWidth::Columns(n as usize),
                (false, None) => MaxWidth::Terminal,
            },
        }
    }
}

impl Command {
    /// The `--memory-limit` of the commands that take one.
    fn memory_limit(&self) -> Option<usize> {
        match self {
            Command::Query(args) => args.session.memory_limit,
            Command::Shell(args) => args.memory_limit,
            Command::Convert(args) => args.memory_limit,
            Command::Check(args) => args.memory_limit,
            Command::Worker { memory_limit, .. } => *memory_limit,
            _ => None,
        }
    }
}

/// Entry point of the binary: parses, runs, prints errors, returns the exit code: 0 on
/// success, 1 on failure, 2 on a usage error (clap's own parse errors exit 2 too). A
/// closed standard output (`ckpt query ... | head -1`) ends the command quietly, with 0.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cli = Cli::parse();
    malloc::trim_freed_memory_under(cli.command.memory_limit());
    init_tracing(cli.verbose, matches!(cli.command, Command::Worker { .. }));
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

/// Completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is
/// called, not when the future is first polled: a signal sent between the two (a worker
/// told to stop as soon as it said it listens) would otherwise end the process by the
/// default action, without the clean stop.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
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
        Command::Ls {
            root,
            format,
            bytes,
        } => {
            let root = Root::open_existing(root, &storage)?;
            let infos = ckpt::catalog::describe_root(&root).await?;
            match format {
                LsFormat::Json => {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string_pretty(&infos).expect("serialisable")
                    )
                    .map_err(io)?;
                }
                LsFormat::Table => {
                    writeln!(
                        out,
                        "{:<24} {:<16} {:<8} {:<7} {:>10} {:>12} {:>6}",
                        "checkpoint",
                        "kind",
                        "format",
                        "layout",
                        "rows",
                        if *bytes { "bytes" } else { "size" },
                        "parts"
                    )
                    .map_err(io)?;
                    for i in &infos {
                        writeln!(
                            out,
                            "{:<24} {:<16} {:<8} {:<7} {:>10} {:>12} {:>6}",
                            i.file,
                            i.kind.as_deref().unwrap_or("-"),
                            i.format,
                            i.layout.as_deref().unwrap_or("-"),
                            i.rows.map_or("?".to_owned(), |r| r.to_string()),
                            human::size_or_bytes(i.bytes, *bytes),
                            i.parts
                        )
                        .map_err(io)?;
                    }
                    if infos.is_empty() {
                        writeln!(out, "(no checkpoints in {})", root.display()).map_err(io)?;
                    }
                }
            }
            // Unreadable checkpoints are listed with the rest, then named with their error;
            // the exit code says something needs attention.
            let unreadable: Vec<_> = infos.iter().filter(|i| i.error.is_some()).collect();
            for i in &unreadable {
                eprintln!("error: {}", i.error.as_deref().unwrap_or_default());
            }
            Ok(if unreadable.is_empty() { 0 } else { 1 })
        }
        Command::Query(args) => {
            // `ckpt query --root a=X --root b=Y "SQL"`: clap gives the lone positional to
            // ROOT; when it is SQL, it is the statement (a path never parses as SQL).
            let (mut session_args, mut sql_arg) = (args.session.clone(), args.sql.clone());
            if let (Some(r), None, None) = (&session_args.root, &sql_arg, &args.file)
                && !session_args.roots.is_empty()
                && exec::parse(r).is_ok_and(|s| !s.is_empty())
            {
                sql_arg = session_args.root.take();
            }
            let args = QueryArgs {
                session: session_args,
                sql: sql_arg,
                file: args.file.clone(),
            };
            let sql = match (&args.sql, &args.file) {
                (Some(s), None) => s.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| Error::io(format!("cannot read {}", f.display()), e))?,
                (Some(_), Some(_)) => return Err(Failure::usage("give SQL or -f FILE, not both")),
                (None, None) => {
                    if std::io::stdin().is_terminal() {
                        return Err(Failure::usage(
                            "no SQL: give a statement, -f FILE, or pipe SQL on standard input",
                        ));
                    }
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .map_err(|e| Error::io("cannot read standard input", e))?;
                    s
                }
            };
            // Nothing to run (an empty file, `< /dev/null`, only comments) is a usage error,
            // like no SQL at all.
            if exec::parse(&sql)?.is_empty() {
                return Err(Failure::usage(
                    "no SQL statement given: give a statement, -f FILE, or pipe SQL on standard input",
                ));
            }
            let session = args.session.open(storage).await?;
            let printer = args.session.printer();
            let bar = !args.session.quiet;
            run_script(&session, &sql, &printer, args.session.timing, bar, out).await?;
            Ok(0)
        }
        Command::Shell(args) => {
            let session = args.open(storage).await?;
            shell::run(session, args.printer(), args.timing, !args.quiet, pipe).await?;
            Ok(0)
        }
        Command::Convert(args) => {
            let opts = ConvertOptions {
                to: args.to.map(FileFormat::from),
                write: WriteOptions {
                    format: None,
                    compression: args.compression,
                    layout: args.layout.into(),
                    float32_embeddings: args.float32_embeddings,
                },
                session: SessionOptions {
                    memory_limit: args.memory_limit,
                    decode: DecodeOptions {
                        on_error: args.on_error.into(),
                        ..Default::default()
                    },
                    storage,
                    ..Default::default()
                },
                progress: None,
            };
            let bar = progress::Bar::new(progress::Unit::Bytes, args.quiet);
            let opts = ConvertOptions {
                progress: bar.callback(),
                ..opts
            };
            let started = Instant::now();
            let done = convert(&args.src, &args.dst, &opts).await;
            bar.finish();
            let done = done?;
            let (mut rin, mut rout, mut rows) = (0u64, 0u64, 0u64);
            // `--bytes`: sizes as `N bytes`, the exact form scripts parse.
            let size = |n: u64| {
                if args.bytes {
                    format!("{n} bytes")
                } else {
                    human::size(n)
                }
            };
            for c in &done {
                writeln!(
                    out,
                    "{} -> {}: {} rows, {} in, {} out, ratio {:.2}x, {}",
                    c.source,
                    c.target,
                    c.rows,
                    size(c.bytes_in),
                    size(c.bytes_out),
                    c.ratio(),
                    human::duration(c.elapsed)
                )
                .map_err(io)?;
                rin += c.bytes_in;
                rout += c.bytes_out;
                rows += c.rows;
                print_skipped(&c.skipped);
            }
            if done.len() > 1 {
                writeln!(
                    out,
                    "total: {} checkpoints, {rows} rows, {} in, {} out, ratio {:.2}x, {}",
                    done.len(),
                    size(rin),
                    size(rout),
                    if rout == 0 {
                        0.0
                    } else {
                        rin as f64 / rout as f64
                    },
                    human::duration(started.elapsed())
                )
                .map_err(io)?;
            }
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "convert finished"
            );
            Ok(0)
        }
        Command::Sizes {
            root,
            compression,
            format,
            bytes,
        } => {
            let opts = ConvertOptions {
                write: WriteOptions {
                    compression: *compression,
                    ..Default::default()
                },
                session: SessionOptions {
                    storage,
                    ..Default::default()
                },
                ..Default::default()
            };
            let rows = sizes(root, &opts).await?;
            match format {
                LsFormat::Json => {
                    let v: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|r| {
                            serde_json::json!({"checkpoint": r.name, "jsonl_bytes": r.jsonl_bytes, "parquet_bytes": r.parquet_bytes,
                                "reduction_pct": r.reduction_pct(), "ratio": r.ratio(), "converted": r.converted})
                        })
                        .collect();
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string_pretty(&v).expect("serialisable")
                    )
                    .map_err(io)?;
                }
                LsFormat::Table => {
                    writeln!(
                        out,
                        "| Data Type | JSONL Size | Parquet Size | Reduction | Ratio |"
                    )
                    .map_err(io)?;
                    writeln!(
                        out,
                        "|-----------|------------|--------------|-----------|-------|"
                    )
                    .map_err(io)?;
                    for r in &rows {
                        writeln!(
                            out,
                            "| {} | {} | {} | {:.1}% | {:.1}x |",
                            r.name,
                            human::size_or_bytes(r.jsonl_bytes, *bytes),
                            human::size_or_bytes(r.parquet_bytes, *bytes),
                            r.reduction_pct(),
                            r.ratio()
                        )
                        .map_err(io)?;
                    }
                }
            }
            Ok(0)
        }
        Command::Check(args) => {
            let mut roots: Vec<(String, String)> = args
                .root
                .iter()
                .map(|r| ("root".to_owned(), r.clone()))
                .collect();
            roots.extend(args.roots.iter().cloned());
            if roots.is_empty() {
                return Err(Failure::usage(
                    "no root: give a directory or URL, e.g. `ckpt check data`",
                ));
            }
            let opts = ckpt::check::CheckOptions {
                session: SessionOptions {
                    memory_limit: args.memory_limit,
                    storage,
                    ..Default::default()
                },
                sample: args.sample,
            };
            let report = ckpt::check::check(roots, &opts).await?;
            match args.format {
                LsFormat::Json => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                ),
                LsFormat::Table => write!(out, "{report}"),
            }
            .map_err(io)?;
            Ok(if report.consistent { 0 } else { 1 })
        }
        Command::Append {
            root,
            name,
            file,
            compression,
            layout,
            quiet,
        } => {
            let write = write_options(*compression, (*layout).into());
            let bar = progress::Bar::new(progress::Unit::Bytes, *quiet);
            let started = Instant::now();
            let done =
                ckpt::append::append_file(root, name, file, &write, &storage, bar.callback()).await;
            bar.finish();
            let done = done?;
            writeln!(
                out,
                "{}: appended {} rows from {} as a new part ({}, {})",
                done.checkpoint,
                done.rows,
                done.source,
                human::size(done.bytes),
                human::duration(started.elapsed())
            )
            .map_err(io)?;
            Ok(0)
        }
        Command::Compact {
            root,
            name,
            compression,
            layout,
            quiet,
        } => {
            let write = write_options(*compression, Layout::default());
            let layout = layout.map(Layout::from);
            let bar = progress::Bar::new(progress::Unit::Bytes, *quiet);
            let started = Instant::now();
            let compacted =
                ckpt::append::compact(root, name, &write, layout, &storage, bar.callback()).await;
            bar.finish();
            let (checkpoint, stats) = compacted?;
            if stats.parts == 0 {
                writeln!(out, "{checkpoint}: no appended parts; nothing to do").map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{checkpoint}: compacted {} parts into {} rows, {}, {}",
                    stats.parts,
                    stats.rows,
                    human::size(stats.bytes),
                    human::duration(started.elapsed())
                )
                .map_err(io)?;
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            // Into memory first: the generator panics on a failed write, and a reader that
            // went away (`| head`) must end the command quietly like any other output.
            let mut script = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "ckpt", &mut script);
            out.write_all(&script).map_err(io)?;
            Ok(0)
        }
        Command::Worker {
            listen,
            memory_limit,
        } => {
            let listener = tokio::net::TcpListener::bind(listen.as_str())
                .await
                .map_err(|e| {
                    Failure::Failed(Error::io(
                        format!("cannot listen on {listen} (is the port taken, or the host not this machine's?)"),
                        e,
                    ))
                })?;
            let addr = listener.local_addr().map_err(io)?;
            let worker = ckpt::cluster::worker(&ckpt::cluster::WorkerOptions {
                storage,
                memory_limit: *memory_limit,
            })?;
            // Printed once bound, so whoever started the worker (a script, a test) can read
            // the port and know it is ready.
            // Signal handlers first: whoever reads the line below may stop the worker at once.
            let stop = stop_signal();
            writeln!(out, "listening on {addr}").map_err(io)?;
            out.flush().map_err(io)?;
            tracing::info!("worker listening on {addr}");
            ckpt::cluster::serve(listener, worker, stop).await?;
            tracing::info!("worker stopped");
            Ok(0)
        }
        Command::Generate {
            root,
            summaries,
            dim,
            seed,
            format,
            compression,
            layout,
            no_conversations,
            quiet,
        } => {
            let root = Root::with_options(root, &storage)?;
            let formats = match format {
                GenerateFormat::Jsonl => vec![FileFormat::Jsonl],
                GenerateFormat::Parquet => vec![FileFormat::Parquet],
                GenerateFormat::Both => vec![FileFormat::Jsonl, FileFormat::Parquet],
            };
            let opts = GenerateOptions {
                summaries: *summaries,
                dim: *dim,
                seed: *seed,
                formats,
                compression: *compression,
                layout: (*layout).into(),
                conversations: !no_conversations,
                progress: None,
            };
            let bar = progress::Bar::new(progress::Unit::Rows, *quiet);
            let opts = GenerateOptions {
                progress: bar.callback(),
                ..opts
            };
            let generated = generate(&root, &opts).await;
            bar.finish();
            for (file, stats) in generated? {
                writeln!(
                    out,
                    "{}: {} rows, {}",
                    root.describe(&file),
                    stats.rows,
                    human::size(stats.bytes)
                )
                .map_err(io)?;
            }
            Ok(0)
        }
    }
}

fn io(e: std::io::Error) -> Error {
    Error::io("cannot write the output", e)
}

/// Runs every statement of a script, printing each result; stops at the first error,
/// naming the statement. Skipped lines (`--on-error skip`) are reported on stderr. With
/// `bar`, a COPY shows a progress bar on stderr when it is a terminal.
pub async fn run_script(
    session: &CheckpointSession,
    sql: &str,
    printer: &Printer,
    timing: bool,
    bar: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let statements = exec::parse(sql)?;
    if statements.is_empty() {
        return Err(Error::config("no SQL statement given"));
    }
    for (text, stmt) in statements {
        let started = Instant::now();
        let res = async {
            let df = exec::plan(session, stmt).await?;
            let stream = match copy_bar(session, &df, bar) {
                Some((bar, callback, label)) => {
                    let stream =
                        ckpt::progress::execute_with_progress(df, &label, callback).await?;
                    // COPY's one row, its count, comes when the file is written: the bar is
                    // cleared before it is printed (and on an error, before the message).
                    let schema = stream.schema();
                    let batches = stream.try_collect::<Vec<_>>().await;
                    bar.finish();
                    let batches = futures::stream::iter(batches?.into_iter().map(Ok));
                    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
                }
                None => df.execute_stream().await?,
            };
            printer.print(stream, out).await
        }
        .await;
        report_skipped(session);
        let printed = res.map_err(|e| exec::statement_error(&text, e))?;
        if printed.shown < printed.rows {
            eprintln!(
                "({} rows, {} shown; raise --max-rows to see more)",
                printed.rows, printed.shown
            );
        }
        if timing {
            eprintln!(
                "{} rows in {}",
                printed.rows,
                human::duration(started.elapsed())
            );
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}

/// A bar for `df` if it is a COPY and one is wanted and drawn (standard error is a
/// terminal), with its callback and the target's name as the bar's label. Not with
/// workers: the scans run there, and their counters never come back here.
fn copy_bar(
    session: &CheckpointSession,
    df: &DataFrame,
    wanted: bool,
) -> Option<(progress::Bar, ckpt::progress::ProgressFn, String)> {
    let LogicalPlan::Copy(copy) = df.logical_plan() else {
        return None;
    };
    if !wanted || !session.options().workers.is_empty() {
        return None;
    }
    let bar = progress::Bar::new(progress::Unit::Bytes, false);
    let callback = bar.callback()?;
    let target = copy.output_url.trim_end_matches('/');
    let label = target.rsplit('/').next().unwrap_or(target).to_owned();
    Some((bar, callback, label))
}

fn report_skipped(session: &CheckpointSession) {
    print_skipped(&session.take_skipped());
}

fn print_skipped(skipped: &[(String, ckpt::jsonl::SkippedLine)]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("skipped {} bad line(s):", skipped.len());
    for (file, l) in skipped.iter().take(20) {
        eprintln!("  {file}:{}: {}", l.line, l.message);
    }
    if skipped.len() > 20 {
        eprintln!("  ... and {} more", skipped.len() - 20);
    }
}

/// What `append` and `compact` write with: the format is the checkpoint's own.
fn write_options(compression: Compression, layout: Layout) -> WriteOptions {
    WriteOptions {
        format: None,
        compression,
        layout,
        float32_embeddings: false,
    }
}
