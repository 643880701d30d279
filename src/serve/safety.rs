//! What `ckpt serve` refuses, and the headers it always sends.
//!
//! - Statements: only reads (SELECT, WITH, VALUES, EXPLAIN of a read, SHOW, DESCRIBE).
//!   The statement is checked as parsed (so COPY, CREATE, SET... are named in the
//!   refusal) and its plan again with DataFusion's [`SQLOptions`] (no DDL, no DML, no
//!   statements), which also catches a write hidden inside a read (`EXPLAIN ANALYZE
//!   COPY ...`, a data-modifying CTE).
//! - Files: the session's tables are the roots' checkpoints, and a name resolves only to
//!   a checkpoint listed in a root (the catalog); URL tables (`FROM 'file.parquet'`)
//!   are off in ckpt's sessions. Table functions are removed from the session but for the
//!   generators that read nothing ([`TABLE_FUNCTIONS_KEPT`]), so that one registered
//!   later (a file reader) is not served by default.
//! - Requests: the `Host` must be the address served or `localhost` (a page of another
//!   site whose name was re-pointed at 127.0.0.1 — DNS rebinding — sends its own name); a
//!   request with an `Origin` must come from the page itself; a POST must be JSON (a form
//!   of another site cannot send that without a preflight, which is never answered).
//!   No CORS header is ever sent.
//! - Responses: a strict Content-Security-Policy (scripts, styles and connections only
//!   from the server itself; no inline script or style), `X-Content-Type-Options:
//!   nosniff`, no framing, no referrer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use crate::context::CheckpointSession;

/// The table functions a served session keeps: they generate numbers and read nothing.
pub const TABLE_FUNCTIONS_KEPT: [&str; 2] = ["generate_series", "range"];

/// The Content-Security-Policy of every response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Why a request or statement is refused (answered with 403 and this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Removes from a session what a served one must not have: every table function but
/// [`TABLE_FUNCTIONS_KEPT`].
pub fn restrict_session(session: &CheckpointSession) -> crate::Result<()> {
    let ctx = session.context();
    let names: Vec<String> = ctx.state().table_functions().keys().cloned().collect();
    for name in names {
        if !TABLE_FUNCTIONS_KEPT.contains(&name.as_str()) {
            ctx.deregister_udtf(&name);
        }
    }
    Ok(())
}

/// Whether a parsed statement only reads; else what it is, for the refusal.
pub fn check_statement(statement: &Statement) -> Result<(), Refusal> {
    let refuse = |what: &str| {
        Err(Refusal(format!(
            "{what} is refused: `ckpt serve` runs only read statements (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)"
        )))
    };
    match statement {
        Statement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_)
            | SqlStatement::ExplainTable { .. }
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. }
            | SqlStatement::ShowVariable { .. }
            | SqlStatement::ShowFunctions { .. } => Ok(()),
            SqlStatement::Explain { statement, .. } => {
                check_statement(&Statement::Statement(statement.clone()))
            }
            other => {
                let text = other.to_string();
                let first: String = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                refuse(&first)
            }
        },
        Statement::Explain(e) => check_statement(&e.statement),
        Statement::CopyTo(_) => refuse("COPY"),
        Statement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        _ => refuse("this statement"),
    }
}

/// The plan of a checked statement, checked again: no DDL, DML or statement anywhere in
/// it.
pub fn check_plan(plan: &LogicalPlan) -> Result<(), Refusal> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| {
            Refusal(format!(
                "{}: `ckpt serve` runs only read statements",
                e.strip_backtrace()
            ))
        })
}

/// Whether a `Host` header names the server at `served`: its own IP (any IP literal when
/// it listens on all addresses: DNS rebinding needs a name), a loopback IP when it listens
/// on one, or `localhost`; and its port.
pub fn host_allowed(host: &str, served: SocketAddr) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') => match p.parse::<u16>() {
            Ok(p) => (n, p),
            Err(_) => return false,
        },
        _ => (host, 80),
    };
    if port != served.port() {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") {
        return served.ip().is_loopback() || served.ip().is_unspecified();
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => {
            ip == served.ip()
                || served.ip().is_unspecified()
                || (ip.is_loopback() && served.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// A JSON error answer: `{"error": message}`.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message });
    (status, axum::Json(body)).into_response()
}

/// The checks on every request and the headers of every response (see the module docs).
pub(crate) async fn guard(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let mut response = match host {
        Some(host) if host_allowed(&host, state.served) => {
            let origin = request
                .headers()
                .get(header::ORIGIN)
                .map(|o| o.to_str().unwrap_or(""));
            let own = format!("http://{host}");
            let json = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.trim_start().starts_with("application/json"));
            if origin.is_some_and(|o| o != own) {
                error_response(
                    StatusCode::FORBIDDEN,
                    "requests from other origins are refused",
                )
            } else if request.method() == Method::POST && !json {
                error_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send the request body as application/json",
                )
            } else if request.method() != Method::GET
                && request.method() != Method::HEAD
                && request.method() != Method::POST
            {
                error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET and POST are served",
                )
            } else {
                next.run(request).await
            }
        }
        _ => error_response(
            StatusCode::FORBIDDEN,
            "the Host header does not name this server (use its address or localhost)",
        ),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Statement {
        crate::ops::query::parse(sql).unwrap().remove(0).1
    }

    #[test]
    fn reads_pass_and_writes_are_refused() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "DESCRIBE summaries",
        ] {
            assert_eq!(check_statement(&parsed(sql)), Ok(()), "{sql}");
        }
        for sql in [
            "COPY summaries TO '/tmp/x.csv'",
            "EXPLAIN COPY summaries TO '/tmp/x.csv'",
            "CREATE TABLE t AS SELECT 1",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE summaries",
            "INSERT INTO t VALUES (1)",
            "SET datafusion.execution.batch_size = 1",
            "DELETE FROM summaries",
        ] {
            assert!(check_statement(&parsed(sql)).is_err(), "{sql}");
        }
    }

    #[test]
    fn hosts() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(host_allowed("127.0.0.1:8080", local));
        assert!(host_allowed("localhost:8080", local));
        assert!(host_allowed("[::1]:8080", local));
        assert!(!host_allowed("127.0.0.1:8081", local));
        assert!(!host_allowed("evil.example:8080", local));
        assert!(!host_allowed("10.0.0.5:8080", local));
        let all: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert!(host_allowed("10.0.0.5", all));
        assert!(!host_allowed("evil.example", all));
    }
}
