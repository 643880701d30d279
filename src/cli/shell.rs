//! `ckpt shell`: an interactive SQL prompt over checkpoint roots.

use std::io::Write;
use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::print::{OutputFormat, Printer};
use super::stdout::PipeState;
use ckpt::context::CheckpointSession;
use ckpt::{Error, Result};

const HELP: &str = "\
  \\d          list tables
  \\d NAME     describe a table
  \\timing     toggle timing
  \\format F   table, csv, json, ndjson, markdown
  \\null TEXT  how table and markdown show NULL ('' for nothing)
  \\q          quit
Statements end with ';' and may span lines. Ctrl-C cancels a running query.";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ckpt_history"))
}

/// Runs the shell until `\q`, end of input, or a closed standard output (`pipe`).
pub async fn run(
    session: CheckpointSession,
    mut printer: Printer,
    mut timing: bool,
    bar: bool,
    pipe: &PipeState,
) -> Result<()> {
    let mut rl = DefaultEditor::new()
        .map_err(|e| Error::config(format!("cannot start the line editor: {e}")))?;
    if let Some(h) = history_path() {
        let _ = rl.load_history(&h);
    }
    // Every write goes through the watcher: a reader that went away ends the shell quietly
    // (`println!` would panic).
    let mut out = pipe.watch(std::io::stdout());
    let _ = writeln!(
        out,
        "ckpt shell on {} — \\? for help, \\q to quit",
        session.root().display()
    );
    let mut buffer = String::new();
    while !pipe.closed() {
        let prompt = if buffer.is_empty() {
            "ckpt> "
        } else {
            "  ... "
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => {
                // Piped input whose last statement has no ';' still runs it.
                if !buffer.trim().is_empty() {
                    run_statements(&session, &buffer, &printer, timing, bar, &mut out, pipe).await;
                }
                break;
            }
            Err(e) => return Err(Error::config(format!("line editor: {e}"))),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = rl.add_history_entry(trimmed);
            match command(&session, trimmed, &mut printer, &mut timing, &mut out).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) if pipe.closed() => break,
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        let _ = rl.add_history_entry(sql.trim());
        run_statements(&session, &sql, &printer, timing, bar, &mut out, pipe).await;
    }
    if let Some(h) = history_path() {
        let _ = rl.save_history(&h);
    }
    Ok(())
}

/// Runs the statements of one input, printing results, errors and (with `\timing`) the
/// time taken; Ctrl-C cancels them. An error after standard output closed is not shown
/// (the shell then ends). With `bar`, a COPY shows a progress bar.
async fn run_statements(
    session: &CheckpointSession,
    sql: &str,
    printer: &Printer,
    timing: bool,
    bar: bool,
    out: &mut dyn Write,
    pipe: &PipeState,
) {
    let started = Instant::now();
    tokio::select! {
        res = super::commands::run_script(session, sql, printer, false, bar, out) => {
            match res {
                Ok(()) if timing => eprintln!("({})", super::human::duration(started.elapsed())),
                Ok(()) => {}
                Err(_) if pipe.closed() => {}
                Err(e) => eprintln!("error: {e}"),
            }
        }
        _ = tokio::signal::ctrl_c() => eprintln!("cancelled"),
    }
}

/// A backslash command, printing to `out`; returns true to quit.
pub async fn command(
    session: &CheckpointSession,
    cmd: &str,
    printer: &mut Printer,
    timing: &mut bool,
    out: &mut dyn Write,
) -> Result<bool> {
    let say = |out: &mut dyn Write, text: &str| {
        writeln!(out, "{text}").map_err(|e| Error::io("cannot write the output", e))
    };
    let mut parts = cmd.split_whitespace();
    let head = parts.next().unwrap_or("");
    let arg = parts.next();
    match head {
        "\\q" | "\\quit" => return Ok(true),
        "\\?" | "\\h" | "\\help" => say(out, HELP)?,
        "\\timing" => {
            *timing = !*timing;
            say(
                out,
                &format!("timing {}", if *timing { "on" } else { "off" }),
            )?;
        }
        "\\format" => {
            if let Some(f) = arg {
                printer.format = f.parse::<OutputFormat>()?;
            }
            say(out, &format!("format {}", printer.format))?;
        }
        "\\null" => {
            // The rest of the line, spaces included; `''` or `""` for an empty text.
            let text = cmd[head.len()..].trim();
            if !text.is_empty() {
                printer.null = match text {
                    "''" | "\"\"" => String::new(),
                    _ => text.to_owned(),
                };
            }
            say(out, &format!("null {:?}", printer.null))?;
        }
        "\\d" => {
            session.refresh().await?;
            let table = Printer {
                format: OutputFormat::Table,
                max_rows: None,
                ..printer.clone()
            };
            let Some(name) = arg else {
                let sql = "SELECT table_schema, table_name FROM information_schema.tables \
                           WHERE table_schema <> 'information_schema' ORDER BY 1, 2";
                super::commands::run_script(session, sql, &table, false, false, out).await?;
                return Ok(false);
            };
            // `summaries.jsonl` is a table name; `run1.summaries` is schema.table.
            let name = name.trim_matches('"');
            let esc = |s: &str| s.replace('\'', "''");
            let mut filter = format!("table_name = '{}'", esc(name));
            if let Some((schema, t)) = name.split_once('.') {
                filter.push_str(&format!(
                    " OR (table_schema = '{}' AND table_name = '{}')",
                    esc(schema),
                    esc(t)
                ));
            }
            let found = session
                .sql(&format!(
                    "SELECT DISTINCT table_schema, table_name FROM information_schema.tables WHERE {filter}"
                ))
                .await?
                .count()
                .await?;
            if found == 0 {
                say(out, &format!("no table named {name}; \\d lists the tables"))?;
                return Ok(false);
            }
            let sql = format!(
                "SELECT {}column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE {filter} ORDER BY table_schema, table_name, ordinal_position",
                if found > 1 {
                    "table_schema, table_name, "
                } else {
                    ""
                }
            );
            super::commands::run_script(session, &sql, &table, false, false, out).await?;
        }
        other => {
            return Err(Error::config(format!(
                "unknown command {other}; \\? lists the commands"
            )));
        }
    }
    Ok(false)
}
