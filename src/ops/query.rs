//! `ckpt query` and `ckpt shell`: SQL statements planned and run on a session over one or
//! more roots. A script is split into statements ([`parse`]), each planned ([`plan`]:
//! COPY targets resolved against the roots) and run ([`execute`]) before the next is
//! planned, so a later statement may use a view an earlier one created. The statements'
//! SQL semantics live with the session (`crate::context::sql`); this module is what the
//! commands do with them.

use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;

use crate::context::{CheckpointSession, SessionOptions};
use crate::progress::{ProgressFn, execute_with_progress};
use crate::{Error, Result};

pub use crate::context::sql::{OUT_OF_MEMORY_HINT, parse, plan, plan_statements, statement_error};

/// What a query runs over.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// `(NAME, LOCATION)` pairs; the first is the default schema. Each must exist.
    pub roots: Vec<(String, String)>,
    /// Memory limit, decoding, storage, sandbox, workers.
    pub session: SessionOptions,
}

/// Opens the session a query runs in. No root is an error (a usage error to the CLI).
pub async fn open(opts: &QueryOptions) -> Result<CheckpointSession> {
    if opts.roots.is_empty() {
        return Err(Error::config("no root: give a directory or URL"));
    }
    CheckpointSession::new(opts.roots.clone(), opts.session.clone()).await
}

/// The file a COPY writes (the last part of its target, for a progress label), or None
/// when `df` is not a COPY.
pub fn copy_target(df: &DataFrame) -> Option<String> {
    let LogicalPlan::Copy(copy) = df.logical_plan() else {
        return None;
    };
    let target = copy.output_url.trim_end_matches('/');
    Some(target.rsplit('/').next().unwrap_or(target).to_owned())
}

/// Whether a planned statement has effects (COPY, DDL, DML, SET, ...) rather than rows to
/// read: callers that hand out a query's rows lazily run these at once.
pub fn has_effects(df: &DataFrame) -> bool {
    matches!(
        df.logical_plan(),
        LogicalPlan::Copy(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
    )
}

/// Runs one planned statement and returns its rows as a stream. A COPY given `progress`
/// reports the bytes its scans have read (not with workers: the scans run there, and
/// their counters never come back here).
pub async fn execute(
    session: &CheckpointSession,
    df: DataFrame,
    progress: Option<ProgressFn>,
) -> Result<SendableRecordBatchStream> {
    match (copy_target(&df), progress) {
        (Some(label), Some(progress)) if session.options().workers.is_empty() => {
            execute_with_progress(df, &label, progress).await
        }
        _ => Ok(df.execute_stream().await?),
    }
}
