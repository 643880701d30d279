//! One function per command: each calls its library operation (`ckpt::ops`) and prints
//! the report. Nothing here decides what a command does, only how it is shown.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use datafusion::dataframe::DataFrame;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use ckpt::context::{CheckpointSession, SessionOptions};
use ckpt::format::{Compression, FileFormat, Layout, WriteOptions};
use ckpt::jsonl::DecodeOptions;
use ckpt::ops::{append, check, compact, convert, generate, ls, query, sizes};
use ckpt::storage::{Root, StorageOptions};
use ckpt::{Error, Result};

use super::args::*;
use super::print::Printer;
use super::stdout::PipeState;
use super::{Failure, human, progress, shell};

pub async fn ls(
    args: &LsArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let LsArgs {
        root,
        format,
        bytes,
    } = args;
    let report = ls::ls(root, &ls::LsOptions { storage }).await?;
    let infos = &report.checkpoints;
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
            for i in infos {
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
                writeln!(out, "(no checkpoints in {})", report.root).map_err(io)?;
            }
        }
    }
    // Unreadable checkpoints are listed with the rest, then named with their error;
    // the exit code says something needs attention.
    let unreadable: Vec<_> = report.unreadable().collect();
    for i in &unreadable {
        eprintln!("error: {}", i.error.as_deref().unwrap_or_default());
    }
    Ok(if unreadable.is_empty() { 0 } else { 1 })
}

pub async fn query(
    args: &QueryArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    // `ckpt query --root a=X --root b=Y "SQL"`: clap gives the lone positional to
    // ROOT; when it is SQL, it is the statement (a path never parses as SQL).
    let (mut session_args, mut sql_arg) = (args.session.clone(), args.sql.clone());
    if let (Some(r), None, None) = (&session_args.root, &sql_arg, &args.file)
        && !session_args.roots.is_empty()
        && query::parse(r).is_ok_and(|s| !s.is_empty())
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
    if query::parse(&sql)?.is_empty() {
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

pub async fn shell(
    args: &SessionArgs,
    storage: StorageOptions,
    pipe: &PipeState,
) -> std::result::Result<u8, Failure> {
    let session = args.open(storage).await?;
    shell::run(session, args.printer(), args.timing, !args.quiet, pipe).await?;
    Ok(0)
}

pub async fn convert(
    args: &ConvertArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let opts = convert::ConvertOptions {
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
    let opts = convert::ConvertOptions {
        progress: bar.callback(),
        ..opts
    };
    let started = Instant::now();
    let done = convert::convert(&args.src, &args.dst, &opts).await;
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

pub async fn sizes(
    args: &SizesArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let SizesArgs {
        root,
        compression,
        format,
        bytes,
    } = args;
    let opts = convert::ConvertOptions {
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
    let rows = sizes::sizes(root, &opts).await?;
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

pub async fn check(
    args: &CheckArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
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
    let opts = check::CheckOptions {
        session: SessionOptions {
            memory_limit: args.memory_limit,
            storage,
            ..Default::default()
        },
        sample: args.sample,
    };
    let report = check::check(roots, &opts).await?;
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

pub async fn append(
    args: &AppendArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let AppendArgs {
        root,
        name,
        file,
        compression,
        layout,
        quiet,
    } = args;
    let write = write_options(*compression, (*layout).into());
    let bar = progress::Bar::new(progress::Unit::Bytes, *quiet);
    let started = Instant::now();
    let done = append::append_file(
        root,
        name,
        file,
        &append::AppendOptions {
            write,
            storage,
            progress: bar.callback(),
        },
    )
    .await;
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

pub async fn compact(
    args: &CompactArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let CompactArgs {
        root,
        name,
        compression,
        layout,
        quiet,
    } = args;
    let write = write_options(*compression, Layout::default());
    let layout = layout.map(Layout::from);
    let bar = progress::Bar::new(progress::Unit::Bytes, *quiet);
    let started = Instant::now();
    let compacted = compact::compact(
        root,
        name,
        &compact::CompactOptions {
            write,
            layout,
            storage,
            progress: bar.callback(),
        },
    )
    .await;
    bar.finish();
    let compact::Compacted { checkpoint, stats } = compacted?;
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

pub async fn completions(
    args: &CompletionsArgs,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let CompletionsArgs { shell } = args;
    // Into memory first: the generator panics on a failed write, and a reader that
    // went away (`| head`) must end the command quietly like any other output.
    let mut script = Vec::new();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(*shell, &mut cmd, "ckpt", &mut script);
    out.write_all(&script).map_err(io)?;
    Ok(0)
}

pub async fn worker(
    args: &WorkerArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let WorkerArgs {
        listen,
        memory_limit,
    } = args;
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .map_err(|e| {
            Failure::Failed(Error::io(
                format!(
                    "cannot listen on {listen} (is the port taken, or the host not this machine's?)"
                ),
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

pub async fn generate(
    args: &GenerateArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let GenerateArgs {
        root,
        summaries,
        dim,
        seed,
        format,
        compression,
        layout,
        no_conversations,
        quiet,
    } = args;
    let root = Root::with_options(root, &storage)?;
    let formats = match format {
        GenerateFormat::Jsonl => vec![FileFormat::Jsonl],
        GenerateFormat::Parquet => vec![FileFormat::Parquet],
        GenerateFormat::Both => vec![FileFormat::Jsonl, FileFormat::Parquet],
    };
    let opts = generate::GenerateOptions {
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
    let opts = generate::GenerateOptions {
        progress: bar.callback(),
        ..opts
    };
    let generated = generate::generate(&root, &opts).await;
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

pub async fn serve(
    args: &ServeArgs,
    storage: StorageOptions,
    out: &mut dyn Write,
) -> std::result::Result<u8, Failure> {
    let server = ckpt::serve::Server::bind(args.options(storage)?).await?;
    // Signal handlers first: whoever reads the line below may stop the server at once.
    let stop = stop_signal();
    writeln!(out, "listening on {}", server.url()).map_err(io)?;
    out.flush().map_err(io)?;
    server.run(stop).await?;
    Ok(0)
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
    let statements = query::parse(sql)?;
    if statements.is_empty() {
        return Err(Error::config("no SQL statement given"));
    }
    for (text, stmt) in statements {
        let started = Instant::now();
        let res = async {
            let df = query::plan(session, stmt).await?;
            let stream = match copy_bar(session, &df, bar) {
                Some((bar, callback)) => {
                    let stream = query::execute(session, df, Some(callback)).await?;
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
        let printed = res.map_err(|e| query::statement_error(&text, e))?;
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
) -> Option<(progress::Bar, ckpt::progress::ProgressFn)> {
    query::copy_target(df)?;
    if !wanted || !session.options().workers.is_empty() {
        return None;
    }
    let bar = progress::Bar::new(progress::Unit::Bytes, false);
    let callback = bar.callback()?;
    Some((bar, callback))
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
