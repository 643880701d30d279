//! `ckpt shell`: an interactive SQL prompt over checkpoint roots.

use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::context::CheckpointSession;
use crate::print::{OutputFormat, Printer};
use crate::{Error, Result};

const HELP: &str = "\
  \\d          list tables
  \\d NAME     describe a table
  \\timing     toggle timing
  \\format F   table, csv, json, ndjson, markdown
  \\q          quit
Statements end with ';' and may span lines. Ctrl-C cancels a running query.";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ckpt_history"))
}

/// Runs the shell until `\q` or end of input.
pub async fn run(session: CheckpointSession, mut printer: Printer, mut timing: bool) -> Result<()> {
    let mut rl = DefaultEditor::new()
        .map_err(|e| Error::config(format!("cannot start the line editor: {e}")))?;
    if let Some(h) = history_path() {
        let _ = rl.load_history(&h);
    }
    println!(
        "ckpt shell on {} — \\? for help, \\q to quit",
        session.root().display()
    );
    let mut buffer = String::new();
    loop {
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
                    run_statements(&session, &buffer, printer, timing).await;
                }
                break;
            }
            Err(e) => return Err(Error::config(format!("line editor: {e}"))),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = rl.add_history_entry(trimmed);
            match command(&session, trimmed, &mut printer, &mut timing).await {
                Ok(true) => break,
                Ok(false) => {}
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
        run_statements(&session, &sql, printer, timing).await;
    }
    if let Some(h) = history_path() {
        let _ = rl.save_history(&h);
    }
    Ok(())
}

/// Runs the statements of one input, printing results, errors and (with `\timing`) the
/// time taken; Ctrl-C cancels them.
async fn run_statements(session: &CheckpointSession, sql: &str, printer: Printer, timing: bool) {
    let started = Instant::now();
    let mut out = std::io::stdout();
    tokio::select! {
        res = super::run_script(session, sql, printer, false, &mut out) => {
            match res {
                Ok(()) if timing => eprintln!("({:.3}s)", started.elapsed().as_secs_f64()),
                Ok(()) => {}
                Err(e) => eprintln!("error: {e}"),
            }
        }
        _ = tokio::signal::ctrl_c() => eprintln!("cancelled"),
    }
}

/// A backslash command; returns true to quit.
pub async fn command(
    session: &CheckpointSession,
    cmd: &str,
    printer: &mut Printer,
    timing: &mut bool,
) -> Result<bool> {
    let mut parts = cmd.split_whitespace();
    let head = parts.next().unwrap_or("");
    let arg = parts.next();
    match head {
        "\\q" | "\\quit" => return Ok(true),
        "\\?" | "\\h" | "\\help" => println!("{HELP}"),
        "\\timing" => {
            *timing = !*timing;
            println!("timing {}", if *timing { "on" } else { "off" });
        }
        "\\format" => match arg {
            Some(f) => {
                printer.format = f.parse::<OutputFormat>()?;
                println!("format {}", printer.format);
            }
            None => println!("format {}", printer.format),
        },
        "\\d" => {
            session.refresh().await?;
            let table = Printer {
                format: OutputFormat::Table,
                max_rows: None,
            };
            let Some(name) = arg else {
                let sql = "SELECT table_schema, table_name FROM information_schema.tables \
                           WHERE table_schema <> 'information_schema' ORDER BY 1, 2";
                super::run_script(session, sql, table, false, &mut std::io::stdout()).await?;
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
                println!("no table named {name}; \\d lists the tables");
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
            super::run_script(session, &sql, table, false, &mut std::io::stdout()).await?;
        }
        other => {
            return Err(Error::config(format!(
                "unknown command {other}; \\? lists the commands"
            )));
        }
    }
    Ok(false)
}
