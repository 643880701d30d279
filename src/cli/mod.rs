//! The `ckpt` command line: argument parsing and printing only. Every command calls the
//! library (catalog, exec, convert, generate); nothing here is reachable only from `main`.

pub mod shell;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::context::{CheckpointSession, SessionOptions};
use crate::convert::{ConvertOptions, convert, sizes};
use crate::exec;
use crate::format::{Compression, FileFormat, Layout, WriteOptions};
use crate::generate::{GenerateOptions, generate};
use crate::jsonl::{DecodeOptions, OnError};
use crate::print::Printer;
use crate::storage::{Root, StorageOptions};
use crate::{Error, Result};

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
  ckpt shell data

Object stores: s3://, gs://, az://, http(s):// and memory:// roots work wherever a path does.
S3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP...;
--storage-option KEY=VALUE overrides them (e.g. aws_endpoint=http://127.0.0.1:9000).";

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
        /// Directory or URL.
        root: String,
        #[arg(long, default_value = "table")]
        format: LsFormat,
    },
    /// Run SQL over the checkpoints of one or more roots.
    #[command(
        after_help = "Examples:\n  ckpt query data \"SELECT topic, count(*) FROM summaries GROUP BY topic\"\n  echo 'SELECT 1' | ckpt query data\n  ckpt query data -f queries/hierarchy.sql --format json"
    )]
    Query(QueryArgs),
    /// Interactive SQL shell (\\d tables, \\d NAME schema, \\timing, \\format FMT, \\q).
    Shell(SessionArgs),
    /// Convert a checkpoint file or a whole root between JSONL and Parquet.
    #[command(
        after_help = "Examples:\n  ckpt convert data/summaries.jsonl out/summaries.parquet\n  ckpt convert data out --to parquet --compression zstd(3)\n  ckpt convert data out --layout kura   # Parquet that Kura's ParquetCheckpointManager loads"
    )]
    Convert(ConvertArgs),
    /// JSONL vs Parquet size of each checkpoint ("Compression Benefits").
    Sizes {
        root: String,
        #[arg(long, default_value = "snappy")]
        compression: String,
        #[arg(long, default_value = "table")]
        format: LsFormat,
    },
    /// Write a deterministic, realistic sample of all five checkpoint kinds.
    #[command(after_help = "Example:\n  ckpt generate data --summaries 200 --dim 16 --format both")]
    Generate {
        root: String,
        #[arg(long, default_value_t = 1000)]
        summaries: usize,
        /// Embedding dimension (0: no embeddings).
        #[arg(long, default_value_t = 16)]
        dim: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value = "jsonl")]
        format: GenerateFormat,
        #[arg(long, default_value = "snappy")]
        compression: String,
        #[arg(long, default_value = "native")]
        layout: String,
        /// Skip the raw conversations.
        #[arg(long)]
        no_conversations: bool,
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

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Directory or URL whose checkpoints become tables (the default schema).
    pub root: Option<String>,
    /// More roots as NAME=LOCATION (repeatable); each is a schema: NAME.summaries.
    #[arg(long = "root", value_name = "NAME=LOCATION")]
    pub roots: Vec<String>,
    /// Memory pool (e.g. 512M, 2G); sorts and aggregations spill to disk beyond it.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// fail (default) or skip: drop undecodable JSONL lines and report them.
    #[arg(long, default_value = "fail")]
    pub on_error: String,
    /// Output format.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Print at most this many rows of each result.
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Print each statement's time on stderr.
    #[arg(long)]
    pub timing: bool,
}

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
pub struct ConvertArgs {
    /// A checkpoint file or a root (directory or URL).
    pub src: String,
    /// A file (with extension) or a root.
    pub dst: String,
    /// Target format (default: the destination's extension, else the other format).
    #[arg(long)]
    pub to: Option<String>,
    /// Parquet codec: snappy, gzip, brotli, lz4, zstd, with an optional level: zstd(3).
    #[arg(long, default_value = "snappy")]
    pub compression: String,
    /// Parquet layout: native (real types) or kura (what Kura's Parquet manager reads).
    #[arg(long, default_value = "native")]
    pub layout: String,
    /// Parquet: store embeddings as float32 (fails, storing nothing, if a value is not
    /// exactly a float32).
    #[arg(long)]
    pub float32_embeddings: bool,
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    #[arg(long, default_value = "fail")]
    pub on_error: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `512M`, `2G`, `1048576`.
pub fn parse_size(s: &str) -> Result<usize> {
    let v: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| Error::config(format!("{s:?} is not a size ({e}); use e.g. 512M or 2G")))?;
    Ok(v.as_u64() as usize)
}

