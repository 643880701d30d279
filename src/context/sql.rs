//! Running SQL against a [`CheckpointSession`]: scripts of several statements, COPY
//! targets resolved against the root, and errors that name the failing statement.
//!
//! COPY targets: a relative path is relative to the default root (beside the source,
//! locally or in the bucket). By default a target may lead anywhere: `..`, an absolute
//! path (written as a `file://` URL) or any URL, since whoever types the SQL owns the file
//! system. A sandboxed session ([`SessionOptions::sandbox`](crate::SessionOptions),
//! `--sandbox`) confines writes to its roots, for SQL that comes from others.

use datafusion::arrow::datatypes::FieldRef;
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::dml::CopyTo;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::context::CheckpointSession;
use crate::storage::Root;
use crate::{CheckpointError, Error, Result};

impl CheckpointSession {
    /// Runs SQL (one statement) and returns its DataFrame; COPY targets resolve as in a
    /// script ([`plan_statements`]). Defined here, beside the planning it calls, so that
    /// the session module does not depend on this one.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let mut frames = plan_statements(self, sql).await?;
        match frames.len() {
            1 => Ok(frames.remove(0).1),
            n => Err(Error::config(format!("expected one statement, found {n}"))),
        }
    }
}

/// Splits a script into statements (text for messages, and the parsed statement).
pub fn parse(sql: &str) -> Result<Vec<(String, Statement)>> {
    // PostgreSQL's precedence binds `->>` tighter than `=`, so
    // `WHERE metadata->>'model' = 'gpt-4'` means what it says (the generic dialect
    // would parse it as `metadata ->> ('model' = 'gpt-4')`).
    let stmts = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).map_err(|e| {
        Error::config(format!(
            "SQL syntax error: {}",
            crate::error::Error::from(e)
        ))
    })?;
    Ok(stmts.into_iter().map(|s| (s.to_string(), s)).collect())
}

/// Where a COPY target goes in this session (see the module docs).
pub fn resolve_target(session: &CheckpointSession, target: &str) -> Result<String> {
    let root = session.root();
    if !session.options().sandbox {
        return Ok(root.resolve_target_unconfined(target)?);
    }
    let others: Vec<&Root> = session.schemas().iter().map(|(_, s)| s.root()).collect();
    root.resolve_target_within(target, &others)
        .map_err(|e| match Error::from(e) {
            // Say why a target that would otherwise be written is refused.
            Error::Checkpoint(CheckpointError::InvalidName { name, reason })
                if leaves_the_root(&name) =>
            {
                Error::invalid_name(
                    &name,
                    format!(
                        "{reason} (--sandbox is on: COPY writes only inside the session's roots)"
                    ),
                )
            }
            other => other,
        })
}

/// Whether a target, as written, points outside the default root: a URL, an absolute
/// path, or one with `..`.
fn leaves_the_root(target: &str) -> bool {
    target.starts_with('/')
        || target.starts_with('~')
        || url::Url::parse(target).is_ok_and(|u| u.scheme().len() > 1)
        || target.split('/').any(|p| p == "..")
}

/// Resolves the COPY target of a statement, also under EXPLAIN (EXPLAIN ANALYZE runs it).
fn resolve_targets(session: &CheckpointSession, statement: Statement) -> Result<Statement> {
    let root = session.root();
    Ok(match statement {
        Statement::CopyTo(mut c) => {
            c.target = resolve_target(session, &c.target)?;
            Statement::CopyTo(c)
        }
        Statement::Explain(mut e) => {
            e.statement = Box::new(resolve_targets(session, *e.statement)?);
            Statement::Explain(e)
        }
        // Read-only: a relative LOCATION is in the root too (not the working directory).
        Statement::CreateExternalTable(mut c) => {
            for loc in c.locations.iter_mut() {
                let is_url = url::Url::parse(loc).is_ok_and(|u| u.scheme().len() > 1);
                if !is_url
                    && !loc.starts_with('/')
                    && !loc.starts_with('~')
                    && let Ok(u) = root.url().join(loc)
                {
                    *loc = u.to_string();
                }
            }
            Statement::CreateExternalTable(c)
        }
        other => other,
    })
}

/// Plans (and for DDL, runs) one statement.
pub async fn plan(session: &CheckpointSession, statement: Statement) -> Result<DataFrame> {
    let statement = resolve_targets(session, statement)?;
    let state = session.context().state();
    let plan = json_values_as_text(state.statement_to_plan(statement).await?)?;
    Ok(session.context().execute_logical_plan(plan).await?)
}

/// COPY writes the JSON values of datafusion-functions-json (`metadata->'tags'`, an Arrow
/// union, which no file format stores) as their JSON text.
fn json_values_as_text(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
    let LogicalPlan::Copy(copy) = plan else {
        return Ok(plan);
    };
    let is_union =
        |f: &FieldRef| *f.data_type() == *datafusion_functions_json::JSON_UNION_DATA_TYPE;
    if !copy.input.schema().fields().iter().any(is_union) {
        return Ok(LogicalPlan::Copy(copy));
    }
    let columns: Vec<Expr> =
        copy.input
            .schema()
            .iter()
            .map(|(q, f)| {
                let col = Expr::Column(Column::new(q.cloned(), f.name()));
                match is_union(f) {
                    true => datafusion_functions_json::functions::json_union_to_text(col)
                        .alias(f.name()),
                    false => col,
                }
            })
            .collect();
    let input = LogicalPlanBuilder::from(copy.input.clone())
        .project(columns)?
        .build()?;
    Ok(LogicalPlan::Copy(CopyTo {
        input: std::sync::Arc::new(input),
        ..copy
    }))
}

/// Plans every statement of a script in order, running each before planning the next
/// (a later statement may use a view an earlier one created). For scripts whose results
/// are wanted one by one, use [`parse`] and [`plan`].
pub async fn plan_statements(
    session: &CheckpointSession,
    sql: &str,
) -> Result<Vec<(String, DataFrame)>> {
    let mut out = Vec::new();
    for (text, stmt) in parse(sql)? {
        let df = plan(session, stmt)
            .await
            .map_err(|e| statement_error(&text, e))?;
        out.push((text, df));
    }
    Ok(out)
}

/// Wraps an error with the statement it came from. A query that ran out of its memory
/// limit also gets what to do: DataFusion's message names the operators holding memory
/// and whether they can spill, but not that the limit is the user's to raise.
pub fn statement_error(text: &str, e: Error) -> Error {
    let short: String = text.chars().take(120).collect();
    let ellipsis = if text.chars().count() > 120 {
        "..."
    } else {
        ""
    };
    let hint = if e.is_resources_exhausted() {
        format!("\n  hint: {OUT_OF_MEMORY_HINT}")
    } else {
        String::new()
    };
    Error::config(format!("{e}{hint}\n  in statement: {short}{ellipsis}"))
}

/// What to do when a query needs more memory than `--memory-limit` gives it.
pub const OUT_OF_MEMORY_HINT: &str = "the query needs more memory than --memory-limit allows, in an operator that cannot spill to disk (`can spill: false` above: an aggregate without GROUP BY such as array_agg or string_agg, the build side of a join); raise --memory-limit, or let that operator hold less (filter rows or select fewer columns first)";
