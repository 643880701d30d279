//! The command line's arguments: clap's definitions of every command and option, and the
//! parsers of the values clap does not know (sizes, codecs, roots, workers).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ckpt::context::{CheckpointSession, SessionOptions};
use ckpt::format::{Compression, FileFormat, Layout};
use ckpt::jsonl::{DecodeOptions, OnError};
use ckpt::storage::{StorageOptions, redact_url};
use ckpt::{Error, Result};

use super::Failure;
use super::print::{MaxWidth, OutputFormat, Printer};

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
    Ls(LsArgs),
    /// Run SQL over the checkpoints of one or more roots.
    #[command(
        after_help = "Examples:\n  ckpt query data \"SELECT topic, count(*) FROM summaries GROUP BY topic\"\n  echo 'SELECT 1' | ckpt query data\n  ckpt query data -f queries/hierarchy.sql --format json"
    )]
    Query(QueryArgs),
    /// Interactive SQL shell (\d tables, \d NAME schema, \timing, \format FMT, \null TEXT, \q).
    Shell(SessionArgs),
    /// Convert a checkpoint file or a whole root between JSONL, Parquet and HF datasets.
    #[command(
        after_help = "Examples:\n  ckpt convert data/summaries.jsonl out/summaries.parquet\n  ckpt convert data out --to parquet --compression zstd(3)\n  ckpt convert data out --layout kura   # Parquet that Kura's ParquetCheckpointManager loads"
    )]
    Convert(ConvertArgs),
    /// JSONL vs Parquet size of each checkpoint ("Compression Benefits").
    Sizes(SizesArgs),
    /// Check that a pipeline run is consistent: ids, clusters, hierarchy, projections.
    #[command(
        after_help = "Checks each root on its own: duplicate ids, embeddings of different lengths,\nunreadable checkpoints, base clusters' chat ids against the summaries, summaries against\nthe conversations and the base clusters, the meta-cluster hierarchy (unknown parents,\ncycles, a parent's chat ids the union of its children's) and the projections.\nExit codes: 0 consistent, 1 problems found (or a root cannot be read), 2 usage.\n\nExamples:\n  ckpt check data\n  ckpt check s3://bucket/run1 --format json\n  ckpt check --root run1=./a --root run2=./b"
    )]
    Check(CheckArgs),
    /// Append the rows of a JSONL or Parquet file to a checkpoint as one new part.
    #[command(
        after_help = "Every row is checked by the checkpoint kind's codec first: a bad one fails the\nappend (naming file, line and field) and stores nothing. Several appenders may run at\nonce; an id appended again replaces its earlier row.\n\nExamples:\n  ckpt append ./checkpoints summaries batch-0007.jsonl\n  ckpt append s3://bucket/run1 summaries.parquet batch.parquet"
    )]
    Append(AppendArgs),
    /// Rewrite a checkpoint and its appended parts as one file, atomically.
    #[command(
        after_help = "Readers meanwhile see the checkpoint before or after, never both. The result loads\nin Kura (JSONL, or Parquet with --layout kura). Run one compaction of a checkpoint at a time.\n\nExamples:\n  ckpt compact ./checkpoints summaries\n  ckpt compact ./checkpoints summaries.parquet --layout kura"
    )]
    Compact(CompactArgs),
    /// Serve as a worker: run the parts of queries that `ckpt query --workers` sends.
    #[command(
        after_help = "The worker reads every root a query names itself, with its own environment\n(AWS_*, ...) and --storage-option values: no credential is sent to it. It prints\n`listening on HOST:PORT` when ready and stops on SIGTERM or Ctrl-C, after the tasks it\nis running.\n\nExamples:\n  ckpt worker --listen 0.0.0.0:50051\n  ckpt query data --workers 10.0.0.5:50051,10.0.0.6:50051 \"SELECT topic, count(*) FROM summaries GROUP BY topic\""
    )]
    Worker(WorkerArgs),
    /// Explore a pipeline run in the browser: overview, cluster tree, map, summaries, SQL.
    #[command(
        after_help = "Prints `listening on http://HOST:PORT/` and serves the page and its JSON API (see\ndocs/serve.md) until SIGTERM or Ctrl-C. Only read statements run; requests must name\nthe server by its address or localhost.\n\nExamples:\n  ckpt serve data\n  ckpt serve s3://bucket/run1 --listen 127.0.0.1:0 --memory-limit 2G\n  ckpt serve --root run1=./a --root run2=./b --query-timeout 120"
    )]
    Serve(ServeArgs),
    /// Write a deterministic, realistic sample of all five checkpoint kinds.
    #[command(after_help = "Example:\n  ckpt generate data --summaries 200 --dim 16 --format both")]
    Generate(GenerateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  ckpt completions bash > ~/.local/share/bash-completion/completions/ckpt\n  ckpt completions zsh > ~/.zfunc/_ckpt   # with fpath+=(~/.zfunc) before compinit\n  ckpt completions fish > ~/.config/fish/completions/ckpt.fish"
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Directory or URL (it must exist).
    pub root: String,
    #[arg(long, value_enum, default_value_t = LsFormat::Table, ignore_case = true)]
    pub format: LsFormat,
    /// Sizes as exact numbers of bytes, not `329.3 KiB` (JSON always has bytes).
    #[arg(long)]
    pub bytes: bool,
}