fn storage_options(cli: &Cli) -> Result<StorageOptions> {
    let mut o = StorageOptions::default();
    for kv in &cli.storage_option {
        o.set(kv)?;
    }
    Ok(o)
}

impl SessionArgs {
    pub fn session_options(&self, storage: StorageOptions) -> Result<SessionOptions> {
        Ok(SessionOptions {
            memory_limit: self.memory_limit.as_deref().map(parse_size).transpose()?,
            target_partitions: None,
            decode: DecodeOptions {
                on_error: self.on_error.parse::<OnError>()?,
                ..Default::default()
            },
            storage,
        })
    }

    pub fn roots(&self) -> Result<Vec<(String, String)>> {
        let mut roots = Vec::new();
        if let Some(r) = &self.root {
            roots.push(("root".to_owned(), r.clone()));
        }
        for spec in &self.roots {
            let (name, loc) = spec.split_once('=').ok_or_else(|| {
                Error::config(format!(
                    "--root {spec:?}: expected NAME=LOCATION, e.g. run1=./checkpoints"
                ))
            })?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::config(format!(
                    "--root {spec:?}: the name must be letters, digits or _"
                )));
            }
            roots.push((name.to_ascii_lowercase(), loc.to_owned()));
        }
        if roots.is_empty() {
            return Err(Error::config(
                "no root: give a directory or URL, e.g. `ckpt query data \"SELECT ...\"`",
            ));
        }
        Ok(roots)
    }

    pub async fn open(&self, storage: StorageOptions) -> Result<CheckpointSession> {
        CheckpointSession::new(self.roots()?, self.session_options(storage)?).await
    }

    pub fn printer(&self) -> Result<Printer> {
        Ok(Printer {
            format: self.format.parse()?,
            max_rows: self.max_rows,
        })
    }
}

