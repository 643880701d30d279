//! Running SQL against a [`CheckpointSession`]: scripts of several statements, COPY
//! targets resolved against the root, and errors that name the failing statement.

use datafusion::arrow::datatypes::FieldRef;
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::dml::CopyTo;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::context::CheckpointSession;
use crate::storage::Root;
use crate::{Error, Result};

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

/// Where a COPY target goes. A relative path is a name inside the default root (so
/// `COPY summaries TO 'summaries.parquet'` writes beside the source, locally or in the
/// bucket); a URL (`s3://...`, `file:///...`) is used as given. Absolute paths and `..`
/// are refused: a write never lands outside the named root or target.
pub fn resolve_target(root: &Root, target: &str) -> Result<String> {
    if target.contains('\0') {
        return Err(Error::invalid_name(target, "contains a NUL character"));
    }
    if let Ok(url) = url::Url::parse(target) {
        if url.scheme().len() > 1 {
            // The parsed URL has its dot segments (`..`, `%2e%2e`) already applied: look at
            // the text as written.
            let path = target.split(['?', '#']).next().unwrap_or(target);
            if path
                .split('/')
                .any(|p| p.to_ascii_lowercase().replace("%2e", ".") == "..")
            {
                return Err(Error::invalid_name(
                    target,
                    "'..' is not allowed in a target",
                ));
            }
            return Ok(target.to_owned());
        }
    }
    if target.starts_with('/') || target.starts_with('~') {
        return Err(Error::invalid_name(
            target,
            format!(
                "absolute paths are refused; to write outside the root say so with a URL: file://{target}"
            ),
        ));
    }
    let dir_target = target.ends_with('/');
    let name = target.trim_end_matches('/');
    crate::format::validate_name(name)?;
    let url = root.url_of(name)?;
    // Parent directories must exist for the local store, and must not be symlinks out.
    root.prepare_target(name, dir_target)?;
    Ok(if dir_target {
        format!("{url}/")
    } else {
        url.to_string()
    })
}

/// Resolves the COPY target of a statement, also under EXPLAIN (EXPLAIN ANALYZE runs it).
fn resolve_targets(root: &Root, statement: Statement) -> Result<Statement> {
    Ok(match statement {
        Statement::CopyTo(mut c) => {
            c.target = resolve_target(root, &c.target)?;
            Statement::CopyTo(c)
        }
        Statement::Explain(mut e) => {
            e.statement = Box::new(resolve_targets(root, *e.statement)?);
            Statement::Explain(e)
        }
        // Read-only: a relative LOCATION is in the root too (not the working directory).
        Statement::CreateExternalTable(mut c) => {
            for loc in c.locations.iter_mut() {
                let is_url = url::Url::parse(loc).is_ok_and(|u| u.scheme().len() > 1);
                if !is_url && !loc.starts_with('/') && !loc.starts_with('~') {
                    if let Ok(u) = root.url().join(loc) {
                        *loc = u.to_string();
                    }
                }
            }
            Statement::CreateExternalTable(c)
        }
        other => other,
    })
}

/// Plans (and for DDL, runs) one statement.
pub async fn plan(session: &CheckpointSession, statement: Statement) -> Result<DataFrame> {
    let statement = resolve_targets(session.root(), statement)?;
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

/// Wraps an error with the statement it came from.
pub fn statement_error(text: &str, e: Error) -> Error {
    let short: String = text.chars().take(120).collect();
    let ellipsis = if text.chars().count() > 120 {
        "..."
    } else {
        ""
    };
    Error::config(format!("{e}\n  in statement: {short}{ellipsis}"))
}