#[derive(Debug, Args)]
pub struct SizesArgs {
    /// Directory or URL (it must exist).
    pub root: String,
    /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
    #[arg(long, default_value = "snappy", value_parser = parse_compression)]
    pub compression: Compression,
    #[arg(long, value_enum, default_value_t = LsFormat::Table, ignore_case = true)]
    pub format: LsFormat,
    /// Sizes as exact numbers of bytes, not `329.3 KiB` (JSON always has bytes).
    #[arg(long)]
    pub bytes: bool,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Directory or URL of the checkpoints (created if missing).
    pub root: String,
    /// Checkpoint name (`summaries`; with an extension to choose the format).
    pub name: String,
    /// The rows: a .jsonl or .parquet file (path or URL).
    pub file: String,
    /// Parquet codec of the new part: snappy, gzip, brotli, lz4, zstd(3), ...
    #[arg(long, default_value = "snappy", value_parser = parse_compression)]
    pub compression: Compression,
    /// Parquet layout of the new part: native or kura.
    #[arg(long, value_enum, default_value_t = LayoutArg::Native, ignore_case = true)]
    pub layout: LayoutArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Directory or URL of the checkpoints (it must exist).
    pub root: String,
    /// Checkpoint name (`summaries`, or `summaries.parquet` when both formats exist).
    pub name: String,
    /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
    #[arg(long, default_value = "snappy", value_parser = parse_compression)]
    pub compression: Compression,
    /// Parquet layout: native (real types) or kura (what Kura's Parquet manager reads).
    /// Default: the layout the checkpoint has.
    #[arg(long, value_enum, ignore_case = true)]
    pub layout: Option<LayoutArg>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Address to listen on (port 0: any free port; the one chosen is printed).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Memory pool of the worker (e.g. 2G), shared by its tasks; sorts spill beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory or URL (created if missing).
    pub root: String,
    #[arg(long, default_value_t = 1000)]
    pub summaries: usize,
    /// Embedding dimension (0: no embeddings).
    #[arg(long, default_value_t = 16)]
    pub dim: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = GenerateFormat::Jsonl, ignore_case = true)]
    pub format: GenerateFormat,
    /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
    #[arg(long, default_value = "snappy", value_parser = parse_compression)]
    pub compression: Compression,
    /// Parquet layout: native (real types) or kura (what Kura's Parquet manager reads).
    #[arg(long, value_enum, default_value_t = LayoutArg::Native, ignore_case = true)]
    pub layout: LayoutArg,
    /// Skip the raw conversations.
    #[arg(long)]
    pub no_conversations: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum, ignore_case = true)]
    pub shell: clap_complete::Shell,
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
    /// A Hugging Face dataset directory (Kura's HFDatasetCheckpointManager).
    Hf,
}