/// Entry point of the binary: parses, runs, prints errors, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "ckpt=info",
        _ => "ckpt=debug,datafusion=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let storage = storage_options(&cli)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Command::Ls { root, format } => {
            let root = Root::with_options(root, &storage)?;
            let infos = crate::catalog::describe_root(&root).await?;
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
                        "{:<24} {:<16} {:<8} {:<7} {:>10} {:>12}",
                        "checkpoint", "kind", "format", "layout", "rows", "bytes"
                    )
                    .map_err(io)?;
                    for i in &infos {
                        writeln!(
                            out,
                            "{:<24} {:<16} {:<8} {:<7} {:>10} {:>12}",
                            i.file,
                            i.kind.as_deref().unwrap_or("-"),
                            i.format,
                            i.layout.as_deref().unwrap_or("-"),
                            i.rows.map_or("?".to_owned(), |r| r.to_string()),
                            i.bytes
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
            if let (Some(r), None, None) = (&session_args.root, &sql_arg, &args.file) {
                if !session_args.roots.is_empty() && exec::parse(r).is_ok_and(|s| !s.is_empty()) {
                    sql_arg = session_args.root.take();
                }
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
                (Some(_), Some(_)) => return Err(Error::config("give SQL or -f FILE, not both")),
                (None, None) => {
                    if std::io::stdin().is_terminal() {
                        return Err(Error::config(
                            "no SQL: give a statement, -f FILE, or pipe SQL on standard input",
                        ));
                    }
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .map_err(|e| Error::io("cannot read standard input", e))?;
                    s
                }
            };
            let session = args.session.open(storage).await?;
            let printer = args.session.printer()?;
            run_script(&session, &sql, printer, args.session.timing, &mut out).await?;
            Ok(0)
        }
        Command::Shell(args) => {
            let session = args.open(storage).await?;
            shell::run(session, args.printer()?, args.timing).await?;
            Ok(0)
        }
        Command::Convert(args) => {
            let opts = ConvertOptions {
                to: args.to.as_deref().map(str::parse).transpose()?,
                write: WriteOptions {
                    format: None,
                    compression: args.compression.parse()?,
                    layout: args.layout.parse()?,
                    float32_embeddings: args.float32_embeddings,
                },
                session: SessionOptions {
                    memory_limit: args.memory_limit.as_deref().map(parse_size).transpose()?,
                    decode: DecodeOptions {
                        on_error: args.on_error.parse()?,
                        ..Default::default()
                    },
                    storage,
                    ..Default::default()
                },
                progress: None,
            };
            let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {msg} {pos} rows ({per_sec})",
                    )
                    .expect("valid template"),
                );
                b
            });
            let opts = ConvertOptions {
                progress: bar.clone().map(|b| {
                    Arc::new(move |name: &str, rows: u64| {
                        b.set_message(name.to_owned());
                        b.set_position(rows);
                    }) as Arc<dyn Fn(&str, u64) + Send + Sync>
                }),
                ..opts
            };
            let started = Instant::now();
            let done = convert(&args.src, &args.dst, &opts).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let done = done?;
            let (mut rin, mut rout, mut rows) = (0u64, 0u64, 0u64);
            for c in &done {
                writeln!(
                    out,
                    "{} -> {}: {} rows, {} bytes in, {} bytes out, ratio {:.2}x",
                    c.source,
                    c.target,
                    c.rows,
                    c.bytes_in,
                    c.bytes_out,
                    c.ratio()
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
                    "total: {} checkpoints, {rows} rows, {rin} bytes in, {rout} bytes out, ratio {:.2}x",
                    done.len(),
                    if rout == 0 { 0.0 } else { rin as f64 / rout as f64 }
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
        } => {
            let opts = ConvertOptions {
                write: WriteOptions {
                    compression: compression.parse()?,
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
                            human(r.jsonl_bytes),
                            human(r.parquet_bytes),
                            r.reduction_pct(),
                            r.ratio()
                        )
                        .map_err(io)?;
                    }
                }
            }
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
                compression: compression.parse::<Compression>()?,
                layout: layout.parse::<Layout>()?,
                conversations: !no_conversations,
            };
            for (file, stats) in generate(&root, &opts).await? {
                writeln!(
                    out,
                    "{}: {} rows, {} bytes",
                    root.describe(&file),
                    stats.rows,
                    stats.bytes
                )
                .map_err(io)?;
            }
            Ok(0)
        }
    }
}

/// `126KB` style sizes, as the seed's table shows them.
pub fn human(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{:.0}MB", bytes as f64 / (1 << 20) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1}MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{}KB", (bytes + 512) / 1024)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::io("cannot write the output", e)
}

/// Runs every statement of a script, printing each result; stops at the first error,
/// naming the statement. Skipped lines (`--on-error skip`) are reported on stderr.
pub async fn run_script(
    session: &CheckpointSession,
    sql: &str,
    printer: Printer,
    timing: bool,
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
            let stream = df.execute_stream().await?;
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
                "{} rows in {:.3}s",
                printed.rows,
                started.elapsed().as_secs_f64()
            );
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}

fn report_skipped(session: &CheckpointSession) {
    print_skipped(&session.take_skipped());
}

fn print_skipped(skipped: &[(String, crate::jsonl::SkippedLine)]) {
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