impl From<TargetFormat> for FileFormat {
    fn from(t: TargetFormat) -> FileFormat {
        match t {
            TargetFormat::Jsonl => FileFormat::Jsonl,
            TargetFormat::Parquet => FileFormat::Parquet,
            TargetFormat::Hf => FileFormat::Hf,
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
pub struct ServeArgs {
    /// Directory or URL whose checkpoints are served (the default schema; it must exist).
    pub root: Option<String>,
    /// More roots as NAME=LOCATION (repeatable); each is a schema: NAME.summaries.
    #[arg(long = "root", value_name = "NAME=LOCATION", value_parser = RootSpecParser)]
    pub roots: Vec<(String, String)>,
    /// Address to listen on (port 0: any free port). Other than a loopback address, the
    /// checkpoints are served to whoever can reach it (a warning says so).
    #[arg(long, value_name = "HOST:PORT", default_value = ckpt::serve::DEFAULT_LISTEN)]
    pub listen: String,
    /// Memory pool shared by the queries (e.g. 512M, 2G); sorts spill to disk beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_limit: Option<usize>,
    /// Seconds one query may run before it is stopped.
    #[arg(long, value_name = "SECONDS", default_value_t = ckpt::serve::DEFAULT_QUERY_TIMEOUT.as_secs_f64())]
    pub query_timeout: f64,
    /// Rows the SQL box shows at most (downloads have the whole result).
    #[arg(long, value_name = "N", default_value_t = ckpt::serve::DEFAULT_ROW_CAP)]
    pub max_rows: usize,
    /// Run queries on these workers (`ckpt worker`): HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT,...", value_parser = parse_workers_arg)]
    pub workers: Option<WorkerList>,
}

impl ServeArgs {
    /// What the server serves, and how.
    pub fn options(
        &self,
        storage: StorageOptions,
    ) -> std::result::Result<ckpt::serve::ServeOptions, Failure> {
        let mut roots: Vec<(String, String)> = self
            .root
            .iter()
            .map(|r| ("root".to_owned(), r.clone()))
            .collect();
        roots.extend(self.roots.iter().cloned());
        if roots.is_empty() {
            return Err(Failure::usage(
                "no root: give a directory or URL, e.g. `ckpt serve data`",
            ));
        }
        if !(self.query_timeout.is_finite() && self.query_timeout > 0.0) {
            return Err(Failure::usage(
                "--query-timeout: give a number of seconds above 0",
            ));
        }
        Ok(ckpt::serve::ServeOptions {
            roots,
            session: SessionOptions {
                memory_limit: self.memory_limit,
                storage,
                sandbox: true,
                workers: self.workers.clone().map(|w| w.0).unwrap_or_default(),
                ..Default::default()
            },
            listen: self.listen.clone(),
            query_timeout: std::time::Duration::from_secs_f64(self.query_timeout),
            row_cap: self.max_rows,
        })
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Directory or URL of the checkpoints (it must exist).
    pub root: Option<String>,
    /// More roots as NAME=LOCATION (repeatable); each is checked on its own.
    #[arg(long = "root", value_name = "NAME=LOCATION", value_parser = RootSpecParser)]
    pub roots: Vec<(String, String)>,
    /// table: one line per problem; json: the report (`ckpt::ops::check::CheckReport`).
    #[arg(long, value_enum, default_value_t = LsFormat::Table, ignore_case = true)]
    pub format: LsFormat,
    /// How many ids each problem lists (the count is always the total).
    #[arg(long, value_name = "N", default_value_t = ckpt::ops::check::DEFAULT_SAMPLE)]
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
    pub fn memory_limit(&self) -> Option<usize> {
        match self {
            Command::Query(args) => args.session.memory_limit,
            Command::Shell(args) => args.memory_limit,
            Command::Convert(args) => args.memory_limit,
            Command::Check(args) => args.memory_limit,
            Command::Worker(args) => args.memory_limit,
            Command::Serve(args) => args.memory_limit,
            _ => None,
        }
    }
}
